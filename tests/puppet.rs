//! The puppet module through the real binary (sandbox root with --execute):
//! a real `puppet apply` blocking run, and a non-blocking run whose result
//! lands in `stoke status` after stoke has exited.

#[path = "support/sandbox.rs"]
mod sandbox;

use std::time::{Duration, Instant};

use sandbox::Sandbox;

/// These runs execute commands for real: without this, ssh-host-keys would need the real
/// ssh-keygen, which these tests are not about (and a fresh machine may lack).
const NO_HOST_KEYS: &str = "modules:\n  ssh-host-keys: {enabled: false}\n";

#[test]
fn blocking_puppet_apply_that_changes_a_file_is_a_success() {
    if !stoke_api::testing::need_tools(&["puppet"]) {
        return;
    }
    let s = Sandbox::new();
    let target = s.path("/srv/delta.txt");
    let manifest = s.path("/srv/site.pp");
    s.write(
        "/srv/site.pp",
        format!(
            "file {{ '{}': content => \"delta\\n\" }}\n",
            target.display()
        ),
    );
    let dir = |d: &str| s.path(&format!("/puppet/{d}")).display().to_string();
    let user_data = format!(
        "#cloud-config\n{NO_HOST_KEYS}puppet:\n  mode: blocking\n  command: [puppet, apply, --detailed-exitcodes, --confdir, {}, --vardir, {}, --codedir, {}, {}]\n",
        dir("conf"),
        dir("var"),
        dir("code"),
        manifest.display()
    );
    s.seed("iid-one", &user_data);
    let r = s.stoke(&["--execute", "run", "--stage", "all"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        std::fs::read_to_string(&target).unwrap_or_default(),
        "delta\n"
    );
    assert_eq!(s.module_state("puppet"), "ok");
    let summary = s.status()["modules"]["puppet"]["summary"].to_string();
    assert!(summary.contains("changes applied"), "{summary}");
}

#[test]
fn non_blocking_run_outlives_stoke_and_its_result_reaches_status() {
    let s = Sandbox::nocloud(
        "iid-one",
        &format!(
            "#cloud-config\n{NO_HOST_KEYS}puppet:\n  mode: non-blocking\n  command: [sh, -c, 'echo converging; exit 2', --detailed-exitcodes]\n"
        ),
    );
    let r = s.stoke(&["--execute", "run", "--stage", "all"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(s.module_state("puppet"), "ok");
    assert_eq!(s.status()["modules"]["puppet"]["stage"], "final");
    let record = s.path("/var/lib/stoke/instances/iid-one/data/puppet/background.json");
    // Wait for the detached run's own record to say it finished (bounded).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&record).unwrap_or_default();
        if text.contains("\"succeeded\"") || text.contains("\"failed\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "background run never finished: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = s.stoke(&["status"]);
    assert!(
        status
            .stdout
            .contains("background: succeeded (exit 2: changes applied)"),
        "{}",
        status.stdout
    );
    let json: serde_json::Value =
        serde_json::from_str(&s.stoke(&["status", "--json"]).stdout).unwrap();
    assert_eq!(json["modules"]["puppet"]["background"]["code"], 2);
    // A second run of the stage starts nothing new (per-instance, already ran).
    let spawned = s.actions_of("spawn_detached").len();
    s.stoke(&["--execute", "run", "--stage", "final"]);
    assert_eq!(s.actions_of("spawn_detached").len(), spawned);
}
