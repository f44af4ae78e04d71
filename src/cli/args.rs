//! The command line, alone in this file (clap and std only) so that the man page and shell
//! completions are generated from this very definition (`examples/gen-cli-docs.rs`) without
//! putting their generators in the binary.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// A usage error (unknown option, missing argument): its own code, so that a typo in a bake
/// script never reads as a boot state (1 failed, 2 degraded, 3 not finished). 64 is
/// sysexits.h's EX_USAGE.
pub const EXIT_USAGE: u8 = 64;

pub const EXIT_CODES: &str = "\
Exit codes:
  run, status:  0 done and ok, 1 a module failed (or stoke itself could not run, or
                its units ended without finishing), 2 degraded (rejected config, warnings,
                deferred modules), 3 not finished yet (status --wait: timed out),
                4 (status) disabled: stoke will not run this boot
  schema:       0 valid, 1 invalid
  plan, query, clean, analyze, shutdown: 0 ok, 1 error
  every command: 64 usage error (unknown option, missing or bad argument)";

#[derive(Parser, Debug, PartialEq)]
#[command(
    name = "stoke",
    version,
    about = "Boot-time instance initializer",
    long_about = "stoke initializes a machine booted from a baked image: hostname, ephemeral disks, \
                  mounts, SSH host and authorized keys, DNS registration and Puppet, from EC2 \
                  instance metadata or a NoCloud seed. systemd runs its three stages at boot; \
                  `stoke status` says what happened.",
    after_help = EXIT_CODES
)]
pub struct Cli {
    /// Work against DIR instead of `/`: every path is read and written under DIR;
    /// commands and syscalls are recorded in DIR/run/stoke/actions.jsonl, not run.
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Configuration directory (default ROOT/etc/stoke).
    #[arg(long, global = true, value_name = "DIR")]
    pub config: Option<PathBuf>,
    /// NoCloud seed directory (default ROOT/var/lib/stoke/seed/nocloud).
    /// Give it before the command (`stoke --seed DIR run ...`): `clean --seed` is another flag.
    #[arg(long, value_name = "DIR")]
    pub seed: Option<PathBuf>,
    /// With --root: really run commands (and mounts) instead of only recording them.
    /// Hostname and console stay recorded: --root never changes the host.
    #[arg(long, global = true)]
    pub execute: bool,
    /// More logging (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
pub enum StageArg {
    /// early, before networking: hostname, disks, mounts, ssh host keys.
    Local,
    /// after the network is online: metadata, DNS, authorized keys, blocking puppet.
    Network,
    /// last: non-blocking puppet, the boot-finished record.
    Final,
    /// the three stages in turn
    All,
}

#[derive(Subcommand, Debug, PartialEq)]
pub enum Command {
    /// Run a boot stage (systemd runs local, network, final in turn).
    Run {
        /// The stage to run.
        #[arg(long, value_enum)]
        stage: StageArg,
    },
    /// Show this boot's outcome: every module's state, reason and duration.
    Status {
        /// Wait until boot work is done; returns early when stoke is disabled or its units
        /// will not run (or ran and ended) this boot, as systemd tells.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after S seconds (exit 3).
        #[arg(long, value_name = "S", default_value_t = 600)]
        timeout: u64,
        /// Print the status as JSON (the content of /run/stoke/status.json and an overall `status`).
        #[arg(long)]
        json: bool,
    },
    /// Forget instance state so the next boot is a first boot (run before capturing an image).
    Clean {
        /// Also remove /var/log/stoke.
        #[arg(long)]
        logs: bool,
        /// Also remove the NoCloud seed directory.
        #[arg(long)]
        seed: bool,
    },
    /// Validate a config or user-data file (file:line:column errors), or print the JSON Schema.
    Schema {
        /// The file to check: an image config file, or a user-data (gzip, MIME, jinja,
        /// scripts, #cloud-config: recognised by its first bytes, or forced with --user-data).
        #[arg(required_unless_present_any = ["json_schema", "cloud_init"])]
        file: Option<PathBuf>,
        /// Check FILE as a user-data, the way `stoke run` reads one from the datasource.
        #[arg(long, requires = "file")]
        user_data: bool,
        /// Print the JSON Schema of the whole configuration (for editors).
        #[arg(long, conflicts_with_all = ["file", "cloud_init"])]
        json_schema: bool,
        /// Print every cloud-init key and what stoke does with it (a Markdown table).
        #[arg(long, conflicts_with = "file")]
        cloud_init: bool,
    },
    /// Which modules would run now, and why.
    Plan {
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Durations per stage and module, slowest first; or the boot as a timeline picture.
    Analyze {
        /// Draw the boot on a time axis into FILE (SVG): stages, modules, the steps inside
        /// them, the critical path.
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
        /// The same picture in a self-contained HTML page.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        /// Read a status.json saved from a boot (another machine's, a previous boot's)
        /// instead of this boot's.
        #[arg(long, value_name = "FILE")]
        from: Option<PathBuf>,
    },
    /// Run the image's acceptance checks now (for a build pipeline); exit 1 if one fails.
    Verify {
        /// Also write the results as JUnit XML to FILE (for Jenkins and other CI servers).
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// Print the results as JSON.
        #[arg(long)]
        json: bool,
        /// Only the checks a layer defines: its file name in stoke.d/ with or without
        /// `.yaml` (`50-app`), or `stoke` for stoke.yaml.
        #[arg(long, value_name = "NAME")]
        layer: Option<String>,
    },
    /// Print a metadata value (e.g. local-ipv4, instance-id, user-data), or the image lineage.
    Query {
        /// The metadata key (instance-id, local-ipv4, region, public-keys, user-data, ...), or
        /// `image`: the image's layers and their build facts as JSON.
        key: String,
    },
    /// Shutdown work (e.g. Route53 deregistration); run by the unit's ExecStop.
    Shutdown,
    /// Run ARGV and record its outcome in FILE (stoke runs non-blocking puppet through it).
    ExecRecord {
        /// Where to record the outcome (JSON: state, exit code and its meaning, duration, pid).
        #[arg(long, value_name = "FILE")]
        result: PathBuf,
        /// Exit codes of ARGV that mean success (puppet's --detailed-exitcodes: 0,2).
        #[arg(long, value_delimiter = ',', default_value = "0")]
        success_codes: Vec<i32>,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
}
