//! Every external program stoke runs, named in one place.
//!
//! Modules ask [`crate::Context::tool`] for a program by these names; config key
//! `tools:` can map a name to another path (e.g. a distro that keeps mdadm elsewhere).

pub const MDADM: &str = "mdadm";
pub const MKFS_XFS: &str = "mkfs.xfs";
pub const MKFS_EXT4: &str = "mkfs.ext4";
pub const BLKID: &str = "blkid";
pub const WIPEFS: &str = "wipefs";
pub const UDEVADM: &str = "udevadm";
pub const SSH_KEYGEN: &str = "ssh-keygen";
pub const PUPPET: &str = "puppet";
pub const SYSTEMD_RUN: &str = "systemd-run";
pub const SYSTEMCTL: &str = "systemctl";
/// The boot's firmware/loader/kernel/initrd/userspace times, for `analyze --svg`.
pub const SYSTEMD_ANALYZE: &str = "systemd-analyze";
pub const LSBLK: &str = "lsblk";
pub const FINDMNT: &str = "findmnt";
/// coreutils `timeout`: bounds a detached run that stoke does not wait for.
pub const TIMEOUT: &str = "timeout";
/// The shell for user scripts without a `#!` line (boothooks, MIME parts).
pub const SH: &str = "/bin/sh";
pub const GROUPADD: &str = "groupadd";
pub const USERADD: &str = "useradd";
pub const USERMOD: &str = "usermod";
pub const CHPASSWD: &str = "chpasswd";
/// sudo's syntax checker: every sudo rule is checked before it is installed.
pub const VISUDO: &str = "visudo";
/// cloud-guest-utils: grows a partition to the end of its disk.
pub const GROWPART: &str = "growpart";
pub const SFDISK: &str = "sfdisk";
pub const PARTX: &str = "partx";
pub const RESIZE2FS: &str = "resize2fs";
pub const XFS_GROWFS: &str = "xfs_growfs";
pub const BTRFS: &str = "btrfs";
pub const UPDATE_CA_CERTIFICATES: &str = "update-ca-certificates";
pub const UPDATE_CA_TRUST: &str = "update-ca-trust";
pub const DEBCONF_SET_SELECTIONS: &str = "debconf-set-selections";
pub const APT_GET: &str = "apt-get";
pub const DNF: &str = "dnf";
pub const YUM: &str = "yum";
/// Schedules the power-state change (`shutdown -r +N message`).
pub const SHUTDOWN: &str = "shutdown";
/// util-linux: preallocates a swap file's blocks (no holes, as swapon needs).
pub const FALLOCATE: &str = "fallocate";
/// coreutils: writes a swap file out when `fallocate` is refused.
pub const DD: &str = "dd";
/// e2fsprogs: `chattr +C` (no copy-on-write) before a btrfs swap file is filled.
pub const CHATTR: &str = "chattr";
pub const MKSWAP: &str = "mkswap";
pub const SWAPON: &str = "swapon";
/// shadow's passwd: `passwd --expire` (chpasswd's `expire`).
pub const PASSWD: &str = "passwd";
/// dpkg: whether a package is installed (acceptance checks).
pub const DPKG_QUERY: &str = "dpkg-query";
/// rpm: whether a package is installed where dpkg is not the package manager.
pub const RPM: &str = "rpm";
