//! Logs go to the journal when systemd runs stoke, to stderr otherwise.

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
                .without_time(),
        )
        .with(level)
        .try_init();
}
