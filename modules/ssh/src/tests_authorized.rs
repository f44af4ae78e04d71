//! authorized_keys tests: a temp root with real homes (chowned; tests run as root),
//! hostile layouts, and a snapshot of every file to prove nothing else changed.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, chown, symlink};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use stoke_api::fake::FakeSystem;
use stoke_api::{Action, InstanceData, Module};

use crate::authorized::{AuthorizedKeys, BEGIN, END};
use crate::keyline::tests::fake_key;
use crate::testutil::context;

struct World {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash
admin:x:1000:1000::/home/admin:/bin/bash
bob:x:1001:1001::/home/bob:/bin/bash
carol:x:1002:1002::/home/carol:/bin/bash
ghost:x:1003:1003::/home/ghost:/bin/bash
dave:x:1004:1004::/home/dave:/bin/bash
eve:x:1005:1005::/home/eve:/bin/bash
";

fn mkdir_owned(p: &Path, uid: u32, mode: u32) {
    fs::create_dir_all(p).unwrap();
    chown(p, Some(uid), Some(uid)).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn write_owned(p: &Path, data: &str, uid: u32, mode: u32) {
    fs::write(p, data).unwrap();
    chown(p, Some(uid), Some(uid)).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/passwd"), PASSWD).unwrap();
    mkdir_owned(&root.join("root"), 0, 0o700);
    for (name, uid) in [
        ("admin", 1000),
        ("bob", 1001),
        ("carol", 1002),
        ("dave", 1004),
    ] {
        mkdir_owned(&root.join("home").join(name), uid, 0o755);
    }
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("victim"), "victim\n").unwrap();
    fs::write(outside.join("authorized_keys"), "outside keys\n").unwrap();
    World {
        _tmp: tmp,
        root,
        outside,
    }
}

/// Every path under `dir`: kind, content or link target, mode, owner.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        let what = if m.file_type().is_symlink() {
            format!("link {}", fs::read_link(&p).unwrap().display())
        } else if m.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
            "dir".into()
        } else if m.file_type().is_file() {
            format!("file {}", String::from_utf8_lossy(&fs::read(&p).unwrap()))
        } else {
            "special".into()
        };
        out.insert(
            p,
            format!("{what} mode {:o} uid {}", m.mode() & 0o7777, m.uid()),
        );
    }
    out
}

/// Paths whose snapshot entry differs (added, removed or changed).
fn changed(before: &BTreeMap<PathBuf, String>, after: &BTreeMap<PathBuf, String>) -> Vec<PathBuf> {
    let mut keys: Vec<&PathBuf> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .cloned()
        .collect()
}

fn instance(id: &str, keys: Vec<String>) -> InstanceData {
    InstanceData {
        datasource: "ec2".into(),
        instance_id: id.parse().unwrap(),
        public_keys: keys,
        ..Default::default()
    }
}

async fn run(
    w: &World,
    config: Value,
    inst: InstanceData,
) -> (
    Result<stoke_api::Report, String>,
    std::sync::Arc<FakeSystem>,
) {
    let fake = FakeSystem::new();
    let ctx = context(&w.root, config, inst, fake.clone(), true);
    (
        AuthorizedKeys.run(&ctx).await.map_err(|e| e.to_string()),
        fake,
    )
}

fn block(lines: &[&str]) -> String {
    let mut s = format!("{BEGIN}\n");
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    s.push_str(END);
    s.push('\n');
    s
}

fn root_prefix(user: &str) -> String {
    format!(
        r#"no-port-forwarding,no-agent-forwarding,no-X11-forwarding,command="echo 'Please login as the user \"{user}\" rather than the user \"root\".';echo;sleep 10;exit 142""#
    )
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap()
}

#[tokio::test]
async fn installs_keys_keeps_foreign_lines_and_rewrites_only_its_block() {
    let w = world();
    let (k1, k2, k3, k4) = (
        format!("{} operator@laptop", fake_key("ssh-ed25519", 1)),
        fake_key("ecdsa-sha2-nistp256", 2),
        fake_key("ssh-rsa", 3),
        fake_key("ssh-ed25519", 4),
    );
    let admin_ssh = w.root.join("home/admin/.ssh");
    mkdir_owned(&admin_ssh, 1000, 0o700);
    // Foreign content, last line without a newline, odd spacing and a comment kept as is.
    let foreign = format!(
        "# added by hand\n{}  laptop\nfrom=\"10.0.0.1\" {}",
        fake_key("ssh-ed25519", 9),
        fake_key("ssh-rsa", 8)
    );
    write_owned(&admin_ssh.join("authorized_keys"), &foreign, 1000, 0o600);
    let before = snapshot(w.root.parent().unwrap());

    let config = json!({
        "default_user": "admin",
        "ssh_authorized_keys": [k2],
        "users": ["default", {"name": "bob", "ssh_authorized_keys": [k3]}],
    });
    let (res, fake) = run(&w, config.clone(), instance("i-1", vec![k1.clone()])).await;
    let report = res.unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);

    let admin_file = admin_ssh.join("authorized_keys");
    assert_eq!(
        read(&admin_file),
        format!("{foreign}\n{}", block(&[&k1, &k2]))
    );
    let root_file = w.root.join("root/.ssh/authorized_keys");
    let p = root_prefix("admin");
    assert_eq!(
        read(&root_file),
        block(&[&format!("{p} {k1}"), &format!("{p} {k2}")])
    );
    let bob_ssh = w.root.join("home/bob/.ssh");
    assert_eq!(read(&bob_ssh.join("authorized_keys")), block(&[&k3]));
    let m = fs::metadata(&bob_ssh).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o700, 1001, 1001));
    let m = fs::metadata(bob_ssh.join("authorized_keys")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o600, 1001, 1001));
    assert!(fake.actions().contains(&Action::Chown {
        path: bob_ssh.clone(),
        uid: 1001,
        gid: 1001
    }));

    // Nothing else in the tree changed (no temp files left either).
    let after = snapshot(w.root.parent().unwrap());
    let mut expected = vec![
        admin_file.clone(),
        w.root.join("root/.ssh"),
        root_file.clone(),
        bob_ssh.clone(),
        bob_ssh.join("authorized_keys"),
    ];
    expected.sort();
    assert_eq!(changed(&before, &after), expected);

    // Same input again: nothing rewritten.
    let (res, _) = run(&w, config.clone(), instance("i-1", vec![k1.clone()])).await;
    assert!(
        res.unwrap().details["users"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["changed"] == false)
    );
    assert_eq!(snapshot(w.root.parent().unwrap()), after);

    // A new instance with another key pair: the block is replaced, foreign lines identical.
    let (res, _) = run(&w, config, instance("i-2", vec![k4.clone()])).await;
    res.unwrap();
    assert_eq!(
        read(&admin_file),
        format!("{foreign}\n{}", block(&[&k4, &k2]))
    );
    assert_eq!(
        read(&root_file),
        block(&[&format!("{p} {k4}"), &format!("{p} {k2}")])
    );
}

#[tokio::test]
async fn hostile_homes_are_refused_and_nothing_outside_is_written() {
    let w = world();
    let key = |n| fake_key("ssh-ed25519", n);
    // bob: ~/.ssh is a symlink to a directory outside.
    symlink(&w.outside, w.root.join("home/bob/.ssh")).unwrap();
    // carol: ~/.ssh belongs to bob.
    mkdir_owned(&w.root.join("home/carol/.ssh"), 1001, 0o700);
    // dave: authorized_keys is a symlink to another file.
    mkdir_owned(&w.root.join("home/dave/.ssh"), 1004, 0o700);
    symlink(
        w.outside.join("victim"),
        w.root.join("home/dave/.ssh/authorized_keys"),
    )
    .unwrap();
    // eve: home is an absolute symlink to the outside directory's host path; it
    // must resolve inside the root (where it does not exist), never to the host's.
    symlink(&w.outside, w.root.join("home/eve")).unwrap();
    let before = snapshot(w.root.parent().unwrap());

    let users: Vec<Value> = ["bob", "carol", "dave", "ghost", "eve", "nobody"]
        .iter()
        .enumerate()
        .map(|(i, n)| json!({"name": n, "ssh_authorized_keys": [key(10 + i as u32)]}))
        .collect();
    let config = json!({"default_user": "admin", "users": users});
    let (res, fake) = run(&w, config, instance("i-1", vec![key(1)])).await;
    let err = res.unwrap_err();
    for want in [
        "bob: refused: ",
        "home/bob/.ssh is a symbolic link",
        "carol: refused: directory",
        "is owned by uid 1001, not by carol (uid 1002)",
        "dave: refused: ",
        "home/dave/.ssh/authorized_keys is a symbolic link",
        "ghost: home directory",
        "home/ghost does not exist",
        "eve: home directory",
        "nobody: no user `nobody`",
        "applied for: admin (1 keys), root (1 keys)",
    ] {
        assert!(err.contains(want), "missing {want:?} in: {err}");
    }
    let after = snapshot(w.root.parent().unwrap());
    let mut expected = vec![
        w.root.join("home/admin/.ssh"),
        w.root.join("home/admin/.ssh/authorized_keys"),
        w.root.join("root/.ssh"),
        w.root.join("root/.ssh/authorized_keys"),
    ];
    expected.sort();
    assert_eq!(
        changed(&before, &after),
        expected,
        "only admin's and root's files"
    );
    // No ownership change was even attempted for the refused users.
    for a in fake.actions() {
        if let Action::Chown { uid, .. } = a {
            assert!(uid == 1000 || uid == 0, "{a:?}");
        }
    }
}

#[tokio::test]
async fn bad_lines_are_reported_with_their_source_and_skipped() {
    let w = world();
    let (g1, g2, g3) = (
        fake_key("ssh-ed25519", 1),
        fake_key("ssh-rsa", 2),
        fake_key("ecdsa-sha2-nistp384", 3),
    );
    let meta = vec![
        g1.clone(),
        "ssh-rsa AAAA!!notbase64".to_string(),
        format!("{g2}\nbogus-option {g3}\n# a comment\n\n{g1} duplicate"),
    ];
    let config = json!({
        "default_user": "admin",
        "disable_root": false,
        "ssh_authorized_keys": ["-----BEGIN OPENSSH PRIVATE KEY-----", format!("restrict {g3}")],
    });
    let (res, _) = run(&w, config, instance("i-1", meta)).await;
    let report = res.unwrap();
    let warnings = report.warnings.join("\n");
    for want in [
        "metadata public-keys[1] (for admin): key data is not valid base64; skipped",
        "metadata public-keys[2] line 2 (for admin): bad options: unknown option `bogus-option`",
        "config ssh_authorized_keys[0] (for admin): this is a PRIVATE key",
        "metadata public-keys[1] (for root)",
    ] {
        assert!(warnings.contains(want), "missing {want:?} in:\n{warnings}");
    }
    assert_eq!(
        report.details["bad_lines"], 6,
        "3 bad lines, for admin and for root"
    );
    let expected = block(&[&g1, &g2, &format!("restrict {g3}")]);
    assert_eq!(
        read(&w.root.join("home/admin/.ssh/authorized_keys")),
        expected
    );
    // disable_root: false: root gets the same keys, unprefixed.
    assert_eq!(read(&w.root.join("root/.ssh/authorized_keys")), expected);
}

#[tokio::test]
async fn ten_megabytes_of_keys_good_ones_applied_warnings_bounded() {
    let w = world();
    let mut list = String::with_capacity(11 << 20);
    let mut good = 0usize;
    let mut i = 0u32;
    while list.len() < 10 << 20 {
        if i % 1000 == 999 {
            list.push_str("ssh-ed25519 %%%garbage%%%\n");
        } else {
            list.push_str(&fake_key("ssh-ed25519", i));
            list.push_str(" bulk\n");
            good += 1;
        }
        i += 1;
    }
    // And one 10 MB line that is not a key at all.
    let huge = format!("ssh-rsa {}", "A".repeat(10 << 20));
    let config = json!({"default_user": "admin", "disable_root": false});
    let (res, _) = run(&w, config, instance("i-1", vec![huge, list])).await;
    let report = res.unwrap();
    assert!(report.warnings.len() <= 21, "{}", report.warnings.len());
    assert!(
        report
            .warnings
            .last()
            .unwrap()
            .contains("more bad key lines skipped")
    );
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("public-keys[0] (for admin): line is")),
        "{:?}",
        &report.warnings[..3]
    );
    let text = read(&w.root.join("home/admin/.ssh/authorized_keys"));
    assert_eq!(text.lines().filter(|l| l.ends_with(" bulk")).count(), good);
    assert!(!text.contains("garbage") && !text.contains("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
}

#[tokio::test]
async fn without_default_user_keys_go_nowhere_unless_root_may_use_them() {
    let w = world();
    let k = fake_key("ssh-ed25519", 1);
    // A stale stoke block in root's file (from the image's build instance) next to a foreign key.
    let root_ssh = w.root.join("root/.ssh");
    mkdir_owned(&root_ssh, 0, 0o700);
    let foreign = format!("{}\n", fake_key("ssh-rsa", 7));
    write_owned(
        &root_ssh.join("authorized_keys"),
        &format!("{foreign}{}", block(&[&fake_key("ssh-rsa", 6)])),
        0,
        0o600,
    );

    let (res, _) = run(&w, json!({}), instance("i-1", vec![k.clone()])).await;
    let report = res.unwrap();
    assert!(
        report.warnings.iter().any(|w| w
            .contains("1 keys from metadata/ssh_authorized_keys not installed: no default user (no default_user is set")),
        "{:?}",
        report.warnings
    );
    assert_eq!(
        read(&root_ssh.join("authorized_keys")),
        foreign,
        "stale block removed, foreign key kept"
    );
    assert!(!w.root.join("home/admin/.ssh").exists());

    let (res, _) = run(
        &w,
        json!({"disable_root": false}),
        instance("i-2", vec![k.clone()]),
    )
    .await;
    assert!(res.unwrap().warnings.is_empty());
    assert_eq!(
        read(&root_ssh.join("authorized_keys")),
        format!("{foreign}{}", block(&[&k]))
    );

    // Root as the default user: plain keys, once, whatever disable_root says.
    let k2 = fake_key("ssh-ed25519", 2);
    let (res, _) = run(
        &w,
        json!({"default_user": "root"}),
        instance("i-3", vec![k2.clone()]),
    )
    .await;
    assert!(res.unwrap().warnings.is_empty());
    assert_eq!(
        read(&root_ssh.join("authorized_keys")),
        format!("{foreign}{}", block(&[&k2]))
    );
}

#[tokio::test]
async fn damaged_block_fifo_and_bad_options_are_refused() {
    let w = world();
    let k = fake_key("ssh-ed25519", 1);
    let admin_ssh = w.root.join("home/admin/.ssh");
    mkdir_owned(&admin_ssh, 1000, 0o700);
    let damaged = format!("{BEGIN}\nmine\n");
    write_owned(&admin_ssh.join("authorized_keys"), &damaged, 1000, 0o600);
    let bob_ssh = w.root.join("home/bob/.ssh");
    mkdir_owned(&bob_ssh, 1001, 0o700);
    nix::unistd::mkfifo(
        &bob_ssh.join("authorized_keys"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let config = json!({
        "default_user": "admin",
        "disable_root_opts": "command=unquoted",
        "users": [{"name": "bob", "ssh_authorized_keys": [k]}],
    });
    let (res, _) = run(&w, config, instance("i-1", vec![k.clone()])).await;
    let err = res.unwrap_err();
    assert!(
        err.contains("has a damaged stoke block (1 begin and 0 end markers)"),
        "{err}"
    );
    assert!(
        err.contains("bob: refused: ") && err.contains("is not a regular file"),
        "{err}"
    );
    assert!(
        err.contains("root: invalid configuration: disable_root_opts: bad options"),
        "{err}"
    );
    assert_eq!(read(&admin_ssh.join("authorized_keys")), damaged);
}

#[tokio::test]
async fn sandbox_records_chown_and_accepts_files_it_made_itself() {
    let w = world();
    let fake = FakeSystem::new();
    let config = json!({"default_user": "admin", "users": [{"name": "bob", "ssh_authorized_keys": [fake_key("ssh-rsa", 5)]}]});
    for (id, n) in [("i-1", 1), ("i-2", 2)] {
        let ctx = context(
            &w.root,
            config.clone(),
            instance(id, vec![fake_key("ssh-ed25519", n)]),
            fake.clone(),
            false,
        );
        AuthorizedKeys.run(&ctx).await.unwrap();
    }
    let bob_file = w.root.join("home/bob/.ssh/authorized_keys");
    // Ownership changes were recorded, not made (the files belong to whoever ran the test).
    assert_eq!(
        fs::metadata(&bob_file).unwrap().uid(),
        nix::unistd::geteuid().as_raw()
    );
    assert!(fake.actions().contains(&Action::Chown {
        path: bob_file,
        uid: 1001,
        gid: 1001
    }));
    assert!(fake.actions().contains(&Action::Chown {
        path: w.root.join("home/bob/.ssh"),
        uid: 1001,
        gid: 1001
    }));
    assert!(
        read(&w.root.join("home/admin/.ssh/authorized_keys")).contains(&fake_key("ssh-ed25519", 2))
    );
}

#[tokio::test]
async fn cloud_init_user_settings_are_accepted_with_a_warning() {
    let w = world();
    let spec = AuthorizedKeys.spec().config;
    let yaml = "users:\n  - default\n  - name: bob\n    groups: [wheel]\n    sudo: ALL=(ALL) NOPASSWD:ALL\n    lock-passwd: true\n    ssh-authorized-keys: [x]\ndisable_root: false\n";
    (spec.validate)(yaml).unwrap();
    let err = (spec.validate)("users:\n  - name: bob\n    ssh_authorised_keys: [x]\n").unwrap_err();
    assert_eq!(err.line, Some(3), "{err}");
    assert!(
        err.message.contains("did you mean `ssh_authorized_keys`"),
        "{err}"
    );

    let config = json!({"users": [{"name": "bob", "groups": ["wheel"], "sudo": "ALL", "ssh_authorized_keys": [fake_key("ssh-rsa", 1)]}]});
    let (res, _) = run(&w, config, instance("i-1", vec![])).await;
    let report = res.unwrap();
    // Those settings are users-groups' work now: nothing to warn about here.
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert!(w.root.join("home/bob/.ssh/authorized_keys").exists());
}

#[tokio::test]
async fn snapuser_entries_and_default_user_maps_load_and_users_empty_means_nobody() {
    let w = world();
    let spec = AuthorizedKeys.spec().config;
    // cloud-init's snapuser form has no `name`; it used to fail the whole user-data.
    (spec.validate)("users:\n  - default\n  - snapuser: joe@example.com\n").unwrap();
    (spec.validate)("default_user:\n  name: admin\n  groups: [wheel]\n  sudo: false\n").unwrap();
    (spec.validate)("system_info:\n  default_user: {name: admin}\n  distro: debian\n").unwrap();

    let k = fake_key("ssh-ed25519", 4);
    let admin_file = w.root.join("home/admin/.ssh/authorized_keys");
    let (res, _) = run(
        &w,
        json!({"system_info": {"default_user": {"name": "admin", "sudo": false}}, "users": ["default", {"snapuser": "joe@example.com"}]}),
        instance("i-1", vec![k.clone()]),
    )
    .await;
    res.unwrap();
    assert!(
        read(&admin_file).contains(&k),
        "system_info.default_user got the key"
    );

    let k2 = fake_key("ssh-ed25519", 5);
    let (res, _) = run(
        &w,
        json!({"default_user": {"name": "admin"}, "users": []}),
        instance("i-2", vec![k2.clone()]),
    )
    .await;
    let report = res.unwrap();
    assert!(
        !read(&admin_file).contains(&k2),
        "users: [] gives the key to nobody"
    );
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("no default user (`users: []`")),
        "{:?}",
        report.warnings
    );
}

#[test]
fn json_schema_names_every_key_and_default() {
    for m in crate::modules() {
        let spec = m.spec();
        let mut g = schemars::SchemaGenerator::default();
        let schema = (spec.config.schema)(&mut g);
        let text = format!(
            "{} {}",
            serde_json::to_string(&schema).unwrap(),
            serde_json::to_string(g.definitions()).unwrap()
        );
        for key in (spec.config.keys)() {
            assert!(
                text.contains(key),
                "{}: {key} missing from {text}",
                spec.name
            );
        }
    }
    let keys = (AuthorizedKeys.spec().config.keys)();
    assert_eq!(
        keys,
        [
            "ssh_authorized_keys",
            "default_user",
            "system_info",
            "users",
            "disable_root",
            "disable_root_opts",
            "no_ssh_fingerprints",
            "allow_public_ssh_keys"
        ]
    );
}

/// U+2028/U+2029 end a line: a second key is not hidden in the first one's comment. A key with
/// a control character (as EC2 metadata may carry) is skipped alone, with a warning.
#[tokio::test]
async fn unicode_line_separators_split_keys_and_a_bad_metadata_key_is_skipped_alone() {
    let w = world();
    let admin_ssh = w.root.join("home/admin/.ssh");
    mkdir_owned(&admin_ssh, 1000, 0o700);
    let (k1, k2, k3) = (
        fake_key("ssh-ed25519", 1),
        fake_key("ssh-rsa", 2),
        fake_key("ssh-ed25519", 3),
    );
    let joined = format!("{k1} first\u{2028}{k2} second\u{2029}{k3}");
    let bad = format!("{} bad\u{7}bell", fake_key("ssh-ed25519", 4));
    let (res, _) = run(
        &w,
        json!({"default_user": "admin", "ssh_authorized_keys": [joined]}),
        instance("i-1", vec![bad, fake_key("ssh-ed25519", 5)]),
    )
    .await;
    let report = res.unwrap();
    let text = read(&admin_ssh.join("authorized_keys"));
    for k in [&k1, &k2, &k3, &fake_key("ssh-ed25519", 5)] {
        assert!(
            text.lines().any(|l| l.starts_with(k.as_str())),
            "{k} in\n{text}"
        );
    }
    assert!(!text.contains("bell"), "{text}");
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("control characters")),
        "{:?}",
        report.warnings
    );
}

fn console_texts(fake: &FakeSystem) -> Vec<String> {
    fake.actions()
        .into_iter()
        .filter_map(|a| match a {
            Action::Console { text } => Some(text),
            _ => None,
        })
        .collect()
}

fn fp(line: &str) -> String {
    let k = crate::keyline::parse(line).unwrap().unwrap();
    crate::fingerprint::fingerprint(&k).unwrap()
}

/// cloud-init's `no_ssh_fingerprints` is about this log: the fingerprints of each user's
/// authorized keys (all of the file's keys, not only stoke's) on the console.
#[tokio::test]
async fn authorized_key_fingerprints_are_logged_unless_no_ssh_fingerprints() {
    let w = world();
    let meta = format!("{} ops@example.com", fake_key("ssh-ed25519", 1));
    let bobs = fake_key("ecdsa-sha2-nistp256", 2);
    let admin_ssh = w.root.join("home/admin/.ssh");
    mkdir_owned(&admin_ssh, 1000, 0o700);
    let by_hand = format!("restrict {} hand@laptop", fake_key("ssh-ed25519", 3));
    write_owned(
        &admin_ssh.join("authorized_keys"),
        &format!("{by_hand}\n"),
        1000,
        0o600,
    );
    let config = json!({
        "default_user": "admin",
        "users": ["default", {"name": "bob", "ssh_authorized_keys": [bobs]}],
    });
    let (res, fake) = run(&w, config.clone(), instance("i-1", vec![meta.clone()])).await;
    let report = res.unwrap();
    let root_line = format!("{} {meta}", root_prefix("admin"));
    assert_eq!(
        console_texts(&fake),
        vec![format!(
            "stoke: authorized keys for admin ({admin}):\n\
             stoke:   {}, with options\n\
             stoke:   {}\n\
             stoke: authorized keys for root ({root}):\n\
             stoke:   {}, with options\n\
             stoke: authorized keys for bob ({bob}):\n\
             stoke:   {}\n",
            fp(&by_hand),
            fp(&meta),
            fp(&root_line),
            fp(&bobs),
            admin = admin_ssh.join("authorized_keys").display(),
            root = w.root.join("root/.ssh/authorized_keys").display(),
            bob = w.root.join("home/bob/.ssh/authorized_keys").display(),
        )]
    );
    assert!(fp(&meta).ends_with(" ops@example.com (ED25519)"));
    assert_eq!(
        report.details["users"][0]["fingerprints"],
        json!([format!("{}, with options", fp(&by_hand)), fp(&meta)])
    );

    // no_ssh_fingerprints: true: the keys are installed the same, nothing is logged.
    let mut quiet = config.clone();
    quiet["no_ssh_fingerprints"] = json!(true);
    let (res, fake) = run(&w, quiet, instance("i-2", vec![meta.clone()])).await;
    let report = res.unwrap();
    assert!(console_texts(&fake).is_empty(), "{:?}", fake.actions());
    assert!(report.details["users"][0].get("fingerprints").is_none());
    assert!(read(&admin_ssh.join("authorized_keys")).contains(&meta));
}

/// `users: []` means no default user: the image's default user gets no instance key, and the
/// stoke block an earlier instance gave it is removed (keys a person added stay).
#[tokio::test]
async fn users_empty_takes_the_instance_keys_away_from_the_default_user() {
    let w = world();
    let old = fake_key("ssh-ed25519", 1);
    let new = fake_key("ssh-ed25519", 2);
    let admin_file = w.root.join("home/admin/.ssh/authorized_keys");
    let image = json!({"system_info": {"default_user": {"name": "admin"}}});
    let (res, _) = run(&w, image.clone(), instance("i-1", vec![old.clone()])).await;
    res.unwrap();
    assert!(read(&admin_file).contains(&old));
    let by_hand = format!("{}\n", fake_key("ssh-ed25519", 3));
    let with_hand = format!("{by_hand}{}", read(&admin_file));
    write_owned(&admin_file, &with_hand, 1000, 0o600);

    let mut cfg = image.clone();
    cfg["users"] = json!([]);
    cfg["ssh_authorized_keys"] = json!([new.clone()]);
    let (res, fake) = run(&w, cfg, instance("i-2", vec![new.clone()])).await;
    let report = res.unwrap();
    assert_eq!(read(&admin_file), by_hand, "old block gone, nothing new");
    assert!(!read(&w.root.join("root/.ssh/authorized_keys")).contains(&new));
    assert!(
        report.warnings.iter().any(|w| w.contains(
            "2 keys from metadata/ssh_authorized_keys not installed: no default user (`users: []`"
        )),
        "{:?}",
        report.warnings
    );
    // The log shows what is left for admin: the key added by hand.
    let console = console_texts(&fake).concat();
    assert!(
        console.contains(&format!("stoke:   {}\n", fp(&by_hand))),
        "{console}"
    );

    // disable_root: false: root gets them, plainly (as cloud-init with no default user).
    let mut cfg = image.clone();
    cfg["users"] = json!([]);
    cfg["disable_root"] = json!(false);
    let (res, _) = run(&w, cfg, instance("i-3", vec![new.clone()])).await;
    res.unwrap();
    assert_eq!(read(&admin_file), by_hand);
    assert!(read(&w.root.join("root/.ssh/authorized_keys")).contains(&format!("\n{new}\n")));
}

/// cloud-init's `allow_public_ssh_keys: false`: the metadata's keys are not installed (only the
/// configured ones); stoke used to warn it away and install them anyway.
#[tokio::test]
async fn allow_public_ssh_keys_false_leaves_out_the_metadata_keys() {
    let w = world();
    let meta = fake_key("ssh-ed25519", 1);
    let conf = fake_key("ssh-ed25519", 2);
    let config = json!({
        "default_user": "admin",
        "ssh_authorized_keys": [conf.clone()],
        "allow_public_ssh_keys": false,
    });
    let (res, _) = run(&w, config, instance("i-1", vec![meta.clone()])).await;
    let report = res.unwrap();
    let admin = read(&w.root.join("home/admin/.ssh/authorized_keys"));
    assert_eq!(admin, block(&[&conf]));
    let root = read(&w.root.join("root/.ssh/authorized_keys"));
    assert_eq!(root, block(&[&format!("{} {conf}", root_prefix("admin"))]));
    assert!(
        report
            .summary
            .ends_with("; 1 metadata keys not installed (allow_public_ssh_keys: false)"),
        "{}",
        report.summary
    );

    // Default true: both.
    let (res, _) = run(
        &w,
        json!({"default_user": "admin", "ssh_authorized_keys": [conf.clone()]}),
        instance("i-2", vec![meta.clone()]),
    )
    .await;
    res.unwrap();
    assert_eq!(
        read(&w.root.join("home/admin/.ssh/authorized_keys")),
        block(&[&meta, &conf])
    );
}

/// A stoke that dies while making `~/.ssh` must not leave a `.ssh` that the next boot
/// refuses (root-owned): it is made whole under a temp name, so any state a crash can leave
/// (a temp directory owned by root or by the user, or a whole `.ssh` without keys) is
/// finished by the next run; a `.ssh` made by someone else is still refused.
#[tokio::test]
async fn a_half_made_ssh_dir_is_finished_and_a_foreign_one_refused() {
    let w = world();
    let bob_ssh = w.root.join("home/bob/.ssh");
    let config =
        json!({"users": [{"name": "bob", "ssh_authorized_keys": [fake_key("ssh-ed25519", 1)]}]});
    let bob_has_keys = |w: &World| {
        let m = fs::metadata(&bob_ssh).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o700, 1001, 1001));
        let k = fs::metadata(bob_ssh.join("authorized_keys")).unwrap();
        assert_eq!((k.mode() & 0o7777, k.uid()), (0o600, 1001));
        let names: Vec<_> = fs::read_dir(w.root.join("home/bob")).unwrap().collect();
        names.len()
    };

    // Dies handing the new directory to bob: no `.ssh` at all, only an empty temp.
    let fake = FakeSystem::new();
    fake.fail_fchown(&bob_ssh);
    let ctx = context(&w.root, config.clone(), instance("i-1", vec![]), fake, true);
    let err = AuthorizedKeys.run(&ctx).await.unwrap_err().to_string();
    assert!(err.contains("failed on purpose"), "{err}");
    assert!(!bob_ssh.exists(), "nothing half-made under the real name");

    // What a SIGKILL at each step leaves: the temp directory before and after the chown.
    let crashed = w.root.join("home/bob/..ssh.stoke-tmp-999999-0");
    mkdir_owned(&crashed, 0, 0o700);
    mkdir_owned(
        &w.root.join("home/bob/..ssh.stoke-tmp-999999-1"),
        1001,
        0o700,
    );
    let (res, _) = run(&w, config.clone(), instance("i-1", vec![])).await;
    res.unwrap();
    assert_eq!(bob_has_keys(&w), 3, ".ssh and the two leftovers");
    // The next run's sweep recognises the leftovers (and only them).
    let removed = stoke_api::remove_stale_temp_files(&w.root.join("home"), 1);
    assert_eq!(removed.len(), 2, "{removed:?}");
    assert_eq!(bob_has_keys(&w), 1);

    // Killed after the rename, before authorized_keys: a whole `.ssh`, finished next time.
    fs::remove_file(bob_ssh.join("authorized_keys")).unwrap();
    let (res, _) = run(&w, config.clone(), instance("i-1", vec![])).await;
    res.unwrap();
    bob_has_keys(&w);

    // A root-owned `.ssh` is someone else's (stoke never leaves one): still refused.
    fs::remove_dir_all(&bob_ssh).unwrap();
    mkdir_owned(&bob_ssh, 0, 0o700);
    let (res, _) = run(&w, config, instance("i-1", vec![])).await;
    let err = res.unwrap_err();
    assert!(
        err.contains("owned by uid 0, not by bob (uid 1001)"),
        "{err}"
    );
    assert_eq!(fs::read_dir(&bob_ssh).unwrap().count(), 0);
}
