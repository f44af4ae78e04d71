use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use stoke_api::{Action, Cmd, CmdOutput, MountRequest, OutputLog, SysError, System};

use super::RealSystem;

/// The `System` for `--root DIR`: every action is appended to
/// `DIR/run/stoke/actions.jsonl`. Nothing runs unless `execute` is set, and
/// even then calls that would change the host itself (hostname, console) stay
/// recorded only: `--root` never changes the machine it runs on.
pub struct Sandbox {
    log: Mutex<Option<File>>,
    log_path: PathBuf,
    console_log: PathBuf,
    execute: bool,
}

impl Sandbox {
    pub fn new(actions_file: PathBuf, console_log: PathBuf, execute: bool) -> Self {
        Sandbox {
            log: Mutex::new(None),
            log_path: actions_file,
            console_log,
            execute,
        }
    }

    fn record(&self, action: Action) -> Result<(), SysError> {
        let err = |e: std::io::Error| SysError::Call {
            call: "record",
            what: self.log_path.display().to_string(),
            source: e,
        };
        let mut line = serde_json::to_string(&action).map_err(|e| err(e.into()))?;
        line.push('\n');
        let mut guard = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            if let Some(dir) = self.log_path.parent() {
                std::fs::create_dir_all(dir).map_err(err)?;
            }
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log_path)
                .map_err(err)?;
            *guard = Some(f);
        }
        match guard.as_mut() {
            Some(f) => f.write_all(line.as_bytes()).map_err(err),
            None => Ok(()),
        }
    }
}

fn argv(cmd: &Cmd) -> Vec<String> {
    std::iter::once(cmd.program.clone())
        .chain(cmd.args.iter().cloned())
        .collect()
}

#[stoke_api::async_trait]
impl System for Sandbox {
    async fn run(&self, cmd: &Cmd) -> Result<CmdOutput, SysError> {
        self.record(Action::Run { argv: argv(cmd) })?;
        if self.execute {
            RealSystem.run(cmd).await
        } else {
            Ok(CmdOutput::ok(""))
        }
    }

    fn spawn_detached(&self, cmd: &Cmd, log: &OutputLog) -> Result<u32, SysError> {
        self.record(Action::SpawnDetached {
            argv: argv(cmd),
            log: log.path().to_path_buf(),
        })?;
        if self.execute {
            RealSystem.spawn_detached(cmd, log)
        } else {
            Ok(0)
        }
    }

    fn sethostname(&self, name: &str) -> Result<(), SysError> {
        self.record(Action::Sethostname {
            name: name.to_string(),
        })
    }

    async fn mount(&self, req: &MountRequest) -> Result<(), SysError> {
        self.record(Action::Mount(req.clone()))?;
        if self.execute {
            RealSystem.mount(req).await
        } else {
            Ok(())
        }
    }

    async fn umount(&self, target: &Path) -> Result<(), SysError> {
        self.record(Action::Umount {
            target: target.to_path_buf(),
        })?;
        if self.execute {
            RealSystem.umount(target).await
        } else {
            Ok(())
        }
    }

    fn fchown(&self, file: &File, path: &Path, uid: u32, gid: u32) -> Result<(), SysError> {
        self.record(Action::Chown {
            path: path.to_path_buf(),
            uid,
            gid,
        })?;
        if self.execute {
            RealSystem.fchown(file, path, uid, gid)
        } else {
            Ok(())
        }
    }

    fn console(&self, text: &str) -> Result<(), SysError> {
        self.record(Action::Console {
            text: text.to_string(),
        })?;
        // The sandbox's "console" is a file under the root, so demos can show it.
        let err = |e: std::io::Error| SysError::Call {
            call: "write",
            what: self.console_log.display().to_string(),
            source: e,
        };
        if let Some(dir) = self.console_log.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.console_log)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(err)
    }

    fn executes(&self) -> bool {
        self.execute
    }

    /// A regular file at `dev` stands in for the controller: its bytes are the identify
    /// data (how a sandbox root describes EBS volumes); else the host's answer when
    /// executing, else "not available".
    async fn nvme_identify_controller(&self, dev: &Path) -> Result<Vec<u8>, SysError> {
        let err = |e: std::io::Error| SysError::Call {
            call: "nvme identify",
            what: dev.display().to_string(),
            source: e,
        };
        match std::fs::symlink_metadata(dev) {
            Ok(m) if m.is_file() => {
                let data = std::fs::read(dev).map_err(err)?;
                if data.len() == stoke_api::NVME_IDENTIFY_LEN {
                    Ok(data)
                } else {
                    Err(err(std::io::Error::other(format!(
                        "{} bytes, not {}",
                        data.len(),
                        stoke_api::NVME_IDENTIFY_LEN
                    ))))
                }
            }
            _ if self.execute => RealSystem.nvme_identify_controller(dev).await,
            _ => Err(err(std::io::Error::from(std::io::ErrorKind::Unsupported))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_and_does_not_run() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("run/stoke/actions.jsonl");
        let marker = dir.path().join("ran");
        let sb = Sandbox::new(log.clone(), dir.path().join("console"), false);
        let out = sb
            .run(&Cmd::new("touch", [marker.display().to_string()]))
            .await
            .unwrap();
        assert!(out.success());
        assert!(!marker.exists(), "the command must not run");
        sb.sethostname("x").unwrap();
        let lines: Vec<Action> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines,
            vec![
                Action::Run {
                    argv: vec!["touch".into(), marker.display().to_string()]
                },
                Action::Sethostname { name: "x".into() }
            ]
        );
    }

    #[tokio::test]
    async fn execute_runs_commands_but_never_sets_the_hostname() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let sb = Sandbox::new(dir.path().join("a.jsonl"), dir.path().join("console"), true);
        sb.run(&Cmd::new("touch", [marker.display().to_string()]))
            .await
            .unwrap();
        assert!(marker.exists());
        let before = nix::unistd::gethostname().unwrap();
        sb.sethostname("stoke-must-not-set-this").unwrap();
        assert_eq!(nix::unistd::gethostname().unwrap(), before);
    }
}
