use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Value, json};
use stoke_api::fake::{FakeSystem, context};
use stoke_api::{Action, Context, InstanceData, Module, ModuleError, Report, parse_yaml};

use super::*;

fn setup(root: &Path, config: Value) -> (Context, Arc<FakeSystem>) {
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\nadmin:x:1000:1000::/home/admin:/bin/sh\n",
    )
    .unwrap();
    fs::write(
        root.join("etc/group"),
        "root:x:0:\nadm:x:4:admin\nweb:x:2000:\n",
    )
    .unwrap();
    let sys = FakeSystem::new();
    let ctx = context(root, config, InstanceData::default(), sys.clone());
    (ctx, sys)
}

/// The config as the loader gives it: YAML through `parse_yaml`.
fn yaml(text: &str) -> Value {
    parse_yaml(text).unwrap()
}

async fn run(ctx: &Context) -> Result<Report, ModuleError> {
    WriteFiles { deferred: false }.run(ctx).await
}

async fn run_deferred(ctx: &Context) -> Result<Report, ModuleError> {
    WriteFiles { deferred: true }.run(ctx).await
}

fn chowns(sys: &FakeSystem) -> Vec<(String, u32, u32)> {
    sys.actions()
        .into_iter()
        .filter_map(|a| match a {
            Action::Chown { path, uid, gid } => Some((path.display().to_string(), uid, gid)),
            _ => None,
        })
        .collect()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().mode() & 0o7777
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[tokio::test]
async fn every_encoding_decodes_to_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let text = b"hello\nworld\n";
    let entries = json!([
        {"path": "/out/plain", "content": "hello\nworld\n"},
        {"path": "/out/textplain", "content": "hello\nworld\n", "encoding": "text/plain"},
        {"path": "/out/b64", "content": b64(text), "encoding": "b64"},
        // Line breaks inside base64, as YAML block scalars give them.
        {"path": "/out/base64", "content": "aGVsbG8K\nd29ybGQK\n", "encoding": "BASE64"},
        {"path": "/out/gzb64", "content": b64(&gzip(text)), "encoding": "gz+b64"},
        {"path": "/out/gzipbase64", "content": b64(&gzip(text)), "encoding": " Gzip+Base64 "},
        {"path": "/out/gzbase64", "content": b64(&gzip(text)), "encoding": "gz+base64"},
        {"path": "/out/gzipb64", "content": b64(&gzip(text)), "encoding": "gzip+b64"},
        // Raw gzip bytes can only come as bytes: `!!binary`, i.e. {"$binary": ...}.
        {"path": "/out/gz", "content": {"$binary": b64(&gzip(text))}, "encoding": "gz"},
        {"path": "/out/gzip", "content": {"$binary": b64(&gzip(text))}, "encoding": "gzip"},
    ]);
    let (ctx, _) = setup(dir.path(), json!({ "write_files": entries }));
    let r = run(&ctx).await.unwrap();
    assert_eq!(r.summary, "wrote 10 files");
    for name in [
        "plain",
        "textplain",
        "b64",
        "base64",
        "gzb64",
        "gzipbase64",
        "gzbase64",
        "gzipb64",
        "gz",
        "gzip",
    ] {
        assert_eq!(
            fs::read(dir.path().join("out").join(name)).unwrap(),
            text,
            "{name}"
        );
    }
    assert_eq!(r.details["files"][2]["bytes"], 12);
    assert_eq!(mode(&dir.path().join("out")), 0o755, "parent made 0755");
}

#[tokio::test]
async fn binary_yaml_content_arrives_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let bytes: Vec<u8> = vec![0x00, 0xff, 0xfe, 0x80, b'\n', 0xc3];
    let gz = gzip(&bytes);
    let doc = format!(
        "write_files:\n- path: /bin.dat\n  content: !!binary |\n    {}\n\
         - path: /bin.gz.out\n  encoding: gzip\n  content: !!binary {}\n\
         - path: /utf8\n  content: !!binary SGVsbG8=\n",
        b64(&bytes),
        b64(&gz)
    );
    let (ctx, _) = setup(dir.path(), yaml(&doc));
    run(&ctx).await.unwrap();
    assert_eq!(fs::read(dir.path().join("bin.dat")).unwrap(), bytes);
    assert_eq!(fs::read(dir.path().join("bin.gz.out")).unwrap(), bytes);
    assert_eq!(fs::read(dir.path().join("utf8")).unwrap(), b"Hello");
}

#[tokio::test]
async fn owner_and_permissions_come_from_the_roots_files() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, sys) = setup(
        dir.path(),
        yaml(
            "write_files:\n\
             - {path: /a, content: a, owner: 'admin:web', permissions: '0600'}\n\
             - {path: /b, content: b, owner: admin, permissions: '0o640'}\n\
             - {path: /c, content: c, owner: '1234:5678', permissions: 0755}\n\
             - {path: /d, content: d}\n\
             - {path: /e, content: e, permissions: '4755', owner: 'root:adm'}\n",
        ),
    );
    let r = run(&ctx).await.unwrap();
    let root = dir.path().display().to_string();
    assert_eq!(
        chowns(&sys),
        vec![
            (format!("{root}/a"), 1000, 2000),
            (format!("{root}/b"), 1000, 0),
            (format!("{root}/c"), 1234, 5678),
            (format!("{root}/d"), 0, 0),
            (format!("{root}/e"), 0, 4),
        ]
    );
    assert_eq!(mode(&dir.path().join("a")), 0o600);
    assert_eq!(mode(&dir.path().join("b")), 0o640);
    assert_eq!(mode(&dir.path().join("c")), 0o755, "YAML 0755 is octal");
    assert_eq!(mode(&dir.path().join("d")), 0o644, "default");
    assert_eq!(
        mode(&dir.path().join("e")),
        0o4755,
        "setuid kept (mode set after owner)"
    );
    assert_eq!(r.details["files"][0]["owner"], "admin:web");
    assert_eq!(r.details["files"][0]["mode"], "0600");
    assert_eq!(r.details["files"][3]["owner"], "root:root");
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
}

#[tokio::test]
async fn a_decimal_looking_integer_mode_is_cloud_inits_and_warned() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, _) = setup(
        dir.path(),
        json!({"write_files": [{"path": "/m", "content": "x", "permissions": 644}]}),
    );
    let r = run(&ctx).await.unwrap();
    assert_eq!(
        mode(&dir.path().join("m")),
        0o1204,
        "644 decimal, as cloud-init"
    );
    assert!(r.warnings[0].contains("write \"0644\""), "{:?}", r.warnings);
}

#[tokio::test]
async fn a_bad_entry_fails_alone_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, _) = setup(
        dir.path(),
        json!({"write_files": [
            {"path": "/ok1", "content": "1"},
            {"path": "/bad-owner", "content": "x", "owner": "nginx:nginx"},
            {"path": "relative", "content": "x"},
            {"path": "/bad-perm", "content": "x", "permissions": "rw-r--r--"},
            {"path": "/bad-b64", "content": "#!?", "encoding": "b64"},
            {"path": "/bad-gz", "content": "plain", "encoding": "gzip"},
            {"path": "/bad-enc", "content": "x", "encoding": "b46"},
            {"path": "/src", "source": {"uri": "http://example.com/x"}},
            {"path": "/too-wide", "content": "x", "permissions": 0o17777},
            {"path": "/ok2", "content": "2"},
        ]}),
    );
    let err = run(&ctx).await.unwrap_err().to_string();
    assert!(err.starts_with("8 of 10 entries failed"), "{err}");
    for needle in [
        "write_files[1] (/bad-owner): no user `nginx` in the root's /etc/passwd",
        "write_files[2] (relative): `path` must be absolute",
        "write_files[3] (/bad-perm): permissions `rw-r--r--`: not an octal mode",
        "write_files[4] (/bad-b64): content is not valid base64",
        "write_files[5] (/bad-gz): content is not valid gzip data",
        "write_files[6] (/bad-enc): unknown encoding `b46`",
        "write_files[7] (/src): `source`",
        "write_files[8] (/too-wide): permissions 17777 (octal)",
        "written: /ok1, /ok2",
    ] {
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
    assert_eq!(fs::read_to_string(dir.path().join("ok1")).unwrap(), "1");
    assert_eq!(fs::read_to_string(dir.path().join("ok2")).unwrap(), "2");
    assert!(!dir.path().join("bad-owner").exists());
    assert!(!dir.path().join("bad-gz").exists());
}

#[tokio::test]
async fn append_adds_to_the_file_and_creates_it_if_absent() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, _) = setup(
        dir.path(),
        json!({"write_files": [
            {"path": "/etc/crontab", "content": "15 * * * * root ship_logs\n", "append": true},
            {"path": "/var/log/new.log", "content": "first\n", "append": true, "permissions": "0600"},
        ]}),
    );
    fs::write(dir.path().join("etc/crontab"), "# existing\n").unwrap();
    let r = run(&ctx).await.unwrap();
    assert_eq!(
        fs::read_to_string(dir.path().join("etc/crontab")).unwrap(),
        "# existing\n15 * * * * root ship_logs\n"
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("var/log/new.log")).unwrap(),
        "first\n"
    );
    assert_eq!(mode(&dir.path().join("var/log/new.log")), 0o600);
    assert_eq!(r.details["files"][0]["append"], true);
}

#[tokio::test]
async fn defer_splits_the_entries_between_the_two_modules() {
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"write_files": [
        {"path": "/now", "content": "n"},
        {"path": "/later", "content": "l", "defer": true},
    ]});
    let (ctx, _) = setup(dir.path(), config);
    run(&ctx).await.unwrap();
    assert!(dir.path().join("now").exists());
    assert!(
        !dir.path().join("later").exists(),
        "deferred to the final stage"
    );
    let r = run_deferred(&ctx).await.unwrap();
    assert_eq!(r.summary, "wrote 1 file");
    assert_eq!(r.details["files"][0]["index"], 1, "index in the whole list");
    assert!(dir.path().join("later").exists());

    let (empty, _) = setup(dir.path(), json!({}));
    assert_eq!(run(&empty).await.unwrap().summary, "no files to write");
    assert_eq!(
        WriteFiles { deferred: true }.spec().stage,
        Stage::Final,
        "after packages and users"
    );
}

#[tokio::test]
async fn symlinks_never_lead_a_write_out_of_the_root() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    fs::create_dir_all(outside.join("dir")).unwrap();
    fs::write(outside.join("file"), "outside\n").unwrap();
    let (ctx, _) = setup(
        &root,
        json!({"write_files": [
            {"path": "/linked/x", "content": "x"},
            {"path": "/etc/target", "content": "x"},
            {"path": "/etc/real", "content": "inside"},
        ]}),
    );
    symlink(outside.join("dir"), root.join("linked")).unwrap();
    symlink(outside.join("file"), root.join("etc/target")).unwrap();
    let err = run(&ctx).await.unwrap_err().to_string();
    assert!(err.starts_with("2 of 3 entries failed"), "{err}");
    assert!(
        err.contains("write_files[1] (/etc/target): writing: "),
        "{err}"
    );
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(fs::read_dir(outside.join("dir")).unwrap().count(), 0);
    assert_eq!(
        fs::read_to_string(outside.join("file")).unwrap(),
        "outside\n"
    );
    assert_eq!(fs::read_to_string(root.join("etc/real")).unwrap(), "inside");
}

#[tokio::test]
async fn passwd_behind_a_symlink_out_of_the_root_is_not_read() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let outside = tmp.path().join("outside-passwd");
    fs::write(&outside, "evil:x:666:666::/:/bin/sh\n").unwrap();
    let (ctx, _) = setup(
        &root,
        json!({"write_files": [{"path": "/x", "content": "x", "owner": "evil"}]}),
    );
    fs::remove_file(root.join("etc/passwd")).unwrap();
    symlink(&outside, root.join("etc/passwd")).unwrap();
    let err = run(&ctx).await.unwrap_err().to_string();
    assert!(err.contains("no user `evil`"), "{err}");
}

#[test]
fn decoded_content_is_capped_gzip_bombs_included() {
    let zeros = vec![0u8; 1 << 20];
    let bomb = gzip(&zeros);
    assert!(bomb.len() < 10_000);
    let err = decode(&bomb, Some("gzip"), 1000).unwrap_err();
    assert!(err.contains("more than 1000 bytes"), "{err}");
    assert_eq!(decode(&bomb, Some("gzip"), 1 << 20).unwrap().len(), 1 << 20);
    let err = decode(&zeros, None, 1000).unwrap_err();
    assert!(err.contains("more than 1000 bytes"), "{err}");

    // The cap is for the whole run: what one entry used, the next cannot.
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(dir.path());
    let entry = |content: &str| FileEntry {
        path: "/f".into(),
        content: stoke_api::TextOrBinary::Text(content.into()),
        source: None,
        encoding: None,
        owner: Some("0:0".into()),
        permissions: None,
        append: false,
        defer: false,
    };
    let mut budget = 10;
    assert!(prepare(&root, &entry("123456"), &mut budget).is_ok());
    assert_eq!(budget, 4);
    assert!(prepare(&root, &entry("12345"), &mut budget).is_err());
}

#[tokio::test]
async fn plan_says_what_would_be_written_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, sys) = setup(
        dir.path(),
        json!({"write_files": [
            {"path": "/etc/app.conf", "content": "k=v\n", "owner": "admin", "permissions": "0640"},
            {"path": "/etc/x", "content": "x", "owner": "nobody-here"},
            {"path": "/later", "content": "l", "defer": true},
        ]}),
    );
    let plan = WriteFiles { deferred: false }.plan(&ctx).unwrap();
    assert!(
        plan.contains("would write /etc/app.conf (4 bytes, mode 0640, owner admin)"),
        "{plan}"
    );
    assert!(
        plan.contains("write_files[1] (/etc/x) would fail: no user `nobody-here`"),
        "{plan}"
    );
    assert!(!plan.contains("/later"), "{plan}");
    assert!(!dir.path().join("etc/app.conf").exists());
    assert!(sys.actions().is_empty());
}

#[test]
fn typos_inside_an_entry_are_load_errors_with_a_location() {
    let spec = config_spec::<WriteFilesConfig>();
    let err = (spec.validate)("write_files:\n- path: /x\n  pemissions: '0600'\n").unwrap_err();
    assert_eq!(err.line, Some(3), "{err}");
    assert!(err.message.contains("did you mean `permissions`?"), "{err}");
    let err = (spec.validate)("write_files:\n- content: x\n").unwrap_err();
    assert!(err.message.contains("path"), "{err}");
    // Not-UTF-8 `!!binary` content is no error on the way (the loader re-reads the
    // text to locate an error elsewhere).
    (spec.validate)("write_files:\n- path: /x\n  content: !!binary /w==\n").unwrap();
    let v = yaml("write_files:\n- path: /x\n  content: !!binary /w==\n");
    (spec.check_value)(&v).unwrap();
}

#[test]
fn nothing_to_do_without_entries_of_its_stage() {
    let now = WriteFiles { deferred: false };
    let later = WriteFiles { deferred: true };
    let entry =
        |defer| json!({"write_files": [{"path": "/etc/x", "content": "y", "defer": defer}]});
    assert!(now.nothing_configured(&json!({}), &[]).is_some());
    assert!(
        now.nothing_configured(&json!({"write_files": []}), &[])
            .is_some()
    );
    assert!(now.nothing_configured(&entry(false), &[]).is_none());
    assert!(now.nothing_configured(&entry(true), &[]).is_some());
    assert!(later.nothing_configured(&entry(true), &[]).is_none());
    assert!(later.nothing_configured(&entry(false), &[]).is_some());
    // Unreadable: the run reports the error.
    assert!(
        now.nothing_configured(&json!({"write_files": 3}), &[])
            .is_none()
    );
}
