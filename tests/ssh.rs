//! ssh modules through the real binary with real ssh-keygen (sandbox root, --execute).

#[path = "support/sandbox.rs"]
mod sandbox;

use sandbox::Sandbox;

fn user_data() -> String {
    "#cloud-config\ndefault_user: admin\nssh_genkeytypes: [ed25519, ecdsa]\n".to_string()
}

fn fingerprint(s: &Sandbox, key: &str) -> String {
    let out = std::process::Command::new("ssh-keygen")
        .arg("-l")
        .arg("-f")
        .arg(s.path(key))
        .output()
        .expect("ssh-keygen -l");
    assert!(out.status.success(), "{key} is a valid key");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn host_keys_are_per_instance_and_fingerprints_reach_the_console() {
    if !stoke_api::testing::need_tools(&["ssh-keygen"])
        || !stoke_api::testing::need_root("homes are chowned to their users")
    {
        return;
    }
    let s = Sandbox::nocloud("iid-one", &user_data());
    s.write("/etc/ssh/ssh_host_ed25519_key", "image key: must go\n");
    s.write("/etc/ssh/sshd_config", "PermitRootLogin no\n");
    s.write("/home/admin/.ssh/authorized_keys", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHkXh8bXz6n7j0n8cQ5D8bWcKkq3m5mWmP0mJ3pQy0aB hand-added\n");
    std::fs::create_dir_all(s.path("/root")).unwrap();
    // The admin's home as a real system has it: owned by the user.
    for p in [
        "/home/admin",
        "/home/admin/.ssh",
        "/home/admin/.ssh/authorized_keys",
    ] {
        std::os::unix::fs::chown(s.path(p), Some(1000), Some(1000)).unwrap();
    }
    let mut pubkey = String::new();
    {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("k");
        let ok = std::process::Command::new("ssh-keygen")
            .args(["-q", "-N", "", "-t", "ed25519", "-C", "meta@key", "-f"])
            .arg(&k)
            .status()
            .unwrap();
        assert!(ok.success());
        pubkey.push_str(
            std::fs::read_to_string(k.with_extension("pub"))
                .unwrap()
                .trim(),
        );
    }
    s.write(
        "/var/lib/stoke/seed/nocloud/meta-data",
        format!("instance-id: iid-one\nlocal-hostname: h1\npublic-keys:\n  - {pubkey}\n"),
    );
    let r = s.stoke(&["--execute", "run", "--stage", "all"]);
    assert_eq!(r.code, 0, "{}", r.stderr);

    let ed = fingerprint(&s, "/etc/ssh/ssh_host_ed25519_key.pub");
    let ec = fingerprint(&s, "/etc/ssh/ssh_host_ecdsa_key.pub");
    let console = s.read("/run/stoke/console.log");
    assert!(
        console.contains("-----BEGIN SSH HOST KEY FINGERPRINTS-----"),
        "{console}"
    );
    let sha = |fp: &str| fp.split_whitespace().nth(1).unwrap_or("").to_string();
    assert!(
        console.contains(&sha(&ed)) && console.contains(&sha(&ec)),
        "{console}"
    );
    assert_eq!(s.read("/etc/ssh/sshd_config"), "PermitRootLogin no\n");

    let ak = s.read("/home/admin/.ssh/authorized_keys");
    assert!(ak.starts_with("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHkXh8bXz6n7j0n8cQ5D8bWcKkq3m5mWmP0mJ3pQy0aB hand-added\n"), "{ak}");
    assert!(ak.contains("meta@key"), "{ak}");

    // Reboot, same instance: keys stay.
    s.new_boot("boot-2");
    assert_eq!(s.stoke(&["--execute", "run", "--stage", "all"]).code, 0);
    assert_eq!(fingerprint(&s, "/etc/ssh/ssh_host_ed25519_key.pub"), ed);
    assert_eq!(s.module_state("ssh-host-keys"), "skipped");

    // New instance from the same disk: new keys, keys block rewritten, foreign line kept.
    s.write(
        "/var/lib/stoke/seed/nocloud/meta-data",
        format!("instance-id: iid-two\nlocal-hostname: h1\npublic-keys:\n  - {pubkey}\n"),
    );
    s.new_boot("boot-3");
    assert_eq!(s.stoke(&["--execute", "run", "--stage", "all"]).code, 0);
    assert_ne!(fingerprint(&s, "/etc/ssh/ssh_host_ed25519_key.pub"), ed);
    let ak2 = s.read("/home/admin/.ssh/authorized_keys");
    assert_eq!(ak2.matches("meta@key").count(), 1, "{ak2}");
    assert!(ak2.contains("hand-added"), "{ak2}");
}
