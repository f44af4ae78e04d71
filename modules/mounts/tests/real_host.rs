//! disks then mounts, end to end on loop devices with real mkfs, blkid and mount
//! (root only): JBOD made once, mounted, fstab written; the second boot changes nothing.

mod host;

use std::fs;

use serde_json::{Value, json};
use stoke_api::fake::{FakeSystem, context};
use stoke_api::{Action, InstanceData, Module, Report};
use stoke_disks::DisksModule;
use stoke_mounts::MountsModule;

use host::Host;

async fn boot(h: &Host, cfg: &Value) -> (Report, Report, std::sync::Arc<FakeSystem>) {
    let fake = h.system();
    let ctx = context(h.root(), cfg.clone(), InstanceData::default(), fake.clone());
    let disks = DisksModule.run(&ctx).await.unwrap();
    let mut ctx = context(h.root(), cfg.clone(), InstanceData::default(), fake.clone());
    ctx.system = h.mounting(fake.clone());
    ctx.prior.insert("disks".into(), disks.details.clone());
    let mounts = MountsModule.run(&ctx).await.unwrap();
    (disks, mounts, fake)
}

#[tokio::test]
async fn jbod_end_to_end_twice() {
    let Some(h) = Host::new(3, 512) else {
        return;
    };
    let foreign = "# static\nUUID=0000 / ext4 defaults 0 1\n\n/swap.img none swap sw 0 0\n";
    fs::write(h.root().join("etc/fstab"), foreign).unwrap();
    // The third disk is someone's ext4 volume, named by its kernel name in `mounts:`.
    let out = std::process::Command::new("mkfs.ext4")
        .args(["-q", &h.loops[2]])
        .output()
        .unwrap();
    assert!(out.status.success());
    let extra_uuid = h.blkid_get(&h.loops[2], "UUID").unwrap();
    let cfg = json!({
        "disks": {"devices": h.loops[..2].to_vec(), "mode": "jbod",
                  "mount_options": "defaults,noatime"},
        "mounts": [[h.loops[2].clone(), "/mnt/data0/extra", "ext4"]]
    });

    let (disks, mounts, fake) = boot(&h, &cfg).await;
    assert_eq!(
        fake.commands()
            .iter()
            .filter(|c| c.starts_with("mkfs.xfs"))
            .count(),
        2
    );
    assert_eq!(mounts.details["mounts"].as_array().unwrap().len(), 3);
    assert_eq!(h.mounted.lock().unwrap().len(), 3, "really mounted");

    let fstab = fs::read_to_string(h.root().join("etc/fstab")).unwrap();
    assert!(fstab.starts_with(foreign), "{fstab}");
    let ours: Vec<&str> = fstab[foreign.len()..].lines().collect();
    assert_eq!(ours.len(), 3, "{fstab}");
    assert_eq!(
        ours[1],
        format!(
            "UUID={extra_uuid}\t/mnt/data0/extra\text4\tdefaults,nofail,\
             x-systemd.device-timeout=10s,x-stoke\t0\t2"
        ),
        "kernel name in config, UUID in fstab; nested mount after its parent"
    );
    for (i, line) in [ours[0], ours[2]].iter().enumerate() {
        let uuid = disks.details["volumes"][i]["uuid"].as_str().unwrap();
        assert_eq!(
            *line,
            format!(
                "UUID={uuid}\t/mnt/data{i}\txfs\tdefaults,noatime,nofail,\
                 x-systemd.device-timeout=10s,x-stoke=disks\t0\t2"
            )
        );
        assert!(!line.contains("/dev/loop"), "never a kernel name");
    }
    // The filesystems are really there and usable.
    fs::write(h.root().join("mnt/data1/hello"), "kept").unwrap();

    // Next boot: nothing re-made, nothing mounted again, fstab byte-identical.
    let (disks2, mounts2, fake2) = boot(&h, &cfg).await;
    assert!(
        !fake2
            .commands()
            .iter()
            .any(|c| c.starts_with("mkfs") || c.starts_with("wipefs -a")),
        "{:?}",
        fake2.commands()
    );
    assert!(
        !fake2
            .actions()
            .iter()
            .any(|a| matches!(a, Action::Mount(_)))
    );
    for i in 0..2 {
        assert_eq!(disks2.details["volumes"][i]["action"], "kept");
        assert_eq!(
            disks2.details["volumes"][i]["uuid"],
            disks.details["volumes"][i]["uuid"]
        );
    }
    for i in 0..3 {
        assert_eq!(mounts2.details["mounts"][i]["action"], "already mounted");
    }
    assert_eq!(
        fs::read_to_string(h.root().join("etc/fstab")).unwrap(),
        fstab
    );
    assert_eq!(
        fs::read_to_string(h.root().join("mnt/data1/hello")).unwrap(),
        "kept"
    );
}
