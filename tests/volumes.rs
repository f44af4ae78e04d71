//! `volumes` through the real binary under `--root`: the sandbox's stand-in for an EBS
//! controller is a regular file of identify data at `/dev/nvmeN`, so the requested-name
//! path runs end to end: found, formatted (recorded), linked, mounted by `mounts` with a
//! fstab line by UUID; a second boot keeps the line.

#[path = "support/sandbox.rs"]
mod sandbox;

use sandbox::Sandbox;

/// Identify Controller data as EBS fills it (NVMe layout; the requested name at 3072).
fn identify(serial: &str, requested: &str) -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    b[0..2].copy_from_slice(&0x1d0fu16.to_le_bytes());
    b[4..24].copy_from_slice(format!("{serial:<20}").as_bytes());
    b[24..64].copy_from_slice(format!("{:<40}", "Amazon Elastic Block Store").as_bytes());
    b[3072..3104].copy_from_slice(format!("{requested:<32}").as_bytes());
    b
}

fn controller(s: &Sandbox, name: &str, serial: &str, requested: &str) {
    s.write(
        &format!("/sys/class/nvme/{name}/model"),
        "Amazon Elastic Block Store\n",
    );
    s.write(
        &format!("/sys/class/nvme/{name}/serial"),
        format!("{serial}\n"),
    );
    s.write(&format!("/sys/class/nvme/{name}/{name}n1/dev"), "259:1\n");
    s.write(&format!("/dev/{name}n1"), "");
    s.write(&format!("/dev/{name}"), identify(serial, requested));
}

#[test]
fn a_volume_by_its_requested_name_is_formatted_linked_and_mounted() {
    let s = Sandbox::nocloud(
        "iid-volumes",
        "#cloud-config\nvolumes:\n  - {device: sdf, filesystem: ext4, mount_point: /data, wait_seconds: 1}\n",
    );
    // The kernel's order is not the attachment order.
    controller(&s, "nvme1", "vol0aaaaaaaaaaaaaaa1", "sdg");
    controller(&s, "nvme2", "vol0bbbbbbbbbbbbbbb2", "/dev/sdf");
    let plan = s.stoke(&["plan"]);
    assert!(
        plan.stdout
            .contains("volumes[0] (device sdf): looked up by requested name"),
        "{}",
        plan.stdout
    );
    let r = s.run_all();
    assert_eq!(
        s.module_state("volumes"),
        "ok",
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    assert_eq!(s.module_state("mounts"), "ok");
    let st = s.status();
    let vol = &st["modules"]["volumes"]["details"]["volumes"][0];
    assert_eq!(vol["device"], "/dev/nvme2n1", "{vol}");
    let uuid = vol["uuid"].as_str().unwrap().to_string();
    let dev = s.path("/dev/nvme2n1").display().to_string();
    let mkfs = s.actions_of("run").into_iter().any(|a| {
        a["argv"][0] == "mkfs.ext4"
            && a["argv"]
                .as_array()
                .and_then(|v| v.last())
                .and_then(|x| x.as_str())
                == Some(dev.as_str())
    });
    assert!(mkfs, "{:?}", s.actions_of("run"));
    assert_eq!(
        std::fs::read_link(s.path("/dev/disk/by-ebs/sdf")).unwrap(),
        std::path::Path::new("../../nvme2n1")
    );
    let line = format!(
        "UUID={uuid}\t/data\text4\tdefaults,nofail,x-systemd.device-timeout=10s,x-stoke=volumes\t0\t2\n"
    );
    assert!(
        s.read("/etc/fstab").contains(&line),
        "{}",
        s.read("/etc/fstab")
    );

    // The next boot: in the sandbox blkid answers nothing, so the volume reads as blank
    // again; what matters here is that the line is stoke's and there is one.
    s.new_boot("boot-2");
    s.run_all();
    let fstab = s.read("/etc/fstab");
    assert_eq!(
        fstab.lines().filter(|l| l.contains("/data")).count(),
        1,
        "{fstab}"
    );
}
