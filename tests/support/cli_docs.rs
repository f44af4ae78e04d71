//! stoke(1) and the shell completions, rendered from the CLI definition (`src/cli.rs`).
//! `examples/gen-cli-docs.rs` writes them into packaging/; `tests/cli_docs.rs` checks that the
//! committed files are what the current definition renders.

use clap::CommandFactory as _;
use clap_mangen::roff::{Roff, bold, italic, roman};

use super::cli::{Cli, EXIT_USAGE};

/// Where each generated file lives in the repository (the .deb installs them from there).
pub const MAN_PAGE: &str = "packaging/man/stoke.1";
pub const BASH: &str = "packaging/completions/stoke.bash";
pub const ZSH: &str = "packaging/completions/_stoke";

pub fn command() -> clap::Command {
    let mut cmd = Cli::command();
    cmd.build();
    cmd
}

/// Every generated file: (path in the repository, content).
pub fn all() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (MAN_PAGE, man_page()),
        (BASH, completion(clap_complete::Shell::Bash)),
        (ZSH, completion(clap_complete::Shell::Zsh)),
    ]
}

pub fn completion(shell: clap_complete::Shell) -> Vec<u8> {
    let mut cmd = command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "stoke", &mut out);
    out
}

pub fn man_page() -> Vec<u8> {
    let cmd = command();
    // No date: the page must be the same whenever it is generated.
    let man = clap_mangen::Man::new(cmd.clone())
        .manual("System Administration")
        .source(format!("stoke {}", env!("CARGO_PKG_VERSION")))
        .section("1");
    let mut out = Vec::new();
    type Section = fn(&clap_mangen::Man, &mut dyn std::io::Write) -> std::io::Result<()>;
    let sections: [Section; 5] = [
        clap_mangen::Man::render_title,
        clap_mangen::Man::render_name_section,
        clap_mangen::Man::render_synopsis_section,
        clap_mangen::Man::render_description_section,
        clap_mangen::Man::render_options_section,
    ];
    for render in sections {
        // Writing into a Vec cannot fail.
        let _ = render(&man, &mut out);
    }
    let mut roff = Roff::new();
    commands(&mut roff, &cmd);
    exit_status(&mut roff);
    files(&mut roff);
    environment(&mut roff);
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(
        "systemctl(1), journalctl(1); /usr/share/doc/stoke/ (configuration.md, cli.md, state.md, \
         baking.md)",
    )]);
    out.extend(roff.render().into_bytes());
    out
}

/// Each command with its usage, what it does and its options (one page, not one per command).
fn commands(roff: &mut Roff, cmd: &clap::Command) {
    roff.control("SH", ["COMMANDS"]);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        let mut sub = sub.clone();
        let usage = sub
            .render_usage()
            .to_string()
            .trim_start_matches("Usage: ")
            .to_string();
        roff.control("TP", []);
        roff.text([bold(usage)]);
        if let Some(about) = sub.get_long_about().or_else(|| sub.get_about()) {
            roff.text([roman(about.to_string())]);
        }
        let args = sub
            .get_arguments()
            .filter(|a| !a.is_hide_set() && !a.is_global_set() && a.get_id() != "help");
        for arg in args {
            let Some(help) = arg.get_help() else { continue };
            let value = arg
                .get_value_names()
                .filter(|_| arg.get_action().takes_values())
                .map(|names| {
                    names
                        .iter()
                        .map(|n| format!("<{n}>"))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            let name = match arg.get_long() {
                Some(long) if value.is_empty() => format!("--{long}"),
                Some(long) => format!("--{long} {value}"),
                None => value,
            };
            roff.control("RS", []);
            roff.control("TP", []);
            roff.text([italic(name)]);
            let mut text = help.to_string();
            let values: Vec<String> = arg
                .get_possible_values()
                .iter()
                .filter(|v| !v.is_hide_set())
                .map(|v| match v.get_help() {
                    Some(h) => format!("{}: {h}", v.get_name()),
                    None => v.get_name().to_string(),
                })
                .collect();
            if !values.is_empty() {
                text.push_str(&format!(" ({})", values.join("; ")));
            }
            roff.text([roman(text)]);
            roff.control("RE", []);
        }
    }
}

fn exit_status(roff: &mut Roff) {
    roff.control("SH", ["EXIT STATUS"]);
    roff.text([roman(
        "For run and status the exit status is the state of this boot's work; for the other \
         commands, 0 is success and 1 an error. Usage errors have their own status, never a \
         boot state.",
    )]);
    // The table below spells the code out; the CLI's constant must agree with it.
    const _: () = assert!(EXIT_USAGE == 64);
    let codes = [
        ("0", "done, every module ok (other commands: success)".to_string()),
        (
            "1",
            "a module failed, or stoke itself could not run (other commands: error; schema: the \
             file is invalid)"
                .to_string(),
        ),
        (
            "2",
            "run, status: degraded (a configuration layer rejected, warnings, modules deferred for \
             lack of metadata); plan: a configuration layer or the user-data would be rejected"
                .to_string(),
        ),
        (
            "3",
            "run, status: not finished yet (a stage before final; status while boot work goes on \
             or --wait timed out)"
                .to_string(),
        ),
        (
            "64",
            "usage error: unknown command or option, missing or bad argument (sysexits.h \
             EX_USAGE)"
                .to_string(),
        ),
    ];
    for (code, meaning) in codes {
        roff.control("TP", []);
        roff.text([bold(code)]);
        roff.text([roman(meaning)]);
    }
}

fn files(roff: &mut Roff) {
    roff.control("SH", ["FILES"]);
    let files = [
        (
            "/etc/stoke/stoke.yaml, /etc/stoke/stoke.d/*.yaml",
            "the image's configuration layers, merged in that order (then vendor-data and user-data)",
        ),
        (
            "/etc/stoke/disabled",
            "when present, stoke does nothing (as does stoke=disabled on the kernel command line)",
        ),
        (
            "/var/lib/stoke/",
            "instance state: instance-id, semaphores, the metadata cache, the NoCloud seed \
             (seed/nocloud/); removed by stoke clean",
        ),
        (
            "/run/stoke/status.json",
            "this boot's status, read by stoke status and stoke analyze",
        ),
        ("/run/stoke/lock", "one stoke at a time"),
        (
            "/lib/systemd/system/stoke-local.service, stoke-network.service, stoke-final.service, \
             stoke.target, stoke-hold-logins.target",
            "the boot stages; order a unit After=stoke.target to run once boot work is done",
        ),
    ];
    for (path, what) in files {
        roff.control("TP", []);
        roff.text([italic(path)]);
        roff.text([roman(what)]);
    }
}

fn environment(roff: &mut Roff) {
    roff.control("SH", ["ENVIRONMENT"]);
    let vars = [
        (
            "JOURNAL_STREAM, INVOCATION_ID",
            "set by systemd: logs go to the journal instead of standard error",
        ),
        (
            "NO_COLOR",
            "set and not empty: no colour in logs and messages (colour is only used on a terminal)",
        ),
    ];
    for (var, what) in vars {
        roff.control("TP", []);
        roff.text([bold(var)]);
        roff.text([roman(what)]);
    }
}
