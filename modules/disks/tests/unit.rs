//! The disks module against a fake /sys tree and the recording fake System.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use stoke_api::fake::{FakeSystem, context};
use stoke_api::{CmdOutput, InstanceData, Module, ModuleError};
use stoke_disks::DisksModule;

const STORE: &str = "Amazon EC2 NVMe Instance Storage";
const EBS: &str = "Amazon Elastic Block Store";

/// A fake machine under a temp root: /sys/block, /dev nodes (plain files), mountinfo.
struct Machine {
    dir: tempfile::TempDir,
}

impl Machine {
    fn new() -> Self {
        let m = Machine {
            dir: tempfile::tempdir().unwrap(),
        };
        fs::create_dir_all(m.p("sys/block")).unwrap();
        fs::create_dir_all(m.p("dev")).unwrap();
        m
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn p(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join(rel)
    }

    fn dev(&self, name: &str) -> String {
        self.p(&format!("dev/{name}")).display().to_string()
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.p(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    fn disk(&self, name: &str, dev: &str, model: Option<&str>) -> &Self {
        let b = format!("sys/block/{name}");
        self.write(&format!("{b}/dev"), &format!("{dev}\n"));
        self.write(&format!("{b}/size"), "3750000000\n");
        fs::create_dir_all(self.p(&format!("{b}/holders"))).unwrap();
        if let Some(m) = model {
            // The kernel pads the model with spaces.
            self.write(&format!("{b}/device/model"), &format!("{m:<40}\n"));
        }
        self.write(&format!("dev/{name}"), "");
        self
    }

    fn partition(&self, disk: &str, part: &str, dev: &str) -> &Self {
        let b = format!("sys/block/{disk}/{part}");
        self.write(&format!("{b}/dev"), &format!("{dev}\n"));
        self.write(&format!("{b}/partition"), "1\n");
        self.write(&format!("dev/{part}"), "");
        self
    }

    /// `holder` (md127, dm-0) is built on `disk`.
    fn held(&self, disk: &str, holder: &str) -> &Self {
        self.write(&format!("sys/block/{disk}/holders/{holder}"), "");
        self.write(&format!("sys/block/{holder}/slaves/{disk}"), "");
        self.write(&format!("dev/{holder}"), "");
        self
    }

    /// udevd has handled these devices: their database entries exist.
    fn udev_done(&self, devs: &[&str]) -> &Self {
        for d in devs {
            self.write(&format!("run/udev/data/b{d}"), "");
        }
        self
    }

    fn mountinfo(&self, text: &str) -> &Self {
        self.write("proc/self/mountinfo", text);
        self
    }

    /// A typical Nitro instance: EBS root on nvme0n1 (partition 1 is /), two instance-store disks.
    fn nitro() -> Self {
        let m = Machine::new();
        m.disk("nvme0n1", "259:0", Some(EBS))
            .partition("nvme0n1", "nvme0n1p1", "259:1")
            .disk("nvme1n1", "259:2", Some(STORE))
            .disk("nvme2n1", "259:3", Some(STORE))
            .mountinfo(
                "22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p1 rw\n\
                 23 22 0:21 / /proc rw - proc proc rw\n",
            );
        m
    }
}

async fn run(
    m: &Machine,
    cfg: Value,
    inst: InstanceData,
    fake: &Arc<FakeSystem>,
) -> Result<stoke_api::Report, ModuleError> {
    let ctx = context(m.root(), cfg, inst, fake.clone());
    DisksModule.run(&ctx).await
}

fn blkid(fake: &FakeSystem, dev: &str, out: CmdOutput) {
    fake.on(&format!("blkid -p -o export {dev}"), out);
}

fn nothing_found() -> CmdOutput {
    CmdOutput::failed(2, "")
}

fn ran(fake: &FakeSystem, prefix: &str) -> Vec<String> {
    fake.commands()
        .into_iter()
        .filter(|c| c.starts_with(prefix))
        .collect()
}

/// Commands that change a disk.
fn writes(fake: &FakeSystem) -> Vec<String> {
    fake.commands()
        .into_iter()
        .filter(|c| {
            c.starts_with("mkfs")
                || c.starts_with("mdadm --create")
                || c.starts_with("mdadm --assemble")
                || c.starts_with("wipefs -a")
        })
        .collect()
}

#[tokio::test]
async fn nitro_instance_store_becomes_raid0_with_xfs_and_root_is_never_used() {
    let m = Machine::nitro();
    let fake = FakeSystem::new();
    for d in ["nvme1n1", "nvme2n1"] {
        blkid(&fake, &m.dev(d), nothing_found());
    }
    let r = run(&m, json!({}), InstanceData::default(), &fake)
        .await
        .unwrap();
    let d = &r.details;
    assert_eq!(d["layout"], "raid0");
    let disks: Vec<&str> = d["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["device"].as_str().unwrap())
        .collect();
    assert_eq!(disks, ["/dev/nvme1n1", "/dev/nvme2n1"]);
    let md = m.dev("md/ephemeral");
    let create = ran(&fake, "mdadm --create");
    assert_eq!(
        create,
        [format!(
            "mdadm --create {md} --run --level=0 --raid-devices=2 --chunk=256K --metadata=1.2 \
             --name=ephemeral --homehost=any {} {}",
            m.dev("nvme1n1"),
            m.dev("nvme2n1")
        )]
    );
    // No udev in this root: nothing to wait for, before or after making the array.
    assert!(ran(&fake, "udevadm").is_empty(), "{:?}", fake.commands());
    let mkfs = ran(&fake, "mkfs.xfs");
    assert_eq!(mkfs.len(), 1);
    assert!(
        mkfs[0].contains("-L ephemeral") && mkfs[0].contains(" -K "),
        "{mkfs:?}"
    );
    assert!(mkfs[0].ends_with(&md), "{mkfs:?}");
    assert!(
        !fake.commands().iter().any(|c| c.contains("nvme0n1")),
        "root disk untouched"
    );
    let v = &d["volumes"][0];
    assert_eq!(v["device"], "/dev/md/ephemeral");
    assert_eq!(v["mountpoint"], "/mnt");
    assert_eq!(v["fstype"], "xfs");
    assert_eq!(v["action"], "created");
    let uuid = v["uuid"].as_str().unwrap();
    assert!(mkfs[0].contains(&format!("uuid={uuid}")));
    assert_eq!(d["array"]["action"], "created");
    assert_eq!(d["array"]["chunk_kib"], 256);
    assert!(d["steps"].as_array().unwrap().len() >= 2);
    assert!(r.summary.contains("raid0"), "{}", r.summary);

    // Where udev runs: first the two disks' events (handled already), then the new array's,
    // which makes its link.
    m.write("run/udev/control", "");
    m.udev_done(&["259:2", "259:3", "9:127"]);
    let fake = FakeSystem::new();
    for d in ["nvme1n1", "nvme2n1"] {
        blkid(&fake, &m.dev(d), nothing_found());
    }
    let (root, link) = (m.root().to_path_buf(), m.p("dev/md/ephemeral"));
    fake.respond(move |cmd| {
        (cmd.args.first().map(String::as_str) == Some("--create")).then(|| {
            fs::write(root.join("dev/md127"), "").unwrap();
            fs::create_dir_all(root.join("sys/block/md127")).unwrap();
            fs::write(root.join("sys/block/md127/dev"), "9:127\n").unwrap();
            fs::create_dir_all(link.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink("/dev/md127", &link).unwrap();
            CmdOutput::ok("")
        })
    });
    let r = run(&m, json!({}), InstanceData::default(), &fake)
        .await
        .unwrap();
    let steps: Vec<(&str, &str)> = r.details["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_str().unwrap(), s["target"].as_str().unwrap()))
        .collect();
    assert_eq!(steps[0], ("wait for udev", "/dev/nvme1n1 /dev/nvme2n1"));
    // Then what was found, each member's probe, the array's creation, and its own udev event.
    assert_eq!(steps[1], ("discover", "/dev/nvme1n1 /dev/nvme2n1"));
    assert_eq!(
        steps[2..4],
        [("probe", "/dev/nvme1n1"), ("probe", "/dev/nvme2n1")]
    );
    assert_eq!(
        steps[5],
        ("wait for udev", "/dev/md/ephemeral"),
        "{steps:?}"
    );
    assert!(
        ran(&fake, "udevadm").is_empty(),
        "no process: {:?}",
        fake.commands()
    );
    assert_eq!(r.warnings, Vec::<String>::new());
}

#[tokio::test]
async fn root_disk_with_an_instance_store_model_is_still_excluded() {
    let m = Machine::new();
    m.disk("nvme0n1", "259:0", Some(STORE))
        .disk("nvme1n1", "259:1", Some(STORE))
        .mountinfo("22 1 259:0 / / rw - xfs /dev/nvme0n1 rw\n");
    let fake = FakeSystem::new();
    let r = run(&m, json!({}), InstanceData::default(), &fake)
        .await
        .unwrap();
    assert_eq!(r.details["layout"], "single");
    assert_eq!(r.details["excluded"][0]["device"], "/dev/nvme0n1");
    assert_eq!(
        r.details["excluded"][0]["reason"],
        "holds the root filesystem"
    );
    let mkfs = ran(&fake, "mkfs.xfs");
    assert_eq!(mkfs.len(), 1);
    assert!(mkfs[0].ends_with(&m.dev("nvme1n1")));
    assert!(ran(&fake, "mdadm").is_empty(), "one disk: no array");
}

#[tokio::test]
async fn root_on_lvm_excludes_the_disks_underneath() {
    let m = Machine::new();
    m.disk("nvme0n1", "259:0", Some(STORE))
        .partition("nvme0n1", "nvme0n1p2", "259:5")
        .disk("dm-0", "253:0", None)
        .disk("nvme1n1", "259:1", Some(STORE))
        .mountinfo("22 1 253:0 / / rw - xfs /dev/mapper/vg-root rw\n");
    m.write("sys/block/nvme0n1/nvme0n1p2/holders/dm-0", "");
    m.write("sys/block/dm-0/slaves/nvme0n1p2", "");
    let fake = FakeSystem::new();
    let r = run(&m, json!({}), InstanceData::default(), &fake)
        .await
        .unwrap();
    assert_eq!(r.details["excluded"][0]["device"], "/dev/nvme0n1");
    assert_eq!(r.details["disks"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn imds_mapping_finds_xen_names_and_records_ephemeral_names() {
    let m = Machine::new();
    m.disk("xvda", "202:0", None)
        .disk("xvdb", "202:16", None)
        .disk("xvdc", "202:32", None)
        .mountinfo("22 1 202:0 / / rw - ext4 /dev/xvda rw\n");
    let inst = InstanceData {
        block_device_mapping: BTreeMap::from([
            ("ami".into(), "/dev/sda1".into()),
            ("root".into(), "/dev/sda1".into()),
            ("ephemeral1".into(), "sdc".into()),
            ("ephemeral0".into(), "sdb".into()),
            ("ephemeral2".into(), "sdd".into()),
        ]),
        ..InstanceData::default()
    };
    let fake = FakeSystem::new();
    let r = run(&m, json!({"disks": {"mode": "jbod"}}), inst, &fake)
        .await
        .unwrap();
    let d = &r.details;
    assert_eq!(
        d["ephemeral"],
        json!({"ephemeral0": "/dev/xvdb", "ephemeral1": "/dev/xvdc"})
    );
    assert_eq!(d["disks"][0]["origin"], "imds ephemeral0");
    assert_eq!(d["disks"][1]["device"], "/dev/xvdc");
    assert!(d["notes"][0].as_str().unwrap().contains("ephemeral2"));
    // No NVMe: no -K.
    assert!(ran(&fake, "mkfs.xfs").iter().all(|c| !c.contains(" -K ")));
}

#[tokio::test]
async fn explicit_list_and_glob_win_over_discovery() {
    let m = Machine::nitro();
    m.disk("vdb", "252:16", None)
        .disk("vdc", "252:32", None)
        .disk("vdd", "252:48", None);
    let fake = FakeSystem::new();
    let r = run(
        &m,
        json!({"disks": {"devices": ["/dev/vd[b-c]"], "mode": "jbod", "filesystem": "ext4"}}),
        InstanceData::default(),
        &fake,
    )
    .await
    .unwrap();
    let got: Vec<&str> = r.details["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["device"].as_str().unwrap())
        .collect();
    assert_eq!(got, ["/dev/vdb", "/dev/vdc"]);
    assert_eq!(r.details["disks"][0]["origin"], "config");
    let mkfs = ran(&fake, "mkfs.ext4");
    assert_eq!(mkfs.len(), 2);
    assert!(
        mkfs.iter()
            .all(|c| !c.contains("nodiscard") && !c.contains("nvme"))
    );

    // A literal list keeps its order, and a by-id style symlink resolves to the disk.
    fs::create_dir_all(m.p("dev/disk/by-id")).unwrap();
    std::os::unix::fs::symlink("/dev/vdd", m.p("dev/disk/by-id/virtio-data")).unwrap();
    let fake = FakeSystem::new();
    let r = run(
        &m,
        json!({"disks": {"devices": ["/dev/disk/by-id/virtio-data", "/dev/vdb", "/dev/vdd"]}}),
        InstanceData::default(),
        &fake,
    )
    .await
    .unwrap();
    let got: Vec<&str> = r.details["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["device"].as_str().unwrap())
        .collect();
    assert_eq!(
        got,
        ["/dev/vdd", "/dev/vdb"],
        "deduplicated, in config order"
    );
}

#[tokio::test]
async fn a_configured_link_udev_has_not_made_yet_is_waited_for() {
    let m = Machine::new();
    m.disk("vdb", "252:16", None);
    m.write("run/udev/control", "");
    let link = m.p("dev/disk/by-id/virtio-eph0");
    let cfg = json!({"disks": {"devices": ["/dev/disk/by-id/virtio-eph0"], "settle_timeout": 7}});

    // udev handles the disk (its database entry, its link) while the module waits.
    let fake = FakeSystem::new();
    blkid(&fake, &m.dev("vdb"), nothing_found());
    let (root, target, made) = (m.root().to_path_buf(), "/dev/vdb", link.clone());
    tokio::spawn(async move {
        fs::create_dir_all(root.join("run/udev/data")).unwrap();
        fs::write(root.join("run/udev/data/b252:16"), "").unwrap();
        fs::create_dir_all(made.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, &made).unwrap();
    });
    let r = run(&m, cfg.clone(), InstanceData::default(), &fake)
        .await
        .unwrap();
    assert_eq!(r.details["disks"][0]["device"], "/dev/vdb");
    assert_eq!(r.details["steps"][0]["step"], "wait for udev");
    assert!(ran(&fake, "udevadm").is_empty(), "{:?}", fake.commands());

    // A link that never comes: bounded by settle_timeout, then discovery says so.
    fs::remove_file(&link).unwrap();
    let fake = FakeSystem::new();
    let cfg = json!({"disks": {"devices": ["/dev/disk/by-id/virtio-eph0"], "settle_timeout": 1}});
    let err = run(&m, cfg, InstanceData::default(), &fake)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("virtio-eph0 does not exist"), "{err}");
}

#[tokio::test]
async fn bad_input_is_a_clear_error_and_touches_nothing() {
    let m = Machine::nitro();
    let cases = [
        (
            json!({"disks": {"devices": ["/dev/nvme9n1"], "settle_timeout": 1}}),
            "/dev/nvme9n1 does not exist",
        ),
        (
            json!({"disks": {"devices": ["/dev/nvme1n1", "/dev/nvme0n1"]}}),
            "holds the root filesystem",
        ),
        (
            json!({"disks": {"devices": ["/dev/nvme0n1p1"]}}),
            "is a partition of nvme0n1",
        ),
        (json!({"disks": {"chunk_size": "384K"}}), "power of two"),
        (json!({"disks": {"chunk_size": 100}}), "power of two"),
        (json!({"disks": {"array_name": "my array"}}), "array_name"),
        (
            json!({"disks": {"mode": "jbod", "jbod_mount_point": "/mnt/data"}}),
            "{{ index }}",
        ),
    ];
    for (cfg, want) in cases {
        let fake = FakeSystem::new();
        let err = run(&m, cfg.clone(), InstanceData::default(), &fake)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{cfg}: {err}");
        // Not a command that touches a disk (waiting for a missing device starts none).
        assert!(fake.commands().is_empty(), "{cfg}: {:?}", fake.commands());
    }
}

#[tokio::test]
async fn jbod_makes_one_filesystem_per_disk_with_stable_indexes() {
    let m = Machine::nitro();
    let fake = FakeSystem::new();
    // nvme1n1 carries the filesystem made as JBOD disk 1 on an earlier boot (device
    // names change between boots): it keeps index 1; the blank disk gets 0.
    blkid(
        &fake,
        &m.dev("nvme1n1"),
        CmdOutput::ok("UUID=aaaa\nLABEL=ephemeral1\nTYPE=xfs\nUSAGE=filesystem\n"),
    );
    blkid(&fake, &m.dev("nvme2n1"), nothing_found());
    let r = run(
        &m,
        json!({"disks": {"mode": "jbod"}}),
        InstanceData::default(),
        &fake,
    )
    .await
    .unwrap();
    // The report reads back as the typed contract `mounts` uses.
    let out: stoke_api::outputs::DisksOutput = serde_json::from_value(r.details.clone()).unwrap();
    assert_eq!(out.volumes.len(), 2);
    assert!(out.volumes.iter().all(|v| v.index.is_some()), "{out:?}");
    let v = r.details["volumes"].as_array().unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(
        (
            &v[0]["device"],
            &v[0]["action"],
            &v[0]["mountpoint"],
            &v[0]["uuid"]
        ),
        (
            &json!("/dev/nvme1n1"),
            &json!("kept"),
            &json!("/mnt/data1"),
            &json!("aaaa")
        )
    );
    assert_eq!(
        (
            &v[1]["device"],
            &v[1]["action"],
            &v[1]["mountpoint"],
            &v[1]["label"]
        ),
        (
            &json!("/dev/nvme2n1"),
            &json!("created"),
            &json!("/mnt/data0"),
            &json!("ephemeral0")
        )
    );
    assert_eq!(writes(&fake).len(), 1);
    assert!(writes(&fake)[0].starts_with("mkfs.xfs -L ephemeral0"));
    assert!(ran(&fake, "mdadm").is_empty());
}

#[tokio::test]
async fn single_uses_the_first_disk_only() {
    let m = Machine::nitro();
    let fake = FakeSystem::new();
    let r = run(
        &m,
        json!({"disks": {"mode": "single", "filesystem": "ext4", "label": "scratch",
                         "mount_point": "/scratch", "mkfs_options": ["-m", "0"]}}),
        InstanceData::default(),
        &fake,
    )
    .await
    .unwrap();
    let mkfs = ran(&fake, "mkfs.ext4");
    assert_eq!(mkfs.len(), 1);
    assert!(
        mkfs[0].starts_with("mkfs.ext4 -L scratch -U ")
            && mkfs[0].ends_with(&format!("-E nodiscard -m 0 {}", m.dev("nvme1n1"))),
        "{mkfs:?}"
    );
    assert_eq!(r.details["volumes"][0]["mountpoint"], "/scratch");
    assert!(
        r.warnings[0].contains("nvme2n1 left alone"),
        "{:?}",
        r.warnings
    );
}

#[tokio::test]
async fn mode_off_does_nothing() {
    let m = Machine::nitro();
    let fake = FakeSystem::new();
    let r = run(
        &m,
        json!({"disks": {"mode": "off"}}),
        InstanceData::default(),
        &fake,
    )
    .await
    .unwrap();
    assert!(fake.commands().is_empty());
    assert!(r.summary.contains("off"));
}

/// mdadm says md127 is our RAID0 array; blkid finds an xfs filesystem (UUID 1111) on it.
fn md127_is_our_array_with_xfs(m: &Machine, fake: &FakeSystem) {
    fake.on(
        &format!("mdadm --detail --export {}", m.dev("md127")),
        CmdOutput::ok("MD_LEVEL=raid0\nMD_DEVICES=2\nMD_NAME=any:ephemeral\n"),
    );
    blkid(
        fake,
        &m.dev("md/ephemeral"),
        CmdOutput::ok("UUID=1111\nTYPE=xfs\nUSAGE=filesystem\n"),
    );
}

#[tokio::test]
async fn active_array_of_ours_is_used_as_is() {
    let m = Machine::nitro();
    m.held("nvme1n1", "md127").held("nvme2n1", "md127");
    m.write("dev/md/ephemeral", "");
    let fake = FakeSystem::new();
    md127_is_our_array_with_xfs(&m, &fake);
    let r = run(&m, json!({}), InstanceData::default(), &fake)
        .await
        .unwrap();
    assert!(writes(&fake).is_empty(), "{:?}", fake.commands());
    assert_eq!(r.details["array"]["action"], "active");
    assert_eq!(
        r.details["array"]["members"],
        json!(["/dev/nvme1n1", "/dev/nvme2n1"])
    );
    assert_eq!(r.details["volumes"][0]["uuid"], "1111");
    assert_eq!(r.details["volumes"][0]["action"], "kept");
}

#[tokio::test]
async fn an_array_udev_is_still_assembling_is_waited_for() {
    // A reboot: udev has added one member of our array when the module starts
    // (stoke-local does not wait for udevd) and adds the other while we wait for the events
    // of the disks we may use: only theirs, not udev's whole queue.
    let m = Machine::nitro();
    m.held("nvme1n1", "md127");
    m.write("run/udev/control", "");
    m.udev_done(&["259:0", "259:1", "259:2"]);
    let fake = FakeSystem::new();
    let root = m.root().to_path_buf();
    // udev's event for nvme2n1: `mdadm --incremental` adds it to the array, then the
    // database entry is written.
    tokio::spawn(async move {
        for (p, text) in [
            ("sys/block/nvme2n1/holders/md127", ""),
            ("sys/block/md127/slaves/nvme2n1", ""),
            ("dev/md/ephemeral", ""),
            ("run/udev/data/b259:3", ""),
        ] {
            let p = root.join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }
    });
    md127_is_our_array_with_xfs(&m, &fake);
    let r = run(&m, json!({}), InstanceData::default(), &fake)
        .await
        .unwrap();
    assert_eq!(
        r.details["steps"][0]["step"], "wait for udev",
        "timed in status"
    );
    assert_eq!(
        r.details["steps"][0]["target"], "/dev/nvme1n1 /dev/nvme2n1",
        "the instance-store disks only (not the root disk)"
    );
    assert!(writes(&fake).is_empty(), "{:?}", fake.commands());
    assert_eq!(r.details["array"]["action"], "active");
    assert_eq!(
        r.details["array"]["members"],
        json!(["/dev/nvme1n1", "/dev/nvme2n1"])
    );
    assert_eq!(r.warnings, Vec::<String>::new());

    // Where udev does not run (a sandbox root, a container) nothing waits for it
    // before looking at the disks (only after making the array, for its links).
    let m = Machine::nitro();
    let fake = FakeSystem::new();
    run(&m, json!({}), InstanceData::default(), &fake)
        .await
        .unwrap();
    let cmds = fake.commands();
    let create = cmds.iter().position(|c| c.starts_with("mdadm --create"));
    assert!(
        !cmds[..create.unwrap()]
            .iter()
            .any(|c| c.starts_with("udevadm")),
        "{cmds:?}"
    );
}

#[tokio::test]
async fn what_is_waited_for_is_the_devices_the_module_may_use() {
    let m = Machine::nitro();
    m.write("run/udev/control", "");
    m.disk("vdb", "252:16", None)
        .partition("vdb", "vdb1", "252:17")
        .disk("loop0", "7:0", None);
    fs::create_dir_all(m.p("dev/disk/by-id")).unwrap();
    std::os::unix::fs::symlink("/dev/vdb", m.p("dev/disk/by-id/virtio-eph0")).unwrap();
    m.udev_done(&[
        "259:0", "259:1", "259:2", "259:3", "252:16", "252:17", "7:0",
    ]);
    async fn watched(m: &Machine, cfg: Value) -> String {
        let fake = FakeSystem::new();
        let r = run(m, cfg, InstanceData::default(), &fake).await;
        assert!(ran(&fake, "udevadm").is_empty(), "{:?}", fake.commands());
        r.map(|r| {
            r.details["steps"][0]["target"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .unwrap_or_default()
    }
    // A listed link, and the partitions of its disk (an array or volume group on one
    // makes the disk unusable).
    assert_eq!(
        watched(
            &m,
            json!({"disks": {"devices": ["/dev/disk/by-id/virtio-eph0"], "force": true}})
        )
        .await,
        "/dev/disk/by-id/virtio-eph0 /dev/vdb /dev/vdb1"
    );
    // A glob matches links udev makes: every disk and partition but loop devices.
    assert_eq!(
        watched(
            &m,
            json!({"disks": {"devices": ["/dev/disk/by-id/virtio-*"], "force": true}})
        )
        .await,
        "/dev/nvme0n1 /dev/nvme0n1p1 /dev/nvme1n1 /dev/nvme2n1 /dev/vdb /dev/vdb1"
    );
}

#[tokio::test]
async fn someone_elses_array_is_excluded_or_refused() {
    let m = Machine::nitro();
    m.held("nvme2n1", "md0");
    let fake = FakeSystem::new();
    fake.on(
        "mdadm --detail --export",
        CmdOutput::ok("MD_LEVEL=raid1\nMD_NAME=db:pgdata\n"),
    );
    let r = run(&m, json!({}), InstanceData::default(), &fake)
        .await
        .unwrap();
    assert_eq!(r.details["layout"], "single");
    assert!(
        r.details["excluded"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("md0 (array db:pgdata")
    );
    let fake2 = FakeSystem::new();
    fake2.on(
        "mdadm --detail --export",
        CmdOutput::ok("MD_NAME=db:pgdata\n"),
    );
    let err = run(
        &m,
        json!({"disks": {"devices": ["/dev/nvme1n1", "/dev/nvme2n1"]}}),
        InstanceData::default(),
        &fake2,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ModuleError::Refused(_)), "{err}");
    assert!(writes(&fake2).is_empty());
}

#[tokio::test]
async fn stopped_array_of_ours_is_assembled_not_recreated() {
    let m = Machine::nitro();
    let fake = FakeSystem::new();
    for d in ["nvme1n1", "nvme2n1"] {
        blkid(
            &fake,
            &m.dev(d),
            CmdOutput::ok("UUID=abcd\nLABEL=any:ephemeral\nTYPE=linux_raid_member\nUSAGE=raid\n"),
        );
    }
    fake.on(
        "mdadm --examine --export",
        CmdOutput::ok("MD_LEVEL=raid0\nMD_DEVICES=2\nMD_NAME=any:ephemeral\n"),
    );
    blkid(
        &fake,
        &m.dev("md/ephemeral"),
        CmdOutput::ok("UUID=2222\nTYPE=xfs\nUSAGE=filesystem\n"),
    );
    let r = run(&m, json!({}), InstanceData::default(), &fake)
        .await
        .unwrap();
    assert_eq!(
        writes(&fake),
        [format!(
            "mdadm --assemble {} {} {}",
            m.dev("md/ephemeral"),
            m.dev("nvme1n1"),
            m.dev("nvme2n1")
        )]
    );
    assert_eq!(r.details["array"]["action"], "assembled");
    assert_eq!(r.details["volumes"][0]["action"], "kept");
    assert_eq!(r.details["volumes"][0]["uuid"], "2222");
}

#[tokio::test]
async fn incomplete_array_of_ours_is_refused_without_force() {
    let m = Machine::nitro();
    let fake = FakeSystem::new();
    blkid(
        &fake,
        &m.dev("nvme1n1"),
        CmdOutput::ok("UUID=abcd\nLABEL=any:ephemeral\nTYPE=linux_raid_member\n"),
    );
    blkid(
        &fake,
        &m.dev("nvme2n1"),
        CmdOutput::ok("UUID=abcd\nLABEL=any:ephemeral\nTYPE=linux_raid_member\n"),
    );
    fake.on(
        "mdadm --examine --export",
        CmdOutput::ok("MD_LEVEL=raid0\nMD_DEVICES=3\n"),
    );
    let err = run(&m, json!({}), InstanceData::default(), &fake)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("had 3 members, 2 are here"), "{err}");
    assert!(writes(&fake).is_empty());
}

#[tokio::test]
async fn foreign_data_is_refused_naming_device_and_signature() {
    let m = Machine::nitro();
    let fake = FakeSystem::new();
    blkid(&fake, &m.dev("nvme1n1"), nothing_found());
    blkid(
        &fake,
        &m.dev("nvme2n1"),
        CmdOutput::ok("UUID=dead-beef\nTYPE=ext4\nUSAGE=filesystem\n"),
    );
    let err = run(&m, json!({}), InstanceData::default(), &fake)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ModuleError::Refused(_)), "{text}");
    assert!(
        text.contains("/dev/nvme2n1 holds ext4 filesystem UUID=dead-beef"),
        "{text}"
    );
    assert!(text.contains("force"), "{text}");
    assert!(writes(&fake).is_empty(), "{:?}", fake.commands());

    // JBOD: a partition table, and a signature only wipefs sees.
    let fake = FakeSystem::new();
    blkid(
        &fake,
        &m.dev("nvme1n1"),
        CmdOutput::ok("PTTYPE=gpt\nPTUUID=x\n"),
    );
    blkid(&fake, &m.dev("nvme2n1"), nothing_found());
    fake.on(
        &format!("wipefs -n --noheadings -O TYPE,OFFSET {}", m.dev("nvme2n1")),
        CmdOutput::ok("gpt 0x3a3817d5e00\n"),
    );
    let err = run(
        &m,
        json!({"disks": {"mode": "jbod"}}),
        InstanceData::default(),
        &fake,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("/dev/nvme1n1 holds gpt partition table"),
        "{err}"
    );
    assert!(
        err.contains("/dev/nvme2n1 holds signatures found by wipefs: gpt at 0x3a3817d5e00"),
        "{err}"
    );
    assert!(writes(&fake).is_empty());

    // A filesystem of another type than configured is foreign too.
    let fake = FakeSystem::new();
    blkid(
        &fake,
        &m.dev("nvme1n1"),
        CmdOutput::ok("TYPE=ext4\nUSAGE=filesystem\n"),
    );
    let err = run(
        &m,
        json!({"disks": {"mode": "single"}}),
        InstanceData::default(),
        &fake,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("holds ext4 filesystem"), "{err}");
}

#[tokio::test]
async fn force_wipes_foreign_data_then_creates() {
    let m = Machine::nitro();
    let fake = FakeSystem::new();
    blkid(&fake, &m.dev("nvme1n1"), nothing_found());
    blkid(
        &fake,
        &m.dev("nvme2n1"),
        CmdOutput::ok("TYPE=ext4\nUSAGE=filesystem\n"),
    );
    let r = run(
        &m,
        json!({"disks": {"force": true}}),
        InstanceData::default(),
        &fake,
    )
    .await
    .unwrap();
    let w = writes(&fake);
    assert_eq!(w[0], format!("wipefs -a {}", m.dev("nvme2n1")));
    assert!(w[1].starts_with("mdadm --create"));
    assert!(w[2].starts_with("mkfs.xfs"));
    assert_eq!(w.len(), 3);
    assert!(r.warnings.iter().any(|x| x.contains("force")));
}

#[tokio::test]
async fn force_does_not_remake_what_is_already_right() {
    let m = Machine::nitro();
    let fake = FakeSystem::new();
    blkid(
        &fake,
        &m.dev("nvme1n1"),
        CmdOutput::ok("UUID=1\nLABEL=ephemeral0\nTYPE=xfs\nUSAGE=filesystem\n"),
    );
    blkid(
        &fake,
        &m.dev("nvme2n1"),
        CmdOutput::ok("UUID=2\nLABEL=ephemeral1\nTYPE=xfs\nUSAGE=filesystem\n"),
    );
    run(
        &m,
        json!({"disks": {"mode": "jbod", "force": true}}),
        InstanceData::default(),
        &fake,
    )
    .await
    .unwrap();
    assert!(writes(&fake).is_empty());
}

#[tokio::test]
async fn a_failing_blkid_never_leads_to_mkfs() {
    let m = Machine::nitro();
    for out in [
        CmdOutput::failed(4, "blkid: error: cannot open"),
        CmdOutput::failed(2, "error: /dev/nvme1n1: No such device"),
    ] {
        let fake = FakeSystem::new();
        blkid(&fake, &m.dev("nvme1n1"), out);
        let err = run(
            &m,
            json!({"disks": {"mode": "jbod"}}),
            InstanceData::default(),
            &fake,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ModuleError::Command { .. }), "{err}");
        assert!(writes(&fake).is_empty());
    }
    // A failing wipefs listing too.
    let fake = FakeSystem::new();
    blkid(&fake, &m.dev("nvme1n1"), nothing_found());
    fake.on("wipefs -n", CmdOutput::failed(1, "wipefs: error"));
    assert!(
        run(
            &m,
            json!({"disks": {"mode": "jbod"}}),
            InstanceData::default(),
            &fake
        )
        .await
        .is_err()
    );
    assert!(writes(&fake).is_empty());
}

#[tokio::test]
async fn mounted_jbod_disk_is_kept_and_never_touched() {
    let m = Machine::nitro();
    m.mountinfo(
        "22 1 259:1 / / rw - ext4 /dev/nvme0n1p1 rw\n\
         40 22 259:2 / /mnt/data0 rw - xfs /dev/nvme1n1 rw\n",
    );
    let fake = FakeSystem::new();
    blkid(
        &fake,
        &m.dev("nvme1n1"),
        CmdOutput::ok("UUID=1\nLABEL=ephemeral0\nTYPE=xfs\nUSAGE=filesystem\n"),
    );
    blkid(&fake, &m.dev("nvme2n1"), nothing_found());
    let r = run(
        &m,
        json!({"disks": {"mode": "jbod"}}),
        InstanceData::default(),
        &fake,
    )
    .await
    .unwrap();
    assert_eq!(r.details["volumes"][0]["action"], "kept");
    assert_eq!(writes(&fake).len(), 1);

    // raid0 over a mounted disk: refused, even with force.
    let fake = FakeSystem::new();
    let err = run(
        &m,
        json!({"disks": {"force": true}}),
        InstanceData::default(),
        &fake,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("/dev/nvme1n1 is mounted at /mnt/data0"),
        "{err}"
    );
    assert!(writes(&fake).is_empty());
}

#[tokio::test]
async fn sandbox_blank_output_means_blank_disks() {
    // Commands only recorded: blkid and wipefs print nothing and succeed.
    let m = Machine::nitro();
    let fake = FakeSystem::new();
    let r = run(
        &m,
        json!({"disks": {"mdadm_conf": "/etc/mdadm/mdadm.conf"}}),
        InstanceData::default(),
        &fake,
    )
    .await
    .unwrap();
    assert_eq!(r.details["volumes"][0]["action"], "created");
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("mdadm.conf not updated"))
    );
}

#[tokio::test]
async fn mdadm_conf_gets_a_managed_array_line() {
    let m = Machine::nitro();
    m.write(
        "etc/mdadm/mdadm.conf",
        "HOMEHOST <system>\nARRAY /dev/md/other UUID=x\n",
    );
    let fake = FakeSystem::new();
    fake.on(
        "mdadm --detail --brief",
        CmdOutput::ok("ARRAY /dev/md/ephemeral metadata=1.2 name=any:ephemeral UUID=a:b:c:d\n"),
    );
    run(
        &m,
        json!({"disks": {"mdadm_conf": "/etc/mdadm/mdadm.conf"}}),
        InstanceData::default(),
        &fake,
    )
    .await
    .unwrap();
    let text = fs::read_to_string(m.p("etc/mdadm/mdadm.conf")).unwrap();
    assert_eq!(
        text,
        "HOMEHOST <system>\nARRAY /dev/md/other UUID=x\n# BEGIN stoke disks\n\
         ARRAY /dev/md/ephemeral metadata=1.2 name=any:ephemeral UUID=a:b:c:d\n# END stoke disks\n"
    );
}

#[test]
fn plan_says_what_would_happen_and_why() {
    let m = Machine::nitro();
    let fake = FakeSystem::new();
    let ctx = context(m.root(), json!({}), InstanceData::default(), fake.clone());
    let p = DisksModule.plan(&ctx).unwrap();
    assert!(p.contains("raid0 /dev/md/ephemeral of 2 disks"), "{p}");
    assert!(p.contains("/dev/nvme1n1 (nvme instance store)"), "{p}");
    assert!(p.contains("mounted at /mnt"), "{p}");
    assert!(fake.commands().is_empty());
    let ctx = context(
        m.root(),
        json!({"disks": {"chunk_size": "3K"}}),
        InstanceData::default(),
        fake.clone(),
    );
    assert!(DisksModule.plan(&ctx).unwrap().contains("would fail"));
}

#[test]
fn spec_is_local_per_boot_with_no_dependencies() {
    let s = DisksModule.spec();
    assert_eq!(
        (s.name, s.stage, s.frequency),
        (
            "disks",
            stoke_api::Stage::Local,
            stoke_api::Frequency::PerBoot
        )
    );
    assert!(s.after.is_empty());
    assert_eq!(stoke_disks::modules().len(), 1);
    let mut g = schemars::SchemaGenerator::default();
    let schema = (s.config.schema)(&mut g);
    let all = format!(
        "{}{}",
        serde_json::to_string(&schema).unwrap(),
        serde_json::to_string(g.definitions()).unwrap()
    );
    assert!(all.contains("chunk_size"), "{all}");
}

#[tokio::test]
async fn a_stale_signature_on_a_new_array_is_wiped_not_kept() {
    let m = Machine::nitro();
    let fake = FakeSystem::new();
    for d in ["nvme1n1", "nvme2n1"] {
        blkid(&fake, &m.dev(d), nothing_found());
    }
    blkid(
        &fake,
        &m.dev("md/ephemeral"),
        CmdOutput::ok("UUID=old\nTYPE=xfs\nUSAGE=filesystem\n"),
    );
    let r = run(&m, json!({}), InstanceData::default(), &fake)
        .await
        .unwrap();
    let w = writes(&fake);
    assert!(w[0].starts_with("mdadm --create"));
    assert_eq!(w[1], format!("wipefs -a {}", m.dev("md/ephemeral")));
    assert!(w[2].starts_with("mkfs.xfs"));
    assert_ne!(r.details["volumes"][0]["uuid"], "old");
}
