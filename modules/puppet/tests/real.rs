//! The module against real programs: Debian's `puppet apply --detailed-exitcodes`
//! on small manifests (no server), and shell scripts for exit-code edge cases.
//! Commands really run through a test-only seam: a FakeSystem responder, or
//! (for the timeout) a small System that runs and kills.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stoke_api::fake::{FakeSystem, context};
use stoke_api::{
    Cmd, CmdOutput, Context, InstanceData, ModuleError, MountRequest, Report, SysError, System,
};

fn ctx(root: &Path, puppet: Value, system: Arc<FakeSystem>) -> Context {
    let instance = InstanceData {
        datasource: "none".into(),
        instance_id: "i-1".parse().unwrap(),
        ..Default::default()
    };
    context(root, json!({ "puppet": puppet }), instance, system)
}

async fn run(c: &Context) -> Result<Report, ModuleError> {
    stoke_puppet::modules()[0].run(c).await
}

/// Runs a command to completion for real (test-only seam).
fn really_run(cmd: &Cmd) -> CmdOutput {
    match Command::new(&cmd.program)
        .args(&cmd.args)
        .envs(cmd.env.iter().cloned())
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) => CmdOutput {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into(),
            stderr: String::from_utf8_lossy(&o.stderr).into(),
        },
        Err(e) => CmdOutput::failed(127, e.to_string()),
    }
}

fn real_fake() -> Arc<FakeSystem> {
    let fake = FakeSystem::new();
    fake.respond(|cmd| Some(really_run(cmd)));
    fake
}

fn puppet_present() -> bool {
    match Command::new("puppet").arg("--version").output() {
        Ok(o) if o.status.success() => true,
        _ => {
            stoke_api::testing::skip("no working `puppet` on PATH (Debian's puppet-agent)");
            false
        }
    }
}

/// `puppet apply` confined to `dir` (its own confdir, vardir...), so runs do not
/// touch /etc/puppet state and can run side by side.
fn apply(dir: &Path, manifest: &Path) -> Value {
    let mut argv = vec!["puppet", "apply", "--detailed-exitcodes", "--color=false"]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    for d in ["confdir", "vardir", "codedir", "logdir", "rundir"] {
        argv.push(format!("--{d}"));
        argv.push(dir.join(d).display().to_string());
    }
    argv.push(manifest.display().to_string());
    json!({ "mode": "blocking", "command": argv, "wait_for_lock": 0 })
}

fn manifest(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, body).unwrap();
    p
}

#[tokio::test]
async fn real_puppet_change_then_no_change_are_success() {
    if !puppet_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("motd");
    let m = manifest(
        dir.path(),
        "change.pp",
        &format!(
            "file {{ '{}': ensure => file, content => \"hello\\n\" }}\n",
            target.display()
        ),
    );
    let c = ctx(dir.path(), apply(dir.path(), &m), real_fake());

    let r = run(&c).await.unwrap();
    assert_eq!(r.details["code"], 2, "{r:?}");
    assert!(
        r.summary.starts_with("changes applied (exit 2)"),
        "{}",
        r.summary
    );
    assert_eq!(fs::read_to_string(&target).unwrap(), "hello\n");
    let tail = r.details["tail"].to_string();
    assert!(tail.contains("defined content as"), "{tail}");

    let r = run(&c).await.unwrap();
    assert_eq!(r.details["code"], 0, "{r:?}");
    assert!(
        r.summary.starts_with("no changes (exit 0)"),
        "{}",
        r.summary
    );
}

#[tokio::test]
async fn real_puppet_failures_are_failures() {
    if !puppet_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let broken = format!(
        "file {{ '{}': ensure => file, content => \"x\\n\" }}\n",
        dir.path().join("no-such-dir/x").display()
    );
    let m = manifest(dir.path(), "fail.pp", &broken);
    let c = ctx(dir.path(), apply(dir.path(), &m), real_fake());
    let err = run(&c).await.unwrap_err().to_string();
    assert!(err.contains("exit 4: failures"), "{err}");
    assert!(
        err.contains("Error: "),
        "the last lines carry Puppet's error: {err}"
    );

    let ok = format!(
        "file {{ '{}': ensure => file, content => \"y\\n\" }}\n",
        dir.path().join("ok").display()
    );
    let m = manifest(dir.path(), "mixed.pp", &format!("{broken}{ok}"));
    let c = ctx(dir.path(), apply(dir.path(), &m), real_fake());
    let err = run(&c).await.unwrap_err().to_string();
    assert!(
        err.contains("exit 6: changes applied, with failures"),
        "{err}"
    );
    let rec: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(c.state_dir.join(stoke_puppet::LAST_RUN_FILE)).unwrap(),
    )
    .unwrap();
    assert_eq!(
        (rec["state"].as_str(), rec["code"].as_i64()),
        (Some("failed"), Some(6))
    );
}

/// A fake `puppet`: prints a line and exits as told (or kills itself).
fn script(dir: &Path) -> String {
    let p = dir.join("fake-puppet");
    fs::write(
        &p,
        "#!/bin/sh\necho \"Notice: fake run $1\"\n\
         case \"$1\" in\n  signal) kill -9 $$ ;;\n  *) echo 'Error: something' >&2; exit \"$1\" ;;\nesac\n",
    )
    .unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p.display().to_string()
}

#[tokio::test]
async fn exit_code_edge_cases_from_a_fake_command() {
    let dir = tempfile::tempdir().unwrap();
    let fake = script(dir.path());
    // Run by /bin/sh, not exec'd itself: a file just written can be "Text file busy" to exec
    // while another test thread forks (the child holds the write descriptor until its exec).
    let case = |arg: &str| json!({"command": ["/bin/sh", fake, arg, "--detailed-exitcodes"], "wait_for_lock": 0});
    for (arg, ok, text) in [
        ("0", true, "no changes (exit 0)"),
        ("2", true, "changes applied (exit 2)"),
        ("1", false, "exit 1: run failed"),
        ("3", false, "exit 3: unexpected exit code"),
        ("4", false, "exit 4: failures"),
        ("124", false, "exit 124: timed out and was killed"),
        ("signal", false, "killed by signal: killed by a signal"),
    ] {
        let c = ctx(dir.path(), case(arg), real_fake());
        match run(&c).await {
            Ok(r) => {
                assert!(ok, "{arg} must fail, got {r:?}");
                assert!(r.summary.starts_with(text), "{arg}: {}", r.summary);
            }
            Err(e) => {
                let e = e.to_string();
                assert!(!ok, "{arg} must succeed, got {e}");
                assert!(e.contains(text), "{arg}: {e}");
                assert!(e.contains(&format!("Notice: fake run {arg}")), "{arg}: {e}");
            }
        }
    }
}

/// Runs commands for real and kills them at their timeout, as the host System does.
struct Killing;

#[stoke_api::async_trait]
impl System for Killing {
    async fn run(&self, cmd: &Cmd) -> Result<CmdOutput, SysError> {
        let mut child = Command::new(&cmd.program)
            .args(&cmd.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| SysError::Spawn {
                program: cmd.program.clone(),
                source,
            })?;
        let deadline = Instant::now() + cmd.timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let mut stdout = String::new();
                child
                    .stdout
                    .take()
                    .unwrap()
                    .read_to_string(&mut stdout)
                    .unwrap();
                return Ok(CmdOutput {
                    code: status.code(),
                    stdout,
                    stderr: String::new(),
                });
            }
            if Instant::now() >= deadline {
                child.kill().unwrap();
                child.wait().unwrap();
                return Err(SysError::Timeout {
                    argv: cmd.display(),
                    after: cmd.timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    fn spawn_detached(&self, _: &Cmd, _: &stoke_api::OutputLog) -> Result<u32, SysError> {
        unreachable!("blocking mode only")
    }
    fn sethostname(&self, _: &str) -> Result<(), SysError> {
        unreachable!()
    }
    async fn mount(&self, _: &MountRequest) -> Result<(), SysError> {
        unreachable!()
    }
    async fn umount(&self, _: &Path) -> Result<(), SysError> {
        unreachable!()
    }
    fn fchown(&self, _: &fs::File, _: &Path, _: u32, _: u32) -> Result<(), SysError> {
        unreachable!()
    }
    fn console(&self, _: &str) -> Result<(), SysError> {
        unreachable!()
    }
    fn executes(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn a_run_past_its_timeout_is_killed_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = ctx(
        dir.path(),
        json!({"command": ["/bin/sh", "-c", "echo started; exec sleep 60", "--detailed-exitcodes"],
               "timeout": 1, "wait_for_lock": 0}),
        FakeSystem::new(),
    );
    c.system = Arc::new(Killing);
    let start = Instant::now();
    let err = run(&c).await.unwrap_err().to_string();
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "killed, not waited for"
    );
    assert!(
        err.contains("timed out after 1 s (puppet.timeout) and was killed"),
        "{err}"
    );
    let rec: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(c.state_dir.join(stoke_puppet::LAST_RUN_FILE)).unwrap(),
    )
    .unwrap();
    assert_eq!(rec["state"], "failed");
    assert_eq!(rec["meaning"], "timed out and was killed");
    assert!(rec["code"].is_null());
}
