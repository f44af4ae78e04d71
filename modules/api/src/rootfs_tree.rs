//! The engine's own housekeeping inside the root: its run lock, the removal of whole
//! state trees (`stoke clean`) and the sweep of temp files a killed stoke left. Every
//! step resolves inside the root (see [`RootDir`]), so a symlink under `--root DIR`
//! cannot send a removal or a lock file to the host.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::{FileKind, FileStat, Root, RootDir, System, temp_file_pid};

/// `(parent, final name)` of `guest`, or an error when it names no file (`/`, `..`).
fn parent_and_name(guest: &Path) -> io::Result<(&Path, &std::ffi::OsStr)> {
    match guest.components().next_back() {
        Some(Component::Normal(name)) => Ok((guest.parent().unwrap_or(Path::new("/")), name)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} does not name a file", guest.display()),
        )),
    }
}

impl RootDir {
    /// Opens the regular file `guest` for reading and writing, created (`mode`) when
    /// missing, never through a final symlink (`O_NOFOLLOW`); its parent must exist. For a
    /// lock file: an existing one is kept as it is.
    pub fn open_or_create(&self, guest: &Path, mode: u32) -> io::Result<File> {
        let (parent, name) = parent_and_name(guest)?;
        let dir = self.open_dir(parent)?;
        let flags = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(dir.as_fd(), name, flags, Mode::from_bits_truncate(mode))
            .map_err(io::Error::from)?;
        Ok(File::from(fd))
    }

    /// Opens the log file `guest` for a command's output: its missing parent directories
    /// made (0755), the file created 0600 (output may hold secrets a script printed),
    /// never through a final symlink, and emptied unless `append`. A regular file only: a
    /// FIFO or device there is refused rather than written to.
    pub fn open_log(&self, guest: &Path, append: bool) -> io::Result<File> {
        let (parent, name) = parent_and_name(guest)?;
        let dir = self.create_dir_all(parent, 0o755)?;
        let mut flags = OFlag::O_WRONLY
            | OFlag::O_CREAT
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_CLOEXEC;
        flags |= if append {
            OFlag::O_APPEND
        } else {
            OFlag::O_TRUNC
        };
        let file = File::from(
            openat(dir.as_fd(), name, flags, Mode::from_bits_truncate(0o600))
                .map_err(io::Error::from)?,
        );
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", guest.display()),
            ));
        }
        Ok(file)
    }

    /// Removes `guest`, a directory with everything in it or a file (a symlink is removed,
    /// never followed); `false` when nothing was there.
    pub fn remove_tree(&self, guest: &Path) -> io::Result<bool> {
        match self.lstat(guest)? {
            None => Ok(false),
            Some(st) if st.kind == FileKind::Directory => {
                for (name, st) in self.list_dir(guest)? {
                    let child = guest.join(&name);
                    if st.kind == FileKind::Directory {
                        self.remove_tree(&child)?;
                    } else {
                        self.remove_file(&child)?;
                    }
                }
                self.remove_empty_dir(guest)
            }
            Some(_) => self.remove_file(guest),
        }
    }

    /// Removes the empty directory `guest` (`rmdir`); `false` when nothing was there.
    pub fn remove_empty_dir(&self, guest: &Path) -> io::Result<bool> {
        let (parent, name) = parent_and_name(guest)?;
        let dir = match self.open_dir(parent) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        match unlinkat(dir.as_fd(), name, UnlinkatFlags::RemoveDir) {
            Ok(()) => dir.sync_all().map(|()| true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(io::Error::from(e)),
        }
    }

    /// Removes the temp files (and empty temp directories) another stoke process left in
    /// `guest` on the way to an atomic rename, looking `depth` directories down (symlinks
    /// not followed). Returns the instance paths removed; what cannot be read is skipped.
    pub fn remove_stale_temp_files(&self, guest: &Path, depth: usize) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        let Ok(entries) = self.list_dir(guest) else {
            return removed;
        };
        for (name, st) in entries {
            let path = guest.join(&name);
            let stale = temp_file_pid(&name).is_some_and(|pid| pid != std::process::id());
            match st.kind {
                // A directory made under a temp name (`create_dir_complete`) is empty until
                // renamed: anything in it is not stoke's, and rmdir leaves it then.
                FileKind::Directory if stale => {
                    if matches!(self.remove_empty_dir(&path), Ok(true)) {
                        removed.push(path);
                    }
                }
                FileKind::Directory if depth > 0 => {
                    removed.extend(self.remove_stale_temp_files(&path, depth - 1));
                }
                FileKind::File if stale => {
                    if matches!(self.remove_file(&path), Ok(true)) {
                        removed.push(path);
                    }
                }
                _ => {}
            }
        }
        removed
    }
}

/// A directory of stoke's input (the image's layers, a NoCloud seed), read only through
/// a [`RootDir`]. The default one is under the root and resolved inside it: an
/// absolute link there (`DIR/etc/stoke -> /etc/stoke`) is the instance's, never the host's.
/// One named on the command line (`--config-dir`, `--seed`) is a host directory outside the
/// root by the user's choice (a seed prepared beside the image): it is opened as a root of
/// its own, so its path is the user's but nothing in it leads further out.
#[derive(Clone, Debug)]
pub struct InputDir {
    root: Root,
    guest: PathBuf,
    host: PathBuf,
}

impl InputDir {
    /// `guest` in `root`; `host` is how messages name it.
    pub fn new(root: Root, guest: impl Into<PathBuf>, host: impl Into<PathBuf>) -> InputDir {
        InputDir {
            root,
            guest: guest.into(),
            host: host.into(),
        }
    }

    /// The directory as the user knows it, for messages.
    pub fn host(&self) -> &Path {
        &self.host
    }

    /// `name` in the directory, for messages.
    pub fn shown(&self, name: impl AsRef<Path>) -> PathBuf {
        self.host.join(name)
    }

    fn fs(&self) -> io::Result<Option<std::sync::Arc<RootDir>>> {
        match self.root.fs() {
            Ok(fs) => Ok(Some(fs)),
            // A directory named on the command line that is not there holds nothing.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The regular file `name` (symlinks followed inside), at most `max_bytes`; `None` if
    /// absent.
    pub fn read(&self, name: impl AsRef<Path>, max_bytes: u64) -> io::Result<Option<Vec<u8>>> {
        match self.fs()? {
            Some(fs) => fs.read_regular(&self.guest.join(name), max_bytes),
            None => Ok(None),
        }
    }

    /// Whether `name` is a regular file (symlinks followed inside).
    pub fn is_file(&self, name: impl AsRef<Path>) -> bool {
        matches!(
            self.fs().ok().flatten().map(|fs| fs.stat(&self.guest.join(name))),
            Some(Ok(Some(st))) if st.kind == FileKind::File
        )
    }

    /// Whether something is at `name` (symlinks followed inside).
    pub fn exists(&self, name: impl AsRef<Path>) -> bool {
        matches!(
            self.fs()
                .ok()
                .flatten()
                .map(|fs| fs.stat(&self.guest.join(name))),
            Some(Ok(Some(_)))
        )
    }

    /// The entries of the subdirectory `name` (symlinks not followed); empty if absent.
    pub fn list(&self, name: impl AsRef<Path>) -> io::Result<Vec<(String, FileStat)>> {
        match self.fs()? {
            Some(fs) => fs.list_dir(&self.guest.join(name)),
            None => Ok(Vec::new()),
        }
    }

    /// Replaces the file `name` atomically and durably.
    pub fn write(
        &self,
        name: impl AsRef<Path>,
        data: &[u8],
        mode: u32,
        system: &dyn System,
    ) -> io::Result<()> {
        let fs = self.root.fs()?;
        fs.write_atomic(&self.guest.join(name), data, mode, None, system)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn a_tree_is_removed_without_following_a_link_out() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("keep"), "x").unwrap();
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("a/b")).unwrap();
        fs::write(r.join("a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink(outside.path(), r.join("a/out")).unwrap();
        let fs_ = RootDir::open(&Root::new(r)).unwrap();
        assert!(fs_.remove_tree(Path::new("/a")).unwrap());
        assert!(!r.join("a").exists());
        assert!(outside.path().join("keep").exists());
        assert!(!fs_.remove_tree(Path::new("/a")).unwrap());
    }

    #[test]
    fn a_log_is_opened_inside_the_root_emptied_or_appended_never_through_a_link() {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("var")).unwrap();
        // /var/log leads out of the root: the log's directory is made inside it instead.
        std::os::unix::fs::symlink(outside.path(), r.join("var/log")).unwrap();
        let in_root = r.join(outside.path().strip_prefix("/").unwrap());
        fs::create_dir_all(&in_root).unwrap();
        let fs_ = RootDir::open(&Root::new(r)).unwrap();
        let guest = Path::new("/var/log/stoke/s.log");
        fs_.open_log(guest, false)
            .unwrap()
            .write_all(b"one\n")
            .unwrap();
        let inside = in_root.join("stoke/s.log");
        assert_eq!(fs::read_to_string(&inside).unwrap(), "one\n");
        assert_eq!(
            fs::metadata(&inside).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
        fs_.open_log(guest, true)
            .unwrap()
            .write_all(b"two\n")
            .unwrap();
        assert_eq!(fs::read_to_string(&inside).unwrap(), "one\ntwo\n");
        fs_.open_log(guest, false).unwrap();
        assert_eq!(fs::read_to_string(&inside).unwrap(), "");
        // A link at the log's own name is refused, not written through.
        let target = outside.path().join("t");
        std::os::unix::fs::symlink(&target, inside.with_file_name("l.log")).unwrap();
        assert!(
            fs_.open_log(Path::new("/var/log/stoke/l.log"), false)
                .is_err()
        );
        assert!(!target.exists());
        // A FIFO (no reader: the open fails at once, never blocks) and a directory are refused.
        let fifo = inside.with_file_name("f.log");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(
            fs_.open_log(Path::new("/var/log/stoke/f.log"), true)
                .is_err()
        );
        fs::create_dir(inside.with_file_name("d.log")).unwrap();
        assert!(
            fs_.open_log(Path::new("/var/log/stoke/d.log"), true)
                .is_err()
        );
    }

    #[test]
    fn the_sweep_removes_other_runs_temp_files_only_and_stays_inside() {
        let outside = tempfile::tempdir().unwrap();
        let bait = outside.path().join(".k.stoke-tmp-999999-1");
        fs::write(&bait, "x").unwrap();
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("etc/ssh")).unwrap();
        let stale = r.join("etc/ssh/.key.stoke-tmp-999999-3");
        let ours = r.join(format!("etc/.x.stoke-tmp-{}-1", std::process::id()));
        fs::write(&stale, "k").unwrap();
        fs::write(&ours, "k").unwrap();
        std::os::unix::fs::symlink(outside.path(), r.join("etc/out")).unwrap();
        let fs_ = RootDir::open(&Root::new(r)).unwrap();
        let removed = fs_.remove_stale_temp_files(Path::new("/etc"), 1);
        assert_eq!(
            removed,
            vec![PathBuf::from("/etc/ssh/.key.stoke-tmp-999999-3")]
        );
        assert!(!stale.exists() && ours.exists() && bait.exists());
    }

    #[test]
    fn a_lock_file_is_made_once_and_not_through_a_link() {
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("run")).unwrap();
        let fs_ = RootDir::open(&Root::new(r)).unwrap();
        fs_.open_or_create(Path::new("/run/lock"), 0o600).unwrap();
        fs_.open_or_create(Path::new("/run/lock"), 0o600).unwrap();
        assert!(r.join("run/lock").is_file());
        std::os::unix::fs::symlink(outside.path().join("lock"), r.join("run/link")).unwrap();
        assert!(fs_.open_or_create(Path::new("/run/link"), 0o600).is_err());
        assert!(!outside.path().join("lock").exists());
    }
}
