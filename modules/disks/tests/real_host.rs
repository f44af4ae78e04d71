//! The disks module with real mkfs/blkid/wipefs on loop devices (root only).
//! RAID0 with the real mdadm needs the md driver, which this host's kernel lacks:
//! that path runs in the VM tests.

// One real-device harness for both storage crates (mounts needs the superset: real mounts).
#[path = "../../mounts/tests/host/mod.rs"]
mod host;

use serde_json::json;
use stoke_api::fake::context;
use stoke_api::{InstanceData, Module, ModuleError};
use stoke_disks::DisksModule;

use host::Host;

fn mkfs_count(fake: &stoke_api::fake::FakeSystem) -> usize {
    fake.commands()
        .iter()
        .filter(|c| c.starts_with("mkfs"))
        .count()
}

#[tokio::test]
async fn single_xfs_is_made_once_and_kept_on_the_next_run() {
    let Some(h) = Host::new(1, 512) else { return };
    let cfg = json!({"disks": {"devices": [h.loops[0].clone()]}});

    let fake = h.system();
    let ctx = context(h.root(), cfg.clone(), InstanceData::default(), fake.clone());
    let r = DisksModule.run(&ctx).await.unwrap();
    assert_eq!(mkfs_count(&fake), 1, "{:?}", fake.commands());
    let v = &r.details["volumes"][0];
    assert_eq!(v["action"], "created");
    assert_eq!(h.blkid_get(&h.loops[0], "TYPE").as_deref(), Some("xfs"));
    assert_eq!(
        h.blkid_get(&h.loops[0], "LABEL").as_deref(),
        Some("ephemeral")
    );
    let uuid = h.blkid_get(&h.loops[0], "UUID").unwrap();
    assert_eq!(v["uuid"], uuid.as_str(), "reported UUID is the real one");

    let fake = h.system();
    let ctx = context(h.root(), cfg, InstanceData::default(), fake.clone());
    let r = DisksModule.run(&ctx).await.unwrap();
    assert_eq!(mkfs_count(&fake), 0, "{:?}", fake.commands());
    assert_eq!(r.details["volumes"][0]["action"], "kept");
    assert_eq!(r.details["volumes"][0]["uuid"], uuid.as_str());
    assert_eq!(h.blkid_get(&h.loops[0], "UUID").unwrap(), uuid);
}

#[tokio::test]
async fn jbod_ext4_twice_makes_each_filesystem_once() {
    let Some(h) = Host::new(2, 512) else { return };
    let cfg = json!({"disks": {"devices": h.loops.clone(), "mode": "jbod", "filesystem": "ext4"}});
    let fake = h.system();
    let ctx = context(h.root(), cfg.clone(), InstanceData::default(), fake.clone());
    let r = DisksModule.run(&ctx).await.unwrap();
    assert_eq!(mkfs_count(&fake), 2);
    for (i, l) in h.loops.iter().enumerate() {
        assert_eq!(h.blkid_get(l, "TYPE").as_deref(), Some("ext4"));
        assert_eq!(h.blkid_get(l, "LABEL"), Some(format!("ephemeral{i}")));
        assert_eq!(
            r.details["volumes"][i]["mountpoint"],
            format!("/mnt/data{i}")
        );
    }
    let fake = h.system();
    let ctx = context(h.root(), cfg, InstanceData::default(), fake.clone());
    let r2 = DisksModule.run(&ctx).await.unwrap();
    assert_eq!(mkfs_count(&fake), 0);
    assert_eq!(r2.details["volumes"], {
        let mut v = r.details["volumes"].clone();
        for x in v.as_array_mut().unwrap() {
            x["action"] = json!("kept");
        }
        v
    });
}

#[tokio::test]
async fn a_foreign_filesystem_is_refused_and_left_intact_unless_forced() {
    let Some(h) = Host::new(1, 512) else { return };
    let dev = h.loops[0].clone();
    let out = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-L", "theirs", &dev])
        .output()
        .unwrap();
    assert!(out.status.success());
    let theirs = h.blkid_get(&dev, "UUID").unwrap();

    let fake = h.system();
    let ctx = context(
        h.root(),
        json!({"disks": {"devices": [dev.clone()]}}),
        InstanceData::default(),
        fake.clone(),
    );
    let err = DisksModule.run(&ctx).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ModuleError::Refused(_)), "{text}");
    assert!(
        text.contains(&format!(
            "{dev} holds ext4 filesystem UUID={theirs} LABEL=theirs"
        )),
        "{text}"
    );
    assert_eq!(mkfs_count(&fake), 0);
    assert_eq!(h.blkid_get(&dev, "UUID").unwrap(), theirs, "untouched");

    let fake = h.system();
    let ctx = context(
        h.root(),
        json!({"disks": {"devices": [dev.clone()], "force": true}}),
        InstanceData::default(),
        fake.clone(),
    );
    DisksModule.run(&ctx).await.unwrap();
    // Commands get host paths (the root's /dev is the host's here).
    let host_dev = h.root().join(dev.trim_start_matches('/'));
    let wipe = format!("wipefs -a {}", host_dev.display());
    assert!(fake.commands().contains(&wipe), "{:?}", fake.commands());
    assert_eq!(h.blkid_get(&dev, "TYPE").as_deref(), Some("xfs"));
}
