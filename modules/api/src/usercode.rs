//! User code carried by user-data that is not configuration: scripts and
//! boothooks, in the order they appeared, and what running one left behind.
//! The engine decodes user-data; the scripts module runs what is here.

use serde::{Deserialize, Serialize};

use crate::Frequency;

/// One script or boothook from user-data.
#[derive(Clone, Debug, PartialEq)]
pub struct UserScript {
    /// A file name: the MIME part's `filename` when it is a plain name, else `part-NNN`.
    pub name: String,
    pub kind: ScriptKind,
    /// The body (UTF-8 not required: it is written to a file and executed).
    pub content: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScriptKind {
    /// `#cloud-boothook` / `text/cloud-boothook`: every boot, before the system is configured.
    Boothook,
    /// `#!` / `text/x-shellscript[-per-boot|-per-instance|-per-once]`, in the final stage.
    Script(Frequency),
}

/// What became of one script or command list, as `stoke status` shows it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ScriptRun {
    pub name: String,
    /// Where it came from: "bootcmd", "boothook", "runcmd", "user-data",
    /// "per-boot", "per-instance", "per-once".
    pub source: String,
    pub frequency: Option<Frequency>,
    pub outcome: ScriptOutcome,
    /// Exit code, when it ran to its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_unix: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// Why it did not run, or how it failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
    /// The last lines of its output.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output_tail: String,
    /// The whole output (instance path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ScriptOutcome {
    Ok,
    Failed,
    TimedOut,
    /// Not run: not due (already started at its frequency), or only recorded (sandbox).
    #[default]
    Skipped,
    Recorded,
}

impl ScriptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ScriptOutcome::Ok => "ok",
            ScriptOutcome::Failed => "failed",
            ScriptOutcome::TimedOut => "timed-out",
            ScriptOutcome::Skipped => "skipped",
            ScriptOutcome::Recorded => "recorded",
        }
    }
}

/// The scripts a module ran, in its report's details (`{"scripts": [...]}`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ScriptsReport {
    pub scripts: Vec<ScriptRun>,
}

impl ScriptsReport {
    /// The scripts in a module's details, when it reported any.
    pub fn from_details(details: &serde_json::Value) -> Option<ScriptsReport> {
        details.get("scripts")?;
        serde_json::from_value(details.clone()).ok()
    }
}
