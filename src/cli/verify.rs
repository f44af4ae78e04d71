//! `stoke verify`: the image's acceptance checks, run now, for a build pipeline (the last
//! provisioner before `stoke clean`). The checks are those of the image's layers (the
//! instance's user-data plays no part in a bake); at boot the same checks run from the
//! merged configuration (modules/checks).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use stoke_api::{Module as _, ModuleError};
use stoke_checks::{CheckResult, Checks, ChecksReport, Severity};

use crate::app::App;
use crate::config;

pub fn run(
    app: &App,
    rt: &tokio::runtime::Runtime,
    junit: Option<&Path>,
    json: bool,
    layer: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let sources = config::image_sources(&app.paths.config())
        .with_context(|| format!("reading {}", app.paths.config_dir.display()))?;
    let only: Option<BTreeSet<String>> = match layer {
        Some(name) => Some(layer_checks(&sources, name)?),
        None => None,
    };
    let groups: Vec<Vec<config::Source>> = sources.into_iter().map(|s| vec![s]).collect();
    let mut loaded = config::Loaded::default();
    config::load_into(&mut loaded, &groups, &app.modules);
    if !loaded.errors.is_empty() {
        for e in &loaded.errors {
            eprintln!("{e}");
        }
        anyhow::bail!("the image's configuration has errors: checks not run");
    }
    let mut section = loaded.section(&["checks"]);
    if let (Some(only), Some(serde_json::Value::Object(checks))) =
        (&only, section.get_mut("checks"))
    {
        checks.retain(|name, _| only.contains(name));
    }
    let engine = loaded.engine();
    let ctx = app.image_context(&loaded, &engine, "checks", section);
    let outcome = rt.block_on(Checks { stage: None }.run(&ctx));
    let report = match &outcome {
        Ok(r) => r,
        Err(ModuleError::Partial { report, .. }) => report,
        Err(e) => anyhow::bail!("checks: {e}"),
    };
    let results: ChecksReport = serde_json::from_value(report.details.clone()).unwrap_or_default();
    if let Some(path) = junit {
        let xml = junit_xml(&results.checks, layer)?;
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        stoke_api::atomic_write_volatile(&path, xml.as_bytes(), 0o644)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        for r in &results.checks {
            let word = match (r.passed, r.severity) {
                (true, _) => "PASS",
                (false, Severity::Error) => "FAIL",
                (false, Severity::Warning) => "WARN",
            };
            println!("{word} {}: {} ({})", r.name, r.subject, r.found);
        }
        println!("{}", report.summary);
    }
    Ok(if outcome.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The names of the checks the layer `name` itself defines.
fn layer_checks(sources: &[config::Source], name: &str) -> anyhow::Result<BTreeSet<String>> {
    let stem = |s: &config::Source| {
        Path::new(&s.name)
            .file_stem()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let want = name.trim_end_matches(".yaml").trim_end_matches(".yml");
    let source = sources.iter().find(|s| stem(s) == want).with_context(|| {
        let names: Vec<String> = sources.iter().map(stem).collect();
        format!("no layer `{name}` (layers: {})", names.join(", "))
    })?;
    let doc =
        stoke_api::parse_yaml(&source.text).map_err(|e| anyhow::anyhow!("{}: {e}", source.name))?;
    Ok(doc
        .get("checks")
        .and_then(|c| c.as_object())
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default())
}

/// One test suite, one test case per check: a failed error check is a failure, a failed
/// warning check is skipped with its message (CI servers show it without failing the build).
fn junit_xml(results: &[CheckResult], layer: Option<&str>) -> anyhow::Result<String> {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let suite_name = match layer {
        Some(l) => format!("stoke checks ({l})"),
        None => "stoke checks".to_string(),
    };
    let mut suite = TestSuite::new(suite_name);
    let mut total = Duration::ZERO;
    for r in results {
        let status = match (r.passed, r.severity) {
            (true, _) => TestCaseStatus::success(),
            (false, Severity::Error) => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(r.found.clone()).set_type(r.kind.clone());
                s
            }
            (false, Severity::Warning) => {
                let mut s = TestCaseStatus::skipped();
                s.set_message(format!("warning: {}", r.found));
                s
            }
        };
        let time = Duration::from_millis(r.duration_ms);
        total += time;
        let mut case = TestCase::new(r.name.clone(), status);
        case.set_classname(format!("stoke.checks.{}", r.kind))
            .set_time(time)
            .set_system_out(format!("{}: {}", r.subject, r.found));
        suite.add_test_case(case);
    }
    suite.set_time(total);
    let mut report = Report::new("stoke verify");
    report.add_test_suite(suite);
    report.to_string().context("writing JUnit XML")
}
