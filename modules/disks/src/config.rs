//! The `disks:` configuration section.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use stoke_api::ModuleError;

/// Top-level keys read by the `disks` module.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default)]
pub struct Config {
    /// Ephemeral (instance-store) disks: discovery, RAID0/JBOD, filesystems.
    pub disks: Option<Disks>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One striped array of all disks (one disk: a plain filesystem, no array).
    #[default]
    Raid0,
    /// Each disk its own filesystem, mounted at `jbod_mount_point`.
    Jbod,
    /// The first disk only, a plain filesystem.
    Single,
    /// Do nothing.
    Off,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Raid0 => "raid0",
            Mode::Jbod => "jbod",
            Mode::Single => "single",
            Mode::Off => "off",
        }
    }
}

/// xfs | ext4, made as `volumes` makes them.
pub use stoke_api::probe::Filesystem;

/// A size: an integer number of KiB, or a string such as `256K`, `512k`, `1M`.
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Size {
    KiB(u64),
    Text(String),
}

/// A number of seconds, or a string such as `10s`.
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Seconds {
    Secs(u64),
    Text(String),
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Disks {
    /// raid0 (default) | jbod | single | off.
    pub mode: Mode,
    /// Explicit devices or globs (`/dev/vdb`, `/dev/nvme[1-9]n1`). When set, discovery is not used.
    pub devices: Option<Vec<String>>,
    /// RAID0 chunk size, a power of two from 4K (default 256K).
    pub chunk_size: Size,
    /// xfs (default) | ext4.
    pub filesystem: Filesystem,
    /// Filesystem label (default `ephemeral`; JBOD disks get `<label><index>`).
    pub label: String,
    /// Extra arguments for mkfs, placed before the device.
    pub mkfs_options: Vec<String>,
    /// Wipe disks holding data stoke did not make (filesystem, partition table, md superblock).
    pub force: bool,
    /// md array name: the array is `/dev/md/<name>`.
    pub array_name: String,
    /// Whether the `mounts` module should mount the results.
    pub mount: bool,
    /// Mount point for raid0/single.
    pub mount_point: String,
    /// Mount point for JBOD disk `{{ index }}`.
    pub jbod_mount_point: String,
    /// Mount options for the results (`nofail` and the device timeout are always added).
    pub mount_options: String,
    /// If set, the ARRAY line for the array is kept in this file (e.g. /etc/mdadm/mdadm.conf).
    pub mdadm_conf: Option<String>,
    /// Upper bound for waiting for udev's events (`udevadm wait`) of the disks, and of the
    /// array after creating or assembling it.
    pub settle_timeout: Seconds,
}

impl Default for Disks {
    fn default() -> Self {
        Disks {
            mode: Mode::Raid0,
            devices: None,
            chunk_size: Size::Text("256K".into()),
            filesystem: Filesystem::Xfs,
            label: "ephemeral".into(),
            mkfs_options: Vec::new(),
            force: false,
            array_name: "ephemeral".into(),
            mount: true,
            mount_point: "/mnt".into(),
            jbod_mount_point: "/mnt/data{{ index }}".into(),
            mount_options: "defaults".into(),
            mdadm_conf: None,
            // Only a slow udev makes this wait: 10 s ran out on a loaded VM host, and the disks
            // were then taken for absent (cloud-init's settle has udevadm's 120 s).
            settle_timeout: Seconds::Secs(30),
        }
    }
}

impl Disks {
    /// The chunk size in KiB, checked: a power of two, 4 KiB ..= 1 GiB.
    pub fn chunk_kib(&self) -> Result<u64, ModuleError> {
        let kib = match &self.chunk_size {
            Size::KiB(n) => Some(*n),
            Size::Text(s) => parse_size_kib(s),
        };
        match kib {
            Some(k) if k.is_power_of_two() && (4..=1024 * 1024).contains(&k) => Ok(k),
            _ => Err(ModuleError::Invalid(format!(
                "disks.chunk_size {}: must be a power of two between 4K and 1G (e.g. 256K)",
                match &self.chunk_size {
                    Size::KiB(n) => n.to_string(),
                    Size::Text(s) => format!("{s:?}"),
                }
            ))),
        }
    }

    pub fn settle_secs(&self) -> Result<u64, ModuleError> {
        let v = match &self.settle_timeout {
            Seconds::Secs(n) => Some(*n),
            Seconds::Text(s) => s.trim().trim_end_matches('s').parse().ok(),
        };
        v.filter(|n| (1..=600).contains(n)).ok_or_else(|| {
            ModuleError::Invalid("disks.settle_timeout: seconds between 1 and 600".into())
        })
    }

    /// Checks everything that can be checked without looking at the machine.
    pub fn validate(&self, disks: usize) -> Result<(), ModuleError> {
        self.chunk_kib()?;
        self.settle_secs()?;
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 32
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !name_ok(&self.array_name) {
            return Err(ModuleError::Invalid(format!(
                "disks.array_name {:?}: use 1-32 of [A-Za-z0-9_-]",
                self.array_name
            )));
        }
        let digits = if self.mode == Mode::Jbod {
            disks.saturating_sub(1).to_string().len()
        } else {
            0
        };
        let max = self.filesystem.max_label();
        if self.label.is_empty()
            || self.label.len() + digits > max
            || self.label.chars().any(|c| c.is_whitespace() || c == '/')
        {
            return Err(ModuleError::Invalid(format!(
                "disks.label {:?}: {} labels are at most {max} bytes{}, without spaces or '/'",
                self.label,
                self.filesystem.as_str(),
                if digits > 0 {
                    format!(" including the JBOD index ({digits} digits here)")
                } else {
                    String::new()
                }
            )));
        }
        for (key, p) in [
            ("mount_point", &self.mount_point),
            ("jbod_mount_point", &self.jbod_mount_point),
        ] {
            if !p.starts_with('/') {
                return Err(ModuleError::Invalid(format!(
                    "disks.{key} {p:?}: must be an absolute path"
                )));
            }
        }
        if self.mode == Mode::Jbod && !self.jbod_mount_point.contains("{{") {
            return Err(ModuleError::Invalid(format!(
                "disks.jbod_mount_point {:?}: must contain {{{{ index }}}}",
                self.jbod_mount_point
            )));
        }
        if self.mount_options.trim().is_empty() || self.mount_options.contains(char::is_whitespace)
        {
            return Err(ModuleError::Invalid(format!(
                "disks.mount_options {:?}: comma-separated options without spaces",
                self.mount_options
            )));
        }
        Ok(())
    }
}

/// A size in KiB from `256K`, `256KiB`, `1M`, `1G`; a bare number is KiB.
fn parse_size_kib(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "k" | "kb" | "kib" => 1,
        "m" | "mb" | "mib" => 1024,
        "g" | "gb" | "gib" => 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(v: serde_json::Value) -> Result<u64, ModuleError> {
        let d: Disks = serde_json::from_value(serde_json::json!({ "chunk_size": v })).unwrap();
        d.chunk_kib()
    }

    #[test]
    fn chunk_size_must_be_a_power_of_two() {
        assert_eq!(chunk("256K".into()).unwrap(), 256);
        assert_eq!(chunk("1M".into()).unwrap(), 1024);
        assert_eq!(chunk(512.into()).unwrap(), 512);
        let err = chunk("300K".into()).unwrap_err().to_string();
        assert!(
            err.contains("power of two") && err.contains("300K"),
            "{err}"
        );
        assert!(chunk("2K".into()).is_err());
        assert!(chunk("lots".into()).is_err());
        assert!(chunk(0.into()).is_err());
    }

    #[test]
    fn unknown_keys_in_the_section_are_errors() {
        let spec = stoke_api::config_spec::<Config>();
        let err = (spec.validate)("disks:\n  chunk_sise: 256K\n").unwrap_err();
        assert!(err.message.contains("chunk_size"), "{err}");
        (spec.validate)("hostname: x\ndisks:\n  mode: jbod\n  chunk_size: 512\n").unwrap();
        assert!((spec.validate)("disks:\n  mode: raid5\n").is_err());
    }

    #[test]
    fn labels_are_checked_against_the_filesystem() {
        let mut d = Disks {
            label: "averyverylonglabel".into(),
            ..Disks::default()
        };
        assert!(d.validate(2).is_err());
        d.label = "scratchdisk1".into(); // 12: fits xfs
        d.validate(2).unwrap();
        d.mode = Mode::Jbod; // + index digit: 13 > 12
        assert!(d.validate(2).is_err());
        d.filesystem = Filesystem::Ext4;
        d.validate(2).unwrap();
    }
}
