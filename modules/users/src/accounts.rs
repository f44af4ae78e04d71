//! The root's `/etc/passwd` and `/etc/group`, read inside the root.

use std::path::Path;

use stoke_api::{ModuleError, Root, RootDir};

/// Account files larger than this are refused (a real one is a few KiB).
const MAX_FILE: u64 = 16 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct PwEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone)]
pub struct GrEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Accounts {
    pub users: Vec<PwEntry>,
    pub groups: Vec<GrEntry>,
}

fn read(dir: &RootDir, root: &Root, guest: &str) -> Result<String, ModuleError> {
    let bytes = dir
        .read_regular(Path::new(guest), MAX_FILE)
        .map_err(|e| ModuleError::io("reading", root.host_path(guest), e))?;
    Ok(String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned())
}

impl Accounts {
    pub fn read(dir: &RootDir, root: &Root) -> Result<Accounts, ModuleError> {
        Ok(Accounts::parse(
            &read(dir, root, "/etc/passwd")?,
            &read(dir, root, "/etc/group")?,
        ))
    }

    /// Lines that do not parse are skipped (they are not ours to judge).
    pub fn parse(passwd: &str, group: &str) -> Accounts {
        let users = passwd
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 7).then_some(())?;
                Some(PwEntry {
                    name: f[0].to_string(),
                    uid: f[2].parse().ok()?,
                    gid: f[3].parse().ok()?,
                })
            })
            .collect();
        let groups = group
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 4).then_some(())?;
                Some(GrEntry {
                    name: f[0].to_string(),
                    gid: f[2].parse().ok()?,
                    members: f[3]
                        .split(',')
                        .filter(|m| !m.is_empty())
                        .map(str::to_string)
                        .collect(),
                })
            })
            .collect();
        Accounts { users, groups }
    }

    pub fn user(&self, name: &str) -> Option<&PwEntry> {
        self.users.iter().find(|u| u.name == name)
    }

    pub fn user_by_uid(&self, uid: u32) -> Option<&str> {
        self.users
            .iter()
            .find(|u| u.uid == uid)
            .map(|u| u.name.as_str())
    }

    pub fn has_group(&self, name: &str) -> bool {
        self.groups.iter().any(|g| g.name == name)
    }

    /// A member by the group's list or as the user's primary group.
    pub fn is_member(&self, group: &str, user: &str) -> bool {
        let Some(g) = self.groups.iter().find(|g| g.name == group) else {
            return false;
        };
        g.members.iter().any(|m| m == user) || self.user(user).is_some_and(|u| u.gid == g.gid)
    }
}
