use std::path::Path;

use serde_json::json;
use stoke_api::fake::{FakeSystem, context};
use stoke_api::{CmdOutput, InstanceData, Module, ModuleError};

use super::*;
use crate::probe::{groups_of, listening_ports};

fn write(root: &Path, p: &str, text: &str) {
    let path = root.join(p.trim_start_matches('/'));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A root with accounts, a listening port, a mount table and a dpkg database.
fn machine() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    write(
        r,
        "/etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\ndeploy:x:1001:1001::/home/deploy:/bin/sh\n",
    );
    write(
        r,
        "/etc/group",
        "root:x:0:\ndeploy:x:1001:\ndocker:x:998:deploy,other\nadm:x:4:\n",
    );
    write(r, "/etc/motd", "Welcome\nrole=web\n");
    std::fs::set_permissions(
        r.join("etc/motd"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    write(
        r,
        "/proc/net/tcp",
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
         0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1\n   \
         1: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 2\n",
    );
    write(
        r,
        "/proc/net/tcp6",
        "  sl  local_address remote_address st\n   \
         0: 00000000000000000000000000000000:01BB 00000000000000000000000000000000:0000 0A\n",
    );
    write(
        r,
        "/proc/self/mountinfo",
        "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n\
         40 22 9:127 / /mnt/my\\040data rw,noatime shared:20 - xfs /dev/md127 rw,attr2,inode64\n",
    );
    write(r, "/etc/debian_version", "12.8\n");
    dir
}

async fn run(
    root: &Path,
    checks: serde_json::Value,
    fake: std::sync::Arc<FakeSystem>,
) -> Result<Report, ModuleError> {
    let ctx = context(
        root,
        json!({ "checks": checks }),
        InstanceData::default(),
        fake,
    );
    Checks { stage: None }.run(&ctx).await
}

fn results(outcome: &Result<Report, ModuleError>) -> Vec<CheckResult> {
    let report = match outcome {
        Ok(r) => r,
        Err(ModuleError::Partial { report, .. }) => report,
        Err(e) => panic!("{e}"),
    };
    let r: ChecksReport = serde_json::from_value(report.details.clone()).unwrap();
    r.checks
}

fn by_name<'a>(rs: &'a [CheckResult], name: &str) -> &'a CheckResult {
    rs.iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("{name}: {rs:?}"))
}

#[tokio::test]
async fn file_user_group_port_and_mount_checks_pass_and_fail_with_what_was_found() {
    let m = machine();
    let checks = json!({
        "motd": {"file": "/etc/motd", "type": "file", "mode": "0644", "owner": "0:0", "contains": "^role=web$"},
        "motd-role": {"file": "/etc/motd", "contains": "^role=db$"},
        "motd-mode": {"file": "/etc/motd", "mode": 0o600},
        "no-nologin": {"file": "/etc/nologin", "exists": false},
        "etc-is-dir": {"file": "/etc", "type": "directory"},
        "deploy": {"user": "deploy", "groups": ["docker", "deploy"]},
        "deploy-adm": {"user": "deploy", "groups": ["adm"]},
        "no-games": {"user": "games", "exists": false},
        "docker": {"group": "docker"},
        "ssh": {"port": 22},
        "https": {"port": 443},
        "app": {"port": 8080},
        "data": {"mount": "/mnt/my data/", "fstype": "xfs", "options": ["noatime", "inode64"]},
        "data-ext4": {"mount": "/mnt/my data", "fstype": "ext4"},
        "scratch": {"mount": "/scratch"},
    });
    let out = run(m.path(), checks, FakeSystem::new()).await;
    let rs = results(&out);
    let passed = |n: &str| by_name(&rs, n).passed;
    for n in [
        "motd",
        "no-nologin",
        "etc-is-dir",
        "deploy",
        "no-games",
        "docker",
        "ssh",
        "https",
        "data",
    ] {
        assert!(passed(n), "{n}: {:?}", by_name(&rs, n));
    }
    for (n, found) in [
        ("motd-role", "no line matches /^role=db$/"),
        ("motd-mode", "mode 0644, not 0600"),
        ("deploy-adm", "not in adm"),
        ("app", "nothing listens on it"),
        ("data-ext4", "xfs mounted, not ext4"),
        ("scratch", "not mounted"),
    ] {
        let r = by_name(&rs, n);
        assert!(!r.passed, "{n}");
        assert!(r.found.contains(found), "{n}: {}", r.found);
    }
    // Failed error checks fail the module, which keeps its report and says which ones.
    let Err(ModuleError::Partial { message, .. }) = out else {
        panic!("failed checks must fail the module")
    };
    assert!(
        message.starts_with("9 of 15 checks passed; failed:"),
        "{message}"
    );
    assert!(message.contains("app (nothing listens on it)"), "{message}");
}

#[tokio::test]
async fn services_commands_and_packages_ask_the_system() {
    let m = machine();
    let fake = FakeSystem::new();
    fake.on("systemctl is-active ssh", CmdOutput::ok("active\n"));
    fake.on("systemctl is-enabled ssh", CmdOutput::ok("enabled\n"));
    fake.on(
        "systemctl is-active nginx",
        CmdOutput {
            code: Some(3),
            stdout: "failed\n".into(),
            stderr: String::new(),
        },
    );
    fake.on(
        "dpkg-query --show --showformat=${Status} ${Version} nginx",
        CmdOutput::ok("install ok installed 1.22.1-9"),
    );
    fake.on(
        "dpkg-query --show --showformat=${Status} ${Version} telnetd",
        CmdOutput::failed(1, "no packages found matching telnetd"),
    );
    fake.on(
        "/usr/bin/app-health --quick",
        CmdOutput::ok("status: green\n"),
    );
    fake.on("/usr/bin/app-ready", CmdOutput::failed(2, "not yet"));
    let checks = json!({
        "ssh": {"service": "ssh", "enabled": true},
        "nginx": {"service": "nginx"},
        "nginx-pkg": {"package": "nginx"},
        "no-telnetd": {"package": "telnetd", "exists": false},
        "health": {"command": ["/usr/bin/app-health", "--quick"], "stdout": "green", "timeout_seconds": 5},
        "ready": {"command": ["/usr/bin/app-ready"], "severity": "warning"},
    });
    let out = run(m.path(), checks, fake.clone()).await;
    let rs = results(&out);
    for n in ["ssh", "nginx-pkg", "no-telnetd", "health"] {
        assert!(by_name(&rs, n).passed, "{n}: {:?}", by_name(&rs, n));
    }
    assert_eq!(by_name(&rs, "nginx-pkg").found, "installed 1.22.1-9");
    assert_eq!(by_name(&rs, "nginx").found, "nginx is failed");
    let ready = by_name(&rs, "ready");
    assert!(!ready.passed && ready.severity == Severity::Warning);
    assert!(
        ready.found.contains("exit 2, not exit 0: not yet"),
        "{}",
        ready.found
    );
    // nginx (error) fails the module; the warning check is a warning in its report.
    let Err(ModuleError::Partial { report, .. }) = out else {
        panic!("nginx is an error check")
    };
    assert_eq!(
        report.warnings,
        vec!["check ready failed: exit 2, not exit 0: not yet"]
    );
    let cmds = fake.commands();
    assert!(
        cmds.iter().any(|c| c == "systemctl is-enabled ssh"),
        "{cmds:?}"
    );
    assert!(
        !cmds.iter().any(|c| c.starts_with("rpm")),
        "dpkg root: {cmds:?}"
    );
}

#[tokio::test]
async fn only_the_checks_of_the_modules_stage_run_and_none_is_no_work() {
    let m = machine();
    let checks = json!({
        "early": {"file": "/etc/passwd", "stage": "local"},
        "late": {"file": "/nope"},
        "boot-only": {"file": "/also-nope", "verify": false},
    });
    let ctx = context(
        m.path(),
        json!({"checks": checks}),
        InstanceData::default(),
        FakeSystem::new(),
    );
    let local = Checks {
        stage: Some(Stage::Local),
    }
    .run(&ctx)
    .await
    .unwrap();
    let rs: ChecksReport = serde_json::from_value(local.details).unwrap();
    assert_eq!(rs.checks.len(), 1);
    assert_eq!(rs.checks[0].name, "early");
    let network = Checks {
        stage: Some(Stage::Network),
    }
    .run(&ctx)
    .await
    .unwrap();
    assert_eq!(network.summary, "no checks");
    assert!(
        Checks {
            stage: Some(Stage::Final)
        }
        .run(&ctx)
        .await
        .is_err(),
        "/nope is absent"
    );
    // `stoke verify` (no stage): every check but the boot-only ones.
    let verify = results(&Checks { stage: None }.run(&ctx).await);
    let names: Vec<&str> = verify.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["early", "late"]);
    let boot = results(
        &Checks {
            stage: Some(Stage::Final),
        }
        .run(&ctx)
        .await,
    );
    assert_eq!(boot.len(), 2, "boot-only runs at boot: {boot:?}");
    let names: Vec<&str> = modules().iter().map(|m| m.spec().name).collect();
    assert_eq!(names, ["checks-local", "checks-network", "checks"]);
    assert!(modules().iter().all(|m| m.spec().order == Order::Checks));
}

#[test]
fn a_malformed_check_is_a_config_error_naming_it() {
    let spec = Checks { stage: None }.spec().config;
    (spec.validate)("checks:\n  ok: {file: /etc/motd, mode: '0644'}\n  p: {port: 22}\n").unwrap();
    for (yaml, want) in [
        (
            "checks:\n  x: {mode: '0644'}\n",
            "needs one of file, service",
        ),
        (
            "checks:\n  x: {file: /a, port: 22}\n",
            "several kinds (file, port)",
        ),
        (
            "checks:\n  x: {port: 22, fstype: xfs}\n",
            "`fstype` does not apply to a port check",
        ),
        (
            "checks:\n  x: {file: /a, contains: '(unclosed'}\n",
            "contains:",
        ),
        ("checks:\n  x: {command: []}\n", "give the program"),
        ("checks:\n  x: {file: /a, mode: '0999'}\n", "not octal"),
        ("checks:\n  x: {file: /a, severity: fatal}\n", "severity"),
        ("checks:\n  x: {file: /a, stage: later}\n", "stage"),
    ] {
        let err = (spec.validate)(yaml).unwrap_err();
        assert!(err.to_string().contains(want), "{yaml}: {err}");
        assert_eq!(err.line, Some(2), "{yaml}: {err}");
    }
}

#[test]
fn proc_tables_parse() {
    let tcp = "  sl  local_address rem_address   st\n   0: 00000000:0050 00000000:0000 0A\n   \
               1: 0100007F:0051 0100007F:0000 06\n";
    assert_eq!(listening_ports(tcp), vec![80]);
    let groups = "wheel:x:10:alice,bob\nalice:x:1000:\nstaff:x:50:bob\n";
    assert_eq!(groups_of(groups, "alice", 1000), ["wheel", "alice"]);
    assert_eq!(groups_of(groups, "bob", 7), ["wheel", "staff"]);
}
