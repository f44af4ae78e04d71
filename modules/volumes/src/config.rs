//! The `volumes:` configuration section: a list of EBS volumes, each named by the device
//! name it was attached as or by its volume id.

use schemars::JsonSchema;
use serde::Deserialize;
use stoke_api::ModuleError;
use stoke_api::probe::Filesystem;

use crate::identify::{name_key, volume_key};

/// Top-level keys read by the `volumes` module.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default)]
pub struct Config {
    /// EBS data volumes: found by requested name or volume id, formatted when blank,
    /// mounted by `mounts`.
    pub volumes: Option<Vec<Volume>>,
}

/// Default for `wait_seconds`: volumes in the launch's block-device mapping are there when
/// stoke starts (no wait); ones attached by automation once the instance runs (a launch
/// hook, a script) typically show up within tens of seconds of the boot.
pub const DEFAULT_WAIT_SECONDS: u64 = 30;
/// Upper bound for `wait_seconds`: the volume's wait holds `mounts` back.
pub const MAX_WAIT_SECONDS: u64 = 600;

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    /// The block-device name the volume was attached as: `sdf`, `xvdf` and `/dev/sdf` are
    /// the same. Exactly one of `device` and `volume_id`.
    #[serde(default)]
    pub device: Option<String>,
    /// The volume id, `vol-0123…`.
    #[serde(default)]
    pub volume_id: Option<String>,
    /// xfs (default) | ext4: made when the volume is blank, required when it is not.
    #[serde(default)]
    pub filesystem: Filesystem,
    /// Filesystem label given when stoke makes the filesystem.
    #[serde(default)]
    pub label: Option<String>,
    /// Where `mounts` mounts it (fstab line by UUID, `nofail`); none: not mounted.
    #[serde(default)]
    pub mount_point: Option<String>,
    /// Mount options (`nofail` and the device timeout are always added).
    #[serde(default = "default_options")]
    pub options: String,
    /// How long to wait for a volume that is not attached yet (default 30, at most 600);
    /// then a warning, and the boot goes on.
    #[serde(default = "default_wait")]
    pub wait_seconds: u64,
    /// Wipe a volume that holds something else (another filesystem, a partition table)
    /// and make the filesystem. Default false: such a volume is refused.
    #[serde(default)]
    pub overwrite: bool,
}

fn default_options() -> String {
    "defaults".into()
}

fn default_wait() -> u64 {
    DEFAULT_WAIT_SECONDS
}

/// What an entry looks for, normalised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Want {
    /// The requested-name key (`f` for sdf/xvdf) and the name as written.
    Device { key: String, name: String },
    /// The volume id as the NVMe serial spells it (`vol0123…`).
    VolumeId(String),
}

impl Want {
    pub fn describe(&self) -> String {
        match self {
            Want::Device { name, .. } => format!("device {name}"),
            Want::VolumeId(k) => format!("volume_id {}", crate::identify::volume_id_text(k)),
        }
    }
}

/// One checked entry.
#[derive(Clone, Debug)]
pub struct Entry {
    /// `volumes[2]`, how errors and warnings name it.
    pub origin: String,
    pub want: Want,
    pub volume: Volume,
}

impl Entry {
    /// `volumes[2] (device sdf)`.
    pub fn label(&self) -> String {
        format!("{} ({})", self.origin, self.want.describe())
    }
}

fn invalid(origin: &str, key: &str, msg: impl std::fmt::Display) -> ModuleError {
    ModuleError::Invalid(format!("{origin}.{key}: {msg}"))
}

/// Checks every entry (everything that can be checked without looking at the machine).
pub fn entries(cfg: &Config) -> Result<Vec<Entry>, ModuleError> {
    let mut out: Vec<Entry> = Vec::new();
    for (i, v) in cfg.volumes.iter().flatten().enumerate() {
        let origin = format!("volumes[{i}]");
        let want = match (&v.device, &v.volume_id) {
            (Some(d), None) => Want::Device {
                key: name_key(d).ok_or_else(|| {
                    invalid(
                        &origin,
                        "device",
                        format!(
                            "{d:?} is not an EC2 block-device name (sdf, xvdf, /dev/sdf, xvdba)"
                        ),
                    )
                })?,
                name: d.trim().to_string(),
            },
            (None, Some(id)) => Want::VolumeId(volume_key(id).ok_or_else(|| {
                invalid(
                    &origin,
                    "volume_id",
                    format!("{id:?} is not a volume id (vol- and 8 or 17 hex digits)"),
                )
            })?),
            (Some(_), Some(_)) => {
                return Err(ModuleError::Invalid(format!(
                    "{origin}: set device or volume_id, not both"
                )));
            }
            (None, None) => {
                return Err(ModuleError::Invalid(format!(
                    "{origin}: set device (sdf) or volume_id (vol-0123…)"
                )));
            }
        };
        if let Some(l) = &v.label {
            let max = v.filesystem.max_label();
            if l.is_empty() || l.len() > max || l.chars().any(|c| c.is_whitespace() || c == '/') {
                return Err(invalid(
                    &origin,
                    "label",
                    format!(
                        "{l:?}: {} labels are 1 to {max} bytes, without spaces or '/'",
                        v.filesystem.as_str()
                    ),
                ));
            }
        }
        if let Some(mp) = &v.mount_point
            && (!mp.starts_with('/') || mp.trim() != mp || mp.contains(char::is_whitespace))
        {
            return Err(invalid(
                &origin,
                "mount_point",
                format!("{mp:?} must be an absolute path without spaces"),
            ));
        }
        if v.options.is_empty() || v.options.contains(char::is_whitespace) {
            return Err(invalid(
                &origin,
                "options",
                format!("{:?}: comma-separated options without spaces", v.options),
            ));
        }
        if v.wait_seconds > MAX_WAIT_SECONDS {
            return Err(invalid(
                &origin,
                "wait_seconds",
                format!("{} is more than {MAX_WAIT_SECONDS}", v.wait_seconds),
            ));
        }
        let same = |e: &Entry| match (&e.want, &want) {
            (Want::Device { key: a, .. }, Want::Device { key: b, .. }) => a == b,
            (a, b) => a == b,
        };
        if let Some(first) = out.iter().find(|e| same(e)) {
            return Err(ModuleError::Invalid(format!(
                "{origin} names the same volume as {}",
                first.label()
            )));
        }
        if let Some(mp) = &v.mount_point
            && let Some(first) = out
                .iter()
                .find(|e| e.volume.mount_point.as_ref() == Some(mp))
        {
            return Err(invalid(
                &origin,
                "mount_point",
                format!("{mp} is also {}'s mount point", first.label()),
            ));
        }
        out.push(Entry {
            origin,
            want,
            volume: v.clone(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Result<Vec<Entry>, String> {
        let spec = stoke_api::config_spec::<Config>();
        (spec.validate)(yaml).map_err(|e| e.to_string())?;
        let v = stoke_api::parse_yaml(yaml).unwrap();
        let cfg: Config = serde_json::from_value(v).unwrap();
        entries(&cfg).map_err(|e| e.to_string())
    }

    #[test]
    fn entries_are_checked_and_errors_name_entry_and_key() {
        let e = check(
            "volumes:\n  - {device: /dev/sdf, mount_point: /data}\n  - {volume_id: vol-0123456789abcdef0, filesystem: ext4, label: logs}\n",
        )
        .unwrap();
        assert_eq!(
            e[0].want,
            Want::Device {
                key: "f".into(),
                name: "/dev/sdf".into()
            }
        );
        assert_eq!(e[0].volume.wait_seconds, DEFAULT_WAIT_SECONDS);
        assert_eq!(e[1].want, Want::VolumeId("vol0123456789abcdef0".into()));
        for (yaml, says) in [
            ("volumes: [{device: nvme1n1}]", "volumes[0].device"),
            ("volumes: [{volume_id: vol-12}]", "volumes[0].volume_id"),
            (
                "volumes: [{device: sdf, volume_id: vol-1a2b3c4d}]",
                "not both",
            ),
            ("volumes: [{filesystem: xfs}]", "volumes[0]: set device"),
            (
                "volumes: [{device: sdf, label: averyverylonglabel}]",
                "volumes[0].label",
            ),
            (
                "volumes: [{device: sdf, mount_point: data}]",
                "volumes[0].mount_point",
            ),
            (
                "volumes: [{device: sdf, wait_seconds: 900}]",
                "volumes[0].wait_seconds",
            ),
            (
                "volumes: [{device: sdf}, {device: xvdf}]",
                "volumes[1] names the same volume as volumes[0] (device sdf)",
            ),
            (
                "volumes: [{device: sdf, mount_point: /a}, {device: sdg, mount_point: /a}]",
                "volumes[1].mount_point",
            ),
        ] {
            let err = check(yaml).unwrap_err();
            assert!(err.contains(says), "{yaml}: {err}");
        }
        let err = check("volumes: [{device: sdf, fs: xfs}]").unwrap_err();
        assert!(err.contains("fs"), "{err}");
    }
}
