//! Looking at the machine for one check: files, accounts, `/proc` and the mount table
//! through the root (`RootDir`), services, commands and packages through `System`.
//! `Ok` says what was seen; `Err` says what was found instead of what the check wants.

use std::path::Path;
use std::time::Duration;

use stoke_api::{Cmd, Context, FileKind, RootDir, tools};

use crate::config::{Check, FileType, Kind};

/// Bound on a file read for `contains`, and on `/proc` tables.
const MAX_READ: u64 = 16 * 1024 * 1024;
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// `systemctl`, `dpkg-query`, `rpm`: quick questions.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn probe(ctx: &Context, kind: &Kind<'_>, check: &Check) -> Result<String, String> {
    let want = check.exists.unwrap_or(true);
    match kind {
        Kind::File(path) => file(ctx, path, check),
        Kind::Service(unit) => service(ctx, unit, check).await,
        Kind::Command(argv) => command(ctx, argv, check).await,
        Kind::Port(port) => port_listening(ctx, *port),
        Kind::Mount(point) => mount(ctx, point, check),
        Kind::User(name) => user(ctx, name, check),
        Kind::Group(name) => presence(
            want,
            stoke_api::lookup_group(&ctx.root, name)
                .map_err(|e| format!("reading /etc/group: {e}"))?
                .map(|g| format!("gid {}", g.gid)),
        ),
        Kind::Package(name) => package(ctx, name, want).await,
    }
}

/// `exists` against what was seen (`Some(description)`) or not.
fn presence(want: bool, seen: Option<String>) -> Result<String, String> {
    match (want, seen) {
        (true, Some(s)) => Ok(s),
        (true, None) => Err("absent".into()),
        (false, None) => Ok("absent".into()),
        (false, Some(s)) => Err(format!("present ({s})")),
    }
}

fn root_dir(ctx: &Context) -> Result<RootDir, String> {
    RootDir::open(&ctx.root).map_err(|e| format!("opening the root: {e}"))
}

fn file(ctx: &Context, path: &str, check: &Check) -> Result<String, String> {
    let dir = root_dir(ctx)?;
    let stat = dir
        .lstat(Path::new(path))
        .map_err(|e| format!("cannot look at it: {e}"))?;
    let want = check.exists.unwrap_or(true);
    let Some(stat) = stat else {
        return presence(want, None);
    };
    if !want {
        return presence(want, Some(format!("{:?}", stat.kind).to_lowercase()));
    }
    let mut seen = vec![format!("{:?}", stat.kind).to_lowercase()];
    if let Some(t) = check.file_type {
        let is = matches!(
            (t, stat.kind),
            (FileType::File, FileKind::File)
                | (FileType::Directory, FileKind::Directory)
                | (FileType::Symlink, FileKind::Symlink)
        );
        if !is {
            return Err(format!("a {:?}, not a {t:?}", stat.kind).to_lowercase());
        }
    }
    if let Some(mode) = check.mode {
        if stat.mode != mode.0 {
            return Err(format!("mode {:04o}, not {:04o}", stat.mode, mode.0));
        }
        seen.push(format!("mode {:04o}", stat.mode));
    }
    if let Some(owner) = &check.owner {
        let (user, group) = owner.split_once(':').unwrap_or((owner, ""));
        let uid = account_id(user, |n| {
            stoke_api::lookup_user(&ctx.root, n).map(|u| u.map(|u| u.uid))
        })?;
        if stat.uid != uid {
            return Err(format!("owned by uid {}, not {user} ({uid})", stat.uid));
        }
        if !group.is_empty() {
            let gid = account_id(group, |n| {
                stoke_api::lookup_group(&ctx.root, n).map(|g| g.map(|g| g.gid))
            })?;
            if stat.gid != gid {
                return Err(format!("group gid {}, not {group} ({gid})", stat.gid));
            }
        }
        seen.push(format!("owner {owner}"));
    }
    if let Some(pattern) = &check.contains {
        let re = regex_lite::Regex::new(pattern).map_err(|e| e.to_string())?;
        let bytes = dir
            .read_regular(Path::new(path), MAX_READ)
            .map_err(|e| format!("cannot read it: {e}"))?
            .ok_or("not a regular file to read")?;
        let text = String::from_utf8_lossy(&bytes);
        if !text.lines().any(|l| re.is_match(l)) {
            return Err(format!("no line matches /{pattern}/"));
        }
        seen.push(format!("a line matches /{pattern}/"));
    }
    Ok(seen.join(", "))
}

/// A user or group name from the root's account files, or a number.
fn account_id(
    name: &str,
    lookup: impl Fn(&str) -> std::io::Result<Option<u32>>,
) -> Result<u32, String> {
    if let Ok(n) = name.parse() {
        return Ok(n);
    }
    lookup(name)
        .map_err(|e| format!("reading account files: {e}"))?
        .ok_or_else(|| format!("no account `{name}` on this machine"))
}

async fn ask(ctx: &Context, program: &str, args: &[&str]) -> Result<(bool, String), String> {
    let cmd = Cmd::new(ctx.tool(program), args.iter().copied()).timeout(QUERY_TIMEOUT);
    let out = ctx
        .system
        .run(&cmd)
        .await
        .map_err(|e| format!("`{}`: {e}", cmd.display()))?;
    let text = if out.stdout.trim().is_empty() {
        out.stderr.trim().to_string()
    } else {
        out.stdout.trim().to_string()
    };
    Ok((out.success(), text))
}

async fn service(ctx: &Context, unit: &str, check: &Check) -> Result<String, String> {
    let mut seen = Vec::new();
    let want_active = check.active.unwrap_or(true);
    let (active, state) = ask(ctx, tools::SYSTEMCTL, &["is-active", unit]).await?;
    if active != want_active {
        return Err(format!("{unit} is {state}"));
    }
    seen.push(state);
    if let Some(want_enabled) = check.enabled {
        let (enabled, state) = ask(ctx, tools::SYSTEMCTL, &["is-enabled", unit]).await?;
        if enabled != want_enabled {
            return Err(format!("{unit} is {state}"));
        }
        seen.push(state);
    }
    Ok(seen.join(", "))
}

async fn command(ctx: &Context, argv: &[String], check: &Check) -> Result<String, String> {
    let (program, args) = argv.split_first().ok_or("no program")?;
    let timeout = check
        .timeout_seconds
        .map_or(DEFAULT_COMMAND_TIMEOUT, Duration::from_secs);
    let cmd = Cmd::new(program.clone(), args.iter().cloned()).timeout(timeout);
    let out = ctx
        .system
        .run(&cmd)
        .await
        .map_err(|e| format!("`{}`: {e}", cmd.display()))?;
    let want = check.exit_status.unwrap_or(0);
    if out.code != Some(want) {
        let tail = out.tail(3);
        return Err(format!(
            "{}, not exit {want}{}",
            out.status_text(),
            if tail.is_empty() {
                String::new()
            } else {
                format!(": {tail}")
            }
        ));
    }
    if let Some(pattern) = &check.stdout {
        let re = regex_lite::Regex::new(pattern).map_err(|e| e.to_string())?;
        if !re.is_match(&out.stdout) {
            return Err(format!(
                "stdout does not match /{pattern}/: {}",
                out.tail(3)
            ));
        }
    }
    Ok(out.status_text())
}

/// Something listens on TCP `port`: a LISTEN (state 0A) socket in `/proc/net/tcp{,6}`.
fn port_listening(ctx: &Context, port: u16) -> Result<String, String> {
    let dir = root_dir(ctx)?;
    let mut read_any = false;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Some(bytes) = dir
            .read_regular(Path::new(table), MAX_READ)
            .map_err(|e| format!("reading {table}: {e}"))?
        else {
            continue;
        };
        read_any = true;
        if listening_ports(&String::from_utf8_lossy(&bytes)).contains(&port) {
            return Ok(format!(
                "listening ({})",
                table.trim_start_matches("/proc/net/")
            ));
        }
    }
    if read_any {
        Err("nothing listens on it".into())
    } else {
        Err("no /proc/net/tcp to read".into())
    }
}

/// The local ports of the LISTEN sockets of a `/proc/net/tcp` table.
pub fn listening_ports(table: &str) -> Vec<u16> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (local, state) = (f.get(1)?, f.get(3)?);
            if *state != "0A" {
                return None;
            }
            let port = local.rsplit_once(':')?.1;
            u16::from_str_radix(port, 16).ok()
        })
        .collect()
}

fn mount(ctx: &Context, point: &str, check: &Check) -> Result<String, String> {
    let dir = root_dir(ctx)?;
    let bytes = dir
        .read_regular(Path::new("/proc/self/mountinfo"), MAX_READ)
        .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?
        .ok_or("no /proc/self/mountinfo to read")?;
    let text = String::from_utf8_lossy(&bytes);
    let want_point = point.trim_end_matches('/');
    let want_point = if want_point.is_empty() {
        "/"
    } else {
        want_point
    };
    // The last mount on a point is the one that is seen.
    let found = text
        .lines()
        .rev()
        .filter_map(stoke_api::mountinfo::parse_line)
        .find(|m| m.mount_point == want_point);
    let want = check.exists.unwrap_or(true);
    let Some(m) = found else {
        return presence(want, None).map_err(|_| "not mounted".into());
    };
    if !want {
        return Err(format!("mounted ({} from {})", m.fstype, m.source));
    }
    if let Some(fstype) = &check.fstype
        && &m.fstype != fstype
    {
        return Err(format!("{} mounted, not {fstype}", m.fstype));
    }
    if let Some(options) = &check.options {
        let have: Vec<&str> = m.options.iter().map(String::as_str).collect();
        let missing: Vec<&str> = options
            .iter()
            .map(String::as_str)
            .filter(|o| !have.contains(o))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "options {} lack {}",
                have.join(","),
                missing.join(",")
            ));
        }
    }
    Ok(format!("{} from {}", m.fstype, m.source))
}

fn user(ctx: &Context, name: &str, check: &Check) -> Result<String, String> {
    let found =
        stoke_api::lookup_user(&ctx.root, name).map_err(|e| format!("reading /etc/passwd: {e}"))?;
    let want = check.exists.unwrap_or(true);
    let Some(u) = found else {
        return presence(want, None);
    };
    if !want {
        return presence(want, Some(format!("uid {}", u.uid)));
    }
    let Some(groups) = &check.groups else {
        return Ok(format!("uid {}", u.uid));
    };
    let dir = root_dir(ctx)?;
    let table = dir
        .read_regular(Path::new("/etc/group"), MAX_READ)
        .map_err(|e| format!("reading /etc/group: {e}"))?
        .unwrap_or_default();
    let member_of = groups_of(&String::from_utf8_lossy(&table), name, u.gid);
    let missing: Vec<&str> = groups
        .iter()
        .map(String::as_str)
        .filter(|g| !member_of.iter().any(|m| m == g))
        .collect();
    if missing.is_empty() {
        Ok(format!("uid {}, in {}", u.uid, member_of.join(",")))
    } else {
        Err(format!(
            "not in {} (in: {})",
            missing.join(","),
            member_of.join(",")
        ))
    }
}

/// The groups `user` is in: its primary group (by gid) and those listing it as a member.
pub fn groups_of(group_file: &str, user: &str, primary_gid: u32) -> Vec<String> {
    group_file
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            let (name, gid, members) = (f.first()?, f.get(2)?, f.get(3).unwrap_or(&""));
            let primary = gid.parse::<u32>().ok() == Some(primary_gid);
            (primary || members.split(',').any(|m| m == user)).then(|| name.to_string())
        })
        .collect()
}

async fn package(ctx: &Context, name: &str, want: bool) -> Result<String, String> {
    let dir = root_dir(ctx)?;
    let dpkg = dir
        .lstat(Path::new("/etc/debian_version"))
        .ok()
        .flatten()
        .is_some();
    let installed = if dpkg {
        let (ok, status) = ask(
            ctx,
            tools::DPKG_QUERY,
            &["--show", "--showformat=${Status} ${Version}", name],
        )
        .await?;
        (ok && status.starts_with("install ok installed")).then(|| {
            let version = status.rsplit(' ').next().unwrap_or("").to_string();
            format!("installed {version}")
        })
    } else {
        let (ok, text) = ask(ctx, tools::RPM, &["-q", name]).await?;
        ok.then(|| format!("installed {text}"))
    };
    presence(want, installed).map_err(|e| match e.as_str() {
        "absent" => "not installed".to_string(),
        _ => e,
    })
}
