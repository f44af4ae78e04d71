//! cloud-init's everyday system modules (docs/system.md), one small module each:
//!
//! | module | key(s) | stage | frequency |
//! | --- | --- | --- | --- |
//! | `ca-certs` | `ca_certs` (`ca-certs`) | network | per-instance |
//! | `timezone` | `timezone` | network | per-instance |
//! | `ntp` | `ntp` | network | per-instance |
//! | `apt-sources` | `apt` | network | per-instance |
//! | `yum-repos` | `yum_repos`, `yum_repo_dir` | network | per-instance |
//! | `packages` | `packages`, `package_update`, `package_upgrade`, `package_reboot_if_required` | final | per-instance |
//! | `final-message` | `final_message` | final (last) | per-boot |
//! | `power-state` | `power_state` | final (last) | per-instance |
//!
//! The stages follow cloud-init's: its init and config stages both end before its final
//! stage, as stoke's network stage does.

#![forbid(unsafe_code)]

mod ca_certs;
mod final_message;
mod ntp;
mod packages;
mod power;
mod repos;
mod timezone;

#[cfg(test)]
mod tests;

use std::path::Path;

use stoke_api::{Context, ModuleError, RootDir};

pub use ca_certs::CaCerts;
pub use final_message::FinalMessage;
pub use ntp::Ntp;
pub use packages::Packages;
pub use power::PowerState;
pub use repos::{AptSources, YumRepos};
pub use timezone::Timezone;

pub fn modules() -> Vec<Box<dyn stoke_api::Module>> {
    vec![
        Box::new(CaCerts),
        Box::new(Timezone),
        Box::new(Ntp),
        Box::new(AptSources),
        Box::new(YumRepos),
        Box::new(Packages),
        Box::new(FinalMessage),
        Box::new(PowerState),
    ]
}

/// The family of the distribution in the root, from its os-release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    /// Debian, Ubuntu and their derivatives: apt, update-ca-certificates, /etc/timezone.
    Debian,
    /// RHEL, Fedora, CentOS, Amazon Linux, Rocky, Alma: dnf/yum, update-ca-trust.
    RedHat,
    Unknown,
}

impl Family {
    pub(crate) fn detect(dir: &RootDir) -> Family {
        let text = ["/etc/os-release", "/usr/lib/os-release"]
            .iter()
            .find_map(|p| read_text(dir, p).ok().flatten())
            .unwrap_or_default();
        let mut words = Vec::new();
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=')
                && (k.trim() == "ID" || k.trim() == "ID_LIKE")
            {
                let v = v.trim().trim_matches(['"', '\'']);
                words.extend(v.split_whitespace().map(str::to_ascii_lowercase));
            }
        }
        let any = |names: &[&str]| words.iter().any(|w| names.contains(&w.as_str()));
        if any(&["debian", "ubuntu"]) {
            Family::Debian
        } else if any(&["rhel", "fedora", "centos", "amzn", "rocky", "almalinux"]) {
            Family::RedHat
        } else {
            Family::Unknown
        }
    }
}

/// Small text files only: configuration, never data.
const MAX_READ: u64 = 4 * 1024 * 1024;

/// A file's text (`None` if absent), read inside the root.
pub(crate) fn read_text(dir: &RootDir, guest: &str) -> Result<Option<String>, String> {
    match dir.read_regular(Path::new(guest), MAX_READ) {
        Ok(Some(bytes)) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| format!("{guest} is not UTF-8 text")),
        Ok(None) => Ok(None),
        Err(e) => Err(format!("reading {guest}: {e}")),
    }
}

/// True when `guest` exists inside the root (file, directory or link).
pub(crate) fn exists(ctx: &Context, guest: &str) -> bool {
    ctx.root
        .fs()
        .is_ok_and(|rd| matches!(rd.lstat(std::path::Path::new(guest)), Ok(Some(_))))
}

pub(crate) fn open_root(ctx: &Context) -> Result<RootDir, ModuleError> {
    RootDir::open(&ctx.root).map_err(|e| ModuleError::io("opening the root", ctx.root.dir(), e))
}

/// Replaces `guest` atomically (parents made 0755), owned by stoke (root at boot).
pub(crate) fn write_file(
    ctx: &Context,
    dir: &RootDir,
    guest: &str,
    data: &[u8],
    mode: u32,
) -> Result<(), String> {
    let path = Path::new(guest);
    if let Some(parent) = path.parent() {
        dir.create_dir_all(parent, 0o755)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    dir.write_atomic(path, data, mode, None, ctx.system.as_ref())
        .map_err(|e| format!("writing {guest}: {e}"))
}

/// `n thing` / `n things`.
pub(crate) fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}
