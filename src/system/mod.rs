//! The two real [`System`]s: `RealSystem` does what modules ask; `Sandbox` (for
//! `--root DIR`) records it, and runs only what cannot touch the host.

mod real;
mod sandbox;

pub use real::RealSystem;
pub use sandbox::Sandbox;
