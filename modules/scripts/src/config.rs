//! The keys the script modules read: cloud-init's `bootcmd` and `runcmd`, and
//! stoke's own `scripts:` bounds.

use schemars::JsonSchema;
use serde::Deserialize;

/// One `bootcmd`/`runcmd` entry: an argv list (each word quoted for the shell) or a
/// line run by the shell as written.
#[derive(Clone, Debug, Deserialize, JsonSchema, PartialEq)]
#[serde(untagged)]
pub enum CommandLine {
    Argv(Vec<Scalar>),
    Line(Scalar),
}

/// A string, or a number or boolean YAML gave as one (`- [sleep, 5]`).
#[derive(Clone, Debug, Deserialize, JsonSchema, PartialEq)]
#[serde(untagged)]
pub enum Scalar {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    pub fn text(&self) -> String {
        match self {
            Scalar::Text(s) => s.clone(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default)]
pub struct BootcmdConfig {
    /// Commands run at every boot, before the system is configured (`INSTANCE_ID` is set).
    pub bootcmd: Option<Vec<CommandLine>>,
    /// Bounds and retry rule for every script stoke runs.
    pub scripts: Option<ScriptSettings>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default)]
pub struct FinalConfig {
    /// Commands run once per instance in the final stage, as one shell script.
    pub runcmd: Option<Vec<CommandLine>>,
    /// Bounds and retry rule for every script stoke runs.
    pub scripts: Option<ScriptSettings>,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ScriptSettings {
    /// Each final-stage script (runcmd, user-data scripts, script directories) is killed,
    /// with everything it started, after this long.
    pub timeout_seconds: u64,
    /// Each boothook and the bootcmd script is killed after this long.
    pub early_timeout_seconds: u64,
    /// Run a per-instance or per-once script again on a later boot when it failed. Off by
    /// default: a script that was started is never started again (scripts are rarely
    /// safe to run twice).
    pub retry_failed: bool,
}

impl Default for ScriptSettings {
    fn default() -> Self {
        ScriptSettings {
            timeout_seconds: 3600,
            early_timeout_seconds: 300,
            retry_failed: false,
        }
    }
}

/// `runcmd`/`bootcmd` as one `/bin/sh` script, as cloud-init writes it.
pub fn shell_script(lines: &[CommandLine]) -> String {
    let mut out = String::from("#!/bin/sh\n");
    for line in lines {
        match line {
            CommandLine::Line(s) => out.push_str(&s.text()),
            CommandLine::Argv(argv) => {
                let words: Vec<String> = argv.iter().map(|w| shell_quote(&w.text())).collect();
                out.push_str(&words.join(" "));
            }
        }
        out.push('\n');
    }
    out
}

pub use stoke_api::shell_quote;
