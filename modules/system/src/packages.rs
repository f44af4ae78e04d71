//! cloud-init's `packages`, `package_update`, `package_upgrade` and
//! `package_reboot_if_required` (and their older `apt_update`, `apt_upgrade`,
//! `apt_reboot_if_required` spellings), once per instance in the final stage, after
//! `apt-sources` and `yum-repos`.
//!
//! The distribution's manager: `apt-get` (`DEBIAN_FRONTEND=noninteractive`, a wait
//! for the dpkg lock, the image's configuration files kept) or `dnf` (`yum` where
//! there is no dnf). The cache is refreshed when asked, or before an upgrade or an
//! install on apt (as cloud-init does). Each command is bounded
//! (`package_manager.timeout_seconds`), its output streamed to the journal and kept
//! in `/var/log/stoke/packages/`, its tail in status. A package that cannot be
//! installed fails the module with the manager's error; the boot goes on.
//! `package_reboot_if_required` schedules a reboot after stoke.target (as
//! `power_state` does) when `/var/run/reboot-required` exists after an upgrade or an
//! install.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use stoke_api::{
    Cmd, Context, Frequency, Module, ModuleError, ModuleSpec, Order, Report, Stage, config_spec,
    tools,
};

use crate::power::{self, PowerMode};
use crate::{Family, exists, open_root};

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default)]
pub struct PackagesConfig {
    /// Packages to install: `name`, `[name, version]`, or `{apt: [...]}` / `{yum: [...]}`.
    pub packages: Option<Vec<PackageEntry>>,
    /// Refresh the package lists first.
    pub package_update: Option<bool>,
    /// Upgrade every installed package.
    pub package_upgrade: Option<bool>,
    /// Reboot (after stoke.target) if an upgrade or install says one is needed.
    pub package_reboot_if_required: Option<bool>,
    /// cloud-init's older names for the three keys above.
    pub apt_update: Option<bool>,
    pub apt_upgrade: Option<bool>,
    pub apt_reboot_if_required: Option<bool>,
    /// stoke's bounds on the package manager's commands.
    pub package_manager: Option<ManagerSettings>,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum PackageEntry {
    Name(String),
    /// `[name, version]`.
    Versioned(Vec<String>),
    /// Per manager (`apt`, `yum`, `dnf`; `snap` is not supported).
    PerManager(BTreeMap<String, Vec<PackageEntry>>),
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ManagerSettings {
    /// Each command (update, upgrade, install) is killed after this long.
    pub timeout_seconds: u64,
    /// How long apt waits for another holder of the dpkg lock (unattended-upgrades).
    pub lock_timeout_seconds: u64,
}

impl Default for ManagerSettings {
    fn default() -> Self {
        ManagerSettings {
            timeout_seconds: 1800,
            lock_timeout_seconds: 300,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Manager {
    Apt,
    Dnf,
    Yum,
}

impl Manager {
    fn name(self) -> &'static str {
        match self {
            Manager::Apt => "apt",
            Manager::Dnf => "dnf",
            Manager::Yum => "yum",
        }
    }
}

pub struct Packages;

#[stoke_api::async_trait]
impl Module for Packages {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec {
            name: "packages",
            stage: Stage::Final,
            frequency: Frequency::PerInstance,
            after: &["apt-sources", "yum-repos"],
            needs_metadata: true,
            before_logins: false,
            timeout: Duration::from_secs(4 * 1800),
            config: config_spec::<PackagesConfig>(),
            order: Order::Normal,
        }
    }

    fn timeout_for(&self, config: &serde_json::Value) -> Duration {
        // Three commands at most (update, upgrade, install), each bounded.
        let cfg: PackagesConfig = serde_json::from_value(config.clone()).unwrap_or_default();
        let each = cfg.package_manager.unwrap_or_default().timeout_seconds;
        Duration::from_secs(each.saturating_mul(3).saturating_add(60))
    }

    async fn run(&self, ctx: &Context) -> Result<Report, ModuleError> {
        let cfg: PackagesConfig = ctx.config()?;
        let settings = cfg.package_manager.clone().unwrap_or_default();
        let update = cfg.package_update.or(cfg.apt_update).unwrap_or(false);
        let upgrade = cfg.package_upgrade.or(cfg.apt_upgrade).unwrap_or(false);
        let reboot = cfg
            .package_reboot_if_required
            .or(cfg.apt_reboot_if_required)
            .unwrap_or(false);
        let entries = cfg.packages.clone().unwrap_or_default();
        if !update && !upgrade && entries.is_empty() {
            return Ok(Report::new("no packages configured"));
        }
        let manager = detect(ctx)?;
        let names = package_args(&entries, manager).map_err(ModuleError::Invalid)?;
        let steps = steps(manager, update, upgrade, &names);
        let mut done = Vec::new();
        for (step, args) in steps {
            let cmd = command(ctx, manager, &settings, step, args)?;
            let out = ctx.system.run(&cmd).await;
            let record = |code: serde_json::Value, tail: String| json!({"step": step, "argv": cmd.display(), "exit": code, "output_tail": tail});
            match out {
                Ok(o) if o.success() => done.push(record(json!(o.code), o.tail(20))),
                Ok(o) => {
                    let tail = o.tail(20);
                    done.push(record(json!(o.code), tail.clone()));
                    let err_tail = o.stderr.trim().lines().rev().take(5).collect::<Vec<_>>();
                    let err_tail: Vec<&str> = err_tail.into_iter().rev().collect();
                    return Err(ModuleError::Partial {
                        message: format!(
                            "{} {step} failed ({}): {}",
                            manager.name(),
                            o.status_text(),
                            if err_tail.is_empty() {
                                tail
                            } else {
                                err_tail.join(" | ")
                            }
                        ),
                        report: Box::new(
                            Report::new(format!("{} {step} failed", manager.name()))
                                .with_details(json!({"manager": manager.name(), "steps": done})),
                        ),
                    });
                }
                Err(e) => {
                    return Err(ModuleError::Partial {
                        message: format!("{} {step}: {e}", manager.name()),
                        report: Box::new(
                            Report::new(format!("{} {step} failed", manager.name()))
                                .with_details(json!({"manager": manager.name(), "steps": done})),
                        ),
                    });
                }
            }
        }
        let mut details = json!({
            "manager": manager.name(),
            "packages": names,
            "steps": done,
        });
        let mut summary = format!(
            "{}{}{}",
            if update { "updated, " } else { "" },
            if upgrade { "upgraded, " } else { "" },
            crate::plural(names.len(), "package"),
        );
        if !ctx.system.executes() {
            summary = format!("recorded, not run: {summary}");
        }
        let changed = upgrade || !names.is_empty();
        if reboot && changed && exists(ctx, "/var/run/reboot-required") {
            let plan = power::Plan {
                unit: "stoke-package-reboot",
                what: "package_reboot_if_required",
                mode: PowerMode::Reboot,
                delay: "now".into(),
                message: Some("stoke: rebooting, as the package upgrade requires".into()),
                wait_secs: 30,
                condition: None,
            };
            let scheduled = power::schedule(ctx, &plan).await?;
            details["reboot"] = scheduled.details;
            summary.push_str("; reboot required: scheduled after stoke.target");
        }
        Ok(Report::new(summary).with_details(details))
    }
}

/// The manager of the root: apt on Debian, dnf (else yum) on the RHEL family.
fn detect(ctx: &Context) -> Result<Manager, ModuleError> {
    let dir = open_root(ctx)?;
    let has = |p: &str| exists(ctx, p);
    match Family::detect(&dir) {
        Family::Debian => Ok(Manager::Apt),
        _ if has("/usr/bin/dnf") => Ok(Manager::Dnf),
        _ if has("/usr/bin/yum") => Ok(Manager::Yum),
        _ if has("/usr/bin/apt-get") => Ok(Manager::Apt),
        _ => Err(ModuleError::Other(
            "packages: no package manager found in the root (apt-get, dnf or yum)".into(),
        )),
    }
}

/// Install arguments: `name=version` for apt, `name-version` for dnf/yum. Names are
/// checked so that none can pass for an option.
pub(crate) fn package_args(
    entries: &[PackageEntry],
    manager: Manager,
) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let label = format!("packages[{i}]");
        match entry {
            PackageEntry::Name(n) => out.push(checked(n, None, manager, &label)?),
            PackageEntry::Versioned(v) => match v.as_slice() {
                [n] => out.push(checked(n, None, manager, &label)?),
                [n, ver] => out.push(checked(n, Some(ver), manager, &label)?),
                _ => return Err(format!("{label}: `[name, version]`, not {} items", v.len())),
            },
            PackageEntry::PerManager(map) => {
                for (key, list) in map {
                    let applies = match key.as_str() {
                        "apt" => manager == Manager::Apt,
                        "yum" | "dnf" => manager != Manager::Apt,
                        "snap" => {
                            return Err(format!(
                                "{label}: snap packages are not supported by stoke"
                            ));
                        }
                        other => return Err(format!("{label}: unknown package manager `{other}`")),
                    };
                    if applies {
                        let mut inner = package_args(list, manager)
                            .map_err(|e| format!("{label}.{key}: {e}"))?;
                        out.append(&mut inner);
                    }
                }
            }
        }
    }
    Ok(out)
}

fn checked(
    name: &str,
    version: Option<&String>,
    manager: Manager,
    label: &str,
) -> Result<String, String> {
    let ok = |s: &str| {
        !s.is_empty()
            && !s.starts_with('-')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".+-_:~*".contains(c))
    };
    if !ok(name) {
        return Err(format!("{label}: `{name}` is not a package name"));
    }
    match version {
        None => Ok(name.to_string()),
        Some(v) if ok(v) => Ok(match manager {
            Manager::Apt => format!("{name}={v}"),
            _ => format!("{name}-{v}"),
        }),
        Some(v) => Err(format!("{label}: `{v}` is not a version")),
    }
}

/// The steps in order: (name, manager arguments).
pub(crate) fn steps(
    manager: Manager,
    update: bool,
    upgrade: bool,
    names: &[String],
) -> Vec<(&'static str, Vec<String>)> {
    let mut steps = Vec::new();
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    match manager {
        Manager::Apt => {
            // apt installs only from fresh lists: cloud-init updates before either.
            if update || upgrade || !names.is_empty() {
                steps.push(("update", s(&["update"])));
            }
            if upgrade {
                steps.push(("upgrade", s(&["dist-upgrade"])));
            }
        }
        Manager::Dnf | Manager::Yum => {
            if update {
                steps.push(("update", s(&["makecache"])));
            }
            if upgrade {
                steps.push(("upgrade", s(&["upgrade"])));
            }
        }
    }
    if !names.is_empty() {
        let mut args = s(&["install"]);
        args.extend(names.iter().cloned());
        steps.push(("install", args));
    }
    steps
}

fn command(
    ctx: &Context,
    manager: Manager,
    settings: &ManagerSettings,
    step: &str,
    args: Vec<String>,
) -> Result<Cmd, ModuleError> {
    let mut full: Vec<String> = Vec::new();
    let program = match manager {
        Manager::Apt => {
            full.extend([
                "-o".to_string(),
                format!("DPkg::Lock::Timeout={}", settings.lock_timeout_seconds),
                // The image's changed configuration files stay; new ones go beside them.
                "-o".into(),
                "Dpkg::Options::=--force-confold".into(),
                "-o".into(),
                "Dpkg::Options::=--force-confdef".into(),
                "--assume-yes".into(),
                "--quiet".into(),
            ]);
            ctx.tool(tools::APT_GET)
        }
        Manager::Dnf => {
            full.push("--assumeyes".into());
            ctx.tool(tools::DNF)
        }
        Manager::Yum => {
            full.push("--assumeyes".into());
            ctx.tool(tools::YUM)
        }
    };
    full.extend(args);
    let mut cmd = Cmd::new(program, full)
        .timeout(Duration::from_secs(settings.timeout_seconds))
        .stream_output()
        .output_log(ctx.open_log(format!("/var/log/stoke/packages/{step}.log"), false)?);
    if manager == Manager::Apt {
        cmd = cmd
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("APT_LISTCHANGES_FRONTEND", "none");
    }
    Ok(cmd)
}
