//! The volumes module against a temp root (a made-up /sys/class/nvme) and the recording
//! fake System, whose NVMe identify answers are identify blobs made here from the
//! documented layout.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use stoke_api::fake::{FakeSystem, context};
use stoke_api::{CmdOutput, InstanceData, Module, ModuleError, Report};
use stoke_volumes::VolumesModule;
use stoke_volumes::identify::{self, EBS_MODEL};

/// Identify Controller data as EBS fills it: vendor id, serial, model, and the vendor
/// area's first 32 bytes (`vs`, padded with `pad`).
fn blob(serial: &str, model: &str, vs: &[u8], pad: u8) -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    b[0..2].copy_from_slice(&identify::AMAZON_VENDOR_ID.to_le_bytes());
    let field = |b: &mut Vec<u8>, at: usize, len: usize, text: &[u8]| {
        b[at..at + len].fill(b' ');
        b[at..at + text.len()].copy_from_slice(text);
    };
    field(&mut b, 4, 20, serial.as_bytes());
    field(&mut b, 24, 40, model.as_bytes());
    b[3072..3104].fill(pad);
    b[3072..3072 + vs.len()].copy_from_slice(vs);
    // The rest of the vendor area is not the name: never read as part of it.
    b[3104..3120].copy_from_slice(b"NOT-THE-NAME-XYZ");
    b
}

#[test]
fn identify_data_of_ebs_volumes_in_every_padding() {
    let ser = "vol0123456789abcdef0";
    for (vs, pad, want) in [
        (&b"sdf"[..], b' ', Some("sdf")),
        (b"sdf", 0, Some("sdf")),
        (b"/dev/sdf", b' ', Some("sdf")),
        (b"/dev/xvdba", 0, Some("xvdba")),
        (b"xvdf\0junk\xff", 0, Some("xvdf")),
        (b"", b' ', None),
        (b"", 0, None),
        (b"\xff\xfe\x01garbage", 0, None),
        (b"SDF!", b' ', None),
    ] {
        let id = identify::parse(&blob(ser, EBS_MODEL, vs, pad)).unwrap();
        assert_eq!(id.requested.as_deref(), want, "{vs:?} padded {pad}");
        assert_eq!(id.serial, ser);
        assert!(id.is_ebs());
        assert_eq!(id.vendor_id, 0x1d0f);
    }
    let other = identify::parse(&blob("S5RTNC0T104269", "QEMU NVMe Ctrl", b"", 0)).unwrap();
    assert!(!other.is_ebs());
    assert_eq!(other.model, "QEMU NVMe Ctrl");
    let err = identify::parse(&[0u8; 512]).unwrap_err();
    assert!(err.contains("512 bytes"), "{err}");
    // A model that is not text is left empty, not guessed.
    let mut b = blob(ser, EBS_MODEL, b"sdf", b' ');
    b[30] = 0xc3;
    assert_eq!(identify::parse(&b).unwrap().model, "");
}

/// A controller in the made-up sysfs: model, serial, its namespace's block device.
fn controller(root: &Path, name: &str, model: &str, serial: &str, with_block: bool) {
    let dir = root.join("sys/class/nvme").join(name);
    fs::create_dir_all(&dir).unwrap();
    // sysfs pads these with spaces, as the identify data does.
    fs::write(dir.join("model"), format!("{model:<40}\n")).unwrap();
    fs::write(dir.join("serial"), format!("{serial:<20}\n")).unwrap();
    if with_block {
        fs::create_dir_all(dir.join(format!("{name}n1"))).unwrap();
        fs::create_dir_all(root.join("dev")).unwrap();
        fs::write(root.join(format!("dev/{name}n1")), "").unwrap();
    }
}

/// The machine of most tests: the root volume, an instance-store disk and two data
/// volumes, listed by the kernel in an order unrelated to their attachment names.
fn machine(root: &Path, fake: &FakeSystem) {
    let ebs = [
        ("nvme3", "vol0aaaaaaaaaaaaaaa1", &b"/dev/xvda"[..]),
        ("nvme0", "vol0bbbbbbbbbbbbbbb2", b"sdg"),
        ("nvme2", "vol0ccccccccccccccc3", b"sdf"),
    ];
    for (name, serial, vs) in ebs {
        controller(root, name, EBS_MODEL, serial, true);
        fake.set_nvme_identify(
            root.join(format!("dev/{name}")),
            blob(serial, EBS_MODEL, vs, b' '),
        );
    }
    controller(
        root,
        "nvme1",
        "Amazon EC2 NVMe Instance Storage",
        "AWS1234567890",
        true,
    );
}

async fn run(root: &Path, cfg: Value, fake: &Arc<FakeSystem>) -> Result<Report, ModuleError> {
    let ctx = context(root, cfg, InstanceData::default(), fake.clone());
    VolumesModule.run(&ctx).await
}

fn host(root: &Path, dev: &str) -> String {
    root.join(dev.trim_start_matches('/')).display().to_string()
}

#[tokio::test]
async fn found_by_requested_name_and_by_volume_id_then_formatted_and_linked() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let fake = FakeSystem::new();
    machine(root, &fake);
    let cfg = json!({"volumes": [
        {"device": "/dev/sdf", "mount_point": "/var/log/app", "label": "applogs"},
        {"volume_id": "vol-0bbbbbbbbbbbbbbb2", "filesystem": "ext4", "options": "noatime"},
    ]});
    let r = run(root, cfg, &fake).await.unwrap();
    let vols = &r.details["volumes"];
    assert_eq!(vols[0]["device"], "/dev/nvme2n1", "{r:?}");
    assert_eq!(vols[0]["mountpoint"], "/var/log/app");
    assert_eq!(vols[0]["action"], "created");
    assert_eq!(vols[1]["device"], "/dev/nvme0n1");
    assert_eq!(vols[1]["fstype"], "ext4");
    assert_eq!(vols[1]["mountpoint"], Value::Null);
    assert_eq!(vols[1]["mount_options"], "noatime");
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert_eq!(r.summary, "volumes: 2 found (2 created, 0 kept)");

    // Blank (blkid and wipefs found nothing): the filesystem is made with the UUID reported.
    let cmds = fake.commands();
    let uuid = vols[0]["uuid"].as_str().unwrap();
    let mkfs = format!(
        "mkfs.xfs -L applogs -m uuid={uuid} -K {}",
        host(root, "/dev/nvme2n1")
    );
    assert!(cmds.contains(&mkfs), "{cmds:#?}");
    let uuid1 = vols[1]["uuid"].as_str().unwrap();
    let mkfs1 = format!(
        "mkfs.ext4 -U {uuid1} -E nodiscard {}",
        host(root, "/dev/nvme0n1")
    );
    assert!(cmds.contains(&mkfs1), "{cmds:#?}");
    // The instance store's identify data is never asked for; only EBS controllers are.
    let asked = fake.nvme_identify_calls();
    assert!(!asked.contains(&root.join("dev/nvme1")), "{asked:?}");

    // Linked by requested name and by volume id.
    let by = root.join("dev/disk/by-ebs");
    assert_eq!(
        fs::read_link(by.join("sdf")).unwrap(),
        Path::new("../../nvme2n1")
    );
    assert_eq!(
        fs::read_link(by.join("vol-0ccccccccccccccc3")).unwrap(),
        Path::new("../../nvme2n1")
    );
    assert_eq!(
        fs::read_link(by.join("vol-0bbbbbbbbbbbbbbb2")).unwrap(),
        Path::new("../../nvme0n1")
    );
    let e = &r.details["entries"][0];
    assert_eq!(e["found_by"], "EBS NVMe controller nvme2 attached as sdf");
}

#[tokio::test]
async fn a_volume_that_holds_a_filesystem_is_kept_and_one_of_another_kind_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let fake = FakeSystem::new();
    machine(root, &fake);
    fake.on(
        &format!("blkid -p -o export {}", host(root, "/dev/nvme2n1")),
        CmdOutput::ok("UUID=1111-old\nTYPE=ext4\nUSAGE=filesystem\nLABEL=data\n"),
    );
    fake.on(
        &format!("blkid -p -o export {}", host(root, "/dev/nvme0n1")),
        CmdOutput::ok("PTUUID=x\nPTTYPE=gpt\n"),
    );
    // xfs wanted, ext4 there: refused, nothing changed (the other entry either).
    let cfg = json!({"volumes": [
        {"device": "sdf", "mount_point": "/data"},
        {"volume_id": "vol-0aaaaaaaaaaaaaaa1"},
    ]});
    let err = run(root, cfg, &fake).await.unwrap_err().to_string();
    assert!(
        err.contains("volumes[0] (device sdf): /dev/nvme2n1 holds ext4 filesystem UUID=1111-old")
            && err.contains("volumes[0].filesystem: ext4")
            && err.contains("volumes[0].overwrite: true")
            && err.contains("nothing was changed"),
        "{err}"
    );
    let changes = |f: &FakeSystem| {
        f.commands()
            .into_iter()
            .filter(|c| c.starts_with("mkfs") || c.starts_with("wipefs -a"))
            .collect::<Vec<_>>()
    };
    assert!(changes(&fake).is_empty(), "{:?}", fake.commands());

    // ext4 asked for: the filesystem is kept as it is, with its own UUID.
    let cfg =
        json!({"volumes": [{"device": "xvdf", "filesystem": "ext4", "mount_point": "/data"}]});
    let fake2 = FakeSystem::new();
    machine(root, &fake2);
    fake2.on(
        &format!("blkid -p -o export {}", host(root, "/dev/nvme2n1")),
        CmdOutput::ok("UUID=1111-old\nTYPE=ext4\nUSAGE=filesystem\nLABEL=data\n"),
    );
    let r = run(root, cfg, &fake2).await.unwrap();
    assert_eq!(r.details["volumes"][0]["action"], "kept");
    assert_eq!(r.details["volumes"][0]["uuid"], "1111-old");
    assert!(changes(&fake2).is_empty(), "{:?}", fake2.commands());

    // A partition table: refused; with overwrite: wiped, then made.
    let fake3 = FakeSystem::new();
    machine(root, &fake3);
    fake3.on(
        &format!("blkid -p -o export {}", host(root, "/dev/nvme0n1")),
        CmdOutput::ok("PTUUID=x\nPTTYPE=gpt\n"),
    );
    let err = run(root, json!({"volumes": [{"device": "sdg"}]}), &fake3)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("volumes[0] (device sdg): /dev/nvme0n1 holds gpt partition table"),
        "{err}"
    );
    assert!(changes(&fake3).is_empty());
    let r = run(
        root,
        json!({"volumes": [{"device": "sdg", "overwrite": true}]}),
        &fake3,
    )
    .await
    .unwrap();
    let c = changes(&fake3);
    assert_eq!(c.len(), 2, "{c:?}");
    assert_eq!(c[0], format!("wipefs -a {}", host(root, "/dev/nvme0n1")));
    assert!(c[1].starts_with("mkfs.xfs "), "{c:?}");
    assert!(
        r.warnings[0].contains("overwrite: wiping /dev/nvme0n1 (gpt partition table)"),
        "{:?}",
        r.warnings
    );
}

#[tokio::test(start_paused = true)]
async fn a_late_volume_is_waited_for_then_a_warning_not_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let fake = FakeSystem::new();
    machine(root, &fake);
    let cfg = json!({"volumes": [
        {"device": "sdf", "mount_point": "/data"},
        {"device": "sdh", "mount_point": "/late", "wait_seconds": 5},
    ]});
    let started = tokio::time::Instant::now();
    let r = run(root, cfg, &fake).await.unwrap();
    // Waited its bound (virtual time), then went on.
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_secs(5) && waited < std::time::Duration::from_secs(6),
        "{waited:?}"
    );
    assert_eq!(r.details["volumes"].as_array().unwrap().len(), 1);
    assert_eq!(r.details["entries"][1]["action"], "not attached");
    assert_eq!(r.details["awaited"], json!(["/late"]));
    assert_eq!(
        r.summary,
        "volumes: 1 found (1 created, 0 kept), 1 not attached"
    );
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert!(
        r.warnings[0].starts_with("volumes[1] (device sdh): not attached after 5 s"),
        "{:?}",
        r.warnings
    );
}

#[tokio::test(start_paused = true)]
async fn a_volume_attached_during_the_wait_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let fake = FakeSystem::new();
    machine(&root, &fake);
    // Attached 3 s into the boot: first the controller, its namespace a moment later.
    let late = {
        let root = root.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(3)).await;
            controller(&root, "nvme4", EBS_MODEL, "vol0ddddddddddddddd4", false);
            tokio::time::sleep(std::time::Duration::from_millis(600)).await;
            controller(&root, "nvme4", EBS_MODEL, "vol0ddddddddddddddd4", true);
        })
    };
    let cfg = json!({"volumes": [{"volume_id": "vol-0ddddddddddddddd4", "mount_point": "/data"}]});
    let r = run(&root, cfg, &fake).await.unwrap();
    late.await.unwrap();
    assert_eq!(r.details["volumes"][0]["device"], "/dev/nvme4n1", "{r:?}");
    let waited = r.details["entries"][0]["waited_ms"].as_u64().unwrap();
    assert!((3600..4500).contains(&waited), "{waited}");
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
}

#[tokio::test]
async fn unreadable_identify_data_is_a_warning_and_nothing_is_matched_by_guess() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let fake = FakeSystem::new();
    // An EBS controller whose identify data cannot be read (no answer scripted).
    controller(root, "nvme5", EBS_MODEL, "vol0eeeeeeeeeeeeeee5", true);
    let cfg = json!({"volumes": [{"device": "sdf", "wait_seconds": 0}]});
    let r = run(root, cfg, &fake).await.unwrap();
    assert_eq!(r.details["volumes"], json!([]));
    let w = r.warnings.join("\n");
    assert!(
        w.contains("cannot read the requested device name of /dev/nvme5 (vol0eeeeeeeeeeeeeee5)"),
        "{w}"
    );
    assert!(w.contains("volumes[0] (device sdf): not attached"), "{w}");
}

#[tokio::test]
async fn no_entries_reports_an_empty_list_and_bad_entries_name_entry_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeSystem::new();
    let r = run(dir.path(), json!({}), &fake).await.unwrap();
    assert_eq!(r.details["volumes"], json!([]));
    let err = run(
        dir.path(),
        json!({"volumes": [{"device": "sdf"}, {"volume_id": "vol-xyz"}]}),
        &fake,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("volumes[1].volume_id"), "{err}");
    assert!(fake.commands().is_empty());
}

#[tokio::test]
async fn a_failed_mkfs_names_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let fake = FakeSystem::new();
    machine(root, &fake);
    fake.on("mkfs.xfs", CmdOutput::failed(1, "mkfs.xfs: no space"));
    let err = run(root, json!({"volumes": [{"device": "sdg"}]}), &fake)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("volumes[0] (device sdg): `mkfs.xfs ") && err.contains("no space"),
        "{err}"
    );
}

#[test]
fn plan_says_what_it_would_look_for() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeSystem::new();
    machine(dir.path(), &fake);
    let ctx = context(
        dir.path(),
        json!({"volumes": [{"volume_id": "vol-0bbbbbbbbbbbbbbb2", "mount_point": "/data"},
                           {"device": "sdq", "overwrite": true}]}),
        InstanceData::default(),
        fake.clone(),
    );
    let p = VolumesModule.plan(&ctx).unwrap();
    assert!(
        p.contains("volumes[0] (volume_id vol-0bbbbbbbbbbbbbbb2): now nvme0n1")
            && p.contains("mounted at /data by mounts")
            && p.contains("3 EBS NVMe controllers")
            && p.contains("(overwrite: wiped)"),
        "{p}"
    );
    assert!(fake.commands().is_empty());
}
