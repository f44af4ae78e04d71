//! What a newcomer meets on the command line, through the real binary: usage errors have their
//! own exit code, errors are said once, logs carry no escape codes off a terminal, the status
//! line says why a boot is degraded, and `plan` says when a module has nothing to do.

#[path = "support/sandbox.rs"]
mod sandbox;

use sandbox::Sandbox;

/// sysexits.h's EX_USAGE: distinct from every boot state (0 ok, 1 failed, 2 degraded, 3 running).
const USAGE: i32 = 64;

fn stoke(args: &[&str]) -> sandbox::Run {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stoke"))
        .args(args)
        .env_remove("JOURNAL_STREAM")
        .env_remove("INVOCATION_ID")
        .output()
        .expect("run stoke");
    sandbox::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn usage_errors_exit_64_never_a_boot_state() {
    let s = Sandbox::new();
    let root = s.root().display().to_string();
    for (args, says) in [
        (vec!["status", "--wiat"], "--wiat"),
        (vec!["run"], "--stage"),
        (vec!["run", "--stage", "lokal"], "lokal"),
        (vec!["schema"], "<FILE>"),
        (vec!["stats"], "stats"),
        (vec![], "Usage"),
    ] {
        let mut argv = vec!["--root", root.as_str()];
        argv.extend(&args);
        let r = stoke(&argv);
        assert_eq!(r.code, USAGE, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(says), "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{args:?}: {}", r.stdout);
    }
    // Asking for help is not an error.
    let help = stoke(&["--help"]);
    assert_eq!(help.code, 0);
    assert!(help.stdout.contains("64 usage error"), "{}", help.stdout);
}

#[test]
fn help_lists_every_command_and_explains_json() {
    let help = stoke(&["--help"]);
    assert_eq!(help.code, 0);
    for cmd in [
        "run",
        "status",
        "clean",
        "schema",
        "plan",
        "analyze",
        "query",
        "shutdown",
        "exec-record",
    ] {
        assert!(
            help.stdout.lines().any(|l| l.trim_start().starts_with(cmd)),
            "{cmd} missing from --help:\n{}",
            help.stdout
        );
    }
    for cmd in ["status", "plan"] {
        let h = stoke(&[cmd, "--help"]);
        let json = h
            .stdout
            .lines()
            .find(|l| l.contains("--json"))
            .unwrap_or("");
        assert!(json.contains("JSON"), "{cmd} --help: {json:?}");
    }
}

#[test]
fn a_command_error_is_said_once_without_colour() {
    let s = Sandbox::new();
    let r = s.stoke(&["analyze"]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr.matches("no status for this boot").count(),
        1,
        "{}",
        r.stderr
    );
    assert!(r.stderr.starts_with("stoke: "), "{}", r.stderr);
    assert!(!r.stderr.contains('\x1b'), "{:?}", r.stderr);
}

#[test]
fn logs_to_a_pipe_have_no_escape_codes() {
    // A config error and a warning: ERROR and WARN lines, which a terminal would get in colour.
    let s = Sandbox::nocloud("iid-one", "#cloud-config\nchef: {}\n");
    s.write("/etc/stoke/stoke.d/50-typo.yaml", "hostnme: x\n");
    let r = s.run_all();
    assert!(r.stderr.contains("WARN"), "{}", r.stderr);
    assert!(r.stderr.contains("ERROR"), "{}", r.stderr);
    assert!(!r.stderr.contains('\x1b'), "{:?}", r.stderr);
}

#[test]
fn the_status_line_says_why_the_boot_is_degraded() {
    let s = Sandbox::nocloud("iid-one", "#cloud-config\nhostname: web\nchef: {}\n");
    let r = s.run_all();
    assert_eq!(r.code, 2, "{}", r.stderr);
    let status = s.stoke(&["status"]);
    assert_eq!(status.code, 2);
    let first = status.stdout.lines().next().unwrap_or("");
    assert!(
        first.starts_with("status: degraded: 1 warning (user-data:3:1: `chef`"),
        "{first}"
    );
    // The console's summary line says it too.
    let console = s.read("/run/stoke/console.log");
    assert!(
        console.contains("status degraded: 1 warning (user-data:3:1"),
        "{console}"
    );
}

#[test]
fn plan_says_nothing_configured_instead_of_due() {
    let s = Sandbox::nocloud("iid-one", "#cloud-config\nhostname: web\n");
    let r = s.stoke(&["plan"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for module in ["route53", "puppet"] {
        let line = r
            .stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(module))
            .unwrap_or_else(|| panic!("{module} missing:\n{}", r.stdout));
        assert!(line.contains("nothing configured"), "{line}");
        assert!(!line.contains(" due "), "{line}");
    }
    let hostname = r
        .stdout
        .lines()
        .find(|l| l.contains(" hostname "))
        .unwrap_or("");
    assert!(hostname.contains(" due "), "{hostname}");
    let json = s.stoke(&["plan", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("plan --json");
    assert_eq!(
        v["modules"]["route53"]["due"], false,
        "{}",
        v["modules"]["route53"]
    );
}

#[test]
fn config_errors_say_what_was_expected_in_the_users_words() {
    let s = Sandbox::new();
    s.write(
        "/cfg.yaml",
        "route53:\n  zone_idd: Z123\nssh_genkeytypes: ed25519\n",
    );
    let r = s.stoke(&["schema", &s.path("/cfg.yaml").display().to_string()]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.stdout
            .contains(":2:3: unknown key `zone_idd` in `route53`; did you mean `hosted_zone_id`?"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains(":3:18: ssh_genkeytypes must be a list, e.g. [ed25519]"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("sequence start"), "{}", r.stdout);
}

#[test]
fn logs_on_a_terminal_are_coloured_unless_no_color() {
    // `script` gives stoke a pseudo-terminal for stderr.
    if !stoke_api::testing::need_tools(&["script"]) {
        return;
    }
    let s = Sandbox::new();
    let run = |no_color: Option<&str>| {
        let line = format!(
            "{} --root {} run --stage local",
            env!("CARGO_BIN_EXE_stoke"),
            s.root().display()
        );
        let mut cmd = std::process::Command::new("script");
        cmd.args(["-qec", &line, "/dev/null"])
            .env_remove("JOURNAL_STREAM")
            .env_remove("INVOCATION_ID")
            .env_remove("NO_COLOR");
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        let out = cmd.output().expect("script");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let tty = run(None);
    assert!(tty.contains("INFO"), "{tty:?}");
    assert!(tty.contains('\x1b'), "a terminal gets colour: {tty:?}");
    let plain = run(Some("1"));
    assert!(plain.contains("INFO"), "{plain:?}");
    assert!(!plain.contains('\x1b'), "NO_COLOR=1: {plain:?}");
}
