//! Acceptance checks end to end: defined by image layers, run at the end of a boot (a failed
//! one makes the boot `error`, with which check and why in status), and by `stoke verify`
//! with JUnit XML a CI server reads.

#[path = "support/sandbox.rs"]
mod sandbox;

use sandbox::Sandbox;

fn image(sb: &Sandbox) {
    sb.write(
        "/etc/stoke/stoke.d/10-base.yaml",
        "checks:\n  hosts:\n    file: /etc/hosts\n    contains: localhost\n  \
         no-nologin:\n    file: /etc/nologin\n    exists: false\n",
    );
    sb.write(
        "/etc/stoke/stoke.d/50-app.yaml",
        "checks:\n  app-config:\n    file: /etc/app/app.conf\n    mode: '0640'\n  \
         motd:\n    file: /etc/motd\n    severity: warning\n  \
         hosts:\n    file: /etc/hosts\n    contains: web-1\n",
    );
}

#[test]
fn a_failed_check_makes_the_boot_an_error_and_says_which_and_why() {
    let sb = Sandbox::nocloud("i-checks", "#cloud-config\nhostname: web-1\n");
    image(&sb);
    let run = sb.run_all();
    assert_eq!(run.code, 1, "{}", run.stderr);
    let status = sb.status();
    let checks = &status["modules"]["checks"];
    assert_eq!(checks["state"], "failed", "{checks}");
    let error = checks["error"].as_str().unwrap_or_default();
    assert!(error.contains("app-config (absent)"), "{error}");
    // The later layer's `hosts` replaced the base one, and the hostname module ran first.
    let results = checks["details"]["checks"].as_array().expect("results");
    let hosts = results
        .iter()
        .find(|r| r["name"] == "hosts")
        .expect("hosts");
    assert_eq!(hosts["passed"], true, "{hosts}");
    assert!(
        hosts["found"].as_str().unwrap().contains("/web-1/"),
        "{hosts}"
    );
    assert_eq!(results.len(), 4);
    let motd = results.iter().find(|r| r["name"] == "motd").expect("motd");
    assert_eq!(
        (motd["passed"].as_bool(), motd["severity"].as_str()),
        (Some(false), Some("warning"))
    );
    // Fixed, the next boot is ready, degraded only by the warning check.
    sb.write("/etc/app/app.conf", "x=1\n");
    std::fs::set_permissions(
        sb.path("/etc/app/app.conf"),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .expect("chmod");
    sb.new_boot("boot-2");
    let run = sb.run_all();
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(sb.module_state("checks"), "ok");
    let warnings = sb.status()["modules"]["checks"]["warnings"].to_string();
    assert!(warnings.contains("check motd failed: absent"), "{warnings}");
}

#[test]
fn verify_runs_the_layers_checks_and_writes_junit() {
    let sb = Sandbox::new();
    image(&sb);
    sb.write("/etc/hosts", "127.0.0.1 localhost web-1\n");
    let junit = sb.path("/out/checks.xml");
    let run = sb.stoke(&["verify", "--junit", junit.to_str().expect("utf-8")]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("FAIL app-config: file /etc/app/app.conf (absent)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("WARN motd: file /etc/motd (absent)"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("PASS hosts"), "{}", run.stdout);
    let xml = std::fs::read_to_string(&junit).expect("junit written");
    let doc = roxmltree::Document::parse(&xml).expect("JUnit XML parses");
    let suite = doc
        .descendants()
        .find(|n| n.has_tag_name("testsuite"))
        .expect("a testsuite");
    assert_eq!(suite.attribute("tests"), Some("4"), "{xml}");
    assert_eq!(suite.attribute("failures"), Some("1"), "{xml}");
    assert_eq!(
        suite.attribute("disabled"),
        Some("1"),
        "the warning check, skipped: {xml}"
    );
    let case = |name: &str| {
        suite
            .children()
            .find(|c| c.has_tag_name("testcase") && c.attribute("name") == Some(name))
            .unwrap_or_else(|| panic!("{name}: {xml}"))
    };
    let failure = case("app-config")
        .children()
        .find(|c| c.has_tag_name("failure"))
        .expect("app-config failed");
    assert_eq!(failure.attribute("message"), Some("absent"));
    assert!(case("hosts").children().all(|c| !c.has_tag_name("failure")));
    assert_eq!(
        case("hosts").attribute("classname"),
        Some("stoke.checks.file")
    );

    // One layer's checks only; JSON.
    let run = sb.stoke(&["verify", "--layer", "10-base", "--json"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    let names: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["hosts", "no-nologin"],
        "base's own checks (hosts as merged)"
    );
    let run = sb.stoke(&["verify", "--layer", "90-nope"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("no layer `90-nope` (layers: 10-base, 50-app)"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_malformed_check_is_an_error_with_its_line() {
    let sb = Sandbox::new();
    sb.write(
        "/etc/stoke/stoke.yaml",
        "checks:\n  web:\n    port: 80\n    fstype: xfs\n",
    );
    let run = sb.stoke(&["verify"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("stoke.yaml:3:5"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("`fstype` does not apply to a port check"),
        "{}",
        run.stderr
    );
}
