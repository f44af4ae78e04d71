//! fstab mount options and what the mount(2) call makes of each: one table, for the modules
//! that write fstab lines and mount them (`mounts`) and for the system that makes the call.
//! An option missing here would reach the kernel as filesystem data and fail the mount.

/// What an fstab option is to the mount call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelOption {
    /// A flag of the mount call.
    Flag(MountFlag),
    /// The call's default (`rw`, `exec`, `atime`, ...): nothing to pass.
    Default,
    /// Read by mount(8), systemd or stoke, never by the kernel (`nofail`, `x-*`, ...).
    Userspace,
    /// Given to the filesystem as data (`logbsize=256k`, `discard`, ...).
    Data,
}

/// The mount flags stoke passes (MS_* of mount(2)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MountFlag {
    ReadOnly,
    NoAtime,
    NoDirAtime,
    RelAtime,
    StrictAtime,
    LazyTime,
    NoDev,
    NoSuid,
    NoExec,
    Synchronous,
    DirSync,
    Silent,
}

const FLAGS: &[(&str, MountFlag)] = &[
    ("ro", MountFlag::ReadOnly),
    ("noatime", MountFlag::NoAtime),
    ("nodiratime", MountFlag::NoDirAtime),
    ("relatime", MountFlag::RelAtime),
    ("strictatime", MountFlag::StrictAtime),
    ("lazytime", MountFlag::LazyTime),
    ("nodev", MountFlag::NoDev),
    ("nosuid", MountFlag::NoSuid),
    ("noexec", MountFlag::NoExec),
    ("sync", MountFlag::Synchronous),
    ("dirsync", MountFlag::DirSync),
    ("silent", MountFlag::Silent),
];

/// The mount call's defaults, spelled out in fstab.
const DEFAULTS: &[&str] = &[
    "rw",
    "defaults",
    "dev",
    "suid",
    "exec",
    "async",
    "atime",
    "diratime",
    "norelatime",
    "nostrictatime",
    "nolazytime",
    "loud",
];

/// Options for mount(8), systemd or swapon only.
const USERSPACE: &[&str] = &[
    "auto", "noauto", "nofail", "user", "users", "nouser", "owner", "group", "_netdev", "sw",
];

pub fn kernel_option(opt: &str) -> KernelOption {
    if let Some((_, flag)) = FLAGS.iter().find(|(name, _)| *name == opt) {
        KernelOption::Flag(*flag)
    } else if DEFAULTS.contains(&opt) {
        KernelOption::Default
    } else if USERSPACE.contains(&opt) || opt.starts_with("x-") || opt.starts_with("comment=") {
        KernelOption::Userspace
    } else {
        KernelOption::Data
    }
}

/// Options as the mount call takes them: its flags and the filesystem's data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelMount {
    pub flags: Vec<MountFlag>,
    /// Comma-separated, for the filesystem.
    pub data: String,
}

pub fn kernel_mount(options: &str) -> KernelMount {
    let mut out = KernelMount::default();
    let mut data = Vec::new();
    for opt in options.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        match kernel_option(opt) {
            KernelOption::Flag(f) => out.flags.push(f),
            KernelOption::Default | KernelOption::Userspace => {}
            KernelOption::Data => data.push(opt),
        }
    }
    out.data = data.join(",");
    out
}

/// The fstab options the mount call acts on (flags and filesystem data): what a mount
/// request carries.
pub fn for_mount_call(options: &str) -> String {
    options
        .split(',')
        .map(str::trim)
        .filter(|o| matches!(kernel_option(o), KernelOption::Flag(_) | KernelOption::Data))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_filesystem_options_reach_the_filesystem() {
        let k = kernel_mount(
            "defaults,nofail,x-systemd.device-timeout=10s,x-stoke,noatime,ro,logbsize=256k,\
             strictatime,lazytime,comment=x,exec",
        );
        assert_eq!(
            k.flags,
            vec![
                MountFlag::NoAtime,
                MountFlag::ReadOnly,
                MountFlag::StrictAtime,
                MountFlag::LazyTime
            ]
        );
        assert_eq!(k.data, "logbsize=256k");
    }

    #[test]
    fn a_request_keeps_what_the_mount_call_acts_on() {
        assert_eq!(
            for_mount_call("defaults,nofail,_netdev,x-systemd.automount,noatime,rw,discard"),
            "noatime,discard"
        );
    }
}
