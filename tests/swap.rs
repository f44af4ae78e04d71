//! `swap` through the real binary under `--root`: the commands are recorded (host
//! paths), the fstab line written next to the image's own lines, no swap file left
//! behind, and a second boot of the same instance does nothing.

#[path = "support/sandbox.rs"]
mod sandbox;

use sandbox::Sandbox;

const FSTAB: &str = "# /etc/fstab: static file system information.\n\
    UUID=aaaa-bbbb /  ext4  errors=remount-ro 0  1\n\
    /dev/sr0 /media/cdrom0 udf,iso9660 user,noauto 0 0\n";

fn runs(s: &Sandbox) -> Vec<String> {
    s.actions_of("run")
        .iter()
        .map(|a| {
            a["argv"]
                .as_array()
                .map(|v| {
                    v.iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn swap_file_commands_are_recorded_and_the_fstab_line_is_stokes() {
    let s = Sandbox::nocloud(
        "iid-swap",
        "#cloud-config\nswap:\n  filename: /var/swapfile\n  size: 512M\n",
    );
    s.write("/etc/fstab", FSTAB);
    let r = s.run_all();
    assert_eq!(s.module_state("swap"), "ok", "{}\n{}", r.stdout, r.stderr);
    let tmp = s.path("/var/.swapfile.stoke-new").display().to_string();
    let file = s.path("/var/swapfile").display().to_string();
    let cmds = runs(&s);
    let swap_cmds: Vec<&String> = cmds.iter().filter(|c| c.contains("swapfile")).collect();
    assert_eq!(
        swap_cmds,
        vec![
            &format!("fallocate -l 536870912 {tmp}"),
            &format!("mkswap {tmp}"),
            &format!("swapon {file}"),
        ],
        "{cmds:?}"
    );
    assert_eq!(
        s.read("/etc/fstab"),
        format!("{FSTAB}/var/swapfile\tnone\tswap\tsw,x-stoke=swap\t0\t0\n")
    );
    assert!(
        !s.path("/var/swapfile").exists(),
        "recorded only: no empty swap file"
    );
    // `mounts` (every boot) keeps the line; `swap` (per instance) does not run again.
    s.new_boot("boot-2");
    let before = runs(&s).len();
    let r = s.run_all();
    assert_eq!(s.module_state("mounts"), "ok", "{}\n{}", r.stdout, r.stderr);
    assert!(
        runs(&s)[before..].iter().all(|c| !c.contains("swap")),
        "{:?}",
        &runs(&s)[before..]
    );
    assert_eq!(
        s.read("/etc/fstab"),
        format!("{FSTAB}/var/swapfile\tnone\tswap\tsw,x-stoke=swap\t0\t0\n")
    );
}

#[test]
fn a_bad_size_fails_the_module_naming_the_key_and_writes_nothing() {
    let s = Sandbox::nocloud("iid-swap", "#cloud-config\nswap:\n  size: lots\n");
    s.write("/etc/fstab", FSTAB);
    let r = s.run_all();
    assert_eq!(
        s.module_state("swap"),
        "failed",
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    assert!(
        s.status()["modules"]["swap"]
            .to_string()
            .contains("swap.size"),
        "{}",
        s.status()["modules"]["swap"]
    );
    assert!(runs(&s).iter().all(|c| !c.contains("swap")));
    assert_eq!(s.read("/etc/fstab"), FSTAB);
}

#[test]
fn no_swap_section_is_nothing_configured() {
    let s = Sandbox::nocloud("iid-swap", "#cloud-config\n{}\n");
    s.run_all();
    let st = s.module_state("swap");
    assert_ne!(st, "ok");
    assert_ne!(st, "failed");
}
