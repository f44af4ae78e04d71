//! SSH for a fresh instance: new host keys (stage local, before sshd starts) and
//! the operators' keys in `authorized_keys` (stage network, once metadata is in).
//! See `docs/ssh.md` for the configuration keys and the safety rules.

#![forbid(unsafe_code)]

pub mod authorized;
mod fingerprint;
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
    //! Test contexts: the recording fake, with real ownership changes when executing.

    use std::path::Path;
    use std::sync::Arc;

    use stoke_api::fake::FakeSystem;
    use stoke_api::{CmdOutput, Context, InstanceData};

    /// A context over `root` whose system is `fake` plus real chown (when `executes`).
    pub fn context(
        root: &Path,
        config: serde_json::Value,
        instance: InstanceData,
        fake: Arc<FakeSystem>,
        executes: bool,
    ) -> Context {
        // Ownership changes really happen when executing, so a second run sees
        // what a real boot would.
        fake.set_recording_only(!executes);
        fake.set_real_fchown(executes);
        stoke_api::fake::context(root, config, instance, fake)
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

    /// Whether the real ssh-keygen is here (else the test skips, or fails under
    /// STOKE_TEST_REQUIRE_ALL=1).
    pub fn have_ssh_keygen() -> bool {
        stoke_api::testing::need_tools(&["ssh-keygen"])
    }
}

#[cfg(test)]
mod tests_authorized;
#[cfg(test)]
mod tests_hostkeys;
