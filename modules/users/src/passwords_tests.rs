use std::fs;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use stoke_api::fake::{FakeSystem, context};
use stoke_api::{Action, Cmd, CmdOutput, InstanceData, Module, Report};

use crate::passwords::SetPasswords;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\nadmin:x:1000:1000::/home/admin:/bin/sh\nbob:x:1001:1001::/home/bob:/bin/sh\n";
const HASH: &str = "$6$rounds=4096$salt$Zx1zcYcD3R0Xj8gkKYrYoDl3BIHfX3sFJw6Ds2JsfVZ5u0hr2kQ9Ny3RzrPDv7x8J1CaxfKzQWHN7iaR8n3B0";
const DEBIAN_SSHD: &str = "Include /etc/ssh/sshd_config.d/*.conf\n\nPasswordAuthentication no\nMatch User x\n  X11Forwarding no\n";
const OLD_SSHD: &str = "#Port 22\nPasswordAuthentication no\nMatch User x\n  X11Forwarding no\n";

fn world(sshd: Option<&str>) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir_all(t.path().join("etc/ssh")).unwrap();
    fs::write(t.path().join("etc/passwd"), PASSWD).unwrap();
    if let Some(s) = sshd {
        fs::write(t.path().join("etc/ssh/sshd_config"), s).unwrap();
    }
    t
}

/// Commands run, each with its stdin, the sandbox `--root DIR` taken out.
type Seen = Arc<std::sync::Mutex<Vec<(String, Option<String>)>>>;

fn with_stdin(fake: &Arc<FakeSystem>) -> Seen {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    fake.respond(move |c: &Cmd| {
        let argv = std::iter::once(c.program.clone())
            .chain(c.args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ");
        s.lock().unwrap().push((argv, c.stdin.clone()));
        None
    });
    seen
}

async fn run(root: &Path, config: Value, fake: Arc<FakeSystem>) -> Result<Report, String> {
    let ctx = context(root, config, InstanceData::default(), fake);
    SetPasswords.run(&ctx).await.map_err(|e| e.to_string())
}

#[tokio::test]
async fn pwauth_is_a_drop_in_where_sshd_includes_them_and_sshd_is_reloaded_once() {
    let w = world(Some(DEBIAN_SSHD));
    fs::create_dir_all(w.path().join("lib/systemd/system")).unwrap();
    fs::write(w.path().join("lib/systemd/system/ssh.service"), "").unwrap();
    let fake = FakeSystem::new();
    let r = run(w.path(), json!({"ssh_pwauth": true}), fake.clone())
        .await
        .unwrap();
    let drop_in =
        fs::read_to_string(w.path().join("etc/ssh/sshd_config.d/50-stoke-pwauth.conf")).unwrap();
    assert!(
        drop_in.ends_with("\nPasswordAuthentication yes\n"),
        "{drop_in}"
    );
    assert_eq!(
        fs::read_to_string(w.path().join("etc/ssh/sshd_config")).unwrap(),
        DEBIAN_SSHD
    );
    assert_eq!(
        fake.commands(),
        vec!["systemctl try-reload-or-restart ssh.service"]
    );
    assert!(
        r.summary.contains("PasswordAuthentication yes"),
        "{}",
        r.summary
    );
    // Nothing changed: no reload.
    let fake = FakeSystem::new();
    run(w.path(), json!({"ssh_pwauth": true}), fake.clone())
        .await
        .unwrap();
    assert!(fake.commands().is_empty());
    // false: the same file says no.
    let fake = FakeSystem::new();
    run(w.path(), json!({"ssh_pwauth": false}), fake.clone())
        .await
        .unwrap();
    let drop_in =
        fs::read_to_string(w.path().join("etc/ssh/sshd_config.d/50-stoke-pwauth.conf")).unwrap();
    assert!(
        drop_in.ends_with("\nPasswordAuthentication no\n"),
        "{drop_in}"
    );
}

#[tokio::test]
async fn pwauth_without_include_is_a_block_at_the_top_and_the_rest_stays() {
    let w = world(Some(OLD_SSHD));
    let fake = FakeSystem::new();
    run(w.path(), json!({"ssh_pwauth": true}), fake.clone())
        .await
        .unwrap();
    let text = fs::read_to_string(w.path().join("etc/ssh/sshd_config")).unwrap();
    assert_eq!(
        text,
        format!(
            "# BEGIN stoke ssh_pwauth\nPasswordAuthentication yes\n# END stoke ssh_pwauth\n{OLD_SSHD}"
        )
    );
    assert_eq!(
        fake.commands(),
        vec!["systemctl try-reload-or-restart sshd.service"]
    );
    assert!(!w.path().join("etc/ssh/sshd_config.d").exists());
    // Flipped: replaced in place, still one block, the image's lines byte-identical.
    run(w.path(), json!({"ssh_pwauth": false}), FakeSystem::new())
        .await
        .unwrap();
    let text = fs::read_to_string(w.path().join("etc/ssh/sshd_config")).unwrap();
    assert_eq!(
        text,
        format!(
            "# BEGIN stoke ssh_pwauth\nPasswordAuthentication no\n# END stoke ssh_pwauth\n{OLD_SSHD}"
        )
    );
}

#[tokio::test]
async fn pwauth_unchanged_or_without_sshd_does_nothing() {
    let w = world(Some(OLD_SSHD));
    let fake = FakeSystem::new();
    run(w.path(), json!({"ssh_pwauth": "unchanged"}), fake.clone())
        .await
        .unwrap();
    assert!(fake.commands().is_empty());
    assert_eq!(
        fs::read_to_string(w.path().join("etc/ssh/sshd_config")).unwrap(),
        OLD_SSHD
    );
    let w = world(None);
    let r = run(w.path(), json!({"ssh_pwauth": true}), FakeSystem::new())
        .await
        .unwrap();
    assert!(
        r.details["notes"].to_string().contains("not installed"),
        "{}",
        r.details
    );
    let e = serde_json::from_value::<crate::passwords::PasswordsConfig>(json!({"ssh_pwauth": [1]}))
        .unwrap_err();
    assert!(e.to_string().contains("ssh_pwauth"), "{e}");
}

/// cloud-init reads a string `ssh_pwauth` (deprecated) with its yes/no words, and leaves sshd
/// alone on anything else: such a user-data must load, and mean that.
#[tokio::test]
async fn pwauth_strings_mean_what_they_mean_to_cloud_init() {
    for (value, want) in [
        (json!("yes"), Some("yes")),
        (json!("Off"), Some("no")),
        (json!(0), Some("no")),
        (json!("maybe"), None),
        (json!("UNCHANGED"), None),
    ] {
        let w = world(Some(OLD_SSHD));
        let r = run(w.path(), json!({"ssh_pwauth": value}), FakeSystem::new())
            .await
            .unwrap();
        let sshd = fs::read_to_string(w.path().join("etc/ssh/sshd_config")).unwrap();
        match want {
            Some(v) => assert_eq!(
                sshd,
                format!(
                    "# BEGIN stoke ssh_pwauth\nPasswordAuthentication {v}\n# END stoke ssh_pwauth\n{OLD_SSHD}"
                ),
                "{value}"
            ),
            None => assert_eq!(sshd, OLD_SSHD, "{value}"),
        }
        let warned = r.warnings.join("\n");
        match (&value, want) {
            (_, Some(_)) => assert!(warned.contains("deprecated"), "{value}: {warned}"),
            (v, None) if v == "maybe" => {
                assert!(warned.contains("unrecognized value \"maybe\""), "{warned}")
            }
            _ => assert!(warned.is_empty(), "{value}: {warned}"),
        }
    }
}

#[tokio::test]
async fn chpasswd_hashes_and_text_on_stdin_random_on_the_console_then_expire() {
    let w = world(None);
    let fake = FakeSystem::new();
    let seen = with_stdin(&fake);
    let r = run(
        w.path(),
        json!({"chpasswd": {"users": [
            {"name": "admin", "password": HASH},
            {"name": "bob", "password": "s3cret", "type": "text"},
            {"name": "root", "type": "RANDOM"},
        ]}}),
        fake.clone(),
    )
    .await
    .unwrap();
    let root = format!(" --root {}", w.path().display());
    let seen: Vec<(String, Option<String>)> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(a, s)| (a.replace(&root, ""), s.clone()))
        .collect();
    assert_eq!(
        seen[0],
        (
            "chpasswd --encrypted".into(),
            Some(format!("admin:{HASH}\n"))
        )
    );
    assert_eq!(seen[1].0, "chpasswd");
    let stdin = seen[1].1.clone().unwrap();
    assert!(stdin.starts_with("bob:s3cret\nroot:"), "{stdin}");
    let random = stdin
        .lines()
        .nth(1)
        .unwrap()
        .trim_start_matches("root:")
        .to_string();
    assert_eq!(random.len(), 20);
    assert!(
        random
            .bytes()
            .all(|b| crate::passwords::tests_alphabet().contains(&b))
    );
    assert_eq!(
        seen[2..].iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
        [
            "passwd --expire admin",
            "passwd --expire bob",
            "passwd --expire root"
        ]
    );
    // Secrets never in an argv, the report or a warning; the random one on the console.
    for (argv, _) in &seen {
        assert!(!argv.contains("s3cret") && !argv.contains(&random) && !argv.contains("$6$"));
    }
    let report = serde_json::to_string(&r).unwrap();
    assert!(
        !report.contains("s3cret") && !report.contains(&random),
        "{report}"
    );
    let console: Vec<String> = fake
        .actions()
        .into_iter()
        .filter_map(|a| match a {
            Action::Console { text } => Some(text),
            _ => None,
        })
        .collect();
    assert_eq!(console.len(), 1);
    assert!(
        console[0].contains(&format!("root:{random}\n")),
        "{console:?}"
    );
    assert!(!console[0].contains("s3cret"));
}

#[tokio::test]
async fn chpasswd_list_form_is_read_with_a_warning_and_expire_false_expires_nothing() {
    let w = world(None);
    let fake = FakeSystem::new();
    let seen = with_stdin(&fake);
    let r = run(
        w.path(),
        json!({"chpasswd": {"expire": false, "list": format!("admin:{HASH}\nbob:R\n")}}),
        fake.clone(),
    )
    .await
    .unwrap();
    assert!(
        r.warnings.iter().any(|w| w.contains("deprecated")),
        "{:?}",
        r.warnings
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[0].1.as_deref() == Some(&format!("admin:{HASH}\n")[..]));
    assert!(seen[1].1.as_deref().unwrap().starts_with("bob:"));
    assert!(fake.commands().iter().all(|c| !c.contains("--expire")));
}

#[tokio::test]
async fn bad_entries_name_themselves_and_nothing_is_set() {
    for (cfg, want) in [
        (
            json!({"users": [{"name": "ghost", "password": HASH}]}),
            "chpasswd.users[0] (ghost): no user",
        ),
        (
            json!({"users": [{"name": "bob", "password": "plain"}]}),
            "chpasswd.users[0] (bob): type hash",
        ),
        (
            json!({"users": [{"name": "bo:b", "type": "RANDOM"}]}),
            "chpasswd.users[0] (bo:b)",
        ),
        (
            json!({"users": [{"name": "bob", "type": "text"}]}),
            "no `password`",
        ),
        (
            json!({"users": [{"name": "bob", "type": "RANDOM"}, {"name": "bob", "type": "RANDOM"}]}),
            "users[1] (bob): a second",
        ),
        (json!({"list": "bob"}), "chpasswd.list line 1"),
    ] {
        let w = world(Some(OLD_SSHD));
        let fake = FakeSystem::new();
        let e = run(
            w.path(),
            json!({"ssh_pwauth": true, "chpasswd": cfg}),
            fake.clone(),
        )
        .await
        .unwrap_err();
        assert!(e.contains(want), "{cfg}: {e}");
        assert!(fake.actions().is_empty(), "{cfg}: {:?}", fake.actions());
        assert_eq!(
            fs::read_to_string(w.path().join("etc/ssh/sshd_config")).unwrap(),
            OLD_SSHD
        );
    }
}

#[tokio::test]
async fn a_failed_chpasswd_fails_the_module() {
    let w = world(None);
    let fake = FakeSystem::new();
    fake.on(
        "chpasswd",
        CmdOutput::failed(1, "chpasswd: (user bob) pam_chauthtok() failed"),
    );
    let e = run(
        w.path(),
        json!({"chpasswd": {"users": [{"name": "bob", "type": "RANDOM"}]}}),
        fake.clone(),
    )
    .await
    .unwrap_err();
    assert!(e.contains("pam_chauthtok"), "{e}");
    assert!(
        fake.actions()
            .iter()
            .all(|a| !matches!(a, Action::Console { .. })),
        "no password shown that was not set"
    );
}

#[test]
fn nothing_configured_unless_a_setting_or_a_password() {
    let nc = |v: Value| SetPasswords.nothing_configured(&v, &[]);
    assert!(nc(json!({})).is_some());
    assert!(nc(json!({"ssh_pwauth": "unchanged"})).is_some());
    assert!(nc(json!({"chpasswd": {"expire": false}})).is_some());
    assert!(nc(json!({"ssh_pwauth": false})).is_none());
    assert!(nc(json!({"chpasswd": {"users": [{"name": "a", "type": "RANDOM"}]}})).is_none());
}
