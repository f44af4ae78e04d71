//! The man page and completions in packaging/ are what the CLI definition renders, and they
//! document what a newcomer looks for (every command, exit codes, files).

#[path = "../src/cli/args.rs"]
#[allow(dead_code)]
mod cli;
#[path = "support/cli_docs.rs"]
mod cli_docs;

#[test]
fn committed_man_page_and_completions_are_up_to_date() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (rel, want) in cli_docs::all() {
        let have = std::fs::read(repo.join(rel)).unwrap_or_default();
        assert!(
            have == want,
            "{rel} is out of date with src/cli/args.rs: run `cargo run --example gen-cli-docs` and commit it"
        );
    }
}

#[test]
fn the_man_page_has_every_command_the_exit_codes_and_the_files() {
    let page = String::from_utf8(cli_docs::man_page()).expect("UTF-8");
    for cmd in cli_docs::command().get_subcommands() {
        let name = cmd.get_name();
        if name != "help" {
            // roff escapes the dashes (`exec\-record`).
            let roff = format!("stoke {}", name.replace('-', "\\-"));
            assert!(page.contains(&roff), "{roff} missing");
        }
    }
    for needle in [
        ".SH \"EXIT STATUS\"",
        ".SH FILES",
        "/run/stoke/status.json",
        "/etc/stoke/stoke.yaml",
        "usage error",
        "\\-\\-success\\-codes",
        "EX_USAGE",
    ] {
        assert!(page.contains(needle), "{needle:?} missing from stoke.1");
    }
}

#[test]
fn completions_know_every_command() {
    for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh] {
        let text = String::from_utf8(cli_docs::completion(shell)).expect("UTF-8");
        for cmd in ["run", "status", "exec-record", "schema", "--json"] {
            assert!(text.contains(cmd), "{shell}: {cmd} missing");
        }
    }
}

#[test]
fn every_option_and_argument_has_help_text() {
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let builtin = matches!(arg.get_id().as_str(), "help" | "version");
            if !builtin && !arg.is_hide_set() && arg.get_help().is_none() {
                missing.push(format!("{path} {}", arg.get_id()));
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.get_about().is_none() {
                missing.push(format!("{path} {} (no about)", sub.get_name()));
            }
            walk(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
    let mut missing = Vec::new();
    walk(&cli_docs::command(), "stoke", &mut missing);
    assert!(missing.is_empty(), "no help text: {missing:?}");
}
