//! `set-passwords` through the real binary: recorded under `--root`, and with the
//! real `chpasswd --root --encrypted` and `passwd --root --expire` under `--execute`
//! (root only; clear text goes through PAM, which a sandbox root lacks).

#[path = "support/sandbox.rs"]
mod sandbox;

use sandbox::Sandbox;

const HASH: &str = "$6$rounds=4096$salt$Zx1zcYcD3R0Xj8gkKYrYoDl3BIHfX3sFJw6Ds2JsfVZ5u0hr2kQ9Ny3RzrPDv7x8J1CaxfKzQWHN7iaR8n3B0";

fn user_data() -> String {
    format!(
        "#cloud-config\nssh_pwauth: true\nchpasswd:\n  users:\n    - {{name: admin, password: '{HASH}'}}\n    - {{name: root, type: RANDOM}}\n"
    )
}

fn world() -> Sandbox {
    world_with(&user_data())
}

fn world_with(user_data: &str) -> Sandbox {
    let s = Sandbox::nocloud("iid-pw", user_data);
    s.write(
        "/etc/ssh/sshd_config",
        "Include /etc/ssh/sshd_config.d/*.conf\nPasswordAuthentication no\n",
    );
    s.write(
        "/etc/shadow",
        "root:*:19000:0:99999:7:::\nadmin:*:19000:0:99999:7:::\n",
    );
    s.write("/etc/group", "root:x:0:\nadmin:x:1000:\n");
    s.write("/etc/gshadow", "root:*::\nadmin:!::\n");
    s
}

fn argvs(s: &Sandbox) -> Vec<String> {
    s.actions_of("run")
        .iter()
        .filter_map(|a| a["argv"].as_array().cloned())
        .map(|v| {
            v.iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[test]
fn recorded_drop_in_chpasswd_and_expire_with_no_secret_in_the_record() {
    let s = world();
    let r = s.run_all();
    assert_eq!(
        s.module_state("set-passwords"),
        "ok",
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    assert_eq!(
        s.read("/etc/ssh/sshd_config.d/50-stoke-pwauth.conf")
            .lines()
            .last(),
        Some("PasswordAuthentication yes")
    );
    let root = s.root().display().to_string();
    let cmds = argvs(&s);
    for want in [
        format!("chpasswd --root {root} --encrypted"),
        format!("chpasswd --root {root}"),
        format!("passwd --root {root} --expire admin"),
        format!("passwd --root {root} --expire root"),
        "systemctl try-reload-or-restart sshd.service".to_string(),
    ] {
        assert!(cmds.contains(&want), "{want} not in {cmds:?}");
    }
    let record = s.read("/run/stoke/actions.jsonl");
    assert!(!record.contains("rounds=4096"), "no hash in the record");
    let console: Vec<_> = s
        .actions_of("console")
        .into_iter()
        .filter(|a| a["text"].as_str().unwrap_or("").contains("'random'"))
        .collect();
    assert_eq!(console.len(), 1, "{console:?}");
    assert!(console[0]["text"].as_str().unwrap_or("").contains("root:"));
    let status = s.read("/run/stoke/status.json");
    let random = console[0]["text"]
        .as_str()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("root:")))
        .unwrap_or("missing")
        .to_string();
    assert!(
        !status.contains(&random),
        "the random password is not in status"
    );
}

#[test]
fn real_chpasswd_and_expire_under_execute() {
    if !stoke_api::testing::need_root("chpasswd --root") {
        return;
    }
    let have = |t: &str| {
        ["/usr/sbin", "/usr/bin", "/sbin"]
            .iter()
            .any(|d| std::path::Path::new(d).join(t).exists())
    };
    if !have("chpasswd") || !have("passwd") {
        stoke_api::testing::skip("the shadow tools are not installed (package passwd)");
        return;
    }
    // Hashes only: clear text goes through PAM, which a sandbox root lacks.
    let s = world_with(&format!(
        "#cloud-config\nchpasswd:\n  users:\n    - {{name: admin, password: '{HASH}'}}\n"
    ));
    let r = s.stoke(&["--execute", "run", "--stage", "all"]);
    assert_eq!(
        s.module_state("set-passwords"),
        "ok",
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    let shadow = s.read("/etc/shadow");
    let admin = shadow
        .lines()
        .find(|l| l.starts_with("admin:"))
        .unwrap_or_default();
    assert!(admin.starts_with(&format!("admin:{HASH}:0:")), "{shadow}");
    // Expired: last change 0. root untouched.
    assert_eq!(admin.split(':').nth(2), Some("0"), "{shadow}");
    assert!(shadow.contains("root:*:19000:"), "{shadow}");
}
