//! SSH for a fresh instance: new host keys (stage local, before sshd starts) and
//! the operators' keys in `authorized_keys` (stage network, once metadata is in).
//! See `docs/ssh.md` for the configuration keys and the safety rules.

pub mod authorized;
pub mod hostkeys;
pub mod keyline;
mod safefs;

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

pub use authorized::{AuthorizedKeys, AuthorizedKeysConfig};
pub use hostkeys::{HostKeys, HostKeysConfig};

/// The modules this crate provides.
pub fn modules() -> Vec<Box<dyn stoke_api::Module>> {
    vec![Box::new(HostKeys), Box::new(AuthorizedKeys)]
}

/// Runs futures concurrently on the caller's task and returns their outputs in order.
async fn join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (fut, slot) in futs.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match fut.as_mut().poll(cx) {
                    Poll::Ready(v) => *slot = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

#[cfg(test)]
pub(crate) mod testutil {
    //! A System for tests: the recording fake, but ownership changes really happen
    //! (so a second run sees what a real boot would) and, optionally, non-executing.

    use std::fs::File;
    use std::path::Path;
    use std::sync::Arc;

    use stoke_api::fake::FakeSystem;
    use stoke_api::{Cmd, CmdOutput, Context, InstanceData, MountRequest, SysError, System};

    pub struct TestSystem {
        pub fake: Arc<FakeSystem>,
        pub executes: bool,
    }

    #[stoke_api::async_trait]
    impl System for TestSystem {
        async fn run(&self, cmd: &Cmd) -> Result<CmdOutput, SysError> {
            self.fake.run(cmd).await
        }
        fn spawn_detached(&self, cmd: &Cmd, log: &Path) -> Result<u32, SysError> {
            self.fake.spawn_detached(cmd, log)
        }
        fn sethostname(&self, name: &str) -> Result<(), SysError> {
            self.fake.sethostname(name)
        }
        fn mount(&self, req: &MountRequest) -> Result<(), SysError> {
            self.fake.mount(req)
        }
        fn umount(&self, target: &Path) -> Result<(), SysError> {
            self.fake.umount(target)
        }
        fn fchown(&self, file: &File, path: &Path, uid: u32, gid: u32) -> Result<(), SysError> {
            self.fake.fchown(file, path, uid, gid)?;
            if self.executes {
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
            self.fake.console(text)
        }
        fn executes(&self) -> bool {
            self.executes
        }
    }

    /// A context over `root` whose system is `fake` plus real chown (when `executes`).
    pub fn context(
        root: &Path,
        config: serde_json::Value,
        instance: InstanceData,
        fake: Arc<FakeSystem>,
        executes: bool,
    ) -> Context {
        let mut ctx = stoke_api::fake::context(root, config, instance, fake.clone());
        ctx.system = Arc::new(TestSystem { fake, executes });
        ctx
    }

    /// Makes the fake really run commands (a test-only seam to use the real ssh-keygen).
    pub fn run_for_real(fake: &FakeSystem) {
        fake.respond(|cmd| {
            let out = std::process::Command::new(&cmd.program)
                .args(&cmd.args)
                .stdin(std::process::Stdio::null())
                .output()
                .ok()?;
            Some(CmdOutput {
                code: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        });
    }

    /// The real ssh-keygen, or `None` (with the reason printed) when it is absent.
    pub fn have_ssh_keygen() -> bool {
        let ok = std::process::Command::new("ssh-keygen")
            .arg("-?")
            .output()
            .is_ok();
        if !ok {
            eprintln!("SKIPPED: ssh-keygen is not installed on this machine");
        }
        ok
    }
}

#[cfg(test)]
mod tests_authorized;
#[cfg(test)]
mod tests_hostkeys;
