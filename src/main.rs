//! stoke: a fast, small boot-time instance initializer.
//!
//! The parts and their arrows (tests/architecture.rs keeps them): `cli` (one file per
//! command) → `app` (one invocation: paths, system, modules; config + datasource) → `runner`
//! (one stage) → `config`, `datasource`, `state` → `stoke-api`; `paths` and `system` are
//! leaves. docs/dev/design.md tells what each does.

mod app;
mod cli;
mod config;
mod datasource;
mod paths;
mod runner;
mod state;
mod system;

fn main() -> std::process::ExitCode {
    cli::main()
}
