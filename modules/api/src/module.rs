use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{ConfigError, ConfigSpec, Context, SysError, TemplateError};

/// Boot stages, in order. A module runs in the earliest stage where what it needs exists.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    Local,
    Network,
    Final,
}

impl Stage {
    pub const ALL: [Stage; 3] = [Stage::Local, Stage::Network, Stage::Final];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Local => "local",
            Stage::Network => "network",
            Stage::Final => "final",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How often a module's work is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Frequency {
    /// Once for the life of the root filesystem (until `stoke clean`).
    Once,
    /// Once per instance id.
    PerInstance,
    /// Once per kernel boot (boot id).
    PerBoot,
}

impl Frequency {
    pub fn as_str(self) -> &'static str {
        match self {
            Frequency::Once => "once",
            Frequency::PerInstance => "per-instance",
            Frequency::PerBoot => "per-boot",
        }
    }
}

impl fmt::Display for Frequency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a module declares about itself.
pub struct ModuleSpec {
    pub name: &'static str,
    pub stage: Stage,
    pub frequency: Frequency,
    /// Modules that must finish (or be skipped as not due) before this one starts.
    pub after: &'static [&'static str],
    /// True when the module needs the instance's metadata; on a brand-new EC2
    /// instance such a module waits for the network stage.
    pub needs_metadata: bool,
    /// sshd and console logins must not start before this module has run (host
    /// keys, authorized keys). When it waits for a later stage, so do logins.
    pub before_logins: bool,
    /// Upper bound on one run; the runner cancels the module past it.
    pub timeout: Duration,
    pub config: ConfigSpec,
    /// Where the module runs among the others of its stage, beyond its `after` list.
    pub order: Order,
}

/// A module's place in its stage. Unlike `after`, an order holds whatever became of the
/// modules before: a failure there does not hold this one back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Order {
    /// Before every other module of the stage (the user's early commands: `bootcmd`,
    /// boothooks, before the system is configured).
    First,
    #[default]
    Normal,
    /// After the normal modules of the stage (the user's scripts, as cloud-init's
    /// `scripts_user` runs late).
    Late,
    /// After the user's scripts: the acceptance checks, which judge what the boot did.
    Checks,
    /// After the checks: the boot reports (`phone_home`, `report:`), which tell the fleet
    /// what the boot did, checks included.
    Report,
    /// After every other module of the stage (the final message, the power-state change).
    Last,
}

impl Order {
    /// A module starts only when no module of a lower rank in its stage is still to end.
    pub fn rank(self) -> u8 {
        match self {
            Order::First => 0,
            Order::Normal => 1,
            Order::Late => 2,
            Order::Checks => 3,
            Order::Report => 4,
            Order::Last => 5,
        }
    }
}

/// The result of a module's successful run, shown in `stoke status`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// One human line: what was done.
    pub summary: String,
    /// Structured facts for status and for modules that run after this one.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
    /// Warnings that did not stop the module (status becomes degraded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Template variables for the modules that run after this one (`hostname` publishes
    /// `hostname`, `fqdn`, ...): they see them in `Context::vars`, this boot and later ones.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
}

impl Report {
    pub fn new(summary: impl Into<String>) -> Self {
        Report {
            summary: summary.into(),
            ..Report::default()
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    pub fn with_var(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.vars.insert(name.into(), value.into());
        self
    }

    pub fn warn(&mut self, warning: impl Into<String>) {
        self.warnings.push(warning.into());
    }
}

/// Why a module failed. Each variant says what was being attempted.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error(transparent)]
    System(#[from] SysError),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{argv}` failed ({status}): {stderr}")]
    Command {
        argv: String,
        status: String,
        stderr: String,
    },
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("refused: {0}")]
    Refused(String),
    /// Part of the work failed, the rest was done: the module is failed, and its
    /// report (what each part did) is still recorded in status.
    #[error("{message}")]
    Partial {
        message: String,
        report: Box<Report>,
    },
    #[error("{0}")]
    Other(String),
}

impl ModuleError {
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModuleError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// A unit of boot work. Implementations are small: declare, then do the work
/// through the [`Context`] alone.
#[async_trait::async_trait]
pub trait Module: Send + Sync {
    fn spec(&self) -> ModuleSpec;

    /// The stage this module runs in given its configuration (e.g. puppet's
    /// non-blocking mode runs in `final`). Defaults to the declared stage.
    fn stage_for(&self, _config: &serde_json::Value) -> Stage {
        self.spec().stage
    }

    /// The default frequency given this module's configuration (e.g. a DNS
    /// record removed at every shutdown must be registered at every boot).
    /// The engine's `modules: {name: {frequency}}` override still wins.
    fn frequency_for(&self, _config: &serde_json::Value) -> Frequency {
        self.spec().frequency
    }

    /// The runner's bound on one run given this module's configuration (e.g.
    /// a configured puppet timeout). Defaults to the declared timeout; the
    /// engine's `modules: {name: {timeout_seconds}}` override still wins.
    fn timeout_for(&self, _config: &serde_json::Value) -> std::time::Duration {
        self.spec().timeout
    }

    /// Modules of `after` whose failure does not hold this one back: it still waits for
    /// them, and runs without their output when they failed (`mounts` after `volumes`: a
    /// refused EBS volume must not leave the instance store unmounted). Default: none,
    /// a failed dependency blocks.
    fn runs_despite(&self) -> &'static [&'static str] {
        &[]
    }

    /// Does the work. Must be idempotent: it may run again after a failure.
    async fn run(&self, ctx: &Context) -> Result<Report, ModuleError>;

    /// Extra words for `stoke plan`: what the module would do here and why.
    fn plan(&self, _ctx: &Context) -> Option<String> {
        None
    }

    /// `Some(why)` when this configuration and the user-data's scripts give the module
    /// nothing to do (e.g. no `route53:` section; no `bootcmd` and no boothook): the engine
    /// neither runs it nor calls it due, and says "nothing configured". A module that runs
    /// first in its stage and has nothing to do then holds no other module back.
    /// Default: a module always has work (hostname does with no config at all).
    fn nothing_configured(
        &self,
        _config: &serde_json::Value,
        _scripts: &[crate::UserScript],
    ) -> Option<String> {
        None
    }

    /// Work at shutdown (`stoke shutdown`), e.g. deregistering DNS. Default: none.
    async fn shutdown(&self, _ctx: &Context) -> Result<Option<Report>, ModuleError> {
        Ok(None)
    }
}
