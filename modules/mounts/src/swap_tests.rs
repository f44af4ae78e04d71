use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::json;
use stoke_api::fake::{FakeSystem, context};
use stoke_api::{CmdOutput, InstanceData, Module, ModuleError};

use super::*;

const FOREIGN: &str = "UUID=aaaa /  ext4  errors=remount-ro 0 1\n# a comment\n";

fn root_with_fstab(fstab: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("etc")).unwrap();
    std::fs::write(dir.path().join("etc/fstab"), fstab).unwrap();
    dir
}

/// A file mkswap would have made: `mib` MiB with the signature at the end of a 4 KiB page.
fn swap_file(path: &Path, mib: u64) {
    let mut data = vec![0u8; (mib * MIB) as usize];
    data[4086..4096].copy_from_slice(b"SWAPSPACE2");
    std::fs::write(path, data).unwrap();
}

async fn run(
    root: &Path,
    swap: serde_json::Value,
    fake: &std::sync::Arc<FakeSystem>,
) -> Result<Report, ModuleError> {
    let ctx = context(
        root,
        json!({ "swap": swap }),
        InstanceData::default(),
        fake.clone(),
    );
    SwapModule.run(&ctx).await
}

#[test]
fn sizes_read_as_cloud_init_reads_them() {
    let t = |s: &str| parse_size("size", &Size::Text(s.into()));
    assert_eq!(t("512M"), Ok(512 * MIB));
    assert_eq!(t("2G"), Ok(2 * GIB));
    assert_eq!(t("2GB"), Ok(2 * GIB));
    assert_eq!(t("1.5g"), Ok(3 * GIB / 2));
    assert_eq!(t("4k"), Ok(4096));
    assert_eq!(t("1048576"), Ok(MIB));
    assert_eq!(parse_size("size", &Size::Bytes(7)), Ok(7));
    for bad in ["", "12Q", "-1G", "G", "1..2M", "nanG"] {
        let e = t(bad).unwrap_err();
        assert!(e.contains("swap.size"), "{bad}: {e}");
    }
}

#[test]
fn auto_follows_memory_and_is_capped() {
    // Below 4 GiB of memory: as much as memory; 8 GiB: 4 GiB; 64 GiB: √64 = 8 GiB.
    assert_eq!(suggested(2 * GIB, None, None), 2 * GIB);
    assert_eq!(suggested(8 * GIB, None, None), 4 * GIB);
    assert_eq!(suggested(64 * GIB, None, None), 8 * GIB);
    // A quarter of the free space, at most 90% of it with an explicit maxsize.
    assert_eq!(suggested(8 * GIB, Some(4 * GIB), None), GIB);
    assert_eq!(
        suggested(8 * GIB, Some(2 * GIB), Some(3 * GIB)),
        2 * GIB / 10 * 9
    );
    assert_eq!(suggested(8 * GIB, None, Some(GIB)), GIB);
}

#[tokio::test]
async fn creates_under_a_temp_name_then_swapon_and_one_fstab_line() {
    let dir = root_with_fstab(FOREIGN);
    let fake = FakeSystem::new();
    let r = run(
        dir.path(),
        json!({"filename": "/swapfile", "size": "2M"}),
        &fake,
    )
    .await
    .unwrap();
    let host = dir.path().join("swapfile").display().to_string();
    let tmp = dir.path().join(".swapfile.stoke-new").display().to_string();
    assert_eq!(
        fake.commands(),
        vec![
            format!("fallocate -l 2097152 {tmp}"),
            format!("mkswap {tmp}"),
            format!("swapon {host}"),
        ]
    );
    let meta = std::fs::metadata(dir.path().join("swapfile")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(!Path::new(&tmp).exists());
    let fstab = std::fs::read_to_string(dir.path().join("etc/fstab")).unwrap();
    assert_eq!(
        fstab,
        format!("{FOREIGN}/swapfile\tnone\tswap\tsw,x-stoke=swap\t0\t0\n")
    );
    assert!(r.summary.contains("created (fallocate)"), "{}", r.summary);
}

#[tokio::test]
async fn a_swap_file_of_the_right_size_is_reused_without_mkswap() {
    let dir = root_with_fstab(FOREIGN);
    swap_file(&dir.path().join("swap.img"), 2);
    let fake = FakeSystem::new();
    let r = run(dir.path(), json!({"size": 2 * MIB}), &fake)
        .await
        .unwrap();
    let host = dir.path().join("swap.img").display().to_string();
    assert_eq!(fake.commands(), vec![format!("swapon {host}")]);
    assert_eq!(r.details["action"], "reused");
    let once = std::fs::read_to_string(dir.path().join("etc/fstab")).unwrap();
    // Already active: nothing run, the fstab line kept as it is.
    std::fs::create_dir_all(dir.path().join("proc")).unwrap();
    std::fs::write(
        dir.path().join("proc/swaps"),
        format!("Filename\tType\tSize\tUsed\tPriority\n{host}  file  2044  0  -2\n"),
    )
    .unwrap();
    let fake = FakeSystem::new();
    let r = run(dir.path(), json!({"size": "2M"}), &fake).await.unwrap();
    assert!(fake.commands().is_empty(), "{:?}", fake.commands());
    assert_eq!(r.details["action"], "already active");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("etc/fstab")).unwrap(),
        once
    );
}

#[tokio::test]
async fn a_swap_file_of_another_size_is_replaced() {
    let dir = root_with_fstab("");
    swap_file(&dir.path().join("swap.img"), 1);
    let fake = FakeSystem::new();
    let r = run(dir.path(), json!({"size": "3M"}), &fake).await.unwrap();
    assert!(
        fake.commands()[0].starts_with("fallocate -l 3145728 "),
        "{:?}",
        fake.commands()
    );
    assert!(r.summary.contains("replaced a 1 MiB one"), "{}", r.summary);
}

#[tokio::test]
async fn a_file_that_is_no_swap_file_is_never_overwritten() {
    let dir = root_with_fstab(FOREIGN);
    std::fs::write(dir.path().join("swap.img"), "precious data\n").unwrap();
    let fake = FakeSystem::new();
    let e = run(dir.path(), json!({"size": "2M"}), &fake)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not a swap file"), "{e}");
    assert!(fake.commands().is_empty());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("swap.img")).unwrap(),
        "precious data\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("etc/fstab")).unwrap(),
        FOREIGN
    );
}

#[tokio::test]
async fn fallocate_refused_falls_back_to_dd_and_a_failed_mkswap_leaves_nothing() {
    let dir = root_with_fstab(FOREIGN);
    let fake = FakeSystem::new();
    fake.on(
        "fallocate",
        CmdOutput::failed(1, "fallocate: Operation not supported"),
    );
    let r = run(dir.path(), json!({"size": "4M"}), &fake).await.unwrap();
    assert!(
        fake.commands()[1].starts_with("dd if=/dev/zero of="),
        "{:?}",
        fake.commands()
    );
    assert!(fake.commands()[1].ends_with("bs=1M count=4 conv=fsync"));
    assert!(r.summary.contains("created (dd)"), "{}", r.summary);

    let dir = root_with_fstab(FOREIGN);
    let fake = FakeSystem::new();
    fake.on("mkswap", CmdOutput::failed(1, "mkswap: error"));
    let e = run(dir.path(), json!({"size": "4M"}), &fake)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("mkswap"), "{e}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("etc")],
        "nothing half-made"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("etc/fstab")).unwrap(),
        FOREIGN
    );
}

#[tokio::test]
async fn swapon_refused_writes_no_fstab_line() {
    let dir = root_with_fstab(FOREIGN);
    let fake = FakeSystem::new();
    fake.on("swapon", CmdOutput::failed(255, "swapon: Invalid argument"));
    let e = run(dir.path(), json!({"size": "2M"}), &fake)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("Invalid argument"), "{e}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("etc/fstab")).unwrap(),
        FOREIGN
    );
}

#[tokio::test]
async fn the_images_own_fstab_line_is_left_and_a_moved_file_replaces_ours() {
    let image = format!("{FOREIGN}/swap.img none swap sw 0 0\n");
    let dir = root_with_fstab(&image);
    let fake = FakeSystem::new();
    let r = run(dir.path(), json!({"size": "2M"}), &fake).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("etc/fstab")).unwrap(),
        image
    );
    assert_eq!(r.details["fstab_changed"], false);

    let ours = format!("{FOREIGN}/old.swap\tnone\tswap\tsw,x-stoke=swap\t0\t0\n# tail\n");
    let dir = root_with_fstab(&ours);
    let fake = FakeSystem::new();
    run(
        dir.path(),
        json!({"filename": "/new swap", "size": "2M"}),
        &fake,
    )
    .await
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("etc/fstab")).unwrap(),
        format!("{FOREIGN}/new\\040swap\tnone\tswap\tsw,x-stoke=swap\t0\t0\n# tail\n")
    );
}

#[tokio::test]
async fn recorded_only_leaves_no_empty_swap_file() {
    let dir = root_with_fstab(FOREIGN);
    let fake = FakeSystem::new();
    fake.set_recording_only(true);
    run(dir.path(), json!({"size": "2M"}), &fake).await.unwrap();
    assert_eq!(fake.commands().len(), 3);
    assert!(!dir.path().join("swap.img").exists());
    assert!(!dir.path().join(".swap.img.stoke-new").exists());
}

#[tokio::test]
async fn bad_input_names_the_entry_and_touches_nothing() {
    for (swap, want) in [
        (
            json!({"filename": "swapfile", "size": "1G"}),
            "not an absolute path",
        ),
        (
            json!({"filename": "/proc/swap", "size": "1G"}),
            "virtual filesystem",
        ),
        (json!({"filename": "/", "size": "1G"}), "directory"),
        (json!({"size": "ten gigs"}), "swap.size"),
        (json!({"size": "auto", "maxsize": "lots"}), "swap.maxsize"),
    ] {
        let dir = root_with_fstab(FOREIGN);
        let fake = FakeSystem::new();
        let e = run(dir.path(), swap.clone(), &fake).await.unwrap_err();
        assert!(e.to_string().contains(want), "{swap}: {e}");
        assert!(fake.commands().is_empty());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("etc/fstab")).unwrap(),
            FOREIGN
        );
    }
}

#[tokio::test]
async fn auto_reads_meminfo() {
    let dir = root_with_fstab("");
    std::fs::create_dir_all(dir.path().join("proc")).unwrap();
    std::fs::write(
        dir.path().join("proc/meminfo"),
        "MemTotal:        3072 kB\n",
    )
    .unwrap();
    let fake = FakeSystem::new();
    let r = run(dir.path(), json!({"size": "auto"}), &fake)
        .await
        .unwrap();
    // 3 MiB of memory: 3 MiB of swap (if the disk has 12 MiB free, as a test disk does).
    assert_eq!(r.details["size"], 3 * MIB);
}

#[test]
fn nothing_configured_without_a_size() {
    let nc = |v: serde_json::Value| SwapModule.nothing_configured(&v, &[]);
    assert!(nc(json!({})).is_some());
    assert!(nc(json!({"swap": {"filename": "/s"}})).is_some());
    assert!(nc(json!({"swap": {"size": 0}})).is_some());
    assert!(nc(json!({"swap": {"size": "1G"}})).is_none());
    assert!(nc(json!({"swap": {"size": "auto"}})).is_none());
}

#[tokio::test]
async fn mounts_keeps_the_swap_line() {
    let start = format!("{FOREIGN}/swap.img\tnone\tswap\tsw,x-stoke=swap\t0\t0\n");
    let dir = root_with_fstab(&start);
    let fake = FakeSystem::new();
    let ctx = context(dir.path(), json!({}), InstanceData::default(), fake.clone());
    crate::MountsModule.run(&ctx).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("etc/fstab")).unwrap(),
        start
    );
}

/// The real tools on a loop-mounted ext4 image: the kernel takes the file.
#[tokio::test]
async fn real_swap_file_on_ext4() {
    if !stoke_api::testing::need_root("swapon and a loop mount")
        || !stoke_api::testing::need_tools(&[
            "mkfs.ext4",
            "mkswap",
            "swapon",
            "swapoff",
            "fallocate",
            "mount",
            "umount",
        ])
    {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("disk.img");
    let mnt = work.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let sh = |args: &[&str]| {
        std::process::Command::new(args[0])
            .args(&args[1..])
            .output()
            .map(|o| {
                (
                    o.status.success(),
                    String::from_utf8_lossy(&o.stderr).into_owned(),
                )
            })
            .unwrap_or((false, format!("cannot run {}", args[0])))
    };
    let img_s = img.display().to_string();
    let mnt_s = mnt.display().to_string();
    assert!(sh(&["truncate", "-s", "64M", &img_s]).0);
    assert!(sh(&["mkfs.ext4", "-q", "-F", &img_s]).0);
    let (ok, err) = sh(&["mount", "-o", "loop", &img_s, &mnt_s]);
    if !ok {
        stoke_api::testing::skip(&format!(
            "cannot loop-mount an ext4 image here: {}",
            err.trim()
        ));
        return;
    }
    std::fs::create_dir_all(mnt.join("etc")).unwrap();
    std::fs::write(mnt.join("etc/fstab"), FOREIGN).unwrap();
    let fake = FakeSystem::new();
    // The real programs behind the fake's record.
    fake.respond(|cmd| {
        let o = std::process::Command::new(&cmd.program)
            .args(&cmd.args)
            .output()
            .ok()?;
        Some(CmdOutput {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into(),
            stderr: String::from_utf8_lossy(&o.stderr).into(),
        })
    });
    let result = run(&mnt, json!({"filename": "/swapfile", "size": "16M"}), &fake).await;
    let file = mnt.join("swapfile");
    let file_s = file.display().to_string();
    let active = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
    let _ = sh(&["swapoff", &file_s]);
    let refused = match &result {
        Err(e) if e.to_string().contains("swapon") => Some(e.to_string()),
        _ => None,
    };
    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    let mut head = std::fs::File::open(&file).unwrap();
    let signed = has_swap_signature(&mut head).unwrap_or(false);
    let _ = sh(&["umount", &mnt_s]);
    if let Some(why) = refused {
        // Containers commonly lack CAP_SYS_ADMIN for swapon even as root.
        assert_eq!(size, 16 * MIB, "the file was made before swapon");
        assert!(signed);
        stoke_api::testing::skip(&format!("the kernel refuses swapon here: {why}"));
        return;
    }
    let r = result.unwrap();
    assert!(active.lines().any(|l| l.starts_with(&file_s)), "{active}");
    assert_eq!(size, 16 * MIB);
    assert!(signed, "mkswap wrote its signature");
    assert_eq!(r.details["action"], "created (fallocate)");
}
