//! Seeing a boot from outside, through the real binary: `status --wait` that returns when
//! stoke will not finish (systemd's answers come from a fake `systemctl` named in the tools
//! table, run for real with `--execute`), the metrics textfile read by Prometheus's own
//! parser, `analyze --svg`, and printing commands ending quietly on a closed pipe.

#[path = "support/sandbox.rs"]
mod sandbox;

use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;

use sandbox::Sandbox;

/// `status`'s exit code when stoke will not run this boot.
const DISABLED: i32 = 4;

/// A sandbox whose `systemctl show` answers `unit` for stoke-final.service and
/// `SystemState=<system>` for the manager.
fn with_systemd(unit: &str, system: &str) -> Sandbox {
    let s = Sandbox::new();
    let fake = s.path("/fake/systemctl");
    s.write(
        "/fake/systemctl",
        format!(
            "#!/bin/sh\n\
             case \"$*\" in\n\
             *stoke-final.service*) printf '%s\\n' '{}' ;;\n\
             *) echo SystemState={system} ;;\n\
             esac\n",
            unit.replace('\n', "' '")
        ),
    );
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    s.write(
        "/etc/stoke/stoke.yaml",
        format!("tools:\n  systemctl: {}\n", fake.display()),
    );
    s
}

fn wait(s: &Sandbox, extra: &[&str]) -> sandbox::Run {
    let mut args = vec!["--execute", "status", "--wait"];
    args.extend_from_slice(extra);
    s.stoke(&args)
}

#[test]
fn wait_returns_at_once_when_stoke_is_disabled() {
    let s = Sandbox::new();
    s.write("/etc/stoke/disabled", "");
    let r = s.stoke(&["status", "--wait", "--timeout", "600"]);
    assert_eq!(r.code, DISABLED, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("status: disabled"), "{}", r.stdout);
    assert!(
        r.stdout.contains("etc/stoke/disabled exists"),
        "{}",
        r.stdout
    );

    let s = Sandbox::new();
    s.write("/proc/cmdline", "root=/dev/vda1 ro stoke=disabled quiet\n");
    let r = s.stoke(&["status", "--wait", "--json"]);
    assert_eq!(r.code, DISABLED, "{}{}", r.stdout, r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    assert_eq!(v["status"], "disabled");
    assert!(
        v["reason"]
            .as_str()
            .is_some_and(|w| w.contains("kernel command line")),
        "{v}"
    );
}

#[test]
fn wait_returns_when_systemd_says_the_unit_will_not_run() {
    for (unit, why) in [
        (
            "LoadState=masked\nActiveState=inactive\nUnitFileState=masked",
            "stoke-final.service is masked",
        ),
        (
            "LoadState=loaded\nActiveState=inactive\nUnitFileState=enabled\nConditionResult=no\n\
             ConditionTimestamp=Wed 2026-12-02 06:00:00 UTC",
            "a condition is not met",
        ),
    ] {
        let s = with_systemd(unit, "starting");
        let r = wait(&s, &["--timeout", "600"]);
        assert_eq!(r.code, DISABLED, "{unit}: {}{}", r.stdout, r.stderr);
        assert!(r.stdout.contains(why), "{}", r.stdout);
    }
}

#[test]
fn wait_returns_when_the_boot_ended_without_stoke_finishing() {
    for (unit, system, why) in [
        (
            "LoadState=loaded\nActiveState=failed\nUnitFileState=enabled",
            "degraded",
            "stoke-final.service failed",
        ),
        (
            "LoadState=loaded\nActiveState=inactive\nUnitFileState=enabled",
            "running",
            "did not run",
        ),
    ] {
        let s = with_systemd(unit, system);
        let r = wait(&s, &["--timeout", "600"]);
        assert_eq!(r.code, 1, "{unit}: {}{}", r.stdout, r.stderr);
        assert!(r.stdout.contains("status: error"), "{}", r.stdout);
        assert!(r.stdout.contains(why), "{}", r.stdout);
    }
    // With the stages that did run: their record, then why it ends here.
    let s = with_systemd(
        "LoadState=loaded\nActiveState=failed\nUnitFileState=enabled",
        "degraded",
    );
    s.seed("iid-1", "#cloud-config\n{}\n");
    assert_eq!(s.stoke(&["run", "--stage", "local"]).code, 3);
    let r = wait(&s, &["--json"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    assert_eq!(v["status"], "error");
    assert!(v["stages"]["local"].is_object(), "{v}");
    assert_eq!(v["reason"], "stoke-final.service failed");
}

#[test]
fn wait_keeps_waiting_while_the_unit_is_on_its_way_until_the_timeout() {
    let s = with_systemd(
        "LoadState=loaded\nActiveState=inactive\nUnitFileState=enabled",
        "starting",
    );
    let r = wait(&s, &["--timeout", "1"]);
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("not started"), "{}", r.stdout);
    // And a boot that finishes is reported as it is, whatever systemd says afterwards.
    s.seed("iid-1", "#cloud-config\n{}\n");
    assert_eq!(s.run_all().code, 0);
    let r = wait(&s, &["--timeout", "600"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
}

/// The venv `scripts/install-test-deps.sh` makes (prometheus_client); `None` (a skip, which
/// fails under `STOKE_TEST_REQUIRE_ALL=1`, as in CI) when it is not there.
fn prometheus_python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("STOKE_PROM_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("target"));
    let p = target.join("prom-venv/bin/python");
    if p.exists() {
        return Some(p);
    }
    stoke_api::testing::skip(&format!(
        "{} missing (prometheus_client; scripts/install-test-deps.sh makes it, or set \
         STOKE_PROM_PYTHON)",
        p.display()
    ));
    None
}

const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(open(sys.argv[1]).read()):
    out[fam.name] = {"type": fam.type, "documented": bool(fam.documentation),
                     "samples": [[s.name, s.labels, s.value] for s in fam.samples]}
print(json.dumps(out))
"#;

#[test]
fn the_metrics_textfile_parses_and_agrees_with_status_json() {
    let Some(python) = prometheus_python() else {
        return;
    };
    let s = Sandbox::nocloud(
        "iid-metrics",
        "#cloud-config\nruncmd:\n  - echo hi\nwrite_files:\n  - path: /etc/x\n    content: hello\n",
    );
    s.write(
        "/etc/stoke/stoke.yaml",
        "metrics:\n  textfile: /var/lib/node_exporter/textfile_collector/stoke.prom\n",
    );
    let prom = "/var/lib/node_exporter/textfile_collector/stoke.prom";
    assert_eq!(s.stoke(&["run", "--stage", "local"]).code, 3);
    assert!(
        s.read(prom).contains("stoke_boot_done 0\n"),
        "written at the end of each stage: {}",
        s.read(prom)
    );
    assert_eq!(s.stoke(&["run", "--stage", "network"]).code, 3);
    assert_eq!(s.stoke(&["run", "--stage", "final"]).code, 0);
    let out = std::process::Command::new(&python)
        .args(["-c", PARSE])
        .arg(s.path(prom))
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fams: serde_json::Value = serde_json::from_slice(&out.stdout).expect("parser's JSON");
    let status = s.status();
    for (name, fam) in fams.as_object().expect("families") {
        assert_eq!(fam["type"], "gauge", "{name}");
        assert_eq!(fam["documented"], true, "{name} has HELP");
    }
    let samples = |name: &str| -> Vec<(serde_json::Value, f64)> {
        fams[name]["samples"]
            .as_array()
            .unwrap_or_else(|| panic!("no family {name}: {fams}"))
            .iter()
            .map(|s| (s[1].clone(), s[2].as_f64().expect("value")))
            .collect()
    };
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    // prometheus_client names an info-like gauge by its family.
    assert_eq!(
        samples("stoke_boot_done"),
        vec![(serde_json::json!({}), 1.0)]
    );
    assert_eq!(samples("stoke_status_code")[0].1, 0.0);
    let status_one: Vec<_> = samples("stoke_status")
        .into_iter()
        .filter(|(_, v)| *v == 1.0)
        .collect();
    assert_eq!(
        status_one,
        vec![(serde_json::json!({"status": "done"}), 1.0)]
    );
    let work: f64 = ["local", "network", "final"]
        .iter()
        .map(|st| status["stages"][st]["duration_ms"].as_f64().expect("ms"))
        .sum();
    assert!(close(
        samples("stoke_boot_work_seconds")[0].1,
        work / 1000.0
    ));
    for (family, key) in [
        ("stoke_stage_duration_seconds", "duration_ms"),
        ("stoke_stage_startup_seconds", "startup_ms"),
        ("stoke_stage_prepare_seconds", "prepare_ms"),
    ] {
        let got = samples(family);
        assert_eq!(got.len(), 3, "{family}");
        for (labels, v) in got {
            let st = labels["stage"].as_str().expect("stage label");
            let want = status["stages"][st][key].as_f64().expect("ms") / 1000.0;
            assert!(close(v, want), "{family} {st}: {v} vs {want}");
        }
    }
    let durations = samples("stoke_module_duration_seconds");
    let modules = status["modules"].as_object().expect("modules");
    let ran = modules
        .values()
        .filter(|m| m["duration_ms"].is_f64())
        .count();
    assert!(ran >= 3 && durations.len() == ran, "{durations:?}");
    for (labels, v) in durations {
        let m = &modules[labels["module"].as_str().expect("module label")];
        assert_eq!(labels["stage"], m["stage"]);
        assert!(close(v, m["duration_ms"].as_f64().expect("ms") / 1000.0));
    }
    for (labels, v) in samples("stoke_module_state") {
        let m = &modules[labels["module"].as_str().expect("module label")];
        assert_eq!(v == 1.0, labels["state"] == m["state"], "{labels}");
    }
    let info = samples("stoke_build_info");
    assert_eq!(info[0].0["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn analyze_draws_this_boot_and_a_saved_one() {
    let s = Sandbox::nocloud("iid-svg", "#cloud-config\nruncmd:\n  - echo hi\n");
    assert_eq!(s.run_all().code, 0);
    let svg = s.path("/out/boot.svg");
    let html = s.path("/out/boot.html");
    std::fs::create_dir_all(s.path("/out")).expect("mkdir");
    let r = s.stoke(&[
        "analyze",
        "--svg",
        &svg.display().to_string(),
        "--html",
        &html.display().to_string(),
    ]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let text = std::fs::read_to_string(&svg).expect("svg written");
    let doc = roxmltree::Document::parse(&text).expect("well-formed SVG");
    let labels: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .collect();
    for want in ["stage local", "stage network", "stage final", "scripts ok"] {
        assert!(
            labels.iter().any(|l| l.starts_with(want)),
            "{want} in {labels:?}"
        );
    }
    assert!(
        labels.iter().any(|l| l.starts_with("runcmd/runcmd")),
        "the runcmd script as a nested bar: {labels:?}"
    );
    assert!(
        std::fs::read_to_string(&html)
            .expect("html written")
            .contains("modules, slowest first")
    );
    // A saved status.json, drawn elsewhere: the same picture.
    let saved = s.path("/out/status.json");
    std::fs::copy(s.path("/run/stoke/status.json"), &saved).expect("copy");
    let other = Sandbox::new();
    let again = other.path("/again.svg");
    let r = other.stoke(&[
        "analyze",
        "--from",
        &saved.display().to_string(),
        "--svg",
        &again.display().to_string(),
    ]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(std::fs::read_to_string(&again).expect("svg"), text);
}

/// A reader that went away (`stoke status --json | head -c1`) ends a printing command
/// as it ends `cat`: by SIGPIPE, without a panic message.
#[test]
fn printing_into_a_closed_pipe_ends_quietly() {
    let s = Sandbox::nocloud("iid-pipe", "#cloud-config\n{}\n");
    assert_eq!(s.run_all().code, 0);
    let root = s.root().display().to_string();
    for args in [
        vec!["--root", &root, "status", "--json"],
        vec!["--root", &root, "schema", "--json-schema"],
        vec!["--root", &root, "plan"],
    ] {
        // The read end is closed before stoke starts: its first write meets EPIPE.
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_stoke"))
            .args(&args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("run stoke");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("Broken pipe"), "{args:?}: {stderr}");
        assert_eq!(out.status.signal(), Some(13), "{args:?}: {:?}", out.status);
    }
}
