//! Typed contracts between modules: what one module reports (its `Report::details`) that
//! another reads back through [`crate::Context::prior`]. Both sides use these types, so a
//! field renamed on one side is a compile error, not a silently empty value at boot.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// What `disks` made, for `mounts` (a part of the disks report's details).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DisksOutput {
    #[serde(default)]
    pub volumes: Vec<DiskVolume>,
    /// Instance-store names (`ephemeral0`) → the device each turned out to be.
    #[serde(default)]
    pub ephemeral: BTreeMap<String, String>,
}

/// What `volumes` made or kept on EBS volumes, for `mounts` (a part of its report's
/// details). `mounts` mounts them as it mounts the `disks` volumes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VolumesOutput {
    #[serde(default)]
    pub volumes: Vec<DiskVolume>,
    /// Mount points of configured volumes that were not attached this boot: `mounts` keeps
    /// their fstab lines from an earlier boot (`nofail`), so the volume is mounted at the
    /// next boot's start when it is there again.
    #[serde(default)]
    pub awaited: Vec<String>,
}

/// One filesystem `disks` (or `volumes`) made or kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiskVolume {
    /// Block device holding the filesystem (`/dev/md/ephemeral`, a disk, an EBS volume).
    pub device: String,
    /// Filesystem UUID (None only when it could not be read).
    pub uuid: Option<String>,
    pub fstype: String,
    #[serde(default)]
    pub label: Option<String>,
    /// Where `mounts` should mount it; None when `disks.mount` is false (or a `volumes`
    /// entry has no `mount_point`).
    pub mountpoint: Option<String>,
    #[serde(default = "default_mount_options")]
    pub mount_options: String,
    /// "created" | "kept".
    #[serde(default)]
    pub action: String,
    /// Whole disks underneath.
    #[serde(default)]
    pub members: Vec<String>,
    /// JBOD index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
}

fn default_mount_options() -> String {
    "defaults".into()
}

/// Reads module `from`'s output from `prior` (its report details this run, or its last
/// run's): `None` when it has none, an error naming the module when it does not parse.
pub fn prior_output<T: DeserializeOwned>(
    prior: &BTreeMap<String, serde_json::Value>,
    from: &str,
) -> Option<Result<T, String>> {
    match prior.get(from) {
        Some(v) if !v.is_null() => Some(
            serde_json::from_value(v.clone())
                .map_err(|e| format!("reading the {from} report: {e}")),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_with_more_fields_reads_as_the_output_and_absent_is_none() {
        let prior = BTreeMap::from([
            (
                "disks".to_string(),
                serde_json::json!({
                    "mode": "auto", "layout": "raid0", "steps": [],
                    "ephemeral": {"ephemeral0": "/dev/nvme1n1"},
                    "volumes": [{"device": "/dev/md/ephemeral", "uuid": "u-1", "fstype": "xfs",
                                 "mountpoint": "/mnt", "members": ["/dev/nvme1n1"]}],
                }),
            ),
            ("off".to_string(), serde_json::Value::Null),
            ("bad".to_string(), serde_json::json!({"volumes": 3})),
        ]);
        let out: DisksOutput = prior_output(&prior, "disks").unwrap().unwrap();
        assert_eq!(out.volumes[0].mount_options, "defaults");
        assert_eq!(out.ephemeral["ephemeral0"], "/dev/nvme1n1");
        assert!(prior_output::<DisksOutput>(&prior, "off").is_none());
        assert!(prior_output::<DisksOutput>(&prior, "nope").is_none());
        let err = prior_output::<DisksOutput>(&prior, "bad")
            .unwrap()
            .unwrap_err();
        assert!(err.starts_with("reading the bad report:"), "{err}");
    }
}
