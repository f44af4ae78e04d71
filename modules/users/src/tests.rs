use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use stoke_api::fake::{FakeSystem, context};
use stoke_api::{CmdOutput, InstanceData, Module};

use super::*;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\nadmin:x:1000:1000::/home/admin:/bin/sh\n";
const GROUP: &str = "root:x:0:\nadm:x:4:\nsudo:x:27:\nadmin:x:1000:\n";

fn world() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir_all(t.path().join("etc")).unwrap();
    fs::write(t.path().join("etc/passwd"), PASSWD).unwrap();
    fs::write(t.path().join("etc/group"), GROUP).unwrap();
    fs::write(
        t.path().join("etc/sudoers"),
        "root ALL=(ALL) ALL\n@includedir /etc/sudoers.d\n",
    )
    .unwrap();
    t
}

fn instance() -> InstanceData {
    InstanceData {
        datasource: "nocloud".into(),
        instance_id: "i-1".parse().unwrap(),
        ..Default::default()
    }
}

async fn run(root: &Path, config: Value, fake: Arc<FakeSystem>) -> Result<Report, String> {
    let ctx = context(root, config, instance(), fake);
    UsersGroups.run(&ctx).await.map_err(|e| e.to_string())
}

/// The commands run, with the sandbox's `--root DIR` taken out for readability.
fn commands(fake: &FakeSystem, root: &Path) -> Vec<String> {
    let r = format!(" --root {}", root.display());
    fake.commands()
        .into_iter()
        .map(|c| c.replace(&r, ""))
        .collect()
}

#[tokio::test]
async fn groups_users_members_and_sudo_in_order() {
    let w = world();
    let fake = FakeSystem::new();
    let config = json!({
        "default_user": "ec2-user",
        "groups": ["ops", {"dev": ["admin", "bob", "ghost"]}],
        "users": [
            "default",
            {"name": "bob", "gecos": "Bob B", "homedir": "/srv/bob", "primary_group": "ops",
             "groups": "dev, adm", "shell": "/bin/bash", "uid": 2001,
             "hashed_passwd": "$6$salt$hash", "expiredate": "2030-01-31", "inactive": "5",
             "sudo": ["ALL=(ALL) NOPASSWD: /usr/bin/systemctl"]},
            {"name": "svc", "system": true, "lock_passwd": false, "sudo": false},
            {"name": "admin", "groups": ["adm", "sudo"], "no_create_home": true},
            {"snapuser": "joe@example.com"},
        ],
    });
    let report = run(w.path(), config, fake.clone()).await.unwrap();
    let cmds = commands(&fake, w.path());
    assert_eq!(
        cmds,
        vec![
            "visudo -c -q -f -",
            "visudo -c -q -f -",
            "groupadd ops",
            "groupadd dev",
            "useradd --groups adm,sudo --create-home ec2-user",
            "useradd --comment Bob B --home-dir /srv/bob --gid ops --groups dev,adm --shell /bin/bash \
             --uid 2001 --expiredate 2030-01-31 --inactive 5 --create-home bob",
            "chpasswd --encrypted",
            "usermod --lock bob",
            "useradd --system --no-create-home svc",
            "usermod --append --groups adm,sudo admin",
            "usermod --append --groups dev admin",
            "usermod --append --groups dev bob",
        ],
        "{cmds:#?}"
    );
    // The hash went on stdin: no argv holds it.
    assert!(!cmds.iter().any(|c| c.contains("$6$")));
    let sudo_bob = fs::read_to_string(w.path().join("etc/sudoers.d/90-stoke-bob")).unwrap();
    assert!(
        sudo_bob.ends_with("\nbob ALL=(ALL) NOPASSWD: /usr/bin/systemctl\n"),
        "{sudo_bob}"
    );
    let meta = fs::metadata(w.path().join("etc/sudoers.d/90-stoke-ec2-user")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o440);
    let du = fs::read_to_string(w.path().join("etc/sudoers.d/90-stoke-ec2-user")).unwrap();
    assert!(du.contains("ec2-user ALL=(ALL) NOPASSWD:ALL\n"), "{du}");
    assert!(!w.path().join("etc/sudoers.d/90-stoke-svc").exists());
    assert!(!w.path().join("etc/sudoers.d/90-stoke-admin").exists());
    assert_eq!(report.details["default_user"], "ec2-user");
    assert_eq!(
        report.details["users_created"],
        json!(["ec2-user", "bob", "svc"])
    );
    assert_eq!(report.details["users_existing"], json!(["admin"]));
    let warned = report.warnings.join("\n");
    assert!(warned.contains("member `ghost` does not exist"), "{warned}");
    assert!(warned.contains("snapuser joe@example.com"), "{warned}");
}

#[tokio::test]
async fn existing_default_user_keeps_what_the_image_gave_it_and_users_empty_means_none() {
    let w = world();
    let fake = FakeSystem::new();
    let report = run(w.path(), json!({"default_user": "admin"}), fake.clone())
        .await
        .unwrap();
    assert!(fake.commands().is_empty(), "{:?}", fake.commands());
    assert!(!w.path().join("etc/sudoers.d").exists());
    assert_eq!(report.details["default_user"], "admin");

    let fake = FakeSystem::new();
    let report = run(
        w.path(),
        json!({"system_info": {"default_user": {"name": "ubuntu"}, "distro": "ubuntu"}, "users": []}),
        fake.clone(),
    )
    .await
    .unwrap();
    assert!(fake.commands().is_empty(), "{:?}", fake.commands());
    assert_eq!(report.details["default_user"], Value::Null);
    assert!(
        report.summary.contains("no default user"),
        "{}",
        report.summary
    );
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("ignored: distro"))
    );

    // A map default user: its own settings, cloud-init's defaults for the rest.
    let fake = FakeSystem::new();
    run(
        w.path(),
        json!({"system_info": {"default_user": {"name": "ubuntu", "shell": "/bin/zsh", "sudo": false}}}),
        fake.clone(),
    )
    .await
    .unwrap();
    assert_eq!(
        commands(&fake, w.path()),
        vec!["useradd --groups adm,sudo --shell /bin/zsh --create-home ubuntu"]
    );
    assert!(!w.path().join("etc/sudoers.d/90-stoke-ubuntu").exists());
}

/// Each bad entry is named, and nothing at all is run or written.
#[tokio::test]
async fn bad_entries_are_named_and_nothing_is_made() {
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"users": [{"name": "bo:b"}]}),
            "users[0] (bo:b): `bo:b` is not a valid name",
        ),
        (
            json!({"users": [{"name": "a/b"}]}),
            "users[0] (a/b): `a/b` is not a valid name",
        ),
        (
            json!({"users": ["ok", {"name": "carol", "uid": 1000}]}),
            "users[1] (carol): uid 1000 is already taken by user `admin`",
        ),
        (
            json!({"users": [{"name": "carol", "primary_group": "nope"}]}),
            "users[0] (carol): primary_group `nope` does not exist",
        ),
        (
            json!({"users": [{"name": "carol", "groups": ["nope"], "create_groups": false}]}),
            "users[0] (carol): group `nope` does not exist (and create_groups is false)",
        ),
        (
            json!({"users": [{"name": "carol", "sudo": true}]}),
            "users[0] (carol): sudo: `sudo: true` names no rule",
        ),
        (
            json!({"users": [{"name": "carol", "expiredate": "soon"}]}),
            "users[0] (carol): expiredate must be YYYY-MM-DD",
        ),
        (
            json!({"users": [{"name": "carol", "shell": "bash"}]}),
            "users[0] (carol): shell must be an absolute path",
        ),
        (
            json!({"users": [{"name": "carol"}, {"name": "carol"}]}),
            "users[1] (carol): listed twice (also users[0] (carol))",
        ),
        (json!({"users": [{"gecos": "x"}]}), "users[0]: no `name`"),
        (
            json!({"groups": ["g:1"]}),
            "groups[0] (g:1): `g:1` is not a valid name",
        ),
    ];
    for (config, want) in cases {
        let w = world();
        let fake = FakeSystem::new();
        let mut full = config.clone();
        // A good user alongside: it must not be made either.
        if let Some(users) = full.get_mut("users").and_then(Value::as_array_mut) {
            users.push(json!({"name": "good", "sudo": "ALL=(ALL) ALL"}));
        }
        let err = run(w.path(), full, fake.clone()).await.unwrap_err();
        assert!(err.contains(want), "{config}: {err}");
        assert!(err.contains("nothing was changed"), "{err}");
        assert!(
            fake.commands().is_empty(),
            "{config}: {:?}",
            fake.commands()
        );
        assert!(!w.path().join("etc/sudoers.d").exists());
    }
}

#[tokio::test]
async fn a_rule_visudo_refuses_is_an_error_and_nothing_is_installed() {
    let w = world();
    let fake = FakeSystem::new();
    fake.respond(|cmd| {
        (cmd.program == "visudo" && cmd.stdin.as_deref().is_some_and(|s| s.contains("bad")))
            .then(|| CmdOutput::failed(1, "stdin:2:10: syntax error\nbad ALL=(ALL\n"))
    });
    let config = json!({"users": [
        {"name": "fine", "sudo": "ALL=(ALL) ALL"},
        {"name": "bad", "sudo": "ALL=(ALL"},
    ]});
    let err = run(w.path(), config, fake.clone()).await.unwrap_err();
    assert!(
        err.contains("users[1] (bad): sudo rule refused by visudo: rule:2:10: syntax error"),
        "{err}"
    );
    let cmds = fake.commands();
    assert!(cmds.iter().all(|c| c.starts_with("visudo")), "{cmds:?}");
    assert!(!w.path().join("etc/sudoers.d").exists());
}

#[tokio::test]
async fn a_second_run_rewrites_nothing_and_a_plain_password_is_warned() {
    let w = world();
    let config = json!({"users": [{"name": "admin", "sudo": "ALL=(ALL) ALL", "plain_text_passwd": "hunter2", "lock_passwd": false}]});
    let fake = FakeSystem::new();
    let report = run(w.path(), config.clone(), fake.clone()).await.unwrap();
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("plain_text_passwd"))
    );
    assert_eq!(
        commands(&fake, w.path()),
        vec!["visudo -c -q -f -", "chpasswd"],
        "no --lock: lock_passwd is false"
    );
    assert!(!fake.commands().iter().any(|c| c.contains("hunter2")));
    let path = w.path().join("etc/sudoers.d/90-stoke-admin");
    let before = fs::metadata(&path).unwrap().modified().unwrap();
    let fake = FakeSystem::new();
    run(w.path(), config, fake.clone()).await.unwrap();
    assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), before);
}

#[test]
fn names() {
    for ok in ["bob", "ec2-user", "a.b", "_x", "host$", "u1"] {
        assert!(check_name(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "-x",
        "a:b",
        "a/b",
        "a b",
        "123",
        ".",
        "..",
        &"x".repeat(33),
        "a\nb",
    ] {
        assert!(check_name(bad).is_err(), "{bad:?}");
    }
    assert_eq!(
        sudoers_path("first.last"),
        Path::new("/etc/sudoers.d/90-stoke-first_last")
    );
}

#[test]
fn config_shapes_load_and_typos_are_located() {
    let spec = UsersGroups.spec().config;
    (spec.validate)(
        "groups:\n  admingroup: [root, sys]\n  cloud-users:\nusers:\n  - default\n  - name: bob\n    groups: a, b\n    uid: '2001'\n    sudo: false\n  - snapuser: joe@example.com\n",
    )
    .unwrap();
    (spec.validate)("groups: a, b\n").unwrap();
    (spec.validate)("groups: [a, {b: c}]\n").unwrap();
    let err = (spec.validate)("users:\n  - name: bob\n    shel: /bin/sh\n").unwrap_err();
    assert_eq!(err.line, Some(3), "{err}");
    assert!(err.message.contains("did you mean `shell`"), "{err}");
}

/// cloud-init's `users: []`: no default user at all, however the image describes it (a
/// missing account with sudo rights is neither created nor given its sudo rule).
#[tokio::test]
async fn users_empty_list_means_no_default_user_whatever_the_image_says() {
    let w = world();
    let config = json!({
        "default_user": {"name": "ec2-user", "sudo": "ALL=(ALL) NOPASSWD:ALL", "groups": ["adm"]},
        "users": [],
    });
    let fake = FakeSystem::new();
    let report = run(w.path(), config.clone(), fake.clone()).await.unwrap();
    assert!(fake.commands().is_empty(), "{:?}", fake.commands());
    assert!(!w.path().join("etc/sudoers.d").exists());
    assert_eq!(report.details["default_user"], Value::Null);
    assert!(
        !fs::read_to_string(w.path().join("etc/passwd"))
            .unwrap()
            .contains("ec2-user")
    );
    let ctx = context(w.path(), config, instance(), FakeSystem::new());
    let plan = UsersGroups.plan(&ctx).unwrap();
    assert!(plan.contains("no default user"), "{plan}");

    // Without `users: []` the same image creates it: the test above is not vacuous.
    let fake = FakeSystem::new();
    run(
        w.path(),
        json!({"default_user": {"name": "ec2-user", "sudo": "ALL=(ALL) NOPASSWD:ALL"}}),
        fake.clone(),
    )
    .await
    .unwrap();
    assert!(
        commands(&fake, w.path())
            .iter()
            .any(|c| c.starts_with("useradd") && c.ends_with(" ec2-user")),
        "{:?}",
        fake.commands()
    );
}
