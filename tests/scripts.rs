//! The real `stoke` binary runs the user's code in a sandbox root with `--execute`:
//! real `sh`/`bash`, real process groups and timeouts, status and frequencies.

#[path = "support/sandbox.rs"]
mod sandbox;

use sandbox::Sandbox;

fn run_exec(s: &Sandbox) -> sandbox::Run {
    s.stoke(&["--execute", "run", "--stage", "all"])
}

fn scripts_of(s: &Sandbox, module: &str) -> Vec<serde_json::Value> {
    s.status()["modules"][module]["details"]["scripts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_plain_bash_user_data_runs_once_per_instance() {
    let s = Sandbox::new();
    let out = s.path("/out");
    let ud = format!(
        "#!/bin/bash\necho \"ran as $INSTANCE_ID home=$HOME\" >> {}\necho done\n",
        out.display()
    );
    s.seed("iid-a", &ud);
    let r = run_exec(&s);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(s.read("/out"), "ran as iid-a home=/root\n");
    let runs = scripts_of(&s, "scripts");
    assert_eq!(runs[0]["outcome"], "ok");
    assert_eq!(runs[0]["exit"], 0);
    assert_eq!(runs[0]["output_tail"], "done");
    assert_eq!(
        s.read("/var/log/stoke/scripts/user-data-part-001.log"),
        "done\n"
    );
    let status = s.stoke(&["status"]);
    assert!(
        status.stdout.contains("script user-data/part-001: ok"),
        "{}",
        status.stdout
    );

    // Next boot, same instance: not again.
    s.new_boot("boot-2");
    assert_eq!(run_exec(&s).code, 0);
    assert_eq!(s.read("/out"), "ran as iid-a home=/root\n");
    assert_eq!(scripts_of(&s, "scripts")[0]["outcome"], "skipped");

    // A new instance from the same root: again.
    s.new_boot("boot-3");
    s.seed("iid-b", &ud);
    assert_eq!(run_exec(&s).code, 0);
    assert_eq!(
        s.read("/out"),
        "ran as iid-a home=/root\nran as iid-b home=/root\n"
    );
}

#[test]
fn a_mime_user_data_with_config_and_script_parts_runs_all_in_order() {
    let s = Sandbox::new();
    let log = s.path("/order");
    let l = log.display();
    let ud = format!(
        "Content-Type: multipart/mixed; boundary=\"==B==\"\nMIME-Version: 1.0\n\n\
--==B==\nContent-Type: text/cloud-config; charset=\"us-ascii\"\n\n\
#cloud-config\nbootcmd:\n  - echo bootcmd >> {l}\nruncmd:\n  - [sh, -c, \"echo runcmd >> {l}\"]\n\
--==B==\nContent-Type: text/x-shellscript; charset=\"us-ascii\"\n\
Content-Disposition: attachment; filename=\"setup.sh\"\n\n\
#!/bin/sh\necho script >> {l}\n\
--==B==\nContent-Type: text/cloud-boothook\n\n#cloud-boothook\necho boothook >> {l}\n\
--==B==--\n"
    );
    s.seed("iid-m", &ud);
    let r = run_exec(&s);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(s.read("/order"), "boothook\nbootcmd\nruncmd\nscript\n");
    let names: Vec<String> = scripts_of(&s, "scripts")
        .iter()
        .map(|r| {
            format!(
                "{}/{}",
                r["source"].as_str().unwrap(),
                r["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(names, ["runcmd/runcmd", "user-data/setup.sh"]);

    // Boothook and bootcmd every boot; runcmd and the script once.
    s.new_boot("boot-2");
    assert_eq!(run_exec(&s).code, 0);
    assert_eq!(
        s.read("/order"),
        "boothook\nbootcmd\nruncmd\nscript\nboothook\nbootcmd\n"
    );
}

#[test]
fn a_script_that_never_ends_is_killed_with_its_children_and_the_next_one_runs() {
    let s = Sandbox::new();
    let pid = s.path("/child.pid");
    let after = s.path("/after");
    let ud = format!(
        "Content-Type: multipart/mixed; boundary=B\n\n\
--B\nContent-Type: text/cloud-config\n\n#cloud-config\nscripts: {{timeout_seconds: 2}}\n\
--B\nContent-Type: text/x-shellscript\n\n#!/bin/sh\nsleep 600 &\necho $! > {}\nwait\n\
--B\nContent-Type: text/x-shellscript\n\n#!/bin/sh\necho fail-next >&2\nexit 4\n\
--B\nContent-Type: text/x-shellscript\n\n#!/bin/sh\ntouch {}\n--B--\n",
        pid.display(),
        after.display()
    );
    s.seed("iid-t", &ud);
    let r = run_exec(&s);
    assert_eq!(
        r.code, 1,
        "a failed script makes the boot an error: {}",
        r.stderr
    );
    assert!(after.exists(), "the scripts after the failures still ran");
    let child: i32 = s.read("/child.pid").trim().parse().expect("pid");
    let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
    let state = stat.rsplit(") ").next().and_then(|r| r.chars().next());
    assert!(
        stat.is_empty() || state == Some('Z'),
        "the script's child outlived its timeout: {stat}"
    );
    let runs = scripts_of(&s, "scripts");
    assert_eq!(runs[0]["outcome"], "timed-out");
    assert_eq!(runs[1]["outcome"], "failed");
    assert_eq!(runs[1]["exit"], 4);
    assert_eq!(runs[1]["output_tail"], "fail-next");
    assert_eq!(runs[2]["outcome"], "ok");
    assert_eq!(s.module_state("scripts"), "failed");
    let status = s.stoke(&["status"]);
    assert!(
        status.stdout.contains("script user-data/part-002: failed")
            && status.stdout.contains("| fail-next"),
        "{}",
        status.stdout
    );
}

#[test]
fn without_execute_the_sandbox_records_scripts_and_plan_says_what_would_run() {
    let s = Sandbox::nocloud("iid-r", "#cloud-config\nruncmd:\n  - touch /x\n");
    let plan = s.stoke(&["plan"]);
    assert!(
        plan.stdout.contains("would run: runcmd/runcmd"),
        "{}",
        plan.stdout
    );
    let r = s.run_all();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(scripts_of(&s, "scripts")[0]["outcome"], "recorded");
    let runs: Vec<_> = s
        .actions_of("run")
        .iter()
        .map(|a| a["argv"][0].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        runs.iter().any(|a| a.ends_with("/scripts/runcmd-runcmd")),
        "{runs:?}"
    );
    assert!(!s.path("/x").exists());
}

#[test]
fn jinja_user_data_is_rendered_before_it_is_read_and_a_bad_template_is_reported_alone() {
    let s = Sandbox::new();
    let out = s.path("/out");
    s.write("/etc/stoke/stoke.yaml", "vars: {role: web}\n");
    let ud = format!(
        "## template: jinja\n#!/bin/sh\necho {{{{ role }}}} {{{{ v1.instance_id }}}} {{{{ ds.meta_data.local_ipv4 }}}} > {}\n",
        out.display()
    );
    s.seed("iid-j", &ud);
    let r = run_exec(&s);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(s.read("/out"), "web iid-j 10.0.0.7\n");

    // stoke's own per-instance UUID: the same one the hostname module uses.
    let s = Sandbox::new();
    s.write("/etc/stoke/stoke.yaml", "hostname: \"h-{{ uuid8 }}\"\n");
    let ud = format!(
        "## template: jinja\n#!/bin/sh\necho {{{{ uuid8 }}}} {{{{ uuid }}}} > {}\n",
        s.path("/out").display()
    );
    s.seed("iid-u", &ud);
    assert_eq!(run_exec(&s).code, 0);
    let said = s.read("/out");
    let (uuid8, uuid) = said.trim().split_once(' ').expect("two words");
    assert_eq!(uuid.len(), 36, "{said}");
    assert!(uuid.starts_with(uuid8));
    assert_eq!(s.read("/etc/hostname").trim(), format!("h-{uuid8}"));

    let s = Sandbox::new();
    let ud = "Content-Type: multipart/mixed; boundary=B\n\n\
--B\nContent-Type: text/cloud-config\n\n#cloud-config\nhostname: kept\n\
--B\nContent-Type: text/jinja2\n\n## template: jinja\n#cloud-config\n\nhostname: {{ v1.missing.x }}\n--B--\n";
    s.seed("iid-k", ud);
    let r = s.run_all();
    assert_ne!(r.code, 0, "reported: {}", r.stderr);
    assert_eq!(
        s.read("/etc/hostname").trim(),
        "kept",
        "the other part applied"
    );
    let errors = s.status()["errors"].to_string();
    assert!(
        errors.contains("jinja template: line 4: undefined"),
        "{errors}"
    );
}

/// stoke killed (SIGKILL) while a per-instance script runs: the next run does not start it
/// again, and status says it never finished.
#[test]
fn a_script_stoke_died_under_is_not_started_again() {
    let s = Sandbox::new();
    let out = s.path("/out");
    let ud = format!(
        "#!/bin/sh\necho started >> {}\nkill -9 $PPID\n",
        out.display()
    );
    s.seed("iid-c", &ud);
    let r = run_exec(&s);
    assert_eq!(r.code, -1, "stoke was killed: {}", r.stderr);
    assert_eq!(s.read("/out"), "started\n");
    let r = run_exec(&s);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(s.read("/out"), "started\n", "not started again");
    let run = &scripts_of(&s, "scripts")[0];
    assert_eq!(run["outcome"], "skipped");
    assert!(
        run["note"]
            .as_str()
            .unwrap_or("")
            .contains("never finished"),
        "{run}"
    );
}
