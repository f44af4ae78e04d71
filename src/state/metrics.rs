//! `metrics: {textfile: PATH}`: the boot's numbers in the Prometheus text exposition format,
//! for node_exporter's textfile collector. Written atomically at the end of each stage, so a
//! scrape sees the last whole stage, never a half-written file.

use std::fmt::Write as _;
use std::path::Path;

use crate::paths::Paths;
use crate::state::status::{ModState, Overall, StageStatus, Status};

const STATES: [ModState; 8] = [
    ModState::Pending,
    ModState::Running,
    ModState::Ok,
    ModState::Failed,
    ModState::Skipped,
    ModState::Deferred,
    ModState::Blocked,
    ModState::Disabled,
];

const OVERALL: [&str; 4] = ["done", "degraded", "error", "running"];

/// One metric family: its `# HELP` and `# TYPE` lines, then its samples.
fn family(o: &mut String, name: &str, help: &str, samples: impl IntoIterator<Item = String>) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge");
    for s in samples {
        let _ = writeln!(o, "{name}{s}");
    }
}

/// The file's text for `status`. Every family is a gauge: each value is this boot's, set
/// anew at each stage (none counts up across boots).
pub fn render(status: &Status) -> String {
    let mut o = String::new();
    family(
        &mut o,
        "stoke_build_info",
        "stoke's version, as a label; the value is always 1.",
        [format!(
            "{{version=\"{}\"}} 1",
            esc(env!("CARGO_PKG_VERSION"))
        )],
    );
    let word = status.overall_word();
    family(
        &mut o,
        "stoke_status",
        "The boot's overall state: 1 for the current one (done, degraded, error, running).",
        OVERALL
            .iter()
            .map(|w| format!("{{status=\"{w}\"}} {}", u8::from(*w == word))),
    );
    family(
        &mut o,
        "stoke_status_code",
        "`stoke status`'s exit code: 0 done, 1 error, 2 degraded, 3 not finished.",
        [format!(" {}", status.overall() as u8)],
    );
    family(
        &mut o,
        "stoke_boot_done",
        "1 once the final stage has finished this boot.",
        [format!(" {}", u8::from(status.done))],
    );
    let work: f64 = status.stages.values().filter_map(|s| s.duration_ms).sum();
    family(
        &mut o,
        "stoke_boot_work_seconds",
        "Time stoke's stages took this boot, summed.",
        [format!(" {}", secs(work))],
    );
    type Pick = fn(&StageStatus) -> Option<f64>;
    let per_stage: [(&str, &str, Pick); 3] = [
        (
            "stoke_stage_duration_seconds",
            "How long each stage took (from its start to its end).",
            |s| s.duration_ms,
        ),
        (
            "stoke_stage_startup_seconds",
            "Process start-up before each stage (exec to the stage's start).",
            |s| s.startup_ms,
        ),
        (
            "stoke_stage_prepare_seconds",
            "Loading the configuration and finding the instance, inside each stage.",
            |s| s.prepare_ms,
        ),
    ];
    for (name, help, pick) in per_stage {
        family(
            &mut o,
            name,
            help,
            status.stages.iter().filter_map(|(stage, s)| {
                pick(s).map(|ms| format!("{{stage=\"{stage}\"}} {}", secs(ms)))
            }),
        );
    }
    family(
        &mut o,
        "stoke_module_duration_seconds",
        "How long each module that ran took.",
        status.modules.iter().filter_map(|(m, s)| {
            s.duration_ms.map(|ms| {
                format!(
                    "{{module=\"{}\",stage=\"{}\"}} {}",
                    esc(m),
                    s.stage,
                    secs(ms)
                )
            })
        }),
    );
    family(
        &mut o,
        "stoke_module_state",
        "Each module's outcome: 1 for its current state, 0 for the others.",
        status.modules.iter().flat_map(|(m, s)| {
            STATES.iter().map(move |st| {
                format!(
                    "{{module=\"{}\",stage=\"{}\",state=\"{}\"}} {}",
                    esc(m),
                    s.stage,
                    st.as_str(),
                    u8::from(s.state == *st)
                )
            })
        }),
    );
    o
}

/// Writes the file atomically; errors are the caller's to log (metrics never fail a boot).
pub fn write(paths: &Paths, path: &Path, status: &Status) -> std::io::Result<()> {
    paths.write(path, render(status).as_bytes(), 0o644, false)
}

fn secs(ms: f64) -> String {
    format!("{}", ms / 1000.0)
}

/// Label values escape `\`, `"` and newlines.
fn esc(s: &str) -> String {
    s.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// Keeps the exit-code mapping the help text states.
const _: () = assert!(Overall::NotFinished as u8 == 3);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::status::ModuleStatus;
    use stoke_api::{Frequency, Stage};

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let mut s = Status::default();
        s.done = true;
        s.stages.insert(
            Stage::Local,
            StageStatus {
                started_unix: 1.0,
                finished_unix: Some(2.0),
                duration_ms: Some(250.0),
                startup_ms: Some(10.0),
                main_ms: None,
                prepare_ms: Some(5.0),
                prepare_steps: Vec::new(),
                reruns: vec![],
            },
        );
        s.modules.insert(
            "we\"ird".into(),
            ModuleStatus {
                stage: Stage::Local,
                frequency: Frequency::PerBoot,
                state: ModState::Failed,
                reason: String::new(),
                summary: String::new(),
                error: None,
                warnings: vec![],
                started_unix: Some(1.1),
                duration_ms: Some(12.5),
                details: serde_json::Value::Null,
                background: None,
                before_metadata: false,
            },
        );
        let text = render(&s);
        let mut current = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                current = rest.split(' ').next().unwrap_or("").to_string();
                continue;
            }
            if line.starts_with("# TYPE ") {
                assert!(line.starts_with(&format!("# TYPE {current} ")), "{line}");
                continue;
            }
            assert!(line.starts_with(&current), "{line} outside {current}");
        }
        assert!(text.contains("stoke_stage_duration_seconds{stage=\"local\"} 0.25\n"));
        assert!(text.contains(
            "stoke_module_state{module=\"we\\\"ird\",stage=\"local\",state=\"failed\"} 1\n"
        ));
        assert!(text.contains("stoke_status{status=\"error\"} 1\n"));
        assert!(text.contains("stoke_status_code 1\n"));
    }
}
