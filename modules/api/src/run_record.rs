//! The record of one command run, written by one process and read by others: `stoke
//! exec-record` around work stoke does not wait for (a background Puppet run), a module's
//! blocking run, `stoke status`. One type, so that writer and readers cannot disagree.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Where a module's background run is recorded, in its state directory.
pub const BACKGROUND_FILE: &str = "background.json";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Running,
    Succeeded,
    Failed,
    /// Said "running", but its process is gone or it was another boot's (power loss, kill).
    Interrupted,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub state: RunState,
    /// The recording process (the unit's main process under systemd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    #[serde(default)]
    pub started_unix: u64,
    #[serde(default)]
    pub argv: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_unix: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Exit code; absent when killed by a signal, timed out, never started or still running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// What the exit code means for this command ("changes applied").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meaning: Option<String>,
    /// Why it could not be started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The last output lines (stdout and stderr as they came).
    #[serde(default)]
    pub tail: Vec<String>,
}

impl RunRecord {
    pub fn running(argv: Vec<String>, pid: Option<u32>, boot_id: Option<String>) -> Self {
        RunRecord {
            state: RunState::Running,
            pid,
            boot_id,
            started_unix: unix_now(),
            argv,
            finished_unix: None,
            duration_ms: None,
            code: None,
            signal: None,
            meaning: None,
            error: None,
            tail: Vec::new(),
        }
    }

    /// Ends the record: state, exit code, what it means, how long it took.
    pub fn finish(
        &mut self,
        ok: bool,
        code: Option<i32>,
        meaning: &str,
        duration_ms: u64,
        tail: Vec<String>,
    ) {
        self.state = if ok {
            RunState::Succeeded
        } else {
            RunState::Failed
        };
        self.code = code;
        self.meaning = Some(meaning.to_string());
        self.finished_unix = Some(unix_now());
        self.duration_ms = Some(duration_ms);
        self.tail = tail;
    }

    /// The record in `path`; None when there is none or it does not parse (a torn or foreign
    /// file is no record).
    pub fn read(path: &Path) -> Option<RunRecord> {
        let text = crate::read_capped(path, 1 << 20).ok()??;
        Self::parse(&text)
    }

    /// The record in `text`; None when it does not parse.
    pub fn parse(text: &[u8]) -> Option<RunRecord> {
        serde_json::from_slice(text).ok()
    }

    /// The record as a file holds it.
    pub fn to_json(&self) -> std::io::Result<Vec<u8>> {
        let mut text = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        text.push(b'\n');
        Ok(text)
    }

    /// The record as it stands now: one saying "running" is believed only for this boot
    /// (`boot_id`) while `alive(pid)`; otherwise the run was interrupted.
    pub fn as_of_now(mut self, boot_id: Option<&str>, alive: impl Fn(u32) -> bool) -> Self {
        if self.state == RunState::Running {
            let same_boot = match (self.boot_id.as_deref(), boot_id) {
                (Some(then), Some(now)) => then == now,
                _ => true,
            };
            if !(same_boot && self.pid.is_some_and(alive)) {
                self.state = RunState::Interrupted;
            }
        }
        self
    }

    /// One line for `stoke status`: state, exit code and its meaning, duration, pid.
    pub fn describe(&self) -> String {
        let mut out = match self.state {
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Interrupted => "interrupted",
        }
        .to_string();
        match (self.code, self.meaning.as_deref()) {
            (Some(code), Some(m)) => out.push_str(&format!(" (exit {code}: {m})")),
            (Some(code), None) => out.push_str(&format!(" (exit {code})")),
            (None, Some(m)) => out.push_str(&format!(" ({m})")),
            (None, None) => {}
        }
        if let Some(ms) = self.duration_ms {
            out.push_str(&format!(" in {:.1} s", ms as f64 / 1000.0));
        }
        if let Some(pid) = self.pid {
            out.push_str(&format!(", pid {pid}"));
        }
        if let Some(e) = &self.error {
            out.push_str(&format!(": {e}"));
        }
        out
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_record_is_believed_only_for_this_boot_while_its_process_lives() {
        let rec = RunRecord::running(vec!["puppet".into()], Some(42), Some("b1".into()));
        let alive = |pid| pid == 42;
        assert_eq!(
            rec.clone().as_of_now(Some("b1"), alive).state,
            RunState::Running
        );
        assert_eq!(
            rec.clone().as_of_now(Some("b2"), alive).state,
            RunState::Interrupted
        );
        assert_eq!(
            rec.clone().as_of_now(Some("b1"), |_| false).state,
            RunState::Interrupted
        );
        assert!(rec.as_of_now(Some("b1"), alive).describe() == "running, pid 42");
    }

    #[test]
    fn a_finished_record_round_trips_and_says_its_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(BACKGROUND_FILE);
        let mut rec = RunRecord::running(vec!["puppet".into()], Some(1), None);
        rec.finish(
            true,
            Some(2),
            "changes applied",
            1500,
            vec!["Notice".into()],
        );
        std::fs::write(&path, rec.to_json().unwrap()).unwrap();
        let back = RunRecord::read(&path).unwrap();
        assert_eq!(back, rec);
        assert_eq!(
            back.describe(),
            "succeeded (exit 2: changes applied) in 1.5 s, pid 1"
        );
        let line = |json: &str| serde_json::from_str::<RunRecord>(json).unwrap().describe();
        assert_eq!(
            line(
                r#"{"state": "failed", "signal": 9, "meaning": "killed by signal 9", "duration_ms": 100}"#
            ),
            "failed (killed by signal 9) in 0.1 s"
        );
        assert_eq!(
            line(
                r#"{"state": "failed", "meaning": "command not found", "error": "cannot start `x`"}"#
            ),
            "failed (command not found): cannot start `x`"
        );
        std::fs::write(&path, "{\"state\": \"bogus\"}").unwrap();
        assert_eq!(
            RunRecord::read(&path),
            None,
            "a foreign record is no record"
        );
    }
}
