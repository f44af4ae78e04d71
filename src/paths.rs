//! Every path stoke reads or writes, derived from one root (and the
//! `--config` / `--seed` overrides), so `--root DIR` confines everything to DIR.

use std::io;
use std::path::{Path, PathBuf};

use stoke_api::{InputDir, InstanceId, Root};

/// The engine's own files (semaphores, status, cache, instance id) are small; a larger one
/// is not stoke's and is refused rather than read whole.
pub const MAX_STATE_FILE: u64 = 64 * 1024 * 1024;

/// The image's configuration directory and the NoCloud seed, as the instance sees them.
const CONFIG_DIR: &str = "/etc/stoke";
const SEED_DIR: &str = "/var/lib/stoke/seed/nocloud";
/// `/run/stoke` as the instance sees it (the run lock is opened by it, inside the root).
pub const RUN_DIR: &str = "/run/stoke";

#[derive(Clone, Debug)]
pub struct Paths {
    pub root: Root,
    /// `/etc/stoke`: `stoke.yaml` and `stoke.d/*.yaml`.
    pub config_dir: PathBuf,
    /// NoCloud seed directory.
    pub seed_dir: PathBuf,
    /// `/var/lib/stoke`.
    pub state_dir: PathBuf,
    /// `/run/stoke`.
    pub run_dir: PathBuf,
    pub log_dir: PathBuf,
    /// Whether `config_dir` / `seed_dir` were named on the command line (see [`InputDir`]).
    config_given: bool,
    seed_given: bool,
}

impl Paths {
    pub fn new(root: Root, config_dir: Option<PathBuf>, seed_dir: Option<PathBuf>) -> Self {
        Paths {
            config_given: config_dir.is_some(),
            seed_given: seed_dir.is_some(),
            config_dir: config_dir.unwrap_or_else(|| root.host_path(CONFIG_DIR)),
            seed_dir: seed_dir.unwrap_or_else(|| root.host_path(SEED_DIR)),
            state_dir: root.host_path("/var/lib/stoke"),
            run_dir: root.host_path(RUN_DIR),
            log_dir: root.host_path("/var/log/stoke"),
            root,
        }
    }

    /// The image's layers (`stoke.yaml`, `stoke.d/`, `lineage.json`): see [`InputDir`].
    pub fn config(&self) -> InputDir {
        self.input_dir(&self.config_dir, self.config_given, CONFIG_DIR)
    }

    /// The NoCloud seed directory: see [`InputDir`].
    pub fn seed(&self) -> InputDir {
        self.input_dir(&self.seed_dir, self.seed_given, SEED_DIR)
    }

    fn input_dir(&self, host: &Path, given: bool, guest: &str) -> InputDir {
        let (root, guest) = if given {
            (Root::new(host), PathBuf::from("/"))
        } else {
            (self.root.clone(), PathBuf::from(guest))
        };
        InputDir::new(root, guest, host)
    }

    /// `host` as the instance sees it, when it is under the root (every path here is,
    /// unless `--config`/`--seed` named a directory elsewhere).
    fn guest(&self, host: &Path) -> Option<PathBuf> {
        let rel = host.strip_prefix(self.root.dir()).ok()?;
        Some(Path::new("/").join(rel))
    }

    /// Reads one of stoke's own text files, resolved inside the root when it is under it
    /// (a `--root` tree's `/var/lib/stoke` cannot lead out; a FIFO is an error, not a
    /// hang); `None` if absent.
    pub fn read(&self, host: &Path) -> io::Result<Option<String>> {
        match self.guest(host) {
            Some(guest) => self.root.fs()?.read_string(&guest, MAX_STATE_FILE),
            None => stoke_api::read_to_string_opt(host),
        }
    }

    /// As [`Paths::read`], the bytes.
    pub fn read_bytes(&self, host: &Path) -> io::Result<Option<Vec<u8>>> {
        match self.guest(host) {
            Some(guest) => self.root.fs()?.read_regular(&guest, MAX_STATE_FILE),
            None => match std::fs::read(host) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            },
        }
    }

    /// Removes one of stoke's own files (see [`Paths::read`]); absent is fine.
    pub fn remove(&self, host: &Path) -> io::Result<()> {
        match self.guest(host) {
            Some(guest) => self.root.fs()?.remove_file(&guest).map(drop),
            None => match std::fs::remove_file(host) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
        }
    }

    /// Removes one of stoke's own directories with everything in it, or a file (links
    /// removed, never followed; see [`Paths::read`]); `false` when nothing was there. A
    /// directory outside the root is one the user named (`--seed`).
    pub fn remove_tree(&self, host: &Path) -> io::Result<bool> {
        match self.guest(host) {
            Some(guest) => self.root.fs()?.remove_tree(&guest),
            None => {
                let res = match std::fs::symlink_metadata(host) {
                    Ok(m) if m.is_dir() => std::fs::remove_dir_all(host),
                    Ok(_) => std::fs::remove_file(host),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                    Err(e) => Err(e),
                };
                res.map(|()| true)
            }
        }
    }

    /// Replaces one of stoke's own files atomically (see [`Paths::read`]; parents made,
    /// an existing file's mode and owner kept): `durable` syncs it, else only readers
    /// are safe (a per-boot record needs no fsync).
    pub fn write(&self, host: &Path, data: &[u8], mode: u32, durable: bool) -> io::Result<()> {
        match self.guest(host) {
            Some(guest) => self.root.fs()?.replace_keeping(&guest, data, mode, durable),
            None if durable => stoke_api::atomic_write(host, data, mode),
            None => stoke_api::atomic_write_volatile(host, data, mode),
        }
    }

    pub fn status_file(&self) -> PathBuf {
        self.run_dir.join("status.json")
    }

    pub fn lock_file(&self) -> PathBuf {
        self.run_dir.join("lock")
    }

    pub fn actions_file(&self) -> PathBuf {
        self.run_dir.join("actions.jsonl")
    }

    pub fn instance_id_file(&self) -> PathBuf {
        self.state_dir.join("instance-id")
    }

    pub fn instance_dir(&self, iid: &InstanceId) -> PathBuf {
        iid.dir_in(&self.state_dir.join("instances"))
    }

    pub fn boot_id_file(&self) -> PathBuf {
        self.root.host_path("/proc/sys/kernel/random/boot_id")
    }

    /// A made-up boot id where the root has no kernel one (see `state::boot_id_or_make`).
    pub fn fallback_boot_id_file(&self) -> PathBuf {
        self.run_dir.join("boot-id")
    }

    pub fn dmi(&self, field: &str) -> PathBuf {
        self.root.host_path("/sys/class/dmi/id").join(field)
    }
}
