//! `users-groups` through the real binary: with the real `useradd --root`,
//! `groupadd --root`, `usermod --root`, `chpasswd --root` and `visudo -cf -`
//! under `--execute` (root only), and recorded without it.

#[path = "support/sandbox.rs"]
mod sandbox;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use sandbox::Sandbox;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHkXh8bXz6n7j0n8cQ5D8bWcKkq3m5mWmP0mJ3pQy0aB";

fn have(tool: &str) -> bool {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .any(|d| std::path::Path::new(d).join(tool).exists())
}

/// A root the shadow tools accept: passwd, shadow, group, gshadow, sudoers.
fn accounts_root(user_data: &str) -> Sandbox {
    let s = Sandbox::new();
    s.write(
        "/var/lib/stoke/seed/nocloud/meta-data",
        format!("instance-id: iid-1\nlocal-hostname: h\npublic-keys:\n  - {KEY} meta@key\n"),
    );
    s.write("/var/lib/stoke/seed/nocloud/user-data", user_data);
    s.write(
        "/etc/shadow",
        "root:*:19000:0:99999:7:::\nadmin:*:19000:0:99999:7:::\n",
    );
    s.write(
        "/etc/group",
        "root:x:0:\nadm:x:4:\nsudo:x:27:\nadmin:x:1000:\n",
    );
    s.write("/etc/gshadow", "root:*::\nadm:*::\nsudo:*::\nadmin:!::\n");
    s.write(
        "/etc/sudoers",
        "root ALL=(ALL) ALL\n@includedir /etc/sudoers.d\n",
    );
    std::fs::create_dir_all(s.path("/home")).unwrap();
    std::fs::create_dir_all(s.path("/root")).unwrap();
    s
}

fn skip_reason() -> Option<&'static str> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (useradd --root)");
    }
    for t in ["useradd", "groupadd", "usermod", "chpasswd", "visudo"] {
        if !have(t) {
            return Some(match t {
                "visudo" => "visudo is not installed (package sudo)",
                _ => "the shadow tools are not installed (package passwd)",
            });
        }
    }
    None
}

const USER_DATA: &str = "#cloud-config
default_user:
  name: ec2-user
  gecos: EC2 Default User
groups:
  ops: [admin]
users:
  - default
  - name: bob
    groups: ops, adm
    uid: 2001
    shell: /bin/bash
    hashed_passwd: $6$rounds=4096$salt$Zx1zcYcD3R0Xj8gkKYrYoDl3BIHfX3sFJw6Ds2JsfVZ5u0hr2kQ9Ny3RzrPDv7x8J1CaxfKzQWHN7iaR8n3B0
    sudo: ALL=(ALL) NOPASSWD:/usr/bin/true
    ssh_authorized_keys: [ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHkXh8bXz6n7j0n8cQ5D8bWcKkq3m5mWmP0mJ3pQy0aB bob@key]
  - name: admin
    groups: [sudo]
";

#[test]
fn real_tools_create_groups_users_sudo_and_keys() {
    if let Some(why) = skip_reason() {
        // Fails instead under STOKE_TEST_REQUIRE_ALL=1 (CI installs the tools and runs as root).
        stoke_api::testing::skip(why);
        return;
    }
    let s = accounts_root(USER_DATA);
    let r = s.stoke(&["--execute", "run", "--stage", "all"]);
    assert_eq!(
        s.module_state("users-groups"),
        "ok",
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    let passwd = s.read("/etc/passwd");
    assert!(passwd.contains("\nec2-user:x:"), "{passwd}");
    assert!(passwd.contains("\nbob:x:2001:"), "{passwd}");
    assert!(passwd.contains(":/home/bob:/bin/bash"), "{passwd}");
    let group = s.read("/etc/group");
    assert!(
        group
            .lines()
            .any(|l| l.starts_with("ops:") && l.contains("admin") && l.contains("bob")),
        "{group}"
    );
    assert!(
        group
            .lines()
            .any(|l| l.starts_with("sudo:") && l.contains("ec2-user") && l.contains("admin")),
        "{group}"
    );
    assert!(
        group
            .lines()
            .any(|l| l.starts_with("adm:") && l.contains("bob")),
        "{group}"
    );
    // bob's hash is in shadow, locked (`!` prefix: cloud-init's lock_passwd default).
    let shadow = s.read("/etc/shadow");
    assert!(shadow.contains("\nbob:!$6$rounds=4096$salt$"), "{shadow}");
    // The created default user: cloud-init's passwordless sudo, and the instance's key.
    let du = s.read("/etc/sudoers.d/90-stoke-ec2-user");
    assert!(du.contains("ec2-user ALL=(ALL) NOPASSWD:ALL"), "{du}");
    let meta = std::fs::metadata(s.path("/etc/sudoers.d/90-stoke-bob")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o440);
    assert!(
        s.read("/home/ec2-user/.ssh/authorized_keys")
            .contains("meta@key")
    );
    assert!(s.read("/home/bob/.ssh/authorized_keys").contains("bob@key"));
    assert_eq!(
        std::fs::metadata(s.path("/home/bob/.ssh/authorized_keys"))
            .unwrap()
            .uid(),
        2001
    );
    // The image's own user was completed, not recreated, and got no sudo file.
    assert!(!s.path("/etc/sudoers.d/90-stoke-admin").exists());

    // Same instance, next boot: nothing again (per-instance).
    s.new_boot("boot-2");
    let before = s.read("/etc/passwd");
    s.stoke(&["--execute", "run", "--stage", "all"]);
    assert_eq!(s.read("/etc/passwd"), before);
}

#[test]
fn a_rule_visudo_refuses_fails_naming_the_user_and_nothing_is_made() {
    if let Some(why) = skip_reason() {
        // Fails instead under STOKE_TEST_REQUIRE_ALL=1 (CI installs the tools and runs as root).
        stoke_api::testing::skip(why);
        return;
    }
    let s = accounts_root(
        "#cloud-config\nusers:\n  - name: carol\n    sudo: ALL=(ALL) NOPASSWD:ALL\n  - name: dave\n    sudo: \"ALL=(ALL NOPASSWD\"\n",
    );
    let before = (s.read("/etc/passwd"), s.read("/etc/group"));
    s.stoke(&["--execute", "run", "--stage", "all"]);
    assert_eq!(s.module_state("users-groups"), "failed");
    let err = s.status()["modules"]["users-groups"]["error"].to_string();
    assert!(
        err.contains("users[1] (dave): sudo rule refused by visudo"),
        "{err}"
    );
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!((s.read("/etc/passwd"), s.read("/etc/group")), before);
    assert!(!s.path("/etc/sudoers.d").exists());
}

#[test]
fn a_taken_uid_and_a_bad_name_are_named_and_nothing_is_made() {
    let s = accounts_root(
        "#cloud-config\nusers:\n  - name: erin\n    uid: 1000\n  - name: \"fr:ed\"\n  - snapuser: joe@example.com\n",
    );
    let r = s.stoke(&["--execute", "run", "--stage", "all"]);
    assert_eq!(s.module_state("users-groups"), "failed", "{}", r.stderr);
    let err = s.status()["modules"]["users-groups"]["error"].to_string();
    assert!(
        err.contains("users[0] (erin): uid 1000 is already taken by user `admin`"),
        "{err}"
    );
    assert!(
        err.contains("users[1] (fr:ed): `fr:ed` is not a valid name"),
        "{err}"
    );
    let account_tools = ["useradd", "groupadd", "usermod", "chpasswd", "visudo"];
    assert!(
        !s.actions_of("run")
            .iter()
            .any(|a| account_tools.iter().any(|t| a["argv"][0] == *t)),
        "{:?}",
        s.actions()
    );
}

#[test]
fn without_execute_the_commands_are_recorded_and_users_empty_gives_keys_to_nobody() {
    let s =
        accounts_root("#cloud-config\ndefault_user: ec2-user\nusers:\n  - default\n  - carol\n");
    s.run_all();
    let runs: Vec<String> = s
        .actions_of("run")
        .iter()
        .map(|a| {
            a["argv"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap_or("").to_string())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let root = s.root().display().to_string();
    assert!(
        runs.contains(&format!(
            "useradd --root {root} --groups adm,sudo --create-home ec2-user"
        )),
        "{runs:?}"
    );
    assert!(
        runs.contains(&format!("useradd --root {root} --create-home carol")),
        "{runs:?}"
    );
    let warnings = s.status()["modules"]["users-groups"]["warnings"].to_string();
    assert!(warnings.contains("recorded, not run"), "{warnings}");

    let s = accounts_root("#cloud-config\ndefault_user: admin\nusers: []\n");
    std::fs::create_dir_all(s.path("/home/admin")).unwrap();
    s.run_all();
    assert!(!s.path("/home/admin/.ssh/authorized_keys").exists());
    let warnings = s.status()["modules"]["ssh-authorized-keys"]["warnings"].to_string();
    assert!(
        warnings.contains("no default user (`users: []`"),
        "{warnings}"
    );
}
