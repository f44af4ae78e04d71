//! The volumes module, then mounts, with real blkid/wipefs/mkfs and a real mount on a loop
//! device (root only): the loop device stands in for an EBS volume's namespace, behind a
//! made-up /sys/class/nvme entry whose serial is the volume id.

// One real-device harness for the storage crates.
#[path = "../../mounts/tests/host/mod.rs"]
mod host;

use std::fs;
use std::path::Path;

use serde_json::json;
use stoke_api::fake::context;
use stoke_api::{InstanceData, Module};
use stoke_mounts::MountsModule;
use stoke_volumes::VolumesModule;

use host::Host;

const VOLUME_ID: &str = "vol-0123456789abcdef0";

/// A root whose /sys/class/nvme/nvme7 has the volume's serial and whose /dev/nvme7n1 is
/// the loop device.
fn ebs_root(dir: &Path, loop_dev: &str) {
    let ctrl = dir.join("sys/class/nvme/nvme7");
    fs::create_dir_all(ctrl.join("nvme7n1")).unwrap();
    fs::write(
        ctrl.join("model"),
        "Amazon Elastic Block Store              \n",
    )
    .unwrap();
    fs::write(ctrl.join("serial"), "vol0123456789abcdef0\n").unwrap();
    fs::create_dir_all(dir.join("dev")).unwrap();
    fs::create_dir_all(dir.join("etc")).unwrap();
    // Commands get host paths: the kernel follows this link to the loop device.
    std::os::unix::fs::symlink(loop_dev, dir.join("dev/nvme7n1")).unwrap();
}

#[tokio::test]
async fn a_blank_volume_is_formatted_mounted_by_uuid_and_kept_the_next_time() {
    // Before the host: dropped after it has unmounted.
    let dir = tempfile::tempdir().unwrap();
    let Some(h) = Host::new(1, 512) else { return };
    let root = fs::canonicalize(dir.path()).unwrap();
    ebs_root(&root, &h.loops[0]);
    let cfg = json!({"volumes": [{"volume_id": VOLUME_ID, "filesystem": "ext4",
                                  "label": "appdata", "mount_point": "/data"}]});

    let fake = h.system();
    let ctx = context(&root, cfg.clone(), InstanceData::default(), fake.clone());
    let r = VolumesModule.run(&ctx).await.unwrap();
    let vol = &r.details["volumes"][0];
    assert_eq!(vol["action"], "created", "{r:?}");
    assert_eq!(h.blkid_get(&h.loops[0], "TYPE").as_deref(), Some("ext4"));
    assert_eq!(
        h.blkid_get(&h.loops[0], "LABEL").as_deref(),
        Some("appdata")
    );
    let uuid = h.blkid_get(&h.loops[0], "UUID").unwrap();
    assert_eq!(vol["uuid"], uuid.as_str(), "reported UUID is the real one");

    // mounts mounts it, really, with a fstab line by UUID.
    let mounting = h.system();
    let sys = h.mounting(mounting.clone());
    let mut mctx = context(&root, json!({}), InstanceData::default(), mounting);
    mctx.system = sys;
    mctx.prior.insert("volumes".into(), r.details.clone());
    let m = MountsModule.run(&mctx).await.unwrap();
    assert!(m.summary.starts_with("mounts: 1 mounted"), "{}", m.summary);
    let fstab = fs::read_to_string(root.join("etc/fstab")).unwrap();
    assert!(
        fstab.starts_with(&format!("UUID={uuid}\t/data\text4\tdefaults,nofail,")),
        "{fstab}"
    );
    let mounted = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let target = root.join("data").display().to_string();
    assert!(
        mounted
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(&target)),
        "{target} not in mountinfo"
    );
    fs::write(root.join("data/kept"), "data").unwrap();

    // The next boot: the filesystem is kept (mounted, even), nothing is made again.
    let fake = h.system();
    let ctx = context(&root, cfg, InstanceData::default(), fake.clone());
    let r = VolumesModule.run(&ctx).await.unwrap();
    assert_eq!(r.details["volumes"][0]["action"], "kept");
    assert_eq!(r.details["volumes"][0]["uuid"], uuid.as_str());
    assert!(
        !fake.commands().iter().any(|c| c.starts_with("mkfs")),
        "{:?}",
        fake.commands()
    );
    assert_eq!(fs::read_to_string(root.join("data/kept")).unwrap(), "data");
}

#[tokio::test]
async fn a_volume_with_someone_elses_filesystem_is_left_intact() {
    let Some(h) = Host::new(1, 512) else { return };
    let dev = h.loops[0].clone();
    let out = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-L", "theirs", &dev])
        .output()
        .unwrap();
    assert!(out.status.success());
    let theirs = h.blkid_get(&dev, "UUID").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(dir.path()).unwrap();
    ebs_root(&root, &dev);
    let fake = h.system();
    let ctx = context(
        &root,
        json!({"volumes": [{"volume_id": VOLUME_ID, "mount_point": "/data"}]}),
        InstanceData::default(),
        fake.clone(),
    );
    let err = VolumesModule.run(&ctx).await.unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "holds ext4 filesystem UUID={theirs} LABEL=theirs, not xfs"
        )),
        "{err}"
    );
    assert_eq!(h.blkid_get(&dev, "UUID").unwrap(), theirs, "untouched");
}
