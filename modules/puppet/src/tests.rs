//! Unit tests against the recording fake (no command really runs here; see
//! tests/real.rs for real Puppet and real shell commands).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use stoke_api::fake::{FakeSystem, context};
use stoke_api::{Action, CmdOutput, Context, InstanceData, Module, ModuleError, Stage};

use super::*;

fn instance() -> InstanceData {
    InstanceData {
        datasource: "ec2".into(),
        instance_id: "i-0ABC".parse().unwrap(),
        ..Default::default()
    }
}

fn ctx(root: &Path, puppet: Value, fake: &Arc<FakeSystem>) -> Context {
    let mut c = context(root, json!({ "puppet": puppet }), instance(), fake.clone());
    c.vars.insert("hostname".into(), "web-1".into());
    c.vars.insert("fqdn".into(), "web-1.example.com".into());
    c
}

async fn run(c: &Context) -> Result<Report, ModuleError> {
    PuppetModule.run(c).await
}

fn put(root: &Path, guest: &str, text: &str) {
    let p = root.join(guest.trim_start_matches('/'));
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

const DEFAULT: &str = "puppet agent --onetime --no-daemonize --detailed-exitcodes --verbose";

#[test]
fn exit_codes_read_right() {
    assert_eq!(meaning(0), (true, "no changes"));
    assert_eq!(meaning(2), (true, "changes applied"));
    assert_eq!(meaning(4), (false, "failures"));
    assert_eq!(meaning(6), (false, "changes applied, with failures"));
    for c in [1, 3, 5, 124, 126, 127, 137, 255, -1] {
        assert!(!meaning(c).0, "{c} must be a failure");
    }
    assert_eq!(meaning(124).1, "timed out and was killed");
    assert_eq!(meaning(143).1, "killed by a signal");
    assert_eq!(meaning(3).1, "unexpected exit code");
}

#[test]
fn tail_keeps_the_last_lines_without_colour() {
    let out: String = (1..=30)
        .map(|i| format!("\u{1b}[mNotice: {i}\u{1b}[0m\n"))
        .collect();
    let t = tail(&out, "\u{1b}[1;31mError: boom\u{1b}[0m\n");
    assert_eq!(t.len(), TAIL_LINES);
    assert_eq!(t[0], "Notice: 12");
    assert_eq!(t.last().unwrap(), "Error: boom");
}

#[test]
fn spec_and_stage_follow_the_mode() {
    let s = PuppetModule.spec();
    assert_eq!(
        (s.name, s.stage, s.frequency, s.after, s.needs_metadata),
        (
            "puppet",
            Stage::Network,
            Frequency::PerInstance,
            &["hostname"][..],
            true
        )
    );
    let m = PuppetModule;
    assert_eq!(
        m.stage_for(&json!({"puppet": {"mode": "non-blocking"}})),
        Stage::Final
    );
    assert_eq!(
        m.stage_for(&json!({"puppet": {"mode": "blocking"}})),
        Stage::Network
    );
    assert_eq!(m.stage_for(&json!({"puppet": {}})), Stage::Network);
    assert_eq!(m.stage_for(&json!({})), Stage::Network);
    assert_eq!(m.stage_for(&json!({"puppet": {"mode": 7}})), Stage::Network);
}

#[tokio::test]
async fn blocking_run_builds_the_command_and_reports_success() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeSystem::new();
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    fake.respond(move |cmd| {
        *s.lock().unwrap() = Some((cmd.timeout, cmd.stream_output));
        Some(CmdOutput {
            code: Some(2),
            stdout: "Notice: Applied catalog in 0.01 seconds\n".into(),
            stderr: String::new(),
        })
    });
    let c = ctx(
        dir.path(),
        json!({"environment": "production", "server": "puppet.example",
               "certname": "{{ hostname }}.%i", "extra_args": ["--noop"], "timeout": 900}),
        &fake,
    );
    let r = run(&c).await.unwrap();
    assert_eq!(
        fake.commands(),
        [format!(
            "{DEFAULT} --environment production --server puppet.example \
             --certname web-1.i-0abc --noop"
        )]
    );
    assert_eq!(
        *seen.lock().unwrap(),
        Some((Duration::from_secs(900), true)),
        "timeout and streamed output"
    );
    assert!(
        r.summary.starts_with("changes applied (exit 2) in "),
        "{}",
        r.summary
    );
    assert_eq!(r.details["code"], 2);
    assert_eq!(r.details["meaning"], "changes applied");
    assert_eq!(
        r.details["tail"][0],
        "Notice: Applied catalog in 0.01 seconds"
    );
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let rec = read_json(&c.state_dir.join(LAST_RUN_FILE));
    assert_eq!(
        (rec["state"].as_str(), rec["code"].as_i64()),
        (Some("succeeded"), Some(2))
    );
}

#[tokio::test]
async fn blocking_failure_carries_code_meaning_and_last_lines() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeSystem::new();
    let out: String = (1..=30).map(|i| format!("Notice: line {i}\n")).collect();
    fake.on(
        "puppet agent",
        CmdOutput {
            code: Some(4),
            stdout: out,
            stderr: "\u{1b}[1;31mError: Could not apply File[/x]\u{1b}[0m\n".into(),
        },
    );
    let c = ctx(dir.path(), json!({"mode": "blocking"}), &fake);
    let err = run(&c).await.unwrap_err().to_string();
    assert!(err.contains("exit 4: failures, after "), "{err}");
    assert!(err.contains("Error: Could not apply File[/x]"), "{err}");
    assert!(
        err.contains("line 30") && !err.contains("line 11\n"),
        "{err}"
    );
    let rec = read_json(&c.state_dir.join(LAST_RUN_FILE));
    assert_eq!(rec["state"], "failed");
    assert_eq!(rec["tail"].as_array().unwrap().len(), TAIL_LINES);

    let fake2 = FakeSystem::new();
    fake2.on(
        "",
        CmdOutput {
            code: None,
            ..Default::default()
        },
    );
    let c = ctx(dir.path(), json!({}), &fake2);
    let err = run(&c).await.unwrap_err().to_string();
    assert!(
        err.contains("killed by signal: killed by a signal"),
        "{err}"
    );
}

#[tokio::test]
async fn off_and_absent_run_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeSystem::new();
    for cfg in [
        json!({"mode": "off"}),
        json!({"exec": false}),
        json!({"mode": false}),
    ] {
        let r = run(&ctx(dir.path(), cfg, &fake)).await.unwrap();
        assert!(r.summary.contains("mode off"), "{}", r.summary);
    }
    let c = context(dir.path(), json!({}), instance(), fake.clone());
    assert!(run(&c).await.unwrap().summary.contains("nothing to do"));
    assert!(fake.actions().is_empty());
}

#[tokio::test]
async fn cloud_init_exec_args_tools_and_aio_choose_the_program() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeSystem::new();
    let c = ctx(
        dir.path(),
        json!({"exec": true, "exec_args": "--test --noop"}),
        &fake,
    );
    let r = run(&c).await.unwrap();
    assert!(r.warnings.is_empty(), "--test implies detailed exit codes");

    let mut c = ctx(
        dir.path(),
        json!({"command": ["puppet", "apply", "/m.pp"]}),
        &fake,
    );
    c.tools
        .insert("puppet".into(), "/usr/local/bin/puppet".into());
    let r = run(&c).await.unwrap();
    assert!(
        r.warnings[0].contains("--detailed-exitcodes"),
        "{:?}",
        r.warnings
    );

    put(dir.path(), "/opt/puppetlabs/bin/puppet", "");
    run(&ctx(
        dir.path(),
        json!({"command": "puppet agent -t"}),
        &fake,
    ))
    .await
    .unwrap();
    let c = ctx(
        dir.path(),
        json!({"command": "/bin/echo x --detailed-exitcodes"}),
        &fake,
    );
    run(&c).await.unwrap();
    assert_eq!(
        fake.commands(),
        [
            "puppet agent --test --noop",
            "/usr/local/bin/puppet apply /m.pp",
            "/opt/puppetlabs/bin/puppet agent -t",
            "/bin/echo x --detailed-exitcodes",
        ]
    );
}

#[tokio::test]
async fn certname_with_fqdn_needs_a_known_fqdn() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeSystem::new();
    let mut c = ctx(dir.path(), json!({"certname": "%f"}), &fake);
    c.vars.remove("fqdn");
    let err = run(&c).await.unwrap_err().to_string();
    assert!(err.contains("no fqdn is known"), "{err}");
    let c = ctx(dir.path(), json!({"certname": "{{ nope }}"}), &fake);
    let err = run(&c).await.unwrap_err().to_string();
    assert!(err.contains("unknown variable `nope`"), "{err}");
    assert!(fake.commands().is_empty());
}

#[tokio::test]
async fn conf_and_csr_attributes_are_written_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeSystem::new();
    let original = "# baked\n[main]\nssldir = /var/lib/puppet/ssl\n\n[agent]\nserver = old\n";
    put(dir.path(), "/etc/puppet/puppet.conf", original);
    let cfg = json!({
        "conf": {"agent": {"server": "puppet.example", "certname": "%f-%i", "splay": true}},
        "csr_attributes": {"extension_requests": {"pp_role": "web", "pp_preshared_key": "s3cret"}}
    });
    let r = run(&ctx(dir.path(), cfg.clone(), &fake)).await.unwrap();
    assert_eq!(
        r.details["files_changed"],
        json!(["/etc/puppet/puppet.conf", "/etc/puppet/csr_attributes.yaml"])
    );
    let conf = fs::read_to_string(dir.path().join("etc/puppet/puppet.conf")).unwrap();
    assert_eq!(
        conf,
        "# baked\n[main]\nssldir = /var/lib/puppet/ssl\n\n[agent]\nserver = puppet.example\n\
         certname = web-1.example.com-i-0abc\nsplay = true\n"
    );
    let csr_path = dir.path().join("etc/puppet/csr_attributes.yaml");
    let csr: Value = serde_json::from_str(&fs::read_to_string(&csr_path).unwrap()).unwrap();
    assert_eq!(
        csr,
        json!({"extension_requests": {"pp_preshared_key": "s3cret", "pp_role": "web"}})
    );
    assert_eq!(
        fs::metadata(&csr_path).unwrap().permissions().mode() & 0o777,
        0o640
    );

    let r = run(&ctx(dir.path(), cfg, &fake)).await.unwrap();
    assert_eq!(
        r.details["files_changed"],
        json!([]),
        "second run changes nothing"
    );

    // AIO layout: its paths.
    let aio = tempfile::tempdir().unwrap();
    fs::create_dir_all(aio.path().join("etc/puppetlabs/puppet")).unwrap();
    let r = run(&ctx(
        aio.path(),
        json!({"conf": {"main": {"server": "p"}}}),
        &fake,
    ))
    .await
    .unwrap();
    assert_eq!(
        r.details["files_changed"],
        json!(["/etc/puppetlabs/puppet/puppet.conf"])
    );
}

fn hold_lock(root: &Path, pid: u32, cmdline: &str) {
    put(root, DEFAULT_LOCK_FILES[1], &format!("{pid}\n"));
    put(root, &format!("/proc/{pid}/cmdline"), cmdline);
}

#[tokio::test]
async fn a_live_lock_with_no_wait_refuses_without_running() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeSystem::new();
    hold_lock(dir.path(), 1234, "/usr/bin/ruby\0/usr/bin/puppet\0agent\0");
    let err = run(&ctx(dir.path(), json!({"wait_for_lock": 0}), &fake))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("another Puppet run (pid 1234, lock file "),
        "{err}"
    );
    assert!(err.contains("wait_for_lock: 0 s"), "{err}");
    assert!(fake.commands().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_lock_that_stays_fails_at_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeSystem::new();
    hold_lock(dir.path(), 1234, "puppet agent");
    let start = tokio::time::Instant::now();
    let err = run(&ctx(dir.path(), json!({"wait_for_lock": 120}), &fake))
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(120),
        "virtual time: exactly the bound"
    );
    assert!(err.contains("after waiting 120 s"), "{err}");
    assert!(fake.commands().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_lock_released_while_waiting_lets_the_run_go() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeSystem::new();
    hold_lock(dir.path(), 1234, "puppet agent");
    let lock = dir
        .path()
        .join(DEFAULT_LOCK_FILES[1].trim_start_matches('/'));
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        fs::remove_file(lock).unwrap();
    });
    let r = run(&ctx(dir.path(), json!({}), &fake)).await.unwrap();
    release.await.unwrap();
    assert_eq!(fake.commands(), [DEFAULT]);
    assert!(
        r.warnings[0].starts_with("waited 3.0 s"),
        "{:?}",
        r.warnings
    );
}

#[tokio::test]
async fn stale_locks_do_not_wait() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeSystem::new();
    // A baked lock whose pid now belongs to something else, and one with no process.
    hold_lock(dir.path(), 99, "/usr/sbin/sshd\0-D\0");
    put(dir.path(), DEFAULT_LOCK_FILES[0], "31337");
    let r = run(&ctx(dir.path(), json!({"wait_for_lock": 0}), &fake))
        .await
        .unwrap();
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    // A configured lock file replaces the defaults; garbage in it is stale, as for Puppet.
    put(dir.path(), "/tmp/my.lock", "not a pid");
    run(&ctx(
        dir.path(),
        json!({"wait_for_lock": 0, "lock_file": "/tmp/my.lock"}),
        &fake,
    ))
    .await
    .unwrap();
    assert_eq!(fake.commands().len(), 2);
}

/// The background run under a test root: `exec-record` is told the root and writes its record at
/// the guest path, resolved inside that root (never a host path handed on).
fn background_argv(root: &Path, timeout: &str) -> Vec<String> {
    let mut v: Vec<String> = [
        "/usr/bin/stoke",
        "--root",
        &root.display().to_string(),
        "exec-record",
        "--result",
        "/var/lib/stoke/test-state/background.json",
        "--success-codes",
        "0,2",
        "--",
        "timeout",
        "-k",
        "60",
        timeout,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(DEFAULT.split(' ').map(str::to_string));
    v
}

#[tokio::test]
async fn non_blocking_under_systemd_starts_a_transient_unit() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("run/systemd/system")).unwrap();
    let fake = FakeSystem::new();
    let c = ctx(
        dir.path(),
        json!({"mode": "non-blocking", "timeout": 900}),
        &fake,
    );
    // A record left by a run that never finished (e.g. power loss).
    put(
        dir.path(),
        "/var/lib/stoke/test-state/background.json",
        r#"{"state":"running","pid":55,"started_unix":1}"#,
    );
    let r = run(&c).await.unwrap();
    let mut want = vec![
        "systemd-run".to_string(),
        "--unit=stoke-puppet-delta".into(),
        "--description=stoke: background Puppet delta run".into(),
        "--collect".into(),
        "--service-type=exec".into(),
        "--property=SuccessExitStatus=2".into(),
        "--".into(),
    ];
    want.extend(background_argv(dir.path(), "900"));
    assert_eq!(
        fake.actions(),
        [
            Action::Run {
                argv: vec![
                    "systemctl".into(),
                    "is-active".into(),
                    "stoke-puppet-delta.service".into()
                ]
            },
            Action::Run { argv: want },
        ]
    );
    assert!(
        r.summary
            .starts_with("started in background (unit stoke-puppet-delta.service"),
        "{}",
        r.summary
    );
    assert!(
        r.warnings[0].contains("ended without recording a result"),
        "{:?}",
        r.warnings
    );
    assert!(
        !c.state_dir.join(BACKGROUND_FILE).exists(),
        "stale record removed"
    );
}

#[tokio::test]
async fn non_blocking_under_systemd_never_starts_twice() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("run/systemd/system")).unwrap();
    let fake = FakeSystem::new();
    fake.on("systemctl is-active", CmdOutput::ok("active\n"));
    let r = run(&ctx(dir.path(), json!({"mode": "non-blocking"}), &fake))
        .await
        .unwrap();
    assert_eq!(
        fake.commands(),
        ["systemctl is-active stoke-puppet-delta.service"]
    );
    assert!(
        r.summary
            .contains("still going (unit stoke-puppet-delta.service is active)"),
        "{}",
        r.summary
    );
    assert_eq!(r.details["already_running"], true);
}

#[tokio::test]
async fn non_blocking_without_systemd_spawns_detached_once() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeSystem::new();
    // The fake context's boot is "fake-boot".
    let c = ctx(dir.path(), json!({"mode": "non-blocking"}), &fake);
    let r = run(&c).await.unwrap();
    let log = dir.path().join("var/log/stoke/puppet-delta.log");
    assert_eq!(
        fake.actions(),
        [Action::SpawnDetached {
            argv: background_argv(dir.path(), "1800"),
            log: log.clone()
        }]
    );
    assert!(log.parent().unwrap().is_dir());
    assert!(
        r.summary
            .starts_with("started in background (pid 4242, log "),
        "{}",
        r.summary
    );

    // exec-record says it runs as pid 4242, this boot, and /proc/4242 exists: no second start.
    let record = c.state_dir.join(BACKGROUND_FILE);
    fs::write(
        &record,
        r#"{"state":"running","pid":4242,"boot_id":"fake-boot","started_unix":5}"#,
    )
    .unwrap();
    fs::create_dir_all(dir.path().join("proc/4242")).unwrap();
    let r = run(&c).await.unwrap();
    assert!(
        r.summary
            .contains("still going (pid 4242 is still running)"),
        "{}",
        r.summary
    );
    assert_eq!(fake.actions().len(), 1);

    // The same record from an earlier boot is stale: a new run starts.
    fs::write(
        &record,
        r#"{"state":"running","pid":4242,"boot_id":"boot-1","started_unix":5}"#,
    )
    .unwrap();
    let r = run(&c).await.unwrap();
    assert_eq!(fake.actions().len(), 2);
    assert!(r.warnings[0].contains("pid 4242"), "{:?}", r.warnings);

    // A finished run does not block either.
    fs::write(
        &record,
        r#"{"state":"succeeded","pid":4242,"boot_id":"fake-boot","code":0}"#,
    )
    .unwrap();
    let r = run(&c).await.unwrap();
    assert_eq!(fake.actions().len(), 3);
    assert_eq!(r.details["previous"]["state"], "succeeded");
}

#[test]
fn plan_says_what_would_run() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeSystem::new();
    let c = ctx(
        dir.path(),
        json!({"mode": "non-blocking", "server": "p"}),
        &fake,
    );
    assert_eq!(
        PuppetModule.plan(&c).unwrap(),
        format!("non-blocking: `{DEFAULT} --server p` (timeout 1800 s)")
    );
}

#[test]
fn runner_bound_follows_the_configured_timeout_and_lock_wait() {
    let m = PuppetModule;
    let cfg = serde_json::json!({"puppet": {"timeout": 10, "wait_for_lock": 5}});
    assert_eq!(m.timeout_for(&cfg), std::time::Duration::from_secs(75));
    let default = serde_json::json!({"puppet": {}});
    assert_eq!(
        m.timeout_for(&default),
        std::time::Duration::from_secs(DEFAULT_TIMEOUT_SECS + DEFAULT_WAIT_FOR_LOCK_SECS + 60)
    );
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test]
async fn files_and_state_linked_out_of_the_root_stay_inside_it() {
    // /etc/puppet and /var/lib/stoke of the sandbox are absolute links to a directory
    // outside it: resolved inside the root, they lead to the root's own copy of that path.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    let inside = root.join(outside.strip_prefix("/").unwrap());
    put(&outside, "/puppet.conf", "[agent]\nserver = theirs\n");
    fs::create_dir_all(&inside).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(root.join("var/lib")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("etc/puppet")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("var/lib/stoke")).unwrap();
    let fake = FakeSystem::new();
    let cfg = json!({
        "conf": {"agent": {"server": "puppet.example"}},
        "csr_attributes": {"extension_requests": {"pp_role": "web"}}
    });
    run(&ctx(&root, cfg, &fake)).await.unwrap();
    assert_eq!(
        fs::read_to_string(outside.join("puppet.conf")).unwrap(),
        "[agent]\nserver = theirs\n"
    );
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        1,
        "nothing new outside"
    );
    assert_eq!(
        fs::read_to_string(inside.join("puppet.conf")).unwrap(),
        "[agent]\nserver = puppet.example\n"
    );
    assert!(inside.join("csr_attributes.yaml").is_file());
    assert!(inside.join("test-state").join(LAST_RUN_FILE).is_file());
}
