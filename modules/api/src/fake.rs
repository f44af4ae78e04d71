//! A recording, scriptable [`System`] for module unit tests.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::{Action, Cmd, CmdOutput, Context, InstanceData, MountRequest, Root, SysError, System};

type Responder = Box<dyn Fn(&Cmd) -> Option<CmdOutput> + Send + Sync>;
type MountHook = Box<dyn Fn(&MountRequest) -> Result<(), SysError> + Send + Sync>;

/// Records every call; answers commands from scripted responders (first match
/// wins), else with success and empty output.
#[derive(Default)]
pub struct FakeSystem {
    actions: Mutex<Vec<Action>>,
    responders: Mutex<Vec<Responder>>,
    fail_mounts: Mutex<Vec<PathBuf>>,
    fail_fchowns: Mutex<Vec<PathBuf>>,
    mount_hook: Mutex<Option<MountHook>>,
    recording_only: std::sync::atomic::AtomicBool,
    real_fchown: std::sync::atomic::AtomicBool,
    nvme_identify: Mutex<std::collections::BTreeMap<PathBuf, Vec<u8>>>,
    nvme_identify_calls: Mutex<Vec<PathBuf>>,
}

impl FakeSystem {
    pub fn new() -> Arc<Self> {
        Arc::new(FakeSystem::default())
    }

    /// Answers commands whose argv (joined by spaces) starts with `prefix`.
    pub fn on(&self, prefix: &str, output: CmdOutput) {
        let prefix = prefix.to_string();
        self.respond(move |cmd| {
            let argv = std::iter::once(cmd.program.as_str())
                .chain(cmd.args.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" ");
            argv.starts_with(&prefix).then(|| output.clone())
        });
    }

    /// A general responder: return `Some` to answer the command.
    pub fn respond(&self, f: impl Fn(&Cmd) -> Option<CmdOutput> + Send + Sync + 'static) {
        self.responders.lock().unwrap().push(Box::new(f));
    }

    /// Makes a later `mount` of this target fail.
    pub fn fail_mount(&self, target: impl Into<PathBuf>) {
        self.fail_mounts.lock().unwrap().push(target.into());
    }

    /// Makes a later `fchown` of this path fail (after recording it): stands for a stoke
    /// that dies there, to show what it leaves.
    pub fn fail_fchown(&self, path: impl Into<PathBuf>) {
        self.fail_fchowns.lock().unwrap().push(path.into());
    }

    /// Runs `f` on every later `mount` (after recording it); its result is the mount's.
    /// E.g. to simulate systemd mounting the same entry at the same moment.
    pub fn on_mount(
        &self,
        f: impl Fn(&MountRequest) -> Result<(), SysError> + Send + Sync + 'static,
    ) {
        *self.mount_hook.lock().unwrap() = Some(Box::new(f));
    }

    /// Makes `executes()` false, as under a `--root` sandbox without `--execute`.
    pub fn set_recording_only(&self, yes: bool) {
        self.recording_only
            .store(yes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Makes `fchown` really change the owner too (tests that run as root and
    /// need a second run to see what a real boot would).
    pub fn set_real_fchown(&self, yes: bool) {
        self.real_fchown
            .store(yes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Makes `nvme_identify_controller(dev)` answer `data` (host path); unknown
    /// controllers answer "no such device".
    pub fn set_nvme_identify(&self, dev: impl Into<PathBuf>, data: Vec<u8>) {
        self.nvme_identify.lock().unwrap().insert(dev.into(), data);
    }

    /// The controllers asked for their identify data, in order.
    pub fn nvme_identify_calls(&self) -> Vec<PathBuf> {
        self.nvme_identify_calls.lock().unwrap().clone()
    }

    pub fn actions(&self) -> Vec<Action> {
        self.actions.lock().unwrap().clone()
    }

    /// The argv of every command run, joined by spaces.
    pub fn commands(&self) -> Vec<String> {
        self.actions()
            .into_iter()
            .filter_map(|a| match a {
                Action::Run { argv } => Some(argv.join(" ")),
                _ => None,
            })
            .collect()
    }

    fn record(&self, a: Action) {
        self.actions.lock().unwrap().push(a);
    }
}

fn argv(cmd: &Cmd) -> Vec<String> {
    std::iter::once(cmd.program.clone())
        .chain(cmd.args.iter().cloned())
        .collect()
}

#[async_trait::async_trait]
impl System for FakeSystem {
    async fn run(&self, cmd: &Cmd) -> Result<CmdOutput, SysError> {
        self.record(Action::Run { argv: argv(cmd) });
        let responders = self.responders.lock().unwrap();
        Ok(responders
            .iter()
            .find_map(|r| r(cmd))
            .unwrap_or_else(|| CmdOutput::ok("")))
    }

    fn spawn_detached(&self, cmd: &Cmd, log: &crate::OutputLog) -> Result<u32, SysError> {
        self.record(Action::SpawnDetached {
            argv: argv(cmd),
            log: log.path().to_path_buf(),
        });
        Ok(4242)
    }

    fn sethostname(&self, name: &str) -> Result<(), SysError> {
        self.record(Action::Sethostname {
            name: name.to_string(),
        });
        Ok(())
    }

    async fn mount(&self, req: &MountRequest) -> Result<(), SysError> {
        self.record(Action::Mount(req.clone()));
        if let Some(hook) = self.mount_hook.lock().unwrap().as_ref() {
            return hook(req);
        }
        if self.fail_mounts.lock().unwrap().contains(&req.target) {
            return Err(SysError::Call {
                call: "mount",
                what: req.target.display().to_string(),
                source: std::io::Error::from_raw_os_error(19),
            });
        }
        Ok(())
    }

    async fn umount(&self, target: &Path) -> Result<(), SysError> {
        self.record(Action::Umount {
            target: target.to_path_buf(),
        });
        Ok(())
    }

    fn fchown(&self, file: &File, path: &Path, uid: u32, gid: u32) -> Result<(), SysError> {
        self.record(Action::Chown {
            path: path.to_path_buf(),
            uid,
            gid,
        });
        if self.fail_fchowns.lock().unwrap().iter().any(|p| p == path) {
            return Err(SysError::Call {
                call: "fchown",
                what: path.display().to_string(),
                source: std::io::Error::other("failed on purpose (test)"),
            });
        }
        if self.real_fchown.load(std::sync::atomic::Ordering::Relaxed) {
            std::os::unix::fs::fchown(file, Some(uid), Some(gid)).map_err(|source| {
                SysError::Call {
                    call: "fchown",
                    what: path.display().to_string(),
                    source,
                }
            })?;
        }
        Ok(())
    }

    fn console(&self, text: &str) -> Result<(), SysError> {
        self.record(Action::Console {
            text: text.to_string(),
        });
        Ok(())
    }

    fn executes(&self) -> bool {
        !self
            .recording_only
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn nvme_identify_controller(&self, dev: &Path) -> Result<Vec<u8>, SysError> {
        self.nvme_identify_calls
            .lock()
            .unwrap()
            .push(dev.to_path_buf());
        self.nvme_identify
            .lock()
            .unwrap()
            .get(dev)
            .cloned()
            .ok_or_else(|| SysError::Call {
                call: "nvme identify",
                what: dev.display().to_string(),
                source: std::io::Error::from_raw_os_error(19),
            })
    }
}

/// A context for a module unit test: `root` as the filesystem, `config` as the
/// module's section, the fake as the system, state under `root/var/lib/stoke/test-state`.
pub fn context(
    root: &Path,
    config: serde_json::Value,
    instance: InstanceData,
    system: Arc<FakeSystem>,
) -> Context {
    let root = Root::new(root);
    let state_dir = root.host_path("/var/lib/stoke/test-state");
    let shared_state_dir = root.host_path("/var/lib/stoke/test-shared-state");
    let vars = instance.vars();
    Context {
        root,
        instance: Arc::new(instance),
        config,
        system,
        state_dir,
        shared_state_dir,
        user_scripts: Default::default(),
        vars,
        prior: Default::default(),
        tools: Default::default(),
        self_exe: PathBuf::from("/usr/bin/stoke"),
        boot: Default::default(),
        boot_id: Some("fake-boot".into()),
        env: Arc::default(),
    }
}
