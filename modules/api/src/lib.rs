//! The contract between the stoke runner and its modules.
//!
//! A module sees the world only through what this crate gives it: paths under
//! [`Root`], commands and syscalls through [`System`], its own configuration
//! section, the instance's metadata and the outputs of the modules it runs after.

mod civil;
mod config;
pub mod config_words;
mod context;
mod fsutil;
pub mod http;
mod instance_id;
mod module;
pub mod mount_options;
pub mod mountinfo;
mod off_runtime;
pub mod outputs;
pub mod probe;
mod retry_budget;
mod rootfs;
mod rootfs_tree;
mod run_record;
mod system;
mod template;
pub mod tools;
pub mod udev;
mod usercode;
mod yaml;

#[cfg(feature = "fake")]
pub mod fake;
#[cfg(any(test, feature = "fake"))]
pub mod testing;

pub use async_trait::async_trait;
pub use civil::civil_from_days;
pub use config::{
    ConfigError, ConfigSpec, PathStep, ValueError, config_spec, merge_config, nearest, scalar_text,
    yaml_message, yaml_options,
};
pub use context::{BootSoFar, Context, InstanceData, Root, StateScope, TAG_PREFIX};
pub use fsutil::{
    Group, TEMP_MARK, User, atomic_write, atomic_write_volatile, lookup_group, lookup_user,
    managed_block, read_capped, read_to_string_opt, remove_stale_temp_files, sha256_hex,
    temp_file_pid, unescape_octal,
};
pub use instance_id::{InstanceId, InvalidInstanceId};
pub use module::{Frequency, Module, ModuleError, ModuleSpec, Order, Report, Stage};
pub use off_runtime::off_runtime;
pub use retry_budget::RetryBudget;
pub use rootfs::{FileKind, FileStat, RootDir, create_dir_complete, replace_in_dir};
pub use rootfs_tree::InputDir;
pub use run_record::{BACKGROUND_FILE, RunRecord, RunState};
pub use system::{
    Action, Cmd, CmdOutput, MountRequest, NVME_IDENTIFY_LEN, OUTPUT_LOG_MAX, OUTPUT_TAIL_MAX,
    OutputLog, SysError, System, shell_quote,
};
pub use template::{TemplateError, render};
pub use usercode::{ScriptKind, ScriptOutcome, ScriptRun, ScriptsReport, UserScript};
pub use yaml::{
    BINARY_KEY, DuplicateKey, Positions, TextOrBinary, duplicate_keys, parse_yaml,
    parse_yaml_with_duplicates, path_text, yaml_options_raw_binary,
};
