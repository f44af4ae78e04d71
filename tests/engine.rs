//! The real `stoke` binary against a sandbox root: NoCloud seed, frequencies,
//! status and exit codes, bad input.

#[path = "support/sandbox.rs"]
mod sandbox;

use sandbox::Sandbox;

const GOOD: &str = "#cloud-config\nvars: {role: web}\nhostname: \"{{ role }}-{{ uuid8 }}\"\n";

fn sethostnames(s: &Sandbox) -> Vec<String> {
    s.actions_of("sethostname")
        .iter()
        .map(|a| a["name"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn first_boot_from_a_nocloud_seed_writes_files_records_actions_and_status() {
    let s = Sandbox::nocloud("iid-one", GOOD);
    let r = s.run_all();
    assert_eq!(r.code, 0, "exit 0 when done and ok; stderr: {}", r.stderr);
    let hostname = s.read("/etc/hostname");
    assert!(hostname.starts_with("web-"), "{hostname:?}");
    assert_eq!(hostname.trim().len(), "web-".len() + 8);
    assert_eq!(
        sethostnames(&s),
        vec![hostname.trim().to_string()],
        "recorded, not run"
    );
    assert!(
        s.read("/etc/hosts").starts_with("127.0.0.1 localhost\n"),
        "foreign line kept"
    );

    let st = s.status();
    assert_eq!(st["instance_id"], "iid-one");
    assert_eq!(st["datasource"], "nocloud");
    assert_eq!(st["done"], true);
    assert_eq!(st["modules"]["hostname"]["state"], "ok");
    assert!(st["modules"]["hostname"]["duration_ms"].as_f64().is_some());
    assert_eq!(s.read("/var/lib/stoke/instance-id").trim(), "iid-one");

    let status = s.stoke(&["status"]);
    assert_eq!(status.code, 0);
    assert!(status.stdout.contains("status: done"), "{}", status.stdout);
    assert!(status.stdout.contains("hostname"), "{}", status.stdout);
}

#[test]
fn second_run_in_the_same_boot_does_nothing() {
    let s = Sandbox::nocloud("iid-one", GOOD);
    assert_eq!(s.run_all().code, 0);
    let boot = s.status();
    let before = s.actions().len();
    let r = s.run_all();
    assert_eq!(r.code, 0, "{}", r.stderr);
    // The boot's record stays: a rerun that does nothing does not erase what happened.
    let after = s.status();
    assert_eq!(
        after["modules"], boot["modules"],
        "outcomes, summaries, durations kept"
    );
    assert_eq!(s.module_state("hostname"), "ok");
    for stage in ["local", "network", "final"] {
        let (was, now) = (&boot["stages"][stage], &after["stages"][stage]);
        assert_eq!(now["duration_ms"], was["duration_ms"], "{stage}");
        assert_eq!(
            now["reruns"][0]["ran"],
            serde_json::json!([]),
            "{stage}: {now}"
        );
    }
    let status = s.stoke(&["status"]);
    assert_eq!(status.code, 0);
    assert!(
        status.stdout.contains("hostname") && status.stdout.contains(" ok "),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("later: nothing due"),
        "{}",
        status.stdout
    );
    let analyze = s.stoke(&["analyze"]);
    assert!(analyze.stdout.contains("hostname"), "{}", analyze.stdout);
    let new: Vec<_> = s.actions()[before..]
        .iter()
        .filter(|a| a["action"] != "console")
        .cloned()
        .collect();
    assert!(new.is_empty(), "nothing but console lines: {new:?}");
}

#[test]
fn new_boot_reruns_per_boot_modules_and_keeps_the_per_instance_uuid() {
    let s = Sandbox::nocloud("iid-one", GOOD);
    assert_eq!(s.run_all().code, 0);
    let first = s.read("/etc/hostname");
    s.new_boot("boot-2");
    assert_eq!(s.run_all().code, 0);
    assert_eq!(s.module_state("hostname"), "ok", "per-boot: ran again");
    assert_eq!(
        s.read("/etc/hostname"),
        first,
        "same instance, same UUID, same name"
    );
    assert_eq!(sethostnames(&s).len(), 2);
}

#[test]
fn new_instance_id_reruns_per_instance_work() {
    let s = Sandbox::nocloud("iid-one", GOOD);
    assert_eq!(s.run_all().code, 0);
    let first = s.read("/etc/hostname");
    s.seed("iid-two", GOOD);
    s.new_boot("boot-2");
    assert_eq!(s.run_all().code, 0);
    assert_ne!(
        s.read("/etc/hostname"),
        first,
        "a new instance gets a new UUID"
    );
    assert_eq!(s.read("/var/lib/stoke/instance-id").trim(), "iid-two");
    assert!(
        s.path("/var/lib/stoke/instances/iid-one/sem/hostname")
            .exists()
    );
    assert!(
        s.path("/var/lib/stoke/instances/iid-two/sem/hostname")
            .exists()
    );
}

#[test]
fn clean_makes_the_next_boot_a_first_boot() {
    let s = Sandbox::nocloud("iid-one", GOOD);
    assert_eq!(s.run_all().code, 0);
    let first = s.read("/etc/hostname");
    let r = s.stoke(&["clean"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!s.path("/var/lib/stoke/instances").exists());
    assert!(!s.path("/var/lib/stoke/instance-id").exists());
    assert!(
        s.path("/var/lib/stoke/seed/nocloud/meta-data").exists(),
        "seed kept without --seed"
    );
    assert_eq!(s.stoke(&["status"]).code, 3, "not started");
    assert_eq!(s.run_all().code, 0);
    assert_ne!(s.read("/etc/hostname"), first, "a new UUID after clean");
    assert_eq!(s.stoke(&["clean", "--seed"]).code, 0);
    assert!(!s.path("/var/lib/stoke/seed/nocloud").exists());
}

#[test]
fn invalid_user_data_is_rejected_whole_and_the_image_config_still_applies() {
    let s = Sandbox::nocloud("iid-one", "#cloud-config\nhostname: [unclosed\n");
    s.write(
        "/etc/stoke/stoke.d/10-image.yaml",
        "hostname: image-default\n",
    );
    let r = s.run_all();
    assert_eq!(r.code, 2, "degraded; stderr: {}", r.stderr);
    assert_eq!(s.read("/etc/hostname").trim(), "image-default");
    let st = s.status();
    let errors = st["errors"].to_string();
    assert!(errors.contains("user-data:"), "{errors}");
    assert!(
        r.stderr.contains("user-data:"),
        "the error is logged too: {}",
        r.stderr
    );
    let status = s.stoke(&["status"]);
    assert_eq!(status.code, 2);
    assert!(
        status.stdout.contains("status: degraded"),
        "{}",
        status.stdout
    );
}

#[test]
fn unknown_key_names_file_line_column_and_suggests() {
    let s = Sandbox::nocloud("iid-one", "#cloud-config\nvars: {role: web}\nhostnme: x\n");
    assert_eq!(s.run_all().code, 2);
    let errors = s.status()["errors"].to_string();
    assert!(
        errors.contains("user-data:3:1: unknown key `hostnme`"),
        "{errors}"
    );
    assert!(errors.contains("did you mean `hostname`?"), "{errors}");
    // The whole user-data was rejected: `role` from it did not apply.
    assert!(!s.read("/etc/hostname").contains("web"));
}

#[test]
fn wrong_type_is_an_error_with_a_location() {
    let s = Sandbox::nocloud("iid-one", "#cloud-config\npreserve_hostname: maybe\n");
    assert_eq!(s.run_all().code, 2);
    let errors = s.status()["errors"].to_string();
    assert!(errors.contains("user-data:2:"), "{errors}");
}

#[test]
fn cloud_init_keys_stoke_does_not_implement_warn_and_the_rest_applies() {
    let s = Sandbox::nocloud(
        "iid-one",
        "#cloud-config\nbyobu_by_default: enable\nlandscape: {}\nhostname: from-user-data\n",
    );
    let r = s.run_all();
    assert_eq!(r.code, 2, "degraded by the warnings");
    assert_eq!(s.read("/etc/hostname").trim(), "from-user-data");
    let warnings = s.status()["warnings"].to_string();
    assert!(
        warnings.contains("`byobu_by_default` is a cloud-init key not supported by stoke"),
        "{warnings}"
    );
    assert!(warnings.contains("`landscape`"), "{warnings}");
    assert!(
        s.status()["errors"]
            .as_array()
            .is_some_and(|e| e.is_empty())
    );
}

#[test]
fn non_utf8_user_data_is_a_clear_error() {
    let s = Sandbox::new();
    s.seed("iid-one", "");
    s.write(
        "/var/lib/stoke/seed/nocloud/user-data",
        b"#cloud-config\nhostname: \xff\xfe\n",
    );
    let r = s.run_all();
    assert_eq!(r.code, 2, "{}", r.stderr);
    let errors = s.status()["errors"].to_string();
    assert!(errors.contains("UTF-8"), "{errors}");
}

#[test]
fn yaml_alias_bomb_fails_fast_without_exhausting_memory() {
    let mut bomb = String::from("#cloud-config\na: &a [x, x, x, x, x, x, x, x, x, x]\n");
    let mut prev = 'a';
    for name in "bcdefghijklmnop".chars() {
        bomb.push_str(&format!(
            "{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
        ));
        prev = name;
    }
    let s = Sandbox::nocloud("iid-one", &bomb);
    let r = s.run_all();
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        !s.status()["errors"]
            .as_array()
            .is_some_and(|e| e.is_empty())
    );
}

#[test]
fn path_like_instance_id_is_refused_and_nothing_is_written_outside_the_root() {
    let s = Sandbox::nocloud("../../etc", GOOD);
    let r = s.run_all();
    assert_eq!(r.code, 2, "{}", r.stderr);
    let errors = s.status()["errors"].to_string();
    assert!(
        errors.contains("instance-id: invalid instance id"),
        "{errors}"
    );
    assert_eq!(s.module_state("hostname"), "deferred");
    assert!(!s.path("/var/lib/stoke/instances").exists());
    for f in s.files() {
        assert!(!f.contains(".."), "{f}");
    }
}

#[test]
fn no_datasource_defers_metadata_modules_and_reports_why() {
    let s = Sandbox::new();
    let r = s.run_all();
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(s.module_state("hostname"), "deferred");
    let reason = s.status()["modules"]["hostname"]["reason"].to_string();
    assert!(reason.contains("no datasource found"), "{reason}");
}

#[test]
fn disabled_switch_turns_stoke_off() {
    let s = Sandbox::nocloud("iid-one", GOOD);
    s.write("/proc/cmdline", "console=ttyS0 stoke=disabled quiet\n");
    let r = s.run_all();
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("disabled"), "{}", r.stdout);
    assert!(!s.path("/etc/hostname").exists());
    s.write("/proc/cmdline", "console=ttyS0\n");
    s.write("/etc/stoke/disabled", "");
    assert_eq!(s.run_all().code, 0);
    assert!(!s.path("/etc/hostname").exists());
}

#[test]
fn module_overrides_change_frequency_and_can_disable() {
    let s = Sandbox::nocloud("iid-one", GOOD);
    s.write(
        "/etc/stoke/stoke.yaml",
        "modules:\n  hostname: {enabled: false}\n",
    );
    assert_eq!(s.run_all().code, 0);
    assert_eq!(s.module_state("hostname"), "disabled");
    assert!(!s.path("/etc/hostname").exists());

    s.write(
        "/etc/stoke/stoke.yaml",
        "modules:\n  hostname: {frequency: per-instance}\n",
    );
    assert_eq!(s.run_all().code, 0);
    assert_eq!(s.module_state("hostname"), "ok");
    s.new_boot("boot-2");
    assert_eq!(s.run_all().code, 0);
    assert_eq!(s.module_state("hostname"), "skipped", "per-instance now");

    s.write(
        "/etc/stoke/stoke.yaml",
        "modules:\n  hostnam: {enabled: false}\n",
    );
    s.run_all();
    let errors = s.status()["errors"].to_string();
    assert!(
        errors.contains("unknown module `hostnam`; did you mean `hostname`?"),
        "{errors}"
    );
}

#[test]
fn failing_module_is_recorded_and_retried_next_run() {
    let s = Sandbox::nocloud("iid-one", "#cloud-config\nhostname: \"bad_name\"\n");
    let r = s.run_all();
    assert_eq!(r.code, 1, "a module failed; stderr: {}", r.stderr);
    assert_eq!(s.module_state("hostname"), "failed");
    let err = s.status()["modules"]["hostname"]["error"].to_string();
    assert!(err.contains("bad_name"), "{err}");
    s.seed("iid-one", "#cloud-config\nhostname: good-name\n");
    s.write(
        "/etc/stoke/stoke.yaml",
        "modules:\n  hostname: {frequency: per-instance}\n",
    );
    assert_eq!(s.run_all().code, 0);
    assert_eq!(
        s.module_state("hostname"),
        "ok",
        "a failed module is due again"
    );
    assert_eq!(s.read("/etc/hostname").trim(), "good-name");
}

#[test]
fn schema_validates_files_and_prints_a_json_schema() {
    let s = Sandbox::new();
    s.write("/cfg/good.yaml", "hostname: web\nvars: {role: x}\n");
    s.write(
        "/cfg/bad.yaml",
        "vars: {role: x}\nhostname: web\npreserve_hostnam: true\n",
    );
    let good = s.stoke(&["schema", s.path("/cfg/good.yaml").to_str().unwrap()]);
    assert_eq!(good.code, 0, "{}{}", good.stdout, good.stderr);
    let bad = s.stoke(&["schema", s.path("/cfg/bad.yaml").to_str().unwrap()]);
    assert_eq!(bad.code, 1);
    assert!(
        bad.stdout
            .contains("bad.yaml:3:1: unknown key `preserve_hostnam`"),
        "{}",
        bad.stdout
    );
    assert!(
        bad.stdout.contains("did you mean `preserve_hostname`?"),
        "{}",
        bad.stdout
    );
    let js = s.stoke(&["schema", "--json-schema"]);
    assert_eq!(js.code, 0);
    let v: serde_json::Value = serde_json::from_str(&js.stdout).expect("JSON");
    for key in ["hostname", "datasource", "imds", "modules", "vars"] {
        assert!(v["properties"].get(key).is_some(), "{key} in schema");
    }
}

#[test]
fn plan_says_what_is_due_and_why() {
    let s = Sandbox::nocloud("iid-one", GOOD);
    let plan = s.stoke(&["plan"]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert!(plan.stdout.contains("hostname"), "{}", plan.stdout);
    assert!(
        plan.stdout.contains("per-boot, not yet run this boot"),
        "{}",
        plan.stdout
    );
    assert!(!s.path("/etc/hostname").exists(), "plan changes nothing");
    s.run_all();
    let plan = s.stoke(&["plan"]);
    assert!(
        plan.stdout.contains("per-boot, already ran this boot"),
        "{}",
        plan.stdout
    );
}

#[test]
fn query_and_analyze_read_this_instance() {
    let s = Sandbox::nocloud("iid-one", GOOD);
    s.run_all();
    let q = s.stoke(&["query", "local-ipv4"]);
    assert_eq!((q.code, q.stdout.trim()), (0, "10.0.0.7"));
    assert_eq!(s.stoke(&["query", "instance-id"]).stdout.trim(), "iid-one");
    let bad = s.stoke(&["query", "nope"]);
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("known:"), "{}", bad.stderr);
    let a = s.stoke(&["analyze"]);
    assert_eq!(a.code, 0);
    assert!(
        a.stdout.contains("slowest first") && a.stdout.contains("hostname"),
        "{}",
        a.stdout
    );
    // Each stage says how long the process took to reach it and how long config and
    // datasource took inside it.
    let local = &s.status()["stages"]["local"];
    let (startup, prepare, total) = (
        local["startup_ms"].as_f64(),
        local["prepare_ms"].as_f64(),
        local["duration_ms"].as_f64(),
    );
    assert!(startup.is_some_and(|v| v >= 0.0), "{local}");
    assert!(prepare.zip(total).is_some_and(|(p, t)| p <= t), "{local}");
    assert!(a.stdout.contains("process start-up"), "{}", a.stdout);
    // Where the preparation went: each part, ended within it.
    let steps: Vec<(&str, f64)> = local["prepare_steps"]
        .as_array()
        .expect("prepare_steps")
        .iter()
        .map(|p| (p["step"].as_str().unwrap(), p["ended_ms"].as_f64().unwrap()))
        .collect();
    let names: Vec<&str> = steps.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "image layers",
            "datasource",
            "instance recorded",
            "user-data"
        ],
        "{local}"
    );
    assert!(
        steps
            .iter()
            .all(|(_, ms)| prepare.is_some_and(|p| *ms <= p)),
        "{local}"
    );
    assert!(a.stdout.contains("datasource "), "{}", a.stdout);
    let to_main = local["main_ms"].as_f64();
    assert!(to_main.zip(startup).is_some_and(|(m, s)| m <= s), "{local}");
}

#[test]
fn configuration_reference_lists_every_key() {
    let s = Sandbox::new();
    let js = s.stoke(&["schema", "--json-schema"]);
    let v: serde_json::Value = serde_json::from_str(&js.stdout).expect("JSON");
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .expect("docs/configuration.md");
    let props = v["properties"].as_object().expect("properties");
    assert!(props.len() > 10, "{props:?}");
    for key in props.keys() {
        assert!(
            doc.contains(&format!("| `{key}` |")),
            "docs/configuration.md lacks `{key}`"
        );
    }
}

#[test]
fn a_module_past_its_timeout_fails_alone_and_the_others_still_run() {
    let s = Sandbox::nocloud(
        "iid-one",
        "#cloud-config\nhostname: still-set\npuppet:\n  command: [sh, -c, 'sleep 30', --detailed-exitcodes]\nmodules:\n  puppet: {timeout_seconds: 1}\n",
    );
    let started = std::time::Instant::now();
    let r = s.stoke(&["--execute", "run", "--stage", "all"]);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "the sleep was cut short"
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(s.module_state("puppet"), "failed");
    let err = s.status()["modules"]["puppet"]["error"].to_string();
    assert!(err.contains("timed out"), "{err}");
    assert_eq!(s.module_state("hostname"), "ok");
    assert_eq!(s.read("/etc/hostname").trim(), "still-set");
}

#[test]
fn status_wait_returns_when_done_and_gives_up_at_its_timeout() {
    let s = Sandbox::nocloud("iid-one", GOOD);
    s.stoke(&["run", "--stage", "local"]);
    let started = std::time::Instant::now();
    let w = s.stoke(&["status", "--wait", "--timeout", "1"]);
    assert_eq!(w.code, 3, "not finished: {}", w.stdout);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    s.stoke(&["run", "--stage", "network"]);
    s.stoke(&["run", "--stage", "final"]);
    let w = s.stoke(&["status", "--wait", "--timeout", "5", "--json"]);
    assert_eq!(w.code, 0, "{}", w.stdout);
    let v: serde_json::Value = serde_json::from_str(&w.stdout).expect("JSON");
    assert_eq!(v["status"], "done");
}

#[test]
fn later_stages_reuse_what_the_local_stage_found() {
    let s = Sandbox::nocloud("iid-one", GOOD);
    assert_eq!(s.stoke(&["run", "--stage", "local"]).code, 3);
    // A cidata volume is probed and mounted once per boot, not once per stage.
    std::fs::remove_dir_all(s.path("/var/lib/stoke/seed/nocloud")).unwrap();
    s.stoke(&["run", "--stage", "network"]);
    assert_eq!(s.status()["instance_id"], "iid-one");
    assert_eq!(s.module_state("ssh-authorized-keys"), "ok");
    // A new boot does look again.
    s.new_boot("boot-2");
    s.stoke(&["run", "--stage", "local"]);
    assert_eq!(s.module_state("hostname"), "deferred");
}

/// How often the local stage released the hold on sshd (`stoke-hold-logins.target`).
fn login_releases(s: &Sandbox) -> usize {
    s.actions_of("run")
        .iter()
        .filter(|a| {
            a["argv"]
                .as_array()
                .is_some_and(|v| v.iter().any(|x| x == "stoke-hold-logins.target"))
        })
        .count()
}

#[test]
fn logins_wait_for_the_network_stage_only_when_a_key_module_has_to() {
    // The keys are local (NoCloud): they are in place after the local stage, sshd need not wait.
    let s = Sandbox::nocloud("iid-one", GOOD);
    s.write("/run/systemd/system/.booted", "");
    s.stoke(&["run", "--stage", "local"]);
    assert_eq!(s.module_state("ssh-authorized-keys"), "ok");
    assert_eq!(s.module_state("ssh-host-keys"), "ok");
    assert_eq!(login_releases(&s), 1, "{:?}", s.actions_of("run"));
    // The next stages leave the hold alone.
    s.stoke(&["run", "--stage", "network"]);
    assert_eq!(login_releases(&s), 1);

    // No metadata yet (a new EC2 instance before IMDS): the key modules wait, and logins with them.
    let e = Sandbox::new();
    e.write("/run/systemd/system/.booted", "");
    e.stoke(&["run", "--stage", "local"]);
    assert_eq!(e.module_state("ssh-authorized-keys"), "deferred");
    assert_eq!(login_releases(&e), 0);

    // Not booted with systemd: there is no hold to release.
    let n = Sandbox::nocloud("iid-one", GOOD);
    n.stoke(&["run", "--stage", "local"]);
    assert_eq!(n.module_state("ssh-host-keys"), "ok");
    assert_eq!(login_releases(&n), 0);
}

#[test]
fn a_cidata_volume_is_found_by_its_udev_label_link_without_blkid() {
    let s = Sandbox::new();
    s.write("/dev/vdc", vec![0u8; 40_000]); // not ISO 9660: vfat
    std::fs::create_dir_all(s.path("/dev/disk/by-label")).unwrap();
    // Relative, as udev makes them.
    std::os::unix::fs::symlink("../../vdc", s.path("/dev/disk/by-label/CIDATA")).unwrap();
    s.stoke(&["run", "--stage", "local"]);
    let mounts = s.actions_of("mount");
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert_eq!(mounts[0]["fstype"], "vfat");
    assert!(
        mounts[0]["source"].as_str().unwrap().ends_with("/dev/vdc"),
        "{mounts:?}"
    );
    let blkid: Vec<_> = s
        .actions_of("run")
        .into_iter()
        .filter(|a| a["argv"][0] == "blkid")
        .collect();
    assert!(blkid.is_empty(), "{blkid:?}");
}

/// cloud-init accepts a numeric hostname; so does stoke.
#[test]
fn a_numeric_hostname_is_its_text() {
    let s = Sandbox::nocloud("iid-num", "#cloud-config\nhostname: 12345\n");
    let r = s.run_all();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(s.read("/etc/hostname").trim(), "12345");
}

/// A user-data of 5,000 unknown keys is rejected quickly, with a bounded list of errors.
#[test]
fn many_unknown_keys_give_a_bounded_report_in_linear_time() {
    let mut ud = String::from("#cloud-config\n");
    for i in 0..5_000 {
        ud.push_str(&format!("k{i}: 1\n"));
    }
    let s = Sandbox::nocloud("iid-many", &ud);
    let r = s.run_all();
    assert_eq!(r.code, 2, "{}", r.stderr);
    let errors = s.status()["errors"].as_array().cloned().unwrap_or_default();
    assert!(errors.len() <= 25, "{} errors", errors.len());
    let all = serde_json::to_string(&errors).unwrap();
    assert!(all.contains("and 4980 more unknown keys"), "{all}");
    let status_size = std::fs::metadata(s.path("/run/stoke/status.json"))
        .unwrap()
        .len();
    assert!(
        status_size < 64 * 1024,
        "status.json is {status_size} bytes"
    );
}

/// A seed is input from outside: a FIFO where user-data should be does not hang the stage, a
/// user-data past the cap is refused before it is read whole, a bad instance id is cut when echoed.
#[test]
fn hostile_seed_files_are_refused_quickly_and_said_briefly() {
    let s = Sandbox::nocloud("iid-fifo", "");
    let ud = s.path("/var/lib/stoke/seed/nocloud/user-data");
    std::fs::remove_file(&ud).unwrap();
    nix::unistd::mkfifo(&ud, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let r = s.run_all();
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        s.status()["errors"]
            .to_string()
            .contains("not a regular file"),
        "{}",
        s.status()["errors"]
    );

    let s = Sandbox::nocloud("iid-big", "");
    let big = vec![b'#'; 17 * 1024 * 1024];
    s.write("/var/lib/stoke/seed/nocloud/user-data", &big);
    assert_eq!(s.run_all().code, 2);
    // Refused by the capped read inside the root (`RootDir::read_regular`).
    assert!(s.status()["errors"].to_string().contains("larger than"));

    let s = Sandbox::new();
    let long_bad = format!("../{}", "x".repeat(5000));
    s.write(
        "/var/lib/stoke/seed/nocloud/meta-data",
        format!("instance-id: {long_bad}\n"),
    );
    s.run_all();
    let errors = s.status()["errors"].to_string();
    assert!(
        errors.contains("instance-id: invalid instance id"),
        "{errors}"
    );
    assert!(errors.len() < 1000, "echoed whole: {} bytes", errors.len());
}

/// A temp file a killed stoke left (here a host key's) is removed by the next run and by clean.
#[test]
fn temp_files_an_interrupted_stoke_left_are_removed() {
    let s = Sandbox::nocloud("iid-tmp", GOOD);
    s.write(
        "/etc/ssh/.ssh_host_ed25519_key.stoke-tmp-999999-1",
        "PRIVATE",
    );
    s.write("/etc/.hosts.stoke-999998-7", "x");
    // A `~/.ssh` stoke was making when it died (made under a temp name, empty).
    std::fs::create_dir_all(s.path("/root/..ssh.stoke-tmp-999999-3")).expect("mkdir");
    std::fs::create_dir_all(s.path("/home/admin/..ssh.stoke-tmp-999999-4")).expect("mkdir");
    assert_eq!(s.run_all().code, 0);
    assert!(!s.path("/root/..ssh.stoke-tmp-999999-3").exists());
    assert!(!s.path("/home/admin/..ssh.stoke-tmp-999999-4").exists());
    assert!(
        !s.path("/etc/ssh/.ssh_host_ed25519_key.stoke-tmp-999999-1")
            .exists()
    );
    assert!(!s.path("/etc/.hosts.stoke-999998-7").exists());
    s.write("/var/lib/stoke/instances/.x.stoke-tmp-999999-2", "x");
    assert_eq!(s.stoke(&["clean"]).code, 0);
    assert!(
        !s.path("/var/lib/stoke/instances/.x.stoke-tmp-999999-2")
            .exists()
    );
}

/// `--root` is a boundary: with `DIR/etc` an absolute link to a directory outside DIR, the
/// hostname module writes nothing there (the link is resolved as the instance would: inside DIR).
#[test]
fn an_absolute_etc_link_does_not_lead_hostname_out_of_the_root() {
    let s = Sandbox::nocloud("iid-link", GOOD);
    let outside = tempfile::tempdir().expect("tempdir");
    let etc = s.path("/etc");
    let moved = outside.path().join("etc");
    std::fs::rename(&etc, &moved).expect("move etc out");
    std::os::unix::fs::symlink(&moved, &etc).expect("absolute link");
    let hosts_before = std::fs::read_to_string(moved.join("hosts")).expect("hosts");
    s.run_all();
    assert!(
        !moved.join("hostname").exists(),
        "hostname written outside the root"
    );
    assert_eq!(
        std::fs::read_to_string(moved.join("hosts")).expect("hosts"),
        hosts_before,
        "hosts changed outside the root"
    );
}

/// A chroot build has no /proc: without a kernel boot id, every stage used to start a new
/// boot's status, and a local-stage failure was gone by the end (exit 0, `done`).
#[test]
fn a_root_without_a_boot_id_keeps_earlier_stages_failures() {
    let s = Sandbox::nocloud(
        "i-noproc",
        "#cloud-config\nwrite_files:\n  - path: /etc/x\n    content: \"a\"\n    encoding: b64\n",
    );
    std::fs::remove_file(s.path("/proc/sys/kernel/random/boot_id")).unwrap();
    let r = s.run_all();
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(s.module_state("write-files"), "failed");
    let made_up = s.read("/run/stoke/boot-id");
    assert_eq!(
        s.status()["boot_id"],
        made_up.trim(),
        "the stages shared one boot id"
    );
    // A later stage run alone belongs to the same boot: the failure is still there.
    s.stoke(&["run", "--stage", "final"]);
    assert_eq!(s.module_state("write-files"), "failed");
    let status = s.stoke(&["status"]);
    assert_eq!(status.code, 1, "{}", status.stdout);
}
