//! cloud-init's `final_message`: one message on the console (and in the journal and
//! status) at the end of the final stage, every boot. cloud-init's `$UPTIME`,
//! `$TIMESTAMP`, `$DATASOURCE` and `$VERSION` (also as `${NAME}`), and stoke's
//! `{{ var }}` template variables (hostname, instance_id, region, ...).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use stoke_api::{
    Context, Frequency, Module, ModuleError, ModuleSpec, Order, Report, Stage, config_spec, render,
};

use crate::open_root;

pub const DEFAULT_MESSAGE: &str =
    "stoke v. $VERSION finished at $TIMESTAMP. Datasource $DATASOURCE. Up $UPTIME seconds";

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default)]
pub struct FinalMessageConfig {
    /// The message; default "stoke v. $VERSION finished at $TIMESTAMP. Datasource $DATASOURCE. Up $UPTIME seconds".
    pub final_message: Option<String>,
}

pub struct FinalMessage;

#[stoke_api::async_trait]
impl Module for FinalMessage {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec {
            name: "final-message",
            stage: Stage::Final,
            // cloud-init's final_message runs every boot.
            frequency: Frequency::PerBoot,
            // For `{{ hostname }}`, `{{ fqdn }}`: the engine gives a module the outputs
            // of the modules it runs after (hostname runs in an earlier stage).
            after: &["hostname"],
            needs_metadata: true,
            before_logins: false,
            timeout: Duration::from_secs(10),
            config: config_spec::<FinalMessageConfig>(),
            // With the user's scripts, after the stage's other modules.
            order: Order::Last,
        }
    }

    async fn run(&self, ctx: &Context) -> Result<Report, ModuleError> {
        let cfg: FinalMessageConfig = ctx.config()?;
        let template = cfg.final_message.as_deref().unwrap_or(DEFAULT_MESSAGE);
        let uptime = read_uptime(ctx).unwrap_or_else(|| "unknown".into());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let cloud_vars = BTreeMap::from([
            ("UPTIME".to_string(), uptime),
            ("TIMESTAMP".to_string(), rfc2822(now)),
            ("DATASOURCE".to_string(), ctx.instance.datasource.clone()),
            ("VERSION".to_string(), env!("CARGO_PKG_VERSION").to_string()),
        ]);
        let text = render(&dollar_vars(template, &cloud_vars), &ctx.vars)?;
        let mut line = text.trim_end().to_string();
        line.push('\n');
        let mut report = Report::new(text.trim_end().to_string())
            .with_details(json!({ "message": text.trim_end() }));
        // The message is in status either way; a console that cannot be written is a warning.
        if let Err(e) = ctx.system.console(&line) {
            report.warn(format!("writing to the console: {e}"));
        }
        Ok(report)
    }
}

/// Whole seconds since boot, as cloud-init gives them (`/proc/uptime`'s first field).
fn read_uptime(ctx: &Context) -> Option<String> {
    let dir = open_root(ctx).ok()?;
    let bytes = dir.read_regular(Path::new("/proc/uptime"), 4096).ok()??;
    let text = String::from_utf8(bytes).ok()?;
    let first = text.split_whitespace().next()?;
    first.parse::<f64>().ok().map(|_| first.to_string())
}

/// `$NAME` and `${NAME}` replaced from `vars`; any other `$` text is left as written.
pub(crate) fn dollar_vars(template: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, len) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        match vars.get(name) {
            Some(v) if len > 0 => {
                out.push_str(v);
                rest = &after[len..];
            }
            _ => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `Tue, 03 Mar 2026 10:04:05 +0000` (RFC 2822, UTC) from Unix seconds.
pub(crate) fn rfc2822(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = stoke_api::civil_from_days(days as i64);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        WEEKDAYS[(days % 7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
