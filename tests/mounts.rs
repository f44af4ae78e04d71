//! `disks` and `mounts` through the real binary under `--root` (commands recorded): an
//! instance-store machine whose user-data is a cloud-init `mounts:` list written for another
//! machine. The array keeps or gives up `/mnt` by the documented rule, entries that cannot be
//! used never become fstab lines, and every warning reaches `stoke status`.

#[path = "support/sandbox.rs"]
mod sandbox;

use sandbox::Sandbox;

const FSTAB: &str = "UUID=aaaa-bbbb /  ext4  errors=remount-ro 0  1\n";

/// Two NVMe instance-store disks and an fstab with the root's line.
fn instance_store(s: &Sandbox) {
    s.instance_store();
    s.write("/etc/fstab", FSTAB);
}

fn mounted(s: &Sandbox) -> Vec<(String, String)> {
    let root = s.root().display().to_string();
    s.actions_of("mount")
        .iter()
        .map(|m| {
            let f = |k: &str| {
                m[k].as_str()
                    .unwrap_or_default()
                    .trim_start_matches(&root)
                    .to_string()
            };
            (f("source"), f("target"))
        })
        .collect()
}

fn warnings(s: &Sandbox) -> String {
    s.status()["modules"]["mounts"]["warnings"].to_string()
}

#[test]
fn the_array_keeps_mnt_against_entries_for_the_instance_store_or_for_nothing() {
    // cloud-init's own example's first line, an entry for a disk this instance does not have,
    // an alias with no disk_setup behind it, and two entries for one path.
    let s = Sandbox::nocloud(
        "iid-mounts",
        "#cloud-config\n\
         mounts:\n\
         \x20 - [ /dev/ephemeral0, /mnt, auto, \"defaults,noexec\" ]\n\
         \x20 - [ sdc, /mnt ]\n\
         \x20 - [ my_alias.1, /data ]\n\
         \x20 - [ tmpfs, /scratch, tmpfs, \"size=1G\" ]\n\
         \x20 - [ tmpfs, /scratch, tmpfs, \"size=2G\" ]\n",
    );
    instance_store(&s);
    let r = s.run_all();
    assert_eq!(s.module_state("disks"), "ok", "{}\n{}", r.stdout, r.stderr);
    assert_eq!(s.module_state("mounts"), "ok", "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        mounted(&s),
        [("/dev/md/ephemeral".to_string(), "/mnt".to_string())]
    );
    let fstab = s.read("/etc/fstab");
    let ours: Vec<&str> = fstab.lines().skip(1).collect();
    assert_eq!(ours.len(), 2, "{fstab}");
    assert!(
        ours[0].starts_with("UUID=") && ours[0].contains("\t/mnt\txfs\t"),
        "{fstab}"
    );
    assert!(ours[0].ends_with("x-stoke=disks\t0\t2"), "{fstab}");
    assert!(
        ours[1].starts_with("tmpfs\t/scratch\ttmpfs\tsize=2G,"),
        "{fstab}"
    );
    let w = warnings(&s);
    for said in [
        "mounts[0] (/dev/ephemeral0)",
        "mounts[1] (sdc): /dev/sdc does not exist",
        "mounts[2] (my_alias.1): /dev/my_alias does not exist (a device_aliases or disk_setup name?",
        "mounts[3] (tmpfs) and mounts[4] (tmpfs) both mount /scratch: the last one wins",
    ] {
        assert!(w.contains(said), "{said}\n--\n{w}");
    }
    // The status line says why the boot is degraded.
    let st = s.stoke(&["status"]);
    assert_eq!(st.code, 2, "{}\n{}", st.stdout, st.stderr);
}

#[test]
fn a_mounts_entry_for_another_disk_takes_mnt_and_the_warning_names_the_array() {
    let s = Sandbox::nocloud(
        "iid-mounts",
        "#cloud-config\nmounts:\n  - [ xvdf, /mnt, ext4 ]\n",
    );
    instance_store(&s);
    s.write("/dev/xvdf", "");
    let r = s.run_all();
    assert_eq!(s.module_state("mounts"), "ok", "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        s.status()["modules"]["disks"]["details"]["array"]["device"],
        "/dev/md/ephemeral",
        "the array is still made"
    );
    assert_eq!(mounted(&s), [("/dev/xvdf".to_string(), "/mnt".to_string())]);
    let fstab = s.read("/etc/fstab");
    assert!(!fstab.contains("x-stoke=disks"), "{fstab}");
    assert!(fstab.contains("/dev/xvdf\t/mnt\text4\t"), "{fstab}");
    let w = warnings(&s);
    assert!(
        w.contains("the disks module's /dev/md/ephemeral and mounts[0] (xvdf) both want /mnt: the mounts: entry wins"),
        "{w}"
    );
}
