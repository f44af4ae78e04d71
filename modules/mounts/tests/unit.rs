//! The mounts module against a temp root and the recording fake System.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use stoke_api::fake::{FakeSystem, context};
use stoke_api::{Action, CmdOutput, InstanceData, Module, ModuleError, MountRequest, Report};
use stoke_mounts::MountsModule;

const FOREIGN: &str = "# /etc/fstab: static file system information.\n\
UUID=0a0a-root\t/\text4\terrors=remount-ro\t0 1\n\
\n\
# swap was on /dev/sda5 during installation\n\
/swapfile none swap sw 0 0\n\
LABEL=my\\040backup  /srv/backup   xfs   noatime,nofail   0  0";

fn root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("etc")).unwrap();
    fs::write(dir.path().join("etc/fstab"), FOREIGN).unwrap();
    dir
}

fn raid0_report() -> Value {
    json!({
        "mode": "raid0", "layout": "raid0",
        "ephemeral": {},
        "volumes": [{
            "device": "/dev/md/ephemeral", "uuid": "5e1f-0001", "fstype": "xfs",
            "label": "ephemeral", "mountpoint": "/mnt", "mount_options": "defaults,noatime",
            "action": "created", "members": ["/dev/nvme1n1", "/dev/nvme2n1"]
        }]
    })
}

async fn run(
    dir: &Path,
    cfg: Value,
    disks: Option<Value>,
    fake: &Arc<FakeSystem>,
) -> Result<Report, ModuleError> {
    let mut ctx = context(dir, cfg, InstanceData::default(), fake.clone());
    if let Some(d) = disks {
        ctx.prior.insert("disks".into(), d);
    }
    MountsModule.run(&ctx).await
}

fn mounts(fake: &FakeSystem) -> Vec<MountRequest> {
    fake.actions()
        .into_iter()
        .filter_map(|a| match a {
            Action::Mount(m) => Some(m),
            _ => None,
        })
        .collect()
}

fn fstab(dir: &Path) -> String {
    fs::read_to_string(dir.join("etc/fstab")).unwrap()
}

/// Writes a mountinfo saying `source` is mounted at each host path.
fn mountinfo(dir: &Path, mounted: &[(&str, &Path)]) {
    let mut text = String::from("22 1 259:1 / / rw - ext4 /dev/nvme0n1p1 rw\n");
    for (i, (src, target)) in mounted.iter().enumerate() {
        text.push_str(&format!(
            "{} 22 9:127 / {} rw,relatime - xfs {src} rw\n",
            40 + i,
            target.display().to_string().replace(' ', "\\040")
        ));
    }
    fs::create_dir_all(dir.join("proc/self")).unwrap();
    fs::write(dir.join("proc/self/mountinfo"), text).unwrap();
}

#[tokio::test]
async fn mounts_the_disks_array_with_a_uuid_line_and_leaves_foreign_lines() {
    let dir = root();
    let d = dir.path();
    let fake = FakeSystem::new();
    let r = run(d, json!({}), Some(raid0_report()), &fake)
        .await
        .unwrap();
    let text = fstab(d);
    assert_eq!(
        text,
        format!(
            "{FOREIGN}\nUUID=5e1f-0001\t/mnt\txfs\t\
             defaults,noatime,nofail,x-systemd.device-timeout=10s,x-stoke=disks\t0\t2\n"
        )
    );
    let m = mounts(&fake);
    assert_eq!(m.len(), 1);
    assert_eq!(
        m[0],
        MountRequest {
            source: d.join("dev/md/ephemeral").display().to_string(),
            target: d.join("mnt"),
            fstype: "xfs".into(),
            options: "noatime".into(),
        }
    );
    assert!(d.join("mnt").is_dir());
    assert!(
        !fake.commands().iter().any(|c| c.contains("daemon-reload")),
        "no reload during boot: it drops pending device timeouts"
    );
    assert!(r.summary.contains("1 mounted"), "{}", r.summary);
    assert_eq!(r.details["fstab_changed"], true);

    // Again, now that it is mounted: nothing changes, nothing is mounted twice.
    mountinfo(
        d,
        &[(
            &d.join("dev/md/ephemeral").display().to_string(),
            &d.join("mnt"),
        )],
    );
    let fake = FakeSystem::new();
    let r = run(d, json!({}), Some(raid0_report()), &fake)
        .await
        .unwrap();
    assert_eq!(fstab(d), text);
    assert!(mounts(&fake).is_empty());
    assert!(fake.commands().iter().all(|c| !c.starts_with("systemctl")));
    assert_eq!(r.details["fstab_changed"], false);
    assert_eq!(r.details["mounts"][0]["action"], "already mounted");
}

#[tokio::test]
async fn cloud_config_mounts_are_resolved_and_mounted_in_path_order() {
    let dir = root();
    let d = dir.path();
    for dev in ["xvdb", "xvdc", "xvdf"] {
        fs::create_dir_all(d.join("dev")).unwrap();
        fs::write(d.join("dev").join(dev), "").unwrap();
    }
    let fake = FakeSystem::new();
    fake.on(
        &format!("blkid -s UUID -o value {}", d.join("dev/xvdf").display()),
        CmdOutput::ok("f00d-0f\n"),
    );
    fake.on(
        "blkid -o device -t LABEL=logs",
        CmdOutput::ok("/dev/xvdg\n"),
    );
    fake.on("blkid -o device -t UUID=gone", CmdOutput::failed(2, ""));
    let disks =
        json!({"volumes": [], "ephemeral": {"ephemeral0": "/dev/xvdb", "ephemeral1": "/dev/xvdc"}});
    let cfg = json!({
        "mounts": [
            ["LABEL=logs", "/data/logs"],
            ["ephemeral1", "/data", "ext4", "defaults", 0, 2],
            ["sdf", "/srv/f", "xfs"],
            ["ephemeral3", "/e3"],
            ["UUID=gone", "/gone", "xfs"],
            ["fs-1.efs:/", "/efs", "nfs4", "_netdev"],
            ["sdz"],
            ["xvdb", null]
        ],
        "mount_default_fields": [null, null, "auto", "defaults,nofail", "0", "2"],
        "mount_device_timeout": "30s"
    });
    let r = run(d, cfg.clone(), Some(disks.clone()), &fake)
        .await
        .unwrap();
    let targets: Vec<String> = mounts(&fake)
        .iter()
        .map(|m| m.target.strip_prefix(d).unwrap().display().to_string())
        .collect();
    assert_eq!(targets, ["data", "data/logs", "srv/f"], "parents first");
    let m = mounts(&fake);
    assert_eq!(m[0].source, d.join("dev/xvdc").display().to_string());
    assert_eq!(m[1].source, "/dev/xvdg", "blkid resolved the label");
    let added = &fstab(d)[FOREIGN.len()..];
    assert_eq!(
        added,
        "\n/dev/xvdc\t/data\text4\tdefaults,nofail,x-systemd.device-timeout=30s,x-stoke\t0\t2\n\
         LABEL=logs\t/data/logs\tauto\tdefaults,nofail,x-systemd.device-timeout=30s,x-stoke\t0\t2\n\
         fs-1.efs:/\t/efs\tnfs4\t_netdev,nofail,x-systemd.device-timeout=30s,x-stoke\t0\t2\n\
         UUID=gone\t/gone\txfs\tdefaults,nofail,x-systemd.device-timeout=30s,x-stoke\t0\t2\n\
         UUID=f00d-0f\t/srv/f\txfs\tdefaults,nofail,x-systemd.device-timeout=30s,x-stoke\t0\t2\n"
    );
    let w = r.warnings.join("\n");
    assert!(
        w.contains("ephemeral3 is not in the instance's block-device-mapping"),
        "{w}"
    );
    assert!(w.contains("no device with UUID=gone"), "{w}");
    let efs = r.details["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountpoint"] == "/efs")
        .unwrap();
    assert!(
        efs["action"]
            .as_str()
            .unwrap()
            .starts_with("left to systemd")
    );

    // Removing entries from the config removes exactly their lines.
    let fake = FakeSystem::new();
    let r = run(
        d,
        json!({"mounts": [["ephemeral1", "/data", "ext4", "defaults", 0, 2]]}),
        Some(disks),
        &fake,
    )
    .await
    .unwrap();
    assert_eq!(
        fstab(d),
        format!(
            "{FOREIGN}\n/dev/xvdc\t/data\text4\tdefaults,nofail,x-systemd.device-timeout=10s,x-stoke\t0\t2\n"
        )
    );
    assert_eq!(r.details["fstab_removed"].as_array().unwrap().len(), 4);
}

fn ran_udevadm(fake: &FakeSystem) -> Vec<String> {
    fake.commands()
        .into_iter()
        .filter(|c| c.starts_with("udevadm"))
        .collect()
}

#[tokio::test]
async fn a_link_udev_makes_while_settling_is_mounted() {
    // stoke-local does not wait for udevd: the by-label link appears while we settle.
    let dir = root();
    let d = dir.path();
    fs::create_dir_all(d.join("run/udev")).unwrap();
    fs::write(d.join("run/udev/control"), "").unwrap();
    let fake = FakeSystem::new();
    let link = d.join("dev/disk/by-label/logs");
    let made = link.clone();
    fake.respond(move |cmd| {
        (cmd.args.first().map(String::as_str) == Some("settle")).then(|| {
            fs::create_dir_all(made.parent().unwrap()).unwrap();
            fs::write(&made, "").unwrap();
            CmdOutput::ok("")
        })
    });
    let cfg = json!({"mounts": [["/dev/disk/by-label/logs", "/logs", "xfs"]]});
    let r = run(d, cfg.clone(), None, &fake).await.unwrap();
    assert_eq!(fake.commands()[0], "udevadm settle --timeout=10");
    assert_eq!(mounts(&fake)[0].source, link.display().to_string());
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);

    // Once the link is there, only its own event is waited for (udev's database entry of
    // the device it leads to), not udev's whole queue; a tag is its /dev/disk/by-* link.
    fs::remove_file(&link).unwrap();
    fs::write(d.join("dev/vdb"), "").unwrap();
    std::os::unix::fs::symlink("/dev/vdb", &link).unwrap();
    fs::create_dir_all(d.join("sys/block/vdb")).unwrap();
    fs::write(d.join("sys/block/vdb/dev"), "252:16\n").unwrap();
    fs::create_dir_all(d.join("run/udev/data")).unwrap();
    fs::write(d.join("run/udev/data/b252:16"), "").unwrap();
    let fake = FakeSystem::new();
    let cfg2 = json!({"mounts": [["/dev/disk/by-label/logs", "/logs", "xfs"], ["LABEL=logs", "/l2", "xfs"]]});
    let r = run(d, cfg2, None, &fake).await.unwrap();
    assert!(ran_udevadm(&fake).is_empty(), "{:?}", fake.commands());
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);

    // Without udev (a sandbox root) nothing waits, and the missing link is reported.
    let dir = root();
    let fake = FakeSystem::new();
    let r = run(dir.path(), cfg, None, &fake).await.unwrap();
    assert!(fake.commands().is_empty(), "{:?}", fake.commands());
    assert!(mounts(&fake).is_empty());
    assert!(
        r.warnings.join("\n").contains("does not exist"),
        "{:?}",
        r.warnings
    );
}

#[tokio::test]
async fn ephemeral_disks_used_by_the_disks_module_are_not_mounted_twice() {
    let dir = root();
    let d = dir.path();
    let mut report = raid0_report();
    report["ephemeral"] = json!({"ephemeral0": "/dev/nvme1n1"});
    let fake = FakeSystem::new();
    let r = run(
        d,
        json!({"mounts": [["ephemeral0", "/mnt"]]}),
        Some(report),
        &fake,
    )
    .await
    .unwrap();
    assert!(
        r.warnings[0].contains("used by the disks module"),
        "{:?}",
        r.warnings
    );
    assert_eq!(mounts(&fake).len(), 1);
}

#[tokio::test]
async fn disks_lines_are_kept_when_there_is_no_disks_report_and_dropped_when_it_says_so() {
    let dir = root();
    let d = dir.path();
    run(d, json!({}), Some(raid0_report()), &FakeSystem::new())
        .await
        .unwrap();
    let with = fstab(d);
    run(d, json!({}), None, &FakeSystem::new()).await.unwrap();
    assert_eq!(fstab(d), with, "no report: kept");
    run(
        d,
        json!({}),
        Some(json!({"mode": "off", "volumes": []})),
        &FakeSystem::new(),
    )
    .await
    .unwrap();
    assert_eq!(
        fstab(d),
        FOREIGN.to_string() + "\n",
        "report without volumes: removed"
    );
}

#[tokio::test]
async fn bad_input_is_a_clear_error_and_touches_nothing() {
    let dir = root();
    let d = dir.path();
    fs::write(d.join("srvfile"), "x").unwrap();
    fs::create_dir_all(d.join("dev")).unwrap();
    fs::write(d.join("dev/vdb"), "").unwrap();
    let cases = [
        (
            json!({"mounts": [["/dev/vdb", "/srvfile"]]}),
            "/srvfile (mounts[0])",
        ),
        (
            json!({"mounts": [["/dev/vdb", "/srvfile/sub"]]}),
            "is not a directory",
        ),
        (
            json!({"mounts": [["/dev/vdb", "/srv/backup"]]}),
            "fstab line 6 already mounts",
        ),
        (
            json!({"mounts": [["/dev/vdb", "relative"]]}),
            "not an absolute path",
        ),
        // Paths, not spellings: each of these is a mount point already taken, or the root.
        (
            json!({"mounts": [["/dev/vdb", "/srv/./backup/"]]}),
            "fstab line 6 already mounts",
        ),
        (
            json!({"mounts": [["/dev/vdb", "/srv//x/../backup"]]}),
            "fstab line 6 already mounts",
        ),
        (
            json!({"mounts": [["/dev/vdb", "/mnt/.."]]}),
            "mount point / is the root",
        ),
        (
            json!({"mounts": [["/dev/vdb", "/./"]]}),
            "mount point / is the root",
        ),
        (
            json!({"mounts": [["/dev/vdb", "/proc/x"]]}),
            "one of the system's own",
        ),
        (
            json!({"mounts": [["/dev/vdb", "/x", "xfs", "defaults", "zero"]]}),
            "freq",
        ),
        (json!({"mounts": [[]]}), "1 to 6 fields"),
        (
            json!({"mount_device_timeout": "soon"}),
            "mount_device_timeout",
        ),
    ];
    for (cfg, want) in cases {
        let fake = FakeSystem::new();
        let err = run(d, cfg.clone(), Some(raid0_report()), &fake)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{cfg}: {err}");
        assert!(
            fake.actions()
                .iter()
                .all(|a| !matches!(a, Action::Mount(_)))
        );
        assert_eq!(fstab(d), FOREIGN, "{cfg}: fstab untouched");
    }
}

#[tokio::test]
async fn mounted_from_something_else_is_an_error_after_the_rest_is_done() {
    let dir = root();
    let d = dir.path();
    mountinfo(d, &[("/dev/sdq", &d.join("mnt"))]);
    fs::create_dir_all(d.join("dev")).unwrap();
    fs::write(d.join("dev/vdb"), "").unwrap();
    let fake = FakeSystem::new();
    let err = run(
        d,
        json!({"mounts": [["/dev/vdb", "/scratch"]]}),
        Some(raid0_report()),
        &fake,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("/mnt is already mounted from /dev/sdq"),
        "{err}"
    );
    assert_eq!(mounts(&fake).len(), 1, "the other entry was still mounted");
    assert!(fstab(d).contains("x-stoke=disks"));
}

#[tokio::test]
async fn a_failed_mount_is_reported() {
    let dir = root();
    let d = dir.path();
    let fake = FakeSystem::new();
    fake.fail_mount(d.join("mnt"));
    let err = run(d, json!({}), Some(raid0_report()), &fake)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("mounting UUID=5e1f-0001 at /mnt"), "{err}");
    assert!(err.contains("/etc/fstab was updated"), "{err}");

    // Failed, and the warnings and what each entry did still reach status.
    let fake = FakeSystem::new();
    fake.fail_mount(d.join("mnt"));
    let cfg = json!({"mounts": [["sdq", "/q"]]});
    match run(d, cfg, Some(raid0_report()), &fake).await {
        Err(ModuleError::Partial { report, .. }) => {
            assert!(
                report.warnings[0].contains("/dev/sdq does not exist"),
                "{report:?}"
            );
            assert_eq!(report.details["mounts"][0]["mountpoint"], "/mnt");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn no_fstab_yet_and_jbod_volumes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let report = json!({"volumes": [
        {"device": "/dev/nvme2n1", "uuid": "b", "fstype": "ext4", "mountpoint": "/mnt/data1", "mount_options": "defaults", "members": ["/dev/nvme2n1"]},
        {"device": "/dev/nvme1n1", "uuid": "a", "fstype": "ext4", "mountpoint": "/mnt/data0", "mount_options": "defaults", "members": ["/dev/nvme1n1"]},
        {"device": "/dev/nvme3n1", "uuid": null, "fstype": "ext4", "mountpoint": "/mnt/data2", "mount_options": "defaults", "members": ["/dev/nvme3n1"]}
    ]});
    let fake = FakeSystem::new();
    let r = run(d, json!({}), Some(report), &fake).await.unwrap();
    assert_eq!(
        fstab(d),
        "UUID=a\t/mnt/data0\text4\tdefaults,nofail,x-systemd.device-timeout=10s,x-stoke=disks\t0\t2\n\
         UUID=b\t/mnt/data1\text4\tdefaults,nofail,x-systemd.device-timeout=10s,x-stoke=disks\t0\t2\n"
    );
    assert!(r.warnings[0].contains("UUID unknown"), "{:?}", r.warnings);
    assert_eq!(mounts(&fake).len(), 3);
}

/// The EBS volumes `volumes` reports are mounted as the disks volumes are, with their own
/// marker; without a volumes report their lines are kept, with one they follow it.
#[tokio::test]
async fn volumes_results_are_mounted_by_uuid_and_their_lines_follow_the_report() {
    let dir = root();
    let d = dir.path();
    let volumes = json!({
        "volumes": [{"device": "/dev/nvme2n1", "uuid": "vol-fs-1", "fstype": "xfs",
                     "mountpoint": "/data", "mount_options": "noatime", "action": "created",
                     "members": ["/dev/nvme2n1"]},
                    {"device": "/dev/nvme3n1", "uuid": "vol-fs-2", "fstype": "ext4",
                     "mountpoint": null, "mount_options": "defaults", "action": "kept",
                     "members": ["/dev/nvme3n1"]}],
        "entries": []
    });
    let fake = FakeSystem::new();
    let mut ctx = context(d, json!({}), InstanceData::default(), fake.clone());
    ctx.prior.insert("disks".into(), raid0_report());
    ctx.prior.insert("volumes".into(), volumes);
    MountsModule.run(&ctx).await.unwrap();
    let line = "UUID=vol-fs-1\t/data\txfs\tnoatime,nofail,x-systemd.device-timeout=10s,x-stoke=volumes\t0\t2\n";
    assert!(fstab(d).contains(line), "{}", fstab(d));
    assert!(fstab(d).contains("x-stoke=disks"), "{}", fstab(d));
    let m = mounts(&fake);
    assert_eq!(m.len(), 2, "{m:?}");
    assert!(
        m.iter()
            .any(|r| r.source.ends_with("/dev/nvme2n1") && r.target == d.join("data")),
        "{m:?}"
    );

    // volumes did not report this boot (disabled): its line stays.
    let fake = FakeSystem::new();
    let mut ctx = context(d, json!({}), InstanceData::default(), fake.clone());
    ctx.prior.insert("disks".into(), raid0_report());
    MountsModule.run(&ctx).await.unwrap();
    assert!(fstab(d).contains(line), "{}", fstab(d));

    // The volume is not attached this boot: its line stays for the next one.
    let fake = FakeSystem::new();
    let mut ctx = context(d, json!({}), InstanceData::default(), fake.clone());
    ctx.prior.insert("disks".into(), raid0_report());
    ctx.prior.insert(
        "volumes".into(),
        json!({"volumes": [], "awaited": ["/data/"], "entries": []}),
    );
    MountsModule.run(&ctx).await.unwrap();
    assert!(fstab(d).contains(line), "{}", fstab(d));
    assert_eq!(mounts(&fake).len(), 1, "only the array");

    // It reported no volumes (the entry was removed from the config): the line goes.
    let fake = FakeSystem::new();
    let mut ctx = context(d, json!({}), InstanceData::default(), fake.clone());
    ctx.prior.insert("disks".into(), raid0_report());
    ctx.prior
        .insert("volumes".into(), json!({"volumes": [], "entries": []}));
    MountsModule.run(&ctx).await.unwrap();
    assert!(!fstab(d).contains("x-stoke=volumes"), "{}", fstab(d));
    assert!(fstab(d).contains("x-stoke=disks"), "{}", fstab(d));
}

#[test]
fn spec_runs_after_disks_and_volumes() {
    let s = MountsModule.spec();
    assert_eq!(s.after, ["disks", "volumes"]);
    assert_eq!(s.stage, stoke_api::Stage::Local);
    let mut g = schemars::SchemaGenerator::default();
    let schema = (s.config.schema)(&mut g);
    let all = format!(
        "{}{}",
        serde_json::to_string(&schema).unwrap(),
        serde_json::to_string(g.definitions()).unwrap()
    );
    assert!(all.contains("mount_default_fields"), "{all}");
    let spec = stoke_api::config_spec::<stoke_mounts::Config>();
    (spec.validate)("mounts:\n  - [ephemeral0, /mnt, auto, \"defaults,nofail\", 0, 2]\n  - [sdb]\nmount_default_fields: [null, null, auto, defaults, \"0\", \"2\"]\n").unwrap();
}

#[tokio::test]
async fn systemd_mounting_the_same_line_first_is_not_a_failure() {
    let dir = root();
    let d = dir.path().to_path_buf();
    mountinfo(&d, &[]);
    let fake = FakeSystem::new();
    // systemd wins the race: the line is mounted by the time our mount(2) runs.
    let info = d.clone();
    fake.on_mount(move |req| {
        mountinfo(&info, &[(req.source.as_str(), req.target.as_path())]);
        Err(stoke_api::SysError::Call {
            call: "mount",
            what: req.target.display().to_string(),
            source: std::io::Error::from_raw_os_error(16),
        })
    });
    let r = run(&d, json!({}), Some(raid0_report()), &fake)
        .await
        .unwrap();
    assert!(r.summary.contains("1 already mounted"), "{}", r.summary);

    // A different filesystem in the way is still an error.
    let dir2 = root();
    let d2 = dir2.path().to_path_buf();
    mountinfo(&d2, &[]);
    let fake2 = FakeSystem::new();
    let info2 = d2.clone();
    fake2.on_mount(move |req| {
        mountinfo(&info2, &[("/dev/sdz9", req.target.as_path())]);
        Err(stoke_api::SysError::Call {
            call: "mount",
            what: req.target.display().to_string(),
            source: std::io::Error::from_raw_os_error(16),
        })
    });
    let err = run(&d2, json!({}), Some(raid0_report()), &fake2)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("mounting"), "{err}");
}

/// Device nodes under the temp root (plain files: existence is what is checked).
fn devs(dir: &Path, names: &[&str]) {
    fs::create_dir_all(dir.join("dev")).unwrap();
    for n in names {
        let p = dir.join("dev").join(n);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, "").unwrap();
    }
}

/// The fstab lines stoke added after FOREIGN.
fn added(dir: &Path) -> String {
    fstab(dir)[FOREIGN.len()..].to_string()
}

fn ec2_instance(bdm: &[(&str, &str)]) -> InstanceData {
    InstanceData {
        block_device_mapping: bdm
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..InstanceData::default()
    }
}

async fn run_on(
    dir: &Path,
    cfg: Value,
    instance: InstanceData,
    disks: Option<Value>,
    fake: &Arc<FakeSystem>,
) -> Result<Report, ModuleError> {
    let mut ctx = context(dir, cfg, instance, fake.clone());
    if let Some(d) = disks {
        ctx.prior.insert("disks".into(), d);
    }
    MountsModule.run(&ctx).await
}

fn sources(dir: &Path, fake: &FakeSystem) -> Vec<(String, String)> {
    mounts(fake)
        .iter()
        .map(|m| {
            (
                m.source
                    .strip_prefix(&dir.display().to_string())
                    .unwrap_or(&m.source)
                    .to_string(),
                m.target.strip_prefix(dir).unwrap().display().to_string(),
            )
        })
        .collect()
}

/// cloud-init's first mounts example, on a Xen-era instance with `disks` off: `/dev/ephemeral0`
/// is ephemeral0, IMDS's `sdb` is found as xvdb, and of the two /opt/data entries the last wins
/// (named in a warning) while everything else is still done.
#[tokio::test]
async fn cloud_inits_own_example_with_disks_off() {
    let dir = root();
    let d = dir.path();
    devs(d, &["xvdb", "xvdc", "xvdh", "xvdi"]);
    let cfg = json!({
        "mounts": [
            ["/dev/ephemeral0", "/mnt", "auto", "defaults,noexec"],
            ["sdc", "/opt/data"],
            ["xvdh", "/opt/data", "auto", "defaults,nofail", "0", "0"],
            ["xvdi", "/srv/i"]
        ],
        // PyYAML reads `None` as a string: cloud-init's example means null.
        "mount_default_fields": ["None", "None", "auto", "defaults,nofail", "0", "2"]
    });
    let fake = FakeSystem::new();
    let r = run_on(
        d,
        cfg,
        ec2_instance(&[("ami", "/dev/sda1"), ("ephemeral0", "sdb")]),
        None,
        &fake,
    )
    .await
    .unwrap();
    assert_eq!(
        sources(d, &fake),
        [
            ("/dev/xvdb".to_string(), "mnt".to_string()),
            ("/dev/xvdh".into(), "opt/data".into()),
            ("/dev/xvdi".into(), "srv/i".into())
        ]
    );
    assert_eq!(
        added(d),
        "\n/dev/xvdb\t/mnt\tauto\tdefaults,noexec,nofail,x-systemd.device-timeout=10s,x-stoke\t0\t2\n\
         /dev/xvdh\t/opt/data\tauto\tdefaults,nofail,x-systemd.device-timeout=10s,x-stoke\t0\t0\n\
         /dev/xvdi\t/srv/i\tauto\tdefaults,nofail,x-systemd.device-timeout=10s,x-stoke\t0\t2\n"
    );
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert!(
        r.warnings[0].contains("mounts[1] (sdc) and mounts[2] (xvdh) both mount /opt/data")
            && r.warnings[0].contains("the last one wins"),
        "{:?}",
        r.warnings
    );
    let skipped: Vec<&Value> = r.details["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["action"].as_str().unwrap().starts_with("skipped"))
        .collect();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0]["origin"], "mounts[1]");

    // IMDS's other spellings: `ephemeral` for ephemeral0 (cloud-init's word too), Eucalyptus's
    // `ephemeral` key, and the vd name on KVM.
    let dir = root();
    let d = dir.path();
    devs(d, &["vdb"]);
    let fake = FakeSystem::new();
    run_on(
        d,
        json!({"mounts": [["ephemeral", "/scratch"]]}),
        ec2_instance(&[("ephemeral", "/dev/sdb")]),
        None,
        &fake,
    )
    .await
    .unwrap();
    assert_eq!(
        sources(d, &fake),
        [("/dev/vdb".to_string(), "scratch".to_string())]
    );
}

/// On an instance-store machine a `mounts:` entry for the array's path takes the path, by
/// a rule (not by failing the module): the array is still made, and named in a warning and
/// in the details. Entries that mean the instance store itself leave the array where it is.
#[tokio::test]
async fn a_mounts_entry_for_the_arrays_path() {
    // Another device at /mnt (however spelled): the user's entry wins the path.
    for mp in ["/mnt", "//mnt/", "/mnt/./"] {
        let dir = root();
        let d = dir.path();
        devs(d, &["xvdf"]);
        let fake = FakeSystem::new();
        let r = run(
            d,
            json!({"mounts": [["xvdf", mp, "ext4"], ["xvdf", "/srv/other", "ext4"]]}),
            Some(raid0_report()),
            &fake,
        )
        .await
        .unwrap();
        assert_eq!(
            sources(d, &fake),
            [
                ("/dev/xvdf".to_string(), "mnt".to_string()),
                ("/dev/xvdf".into(), "srv/other".into())
            ],
            "{mp}"
        );
        let text = added(d);
        assert!(!text.contains("x-stoke=disks"), "{text}");
        assert!(text.contains("/dev/xvdf\t/mnt\text4\t"), "{text}");
        let w = r.warnings.join("\n");
        assert!(
            w.contains("the disks module's /dev/md/ephemeral and mounts[0] (xvdf) both want /mnt")
                && w.contains("set disks.mount_point"),
            "{w}"
        );
        let array = r.details["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["origin"] == "disks")
            .unwrap()
            .clone();
        assert!(array["action"].as_str().unwrap().starts_with("skipped"));
    }

    // The instance store itself (by its IMDS name, `/dev/ephemeral0`, its NVMe name, or
    // ephemeral0 where IMDS names a disk this Nitro instance does not have): the array stays.
    let mut report = raid0_report();
    report["ephemeral"] = json!({"ephemeral0": "/dev/nvme1n1"});
    for (entry, instance, said) in [
        (
            json!(["ephemeral0", "/mnt", "auto", "defaults,noexec"]),
            InstanceData::default(),
            "used by the disks module",
        ),
        (
            json!(["/dev/ephemeral0", "/mnt"]),
            InstanceData::default(),
            "used by the disks module",
        ),
        (
            json!(["/dev/nvme2n1", "/mnt"]),
            InstanceData::default(),
            "used by the disks module",
        ),
        (
            json!(["/dev/md/ephemeral", "/data"]),
            InstanceData::default(),
            "used by the disks module (/dev/md/ephemeral at /mnt); entry ignored",
        ),
        (
            json!(["ephemeral1", "/mnt", "auto", "defaults,noexec"]),
            ec2_instance(&[("ephemeral1", "sdc")]),
            "none of /dev/sdc, /dev/xvdc, /dev/vdc exists",
        ),
        (
            json!(["sdb", "/mnt"]),
            InstanceData::default(),
            "/dev/sdb does not exist",
        ),
    ] {
        let dir = root();
        let d = dir.path();
        devs(d, &["nvme1n1", "nvme2n1"]);
        let fake = FakeSystem::new();
        let r = run_on(
            d,
            json!({ "mounts": [entry] }),
            instance,
            Some(report.clone()),
            &fake,
        )
        .await
        .unwrap();
        assert_eq!(
            sources(d, &fake),
            [("/dev/md/ephemeral".to_string(), "mnt".to_string())],
            "{entry}"
        );
        assert!(
            added(d).starts_with("\nUUID=5e1f-0001\t/mnt\txfs\t")
                && added(d).contains("x-stoke=disks"),
            "{entry}: {}",
            added(d)
        );
        assert_eq!(r.warnings.len(), 1, "{entry}: {:?}", r.warnings);
        assert!(r.warnings[0].contains(said), "{entry}: {:?}", r.warnings);
    }

    // No disks report this boot (module disabled): its kept /mnt line gives way too.
    let dir = root();
    let d = dir.path();
    run(d, json!({}), Some(raid0_report()), &FakeSystem::new())
        .await
        .unwrap();
    devs(d, &["xvdf"]);
    let fake = FakeSystem::new();
    let r = run(d, json!({"mounts": [["xvdf", "/mnt"]]}), None, &fake)
        .await
        .unwrap();
    assert!(!fstab(d).contains("x-stoke=disks"), "{}", fstab(d));
    assert!(added(d).contains("/dev/xvdf\t/mnt\t"), "{}", added(d));
    assert!(
        r.warnings
            .join("\n")
            .contains("(the disks module's, for UUID=5e1f-0001 at /mnt) is replaced"),
        "{:?}",
        r.warnings
    );
}

/// A device that is not there and cannot appear later gets no fstab line (a warning says
/// why); names that can appear later (tags, links, LVM, network sources) and pseudo
/// filesystems are written as given.
#[tokio::test]
async fn a_missing_device_is_skipped_with_a_warning_not_written() {
    let dir = root();
    let d = dir.path();
    devs(d, &["xvdb"]);
    let fake = FakeSystem::new();
    fake.on("blkid -o device -t LABEL=later", CmdOutput::failed(2, ""));
    let cfg = json!({
        "mounts": [
            ["sdq", "/q"],
            ["/dev/xvdq", "/xq"],
            ["ephemeral1", "/e1"],
            ["ephemeral0.1", "/p"],
            ["my_data.1", "/a1"],
            ["my_data", "/a0"],
            ["aliased.2", "/a2"],
            ["LABEL=later", "/l"],
            ["/dev/disk/by-label/later", "/bl"],
            ["/dev/vg0/lv0", "/lv"],
            ["fs-1.efs:/", "/efs", "nfs4"],
            ["tmpfs", "/t", "tmpfs", "size=1G"]
        ],
        "device_aliases": {"aliased": "/dev/sdz"}
    });
    let r = run_on(
        d,
        cfg,
        ec2_instance(&[("ephemeral0", "sdb"), ("ephemeral1", "sdc")]),
        None,
        &fake,
    )
    .await
    .unwrap();
    assert_eq!(
        added(d),
        "\n/dev/disk/by-label/later\t/bl\tauto\tdefaults,nofail,x-systemd.device-timeout=10s,x-stoke\t0\t2\n\
         fs-1.efs:/\t/efs\tnfs4\tdefaults,nofail,x-systemd.device-timeout=10s,x-stoke\t0\t2\n\
         LABEL=later\t/l\tauto\tdefaults,nofail,x-systemd.device-timeout=10s,x-stoke\t0\t2\n\
         /dev/vg0/lv0\t/lv\tauto\tdefaults,nofail,x-systemd.device-timeout=10s,x-stoke\t0\t2\n\
         tmpfs\t/t\ttmpfs\tsize=1G,nofail,x-systemd.device-timeout=10s,x-stoke\t0\t2\n",
    );
    assert!(mounts(&fake).is_empty());
    let w = r.warnings.join("\n");
    for said in [
        "mounts[0] (sdq): /dev/sdq does not exist; entry skipped (not mounted, no /etc/fstab line)",
        "mounts[1] (/dev/xvdq): /dev/xvdq does not exist; entry skipped",
        "mounts[2] (ephemeral1): ephemeral1 is sdc in the block-device-mapping, and none of /dev/sdc, /dev/xvdc, /dev/vdc exists",
        "mounts[3] (ephemeral0.1): /dev/xvdb has no partition 1",
        "mounts[4] (my_data.1): /dev/my_data does not exist (a device_aliases or disk_setup name?",
        "mounts[5] (my_data): /dev/my_data does not exist (a device_aliases or disk_setup name?",
        "mounts[6] (aliased.2): /dev/sdz does not exist (device_aliases: aliased → /dev/sdz)",
        "mounts[7] (LABEL=later): /l: not mounted now: no device with LABEL=later",
        "mounts[8] (/dev/disk/by-label/later): /bl: not mounted now: /dev/disk/by-label/later does not exist (yet)",
        "mounts[9] (/dev/vg0/lv0): /lv: not mounted now",
    ] {
        assert!(w.contains(said), "{said}\n--\n{w}");
    }
}

/// `device_aliases` names, `NAME.N` partitions and cloud-init's "a partitioned disk means its
/// first partition"; a null mount point removes the earlier entries for that device.
#[tokio::test]
async fn aliases_partitions_and_removals_as_cloud_init() {
    let dir = root();
    let d = dir.path();
    devs(
        d,
        &["xvdf", "xvdf1", "xvdf2", "nvme3n1", "nvme3n1p1", "xvdb"],
    );
    let cfg = json!({
        "device_aliases": {"data": "/dev/sdf", "fast": "nvme3n1"},
        "mounts": [
            ["data.2", "/data"],
            ["fast", "/fast"],
            ["sdf", "/whole"],
            ["xvdb", "/gone"],
            ["ephemeral0", "/gone2"],
            ["sdb", null]
        ]
    });
    let fake = FakeSystem::new();
    let r = run_on(d, cfg, ec2_instance(&[("ephemeral0", "sdb")]), None, &fake)
        .await
        .unwrap();
    assert_eq!(
        sources(d, &fake),
        [
            ("/dev/xvdf2".to_string(), "data".to_string()),
            ("/dev/nvme3n1p1".into(), "fast".into()),
            ("/dev/xvdf1".into(), "whole".into())
        ]
    );
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert!(!fstab(d).contains("gone"), "{}", fstab(d));

    // `[ephemeral0]` is cloud-init's way to leave the instance store unmounted: stoke's disks
    // module mounts it, and the warning says how to turn that off.
    let dir = root();
    let d = dir.path();
    let mut report = raid0_report();
    report["ephemeral"] = json!({"ephemeral0": "/dev/nvme1n1"});
    let fake = FakeSystem::new();
    let r = run(d, json!({"mounts": [["ephemeral0"]]}), Some(report), &fake)
        .await
        .unwrap();
    assert_eq!(mounts(&fake).len(), 1);
    assert!(
        r.warnings[0].contains("disks: {mount: false}"),
        "{:?}",
        r.warnings
    );
}

/// A directory under /dev is not a device: `[disk, /x]` and `[/dev/disk, /x]` name nothing.
#[tokio::test]
async fn a_directory_under_dev_is_not_a_device() {
    let dir = root();
    let d = dir.path();
    fs::create_dir_all(d.join("dev/disk/by-label")).unwrap();
    let fake = FakeSystem::new();
    let r = run(
        d,
        json!({"mounts": [["disk", "/x"], ["/dev/disk", "/y"]]}),
        None,
        &fake,
    )
    .await
    .unwrap();
    assert!(mounts(&fake).is_empty());
    assert_eq!(fstab(d), FOREIGN);
    assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
    assert!(
        r.warnings
            .iter()
            .all(|w| w.contains("/dev/disk does not exist"))
    );
}
