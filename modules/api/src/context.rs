use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{ConfigError, ModuleError, RootDir, System};

/// The filesystem root stoke works against: `/` on a real boot, a directory
/// for tests, demos and image building. Every path a module touches is under it,
/// and every file under it is opened through [`Root::fs`] (resolved inside it).
#[derive(Clone)]
pub struct Root {
    dir: PathBuf,
    /// The root opened once, on first use, and shared by every clone: a boot opens many
    /// files, each resolved from this one descriptor.
    fs: Arc<Mutex<Option<Arc<RootDir>>>>,
}

impl std::fmt::Debug for Root {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Root").field(&self.dir).finish()
    }
}

impl PartialEq for Root {
    fn eq(&self, other: &Root) -> bool {
        self.dir == other.dir
    }
}

impl Eq for Root {}

impl Root {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Root {
            dir: dir.into(),
            fs: Arc::default(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn is_host(&self) -> bool {
        self.dir == Path::new("/")
    }

    /// The root, open, for every read, write, stat, listing, rename and removal under it
    /// (`openat2(RESOLVE_IN_ROOT)`: no symlink leads out). Opened on first use, then shared.
    pub fn fs(&self) -> std::io::Result<Arc<RootDir>> {
        let mut slot = self.fs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(dir) = &*slot {
            return Ok(dir.clone());
        }
        let dir = Arc::new(RootDir::open(self)?);
        *slot = Some(dir.clone());
        Ok(dir)
    }

    /// The host path of an absolute instance path (`..` cannot climb above the root:
    /// it is normalised lexically first). **For the argv of an external command and
    /// for messages only, never for I/O**: a join follows a symlink under the root out
    /// of it; open through [`Root::fs`] instead (tests/architecture.rs checks).
    pub fn host_path(&self, guest: impl AsRef<Path>) -> PathBuf {
        let mut out = self.dir.clone();
        let mut depth = 0usize;
        for comp in guest.as_ref().components() {
            match comp {
                Component::Normal(part) => {
                    out.push(part);
                    depth += 1;
                }
                Component::ParentDir if depth > 0 => {
                    out.pop();
                    depth -= 1;
                }
                _ => {}
            }
        }
        out
    }
}

/// A module's state file larger than this is not its own: refused rather than read whole.
const MAX_STATE_FILE: u64 = 16 * 1024 * 1024;

/// Instance tags are template variables `tags.<Key>`.
pub const TAG_PREFIX: &str = "tags.";

/// What the datasource told us about this instance.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct InstanceData {
    /// "ec2", "nocloud" or "none".
    pub datasource: String,
    pub instance_id: crate::InstanceId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_ipv4: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
    /// The primary network interface's first IPv6 address (`ipv6s` of the interface with
    /// network-card 0 and device-number 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_ipv6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    /// OpenSSH public key lines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public_keys: Vec<String>,
    /// EC2 block-device-mapping: name (e.g. "ephemeral0") → device (e.g. "sdb").
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub block_device_mapping: BTreeMap<String, String>,
    /// EC2 instance tags read from IMDS (only those the configuration uses): key → value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// The metadata service endpoint that answered (EC2), for the rest of the boot and the next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imds_endpoint: Option<String>,
}

impl InstanceData {
    /// Template variables derived from metadata.
    pub fn vars(&self) -> BTreeMap<String, String> {
        let mut v = BTreeMap::new();
        v.insert("instance_id".into(), self.instance_id.to_string());
        v.insert("datasource".into(), self.datasource.clone());
        let opt = [
            ("instance_type", &self.instance_type),
            ("local_ipv4", &self.local_ipv4),
            ("ipv6", &self.ipv6),
            ("local_ipv6", &self.local_ipv6),
            ("local_hostname", &self.local_hostname),
            ("region", &self.region),
            ("availability_zone", &self.availability_zone),
        ];
        for (k, val) in opt {
            if let Some(val) = val {
                v.insert(k.into(), val.clone());
            }
        }
        for (k, val) in &self.tags {
            v.insert(format!("{TAG_PREFIX}{k}"), val.clone());
        }
        v
    }
}

/// Which of a module's two state directories ([`Context::state_dir`],
/// [`Context::shared_state_dir`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateScope {
    /// Per instance: a new instance starts empty.
    Instance,
    /// Outlives instances (`once` records).
    Shared,
}

/// Everything a module gets for one run.
pub struct Context {
    pub root: Root,
    pub instance: Arc<InstanceData>,
    /// stoke's environment variables, read once by the engine: a module reads them here,
    /// never from the process (tests give their own).
    pub env: Arc<BTreeMap<String, String>>,
    /// This boot's id (the kernel's, or the one stoke made up for a root without it): tells
    /// work recorded this boot from work of a boot before.
    pub boot_id: Option<String>,
    /// This module's configuration keys only (already validated at load).
    pub config: serde_json::Value,
    pub system: Arc<dyn System>,
    /// Persistent per-instance directory for this module's own state (host path).
    pub state_dir: PathBuf,
    /// Persistent directory for this module's state that outlives instances (`once`
    /// records; host path; cleared only by `stoke clean`).
    pub shared_state_dir: PathBuf,
    /// Scripts and boothooks from user-data, in the order they appeared.
    pub user_scripts: Arc<Vec<crate::UserScript>>,
    /// Template variables: metadata, `vars:` from config, and outputs of earlier modules.
    pub vars: BTreeMap<String, String>,
    /// Details reported by modules this one runs after (this run, or their last run).
    pub prior: BTreeMap<String, serde_json::Value>,
    /// Program name overrides from config `tools:`.
    pub tools: BTreeMap<String, String>,
    /// The stoke executable as the instance sees it (for work that must call
    /// back into stoke, e.g. `stoke exec-record` around a detached run).
    pub self_exe: PathBuf,
    /// How this boot went so far, every stage, as the module starts: the one view a module
    /// that judges or reports the boot (lifecycle, report) has of it.
    pub boot: Arc<BootSoFar>,
}

/// This boot so far, all stages, when a module starts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BootSoFar {
    /// The modules that failed or were blocked (what makes `stoke status` say `error`):
    /// module name → its state (`failed`, `blocked`) and reason, as in the status.
    pub failed: BTreeMap<String, String>,
    /// This boot's `stoke status --json`, given only to the modules of
    /// [`crate::Order::Report`] (they send it; `None` for the others): stages, every
    /// module's outcome, checks, image lineage. Its `status` is the word the boot ends with
    /// if the reports succeed.
    pub status: Option<serde_json::Value>,
}

impl BootSoFar {
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
    }
}

impl Context {
    /// The host path of an instance path: for argv and messages only, never for I/O
    /// (see [`Root::host_path`]; open files through [`Context::fs`]).
    pub fn host_path(&self, guest: impl AsRef<Path>) -> PathBuf {
        self.root.host_path(guest)
    }

    /// The root, open (see [`Root::fs`]): every file this module reads or writes under
    /// the root goes through it.
    pub fn fs(&self) -> Result<Arc<RootDir>, ModuleError> {
        self.root
            .fs()
            .map_err(|e| ModuleError::io("opening", self.root.dir(), e))
    }

    fn state_dir_of(&self, scope: StateScope) -> &Path {
        match scope {
            StateScope::Instance => &self.state_dir,
            StateScope::Shared => &self.shared_state_dir,
        }
    }

    /// `name` (a relative path) in one of this module's state directories as the instance
    /// sees it, when that directory is under the root (always, but for some tests' own
    /// directories).
    fn state_guest(&self, scope: StateScope, name: &str) -> Option<PathBuf> {
        let rel = self
            .state_dir_of(scope)
            .strip_prefix(self.root.dir())
            .ok()?;
        Some(Path::new("/").join(rel).join(name))
    }

    /// `name` in one of this module's state directories as the instance sees it (for a command
    /// that resolves it inside the root itself, such as `stoke --root DIR exec-record`);
    /// `None` when the directory is not under the root (some tests' own directories).
    pub fn state_path_in_root(&self, scope: StateScope, name: &str) -> Option<PathBuf> {
        self.state_guest(scope, name)
    }

    /// Reads `name` from this module's per-instance state directory (resolved inside the
    /// root: a `--root` tree's `/var/lib/stoke` cannot lead out); `None` if absent.
    pub fn read_state(&self, name: &str) -> std::io::Result<Option<String>> {
        match self.read_state_in(StateScope::Instance, name)? {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes).map(Some).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{name}: not UTF-8"),
                )
            }),
        }
    }

    /// Replaces `name` in this module's per-instance state directory atomically and
    /// durably (made if missing; resolved inside the root, as [`Context::read_state`]).
    pub fn write_state(&self, name: &str, data: &[u8]) -> std::io::Result<()> {
        match self.state_guest(StateScope::Instance, name) {
            Some(guest) => self.root.fs()?.replace_keeping(&guest, data, 0o644, true),
            None => crate::atomic_write(&self.state_dir.join(name), data, 0o644),
        }
    }

    /// Reads `name` (a relative path) from one of this module's state directories,
    /// resolved inside the root; `None` if absent.
    pub fn read_state_in(&self, scope: StateScope, name: &str) -> std::io::Result<Option<Vec<u8>>> {
        match self.state_guest(scope, name) {
            Some(guest) => self.root.fs()?.read_regular(&guest, MAX_STATE_FILE),
            None => crate::read_capped(&self.state_dir_of(scope).join(name), MAX_STATE_FILE),
        }
    }

    /// Replaces `name` in one of this module's state directories atomically and durably
    /// with exactly `mode`, resolved inside the root (missing directories made 0755).
    pub fn write_state_in(
        &self,
        scope: StateScope,
        name: &str,
        data: &[u8],
        mode: u32,
    ) -> std::io::Result<()> {
        match self.state_guest(scope, name) {
            Some(guest) => {
                let rd = self.root.fs()?;
                if let Some(dir) = guest.parent() {
                    rd.create_dir_all(dir, 0o755)?;
                }
                rd.write_atomic(&guest, data, mode, None, self.system.as_ref())
            }
            None => crate::atomic_write(&self.state_dir_of(scope).join(name), data, mode),
        }
    }

    /// Makes the directory `name` in one of this module's state directories (and its
    /// missing parents, each `mode`), resolved inside the root.
    pub fn create_state_dir(
        &self,
        scope: StateScope,
        name: &str,
        mode: u32,
    ) -> std::io::Result<()> {
        match self.state_guest(scope, name) {
            Some(guest) => self.root.fs()?.create_dir_all(&guest, mode).map(drop),
            None => {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(mode)
                    .create(self.state_dir_of(scope).join(name))
            }
        }
    }

    /// Removes the file `name` from one of this module's state directories (a link
    /// itself, never what it points to); `false` when there was none.
    pub fn remove_state(&self, scope: StateScope, name: &str) -> std::io::Result<bool> {
        match self.state_guest(scope, name) {
            Some(guest) => self.root.fs()?.remove_file(&guest),
            None => match std::fs::remove_file(self.state_dir_of(scope).join(name)) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
            },
        }
    }

    /// The host path of `name` in one of this module's state directories, resolved inside
    /// the root: for the argv of a command that opens it on the host (a script to run, a
    /// result file for `stoke exec-record`) and for messages, never for this module's I/O.
    pub fn resolved_state_path(&self, scope: StateScope, name: &str) -> PathBuf {
        match (self.state_guest(scope, name), self.root.fs()) {
            (Some(guest), Ok(rd)) => rd.resolved_host_path(&guest),
            _ => self.state_dir_of(scope).join(name),
        }
    }

    /// A command's output log at `guest`, for [`crate::Cmd::output_log`] and
    /// [`crate::System::spawn_detached`]. When commands run, its directory is made and the
    /// file opened now, inside the root (0600, never through a link; emptied unless
    /// `append`): the `System` writes to that descriptor and never opens the path, so a
    /// link swapped in on the way afterwards is not followed. A dry run opens and creates
    /// nothing; the log is only named.
    pub fn open_log(
        &self,
        guest: impl AsRef<Path>,
        append: bool,
    ) -> Result<crate::OutputLog, ModuleError> {
        let guest = guest.as_ref();
        let rd = self
            .root
            .fs()
            .map_err(|e| ModuleError::io("opening the root for", guest, e))?;
        let shown = rd.resolved_host_path(guest);
        if !self.system.executes() {
            return Ok(crate::OutputLog::named(shown));
        }
        let file = rd
            .open_log(guest, append)
            .map_err(|e| ModuleError::io("opening", &shown, e))?;
        Ok(crate::OutputLog::opened(shown, file))
    }

    /// This module's configuration, typed.
    pub fn config<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        serde_json::from_value(self.config.clone()).map_err(|e| ConfigError::merged(e.to_string()))
    }

    /// The program to run for a tool name from [`crate::tools`].
    pub fn tool(&self, name: &str) -> String {
        self.tools
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_path_never_climbs_above_root() {
        let r = Root::new("/tmp/r");
        assert_eq!(
            r.host_path("/etc/hostname"),
            PathBuf::from("/tmp/r/etc/hostname")
        );
        assert_eq!(
            r.host_path("../../etc/passwd"),
            PathBuf::from("/tmp/r/etc/passwd")
        );
        assert_eq!(r.host_path("/a/../../b"), PathBuf::from("/tmp/r/b"));
        assert_eq!(Root::new("/").host_path("/etc"), PathBuf::from("/etc"));
    }
}
