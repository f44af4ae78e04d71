use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::{Root, RootDir};

/// Reads a file, `None` if it does not exist.
pub fn read_to_string_opt(path: &Path) -> io::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `data` to `path` atomically: a temp file in the same directory,
/// fsync, rename over the target, fsync the directory. A reader sees the old
/// file or the new one, never a part. An existing target keeps its mode and
/// owner; a new file gets `mode`. Parent directories are created (0755).
/// A secret (0600 or stricter) is never under a temp name while it is written
/// (`O_TMPFILE`, where the filesystem has it).
pub fn atomic_write(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    write_replace(path, data, mode, true)
}

/// Atomic for readers (temp file, rename) but not durable: no fsync. For
/// files that only matter until the next boot (`/run`, per-boot records),
/// where an fsync would be the costliest step of a boot with nothing to do.
pub fn atomic_write_volatile(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    write_replace(path, data, mode, false)
}

fn write_replace(path: &Path, data: &[u8], mode: u32, durable: bool) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let existing = match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => Some(m),
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "target exists and is not a regular file",
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let final_mode = existing.as_ref().map_or(mode, |m| m.mode() & 0o7777);
    let dir = File::open(dir)?;
    crate::replace_in_dir(&dir, name, final_mode, durable, |mut f| {
        f.write_all(data)?;
        match &existing {
            Some(m) => std::os::unix::fs::fchown(f, Some(m.uid()), Some(m.gid())),
            None => Ok(()),
        }
    })
}

/// Replaces the lines between `begin` and `end` marker lines (markers included)
/// with `begin`, `body`, `end`; appends the block if absent; removes it when
/// `body` is empty. Everything outside the block stays byte-identical.
///
/// Marker lines that do not form a block (a begin with no end, an end with no
/// begin, a second begin) are dropped on their own, and the block is appended:
/// a damaged block never makes stoke delete lines between stray markers.
pub fn managed_block(existing: &str, begin: &str, end: &str, body: &str) -> String {
    let mut block = String::new();
    if !body.is_empty() {
        block.push_str(begin);
        block.push('\n');
        block.push_str(body);
        if !body.ends_with('\n') {
            block.push('\n');
        }
        block.push_str(end);
        block.push('\n');
    }
    let lines: Vec<&str> = existing.split_inclusive('\n').collect();
    let is = |l: &str, m: &str| l.trim_end() == m;
    let begins: Vec<usize> = (0..lines.len()).filter(|&i| is(lines[i], begin)).collect();
    let ends: Vec<usize> = (0..lines.len()).filter(|&i| is(lines[i], end)).collect();
    if let ([s], [e]) = (begins.as_slice(), ends.as_slice())
        && s < e
    {
        let mut out: String = lines[..*s].concat();
        out.push_str(&block);
        out.push_str(&lines[e + 1..].concat());
        return out;
    }
    let mut out: String = lines
        .iter()
        .filter(|l| !is(l, begin) && !is(l, end))
        .copied()
        .collect();
    if !block.is_empty() {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&block);
    }
    out
}

/// Undoes the kernel's octal escapes (`\040` for a space) used in
/// /etc/fstab and /proc/self/mountinfo fields.
pub fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = u32::from(b[i + 1] - b'0') * 64
                + u32::from(b[i + 2] - b'0') * 8
                + u32::from(b[i + 3] - b'0');
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A local account, from the root's `/etc/passwd`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Home directory as the instance sees it (map with [`Root::path`]).
    pub home: String,
}

/// A local group, from the root's `/etc/group`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
}

/// Account files larger than this are refused (a real one is a few KiB).
const MAX_ACCOUNT_FILE: u64 = 16 * 1024 * 1024;

/// The root's copy of an account file, read inside the root (a symlink cannot
/// lead out of it, a FIFO cannot hang the boot); `None` if it does not exist.
fn account_file(root: &Root, guest: &str) -> io::Result<Option<String>> {
    let dir = match RootDir::open(root) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(bytes) = dir.read_regular(Path::new(guest), MAX_ACCOUNT_FILE)? else {
        return Ok(None);
    };
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("{guest}: not UTF-8")))
}

/// Looks a user up in `<root>/etc/passwd` (not NSS: stoke runs before any
/// directory service, and must read the instance's file under `--root`).
pub fn lookup_user(root: &Root, name: &str) -> io::Result<Option<User>> {
    let Some(passwd) = account_file(root, "/etc/passwd")? else {
        return Ok(None);
    };
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 7 && f[0] == name {
            let (Ok(uid), Ok(gid)) = (f[2].parse(), f[3].parse()) else {
                continue;
            };
            return Ok(Some(User {
                name: name.to_string(),
                uid,
                gid,
                home: f[5].to_string(),
            }));
        }
    }
    Ok(None)
}

/// Looks a group up in `<root>/etc/group` (as [`lookup_user`]).
pub fn lookup_group(root: &Root, name: &str) -> io::Result<Option<Group>> {
    let Some(group) = account_file(root, "/etc/group")? else {
        return Ok(None);
    };
    for line in group.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 3 && f[0] == name {
            let Ok(gid) = f[2].parse() else {
                continue;
            };
            return Ok(Some(Group {
                name: name.to_string(),
                gid,
            }));
        }
    }
    Ok(None)
}

/// Lowercase hex SHA-256 of `data` (cache and configuration checksums).
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const B: &str = "# BEGIN stoke";
    const E: &str = "# END stoke";

    #[test]
    fn managed_block_appends_replaces_and_removes_leaving_the_rest() {
        let foreign = "127.0.0.1 localhost\n# a comment\n\n::1 ip6-localhost";
        let once = managed_block(foreign, B, E, "10.0.0.1 web-1");
        assert_eq!(
            once,
            format!("{foreign}\n{B}\n10.0.0.1 web-1\n{E}\n"),
            "appended after a newline"
        );
        let twice = managed_block(&once, B, E, "10.0.0.2 web-2\n");
        assert_eq!(twice, format!("{foreign}\n{B}\n10.0.0.2 web-2\n{E}\n"));
        assert_eq!(
            managed_block(&twice, B, E, "10.0.0.2 web-2\n"),
            twice,
            "idempotent"
        );
        let removed = managed_block(&twice, B, E, "");
        assert_eq!(removed, format!("{foreign}\n"));
        let middle = format!("a\n{B}\nold\n{E}\nz\n");
        assert_eq!(
            managed_block(&middle, B, E, "new"),
            format!("a\n{B}\nnew\n{E}\nz\n")
        );
    }

    #[test]
    fn octal_escapes_are_undone() {
        assert_eq!(unescape_octal("/mnt/my\\040disk"), "/mnt/my disk");
        assert_eq!(unescape_octal("a\\011b\\134c"), "a\tb\\c");
        assert_eq!(
            unescape_octal("trailing\\04"),
            "trailing\\04",
            "incomplete escape kept"
        );
        assert_eq!(unescape_octal("\\777"), "\\777", "out of byte range kept");
    }

    #[test]
    fn damaged_blocks_never_cost_foreign_lines() {
        let stray_begin = format!("keep1\n{B}\nkeep2\nkeep3\n");
        let once = managed_block(&stray_begin, B, E, "ours");
        assert_eq!(once, format!("keep1\nkeep2\nkeep3\n{B}\nours\n{E}\n"));
        assert_eq!(
            managed_block(&once, B, E, "ours"),
            once,
            "stable afterwards"
        );
        let stray_end = format!("{E}\nkeep\n");
        assert_eq!(
            managed_block(&stray_end, B, E, "x"),
            format!("keep\n{B}\nx\n{E}\n")
        );
        let two = format!("{B}\na\n{E}\nkeep\n{B}\nb\n{E}\n");
        assert_eq!(
            managed_block(&two, B, E, "c"),
            format!("a\nkeep\nb\n{B}\nc\n{E}\n")
        );
    }

    #[test]
    fn atomic_write_creates_replaces_and_keeps_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/file");
        atomic_write(&p, b"one", 0o640).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o640);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        atomic_write(&p, b"two", 0o644).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600, "mode kept");
        let leftovers: Vec<_> = fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file left behind");
    }

    #[test]
    fn atomic_write_refuses_to_replace_a_symlink_or_directory() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real");
        fs::write(&target, "keep").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(atomic_write(&link, b"x", 0o644).is_err());
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
        assert!(atomic_write(dir.path(), b"x", 0o644).is_err());
    }

    #[test]
    fn lookup_user_reads_the_roots_passwd() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        fs::create_dir_all(root.host_path("/etc")).unwrap();
        fs::write(
            root.host_path("/etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\nadmin:x:1000:1000::/home/admin:/bin/sh\nbad:x:z:1::/h:/s\n",
        )
        .unwrap();
        let u = lookup_user(&root, "admin").unwrap().unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1000, 1000, "/home/admin"));
        assert_eq!(lookup_user(&root, "nobody").unwrap(), None);
        assert_eq!(lookup_user(&root, "bad").unwrap(), None);
    }

    #[test]
    fn lookup_group_reads_the_roots_group_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        assert_eq!(lookup_group(&root, "adm").unwrap(), None, "no file");
        fs::create_dir_all(root.host_path("/etc")).unwrap();
        fs::write(
            root.host_path("/etc/group"),
            "root:x:0:\nadm:x:4:syslog,admin\nweb:x:nan:\nshort:x\n",
        )
        .unwrap();
        assert_eq!(
            lookup_group(&root, "adm").unwrap(),
            Some(Group {
                name: "adm".into(),
                gid: 4
            })
        );
        assert_eq!(lookup_group(&root, "web").unwrap(), None, "bad gid");
        assert_eq!(lookup_group(&root, "short").unwrap(), None);
        assert_eq!(
            lookup_group(&root, "syslog").unwrap(),
            None,
            "a member is no group"
        );
    }
}

/// Reads a regular file of at most `max` bytes (host path); `None` if it does not exist. A FIFO
/// or device where a file is expected is refused at once (opened non-blocking, never read), and
/// a bigger file is an error before it is read whole: seed files and state come from outside.
pub fn read_capped(path: &Path, max: u64) -> io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let file = match OpenOptions::new()
        .read(true)
        // Opening a FIFO for reading must not wait for a writer.
        .custom_flags((nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOCTTY).bits())
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a regular file", path.display()),
        ));
    }
    if meta.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: {} bytes, more than the {max} allowed",
                path.display(),
                meta.len()
            ),
        ));
    }
    let mut out = Vec::new();
    file.take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: more than the {max} bytes allowed", path.display()),
        ));
    }
    Ok(Some(out))
}

#[cfg(test)]
mod read_capped_tests {
    use super::*;

    #[test]
    fn regular_files_only_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, b"12345").unwrap();
        assert_eq!(read_capped(&f, 5).unwrap().unwrap(), b"12345");
        assert!(read_capped(&f, 4).is_err());
        assert!(read_capped(&dir.path().join("none"), 4).unwrap().is_none());
        assert!(read_capped(dir.path(), 4).is_err(), "a directory");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        // Would block forever with a plain open.
        assert!(read_capped(&fifo, 4).is_err());
    }
}

/// Every temp file stoke makes on its way to an atomic rename is `.<name>.stoke-tmp-<pid>-<n>`:
/// one pattern, so that what a crash leaves behind can be found and removed.
pub const TEMP_MARK: &str = ".stoke-tmp-";

/// The pid in a stoke temp file's name (`.<name>.stoke-tmp-<pid>-<n>`, or the older
/// `.<name>.stoke-<pid>-<n>`), `None` for any other name.
pub fn temp_file_pid(file_name: &str) -> Option<u32> {
    if !file_name.starts_with('.') {
        return None;
    }
    let (_, rest) = file_name
        .rsplit_once(TEMP_MARK)
        .or_else(|| file_name.rsplit_once(".stoke-"))?;
    let (pid, n) = rest.split_once('-')?;
    if pid.is_empty() || n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Removes the stoke temp files (and empty temp directories) in `dir` (and below, `depth`
/// levels) that this process did not make: only one stoke runs at a time (the run lock), so any other one is what a killed
/// stoke left — possibly a private key. Returns what was removed.
pub fn remove_stale_temp_files(dir: &Path, depth: usize) -> Vec<std::path::PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return removed;
    };
    for e in entries.filter_map(Result::ok) {
        let Ok(ft) = e.file_type() else { continue };
        let name = e.file_name();
        let name = name.to_string_lossy();
        let stale = temp_file_pid(&name).is_some_and(|pid| pid != std::process::id());
        if ft.is_dir() && stale {
            // A directory made under a temp name (`create_dir_complete`) is empty until
            // renamed: anything in it is not stoke's, and rmdir leaves it then.
            if fs::remove_dir(e.path()).is_ok() {
                removed.push(e.path());
            }
        } else if ft.is_dir() && depth > 0 {
            removed.extend(remove_stale_temp_files(&e.path(), depth - 1));
        } else if ft.is_file() && stale && fs::remove_file(e.path()).is_ok() {
            removed.push(e.path());
        }
    }
    removed
}

#[cfg(test)]
mod temp_tests {
    use super::*;

    #[test]
    fn stale_temp_files_of_other_runs_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir_all(d.join("ssh")).unwrap();
        let stale = d.join("ssh/.ssh_host_ed25519_key.stoke-tmp-999999-3");
        let older = d.join(".hosts.stoke-424242-17");
        let ours = d.join(format!(".x.stoke-tmp-{}-1", std::process::id()));
        let foreign = d.join(".bashrc");
        let lookalike = d.join(".a.stoke-tmp-1-x");
        for f in [&stale, &older, &ours, &foreign, &lookalike] {
            fs::write(f, "k").unwrap();
        }
        // A `~/.ssh` a killed stoke was making (empty), and a temp-named one with content.
        let half_made = d.join("home/..ssh.stoke-tmp-999999-0");
        let not_empty = d.join("home/..ssh.stoke-tmp-999999-1");
        fs::create_dir_all(&half_made).unwrap();
        fs::create_dir_all(not_empty.join("x")).unwrap();
        let mut removed = remove_stale_temp_files(d, 2);
        removed.sort();
        assert_eq!(
            removed,
            vec![older.clone(), half_made.clone(), stale.clone()]
        );
        assert!(ours.exists() && foreign.exists() && lookalike.exists());
        assert!(
            not_empty.join("x").exists(),
            "a directory with content is left"
        );
        // Every atomic write's temp name is recognised.
        atomic_write(&d.join("f"), b"x", 0o600).unwrap();
        assert_eq!(temp_file_pid(".f.stoke-tmp-12-3"), Some(12));
        assert_eq!(temp_file_pid("f.stoke-tmp-12-3"), None);
    }
}
