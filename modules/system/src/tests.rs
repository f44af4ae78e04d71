use std::collections::BTreeMap;

use serde_json::json;
use stoke_api::fake::{FakeSystem, context};
use stoke_api::{Action, CmdOutput, InstanceData, Module, ModuleError};

use crate::final_message::{dollar_vars, rfc2822};
use crate::{Packages, PowerState};

fn debian_root() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("etc")).unwrap();
    std::fs::write(
        tmp.path().join("etc/os-release"),
        "ID=ubuntu\nID_LIKE=debian\n",
    )
    .unwrap();
    tmp
}

#[test]
fn rfc2822_dates() {
    assert_eq!(rfc2822(0), "Thu, 01 Jan 1970 00:00:00 +0000");
    // 2024-02-29 (a leap day) 13:14:15 UTC.
    assert_eq!(rfc2822(1_709_212_455), "Thu, 29 Feb 2024 13:14:15 +0000");
    assert_eq!(rfc2822(1_767_225_599), "Wed, 31 Dec 2025 23:59:59 +0000");
}

#[test]
fn dollar_variables_braced_or_not_and_unknown_left_alone() {
    let vars = BTreeMap::from([("UPTIME".to_string(), "12.5".to_string())]);
    assert_eq!(
        dollar_vars("a $UPTIME b ${UPTIME}c $NOPE ${UNCLOSED $ end$", &vars),
        "a 12.5 b 12.5c $NOPE ${UNCLOSED $ end$"
    );
}

#[tokio::test]
async fn a_package_that_cannot_be_installed_fails_with_the_managers_error() {
    let tmp = debian_root();
    let sys = FakeSystem::new();
    sys.respond(|cmd| {
        cmd.args
            .iter()
            .any(|a| a == "install")
            .then(|| CmdOutput::failed(100, "E: Unable to locate package nosuchpkg\n"))
    });
    let ctx = context(
        tmp.path(),
        json!({"packages": ["nosuchpkg"]}),
        InstanceData::default(),
        sys.clone(),
    );
    let err = Packages.run(&ctx).await.unwrap_err();
    let ModuleError::Partial { message, report } = err else {
        panic!("not partial");
    };
    assert!(
        message.contains("apt install failed (exit 100)"),
        "{message}"
    );
    assert!(
        message.contains("Unable to locate package nosuchpkg"),
        "{message}"
    );
    assert_eq!(report.details["steps"][0]["step"], "update");
    assert_eq!(report.details["steps"][1]["exit"], 100);
    // Bounded, streamed, logged, non-interactive.
    let cmds = sys.commands();
    assert_eq!(cmds.len(), 2, "{cmds:?}");
}

#[tokio::test]
async fn reboot_if_required_is_scheduled_after_stoke_target_never_run_now() {
    let tmp = debian_root();
    std::fs::create_dir_all(tmp.path().join("var/run")).unwrap();
    std::fs::write(tmp.path().join("var/run/reboot-required"), "").unwrap();
    std::fs::create_dir_all(tmp.path().join("run/systemd/system")).unwrap();
    let sys = FakeSystem::new();
    let ctx = context(
        tmp.path(),
        json!({"package_upgrade": true, "package_reboot_if_required": true}),
        InstanceData::default(),
        sys.clone(),
    );
    let report = Packages.run(&ctx).await.unwrap();
    assert!(
        report.summary.contains("reboot required"),
        "{}",
        report.summary
    );
    let cmds = sys.commands();
    assert!(!cmds.iter().any(|c| c.starts_with("shutdown")
        || c.starts_with("reboot")
        || c.starts_with("systemctl")));
    let run = cmds.iter().find(|c| c.starts_with("systemd-run")).unwrap();
    assert!(run.contains("--unit=stoke-package-reboot"), "{run}");
    assert!(
        run.contains("--no-block --property=After=stoke.target"),
        "{run}"
    );
    let script =
        std::fs::read_to_string(tmp.path().join("run/stoke/stoke-package-reboot.sh")).unwrap();
    assert!(script.contains("exec shutdown -r now"), "{script}");

    // Without the file: no reboot.
    std::fs::remove_file(tmp.path().join("var/run/reboot-required")).unwrap();
    let sys = FakeSystem::new();
    let ctx = context(
        tmp.path(),
        json!({"package_upgrade": true, "package_reboot_if_required": true}),
        InstanceData::default(),
        sys.clone(),
    );
    Packages.run(&ctx).await.unwrap();
    assert!(!sys.commands().iter().any(|c| c.starts_with("systemd-run")));
}

#[tokio::test]
async fn power_state_without_systemd_starts_the_script_detached() {
    let tmp = tempfile::tempdir().unwrap();
    let sys = FakeSystem::new();
    let ctx = context(
        tmp.path(),
        json!({"power_state": {"mode": "poweroff", "delay": 2, "condition": ["test", "-e", "/x y"]}}),
        InstanceData::default(),
        sys.clone(),
    );
    let report = PowerState.run(&ctx).await.unwrap();
    assert!(
        report.summary.contains("poweroff in 2 min"),
        "{}",
        report.summary
    );
    let spawned: Vec<Action> = sys
        .actions()
        .into_iter()
        .filter(|a| matches!(a, Action::SpawnDetached { .. }))
        .collect();
    assert_eq!(spawned.len(), 1);
    let script =
        std::fs::read_to_string(tmp.path().join("run/stoke/stoke-power-state.sh")).unwrap();
    assert!(script.contains("test -e '/x y'\nrc=$?"), "{script}");
    assert!(script.ends_with("exec shutdown -P +2\n"), "{script}");
}

#[tokio::test]
async fn a_detached_commands_log_and_script_stay_inside_the_root() {
    // /var/log and /run of the sandbox are absolute links to a directory outside it:
    // resolved inside the root they lead to the root's own /outside.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(root.join("var")).unwrap();
    std::fs::create_dir_all(root.join(outside.strip_prefix("/").unwrap())).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("var/log")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("run")).unwrap();
    let sys = FakeSystem::new();
    let ctx = context(
        &root,
        json!({"power_state": {"mode": "poweroff", "delay": "now"}}),
        InstanceData::default(),
        sys.clone(),
    );
    PowerState.run(&ctx).await.unwrap();
    let (argv, log) = sys
        .actions()
        .into_iter()
        .find_map(|a| match a {
            Action::SpawnDetached { argv, log } => Some((argv, log)),
            _ => None,
        })
        .unwrap();
    let inside = root.join(outside.strip_prefix("/").unwrap());
    assert!(log.starts_with(&inside), "{}", log.display());
    assert_eq!(log.file_name().unwrap(), "stoke-power-state.log");
    assert!(
        log.parent().unwrap().is_dir(),
        "the log's directory is made"
    );
    assert!(
        argv.iter()
            .any(|a| std::path::Path::new(a).starts_with(&inside)),
        "{argv:?}"
    );
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
}
