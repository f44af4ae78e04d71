//! Writes stoke(1) and the bash and zsh completions into packaging/ from the CLI definition
//! (`src/cli/args.rs`): `cargo run --example gen-cli-docs`. The .deb installs them from there;
//! `tests/cli_docs.rs` fails when they are out of date. Kept out of the binary (size).

#[path = "../src/cli/args.rs"]
#[allow(dead_code)]
mod cli;
#[path = "../tests/support/cli_docs.rs"]
mod cli_docs;

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (rel, content) in cli_docs::all() {
        let path = repo.join(rel);
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, content));
        if let Err(e) = written {
            eprintln!("gen-cli-docs: writing {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {rel}");
    }
    ExitCode::SUCCESS
}
