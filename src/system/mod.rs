//! The two real [`System`]s: `Host` does what modules ask; `Sandbox` (for
//! `--root DIR`) records it, and runs only what cannot touch the host.

mod host;
mod sandbox;

pub use host::Host;
pub use sandbox::Sandbox;
