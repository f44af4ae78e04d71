//! The command line: parsing, process set-up, one file per command. Commands reach the
//! engine through `app` (and read the status through `state`).

mod analyze;
mod args;
mod clean;
mod exec_record;
mod logging;
mod plan;
mod query;
mod run;
mod schema;
mod shutdown;
mod status;
mod svg;
mod verify;
mod wait;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;

use crate::app::App;
use crate::paths::Paths;
use crate::state::status::Overall;
pub use args::{Cli, Command, EXIT_USAGE, StageArg};

/// The command lines the systemd units run (`[-v] run --stage S`), read without building clap's
/// command tree. At boot every page of the binary is cold, and clap's parser is a large part of
/// what start-up touches. Anything else goes to clap.
fn unit_command_line(args: &[std::ffi::OsString]) -> Option<Cli> {
    let args: Vec<&str> = args
        .iter()
        .skip(1)
        .map(|a| a.to_str())
        .collect::<Option<_>>()?;
    let (verbose, rest) = match args.as_slice() {
        [v, rest @ ..]
            if v.len() > 1 && v.starts_with('-') && v[1..].bytes().all(|b| b == b'v') =>
        {
            (u8::try_from(v.len() - 1).ok()?, rest)
        }
        rest => (0, rest),
    };
    let stage = match rest {
        ["run", "--stage", "local"] => StageArg::Local,
        ["run", "--stage", "network"] => StageArg::Network,
        ["run", "--stage", "final"] => StageArg::Final,
        ["run", "--stage", "all"] => StageArg::All,
        _ => return None,
    };
    Some(Cli {
        root: None,
        config: None,
        seed: None,
        execute: false,
        verbose,
        command: Command::Run { stage },
    })
}

pub fn main() -> ExitCode {
    let at_main = crate::state::process_age_ms();
    crate::state::set_main_reached_ms(at_main);
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match unit_command_line(&args).map_or_else(|| Cli::try_parse_from(&args), Ok) {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    logging::init(cli.verbose);
    if tracing::enabled!(tracing::Level::DEBUG) {
        tracing::debug!(
            "stoke {}: main reached {:.0} ms after exec, arguments and logging ready after {:.0} ms",
            env!("CARGO_PKG_VERSION"),
            at_main.unwrap_or(0.0),
            crate::state::process_age_ms().unwrap_or(0.0)
        );
    }
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            // Once, on stderr: under systemd stderr is the journal too.
            eprintln!("stoke: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// `--help` and `--version` go to stdout with 0; anything else clap rejects is a usage error,
/// with its own exit code (never one of the boot states `run` and `status` report).
fn usage_error(e: &clap::Error) -> ExitCode {
    // Printing fails only when stdout/stderr are gone; the exit code still says it all.
    let _ = e.print();
    if e.use_stderr() {
        ExitCode::from(EXIT_USAGE)
    } else {
        ExitCode::SUCCESS
    }
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    // Outlives the stoke that started it: no lock, no config, no root.
    if let Command::ExecRecord {
        result,
        success_codes,
        argv,
    } = &cli.command
    {
        // The record's path is the instance's, resolved inside the root (default `/`).
        let root = stoke_api::Root::new(cli.root.clone().unwrap_or_else(|| "/".into()));
        let code = exec_record::exec_record(&root, result, success_codes, argv);
        return Ok(ExitCode::from(code.clamp(0, 255) as u8));
    }
    if matches!(
        cli.command,
        Command::Status { .. }
            | Command::Schema { .. }
            | Command::Plan { .. }
            | Command::Analyze { .. }
            | Command::Query { .. }
            | Command::Verify { .. }
            | Command::Clean { .. }
    ) {
        default_sigpipe();
    }
    let root = cli.root.clone().unwrap_or_else(|| PathBuf::from("/"));
    let app = App::for_root(root, cli.config.clone(), cli.seed.clone(), cli.execute);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Run { stage } => run::run(&app, &rt, stage),
        Command::Status {
            wait,
            timeout,
            json,
        } => status::status(&app, &rt, wait, timeout, json),
        Command::Clean { logs, seed } => clean::clean(&app, &rt, logs, seed),
        Command::Schema {
            file,
            user_data,
            json_schema,
            cloud_init,
        } => schema::schema(&app, file, user_data, json_schema, cloud_init),
        Command::Plan { json } => plan::plan(&app, &rt, json),
        Command::Analyze { svg, html, from } => analyze::analyze(&app, &rt, svg, html, from),
        Command::Query { key } => query::query(&app, &key),
        Command::Verify { junit, json, layer } => {
            verify::run(&app, &rt, junit.as_deref(), json, layer.as_deref())
        }
        Command::ExecRecord { .. } => unreachable!("handled before the runtime starts"),
        Command::Shutdown => shutdown::shutdown(&app, &rt),
    }
}

/// Commands that only print die of SIGPIPE when their reader goes away (`stoke status | head`),
/// as `cat` does, instead of panicking in `println!`. Rust ignores SIGPIPE by default, which
/// `run` and `shutdown` keep: a peer closing a socket must be an error there, not death.
fn default_sigpipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: SIG_DFL installs no handler, and no other thread exists yet to race with.
    if let Err(e) = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) } {
        tracing::debug!("SIGPIPE: {e}");
    }
}

fn exit(o: Overall) -> ExitCode {
    ExitCode::from(o as u8)
}

/// `stoke=disabled` on the kernel command line, or `/etc/stoke/disabled`.
fn disabled(paths: &Paths) -> Option<String> {
    let config = paths.config();
    if config.exists("disabled") {
        return Some(format!("{} exists", config.shown("disabled").display()));
    }
    let cmdline = paths
        .read(&paths.root.host_path("/proc/cmdline"))
        .ok()
        .flatten()
        .unwrap_or_default();
    cmdline
        .split_whitespace()
        .any(|w| w == "stoke=disabled")
        .then(|| "stoke=disabled on the kernel command line".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn argv(line: &str) -> Vec<OsString> {
        line.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn the_units_command_lines_read_as_clap_reads_them() {
        for stage in ["local", "network", "final", "all"] {
            for v in ["", "-v ", "-vv "] {
                let args = argv(&format!("stoke {v}run --stage {stage}"));
                let fast = unit_command_line(&args);
                assert!(fast.is_some(), "{args:?}");
                assert_eq!(fast, Some(Cli::parse_from(&args)), "{args:?}");
            }
        }
    }

    #[test]
    fn every_other_command_line_goes_to_clap() {
        for line in [
            "stoke",
            "stoke -v",
            "stoke run --stage nope",
            "stoke run --stage=local",
            "stoke --root /tmp/x run --stage local",
            "stoke run --stage local --execute",
            "stoke -x run --stage local",
            "stoke -- run --stage local",
            "stoke status --wait",
        ] {
            assert_eq!(unit_command_line(&argv(line)), None, "{line}");
        }
    }
}
