//! Every path stoke reads or writes, derived from one root (and the
//! `--config` / `--seed` overrides), so `--root DIR` confines everything to DIR.

use std::path::PathBuf;

use stoke_api::{InstanceId, Root};

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
}

impl Paths {
    pub fn new(root: Root, config_dir: Option<PathBuf>, seed_dir: Option<PathBuf>) -> Self {
        Paths {
            config_dir: config_dir.unwrap_or_else(|| root.host_path("/etc/stoke")),
            seed_dir: seed_dir.unwrap_or_else(|| root.host_path("/var/lib/stoke/seed/nocloud")),
            state_dir: root.host_path("/var/lib/stoke"),
            run_dir: root.host_path("/run/stoke"),
            log_dir: root.host_path("/var/log/stoke"),
            root,
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
