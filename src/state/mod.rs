//! Run-frequency state: semaphores under `/var/lib/stoke`, the boot id, the
//! current instance id, and the one-stoke-at-a-time lock.

pub mod lineage;
pub mod metrics;
pub mod status;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use stoke_api::{Frequency, InstanceId};

use crate::paths::{Paths, RUN_DIR};

pub fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// How long ago this process started (exec), in ms; `None` where /proc says nothing. The
/// start time is in clock ticks since boot: USER_HZ, 100 on every Linux architecture.
pub fn process_age_ms() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let start_ticks: f64 = after_comm.split_whitespace().nth(19)?.parse().ok()?;
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).ok()?;
    let now_ms = now.tv_sec() as f64 * 1000.0 + now.tv_nsec() as f64 / 1e6;
    Some((now_ms - start_ticks * 10.0).max(0.0))
}

static MAIN_REACHED_MS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();

/// Records the process's age when `main` began (once; later calls are ignored).
pub fn set_main_reached_ms(ms: Option<f64>) {
    if let Some(ms) = ms {
        let _ = MAIN_REACHED_MS.set(ms);
    }
}

/// The process's age when `main` began, if recorded: fork, exec and the program's load.
pub fn main_reached_ms() -> Option<f64> {
    MAIN_REACHED_MS.get().copied()
}

/// When the kernel started, in Unix time: now less the time since boot (CLOCK_BOOTTIME
/// counts suspend too, as the boot's wall clock does).
pub fn kernel_started_unix() -> Option<f64> {
    let up = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).ok()?;
    Some(now_unix() - (up.tv_sec() as f64 + up.tv_nsec() as f64 / 1e9))
}

/// The kernel's boot id, read under the root. `None` if absent (a demo root
/// without /proc): then per-boot modules run every time.
pub fn boot_id(paths: &Paths) -> Option<String> {
    let read = |path: &std::path::Path| {
        paths
            .read(path)
            .ok()
            .flatten()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty() && s.len() <= 64)
    };
    read(&paths.boot_id_file()).or_else(|| read(&paths.fallback_boot_id_file()))
}

/// The boot id, made up when the root has no kernel one (a chroot build without `/proc`):
/// a random id kept in `/run/stoke`, which a real boot starts empty. Without it, every stage
/// would start a new boot's status and an earlier stage's failure would be forgotten.
pub fn boot_id_or_make(paths: &Paths) -> Option<String> {
    if let Some(id) = boot_id(paths) {
        return Some(id);
    }
    let id = uuid::Uuid::new_v4().to_string();
    match paths.write(
        &paths.fallback_boot_id_file(),
        format!("{id}\n").as_bytes(),
        0o644,
        true,
    ) {
        Ok(()) => {
            tracing::warn!(
                "no kernel boot id in {}: using {id}, kept in {} until /run is emptied",
                paths.boot_id_file().display(),
                paths.fallback_boot_id_file().display()
            );
            Some(id)
        }
        Err(e) => {
            tracing::warn!("no boot id, and cannot keep one: {e}");
            None
        }
    }
}

/// What a module's last run left behind.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Semaphore {
    pub module: String,
    pub frequency: Frequency,
    pub when_unix: f64,
    pub boot_id: Option<String>,
    pub instance_id: Option<InstanceId>,
    pub config_sha256: String,
    pub ok: bool,
    pub summary: String,
    #[serde(default)]
    pub details: serde_json::Value,
    /// Template variables the module published (see `Report::vars`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub vars: std::collections::BTreeMap<String, String>,
    pub duration_ms: u64,
}

pub struct State<'a> {
    paths: &'a Paths,
}

/// Whether a module is due, and the words that say why.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub due: bool,
    pub reason: String,
}

impl<'a> State<'a> {
    pub fn new(paths: &'a Paths) -> Self {
        State { paths }
    }

    pub fn sem_path(
        &self,
        module: &str,
        freq: Frequency,
        iid: Option<&InstanceId>,
    ) -> Option<PathBuf> {
        match (freq, iid) {
            (Frequency::Once, _) => Some(self.paths.state_dir.join("sem").join(module)),
            (_, Some(iid)) => Some(self.paths.instance_dir(iid).join("sem").join(module)),
            (_, None) => None,
        }
    }

    pub fn read_sem(
        &self,
        module: &str,
        freq: Frequency,
        iid: Option<&InstanceId>,
    ) -> Option<Semaphore> {
        let path = self.sem_path(module, freq, iid)?;
        let text = self.paths.read(&path).ok().flatten()?;
        match serde_json::from_str(&text) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("ignoring unreadable semaphore {}: {e}", path.display());
                None
            }
        }
    }

    pub fn write_sem(&self, sem: &Semaphore) -> std::io::Result<()> {
        let path = self
            .sem_path(&sem.module, sem.frequency, sem.instance_id.as_ref())
            .ok_or_else(|| std::io::Error::other("no instance id for a per-instance semaphore"))?;
        let json = serde_json::to_vec_pretty(sem).map_err(std::io::Error::other)?;
        // A per-boot one is meaningful only until the next boot, which a power loss is anyway.
        self.paths
            .write(&path, &json, 0o644, sem.frequency != Frequency::PerBoot)
    }

    pub fn decide(
        &self,
        module: &str,
        freq: Frequency,
        iid: Option<&InstanceId>,
        boot_id: Option<&str>,
    ) -> Decision {
        let due = |reason: String| Decision { due: true, reason };
        let not_due = |reason: String| Decision { due: false, reason };
        let Some(sem) = self.read_sem(module, freq, iid) else {
            return match (freq, iid) {
                (Frequency::PerInstance, Some(iid)) => {
                    due(format!("per-instance, not yet run for {iid}"))
                }
                (Frequency::PerBoot, _) => due("per-boot, not yet run this boot".into()),
                _ => due(format!("{freq}, never ran")),
            };
        };
        if !sem.ok {
            return due(format!("{freq}, last run failed: retrying"));
        }
        match freq {
            Frequency::Once => not_due("once, already ran".into()),
            Frequency::PerInstance => not_due(format!(
                "per-instance, already ran for {}",
                iid.map_or("this instance", |i| i.as_str())
            )),
            Frequency::PerBoot => match (boot_id, sem.boot_id.as_deref()) {
                (Some(now), Some(then)) if now == then => {
                    not_due("per-boot, already ran this boot".into())
                }
                _ => due("per-boot, not yet run this boot".into()),
            },
        }
    }

    /// The recorded instance id, if any and valid: a tampered file is not used.
    pub fn current_instance_id(&self) -> Option<InstanceId> {
        let text = self.paths.read(&self.paths.instance_id_file()).ok()??;
        match InstanceId::new(text.trim()) {
            Ok(iid) => Some(iid),
            Err(e) => {
                tracing::warn!("{}: {e}; not used", self.paths.instance_id_file().display());
                None
            }
        }
    }

    /// Written only when it changes (`query` and `shutdown` read it; stages do not).
    pub fn set_instance_id(&self, iid: &InstanceId) -> std::io::Result<()> {
        if self.current_instance_id().as_ref() == Some(iid) {
            return Ok(());
        }
        self.paths.write(
            &self.paths.instance_id_file(),
            format!("{iid}\n").as_bytes(),
            0o644,
            true,
        )
    }

    /// Removes the temp files a killed stoke left on the way to an atomic rename (a private
    /// host key among them, possibly), where stoke writes, resolved inside the root (a link
    /// under `--root` to the host's `/etc` is not swept). Call with the run lock held.
    pub fn remove_stale_temp_files(&self) -> Vec<PathBuf> {
        let fs = match self.paths.root.fs() {
            Ok(fs) => fs,
            Err(e) => {
                tracing::warn!("stale temp files not swept: {e}");
                return Vec::new();
            }
        };
        let mut removed = Vec::new();
        for (dir, depth) in [
            ("/etc", 0),
            ("/etc/ssh", 0),
            ("/etc/sudoers.d", 0),
            ("/etc/stoke", 1),
            ("/var/lib/stoke", 8),
            ("/run/stoke", 1),
            ("/root", 1),
            ("/home", 2),
        ] {
            removed.extend(fs.remove_stale_temp_files(Path::new(dir), depth));
        }
        for p in &removed {
            tracing::warn!("removed {}: left by an interrupted stoke", p.display());
        }
        removed
    }

    /// Removes instance state so the next boot behaves as a first boot (resolved inside the
    /// root: a link there is removed, never followed).
    pub fn clean(&self, logs: bool, seed: bool) -> std::io::Result<Vec<PathBuf>> {
        let mut targets = vec![
            self.paths.state_dir.join("instances"),
            self.paths.state_dir.join("sem"),
            // Module state that outlives instances (e.g. which per-once scripts started).
            self.paths.state_dir.join("modules"),
            self.paths.instance_id_file(),
            self.paths.status_file(),
        ];
        if logs {
            targets.push(self.paths.log_dir.clone());
        }
        if seed {
            targets.push(self.paths.seed_dir.clone());
        }
        // What an interrupted stoke left must not survive into a baked image.
        let mut removed = self.remove_stale_temp_files();
        for t in targets {
            if self.paths.remove_tree(&t)? {
                removed.push(t);
            }
        }
        Ok(removed)
    }
}

/// Holds `/run/stoke/lock` for as long as it lives: one stoke at a time.
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// [`RunLock::acquire`] from async code: the wait happens off the runtime.
    pub async fn acquire_off_runtime(paths: &Paths, wait: Duration) -> std::io::Result<RunLock> {
        let paths = paths.clone();
        stoke_api::off_runtime("run-lock", move || RunLock::acquire(&paths, wait)).await?
    }

    /// Waits up to `wait` for another stoke to finish (blocking: see `acquire_off_runtime`).
    pub fn acquire(paths: &Paths, wait: Duration) -> std::io::Result<RunLock> {
        // Resolved inside the root: a link under `--root` cannot put the lock on the host.
        let fs = paths.root.fs()?;
        fs.create_dir_all(Path::new(RUN_DIR), 0o755)?;
        let file = fs.open_or_create(&Path::new(RUN_DIR).join("lock"), 0o644)?;
        let deadline = Instant::now() + wait;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(RunLock { _file: file }),
                Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::WouldBlock,
                        format!(
                            "another stoke holds {} (waited {wait:?})",
                            paths.lock_file().display()
                        ),
                    ));
                }
                Err(fs::TryLockError::Error(e)) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_age_is_small_and_grows() {
        let a = process_age_ms().expect("/proc/self/stat");
        // A test process is seconds old at most; ticks are 10 ms.
        assert!(a < 600_000.0, "{a}");
        let b = process_age_ms().unwrap();
        assert!(b >= a, "{a} then {b}");
    }
    use stoke_api::Root;

    fn iid(id: &str) -> InstanceId {
        InstanceId::new(id).unwrap()
    }

    fn sem(module: &str, freq: Frequency, iid: &str, boot: &str, ok: bool) -> Semaphore {
        Semaphore {
            module: module.into(),
            frequency: freq,
            when_unix: 1.0,
            boot_id: Some(boot.into()),
            instance_id: Some(InstanceId::new(iid).unwrap()),
            config_sha256: String::new(),
            ok,
            summary: String::new(),
            details: serde_json::Value::Null,
            vars: Default::default(),
            duration_ms: 1,
        }
    }

    #[test]
    fn frequency_decisions() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(Root::new(dir.path()), None, None);
        let st = State::new(&paths);
        let d = st.decide("m", Frequency::PerInstance, Some(&iid("i-1")), Some("b1"));
        assert!(d.due);
        assert_eq!(d.reason, "per-instance, not yet run for i-1");

        st.write_sem(&sem("m", Frequency::PerInstance, "i-1", "b1", true))
            .unwrap();
        let d = st.decide("m", Frequency::PerInstance, Some(&iid("i-1")), Some("b2"));
        assert!(!d.due, "same instance, new boot: not due");
        assert!(
            st.decide("m", Frequency::PerInstance, Some(&iid("i-2")), Some("b2"))
                .due,
            "new instance"
        );

        st.write_sem(&sem("p", Frequency::PerBoot, "i-1", "b1", true))
            .unwrap();
        assert!(
            !st.decide("p", Frequency::PerBoot, Some(&iid("i-1")), Some("b1"))
                .due
        );
        assert!(
            st.decide("p", Frequency::PerBoot, Some(&iid("i-1")), Some("b2"))
                .due
        );

        st.write_sem(&sem("f", Frequency::PerInstance, "i-1", "b1", false))
            .unwrap();
        let d = st.decide("f", Frequency::PerInstance, Some(&iid("i-1")), Some("b1"));
        assert!(d.due && d.reason.contains("failed"), "{d:?}");

        st.write_sem(&sem("o", Frequency::Once, "i-1", "b1", true))
            .unwrap();
        assert!(
            !st.decide("o", Frequency::Once, Some(&iid("i-9")), Some("b9"))
                .due,
            "once survives new instances"
        );
    }

    #[test]
    fn a_tampered_instance_id_file_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(Root::new(dir.path()), None, None);
        let st = State::new(&paths);
        st.set_instance_id(&InstanceId::new("i-1").unwrap())
            .unwrap();
        assert_eq!(st.current_instance_id().as_deref(), Some("i-1"));
        std::fs::write(paths.instance_id_file(), "../../etc\n").unwrap();
        assert_eq!(st.current_instance_id(), None);
    }

    #[test]
    fn second_lock_waits_then_fails() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(Root::new(dir.path()), None, None);
        let _held = RunLock::acquire(&paths, Duration::ZERO).unwrap();
        let err = RunLock::acquire(&paths, Duration::from_millis(10))
            .err()
            .unwrap();
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    }
}
