//! `stoke status --wait` that cannot hang: besides status.json, it asks systemd whether
//! stoke's last unit is still going to run this boot, so a Packer provisioner or a deploy
//! script waiting on a machine where stoke is masked, disabled or crashed gets an answer.

use std::collections::BTreeMap;
use std::time::Duration;

use stoke_api::{Cmd, System};

/// The unit whose end is the end of boot work.
pub const FINAL_UNIT: &str = "stoke-final.service";

/// What systemd says about [`FINAL_UNIT`] and the boot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Systemd {
    pub unit: BTreeMap<String, String>,
    /// The manager's `SystemState`: `initializing`/`starting` while the boot's jobs run.
    pub system_state: String,
}

/// Where the wait stands when status.json does not (yet) say the boot work is done.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Keep waiting (stoke is on its way, or systemd said nothing we can judge by).
    Wait,
    /// stoke is not going to run this boot (disabled, masked, a condition not met).
    WillNotRun(String),
    /// stoke's unit ran, or the boot's start-up ended, without stoke finishing.
    Ended(String),
}

impl Systemd {
    /// One look: two `systemctl show` calls through the System seam (the tools table may
    /// name another systemctl). Failures read as "no answer": waiting is then bounded by
    /// `--timeout` alone, as before.
    pub async fn ask(system: &dyn System, systemctl: &str) -> Systemd {
        // Bounded: a systemd that does not answer (D-Bus stalled) must not hang the wait.
        let show = |args: Vec<String>| Cmd::new(systemctl, args).timeout(Duration::from_secs(5));
        let unit = show(vec![
            "show".into(),
            "-p".into(),
            "ActiveState,LoadState,UnitFileState,ConditionResult,ConditionTimestamp".into(),
            FINAL_UNIT.into(),
        ]);
        let manager = show(vec!["show".into(), "-p".into(), "SystemState".into()]);
        let read = |out: Result<stoke_api::CmdOutput, stoke_api::SysError>| match out {
            Ok(o) if o.success() => properties(&o.stdout),
            _ => BTreeMap::new(),
        };
        let unit = read(system.run(&unit).await);
        let system_state = read(system.run(&manager).await)
            .remove("SystemState")
            .unwrap_or_default();
        Systemd { unit, system_state }
    }

    fn get(&self, key: &str) -> &str {
        self.unit.get(key).map_or("", String::as_str)
    }

    /// Judges the unit's state. Called only while status.json says stoke has not finished.
    pub fn verdict(&self) -> Verdict {
        let (active, load) = (self.get("ActiveState"), self.get("LoadState"));
        match load {
            "masked" => return Verdict::WillNotRun(format!("{FINAL_UNIT} is masked")),
            "not-found" => return Verdict::WillNotRun(format!("{FINAL_UNIT} is not installed")),
            _ => {}
        }
        match active {
            "failed" => return Verdict::Ended(format!("{FINAL_UNIT} failed")),
            // A oneshot with RemainAfterExit: active means its process has exited.
            "active" => return Verdict::Ended(format!("{FINAL_UNIT} exited")),
            "inactive" => {}
            // activating, deactivating, reloading, or no answer at all.
            _ => return Verdict::Wait,
        }
        if self.get("ConditionResult") == "no" && !self.get("ConditionTimestamp").is_empty() {
            return Verdict::WillNotRun(format!(
                "{FINAL_UNIT} was skipped: a condition is not met (stoke=disabled on the kernel \
                 command line, or /etc/stoke/disabled)"
            ));
        }
        if matches!(self.get("UnitFileState"), "disabled" | "masked") {
            return Verdict::WillNotRun(format!("{FINAL_UNIT} is not enabled"));
        }
        // The boot's start-up jobs are over and the unit never started: nothing will start it.
        if matches!(
            self.system_state.as_str(),
            "running" | "degraded" | "maintenance" | "stopping"
        ) {
            return Verdict::Ended(format!(
                "the boot's start-up ended (system {}) and {FINAL_UNIT} did not run",
                self.system_state
            ));
        }
        Verdict::Wait
    }
}

/// `Key=value` lines, as `systemctl show` prints them.
fn properties(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn systemd(unit: &str, system_state: &str) -> Systemd {
        Systemd {
            unit: properties(unit),
            system_state: system_state.into(),
        }
    }

    #[test]
    fn no_answer_means_wait() {
        assert_eq!(Systemd::default().verdict(), Verdict::Wait);
    }

    #[test]
    fn a_unit_on_its_way_is_waited_for() {
        for (unit, sys) in [
            (
                "ActiveState=inactive\nLoadState=loaded\nUnitFileState=enabled\n",
                "starting",
            ),
            (
                "ActiveState=activating\nLoadState=loaded\nUnitFileState=enabled\n",
                "running",
            ),
        ] {
            assert_eq!(systemd(unit, sys).verdict(), Verdict::Wait, "{unit} {sys}");
        }
    }

    #[test]
    fn units_that_will_not_run() {
        for (unit, why) in [
            ("LoadState=masked\nActiveState=inactive\n", "masked"),
            (
                "LoadState=not-found\nActiveState=inactive\n",
                "not installed",
            ),
            (
                "LoadState=loaded\nActiveState=inactive\nConditionResult=no\n\
                 ConditionTimestamp=Wed 2026-12-02 06:00:00 UTC\nUnitFileState=enabled\n",
                "condition",
            ),
            (
                "LoadState=loaded\nActiveState=inactive\nUnitFileState=disabled\n",
                "not enabled",
            ),
        ] {
            match systemd(unit, "starting").verdict() {
                Verdict::WillNotRun(w) => assert!(w.contains(why), "{w}"),
                other => panic!("{unit}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_boot_that_ended_without_stoke() {
        for (unit, sys, why) in [
            (
                "LoadState=loaded\nActiveState=failed\n",
                "starting",
                "failed",
            ),
            (
                "LoadState=loaded\nActiveState=inactive\nUnitFileState=enabled\n",
                "degraded",
                "did not run",
            ),
            (
                "LoadState=loaded\nActiveState=active\n",
                "running",
                "exited",
            ),
        ] {
            match systemd(unit, sys).verdict() {
                Verdict::Ended(w) => assert!(w.contains(why), "{w}"),
                other => panic!("{unit}: {other:?}"),
            }
        }
    }
}
