use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// An external command, run through [`System::run`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
    /// The command is killed after this long.
    #[serde(with = "duration_secs")]
    pub timeout: Duration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<(String, String)>,
    /// Log each output line as it arrives (long runs such as puppet).
    #[serde(default)]
    pub stream_output: bool,
    /// Start from an empty environment (only `env` is set): user scripts get a
    /// documented environment, not whatever stoke's own unit happened to have.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clean_env: bool,
    /// Also write stdout and stderr, as they come, to this log (at most [`OUTPUT_LOG_MAX`]
    /// bytes), and keep only the last [`OUTPUT_TAIL_MAX`] bytes of each stream in
    /// [`CmdOutput`]: scripts may print for an hour. Recorded as its path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_log: Option<OutputLog>,
}

/// A log file a command's output goes to: its path (for messages and records) and, when
/// commands really run, the file itself, already opened (inside the root, by
/// [`crate::Context::open_log`]): the `System` writes to that descriptor and never opens the
/// path again, so nothing swapped in on the way after the check is followed.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OutputLog {
    path: PathBuf,
    #[serde(skip)]
    file: Option<std::sync::Arc<File>>,
}

impl OutputLog {
    /// A log that was opened: `path` names it in messages.
    pub fn opened(path: impl Into<PathBuf>, file: File) -> Self {
        OutputLog {
            path: path.into(),
            file: Some(std::sync::Arc::new(file)),
        }
    }

    /// A log only named (commands are recorded, not run): nothing is opened.
    pub fn named(path: impl Into<PathBuf>) -> Self {
        OutputLog {
            path: path.into(),
            file: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The opened file, if any (one more descriptor for it).
    pub fn file(&self) -> Option<std::io::Result<File>> {
        self.file.as_ref().map(|f| f.try_clone())
    }
}

/// Logs compare by path: the descriptor is how it is written, not what it is.
impl PartialEq for OutputLog {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
    }
}

/// Most bytes a command's [`Cmd::output_log`] file holds; the rest is cut with a note.
pub const OUTPUT_LOG_MAX: u64 = 10 * 1024 * 1024;
/// Most bytes of each stream kept in memory when the output goes to a log file.
pub const OUTPUT_TAIL_MAX: usize = 16 * 1024;

impl Cmd {
    pub fn new<I, S>(program: impl Into<String>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Cmd {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            timeout: Duration::from_secs(60),
            stdin: None,
            env: Vec::new(),
            stream_output: false,
            clean_env: false,
            output_log: None,
        }
    }

    pub fn clean_env(mut self) -> Self {
        self.clean_env = true;
        self
    }

    pub fn output_log(mut self, log: OutputLog) -> Self {
        self.output_log = Some(log);
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn stdin(mut self, input: impl Into<String>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn stream_output(mut self) -> Self {
        self.stream_output = true;
        self
    }

    /// The command line as one shell-like string, for logs and errors.
    pub fn display(&self) -> String {
        std::iter::once(&self.program)
            .chain(self.args.iter())
            .map(|a| {
                if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'') {
                    format!("'{}'", a.replace('\'', r"'\''"))
                } else {
                    a.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Quotes a word for `sh` (single quotes, `'` as `'\''`), leaving plainly safe words as they
/// are: the one quoting rule for scripts stoke writes (runcmd, bootcmd, power-state).
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./-_".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// What a finished command left behind.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CmdOutput {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    pub fn ok(stdout: impl Into<String>) -> Self {
        CmdOutput {
            code: Some(0),
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }

    pub fn failed(code: i32, stderr: impl Into<String>) -> Self {
        CmdOutput {
            code: Some(code),
            stdout: String::new(),
            stderr: stderr.into(),
        }
    }

    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The last `max_lines` lines of stdout and stderr together, for status.
    pub fn tail(&self, max_lines: usize) -> String {
        let mut lines: Vec<&str> = self.stdout.lines().chain(self.stderr.lines()).collect();
        if lines.len() > max_lines {
            lines.drain(..lines.len() - max_lines);
        }
        lines.join("\n")
    }

    pub fn status_text(&self) -> String {
        match self.code {
            Some(c) => format!("exit {c}"),
            None => "killed by signal".to_string(),
        }
    }

    /// Turns a non-zero exit into [`crate::ModuleError::Command`].
    pub fn check(self, cmd: &Cmd) -> Result<CmdOutput, crate::ModuleError> {
        if self.success() {
            Ok(self)
        } else {
            Err(crate::ModuleError::Command {
                argv: cmd.display(),
                status: self.status_text(),
                stderr: self.stderr.trim().to_string(),
            })
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MountRequest {
    /// What to mount: a device path (host path) or e.g. `UUID=...` resolved by the caller.
    pub source: String,
    /// Host path of the mount point.
    pub target: PathBuf,
    pub fstype: String,
    /// Comma-separated mount options, as in fstab (fstab-only options are ignored by the kernel call).
    pub options: String,
}

/// One thing a [`System`] was asked to do, as recorded by the sandbox and the fake.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    Run { argv: Vec<String> },
    SpawnDetached { argv: Vec<String>, log: PathBuf },
    Sethostname { name: String },
    Mount(MountRequest),
    Umount { target: PathBuf },
    Chown { path: PathBuf, uid: u32, gid: u32 },
    Console { text: String },
}

#[derive(Debug, thiserror::Error)]
pub enum SysError {
    #[error("cannot start `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{argv}` timed out after {after:?} and was killed")]
    Timeout { argv: String, after: Duration },
    #[error("{call} {what}: {source}")]
    Call {
        call: &'static str,
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Every command and syscall a module makes. `Host` does them; the sandbox
/// (`--root DIR`) records them; the fake (feature `fake`) records and scripts them.
#[async_trait::async_trait]
pub trait System: Send + Sync {
    /// Runs a command to completion (or its timeout). A non-zero exit is not an error here.
    async fn run(&self, cmd: &Cmd) -> Result<CmdOutput, SysError>;

    /// Starts a command that outlives stoke, its output going to `log`. Returns its pid.
    fn spawn_detached(&self, cmd: &Cmd, log: &OutputLog) -> Result<u32, SysError>;

    fn sethostname(&self, name: &str) -> Result<(), SysError>;

    /// Mounts; a slow mount (a device that hangs) holds up only its caller, never the
    /// other modules nor their timeouts.
    async fn mount(&self, req: &MountRequest) -> Result<(), SysError>;

    async fn umount(&self, target: &Path) -> Result<(), SysError>;

    /// Changes the owner of an open file (`path` names it for logs and records).
    fn fchown(&self, file: &File, path: &Path, uid: u32, gid: u32) -> Result<(), SysError>;

    /// Writes text to the system console (where EC2's console output can read it).
    fn console(&self, text: &str) -> Result<(), SysError>;

    /// False when commands are only recorded: their output is then empty.
    fn executes(&self) -> bool;

    /// The [`NVME_IDENTIFY_LEN`]-byte Identify Controller data of the NVMe controller
    /// `dev` (a host path such as `/dev/nvme1`), read with the admin-command ioctl: where
    /// EBS keeps the block-device name a volume was attached as. Read-only; bounded.
    /// Default: not available (a `System` that cannot send admin commands).
    async fn nvme_identify_controller(&self, dev: &Path) -> Result<Vec<u8>, SysError> {
        Err(SysError::Call {
            call: "nvme identify",
            what: dev.display().to_string(),
            source: std::io::Error::from(std::io::ErrorKind::Unsupported),
        })
    }
}

/// Size of NVMe Identify Controller data (CNS 01h).
pub const NVME_IDENTIFY_LEN: usize = 4096;

mod duration_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}
