//! NoCloud: `meta-data`, `user-data` and optional `vendor-data` from a seed
//! directory, or from a filesystem labelled `cidata`/`CIDATA` (mounted
//! read-only for the read, then unmounted).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use stoke_api::{
    Cmd, InputDir, InstanceData, InstanceId, MountRequest, Root, System, tools, yaml_options,
};
use stoke_imds::{LEAF_CAP, USER_DATA_CAP};

use super::{Found, volume_label};
use crate::paths::Paths;

pub async fn read(
    paths: &Paths,
    system: &dyn System,
    use_volume: bool,
) -> Result<Option<Found>, String> {
    // The default seed is resolved inside the root; a `--seed` directory is the user's.
    let seed = paths.seed();
    if seed.is_file("meta-data") {
        return read_dir(&seed).map(Some);
    }
    if !use_volume {
        return Ok(None);
    }
    // udev's by-label link, when udev has seen the volume already: no process to start.
    for label in ["cidata", "CIDATA"] {
        if let Some(device) = link_target(&paths.root, &Path::new("/dev/disk/by-label").join(label))
        {
            let fstype = if volume_label::is_iso9660(&device) {
                "iso9660"
            } else {
                "vfat"
            };
            let device = device.display().to_string();
            return read_volume(paths, system, &device, Some(fstype))
                .await
                .map(Some);
        }
    }
    // Early in boot udev may not have made the link yet: the labels in the block devices'
    // superblocks, read here, find the volume as blkid would. On a thread, bounded like blkid:
    // a failing disk can hold a read for as long as the kernel retries it.
    let root = paths.root.clone();
    let scan = stoke_api::off_runtime("cidata-scan", move || scan_block_devices(&root));
    if let Ok(Ok(Some((device, fstype)))) = tokio::time::timeout(Duration::from_secs(5), scan).await
    {
        let device = device.display().to_string();
        return read_volume(paths, system, &device, Some(fstype))
            .await
            .map(Some);
    }
    // Else one blkid for every device (a process start costs ~0.1–0.3 s in a slow VM at boot):
    // it also sees a FAT label kept only in the root directory; its TYPE says what to mount.
    let cmd = Cmd::new(tools::BLKID, ["-o", "export"]).timeout(Duration::from_secs(5));
    let out = match system.run(&cmd).await {
        Ok(o) => o,
        Err(e) => {
            tracing::debug!("no cidata probe: {e}");
            return Ok(None);
        }
    };
    match cidata_volumes(&out.stdout).into_iter().next() {
        Some((device, fstype)) => read_volume(paths, system, &device, fstype.as_deref())
            .await
            .map(Some),
        None => Ok(None),
    }
}

/// Where a udev link points, as a path under `root`. udev's links are relative (`../../sr0`);
/// an absolute target is read as the instance's path, so a link never leads out of the root.
fn link_target(root: &Root, guest_link: &Path) -> Option<PathBuf> {
    // Resolved inside the root; the host path is for the device's reader and blkid.
    Some(root.fs().ok()?.real_path(guest_link).ok()??.0)
}

/// The first block device (in name order; the kernel's, listed in `/sys/class/block` inside
/// the root) whose superblock says it is labelled cidata, in any case as cloud-init matches:
/// its host path and filesystem type. Empty devices (a CD drive without a disc) are skipped.
fn scan_block_devices(root: &Root) -> Option<(PathBuf, &'static str)> {
    let fs = root.fs().ok()?;
    let sys = Path::new("/sys/class/block");
    let mut names: Vec<String> = fs.list_dir(sys).ok()?.into_iter().map(|(n, _)| n).collect();
    names.sort();
    names.into_iter().find_map(|name| {
        if name.starts_with("ram") || name.starts_with("zram") || name.contains('/') {
            return None;
        }
        // A sysfs attribute's size is a page, whatever it holds.
        let sectors = fs
            .read_string(&sys.join(&name).join("size"), 4096)
            .ok()??
            .trim()
            .parse::<u64>()
            .ok()?;
        if sectors == 0 {
            return None;
        }
        let (device, _) = fs.real_path(&Path::new("/dev").join(&name)).ok()??;
        let volume = volume_label::read(&device)?;
        volume
            .label
            .eq_ignore_ascii_case("cidata")
            .then_some((device, volume.fstype))
    })
}

/// Filesystems labelled cidata (in any case, as cloud-init matches) in `blkid -o export`
/// output: (device, filesystem type if blkid knows it).
fn cidata_volumes(export: &str) -> Vec<(String, Option<String>)> {
    let mut found = Vec::new();
    for block in export.split("\n\n") {
        let field = |key: &str| {
            block
                .lines()
                .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
                .map(str::to_string)
        };
        if let (Some(dev), Some(label)) = (field("DEVNAME"), field("LABEL"))
            && label.eq_ignore_ascii_case("cidata")
        {
            found.push((dev, field("TYPE")));
        }
    }
    found
}

async fn read_volume(
    paths: &Paths,
    system: &dyn System,
    device: &str,
    fstype: Option<&str>,
) -> Result<Found, String> {
    // The mount point made inside the root; mount(2) is given its resolved host path.
    let guest_mnt = Path::new(crate::paths::RUN_DIR).join("cidata");
    let mnt = paths
        .root
        .fs()
        .and_then(|fs| fs.host_dir(&guest_mnt))
        .map_err(|e| format!("mkdir {}: {e}", guest_mnt.display()))?;
    let mut last = String::new();
    let types: &[&str] = match fstype {
        Some(t @ ("iso9660" | "vfat")) => &[t],
        _ => &["iso9660", "vfat"],
    };
    for fstype in types {
        let req = MountRequest {
            source: device.to_string(),
            target: mnt.clone(),
            fstype: fstype.to_string(),
            options: "ro".to_string(),
        };
        match system.mount(&req).await {
            Ok(()) => {
                // The volume as a root of its own: a link on it leads nowhere else.
                let result = read_dir(&InputDir::new(Root::new(&mnt), "/", &mnt));
                if let Err(e) = system.umount(&mnt).await {
                    tracing::warn!("unmounting the cidata volume: {e}");
                }
                return result;
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!("cannot mount cidata volume {device}: {last}"))
}

fn read_dir(dir: &InputDir) -> Result<Found, String> {
    let meta_path = dir.shown("meta-data");
    // The same caps as IMDS answers: a seed is input from outside like any other.
    let meta = dir
        .read("meta-data", LEAF_CAP as u64)
        .map_err(|e| format!("{}: {e}", meta_path.display()))?
        .ok_or_else(|| format!("{}: not found", meta_path.display()))?;
    let meta =
        String::from_utf8(meta).map_err(|_| format!("{}: not UTF-8", meta_path.display()))?;
    let instance = parse_meta_data(&meta).map_err(|e| format!("{}: {e}", meta_path.display()))?;
    let opt = |name: &str| {
        dir.read(name, USER_DATA_CAP as u64)
            .map_err(|e| format!("{}: {e}", dir.shown(name).display()))
    };
    Ok(Found {
        instance,
        user_data: opt("user-data")?,
        vendor_data: opt("vendor-data")?,
        from_cache: false,
        imds: None,
    })
}

/// meta-data is YAML (or JSON); keys use dashes or underscores.
pub fn parse_meta_data(text: &str) -> Result<InstanceData, String> {
    let v: Value = serde_saphyr::from_str_with_options(text, yaml_options())
        .map_err(|e| stoke_api::ConfigError::from_yaml(&e).to_string())?;
    let Value::Object(m) = v else {
        return Err("meta-data must be a mapping".into());
    };
    let get = |k: &str| {
        m.get(k)
            .or_else(|| m.get(&k.replace('-', "_")))
            .and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
    };
    let iid = get("instance-id").ok_or("no instance-id")?;
    let iid = InstanceId::new(&iid).map_err(|e| format!("instance-id: {e}"))?;
    let public_keys = match m.get("public-keys").or_else(|| m.get("public_keys")) {
        Some(Value::String(s)) => s.lines().map(str::to_string).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(Value::Object(o)) => o
            .values()
            .filter_map(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Object(k) => k
                    .get("openssh-key")
                    .and_then(|s| s.as_str())
                    .map(str::to_string),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(InstanceData {
        datasource: "nocloud".into(),
        instance_id: iid,
        instance_type: get("instance-type"),
        local_ipv4: get("local-ipv4"),
        ipv6: get("ipv6"),
        local_ipv6: get("local-ipv6"),
        local_hostname: get("local-hostname").or_else(|| get("hostname")),
        region: get("region"),
        availability_zone: get("availability-zone"),
        public_keys,
        ..InstanceData::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidata_volumes_are_found_by_label_in_any_case_with_their_type() {
        let export = "DEVNAME=/dev/vda\nLABEL=root\nUUID=d540\nBLOCK_SIZE=4096\nTYPE=ext4\n\n\
                      DEVNAME=/dev/vdc\nSEC_TYPE=msdos\nLABEL_FATBOOT=CIDATA\nLABEL=CIDATA\n\
                      UUID=1ED7-30C8\nBLOCK_SIZE=512\nTYPE=vfat\n\n\
                      DEVNAME=/dev/sr0\nLABEL=cidata\nTYPE=iso9660\n\n\
                      DEVNAME=/dev/vdd\nLABEL=cidata-backup\nTYPE=vfat\n";
        assert_eq!(
            cidata_volumes(export),
            vec![
                ("/dev/vdc".to_string(), Some("vfat".to_string())),
                ("/dev/sr0".to_string(), Some("iso9660".to_string())),
            ]
        );
        assert!(cidata_volumes("").is_empty());
    }

    #[test]
    fn a_label_link_resolves_under_the_root_never_outside_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        let by_label = dir.path().join("dev/disk/by-label");
        std::fs::create_dir_all(&by_label).unwrap();
        std::fs::write(dir.path().join("dev/sr0"), b"").unwrap();
        let link = Path::new("/dev/disk/by-label/cidata");
        // udev's relative form.
        std::os::unix::fs::symlink("../../sr0", by_label.join("cidata")).unwrap();
        assert_eq!(link_target(&root, link), Some(dir.path().join("dev/sr0")));
        // An absolute target is the instance's /dev/sr0, not the host's.
        std::fs::remove_file(by_label.join("cidata")).unwrap();
        std::os::unix::fs::symlink("/dev/sr0", by_label.join("cidata")).unwrap();
        assert_eq!(link_target(&root, link), Some(dir.path().join("dev/sr0")));
        // Pointing at something the root does not have (e.g. the host's /etc/hostname).
        std::fs::remove_file(by_label.join("cidata")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", by_label.join("cidata")).unwrap();
        assert_eq!(link_target(&root, link), None);
        assert_eq!(
            link_target(&root, Path::new("/dev/disk/by-label/CIDATA")),
            None
        );
    }

    #[test]
    fn iso9660_is_told_from_vfat_by_its_volume_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let iso = dir.path().join("iso");
        let mut data = vec![0u8; 40_000];
        data[32769..32774].copy_from_slice(b"CD001");
        std::fs::write(&iso, &data).unwrap();
        let fat = dir.path().join("fat");
        std::fs::write(&fat, vec![0u8; 40_000]).unwrap();
        assert!(volume_label::is_iso9660(&iso));
        assert!(!volume_label::is_iso9660(&fat));
        assert!(!volume_label::is_iso9660(&dir.path().join("absent")));
        // A device shorter than the descriptor's offset.
        std::fs::write(&fat, b"short").unwrap();
        assert!(!volume_label::is_iso9660(&fat));
    }

    /// A root whose kernel lists `devices` (name, sectors, contents of /dev/<name>).
    fn root_with_devices(devices: &[(&str, u64, Vec<u8>)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, sectors, data) in devices {
            let sys = dir.path().join("sys/class/block").join(name);
            std::fs::create_dir_all(&sys).unwrap();
            // Padded to a page, the size sysfs reports for every attribute.
            std::fs::write(sys.join("size"), format!("{sectors:<4095}\n")).unwrap();
            std::fs::create_dir_all(dir.path().join("dev")).unwrap();
            std::fs::write(dir.path().join("dev").join(name), data).unwrap();
        }
        dir
    }

    use super::volume_label::tests::fat16_boot as fat_volume;

    #[test]
    fn the_seed_is_found_by_its_superblock_label_before_udev_links_it() {
        let dir = root_with_devices(&[
            ("vda", 8, fat_volume(b"ROOT       ")),
            // A drive without a disc, and a ram disk: never opened.
            ("sr0", 0, fat_volume(b"cidata     ")),
            ("ram0", 8, fat_volume(b"cidata     ")),
            ("vdc", 8, fat_volume(b"CIDATA     ")),
            ("vdd", 8, fat_volume(b"cidata     ")),
        ]);
        let root = Root::new(dir.path());
        assert_eq!(
            scan_block_devices(&root),
            Some((dir.path().join("dev/vdc"), "vfat"))
        );
        // Nothing labelled cidata: nothing found (the caller asks blkid).
        let dir = root_with_devices(&[("vda", 8, fat_volume(b"CIDATA-OLD "))]);
        assert_eq!(scan_block_devices(&Root::new(dir.path())), None);
        // The device node is resolved inside the root: a link out of it is not followed.
        let dir = root_with_devices(&[("vdc", 8, Vec::new())]);
        std::fs::remove_file(dir.path().join("dev/vdc")).unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(outside.path(), fat_volume(b"CIDATA     ")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("dev/vdc")).unwrap();
        assert_eq!(scan_block_devices(&Root::new(dir.path())), None);
    }

    /// The real kernel's sysfs and a real block device: a vfat volume on a loop device, made
    /// as the VM suite's seeds are. (sysfs attributes say they are a page long, whatever they
    /// hold: a read capped below that found nothing on a real machine.)
    #[test]
    fn the_seed_is_found_on_a_real_block_device_by_its_label() {
        use stoke_api::testing;
        if !testing::need_root("a loop device") || !testing::need_tools(&["losetup", "mkfs.vfat"]) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("seed.img");
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(2 << 20))
            .unwrap();
        let run = |program: &str, args: &[&str]| {
            let out = std::process::Command::new(program)
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "{program} {args:?}: {out:?}");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        let img_arg = img.display().to_string();
        run("mkfs.vfat", &["-n", "CIDATA", &img_arg]);
        let dev = run("losetup", &["-f", "--show", "-r", &img_arg]);
        struct Detach(String);
        impl Drop for Detach {
            fn drop(&mut self) {
                let _ = std::process::Command::new("losetup")
                    .args(["-d", &self.0])
                    .status();
            }
        }
        let _detach = Detach(dev.clone());
        assert_eq!(
            scan_block_devices(&Root::new("/")),
            Some((PathBuf::from(&dev), "vfat")),
            "(another volume labelled cidata on this machine would come first by name)"
        );
    }

    #[test]
    fn meta_data_fields_and_key_forms() {
        let d = parse_meta_data(
            "instance-id: iid-local01\nlocal-hostname: web\npublic-keys:\n  - ssh-ed25519 AAAA a@b\n",
        )
        .unwrap();
        assert_eq!(d.instance_id, "iid-local01");
        assert_eq!(d.local_hostname.as_deref(), Some("web"));
        assert_eq!(d.public_keys, vec!["ssh-ed25519 AAAA a@b".to_string()]);
        let d =
            parse_meta_data("{\"instance_id\": \"i-1\", \"local_ipv4\": \"10.0.0.5\"}").unwrap();
        assert_eq!(d.local_ipv4.as_deref(), Some("10.0.0.5"));
    }

    #[test]
    fn meta_data_rejects_path_like_instance_ids() {
        let err = parse_meta_data("instance-id: ../../etc\n").unwrap_err();
        assert!(err.contains("instance-id: invalid instance id"), "{err}");
        assert!(parse_meta_data("local-hostname: x\n").is_err());
        assert!(parse_meta_data("- a\n").is_err());
    }
}
