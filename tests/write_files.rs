//! `write_files` through the real `stoke` binary against a sandbox root: every
//! encoding, `!!binary`, owners from the root's passwd/group (recorded chowns),
//! permissions, append, defer to the final stage, and symlinks out of the root.

#[path = "support/sandbox.rs"]
mod sandbox;

use std::io::Write;
use std::os::unix::fs::{PermissionsExt, symlink};

use sandbox::Sandbox;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn mode(s: &Sandbox, p: &str) -> u32 {
    std::fs::metadata(s.path(p))
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0)
}

fn bytes(s: &Sandbox, p: &str) -> Vec<u8> {
    std::fs::read(s.path(p)).unwrap_or_default()
}

fn chowns(s: &Sandbox) -> Vec<(String, u64, u64)> {
    let root = s.root().display().to_string();
    s.actions_of("chown")
        .iter()
        .map(|a| {
            let path = a["path"].as_str().unwrap_or("");
            (
                path.strip_prefix(&root).unwrap_or(path).to_string(),
                a["uid"].as_u64().unwrap_or(u64::MAX),
                a["gid"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect()
}

#[test]
fn write_files_from_user_data_in_a_sandbox() {
    let text = b"line one\nline two\n";
    // Not UTF-8: only `!!binary` can carry it.
    let binary: Vec<u8> = vec![0x7f, b'E', b'L', b'F', 0x00, 0xff, 0xfe, 0x80, 0x0a];
    let user_data = format!(
        "#cloud-config\n\
         write_files:\n\
         - path: /etc/app/plain.conf\n  content: |\n    line one\n    line two\n\
         - path: /etc/app/textplain\n  encoding: text/plain\n  content: \"line one\\nline two\\n\"\n\
         - path: /etc/app/b64\n  encoding: b64\n  content: {b64text}\n\
         - path: /etc/app/base64\n  encoding: Base64\n  content: {b64text}\n\
         - path: /etc/app/gz+b64\n  encoding: gz+b64\n  content: {gzb64}\n\
         - path: /etc/app/gzip+base64\n  encoding: gzip+base64\n  content: {gzb64}\n\
         - path: /etc/app/gz+base64\n  encoding: gz+base64\n  content: {gzb64}\n\
         - path: /etc/app/gzip+b64\n  encoding: gzip+b64\n  content: {gzb64}\n\
         - path: /etc/app/gz\n  encoding: gz\n  content: !!binary {gzb64}\n\
         - path: /usr/local/bin/tool\n  encoding: gzip\n  permissions: '0755'\n  content: !!binary |\n    {gzbin}\n\
         - path: /opt/blob.bin\n  content: !!binary {bin}\n  owner: admin:web\n  permissions: '0600'\n\
         - path: /home/admin/.config/x\n  content: x\n  owner: admin\n  permissions: 0640\n\
         - path: /etc/numeric\n  content: num\n  owner: '1234:5678'\n\
         - path: /etc/crontab\n  append: true\n  content: \"15 * * * * root ship_logs\\n\"\n\
         - path: /etc/nginx/site.conf\n  defer: true\n  owner: 'admin:adm'\n  permissions: '0640'\n  content: server {{}}\n",
        b64text = b64(text),
        gzb64 = b64(&gzip(text)),
        gzbin = b64(&gzip(&binary)),
        bin = b64(&binary),
    );
    let s = Sandbox::nocloud("iid-one", &user_data);
    s.write("/etc/group", "root:x:0:\nadm:x:4:\nweb:x:2000:admin\n");
    s.write("/etc/crontab", "# m h dom mon dow user command\n");

    let local = s.stoke(&["run", "--stage", "local"]);
    assert_eq!(s.module_state("write-files"), "ok", "{}", local.stderr);
    let errors = s.status()["errors"].clone();
    assert!(errors.as_array().is_some_and(|e| e.is_empty()), "{errors}");
    for p in [
        "/etc/app/plain.conf",
        "/etc/app/textplain",
        "/etc/app/b64",
        "/etc/app/base64",
        "/etc/app/gz+b64",
        "/etc/app/gzip+base64",
        "/etc/app/gz+base64",
        "/etc/app/gzip+b64",
        "/etc/app/gz",
    ] {
        assert_eq!(bytes(&s, p), text, "{p}");
    }
    assert_eq!(bytes(&s, "/usr/local/bin/tool"), binary, "gzip of !!binary");
    assert_eq!(
        bytes(&s, "/opt/blob.bin"),
        binary,
        "!!binary, byte for byte"
    );
    assert_eq!(mode(&s, "/usr/local/bin/tool"), 0o755);
    assert_eq!(mode(&s, "/opt/blob.bin"), 0o600);
    assert_eq!(
        mode(&s, "/home/admin/.config/x"),
        0o640,
        "YAML 0640 is octal"
    );
    assert_eq!(mode(&s, "/etc/app/b64"), 0o644, "default");
    assert_eq!(mode(&s, "/usr/local/bin"), 0o755, "parents made 0755");
    assert_eq!(
        s.read("/etc/crontab"),
        "# m h dom mon dow user command\n15 * * * * root ship_logs\n"
    );
    assert!(
        !s.path("/etc/nginx/site.conf").exists(),
        "deferred: not in the local stage"
    );
    let owners = chowns(&s);
    for want in [
        ("/opt/blob.bin", 1000, 2000),
        ("/home/admin/.config/x", 1000, 0),
        ("/etc/numeric", 1234, 5678),
        ("/etc/app/gz", 0, 0),
        ("/etc/crontab", 0, 0),
    ] {
        let want = (want.0.to_string(), want.1, want.2);
        assert!(owners.contains(&want), "{want:?} not in {owners:?}");
    }
    let st = s.status();
    let w = &st["modules"]["write-files"];
    assert_eq!(w["summary"], "wrote 14 files");
    let blob = w["details"]["files"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["path"] == "/opt/blob.bin"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(blob["bytes"], binary.len());
    assert_eq!(blob["mode"], "0600");
    assert_eq!(blob["owner"], "admin:web");

    s.stoke(&["run", "--stage", "network"]);
    assert!(!s.path("/etc/nginx/site.conf").exists(), "not in network");
    let fin = s.stoke(&["run", "--stage", "final"]);
    assert_eq!(fin.code, 0, "{}", fin.stderr);
    assert_eq!(s.module_state("write-files-deferred"), "ok");
    assert_eq!(s.read("/etc/nginx/site.conf"), "server {}");
    assert_eq!(mode(&s, "/etc/nginx/site.conf"), 0o640);
    assert!(chowns(&s).contains(&("/etc/nginx/site.conf".to_string(), 1000, 4)));

    // Per instance: the next boot writes nothing again (the appended line stays single).
    s.new_boot("boot-2");
    assert_eq!(s.run_all().code, 0);
    assert_eq!(s.module_state("write-files"), "skipped");
    assert_eq!(
        s.read("/etc/crontab").matches("ship_logs").count(),
        1,
        "appended once"
    );
}

#[test]
fn symlinks_in_the_root_never_lead_writes_out_of_it() {
    let outside = tempfile::tempdir().expect("tempdir");
    let out_dir = outside.path().join("dir");
    let out_file = outside.path().join("file");
    std::fs::create_dir_all(&out_dir).expect("mkdir");
    std::fs::write(&out_file, "outside\n").expect("write");
    let user_data = "#cloud-config\n\
         write_files:\n\
         - {path: /etc/linked/x, content: escaped}\n\
         - {path: /etc/target, content: escaped}\n\
         - {path: /etc/target, content: escaped, append: true}\n\
         - {path: /etc/fine, content: fine}\n";
    let s = Sandbox::nocloud("iid-one", user_data);
    symlink(&out_dir, s.path("/etc/linked")).expect("symlink");
    symlink(&out_file, s.path("/etc/target")).expect("symlink");

    let r = s.run_all();
    assert_eq!(r.code, 1, "a failed module; stderr: {}", r.stderr);
    assert_eq!(s.module_state("write-files"), "failed");
    let error = s.status()["modules"]["write-files"].to_string();
    assert!(error.contains("3 of 4 entries failed"), "{error}");
    assert!(error.contains("write_files[1] (/etc/target)"), "{error}");
    assert!(error.contains("write_files[2] (/etc/target)"), "{error}");
    assert!(error.contains("symbolic link"), "{error}");
    assert_eq!(s.read("/etc/fine"), "fine", "the good entry is written");

    assert_eq!(
        std::fs::read_dir(&out_dir).map(|d| d.count()).unwrap_or(99),
        0,
        "nothing created outside the root"
    );
    assert_eq!(
        std::fs::read_to_string(&out_file).unwrap_or_default(),
        "outside\n"
    );
    assert!(
        !s.files().iter().any(|f| f.contains("stoke-tmp")),
        "no temp file left: {:?}",
        s.files()
    );
}

#[test]
fn binary_content_that_is_not_utf8_leaves_the_rest_of_the_checks_intact() {
    // Before: the whole document failed ("!!binary scalar is not valid UTF-8").
    // Now it loads, and key positions are still read (a typo is located).
    let s = Sandbox::nocloud(
        "iid-one",
        "#cloud-config\nwrite_files:\n- {path: /b, content: !!binary /w==}\nhostnme: x\n",
    );
    assert_eq!(s.run_all().code, 2, "degraded by the rejected user-data");
    let errors = s.status()["errors"].to_string();
    assert!(
        errors.contains("user-data:4:1: unknown key `hostnme`"),
        "{errors}"
    );
    assert!(!s.path("/b").exists(), "rejected as a whole");

    let s = Sandbox::nocloud(
        "iid-one",
        "#cloud-config\nchef: {}\nwrite_files:\n- {path: /b, content: !!binary /w==}\n",
    );
    assert_eq!(
        s.run_all().code,
        2,
        "degraded by the chef warning (a cloud-init key stoke does not implement)"
    );
    let warnings = s.status()["warnings"].to_string();
    assert!(warnings.contains("user-data:2:1: `chef`"), "{warnings}");
    assert_eq!(bytes(&s, "/b"), vec![0xff]);
}
