//! File operations in a user's home that a hostile user cannot redirect.
//!
//! The home directory is opened once (symlinks resolved *inside* the root), then
//! `.ssh` and `authorized_keys` are opened relative to it with `O_NOFOLLOW`, their
//! owner is checked on the open descriptor; a new `.ssh` is made whole under a temp
//! name and renamed, and the new file is created, chowned, synced and linked or
//! renamed within the `.ssh` descriptor. A symlink swapped in at any
//! point makes an open fail instead of sending a write elsewhere.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};
use stoke_api::{ModuleError, Root, System, User};

/// An existing `authorized_keys` larger than this is refused rather than read into memory.
pub const MAX_EXISTING: u64 = 64 * 1024 * 1024;

/// Who must own `.ssh` and `authorized_keys`.
pub struct Owner<'a> {
    pub user: &'a User,
    /// When the system only records ownership changes (sandbox), files stoke itself
    /// created there still belong to the uid stoke runs as; that uid is then accepted too.
    pub also_uid: Option<u32>,
}

impl Owner<'_> {
    fn accepts(&self, uid: u32) -> bool {
        uid == self.user.uid || self.also_uid == Some(uid)
    }

    fn refuse(&self, path: &Path, what: &str, st: &FileStat) -> ModuleError {
        ModuleError::Refused(format!(
            "{what} {} is owned by uid {}, not by {} (uid {}); not touching it",
            path.display(),
            st.st_uid,
            self.user.name,
            self.user.uid
        ))
    }
}

fn io_err(action: &'static str, path: &Path, e: Errno) -> ModuleError {
    ModuleError::io(action, path, io::Error::from(e))
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
}

/// Opens the user's home directory, `None` if it does not exist. Symlinks on the
/// way are resolved with the root as `/` (so under `--root` they cannot lead out of it).
pub fn open_home(root: &Root, user: &User) -> Result<Option<File>, ModuleError> {
    let host = root.host_path(&user.home);
    let rd = root
        .fs()
        .map_err(|e| ModuleError::io("opening", root.dir(), e))?;
    match rd.open_dir(Path::new(&user.home)) {
        Ok(dir) => Ok(Some(dir)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(Errno::ENOTDIR as i32) => {
            Err(ModuleError::Refused(format!(
                "home {} of user {} is not a directory",
                host.display(),
                user.name
            )))
        }
        Err(e) => Err(ModuleError::io("opening home directory", &host, e)),
    }
}

/// Opens (and, if `create`, makes) `.ssh` in the opened home. `Ok(None)`: it does not
/// exist and `create` is false.
pub fn open_ssh_dir(
    home: &File,
    path: &Path,
    create: bool,
    owner: &Owner<'_>,
    system: &dyn System,
) -> Result<Option<File>, ModuleError> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut attempts = 0;
    let fd = loop {
        match openat(home.as_fd(), ".ssh", flags, Mode::empty()) {
            Ok(fd) => break fd,
            Err(Errno::ENOENT) if !create => return Ok(None),
            Err(Errno::ENOENT) if attempts < 3 => {
                attempts += 1;
                // All or nothing (made under a temp name, handed to the user, renamed): a
                // stoke killed on the way must not leave a root-owned `.ssh` that every
                // later boot refuses as someone else's.
                let euid = nix::unistd::geteuid().as_raw();
                let user = (owner.user.uid != euid).then_some((owner.user.uid, owner.user.gid));
                match stoke_api::create_dir_complete(
                    home,
                    OsStr::new(".ssh"),
                    0o700,
                    user,
                    path,
                    system,
                ) {
                    Ok(Some(dir)) => return Ok(Some(dir)),
                    // Made meanwhile by someone else: opened and checked as theirs.
                    Ok(None) => {}
                    Err(e) => return Err(ModuleError::io("creating", path, e)),
                }
            }
            Err(Errno::ELOOP | Errno::ENOTDIR) => return Err(describe_not_dir(home, path)),
            Err(e) => return Err(io_err("opening", path, e)),
        }
    };
    let dir = File::from(fd);
    let st = fstat(dir.as_fd()).map_err(|e| io_err("checking", path, e))?;
    if !owner.accepts(st.st_uid) {
        return Err(owner.refuse(path, "directory", &st));
    }
    Ok(Some(dir))
}

fn describe_not_dir(home: &File, path: &Path) -> ModuleError {
    match fstatat(
        home.as_fd(),
        ".ssh",
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    ) {
        Ok(st) if kind(&st) == SFlag::S_IFLNK => ModuleError::Refused(format!(
            "{} is a symbolic link; refusing to follow it",
            path.display()
        )),
        _ => ModuleError::Refused(format!("{} is not a directory", path.display())),
    }
}

/// The current `authorized_keys`: its text and mode, `None` if absent.
pub fn read_keys_file(
    ssh: &File,
    path: &Path,
    owner: &Owner<'_>,
) -> Result<Option<(String, u32)>, ModuleError> {
    // O_NONBLOCK: a FIFO planted here must not hang the boot.
    let flags = OFlag::O_RDONLY
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY
        | OFlag::O_CLOEXEC;
    let fd = match openat(ssh.as_fd(), "authorized_keys", flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(Errno::ELOOP) => {
            return Err(ModuleError::Refused(format!(
                "{} is a symbolic link; refusing to follow it",
                path.display()
            )));
        }
        Err(e) => return Err(io_err("opening", path, e)),
    };
    let mut file = File::from(fd);
    let st = fstat(file.as_fd()).map_err(|e| io_err("checking", path, e))?;
    if kind(&st) != SFlag::S_IFREG {
        return Err(ModuleError::Refused(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    if !owner.accepts(st.st_uid) {
        return Err(owner.refuse(path, "file", &st));
    }
    if st.st_size as u64 > MAX_EXISTING {
        return Err(ModuleError::Refused(format!(
            "{} is {} bytes, more than stoke will rewrite ({MAX_EXISTING})",
            path.display(),
            st.st_size
        )));
    }
    let mut bytes = Vec::new();
    (&mut file)
        .take(MAX_EXISTING + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ModuleError::io("reading", path, e))?;
    let text = String::from_utf8(bytes).map_err(|_| {
        ModuleError::Refused(format!(
            "{} is not valid UTF-8; not rewriting it (lines stoke does not own must stay byte-identical)",
            path.display()
        ))
    })?;
    Ok(Some((text, st.st_mode & 0o7777)))
}

/// Replaces `authorized_keys` in the opened `.ssh` with `data`, atomically (see
/// [`stoke_api::replace_in_dir`]: chowned to the user and given `mode` before it has its name,
/// synced, the directory synced). Readers see the old file or the new one.
pub fn write_keys_file(
    ssh: &File,
    path: &Path,
    data: &[u8],
    mode: u32,
    user: &User,
    system: &dyn System,
) -> Result<(), ModuleError> {
    stoke_api::replace_in_dir(
        ssh,
        OsStr::new("authorized_keys"),
        mode,
        true,
        |mut file| {
            file.write_all(data)?;
            system
                .fchown(file, path, user.uid, user.gid)
                .map_err(io::Error::other)
        },
    )
    .map_err(|e| ModuleError::io("writing", path, e))
}
