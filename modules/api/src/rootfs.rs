//! File I/O inside the root, as if the root were `/`.
//!
//! [`Root::host_path`] only joins strings: an absolute symlink under `--root DIR`
//! (`DIR/etc -> /etc`) would still send a write to the host. [`RootDir`] opens
//! the root once and resolves every path from that descriptor with
//! `openat2(RESOLVE_IN_ROOT)`: the kernel treats the root as `/` for `..` and
//! for absolute symlinks, so nothing can lead out of it. On a real boot the
//! root is `/` and this is an ordinary open.
//!
//! New code must use this for every file it reads, creates, replaces or
//! appends to under the root (see docs/dev/module-contract.md).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{
    AT_FDCWD, AtFlags, OFlag, OpenHow, RenameFlags, ResolveFlag, openat, openat2, renameat,
    renameat2,
};
use nix::sys::stat::{Mode, SFlag, fchmod, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, linkat, unlinkat};

use crate::{Root, System};

/// What [`RootDir::lstat`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStat {
    pub kind: FileKind,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    File,
    Directory,
    Symlink,
    /// A device, FIFO or socket.
    Other,
}

/// How many times a path walk inside the root is made again when a concurrent rename or mount
/// made the kernel unable to vouch for it (EAGAIN). Each try is microseconds; a thousand in a
/// row would need renames or mounts without pause.
const SCOPED_WALK_TRIES: usize = 1000;

/// The root directory, open, for resolving paths inside it.
pub struct RootDir {
    fd: OwnedFd,
    root: Root,
}

fn errno(e: Errno) -> io::Error {
    io::Error::from(e)
}

fn refused(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

fn stat_of(st: &nix::sys::stat::FileStat) -> FileStat {
    FileStat {
        kind: match kind(st.st_mode) {
            SFlag::S_IFREG => FileKind::File,
            SFlag::S_IFDIR => FileKind::Directory,
            SFlag::S_IFLNK => FileKind::Symlink,
            _ => FileKind::Other,
        },
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
    }
}

fn kind(mode: u32) -> SFlag {
    SFlag::from_bits_truncate(mode) & SFlag::S_IFMT
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_CLOEXEC);

/// The instance path made relative to the root (`.` for the root itself),
/// `..` and `.` removed lexically (the kernel would keep them inside anyway).
fn relative(guest: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for comp in guest.components() {
        match comp {
            Component::Normal(p) => out.push(p),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// `(parent, final name)` of an instance path that names a file.
fn split(guest: &Path) -> io::Result<(PathBuf, &OsStr)> {
    match guest.components().next_back() {
        Some(Component::Normal(name)) => {
            let parent = guest.parent().unwrap_or(Path::new("/"));
            Ok((parent.to_path_buf(), name))
        }
        _ => Err(refused(format!("{} does not name a file", guest.display()))),
    }
}

impl RootDir {
    /// Opens the root directory (one `open`, kept for the handle's life).
    pub fn open(root: &Root) -> io::Result<RootDir> {
        let fd = nix::fcntl::open(root.dir(), DIR_FLAGS, Mode::empty()).map_err(errno)?;
        // A plain copy: a clone would share (and keep alive) the cache holding this handle.
        Ok(RootDir {
            fd,
            root: Root::new(root.dir()),
        })
    }

    pub fn root(&self) -> &Root {
        &self.root
    }

    /// Opens `guest` resolved inside the root (symlinks followed, but never out of it).
    fn resolve(&self, guest: &Path, flags: OFlag) -> Result<OwnedFd, Errno> {
        let rel = relative(guest);
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        // EAGAIN: a rename or mount anywhere on the system raced this walk (the kernel checks
        // when a scoped walk meets `..`, e.g. in a /sys/dev/block link), so it cannot vouch
        // the result stayed inside the root; the walk is simply made again. At boot systemd
        // and udev mount and rename all the time: seen in the VM suite as rootfs failing with
        // "Resource temporarily unavailable".
        for _ in 0..SCOPED_WALK_TRIES {
            match openat2(self.fd.as_fd(), &rel, how) {
                Err(Errno::EAGAIN) => std::thread::yield_now(),
                // Kernels before 5.6 lack openat2; some container seccomp profiles deny it.
                Err(Errno::ENOSYS | Errno::EPERM) => {
                    return self.resolve_without_openat2(&rel, flags);
                }
                other => return other,
            }
        }
        Err(Errno::EAGAIN)
    }

    /// Without openat2: on the host root plain resolution is the same thing; under
    /// `--root DIR` every component is opened with `O_NOFOLLOW`, so a symlink on the
    /// way is refused (`ELOOP`) rather than resolved by hand.
    fn resolve_without_openat2(&self, rel: &Path, flags: OFlag) -> Result<OwnedFd, Errno> {
        if self.root.is_host() {
            return openat(
                self.fd.as_fd(),
                rel,
                flags | OFlag::O_CLOEXEC,
                Mode::empty(),
            );
        }
        let comps: Vec<&OsStr> = rel
            .components()
            .filter_map(|c| match c {
                Component::Normal(p) => Some(p),
                _ => None,
            })
            .collect();
        let Some((last, dirs)) = comps.split_last() else {
            return openat(
                self.fd.as_fd(),
                ".",
                flags | OFlag::O_CLOEXEC,
                Mode::empty(),
            );
        };
        let mut cur: Option<OwnedFd> = None;
        for name in dirs {
            let at = cur.as_ref().map_or(self.fd.as_fd(), |f| f.as_fd());
            cur = Some(openat(
                at,
                *name,
                DIR_FLAGS | OFlag::O_NOFOLLOW,
                Mode::empty(),
            )?);
        }
        let at = cur.as_ref().map_or(self.fd.as_fd(), |f| f.as_fd());
        openat(
            at,
            *last,
            flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    }

    /// Reads a regular file of at most `max_bytes`; `None` if it does not exist.
    /// Opened `O_NONBLOCK|O_NOCTTY` and checked on the descriptor, so a FIFO or a
    /// device planted where a file is expected is an error, not a hang.
    pub fn read_regular(&self, guest: &Path, max_bytes: u64) -> io::Result<Option<Vec<u8>>> {
        let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
        let fd = match self.resolve(guest, flags) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(errno(e)),
        };
        let st = fstat(fd.as_fd()).map_err(errno)?;
        if kind(st.st_mode) != SFlag::S_IFREG {
            return Err(refused(format!(
                "{} is not a regular file",
                guest.display()
            )));
        }
        let too_big = || {
            io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("{} is larger than {max_bytes} bytes", guest.display()),
            )
        };
        if st.st_size as u64 > max_bytes {
            return Err(too_big());
        }
        let mut bytes = Vec::new();
        // Bounded again while reading: the file may grow after fstat.
        File::from(fd).take(max_bytes + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > max_bytes {
            return Err(too_big());
        }
        Ok(Some(bytes))
    }

    /// Opens the regular file `guest` read-only (symlinks resolved inside the root), for
    /// callers that need its size or only its head (a swap file's signature): `None` if
    /// absent; a FIFO, device or directory is an error.
    pub fn open_regular(&self, guest: &Path) -> io::Result<Option<File>> {
        let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
        let fd = match self.resolve(guest, flags) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(errno(e)),
        };
        let st = fstat(fd.as_fd()).map_err(errno)?;
        if kind(st.st_mode) != SFlag::S_IFREG {
            return Err(refused(format!(
                "{} is not a regular file",
                guest.display()
            )));
        }
        Ok(Some(File::from(fd)))
    }

    /// Creates the new, empty file `guest` with exactly `mode` (`O_EXCL|O_NOFOLLOW` in its
    /// parent, resolved inside the root; the parent must exist): for files that a tool
    /// then fills in place (a swap file before `fallocate`), never an existing name.
    pub fn create_new(&self, guest: &Path, mode: u32) -> io::Result<File> {
        let (parent, name) = split(guest)?;
        let dir = self.open_dir(&parent)?;
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(dir.as_fd(), name, flags, Mode::from_bits_truncate(mode)).map_err(errno)?;
        let file = File::from(fd);
        fchmod(file.as_fd(), Mode::from_bits_truncate(mode & 0o7777)).map_err(errno)?;
        Ok(file)
    }

    /// Renames `from` to `to`, both in the same directory (resolved inside the root),
    /// replacing a regular file at `to` (a symlink or directory there is refused), then
    /// syncs the directory.
    pub fn rename_in_dir(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (parent, from_name) = split(from)?;
        let (to_parent, to_name) = split(to)?;
        if relative(&parent) != relative(&to_parent) {
            return Err(refused(format!(
                "{} and {} are not in one directory",
                from.display(),
                to.display()
            )));
        }
        let dir = self.open_dir(&parent)?;
        self.check_target(&dir, to_name, to)?;
        renameat(dir.as_fd(), from_name, dir.as_fd(), to_name).map_err(errno)?;
        dir.sync_all()
    }

    /// Opens an existing directory inside the root.
    pub fn open_dir(&self, guest: &Path) -> io::Result<File> {
        self.resolve(guest, DIR_FLAGS)
            .map(File::from)
            .map_err(errno)
    }

    /// Makes `guest` and its missing parents (each `mode`, exactly: the umask does not
    /// apply), every component resolved inside the root. Returns the directory, open.
    pub fn create_dir_all(&self, guest: &Path, mode: u32) -> io::Result<File> {
        match self.resolve(guest, DIR_FLAGS) {
            Ok(fd) => return Ok(File::from(fd)),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(errno(e)),
        }
        // Slow path, only when something is missing: one component at a time, each
        // resolved from the root again (a symlink on the way stays inside it).
        let rel = relative(guest);
        let mut prefix = PathBuf::new();
        let mut dir = File::from(self.resolve(Path::new("."), DIR_FLAGS).map_err(errno)?);
        for comp in rel.components() {
            let Component::Normal(name) = comp else {
                continue;
            };
            prefix.push(name);
            match self.resolve(&prefix, DIR_FLAGS) {
                Ok(fd) => dir = File::from(fd),
                Err(Errno::ENOENT) => {
                    let made = match mkdirat(dir.as_fd(), name, Mode::from_bits_truncate(mode)) {
                        Ok(()) => true,
                        // Made meanwhile by someone else, or a dangling symlink (then
                        // the open below fails with ENOENT: nothing created through it).
                        Err(Errno::EEXIST) => false,
                        Err(e) => return Err(errno(e)),
                    };
                    let fd = openat(
                        dir.as_fd(),
                        name,
                        DIR_FLAGS | OFlag::O_NOFOLLOW,
                        Mode::empty(),
                    )
                    .or_else(|_| self.resolve(&prefix, DIR_FLAGS))
                    .map_err(errno)?;
                    if made {
                        fchmod(fd.as_fd(), Mode::from_bits_truncate(mode)).map_err(errno)?;
                    }
                    dir = File::from(fd);
                }
                Err(e) => return Err(errno(e)),
            }
        }
        Ok(dir)
    }

    /// Replaces (or creates) the regular file `guest` with `data`, atomically: a
    /// temp file `.<name>.stoke-tmp-<pid>-<n>` is made in the parent directory
    /// (resolved inside the root; it must exist), written, given `owner` (through
    /// `system`, so the sandbox records it) and then exactly `mode`, synced, and
    /// renamed over `<name>` within that directory, which is then synced. Readers
    /// see the old file or the new one. A secret (`mode` 0600 or stricter) is first an
    /// unnamed `O_TMPFILE` in that directory instead, named only once complete (see
    /// [`replace_in_dir`]). A symlink or a directory at `<name>` is
    /// refused: the rename would replace a symlink, never write through it, but the
    /// caller most likely meant something else.
    pub fn write_atomic(
        &self,
        guest: &Path,
        data: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
        system: &dyn System,
    ) -> io::Result<()> {
        let (parent, name) = split(guest)?;
        let dir = self.open_dir(&parent)?;
        self.check_target(&dir, name, guest)?;
        replace_in_dir(&dir, name, mode, true, |mut file| {
            file.write_all(data)?;
            self.set_owner(file, guest, owner, system)
        })
    }

    /// Appends `data` to the regular file `guest` (created with `mode` if absent),
    /// opened `O_APPEND|O_NOFOLLOW` in its parent directory (resolved inside the root;
    /// it must exist). `owner` and `mode` are then applied, as cloud-init does.
    /// Not atomic: readers may see a partial append.
    pub fn append(
        &self,
        guest: &Path,
        data: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
        system: &dyn System,
    ) -> io::Result<()> {
        let (parent, name) = split(guest)?;
        let dir = self.open_dir(&parent)?;
        // O_NONBLOCK: a FIFO without a reader fails (ENXIO) instead of blocking.
        let flags = OFlag::O_WRONLY
            | OFlag::O_APPEND
            | OFlag::O_CREAT
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC;
        let fd = match openat(dir.as_fd(), name, flags, Mode::from_bits_truncate(mode)) {
            Ok(fd) => fd,
            Err(Errno::ELOOP) => {
                return Err(refused(format!(
                    "{} is a symbolic link; refusing to follow it",
                    guest.display()
                )));
            }
            Err(e) => return Err(errno(e)),
        };
        let mut file = File::from(fd);
        let st = fstat(file.as_fd()).map_err(errno)?;
        if kind(st.st_mode) != SFlag::S_IFREG {
            return Err(refused(format!(
                "{} is not a regular file",
                guest.display()
            )));
        }
        file.write_all(data)?;
        // Owner first: the kernel clears setuid/setgid bits on a chown.
        self.set_owner(&file, guest, owner, system)?;
        fchmod(file.as_fd(), Mode::from_bits_truncate(mode & 0o7777)).map_err(errno)?;
        file.sync_all()
    }

    /// Makes `guest` a symbolic link to `target` (stored as given, not resolved),
    /// atomically: a temp link is made in the parent directory (resolved inside the
    /// root; it must exist) and renamed over `<name>`, which is then synced. An
    /// existing file or link at `<name>` is replaced; a directory is refused.
    pub fn symlink_atomic(&self, guest: &Path, target: &Path) -> io::Result<()> {
        let (parent, name) = split(guest)?;
        let dir = self.open_dir(&parent)?;
        match fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if kind(st.st_mode) == SFlag::S_IFDIR => {
                return Err(refused(format!("{} is a directory", guest.display())));
            }
            _ => {}
        }
        // A temp name that is free now: create_temp reserves it, then it is replaced by the link.
        let (tmp, file) = create_temp(&dir, name)?;
        drop(file);
        let result = (|| {
            unlinkat(dir.as_fd(), tmp.as_os_str(), UnlinkatFlags::NoRemoveDir).map_err(errno)?;
            nix::unistd::symlinkat(target, dir.as_fd(), tmp.as_os_str()).map_err(errno)?;
            renameat(dir.as_fd(), tmp.as_os_str(), dir.as_fd(), name).map_err(errno)?;
            dir.sync_all()
        })();
        if result.is_err() {
            let _ = unlinkat(dir.as_fd(), tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
        }
        result
    }

    /// Removes the file or symbolic link `guest` (never what a link points to);
    /// `false` when there was nothing to remove.
    pub fn remove_file(&self, guest: &Path) -> io::Result<bool> {
        let (parent, name) = split(guest)?;
        let dir = match self.open_dir(&parent) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        match unlinkat(dir.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => dir.sync_all().map(|()| true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(errno(e)),
        }
    }

    /// The permission bits of the regular file `guest` (resolved inside the root), `None`
    /// when there is none: lets a caller replace a file and keep the mode someone gave it.
    pub fn file_mode(&self, guest: &Path) -> io::Result<Option<u32>> {
        Ok(self
            .lstat(guest)?
            .filter(|st| st.kind == FileKind::File)
            .map(|st| st.mode))
    }

    /// The entries of the directory `guest` (resolved inside the root), each with what it
    /// is (symlinks not followed), in no particular order; empty when there is no such
    /// directory.
    pub fn list_dir(&self, guest: &Path) -> io::Result<Vec<(String, FileStat)>> {
        let dir = match self.open_dir(guest) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        // The opened directory by its descriptor: what was resolved inside the root,
        // whatever a path would resolve to now.
        let fd_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&dir));
        let mut out = Vec::new();
        for entry in std::fs::read_dir(fd_path)? {
            let name = entry?.file_name();
            let Ok(st) = fstatat(dir.as_fd(), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            else {
                continue;
            };
            if let Some(text) = name.to_str() {
                out.push((text.to_string(), stat_of(&st)));
            }
        }
        Ok(out)
    }

    /// Reads the UTF-8 text file `guest` (see [`RootDir::read_regular`]); `None` if absent.
    pub fn read_string(&self, guest: &Path, max_bytes: u64) -> io::Result<Option<String>> {
        match self.read_regular(guest, max_bytes)? {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes).map(Some).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: not UTF-8", guest.display()),
                )
            }),
        }
    }

    /// Replaces (or creates) the regular file `guest` with `data` atomically, as
    /// [`crate::atomic_write`] does but resolved inside the root: missing parents are made
    /// (0755), an existing file keeps its mode and owner, a new one gets `mode`; `durable`
    /// syncs file and directory. A symlink or directory at `guest` is refused.
    pub fn replace_keeping(
        &self,
        guest: &Path,
        data: &[u8],
        mode: u32,
        durable: bool,
    ) -> io::Result<()> {
        let (parent, name) = split(guest)?;
        let dir = self.create_dir_all(&parent, 0o755)?;
        self.check_target(&dir, name, guest)?;
        let existing = match fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Some(st),
            Err(Errno::ENOENT) => None,
            Err(e) => return Err(errno(e)),
        };
        let final_mode = existing.as_ref().map_or(mode, |st| st.st_mode & 0o7777);
        replace_in_dir(&dir, name, final_mode, durable, |mut file| {
            file.write_all(data)?;
            match &existing {
                Some(st) => std::os::unix::fs::fchown(file, Some(st.st_uid), Some(st.st_gid)),
                None => Ok(()),
            }
        })
    }

    /// Opens the regular file `guest` itself (`O_NOFOLLOW`: a symlink there is refused),
    /// its parent resolved inside the root; `None` if absent.
    pub fn open_regular_nofollow(&self, guest: &Path) -> io::Result<Option<File>> {
        let (parent, name) = split(guest)?;
        let dir = match self.open_dir(&parent) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let flags = OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC;
        let fd = match openat(dir.as_fd(), name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(errno(e)),
        };
        if kind(fstat(fd.as_fd()).map_err(errno)?.st_mode) != SFlag::S_IFREG {
            return Err(refused(format!(
                "{} is not a regular file",
                guest.display()
            )));
        }
        Ok(Some(File::from(fd)))
    }

    /// What `guest` is once its symlinks are followed inside the root (`stat`, not
    /// `lstat`); `None` when nothing is there (a dangling link included).
    pub fn stat(&self, guest: &Path) -> io::Result<Option<FileStat>> {
        match self.resolve(guest, OFlag::O_PATH) {
            Ok(fd) => Ok(Some(stat_of(&fstat(fd.as_fd()).map_err(errno)?))),
            Err(Errno::ENOENT | Errno::ENOTDIR) => Ok(None),
            Err(e) => Err(errno(e)),
        }
    }

    /// Whether something is at `guest`, symlinks followed inside the root (what
    /// `Path::exists` answers for a host path); an error counts as absent.
    pub fn exists(&self, guest: &Path) -> bool {
        matches!(self.stat(guest), Ok(Some(_)))
    }

    /// Whether `guest` is a directory, symlinks followed inside the root.
    pub fn is_dir(&self, guest: &Path) -> bool {
        matches!(self.stat(guest), Ok(Some(st)) if st.kind == FileKind::Directory)
    }

    /// The host path of `guest` with its symlinks resolved inside the root (its deepest
    /// existing ancestor resolved, the rest joined): for the argv of a command, a mount
    /// call or a command's output log, which resolve their paths on the host, and for
    /// comparing with what the kernel lists (mountinfo shows resolved paths).
    pub fn resolved_host_path(&self, guest: &Path) -> PathBuf {
        let rel = relative(guest);
        let mut base = rel.as_path();
        loop {
            if let Ok(Some((host, _))) = self.real_path(&Path::new("/").join(base)) {
                return match rel.strip_prefix(base) {
                    Ok(rest) if !rest.as_os_str().is_empty() => host.join(rest),
                    _ => host,
                };
            }
            match base.parent() {
                Some(p) => base = p,
                None => return self.root.host_path(guest),
            }
        }
    }

    /// The host path of the directory `guest` once resolved inside the root (made if
    /// missing, 0755): for the argv of a command that writes there (`ssh-keygen -f`), so
    /// that even the command, which resolves its path on the host, stays inside the root.
    pub fn host_dir(&self, guest: &Path) -> io::Result<PathBuf> {
        let dir = self.create_dir_all(guest, 0o755)?;
        std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd()))
    }

    /// What `guest` is once its symlinks are followed *inside the root*, and the host path
    /// of that file (to run it: the kernel must not resolve the link again outside the
    /// root); `None` when nothing is there.
    pub fn real_path(&self, guest: &Path) -> io::Result<Option<(PathBuf, FileStat)>> {
        let fd = match self.resolve(guest, OFlag::O_PATH) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(errno(e)),
        };
        let st = fstat(fd.as_fd()).map_err(errno)?;
        let host = std::fs::read_link(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&fd)
        ))?;
        Ok(Some((host, stat_of(&st))))
    }

    /// What is at `guest` itself (a symlink is not followed), resolved inside the root;
    /// `None` when nothing is.
    pub fn lstat(&self, guest: &Path) -> io::Result<Option<FileStat>> {
        let (parent, name) = split(guest)?;
        let dir = match self.open_dir(&parent) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        match fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(stat_of(&st))),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(errno(e)),
        }
    }

    fn check_target(&self, dir: &File, name: &OsStr, guest: &Path) -> io::Result<()> {
        match fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if kind(st.st_mode) == SFlag::S_IFREG => Ok(()),
            Ok(st) if kind(st.st_mode) == SFlag::S_IFLNK => Err(refused(format!(
                "{} is a symbolic link; refusing to replace it",
                guest.display()
            ))),
            Ok(_) => Err(refused(format!(
                "{} exists and is not a regular file",
                guest.display()
            ))),
            Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(errno(e)),
        }
    }

    fn set_owner(
        &self,
        file: &File,
        guest: &Path,
        owner: Option<(u32, u32)>,
        system: &dyn System,
    ) -> io::Result<()> {
        match owner {
            Some((uid, gid)) => system
                .fchown(file, &self.root.host_path(guest), uid, gid)
                .map_err(io::Error::other),
            None => Ok(()),
        }
    }
}

/// A name for a temp file next to `name`: `.<name>.stoke-tmp-<pid>-<n>` (the pattern the
/// sweep of stale temps knows), within NAME_MAX whatever the target's length.
fn temp_name(name: &OsStr) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let stem = &name.as_bytes()[..name.len().min(200)];
    let mut tmp = b".".to_vec();
    tmp.extend_from_slice(stem);
    tmp.extend_from_slice(
        format!(
            "{}{}-{}",
            crate::TEMP_MARK,
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
        .as_bytes(),
    );
    PathBuf::from(OsStr::from_bytes(&tmp))
}

/// Runs `make` on fresh temp names until one is free (a leftover of an interrupted run, or a
/// name planted in advance, is skipped, never reused).
fn with_free_temp_name<T>(
    name: &OsStr,
    mut make: impl FnMut(&Path) -> Result<T, Errno>,
) -> io::Result<(PathBuf, T)> {
    let mut attempts = 0;
    loop {
        let tmp = temp_name(name);
        match make(&tmp) {
            Ok(t) => return Ok((tmp, t)),
            Err(Errno::EEXIST) if attempts < 16 => attempts += 1,
            Err(e) => return Err(errno(e)),
        }
    }
}

/// A new, empty temp file in `dir` named after `name`: `O_EXCL|O_NOFOLLOW`, so a
/// name planted in advance (file or symlink) is skipped, never opened.
fn create_temp(dir: &File, name: &OsStr) -> io::Result<(PathBuf, File)> {
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let (tmp, fd) = with_free_temp_name(name, |tmp| {
        openat(
            dir.as_fd(),
            tmp.as_os_str(),
            flags,
            Mode::from_bits_truncate(0o600),
        )
    })?;
    Ok((tmp, File::from(fd)))
}

/// A file that only its owner may read (0600 or stricter): a crash must not leave a copy.
fn is_secret(mode: u32) -> bool {
    mode & 0o077 == 0
}

#[cfg(test)]
thread_local! {
    /// Tests force the named-temp path, as on a filesystem without `O_TMPFILE`.
    static NAMED_TEMPS_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn unnamed_temps_allowed() -> bool {
    #[cfg(test)]
    if NAMED_TEMPS_ONLY.get() {
        return false;
    }
    true
}

/// Replaces (or creates) `name` in the open directory `dir` (opened through [`RootDir`], or
/// relative to a descriptor that was) with a file that `fill` writes (data, owner), then
/// given exactly `mode`, atomically; `durable` syncs the file and then the directory.
///
/// A secret (`mode` 0600 or stricter) is written into an unnamed `O_TMPFILE` in `dir` and
/// linked in only once complete: a crash before that leaves nothing in any directory. Where
/// the filesystem has no `O_TMPFILE` (or the file cannot be linked), and for every other
/// file, it is a named temp (`.<name>.stoke-tmp-<pid>-<n>`, 0600 while written), which the
/// next run's sweep removes if a crash left it.
pub fn replace_in_dir(
    dir: &File,
    name: &OsStr,
    mode: u32,
    durable: bool,
    mut fill: impl FnMut(&File) -> io::Result<()>,
) -> io::Result<()> {
    let mut complete = |file: &File| -> io::Result<()> {
        fill(file)?;
        // After the owner: a chown clears setuid/setgid bits.
        fchmod(file.as_fd(), Mode::from_bits_truncate(mode & 0o7777)).map_err(errno)?;
        if durable { file.sync_all() } else { Ok(()) }
    };
    remove_stale_temps_of(dir, name);
    if is_secret(mode) && unnamed_temps_allowed() {
        let flags = OFlag::O_TMPFILE | OFlag::O_WRONLY | OFlag::O_CLOEXEC;
        match openat(dir.as_fd(), ".", flags, Mode::from_bits_truncate(0o600)) {
            Ok(fd) => {
                let file = File::from(fd);
                complete(&file)?;
                if link_unnamed(&file, dir, name)? {
                    return if durable { dir.sync_all() } else { Ok(()) };
                }
            }
            // Old kernels answer EISDIR, filesystems without it EOPNOTSUPP.
            Err(Errno::EOPNOTSUPP | Errno::EISDIR | Errno::EINVAL) => {}
            Err(e) => return Err(errno(e)),
        }
    }
    let (tmp, file) = create_temp(dir, name)?;
    let result = (|| {
        complete(&file)?;
        renameat(dir.as_fd(), tmp.as_os_str(), dir.as_fd(), name).map_err(errno)?;
        if durable { dir.sync_all() } else { Ok(()) }
    })();
    if result.is_err() {
        let _ = unlinkat(dir.as_fd(), tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
    }
    result
}

/// Removes the temp files of `name` in `dir` that another (killed) stoke left on its way to
/// replacing it: the sweep at start only knows stoke's own directories, and a `write_files`
/// path may be anywhere. Best effort: what cannot be listed or removed stays.
fn remove_stale_temps_of(dir: &File, name: &OsStr) {
    let mut prefix = b".".to_vec();
    prefix.extend_from_slice(&name.as_bytes()[..name.len().min(200)]);
    prefix.extend_from_slice(b".stoke-");
    let Ok(entries) = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd())) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        if !file.as_bytes().starts_with(&prefix)
            || crate::temp_file_pid(&file.to_string_lossy())
                .is_none_or(|pid| pid == std::process::id())
        {
            continue;
        }
        if let Ok(st) = fstatat(dir.as_fd(), file.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            && kind(st.st_mode) == SFlag::S_IFREG
        {
            tracing::warn!(
                "removing {}: left by an interrupted stoke",
                file.to_string_lossy()
            );
            let _ = unlinkat(dir.as_fd(), file.as_os_str(), UnlinkatFlags::NoRemoveDir);
        }
    }
}

/// Makes the directory `name` in the open directory `parent`, all or nothing: made under a
/// temp name (`.<name>.stoke-tmp-…`), given `owner` (through `system`; `path` names it
/// there) and exactly `mode`, then renamed to `name`, never over anything. A crash leaves
/// no half-made `name` (say a root-owned `~/.ssh` that every later boot would refuse), at
/// most an empty temp directory that the sweep removes. `Ok(None)`: `name` exists (made
/// meanwhile by someone else), nothing was changed.
pub fn create_dir_complete(
    parent: &File,
    name: &OsStr,
    mode: u32,
    owner: Option<(u32, u32)>,
    path: &Path,
    system: &dyn System,
) -> io::Result<Option<File>> {
    let (tmp, ()) = with_free_temp_name(name, |tmp| {
        mkdirat(parent.as_fd(), tmp, Mode::from_bits_truncate(0o700))
    })?;
    let result = (|| {
        let fd = openat(
            parent.as_fd(),
            tmp.as_os_str(),
            DIR_FLAGS | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )
        .map_err(errno)?;
        let dir = File::from(fd);
        if let Some((uid, gid)) = owner {
            system
                .fchown(&dir, path, uid, gid)
                .map_err(io::Error::other)?;
        }
        fchmod(dir.as_fd(), Mode::from_bits_truncate(mode & 0o7777)).map_err(errno)?;
        dir.sync_all()?;
        let renamed = match renameat2(
            parent.as_fd(),
            tmp.as_os_str(),
            parent.as_fd(),
            name,
            RenameFlags::RENAME_NOREPLACE,
        ) {
            // A filesystem without RENAME_NOREPLACE: a plain rename would replace an empty
            // directory someone else made, so only when nothing is there.
            Err(Errno::EINVAL) => match fstatat(parent.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)
            {
                Err(Errno::ENOENT) => {
                    renameat(parent.as_fd(), tmp.as_os_str(), parent.as_fd(), name)
                }
                Ok(_) => Err(Errno::EEXIST),
                Err(e) => Err(e),
            },
            other => other,
        };
        match renamed {
            Ok(()) => parent.sync_all().map(|()| Some(dir)),
            Err(Errno::EEXIST | Errno::ENOTEMPTY) => Ok(None),
            Err(e) => Err(errno(e)),
        }
    })();
    if !matches!(result, Ok(Some(_))) {
        let _ = unlinkat(parent.as_fd(), tmp.as_os_str(), UnlinkatFlags::RemoveDir);
    }
    result
}

/// Gives the complete unnamed file its name: straight as `name` when that is free (no other
/// name ever exists), else under a temp name renamed over `name`. `false`: it cannot be
/// linked here (no `/proc` and no CAP_DAC_READ_SEARCH), nothing was changed.
fn link_unnamed(file: &File, dir: &File, name: &OsStr) -> io::Result<bool> {
    match link_fd(file, dir, name) {
        Ok(()) => return Ok(true),
        Err(Errno::EEXIST) => {}
        Err(Errno::ENOENT | Errno::EPERM | Errno::EACCES) => return Ok(false),
        Err(e) => return Err(errno(e)),
    }
    let (tmp, ()) = with_free_temp_name(name, |tmp| link_fd(file, dir, tmp.as_os_str()))?;
    renameat(dir.as_fd(), tmp.as_os_str(), dir.as_fd(), name).map_err(|e| {
        let _ = unlinkat(dir.as_fd(), tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
        errno(e)
    })?;
    Ok(true)
}

/// `linkat` of an open file: by its descriptor (`AT_EMPTY_PATH`, which needs
/// CAP_DAC_READ_SEARCH), else through `/proc/self/fd`.
fn link_fd(file: &File, dir: &File, new: &OsStr) -> Result<(), Errno> {
    match linkat(file.as_fd(), "", dir.as_fd(), new, AtFlags::AT_EMPTY_PATH) {
        Err(Errno::ENOENT | Errno::EPERM) => {
            let by_proc = format!("/proc/self/fd/{}", file.as_raw_fd());
            linkat(
                AT_FDCWD,
                by_proc.as_str(),
                dir.as_fd(),
                new,
                AtFlags::AT_SYMLINK_FOLLOW,
            )
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, symlink};
    use std::time::{Duration, Instant};

    /// A walk through a `..` link (as /sys/dev/block's are) while another thread renames files
    /// without pause: the kernel answers EAGAIN to a scoped walk that a rename raced, and every
    /// read must still succeed (at boot, systemd and udev mount and rename all the time).
    #[test]
    fn a_walk_raced_by_renames_elsewhere_is_made_again_not_failed() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("devices/block/vda")).unwrap();
        fs::write(dir.path().join("devices/block/vda/size"), "8\n").unwrap();
        fs::create_dir_all(dir.path().join("dev/block")).unwrap();
        symlink(
            "../../devices/block/vda",
            dir.path().join("dev/block/254:0"),
        )
        .unwrap();
        let rd = RootDir::open(&Root::new(dir.path())).unwrap();
        let churn = tempfile::tempdir().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let renamer = {
            let (stop, churn) = (stop.clone(), churn.path().to_path_buf());
            std::thread::spawn(move || {
                let (a, b) = (churn.join("a"), churn.join("b"));
                fs::write(&a, "").unwrap();
                let mut renames = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    fs::rename(&a, &b).unwrap();
                    fs::rename(&b, &a).unwrap();
                    renames += 2;
                }
                renames
            })
        };
        let mut failed = Vec::new();
        for _ in 0..20_000 {
            if let Err(e) = rd.read_regular(Path::new("/dev/block/254:0/size"), 64) {
                failed.push(e.to_string());
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let renames = renamer.join().unwrap();
        assert!(renames > 0, "the renames raced the reads");
        assert!(
            failed.is_empty(),
            "{} of 20000 reads failed: {:?}",
            failed.len(),
            &failed[..1]
        );
    }

    /// Records nothing, changes nothing: ownership is not under test here.
    struct NoSystem;

    #[async_trait::async_trait]
    impl System for NoSystem {
        async fn run(&self, _: &crate::Cmd) -> Result<crate::CmdOutput, crate::SysError> {
            Ok(crate::CmdOutput::ok(""))
        }
        fn spawn_detached(
            &self,
            _: &crate::Cmd,
            _: &crate::OutputLog,
        ) -> Result<u32, crate::SysError> {
            Ok(0)
        }
        fn sethostname(&self, _: &str) -> Result<(), crate::SysError> {
            Ok(())
        }
        async fn mount(&self, _: &crate::MountRequest) -> Result<(), crate::SysError> {
            Ok(())
        }
        async fn umount(&self, _: &Path) -> Result<(), crate::SysError> {
            Ok(())
        }
        fn fchown(&self, _: &File, _: &Path, _: u32, _: u32) -> Result<(), crate::SysError> {
            Ok(())
        }
        fn console(&self, _: &str) -> Result<(), crate::SysError> {
            Ok(())
        }
        fn executes(&self) -> bool {
            false
        }
    }

    /// `root/` for the instance and `outside/` next to it, with a file each.
    struct Fixture {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        outside: PathBuf,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(outside.join("dir")).unwrap();
        fs::write(outside.join("file"), "outside\n").unwrap();
        Fixture {
            _tmp: tmp,
            root,
            outside,
        }
    }

    fn rootdir(f: &Fixture) -> RootDir {
        RootDir::open(&Root::new(&f.root)).unwrap()
    }

    #[test]
    fn absolute_symlinks_resolve_inside_the_root() {
        let f = fixture();
        // DIR/etc -> <outside>/dir: followed on the host, but inside the root it
        // means DIR/<outside>/dir, which does not exist.
        symlink(f.outside.join("dir"), f.root.join("etc")).unwrap();
        let rd = rootdir(&f);
        assert!(
            rd.write_atomic(Path::new("/etc/x"), b"in", 0o644, None, &NoSystem)
                .is_err(),
            "the parent resolves to DIR/<outside>/dir, absent"
        );
        assert!(
            rd.create_dir_all(Path::new("/etc/sub"), 0o755).is_err(),
            "no directory is made through a dangling link"
        );
        assert_eq!(
            fs::read_dir(f.outside.join("dir")).unwrap().count(),
            0,
            "nothing created outside"
        );
        let inside = f
            .root
            .join(f.outside.strip_prefix("/").unwrap())
            .join("dir");
        fs::create_dir_all(&inside).unwrap();
        rd.create_dir_all(Path::new("/etc/sub"), 0o755).unwrap();
        assert!(inside.join("sub").is_dir(), "made inside the root");
        rd.write_atomic(Path::new("/etc/x"), b"in", 0o640, None, &NoSystem)
            .unwrap();
        assert_eq!(fs::read(inside.join("x")).unwrap(), b"in");
        assert_eq!(
            fs::metadata(inside.join("x")).unwrap().mode() & 0o777,
            0o640
        );
        assert_eq!(
            fs::read_dir(f.outside.join("dir")).unwrap().count(),
            0,
            "still nothing outside"
        );
    }

    #[test]
    fn symlink_atomic_replaces_a_file_or_link_and_remove_file_never_follows() {
        let f = fixture();
        fs::create_dir_all(f.root.join("etc")).unwrap();
        fs::write(f.root.join("etc/localtime"), "old").unwrap();
        let rd = rootdir(&f);
        let target = Path::new("../usr/share/zoneinfo/UTC");
        rd.symlink_atomic(Path::new("/etc/localtime"), target)
            .unwrap();
        assert_eq!(fs::read_link(f.root.join("etc/localtime")).unwrap(), target);
        let other = Path::new("/usr/share/zoneinfo/Europe/Paris");
        rd.symlink_atomic(Path::new("/etc/localtime"), other)
            .unwrap();
        assert_eq!(fs::read_link(f.root.join("etc/localtime")).unwrap(), other);
        assert_eq!(
            fs::read_dir(f.root.join("etc")).unwrap().count(),
            1,
            "no temp left"
        );
        fs::create_dir_all(f.root.join("etc/dir")).unwrap();
        assert!(rd.symlink_atomic(Path::new("/etc/dir"), target).is_err());
        // A link to a file outside the root: removing the link leaves the file.
        symlink(f.outside.join("file"), f.root.join("etc/out")).unwrap();
        assert!(rd.remove_file(Path::new("/etc/out")).unwrap());
        assert!(f.outside.join("file").exists());
        assert!(!rd.remove_file(Path::new("/etc/out")).unwrap());
        assert!(!rd.remove_file(Path::new("/nodir/x")).unwrap());
    }

    #[test]
    fn a_symlink_at_the_final_component_is_never_written_through() {
        let f = fixture();
        fs::create_dir_all(f.root.join("etc")).unwrap();
        symlink(f.outside.join("file"), f.root.join("etc/x")).unwrap();
        let rd = rootdir(&f);
        let err = rd
            .write_atomic(Path::new("/etc/x"), b"new", 0o644, None, &NoSystem)
            .unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let err = rd
            .append(Path::new("/etc/x"), b"new", 0o644, None, &NoSystem)
            .unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        // Reading follows it, but inside the root: DIR/<outside>/file is absent.
        assert_eq!(rd.read_regular(Path::new("/etc/x"), 100).unwrap(), None);
        assert_eq!(
            fs::read_to_string(f.outside.join("file")).unwrap(),
            "outside\n"
        );
        assert!(
            fs::symlink_metadata(f.root.join("etc/x"))
                .unwrap()
                .file_type()
                .is_symlink(),
            "the link itself is left alone"
        );
        let dir = f.root.join("etc");
        assert_eq!(fs::read_dir(dir).unwrap().count(), 1, "no temp file left");
    }

    #[test]
    fn dotdot_and_relative_links_stay_in_the_root() {
        let f = fixture();
        fs::create_dir_all(f.root.join("etc")).unwrap();
        symlink("../../outside/file", f.root.join("etc/up")).unwrap();
        let rd = rootdir(&f);
        assert_eq!(rd.read_regular(Path::new("/etc/up"), 100).unwrap(), None);
        assert_eq!(
            rd.read_regular(Path::new("/../../outside/file"), 100)
                .unwrap(),
            None
        );
        fs::create_dir_all(f.root.join("outside")).unwrap();
        fs::write(f.root.join("outside/file"), "inside\n").unwrap();
        assert_eq!(
            rd.read_regular(Path::new("/etc/up"), 100).unwrap().unwrap(),
            b"inside\n",
            "`..` above the root stays at the root"
        );
    }

    #[test]
    fn write_replace_and_append() {
        let f = fixture();
        let rd = rootdir(&f);
        rd.create_dir_all(Path::new("/a/b"), 0o750).unwrap();
        assert_eq!(
            fs::metadata(f.root.join("a/b")).unwrap().mode() & 0o777,
            0o750,
            "exact mode, whatever the umask"
        );
        let p = Path::new("/a/b/f");
        rd.write_atomic(p, b"one", 0o600, None, &NoSystem).unwrap();
        rd.write_atomic(p, b"two", 0o644, None, &NoSystem).unwrap();
        rd.append(p, b"+three", 0o640, None, &NoSystem).unwrap();
        assert_eq!(fs::read(f.root.join("a/b/f")).unwrap(), b"two+three");
        assert_eq!(
            fs::metadata(f.root.join("a/b/f")).unwrap().mode() & 0o7777,
            0o640
        );
        rd.append(Path::new("/a/b/new"), b"x", 0o600, None, &NoSystem)
            .unwrap();
        assert_eq!(fs::read(f.root.join("a/b/new")).unwrap(), b"x");
        assert!(
            rd.write_atomic(Path::new("/a/b"), b"x", 0o644, None, &NoSystem)
                .is_err()
        );
        assert!(
            rd.write_atomic(Path::new("/"), b"x", 0o644, None, &NoSystem)
                .is_err()
        );
        assert!(
            rd.write_atomic(Path::new("/missing/f"), b"x", 0o644, None, &NoSystem)
                .is_err(),
            "parents are the caller's (create_dir_all)"
        );
        let names: Vec<_> = fs::read_dir(f.root.join("a/b")).unwrap().collect();
        assert_eq!(names.len(), 2, "no temp file left behind");
    }

    #[test]
    fn a_fifo_is_refused_at_once_and_the_size_is_capped() {
        let f = fixture();
        let rd = rootdir(&f);
        nix::unistd::mkfifo(&f.root.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        let start = Instant::now();
        let err = rd.read_regular(Path::new("/fifo"), 100).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert!(
            rd.append(Path::new("/fifo"), b"x", 0o644, None, &NoSystem)
                .is_err()
        );
        assert!(start.elapsed() < Duration::from_secs(2), "did not block");

        fs::write(f.root.join("big"), vec![b'x'; 101]).unwrap();
        let err = rd.read_regular(Path::new("/big"), 100).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
        assert_eq!(
            rd.read_regular(Path::new("/big"), 101)
                .unwrap()
                .unwrap()
                .len(),
            101
        );
        assert!(rd.read_regular(Path::new("/"), 100).is_err(), "a directory");
    }

    /// The names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    /// What a crash while a file is written would leave: the directory's names as `fill`
    /// sees them, for a new file and then for replacing it.
    fn names_while_written(dir: &Path, secret: bool) -> Vec<Vec<String>> {
        let open = File::open(dir).unwrap();
        let mut seen = Vec::new();
        for round in 0..2 {
            let data = format!("secret {round}\n");
            let mode = if secret { 0o600 } else { 0o644 };
            replace_in_dir(&open, OsStr::new("key"), mode, true, |mut f| {
                seen.push(names(dir));
                f.write_all(data.as_bytes())
            })
            .unwrap();
            assert_eq!(fs::read_to_string(dir.join("key")).unwrap(), data);
            assert_eq!(fs::metadata(dir.join("key")).unwrap().mode() & 0o777, mode);
            assert_eq!(names(dir), ["key"], "nothing else left");
        }
        seen
    }

    #[test]
    fn a_secret_has_no_name_until_it_is_complete_and_falls_back_to_a_named_temp() {
        let mut dirs = vec![tempfile::tempdir().unwrap()];
        // tmpfs (/run, /dev/shm) has O_TMPFILE too; ext4 or whatever holds the temp dir above.
        match nix::sys::statfs::statfs("/dev/shm") {
            Ok(st) if st.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC => {
                dirs.push(tempfile::tempdir_in("/dev/shm").unwrap());
            }
            _ => println!(
                "SKIPPED tmpfs case of a_secret_has_no_name_until_it_is_complete: no tmpfs at /dev/shm"
            ),
        }
        for d in &dirs {
            let unnamed = d.path().join("unnamed");
            fs::create_dir(&unnamed).unwrap();
            assert_eq!(
                names_while_written(&unnamed, true),
                [vec![], vec!["key".to_string()]],
                "no temp name exists while the secret is written"
            );
            // A filesystem without O_TMPFILE: a named temp, which the sweep recognises.
            let named = d.path().join("named");
            fs::create_dir(&named).unwrap();
            NAMED_TEMPS_ONLY.set(true);
            let seen = names_while_written(&named, true);
            NAMED_TEMPS_ONLY.set(false);
            for (round, names) in seen.iter().enumerate() {
                let temps: Vec<&String> = names.iter().filter(|n| *n != "key").collect();
                assert_eq!(temps.len(), 1, "round {round}: {names:?}");
                assert!(crate::temp_file_pid(temps[0]).is_some(), "{names:?}");
            }
            // Not a secret: a named temp, as always.
            let public = d.path().join("public");
            fs::create_dir(&public).unwrap();
            assert_eq!(names_while_written(&public, false)[0].len(), 1);
        }
    }

    #[test]
    fn replacing_a_file_removes_the_temps_a_killed_stoke_left_for_it() {
        let f = fixture();
        let rd = rootdir(&f);
        rd.create_dir_all(Path::new("/opt/app"), 0o755).unwrap();
        let dir = f.root.join("opt/app");
        let ours = format!(".app.conf.stoke-tmp-{}-7", std::process::id());
        for n in [
            ".app.conf.stoke-tmp-999999-8",
            ".app.conf.stoke-999998-1",
            ".other.stoke-tmp-999999-9",
            ours.as_str(),
        ] {
            fs::write(dir.join(n), "half").unwrap();
        }
        rd.write_atomic(Path::new("/opt/app/app.conf"), b"x", 0o644, None, &NoSystem)
            .unwrap();
        let mut want = vec![
            ".other.stoke-tmp-999999-9".to_string(),
            ours,
            "app.conf".into(),
        ];
        want.sort();
        assert_eq!(
            names(&dir),
            want,
            "only this file's, and only another run's"
        );
    }

    #[test]
    fn without_openat2_a_symlink_on_the_way_is_refused() {
        let f = fixture();
        symlink(f.outside.join("dir"), f.root.join("etc")).unwrap();
        fs::create_dir_all(f.root.join("real")).unwrap();
        fs::write(f.root.join("real/x"), "x").unwrap();
        let rd = rootdir(&f);
        let flags = OFlag::O_RDONLY;
        assert!(
            rd.resolve_without_openat2(Path::new("etc/x"), flags)
                .is_err()
        );
        assert!(
            rd.resolve_without_openat2(Path::new("real/x"), flags)
                .is_ok()
        );
    }
}
