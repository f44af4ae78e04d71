//! Logs go to the journal when systemd runs stoke, to stderr otherwise; in colour only on a
//! terminal, and never with `NO_COLOR` set (no-color.org).

use std::io::IsTerminal as _;

use tracing_subscriber::prelude::*;
use tracing_subscriber::{filter::LevelFilter, fmt};

pub fn init(verbosity: u8) {
    let level = match verbosity {
        0 => LevelFilter::INFO,
        1 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    let under_systemd =
        std::env::var_os("JOURNAL_STREAM").is_some() || std::env::var_os("INVOCATION_ID").is_some();
    if under_systemd {
        match tracing_journald::layer() {
            Ok(journal) => {
                let _ = tracing_subscriber::registry()
                    .with(journal.with_syslog_identifier("stoke".into()))
                    .with(level)
                    .try_init();
                return;
            }
            Err(e) => eprintln!("stoke: journald unavailable ({e}); logging to stderr"),
        }
    }
    let _ = tracing_subscriber::registry()
        .with(
            fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false)
                .without_time()
                .with_ansi(colour(
                    std::io::stderr().is_terminal(),
                    std::env::var_os("NO_COLOR").as_deref(),
                )),
        )
        .with(level)
        .try_init();
}

/// Escape codes are for a person at a terminal; in a file or a pipe they are noise. `NO_COLOR`
/// set to anything but the empty string turns them off.
fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
    }
}
