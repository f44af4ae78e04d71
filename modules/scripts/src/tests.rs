use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use serde_json::json;
use stoke_api::fake::{FakeSystem, context};
use stoke_api::{CmdOutput, InstanceData, ScriptsReport, UserScript};

use super::*;

fn instance() -> InstanceData {
    InstanceData {
        datasource: "nocloud".into(),
        instance_id: "i-1".parse().unwrap(),
        ..InstanceData::default()
    }
}

/// The fake runs each script for real (sh), so its output and exit status are real.
fn real_runner() -> Arc<FakeSystem> {
    let fake = FakeSystem::new();
    fake.respond(|cmd| {
        let run = || {
            std::process::Command::new(&cmd.program)
                .args(&cmd.args)
                .env_clear()
                .envs(cmd.env.iter().map(|(k, v)| (k, v)))
                .output()
        };
        // Another test thread's fork may briefly hold a just-written script open.
        let mut out = run();
        for _ in 0..50 {
            match &out {
                Err(e) if e.raw_os_error() == Some(26) => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    out = run();
                }
                _ => break,
            }
        }
        let out = out.ok()?;
        Some(CmdOutput {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    });
    fake
}

fn script(name: &str, kind: ScriptKind, body: &str) -> UserScript {
    UserScript {
        name: name.into(),
        kind,
        content: body.as_bytes().to_vec(),
    }
}

fn ctx_with(
    root: &Path,
    config: serde_json::Value,
    scripts: Vec<UserScript>,
    fake: Arc<FakeSystem>,
) -> Context {
    let mut ctx = context(root, config, instance(), fake);
    ctx.user_scripts = Arc::new(scripts);
    ctx
}

fn runs(details: &serde_json::Value) -> Vec<ScriptRun> {
    ScriptsReport::from_details(details)
        .expect("scripts")
        .scripts
}

fn image_script(root: &Path, dir: &str, name: &str, body: &str) {
    let path = root.join(dir.trim_start_matches('/')).join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn runcmd_argv_lists_are_quoted_and_lines_kept() {
    let lines: Vec<CommandLine> =
        serde_json::from_value(json!([["echo", "it's", "a b", 5], "echo $HOME > /tmp/x",]))
            .unwrap();
    assert_eq!(
        shell_script(&lines),
        "#!/bin/sh\necho 'it'\\''s' 'a b' 5\necho $HOME > /tmp/x\n"
    );
}

#[tokio::test]
async fn final_order_is_runcmd_user_scripts_then_image_directories() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let order = root.join("order");
    let log = |what: &str| format!("#!/bin/sh\necho {what} >> {}\n", order.display());
    image_script(
        root,
        "/var/lib/stoke/scripts/per-once",
        "a",
        &log("dir-once"),
    );
    image_script(
        root,
        "/var/lib/stoke/scripts/per-boot",
        "b",
        &log("dir-boot"),
    );
    image_script(
        root,
        "/var/lib/cloud/scripts/per-instance",
        "c",
        &log("cloud-instance"),
    );
    let scripts = vec![
        script(
            "part-001",
            ScriptKind::Script(Frequency::Once),
            &log("part-once"),
        ),
        script(
            "part-002",
            ScriptKind::Script(Frequency::PerInstance),
            &log("part-instance"),
        ),
        script(
            "part-003",
            ScriptKind::Boothook,
            "#cloud-boothook\necho no\n",
        ),
        script(
            "part-004",
            ScriptKind::Script(Frequency::PerBoot),
            &log("part-boot"),
        ),
    ];
    let cfg = json!({"runcmd": [["sh", "-c", format!("echo runcmd >> {}", order.display())]]});
    let ctx = ctx_with(root, cfg, scripts, real_runner());
    let report = FinalScripts.run(&ctx).await.expect("all ok");
    assert_eq!(
        std::fs::read_to_string(&order).unwrap(),
        "runcmd\npart-instance\ndir-boot\npart-boot\ncloud-instance\ndir-once\npart-once\n"
    );
    assert!(
        runs(&report.details)
            .iter()
            .all(|r| r.outcome == ScriptOutcome::Ok)
    );
}

#[tokio::test]
async fn boothooks_run_before_bootcmd_every_time_with_the_instance_id() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let out = root.join("out");
    let hook = format!(
        "#cloud-boothook\n#!/bin/sh\necho hook $INSTANCE_ID >> {}\n",
        out.display()
    );
    let scripts = vec![script("part-001", ScriptKind::Boothook, &hook)];
    let cfg = json!({"bootcmd": [format!("echo cmd $INSTANCE_ID $HOME >> {}", out.display())]});
    let ctx = ctx_with(root, cfg, scripts, real_runner());
    Bootcmd.run(&ctx).await.expect("ok");
    Bootcmd.run(&ctx).await.expect("ok");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "hook i-1\ncmd i-1 /root\nhook i-1\ncmd i-1 /root\n",
        "every run, hook first, with the documented environment"
    );
}

#[tokio::test]
async fn a_failed_script_fails_the_module_and_the_next_ones_still_run() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let done = root.join("done");
    let scripts = vec![
        script(
            "bad",
            ScriptKind::Script(Frequency::PerInstance),
            "#!/bin/sh\necho oh no >&2\nexit 3\n",
        ),
        script(
            "good",
            ScriptKind::Script(Frequency::PerInstance),
            &format!("#!/bin/sh\ntouch {}\n", done.display()),
        ),
    ];
    let ctx = ctx_with(root, json!({}), scripts, real_runner());
    let err = FinalScripts.run(&ctx).await.expect_err("failed");
    let ModuleError::Partial { message, report } = err else {
        panic!("a partial failure keeps its report");
    };
    assert!(message.contains("user-data/bad exit 3"), "{message}");
    assert!(done.exists(), "the script after the failed one ran");
    let r = runs(&report.details);
    assert_eq!(r[0].outcome, ScriptOutcome::Failed);
    assert_eq!(r[0].exit, Some(3));
    assert_eq!(r[0].output_tail, "oh no");
    assert_eq!(r[1].outcome, ScriptOutcome::Ok);
}

#[tokio::test]
async fn a_started_script_is_never_started_again_unless_retry_is_asked() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let count = root.join("count");
    let body = format!("#!/bin/sh\necho x >> {}\nexit 1\n", count.display());
    let scripts = vec![script(
        "s",
        ScriptKind::Script(Frequency::PerInstance),
        &body,
    )];
    let ctx = ctx_with(root, json!({}), scripts.clone(), real_runner());
    assert!(FinalScripts.run(&ctx).await.is_err());
    // A later boot of the same instance: not started again, and status says why.
    let report = FinalScripts
        .run(&ctx)
        .await
        .expect("nothing ran, nothing failed");
    let r = runs(&report.details);
    assert_eq!(r[0].outcome, ScriptOutcome::Skipped);
    assert!(
        r[0].note.contains("failed; at most once per instance"),
        "{}",
        r[0].note
    );
    assert_eq!(std::fs::read_to_string(&count).unwrap(), "x\n");
    // Opted in: a failed one runs again.
    let ctx = ctx_with(
        root,
        json!({"scripts": {"retry_failed": true}}),
        scripts,
        real_runner(),
    );
    assert!(FinalScripts.run(&ctx).await.is_err());
    assert_eq!(std::fs::read_to_string(&count).unwrap(), "x\nx\n");
}

#[tokio::test]
async fn a_script_the_machine_stopped_under_is_not_started_again() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let scripts = vec![script(
        "s",
        ScriptKind::Script(Frequency::Once),
        "#!/bin/sh\nexit 0\n",
    )];
    let ctx = ctx_with(
        root,
        json!({"scripts": {"retry_failed": true}}),
        scripts,
        real_runner(),
    );
    // What a crash mid-script leaves: a start record and no end.
    let rec = ctx.shared_state_dir.join("started/user-data-s.json");
    std::fs::create_dir_all(rec.parent().unwrap()).unwrap();
    std::fs::write(&rec, r#"{"started_unix": 1700000000.0}"#).unwrap();
    let report = FinalScripts.run(&ctx).await.expect("ok");
    let r = runs(&report.details);
    assert_eq!(r[0].outcome, ScriptOutcome::Skipped);
    assert!(r[0].note.contains("never finished"), "{}", r[0].note);
}

#[tokio::test]
async fn image_scripts_in_world_writable_places_or_not_executable_are_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    image_script(
        root,
        "/var/lib/stoke/scripts/per-boot",
        "open",
        "#!/bin/sh\n",
    );
    let open = root.join("var/lib/stoke/scripts/per-boot/open");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    image_script(
        root,
        "/var/lib/stoke/scripts/per-boot",
        "plain",
        "#!/bin/sh\n",
    );
    std::fs::set_permissions(
        root.join("var/lib/stoke/scripts/per-boot/plain"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let fake = real_runner();
    let ctx = ctx_with(root, json!({}), Vec::new(), fake.clone());
    let err = FinalScripts.run(&ctx).await.expect_err("refused");
    assert!(err.to_string().contains("world-writable"), "{err}");
    assert!(
        fake.commands().is_empty(),
        "nothing ran: {:?}",
        fake.commands()
    );
}

#[tokio::test]
async fn scripts_are_private_files_and_run_by_sh_without_a_shebang() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let fake = FakeSystem::new();
    let scripts = vec![script(
        "hook",
        ScriptKind::Boothook,
        "#cloud-boothook\necho hi\n",
    )];
    let ctx = ctx_with(
        root,
        json!({"scripts": {"early_timeout_seconds": 7}}),
        scripts,
        fake.clone(),
    );
    Bootcmd.run(&ctx).await.expect("ok");
    let file = ctx.state_dir.join("scripts/boothook-hook");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "echo hi\n");
    let cmds = fake.commands();
    assert_eq!(
        cmds,
        [format!("/bin/sh {}", file.display())],
        "no #!: run by sh"
    );
}

#[tokio::test]
async fn plan_says_what_would_run_and_what_not_again() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let fake = real_runner();
    let ctx = ctx_with(root, json!({"runcmd": ["true"]}), Vec::new(), fake);
    assert_eq!(
        FinalScripts.plan(&ctx).as_deref(),
        Some("would run: runcmd/runcmd")
    );
    FinalScripts.run(&ctx).await.expect("ok");
    let plan = FinalScripts.plan(&ctx).unwrap_or_default();
    assert!(
        plan.starts_with("not again: runcmd/runcmd (started at"),
        "{plan}"
    );
    let empty = ctx_with(root, json!({}), Vec::new(), FakeSystem::new());
    assert_eq!(Bootcmd.plan(&empty).as_deref(), Some("nothing configured"));
}

#[tokio::test]
async fn an_image_script_link_is_followed_inside_the_root_only() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let out = root.join("ran");
    // The link's absolute target is the root's /opt/tool, never the host's.
    image_script(
        root,
        "/opt",
        "tool",
        &format!("#!/bin/sh\necho inside >> {}\n", out.display()),
    );
    let scripts_dir = root.join("var/lib/stoke/scripts/per-boot");
    std::fs::create_dir_all(&scripts_dir).unwrap();
    std::os::unix::fs::symlink("/opt/tool", scripts_dir.join("10-tool")).unwrap();
    // A link climbing out of the root stays in it: nothing there, so nothing is listed.
    std::os::unix::fs::symlink(
        "../../../../../../../../../../bin/true",
        scripts_dir.join("20-out"),
    )
    .unwrap();
    let fake = real_runner();
    let ctx = ctx_with(root, json!({}), Vec::new(), fake.clone());
    let report = FinalScripts.run(&ctx).await.expect("ran");
    let ran = runs(&report.details);
    let names: Vec<&str> = ran.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["10-tool"], "{ran:?}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "inside\n");
    let cmds = fake.commands();
    assert_eq!(cmds.len(), 1, "{cmds:?}");
    assert!(
        cmds[0].starts_with(&root.join("opt/tool").display().to_string()),
        "the root's file, by its real path: {cmds:?}"
    );
}

#[tokio::test]
async fn a_state_directory_linked_out_of_the_root_is_not_followed() {
    // The sandbox's /var/lib/stoke is an absolute link to a directory outside it that
    // holds a start record saying the `once` script ran: resolved inside the root, the
    // link leads to the root's own copy of that path, where no record is.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    let inside = root.join(outside.strip_prefix("/").unwrap());
    let theirs = outside.join("test-shared-state/started/user-data-s.json");
    std::fs::create_dir_all(theirs.parent().unwrap()).unwrap();
    std::fs::write(&theirs, r#"{"started_unix": 1700000000.0}"#).unwrap();
    std::fs::create_dir_all(&inside).unwrap();
    std::fs::create_dir_all(root.join("var/lib")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("var/lib/stoke")).unwrap();
    let scripts = vec![
        script(
            "s",
            ScriptKind::Script(Frequency::Once),
            "#!/bin/sh\nexit 0\n",
        ),
        script("hook", ScriptKind::Boothook, "#cloud-boothook\necho hi\n"),
    ];
    let fake = FakeSystem::new();
    let ctx = ctx_with(&root, json!({}), scripts.clone(), fake.clone());
    let report = FinalScripts.run(&ctx).await.expect("ok");
    assert_eq!(runs(&report.details)[0].outcome, ScriptOutcome::Ok);
    Bootcmd
        .run(&ctx_with(&root, json!({}), scripts, fake.clone()))
        .await
        .expect("ok");
    let hook = inside.join("test-state/scripts/boothook-hook");
    assert!(hook.is_file());
    assert!(
        fake.commands()
            .iter()
            .any(|c| c == &format!("/bin/sh {}", hook.display())),
        "{:?}",
        fake.commands()
    );
    assert!(
        inside
            .join("test-shared-state/started/user-data-s.json")
            .is_file()
    );
    assert_eq!(
        std::fs::read_to_string(&theirs).unwrap(),
        r#"{"started_unix": 1700000000.0}"#
    );
    assert!(
        !outside.join("test-state").exists(),
        "nothing written outside"
    );
}

#[test]
fn bootcmd_has_nothing_to_do_without_commands_or_a_boothook() {
    let script = |kind| UserScript {
        name: "part-001".into(),
        kind,
        content: b"#!/bin/sh\ntrue\n".to_vec(),
    };
    let nc = |config: serde_json::Value, scripts: &[UserScript]| {
        Bootcmd.nothing_configured(&config, scripts)
    };
    assert!(nc(json!({}), &[]).is_some());
    assert!(nc(json!({"bootcmd": []}), &[]).is_some());
    // A script of the final stage is not the local stage's work.
    assert!(
        nc(
            json!({}),
            &[script(ScriptKind::Script(Frequency::PerInstance))]
        )
        .is_some()
    );
    assert!(nc(json!({"bootcmd": ["true"]}), &[]).is_none());
    assert!(nc(json!({}), &[script(ScriptKind::Boothook)]).is_none());
    // A config the module cannot read is the run's error to report, not "nothing".
    assert!(nc(json!({"bootcmd": 7}), &[]).is_none());
}
