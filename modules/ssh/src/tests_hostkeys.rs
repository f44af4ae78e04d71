//! Host key tests: a temp root, the recording fake, and the real ssh-keygen.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use serde_json::json;
use stoke_api::fake::FakeSystem;
use stoke_api::{Action, CmdOutput, InstanceData, Module};

use crate::hostkeys::HostKeys;
use crate::testutil::{context, have_ssh_keygen, run_for_real};

fn instance(id: &str) -> InstanceData {
    InstanceData {
        datasource: "none".into(),
        instance_id: id.parse().unwrap(),
        ..Default::default()
    }
}

/// An image's /etc/ssh: old host keys, a symlinked "key" pointing outside, and files that are not keys.
fn baked_etc_ssh(root: &Path, outside: &Path) {
    let etc = root.join("etc/ssh");
    fs::create_dir_all(&etc).unwrap();
    for f in [
        "ssh_host_rsa_key",
        "ssh_host_rsa_key.pub",
        "ssh_host_dsa_key",
        "ssh_host_ed25519_key-cert.pub",
    ] {
        fs::write(etc.join(f), "baked\n").unwrap();
    }
    fs::write(
        etc.join("sshd_config"),
        "PermitRootLogin no\nMatch User x\n  X11Forwarding no\n",
    )
    .unwrap();
    fs::write(etc.join("moduli"), "moduli\n").unwrap();
    fs::write(outside.join("precious"), "do not touch\n").unwrap();
    symlink(outside.join("precious"), etc.join("ssh_host_evil_key")).unwrap();
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

/// Lines between the fingerprint markers, without cloud-init's `ec2: ` tag.
fn console_fingerprints(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.strip_prefix("ec2: ").unwrap_or(l))
        .collect();
    let b = lines
        .iter()
        .position(|l| *l == "-----BEGIN SSH HOST KEY FINGERPRINTS-----")
        .unwrap();
    let e = lines
        .iter()
        .position(|l| *l == "-----END SSH HOST KEY FINGERPRINTS-----")
        .unwrap();
    lines[b + 1..e].iter().map(|s| s.to_string()).collect()
}

fn real_fingerprint(pub_file: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-l")
        .arg("-f")
        .arg(pub_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        pub_file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Answers `ssh-keygen -q ... -f FILE` by writing placeholder FILE and FILE.pub (no real keys needed).
fn pretend_keygen(fake: &FakeSystem) {
    fake.respond(|cmd| {
        if cmd.args.first().is_none_or(|a| a != "-q") {
            return None;
        }
        let file = cmd.args.last()?;
        fs::write(file, "private\n").ok()?;
        fs::write(format!("{file}.pub"), "public\n").ok()?;
        Some(CmdOutput::ok(""))
    });
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[tokio::test]
async fn generates_fresh_valid_keys_and_prints_matching_fingerprints() {
    if !have_ssh_keygen() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (root, outside) = (tmp.path().join("root"), tmp.path().join("outside"));
    fs::create_dir_all(&outside).unwrap();
    baked_etc_ssh(&root, &outside);
    let fake = FakeSystem::new();
    run_for_real(&fake);
    let ctx = context(&root, json!({}), instance("i-1"), fake.clone(), true);
    let report = HostKeys.run(&ctx).await.unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);

    let etc = root.join("etc/ssh");
    // The image's keys are gone; the symlink went, not what it pointed to; other files stay.
    for f in [
        "ssh_host_dsa_key",
        "ssh_host_ed25519_key-cert.pub",
        "ssh_host_evil_key",
    ] {
        assert!(fs::symlink_metadata(etc.join(f)).is_err(), "{f} deleted");
    }
    assert_eq!(
        fs::read_to_string(outside.join("precious")).unwrap(),
        "do not touch\n"
    );
    assert_eq!(fs::read_to_string(etc.join("moduli")).unwrap(), "moduli\n");
    assert_eq!(
        fs::read_to_string(etc.join("sshd_config")).unwrap(),
        "PermitRootLogin no\nMatch User x\n  X11Forwarding no\n",
        "no certificates: sshd_config untouched"
    );

    // Three keys, generated concurrently through the System, each valid, right modes.
    let cmds = fake.commands();
    for t in ["ecdsa", "ed25519", "rsa"] {
        let key = etc.join(format!("ssh_host_{t}_key"));
        assert!(
            cmds.contains(&format!("ssh-keygen -q -N  -t {t} -f {}", key.display())),
            "{cmds:?}"
        );
        assert_eq!(mode(&key), 0o600, "{t} private");
        let public = etc.join(format!("ssh_host_{t}_key.pub"));
        assert_eq!(mode(&public), 0o644, "{t} public");
        assert_ne!(fs::read_to_string(&key).unwrap(), "baked\n");
        real_fingerprint(&public);
        assert!(fake.actions().contains(&Action::Chown {
            path: key.clone(),
            uid: 0,
            gid: 0
        }));
    }
    let d = &report.details;
    assert_eq!(d["generated"], json!(["ecdsa", "ed25519", "rsa"]));
    assert_eq!(
        d["deleted"],
        json!([
            "ssh_host_dsa_key",
            "ssh_host_ed25519_key-cert.pub",
            "ssh_host_evil_key",
            "ssh_host_rsa_key",
            "ssh_host_rsa_key.pub"
        ])
    );

    // The console block holds exactly what ssh-keygen -l says, in glob order.
    let texts = console_texts(&fake);
    assert_eq!(texts.len(), 1);
    let expected: Vec<String> = ["ecdsa", "ed25519", "rsa"]
        .iter()
        .map(|t| real_fingerprint(&etc.join(format!("ssh_host_{t}_key.pub"))))
        .collect();
    assert_eq!(console_fingerprints(&texts[0]), expected);
    assert_eq!(d["fingerprints"], json!(expected));
    assert!(texts[0].contains("ec2: -----BEGIN SSH HOST KEY KEYS-----\nec2: ecdsa-sha2-nistp256 "));
    assert!(texts[0].starts_with("ec2: ####"));

    // A new instance (the engine decides when) gets different keys.
    let first = fs::read_to_string(etc.join("ssh_host_ed25519_key.pub")).unwrap();
    let fake2 = FakeSystem::new();
    run_for_real(&fake2);
    let ctx2 = context(&root, json!({}), instance("i-2"), fake2.clone(), true);
    HostKeys.run(&ctx2).await.unwrap();
    let second = fs::read_to_string(etc.join("ssh_host_ed25519_key.pub")).unwrap();
    assert_ne!(first, second, "new keys for a new instance");
    assert_ne!(console_fingerprints(&console_texts(&fake2)[0]), expected);
}

#[tokio::test]
async fn installs_provided_keys_and_certificate_and_generates_only_the_rest() {
    if !have_ssh_keygen() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (root, work) = (tmp.path().join("root"), tmp.path().join("work"));
    fs::create_dir_all(root.join("etc/ssh")).unwrap();
    fs::create_dir_all(&work).unwrap();
    let sshd_config = "PermitRootLogin no\nMatch User x\n  X11Forwarding no\n";
    fs::write(root.join("etc/ssh/sshd_config"), sshd_config).unwrap();
    // A host key and a host certificate signed by a CA, made outside the root.
    let keygen = |args: &[&str]| {
        let o = Command::new("ssh-keygen").args(args).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let host = work.join("host");
    let ca = work.join("ca");
    keygen(&[
        "-q",
        "-N",
        "",
        "-t",
        "ed25519",
        "-f",
        host.to_str().unwrap(),
    ]);
    keygen(&["-q", "-N", "", "-t", "ed25519", "-f", ca.to_str().unwrap()]);
    keygen(&[
        "-q",
        "-s",
        ca.to_str().unwrap(),
        "-I",
        "web-1",
        "-h",
        "-n",
        "web-1",
        &format!("{}.pub", host.display()),
    ]);
    let private = fs::read_to_string(&host).unwrap();
    let public = fs::read_to_string(work.join("host.pub")).unwrap();
    let cert = fs::read_to_string(work.join("host-cert.pub")).unwrap();
    let (ecdsa, _) = (work.join("ecdsa"), ());
    keygen(&["-q", "-N", "", "-t", "ecdsa", "-f", ecdsa.to_str().unwrap()]);
    let ecdsa_private = fs::read_to_string(&ecdsa).unwrap();
    let ecdsa_public = fs::read_to_string(work.join("ecdsa.pub")).unwrap();

    let fake = FakeSystem::new();
    run_for_real(&fake);
    let config = json!({
        "ssh_genkeytypes": ["ed25519", "rsa", "ecdsa", "dsa"],
        "ssh_keys": {
            "ed25519_private": private,
            "ed25519_public": public,
            "ed25519_certificate": cert,
            // Public half derived with ssh-keygen -y.
            "ecdsa_private": ecdsa_private,
        },
    });
    let ctx = context(&root, config, instance("i-1"), fake.clone(), true);
    let report = HostKeys.run(&ctx).await.unwrap();
    let etc = root.join("etc/ssh");
    assert_eq!(
        fs::read_to_string(etc.join("ssh_host_ed25519_key")).unwrap(),
        private
    );
    assert_eq!(
        fs::read_to_string(etc.join("ssh_host_ed25519_key.pub")).unwrap(),
        public
    );
    assert_eq!(
        fs::read_to_string(etc.join("ssh_host_ed25519_key-cert.pub")).unwrap(),
        cert
    );
    assert_eq!(mode(&etc.join("ssh_host_ed25519_key")), 0o600);
    assert_eq!(mode(&etc.join("ssh_host_ed25519_key-cert.pub")), 0o644);
    let derived = fs::read_to_string(etc.join("ssh_host_ecdsa_key.pub")).unwrap();
    assert_eq!(
        derived.split_whitespace().take(2).collect::<Vec<_>>(),
        ecdsa_public.split_whitespace().take(2).collect::<Vec<_>>()
    );
    assert_eq!(report.details["generated"], json!(["rsa"]));
    assert_eq!(report.details["installed"], json!(["ecdsa", "ed25519"]));
    let cmds = fake.commands();
    assert_eq!(
        cmds.iter()
            .filter(|c| c.starts_with("ssh-keygen -q"))
            .count(),
        1,
        "{cmds:?}"
    );
    assert!(
        report.warnings.iter().any(|w| w.contains("dsa")),
        "{:?}",
        report.warnings
    );

    // sshd_config: our block on top (before any Match), the rest byte-identical.
    let cfg = fs::read_to_string(etc.join("sshd_config")).unwrap();
    let host_cert = "/etc/ssh/ssh_host_ed25519_key-cert.pub";
    assert!(cfg.ends_with(sshd_config), "{cfg}");
    assert!(cfg.starts_with("# BEGIN stoke host certificates"), "{cfg}");
    assert!(
        cfg.contains(&format!("\nHostCertificate {host_cert}\n")),
        "{cfg}"
    );
    // Fingerprints include the provided key, as ssh-keygen sees it.
    let fps = console_fingerprints(&console_texts(&fake)[0]);
    assert!(
        fps.contains(&real_fingerprint(&etc.join("ssh_host_ed25519_key.pub"))),
        "{fps:?}"
    );

    // Next instance without certificates: the block goes, the rest stays.
    let fake2 = FakeSystem::new();
    run_for_real(&fake2);
    let ctx2 = context(
        &root,
        json!({"ssh": {"emit_keys_to_console": false}}),
        instance("i-2"),
        fake2.clone(),
        true,
    );
    HostKeys.run(&ctx2).await.unwrap();
    assert_eq!(
        fs::read_to_string(etc.join("sshd_config")).unwrap(),
        sshd_config
    );
    assert!(
        console_texts(&fake2).is_empty(),
        "ssh: {{emit_keys_to_console: false}}"
    );
}

#[tokio::test]
async fn sandbox_records_keygen_and_reports_fingerprints_unavailable() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = FakeSystem::new();
    let ctx = context(tmp.path(), json!({}), instance("i-1"), fake.clone(), false);
    let report = HostKeys.run(&ctx).await.unwrap();
    assert!(
        report.summary.contains("fingerprints unavailable"),
        "{}",
        report.summary
    );
    assert!(report.details["fingerprints"].is_null());
    assert_eq!(fake.commands().len(), 3, "{:?}", fake.commands());
    assert!(console_texts(&fake).is_empty());
}

#[tokio::test]
async fn keygen_failure_is_an_error_naming_the_command() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = FakeSystem::new();
    fake.on(
        "ssh-keygen -q -N  -t rsa",
        CmdOutput::failed(1, "no entropy"),
    );
    pretend_keygen(&fake);
    let ctx = context(
        tmp.path(),
        json!({"ssh_genkeytypes": ["rsa", "ed25519"]}),
        instance("i-1"),
        fake,
        true,
    );
    let err = HostKeys.run(&ctx).await.unwrap_err().to_string();
    assert!(
        err.contains("-t rsa") && err.contains("no entropy") && err.contains("generated: ed25519"),
        "{err}"
    );
}

#[tokio::test]
async fn keeps_existing_keys_when_not_deleting() {
    let tmp = tempfile::tempdir().unwrap();
    let etc = tmp.path().join("etc/ssh");
    fs::create_dir_all(&etc).unwrap();
    fs::write(etc.join("ssh_host_ed25519_key"), "old\n").unwrap();
    let fake = FakeSystem::new();
    pretend_keygen(&fake);
    let config = json!({"ssh_deletekeys": false, "ssh_genkeytypes": ["ed25519", "rsa"]});
    let ctx = context(tmp.path(), config, instance("i-1"), fake.clone(), true);
    let report = HostKeys.run(&ctx).await.unwrap();
    assert_eq!(
        fs::read_to_string(etc.join("ssh_host_ed25519_key")).unwrap(),
        "old\n"
    );
    assert_eq!(report.details["kept"], json!(["ed25519"]));
    let keygens: Vec<String> = fake
        .commands()
        .into_iter()
        .filter(|c| c.contains(" -q "))
        .collect();
    assert_eq!(keygens.len(), 1, "{keygens:?}");
    assert!(keygens[0].contains("-t rsa"));
    let _ = fs::metadata(&etc).unwrap().uid();
}

#[test]
fn config_uses_cloud_init_names_and_rejects_typos() {
    let spec = HostKeys.spec().config;
    (spec.validate)("ssh_deletekeys: false\nssh_genkeytypes: [rsa, ed25519]\nssh:\n  emit_keys_to_console: no\nssh_fp_console_blacklist: [ssh-rsa]\nssh_key_console_blacklist: [rsa]\nssh_keys:\n  rsa_private: x\n  rsa_certificate: y\nusers: [default]\n").unwrap();
    let err = (spec.validate)("ssh:\n  emit_key_to_console: false\n").unwrap_err();
    assert_eq!(err.line, Some(2), "{err}");
    assert!((spec.validate)("ssh_fp_console_blacklist: ssh-rsa\n").is_err());
    let err = (spec.validate)("ssh_keys:\n  ed25519_privat: x\n").unwrap_err();
    assert_eq!(err.line, Some(2), "{err}");
    assert!(
        err.message.contains("did you mean `ed25519_private`"),
        "{err}"
    );
    assert!((spec.validate)("ssh_genkeytypes: [ed448]\n").is_err());
}

#[tokio::test]
async fn invalid_provided_keys_fail_before_anything_is_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let etc = tmp.path().join("etc/ssh");
    fs::create_dir_all(&etc).unwrap();
    fs::write(etc.join("ssh_host_rsa_key"), "baked\n").unwrap();
    let fake = FakeSystem::new();
    for (keys, want) in [
        (
            json!({"rsa_private": "not a key"}),
            "rsa_private is not a PEM",
        ),
        (
            json!({"rsa_private": "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n", "rsa_public": "ssh-rsa !!"}),
            "rsa_public: key data is not valid base64",
        ),
        (
            json!({"ed25519_private": "-----BEGIN OPENSSH PRIVATE KEY-----\n", "ed25519_certificate": "ssh-ed25519 AAAA"}),
            "ed25519_certificate is not an OpenSSH certificate",
        ),
    ] {
        let ctx = context(
            tmp.path(),
            json!({"ssh_keys": keys}),
            instance("i-1"),
            fake.clone(),
            true,
        );
        let err = HostKeys.run(&ctx).await.unwrap_err().to_string();
        assert!(err.contains(want), "{err}");
        assert_eq!(
            fs::read_to_string(etc.join("ssh_host_rsa_key")).unwrap(),
            "baked\n"
        );
    }
    assert!(fake.actions().is_empty());
}

/// An RSA public key line whose blob has a 3072-bit modulus (not a usable key: only its
/// fingerprint is computed).
fn rsa_line(comment: &str) -> String {
    use base64::Engine as _;
    let mut blob = Vec::new();
    let mut n = vec![0u8, 0x80];
    n.extend([7u8; 383]);
    for part in [&b"ssh-rsa"[..], &[1, 0, 1], &n] {
        blob.extend((part.len() as u32).to_be_bytes());
        blob.extend(part);
    }
    format!(
        "ssh-rsa {} {comment}",
        base64::engine::general_purpose::STANDARD.encode(blob)
    )
}

/// An image's keys kept as they are (nothing deleted or generated), so the console block is
/// made from these files alone.
fn kept_keys(root: &Path) -> Vec<(String, String)> {
    use crate::keyline::tests::fake_key;
    let etc = root.join("etc/ssh");
    fs::create_dir_all(&etc).unwrap();
    let keys = vec![
        (
            "ecdsa",
            format!("{} root@h", fake_key("ecdsa-sha2-nistp256", 1)),
        ),
        ("ed25519", format!("{} root@h", fake_key("ssh-ed25519", 2))),
        ("rsa", rsa_line("root@h")),
    ];
    let mut out = Vec::new();
    for (t, line) in keys {
        fs::write(etc.join(format!("ssh_host_{t}_key")), "private\n").unwrap();
        fs::write(
            etc.join(format!("ssh_host_{t}_key.pub")),
            format!("{line}\n"),
        )
        .unwrap();
        let k = crate::keyline::parse(&line).unwrap().unwrap();
        out.push((line, crate::fingerprint::fingerprint(&k).unwrap()));
    }
    out
}

#[tokio::test]
async fn console_blacklists_leave_out_key_types_as_cloud_init_does() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = kept_keys(tmp.path());
    let (ecdsa, ed25519, rsa) = (&keys[0], &keys[1], &keys[2]);
    let run = |config: serde_json::Value| {
        let fake = FakeSystem::new();
        let mut cfg = json!({"ssh_deletekeys": false, "ssh_genkeytypes": []});
        cfg.as_object_mut()
            .unwrap()
            .extend(config.as_object().unwrap().clone());
        let ctx = context(tmp.path(), cfg, instance("i-1"), fake.clone(), true);
        async move {
            let report = HostKeys.run(&ctx).await.unwrap();
            assert!(fake.commands().is_empty(), "{:?}", fake.commands());
            (console_texts(&fake), report)
        }
    };

    // cloud-init's defaults: every fingerprint and every key, in file-name order.
    let (texts, _) = run(json!({})).await;
    assert_eq!(
        texts,
        vec![format!(
            "ec2: #############################################################\n\
             ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----\n\
             ec2: {}\nec2: {}\nec2: {}\n\
             ec2: -----END SSH HOST KEY FINGERPRINTS-----\n\
             ec2: #############################################################\n\
             ec2: -----BEGIN SSH HOST KEY KEYS-----\n\
             ec2: {}\nec2: {}\nec2: {}\n\
             ec2: -----END SSH HOST KEY KEYS-----\n",
            ecdsa.1, ed25519.1, rsa.1, ecdsa.0, ed25519.0, rsa.0
        )]
    );
    assert!(rsa.1.starts_with("3072 SHA256:") && rsa.1.ends_with(" root@h (RSA)"));

    // Types as the .pub file names them, or stoke's short names; an entry that is no key
    // type (a fingerprint, as cloud-init's docs suggest) leaves nothing out and is warned.
    let (texts, report) = run(json!({
        "ssh_fp_console_blacklist": ["ssh-rsa"],
        "ssh_key_console_blacklist": ["ecdsa", "ed25519", "E25451E0221B5773DEBFF178ECDACB160995AA89"],
    }))
    .await;
    assert_eq!(
        texts,
        vec![format!(
            "ec2: #############################################################\n\
             ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----\n\
             ec2: {}\nec2: {}\n\
             ec2: -----END SSH HOST KEY FINGERPRINTS-----\n\
             ec2: #############################################################\n\
             ec2: -----BEGIN SSH HOST KEY KEYS-----\n\
             ec2: {}\n\
             ec2: -----END SSH HOST KEY KEYS-----\n",
            ecdsa.1, ed25519.1, rsa.0
        )]
    );
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    assert!(
        report.warnings[0].starts_with(
            "ssh_key_console_blacklist: \"E25451E0221B5773DEBFF178ECDACB160995AA89\" is not an SSH key type"
        ),
        "{:?}",
        report.warnings
    );
    // stoke status still has every fingerprint.
    assert_eq!(
        report.details["fingerprints"],
        json!([ecdsa.1, ed25519.1, rsa.1])
    );

    // Every fingerprint left out: that section and its markers go; the keys stay.
    let (texts, _) = run(json!({
        "ssh_fp_console_blacklist": ["ssh-rsa", "ssh-ed25519", "ecdsa-sha2-nistp256"],
    }))
    .await;
    assert_eq!(
        texts,
        vec![format!(
            "ec2: -----BEGIN SSH HOST KEY KEYS-----\n\
             ec2: {}\nec2: {}\nec2: {}\n\
             ec2: -----END SSH HOST KEY KEYS-----\n",
            ecdsa.0, ed25519.0, rsa.0
        )]
    );

    // Everything left out, or emit_keys_to_console: false: nothing on the console.
    let all = json!(["rsa", "ed25519", "ecdsa"]);
    let (texts, report) = run(json!({
        "ssh_fp_console_blacklist": all, "ssh_key_console_blacklist": all,
    }))
    .await;
    assert!(texts.is_empty(), "{texts:?}");
    assert_eq!(report.details["fingerprints_printed"], json!(false));
    let (texts, report) = run(json!({"ssh": {"emit_keys_to_console": false}})).await;
    assert!(texts.is_empty(), "{texts:?}");
    assert_eq!(report.details["fingerprints"].as_array().unwrap().len(), 3);

    // no_ssh_fingerprints is about authorized keys (ssh-authorized-keys), not host keys.
    let (texts, _) = run(json!({"no_ssh_fingerprints": true})).await;
    assert_eq!(texts.len(), 1);
}
