//! The contract between the stoke runner and its modules.
//!
//! A module sees the world only through what this crate gives it: paths under
//! [`Root`], commands and syscalls through [`System`], its own configuration
//! section, the instance's metadata and the outputs of the modules it runs after.

mod config;
mod config_words;
mod context;
mod fsutil;
mod module;
mod system;
mod template;
pub mod tools;
pub mod udev;

#[cfg(feature = "fake")]
pub mod fake;
#[cfg(any(test, feature = "fake"))]
pub mod testing;

pub use async_trait::async_trait;
pub use config::{ConfigError, ConfigSpec, config_spec, nearest, yaml_options};
pub use context::{Context, InstanceData, Root};
pub use fsutil::{
    User, atomic_write, atomic_write_volatile, atomic_write_with, lookup_user, managed_block,
    read_to_string_opt, unescape_octal,
};
pub use module::{Frequency, Module, ModuleError, ModuleSpec, Report, Stage};
pub use system::{Action, Cmd, CmdOutput, MountRequest, SysError, System};
pub use template::{TemplateError, render};
