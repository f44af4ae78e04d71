//! cloud-init's `timezone`: `/etc/localtime` made a link into the root's zoneinfo
//! database, `/etc/timezone` written on Debian-family systems (and wherever it
//! already exists), `ZONE=` updated in an existing `/etc/sysconfig/clock`. The zone
//! must be a TZif file of the root's `/usr/share/zoneinfo`: a typo is an error, and
//! nothing is changed.

use std::path::Path;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use stoke_api::{
    Context, Frequency, Module, ModuleError, ModuleSpec, Order, Report, RootDir, Stage, config_spec,
};

use crate::{Family, open_root, read_text, write_file};

const ZONEINFO: &str = "/usr/share/zoneinfo";

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default)]
pub struct TimezoneConfig {
    /// The zone, as named in the zoneinfo database (`Europe/Paris`, `UTC`).
    pub timezone: Option<String>,
}

pub struct Timezone;

#[stoke_api::async_trait]
impl Module for Timezone {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec {
            name: "timezone",
            stage: Stage::Network,
            frequency: Frequency::PerInstance,
            after: &[],
            needs_metadata: true,
            before_logins: false,
            timeout: Duration::from_secs(30),
            config: config_spec::<TimezoneConfig>(),
            order: Order::Normal,
        }
    }

    async fn run(&self, ctx: &Context) -> Result<Report, ModuleError> {
        let cfg: TimezoneConfig = ctx.config()?;
        let Some(tz) = cfg.timezone.as_deref().map(str::trim) else {
            return Ok(Report::new("no timezone configured"));
        };
        let dir = open_root(ctx)?;
        check_zone(&dir, tz).map_err(ModuleError::Invalid)?;
        let family = Family::detect(&dir);
        let mut written = Vec::new();
        let etc_timezone = family == Family::Debian || crate::exists(ctx, "/etc/timezone");
        if etc_timezone {
            write_file(
                ctx,
                &dir,
                "/etc/timezone",
                format!("{tz}\n").as_bytes(),
                0o644,
            )
            .map_err(ModuleError::Other)?;
            written.push("/etc/timezone");
        }
        if let Some(clock) = read_text(&dir, "/etc/sysconfig/clock").map_err(ModuleError::Other)? {
            write_file(
                ctx,
                &dir,
                "/etc/sysconfig/clock",
                set_zone_line(&clock, tz).as_bytes(),
                0o644,
            )
            .map_err(ModuleError::Other)?;
            written.push("/etc/sysconfig/clock");
        }
        // Relative, as systemd's timedated makes it: still right when the root is mounted elsewhere.
        let target = format!("..{ZONEINFO}/{tz}");
        dir.create_dir_all(Path::new("/etc"), 0o755)
            .map_err(|e| ModuleError::io("creating", ctx.host_path("/etc"), e))?;
        dir.symlink_atomic(Path::new("/etc/localtime"), Path::new(&target))
            .map_err(|e| ModuleError::io("linking", ctx.host_path("/etc/localtime"), e))?;
        written.push("/etc/localtime");
        Ok(Report::new(format!("timezone {tz}")).with_details(json!({
            "timezone": tz,
            "localtime": target,
            "written": written,
        })))
    }

    fn plan(&self, ctx: &Context) -> Option<String> {
        let cfg: TimezoneConfig = ctx.config().ok()?;
        let tz = cfg.timezone?;
        let dir = RootDir::open(&ctx.root).ok()?;
        Some(match check_zone(&dir, tz.trim()) {
            Ok(()) => format!("would set the timezone to {}", tz.trim()),
            Err(e) => format!("would fail: {e}"),
        })
    }
}

/// The zone names a TZif file under the root's zoneinfo; the name cannot climb out of it.
pub(crate) fn check_zone(dir: &RootDir, tz: &str) -> Result<(), String> {
    let well_formed = !tz.is_empty()
        && !tz.starts_with('/')
        && tz
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
        && tz
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_+-".contains(c));
    if !well_formed {
        return Err(format!(
            "timezone `{tz}`: not a zone name (like `Europe/Paris` or `UTC`)"
        ));
    }
    let file = format!("{ZONEINFO}/{tz}");
    match dir.read_regular(Path::new(&file), 1024 * 1024) {
        Ok(Some(data)) if data.starts_with(b"TZif") => Ok(()),
        Ok(Some(_)) => Err(format!(
            "timezone `{tz}`: {file} is not a zoneinfo (TZif) file"
        )),
        Ok(None) => Err(format!(
            "timezone `{tz}`: unknown zone (no {file} in the root; is the tzdata package installed?)"
        )),
        Err(e) => Err(format!("timezone `{tz}`: reading {file}: {e}")),
    }
}

/// `/etc/sysconfig/clock` with its `ZONE=` line set (added if missing).
fn set_zone_line(text: &str, tz: &str) -> String {
    let mut out = String::new();
    let mut done = false;
    for line in text.lines() {
        if line.trim_start().starts_with("ZONE=") {
            if !done {
                out.push_str(&format!("ZONE=\"{tz}\"\n"));
                done = true;
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !done {
        out.push_str(&format!("ZONE=\"{tz}\"\n"));
    }
    out
}
