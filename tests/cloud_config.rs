//! cloud-config fidelity: documents written for cloud-init, read as cloud-init reads them.
//! Each file in tests/fixtures/cloud-config/ says what must come of it (`# expect-exit:`,
//! `# expect-warning:`, `# expect-error:`) and is checked through `stoke schema`, which reads a
//! user-data exactly as `run` does; a few are also run in a sandbox to see they apply.

#[path = "support/sandbox.rs"]
mod sandbox;

use std::path::{Path, PathBuf};
use std::process::Command;

use sandbox::Sandbox;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cloud-config")
}

struct Outcome {
    code: i32,
    warnings: Vec<String>,
    errors: Vec<String>,
    stdout: String,
}

fn schema(args: &[&str]) -> Outcome {
    let out = Command::new(env!("CARGO_BIN_EXE_stoke"))
        .arg("schema")
        .args(args)
        .output()
        .expect("run stoke schema");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut warnings = Vec::new();
    let mut errors = Vec::new();
    for line in stdout.lines() {
        if let Some(w) = line.strip_prefix("warning: ") {
            warnings.push(w.to_string());
        } else if !line.ends_with(": valid") && !line.starts_with("script: ") {
            errors.push(line.to_string());
        }
    }
    Outcome {
        code: out.status.code().unwrap_or(-1),
        warnings,
        errors,
        stdout,
    }
}

#[test]
fn every_fixture_comes_out_as_it_says() {
    let mut seen = 0;
    let mut entries: Vec<_> = std::fs::read_dir(fixtures())
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    entries.sort();
    for path in entries {
        let text = std::fs::read_to_string(&path).expect("read");
        let name = path.display().to_string();
        let expect = |tag: &str| -> Vec<String> {
            text.lines()
                .filter_map(|l| l.strip_prefix(&format!("# expect-{tag}: ")))
                .map(str::to_string)
                .collect()
        };
        let code: i32 = expect("exit")
            .first()
            .unwrap_or_else(|| panic!("{name}: no `# expect-exit:` line"))
            .parse()
            .expect("exit code");
        let got = schema(&[&name]);
        assert_eq!(got.code, code, "{name}:\n{}", got.stdout);
        for (tag, lines) in [("warning", &got.warnings), ("error", &got.errors)] {
            let wanted = expect(tag);
            for want in &wanted {
                assert!(
                    lines.iter().any(|l| l.contains(want.as_str())),
                    "{name}: no {tag} containing {want:?}:\n{}",
                    got.stdout
                );
            }
            if tag == "error" && code == 0 {
                assert!(got.errors.is_empty(), "{name}:\n{}", got.stdout);
            }
        }
        // Never the parser library's own advice, which no user can act on.
        assert!(!got.stdout.contains("Options"), "{name}:\n{}", got.stdout);
        seen += 1;
    }
    assert!(seen >= 8, "only {seen} fixtures");
}

#[test]
fn mime_and_gzip_user_data_are_checked_as_run_reads_them() {
    let mime = fixtures().join("mime.txt");
    let got = schema(&[mime.to_str().expect("utf-8 path")]);
    assert_eq!(got.code, 0, "{}", got.stdout);
    assert!(
        got.stdout
            .contains("script: setup.sh (script, per-instance)"),
        "{}",
        got.stdout
    );
    // The same user-data gzipped, under a name that says nothing.
    let dir = tempfile::tempdir().expect("tempdir");
    let gz = dir.path().join("blob");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut enc, &std::fs::read(&mime).expect("read")).expect("gzip");
    std::fs::write(&gz, enc.finish().expect("gzip")).expect("write");
    let got = schema(&[gz.to_str().expect("utf-8 path")]);
    assert_eq!(got.code, 0, "{}", got.stdout);
    assert!(got.stdout.contains("script: setup.sh"), "{}", got.stdout);
    // A plain YAML file is an image config unless told otherwise. As a user-data it is no
    // cloud-config (no `#cloud-config` line): cloud-init ignores it, and so does `run`.
    let plain = dir.path().join("plain.yaml");
    std::fs::write(&plain, "hostname: web-1\nrunkmd: [x]\n").expect("write");
    let got = schema(&[plain.to_str().expect("utf-8 path")]);
    assert_eq!(got.code, 1, "{}", got.stdout);
    assert!(
        got.stdout.contains("did you mean `runcmd`?"),
        "{}",
        got.stdout
    );
    let got = schema(&["--user-data", plain.to_str().expect("utf-8 path")]);
    assert_eq!(got.code, 0, "{}", got.stdout);
    assert!(
        got.warnings
            .iter()
            .any(|w| w.contains("text/plain is not supported")),
        "{}",
        got.stdout
    );
}

#[test]
fn the_compatibility_table_in_the_docs_is_the_one_the_code_uses() {
    let got = schema(&["--cloud-init"]);
    assert_eq!(got.code, 0);
    let table = got.stdout;
    for (key, row) in [
        (
            "runcmd",
            "| `runcmd` | supported, different meaning | scripts |",
        ),
        ("chef", "| `chef` | warned and ignored | | |"),
        ("ssh", "| `ssh` |"),
        ("timezone", "| `timezone` | supported | timezone | |"),
    ] {
        assert!(table.contains(row), "{key}: {table}");
    }
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md"),
    )
    .expect("docs/configuration.md");
    let begin = "<!-- cloud-init table: begin (stoke schema --cloud-init) -->\n";
    let end = "<!-- cloud-init table: end -->";
    let in_doc = doc
        .split_once(begin)
        .and_then(|(_, rest)| rest.split_once(end))
        .map(|(t, _)| t)
        .expect("docs/configuration.md has the table between its markers");
    assert!(
        in_doc == table,
        "docs/configuration.md's cloud-init table is out of date: paste `stoke schema --cloud-init` \
         between its markers"
    );
}

#[test]
fn valid_cloud_init_input_applies_in_a_run() {
    // Repeated keys, keys stoke lacks and an unusable users entry: warnings, and the rest applies.
    let ud = "#cloud-config\nhostname: first\nrpi: {interfaces: {spi: true}}\nssh:\n  \
              emit_keys_to_console: false\nhostname: web-7\nusers:\n  - default\n  - 42\n";
    let sb = Sandbox::nocloud("i-fidelity", ud);
    let run = sb.run_all();
    assert_eq!(run.code, 2, "degraded by its warnings: {}", run.stderr);
    assert_eq!(
        sb.read("/etc/hostname"),
        "web-7\n",
        "the last `hostname` wins"
    );
    let status = sb.status();
    let warnings = status["warnings"].to_string();
    for w in [
        "`hostname` is given twice",
        "`rpi` is a cloud-init key",
        "users entry 2 ignored",
    ] {
        assert!(warnings.contains(w), "{w}: {warnings}");
    }
    assert!(
        status["errors"].as_array().is_none_or(Vec::is_empty),
        "{status}"
    );
    // plan agrees with run: nothing rejected, exit 0; with a typo it exits 2 (degraded).
    assert_eq!(sb.stoke(&["plan"]).code, 0);
    sb.seed("i-fidelity", "#cloud-config\nhostnme: x\n");
    let plan = sb.stoke(&["plan"]);
    assert_eq!(plan.code, 2, "{}", plan.stdout);
    assert!(
        plan.stdout.contains("did you mean `hostname`?"),
        "{}",
        plan.stdout
    );
}
