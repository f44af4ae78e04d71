//! The root is a boundary (issue 12): with a directory of a `--root` tree replaced by an
//! absolute symlink to a directory outside it, `stoke --root DIR run` resolves the link
//! inside DIR (as the instance would) and writes, deletes and reads nothing outside. One
//! test per class: host keys, the state directory, fstab and mount points, the /sys walk.

#[path = "support/sandbox.rs"]
mod sandbox;

use std::path::Path;

use sandbox::Sandbox;

const GOOD: &str = "#cloud-config\nvars: {role: web}\nhostname: \"{{ role }}-{{ uuid8 }}\"\n";

/// Every path under `dir` (relative), with its content for files: what "unchanged" means.
fn snapshot(dir: &Path) -> Vec<(String, Option<Vec<u8>>)> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, Option<Vec<u8>>)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        entries.sort();
        for p in entries {
            let rel = p
                .strip_prefix(base)
                .expect("under base")
                .display()
                .to_string();
            if p.is_dir() && !p.is_symlink() {
                out.push((rel, None));
                walk(base, &p, out);
            } else {
                out.push((rel, std::fs::read(&p).ok()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out
}

/// Moves `guest` of the sandbox to `outside/<name>` and leaves an absolute link to it.
fn move_out(s: &Sandbox, guest: &str, outside: &Path) -> std::path::PathBuf {
    let from = s.path(guest);
    let to = outside.join(guest.trim_start_matches('/').replace('/', "_"));
    std::fs::create_dir_all(&from).expect("mkdir");
    std::fs::rename(&from, &to).expect("move out");
    std::os::unix::fs::symlink(&to, &from).expect("absolute link");
    to
}

#[test]
fn an_absolute_etc_ssh_link_leads_no_host_key_out_of_the_root() {
    let s = Sandbox::nocloud(
        "iid-ssh",
        "#cloud-config\nssh_deletekeys: true\nssh_genkeytypes: [ed25519]\n",
    );
    s.write("/etc/ssh/ssh_host_rsa_key", "image's private key\n");
    s.write("/etc/ssh/ssh_host_rsa_key.pub", "ssh-rsa AAAA image\n");
    s.write("/etc/ssh/sshd_config", "PasswordAuthentication no\n");
    let outside = tempfile::tempdir().expect("tempdir");
    let moved = move_out(&s, "/etc/ssh", outside.path());
    let before = snapshot(outside.path());
    let r = s.run_all();
    assert_ne!(s.module_state("ssh-host-keys"), "absent", "{}", r.stderr);
    assert_eq!(
        snapshot(outside.path()),
        before,
        "host keys deleted or written outside the root"
    );
    // No command recorded for the keys names the outside directory.
    for a in s.actions_of("run") {
        let line = a.to_string();
        assert!(
            !line.contains(&moved.display().to_string()),
            "a command names the outside directory: {line}"
        );
    }
}

#[test]
fn an_absolute_state_dir_link_leads_no_engine_write_out_of_the_root() {
    let s = Sandbox::nocloud("iid-state", GOOD);
    let outside = tempfile::tempdir().expect("tempdir");
    // The seed moves with the state directory: reading it through the link is what the
    // instance would do too (a link in the image); writing there is not.
    let moved = move_out(&s, "/var/lib/stoke", outside.path());
    let before = snapshot(outside.path());
    s.run_all();
    assert_eq!(
        snapshot(outside.path()),
        before,
        "state written outside the root"
    );
    assert!(!moved.join("instance-id").exists());
    assert!(!moved.join("instances").exists());
}

#[test]
fn absolute_etc_and_mount_point_links_lead_no_fstab_line_or_mount_point_out_of_the_root() {
    let s = Sandbox::nocloud(
        "iid-fstab",
        "#cloud-config\nmounts:\n  - [ /dev/xvdb, /mnt/data, ext4, defaults ]\n",
    );
    s.write("/etc/fstab", "UUID=aaaa / ext4 defaults 0 1\n");
    s.write("/dev/xvdb", "");
    let outside = tempfile::tempdir().expect("tempdir");
    move_out(&s, "/etc", outside.path());
    let mnt = move_out(&s, "/mnt", outside.path());
    let before = snapshot(outside.path());
    let r = s.run_all();
    assert_ne!(s.module_state("mounts"), "absent", "{}", r.stderr);
    assert_eq!(
        snapshot(outside.path()),
        before,
        "fstab or a mount point written outside the root"
    );
    for m in s.actions_of("mount") {
        let target = m["target"].as_str().unwrap_or_default();
        assert!(
            !target.starts_with(&mnt.display().to_string()),
            "mount over a directory outside the root: {m}"
        );
    }
}

fn instance_store(s: &Sandbox) {
    s.instance_store();
    s.write("/etc/fstab", "UUID=aaaa / ext4 defaults 0 1\n");
}

fn disks_touched(s: &Sandbox) -> bool {
    s.read("/run/stoke/actions.jsonl").contains("nvme1n1")
}

#[test]
fn an_absolute_sys_block_link_shows_the_disks_no_disk_outside_the_root() {
    // Inside the root, the disks are found and used: the assertion below can fail.
    let inside = Sandbox::nocloud("iid-sys", "#cloud-config\n");
    instance_store(&inside);
    inside.run_all();
    assert!(
        disks_touched(&inside),
        "{}",
        inside.read("/run/stoke/actions.jsonl")
    );

    let s = Sandbox::nocloud("iid-sys", "#cloud-config\n");
    instance_store(&s);
    let outside = tempfile::tempdir().expect("tempdir");
    move_out(&s, "/sys/block", outside.path());
    let r = s.run_all();
    assert_ne!(s.module_state("disks"), "absent", "{}", r.stderr);
    assert!(
        !disks_touched(&s),
        "disks found through /sys/block outside the root: {}",
        s.read("/run/stoke/actions.jsonl")
    );
}

/// An image layer that names the hostname: read or not is seen in `/etc/hostname`.
const LAYER: &str = "hostname: from-a-layer\n";

#[test]
fn an_absolute_config_dir_link_reads_no_layer_from_outside_the_root() {
    // Control: the same layer inside the root is read.
    let inside = Sandbox::nocloud("iid-layer", "#cloud-config\n");
    inside.write("/etc/stoke/stoke.d/50-name.yaml", LAYER);
    let r = inside.run_all();
    assert!(
        inside.read("/etc/hostname").contains("from-a-layer"),
        "control: the layer inside the root is not read: {}",
        r.stderr
    );

    let s = Sandbox::nocloud("iid-layer", "#cloud-config\n");
    s.write("/etc/stoke/stoke.d/50-name.yaml", LAYER);
    s.write("/etc/stoke/stoke.yaml", LAYER);
    let outside = tempfile::tempdir().expect("tempdir");
    move_out(&s, "/etc/stoke", outside.path());
    let before = snapshot(outside.path());
    let r = s.run_all();
    assert!(
        !s.read("/etc/hostname").contains("from-a-layer"),
        "a layer outside the root was read: {}",
        r.stderr
    );
    assert_eq!(snapshot(outside.path()), before, "written outside the root");
}

#[test]
fn an_absolute_seed_dir_link_reads_no_seed_from_outside_the_root() {
    let s = Sandbox::nocloud("iid-outside", GOOD);
    let outside = tempfile::tempdir().expect("tempdir");
    move_out(&s, "/var/lib/stoke/seed", outside.path());
    let r = s.run_all();
    assert!(
        !s.read("/var/lib/stoke/instance-id").contains("iid-outside"),
        "the seed outside the root was read: {}",
        r.stderr
    );
    assert_ne!(s.status()["instance_id"], "iid-outside", "{}", r.stderr);
}

#[test]
fn clean_and_the_temp_sweep_delete_nothing_outside_the_root_through_a_link() {
    let s = Sandbox::nocloud("iid-clean", GOOD);
    s.run_all();
    // What a killed stoke left, inside the root: the control that the sweep runs.
    s.write("/etc/.hosts.stoke-tmp-999999-1", "x");
    let outside = tempfile::tempdir().expect("tempdir");
    // Links to outside directories holding what `clean` and the sweep would remove.
    for guest in ["/etc/ssh", "/var/lib/stoke", "/var/log/stoke"] {
        let to = move_out(&s, guest, outside.path());
        std::fs::write(to.join(".x.stoke-tmp-999999-2"), "bait").expect("bait");
        std::fs::create_dir_all(to.join("sem")).expect("mkdir");
        std::fs::create_dir_all(to.join("instances")).expect("mkdir");
        std::fs::write(to.join("instance-id"), "bait\n").expect("bait");
    }
    let before = snapshot(outside.path());
    let r = s.stoke(&["clean", "--logs", "--seed"]);
    assert!(
        !s.path("/etc/.hosts.stoke-tmp-999999-1").exists(),
        "control: the sweep did not run: {}",
        r.stderr
    );
    assert_eq!(
        snapshot(outside.path()),
        before,
        "clean removed or wrote something outside the root: {}",
        r.stderr
    );
}

#[test]
fn an_absolute_run_dir_link_puts_no_run_lock_outside_the_root() {
    let s = Sandbox::nocloud("iid-lock", GOOD);
    let outside = tempfile::tempdir().expect("tempdir");
    let moved = move_out(&s, "/run/stoke", outside.path());
    let before = snapshot(outside.path());
    // Inside the root the link dangles: stoke refuses (no lock) rather than lock the host's.
    let r = s.stoke(&["clean"]);
    assert!(
        !moved.join("lock").exists(),
        "lock made outside: {}",
        r.stderr
    );
    assert_eq!(snapshot(outside.path()), before, "{}", r.stderr);
}
