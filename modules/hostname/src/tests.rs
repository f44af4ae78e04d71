use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use stoke_api::fake::{FakeSystem, context};
use stoke_api::{Action, Context, InstanceData, Module, ModuleError, Report};

use super::*;

fn instance() -> InstanceData {
    InstanceData {
        datasource: "nocloud".into(),
        instance_id: "i-0abc".parse().unwrap(),
        region: Some("us-east-1".into()),
        ..InstanceData::default()
    }
}

fn setup(root: &Path, config: Value, instance: InstanceData) -> (Context, Arc<FakeSystem>) {
    let sys = FakeSystem::new();
    let mut ctx = context(root, config, instance, sys.clone());
    ctx.vars.insert("role".into(), "web".into());
    (ctx, sys)
}

async fn run(ctx: &Context) -> Result<Report, ModuleError> {
    Hostname.run(ctx).await
}

fn read(ctx: &Context, path: &str) -> String {
    fs::read_to_string(ctx.host_path(path)).unwrap()
}

fn inode(ctx: &Context, path: &str) -> u64 {
    fs::metadata(ctx.host_path(path)).unwrap().ino()
}

fn sethostnames(sys: &FakeSystem) -> Vec<String> {
    sys.actions()
        .into_iter()
        .filter_map(|a| match a {
            Action::Sethostname { name } => Some(name),
            _ => None,
        })
        .collect()
}

fn detail(r: &Report, key: &str) -> String {
    r.details[key].as_str().unwrap().to_string()
}

#[test]
fn spec_is_local_per_boot_and_declares_the_cloud_init_keys() {
    let spec = Hostname.spec();
    assert_eq!(spec.name, "hostname");
    assert_eq!(spec.stage, Stage::Local);
    assert_eq!(spec.frequency, Frequency::PerBoot);
    assert!(spec.needs_metadata);
    let keys = (spec.config.keys)();
    for k in [
        "hostname",
        "fqdn",
        "domain",
        "preserve_hostname",
        "prefer_fqdn_over_hostname",
        "create_hostname_file",
    ] {
        assert!(keys.contains(&k), "{k} missing from {keys:?}");
    }
    (spec.config.validate)("hostname: web\nother_module: 1\npreserve_hostname: yes\n").unwrap();
    assert!((spec.config.validate)("preserve_hostname: [1]\n").is_err());
}

#[tokio::test]
async fn renders_the_template_and_sets_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, sys) = setup(
        dir.path(),
        json!({"hostname": "{{ role }}-{{ uuid8 }}", "fqdn": "{{ hostname }}.{{ region }}.example.com"}),
        instance(),
    );
    let r = run(&ctx).await.unwrap();
    let uuid = detail(&r, "uuid");
    let uuid8 = detail(&r, "uuid8");
    assert_eq!(uuid8, uuid.replace('-', "")[..8]);
    assert_eq!(Uuid::parse_str(&uuid).unwrap().get_version_num(), 4);
    let host = format!("web-{uuid8}");
    let fqdn = format!("{host}.us-east-1.example.com");
    assert_eq!(
        r.details,
        json!({"hostname": host, "fqdn": fqdn, "domain": "us-east-1.example.com", "uuid": uuid, "uuid8": uuid8})
    );
    assert_eq!(read(&ctx, "/etc/hostname"), format!("{host}\n"));
    assert_eq!(
        read(&ctx, "/etc/hosts"),
        format!("# BEGIN stoke hostname\n127.0.1.1 {fqdn} {host}\n# END stoke hostname\n")
    );
    assert_eq!(sethostnames(&sys), vec![host.clone()]);
    assert_eq!(sys.actions().len(), 1, "only the syscall: no commands");
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert!(r.summary.contains(&host), "{}", r.summary);
    assert_eq!(
        fs::read_to_string(ctx.state_dir.join("uuid")).unwrap(),
        format!("{uuid}\n")
    );
}

#[tokio::test]
async fn uuid_is_kept_per_state_dir_and_new_for_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = json!({"hostname": "web-{{ uuid8 }}"});
    let (ctx, _) = setup(dir.path(), cfg.clone(), instance());
    let first = detail(&run(&ctx).await.unwrap(), "uuid");
    let again = detail(&run(&ctx).await.unwrap(), "uuid");
    assert_eq!(first, again, "same instance, same uuid");

    // A fresh context on the same state_dir (the next boot) reads it back.
    let (next_boot, _) = setup(dir.path(), cfg.clone(), instance());
    let r = run(&next_boot).await.unwrap();
    assert_eq!(detail(&r, "uuid"), first);
    assert_eq!(
        read(&next_boot, "/etc/hostname"),
        format!("web-{}\n", &first[..8])
    );

    // A new instance gets a new state_dir, hence a new uuid and name.
    let (mut other, _) = setup(dir.path(), cfg, instance());
    other.state_dir = other.host_path("/var/lib/stoke/instances/i-0def/hostname");
    let r = run(&other).await.unwrap();
    assert_ne!(detail(&r, "uuid"), first);
    assert_eq!(
        read(&other, "/etc/hostname"),
        format!("web-{}\n", detail(&r, "uuid8"))
    );
}

#[tokio::test]
async fn a_damaged_uuid_file_is_replaced_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, _) = setup(dir.path(), json!({"hostname": "web"}), instance());
    fs::create_dir_all(&ctx.state_dir).unwrap();
    fs::write(ctx.state_dir.join("uuid"), "not a uuid\n").unwrap();
    let r = run(&ctx).await.unwrap();
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    let uuid = detail(&r, "uuid");
    assert_eq!(
        fs::read_to_string(ctx.state_dir.join("uuid")).unwrap(),
        format!("{uuid}\n")
    );
    // Surrounding whitespace in a valid file is fine.
    fs::write(ctx.state_dir.join("uuid"), format!("  {uuid}\n\n")).unwrap();
    let r = run(&ctx).await.unwrap();
    assert_eq!(detail(&r, "uuid"), uuid);
    assert!(r.warnings.is_empty());
}

async fn failure(config: Value) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, sys) = setup(dir.path(), config, instance());
    let err = run(&ctx).await.unwrap_err();
    assert!(matches!(err, ModuleError::Invalid(_)), "{err:?}");
    assert!(!ctx.host_path("/etc/hostname").exists(), "nothing written");
    assert!(!ctx.host_path("/etc/hosts").exists(), "nothing written");
    assert!(sys.actions().is_empty(), "no sethostname");
    err.to_string()
}

#[tokio::test]
async fn invalid_names_fail_naming_the_template_and_the_label() {
    let long = "a".repeat(64);
    let e = failure(json!({"hostname": format!("{{{{ role }}}}-{long}")})).await;
    assert!(e.contains("`hostname` template"), "{e}");
    assert!(e.contains(&format!("label \"web-{long}\"")), "{e}");
    assert!(e.contains("at most 63"), "{e}");

    let label = "b".repeat(60);
    let fqdn = [label.as_str(); 5].join(".");
    let e = failure(json!({"fqdn": fqdn})).await;
    assert!(e.contains("304 characters long"), "{e}");
    assert!(
        e.starts_with("invalid configuration: `fqdn` \"bbb"),
        "a literal is shown once: {e}"
    );
    assert!(e.contains("at most 253"), "{e}");

    let e = failure(json!({"hostname": "{{ role }}_1"})).await;
    assert!(e.contains("\"{{ role }}_1\""), "template shown: {e}");
    assert!(e.contains("gave \"web_1\""), "{e}");
    assert!(e.contains("label \"web_1\" contains '_'"), "{e}");

    let e = failure(json!({"hostname": "  "})).await;
    assert!(e.contains("empty"), "{e}");

    let e = failure(json!({"hostname": "-web"})).await;
    assert!(e.contains("starts or ends with '-'"), "{e}");

    let e = failure(json!({"hostname": "web..example.com"})).await;
    assert!(e.contains("empty label"), "{e}");

    let e = failure(json!({"hostname": "wéb"})).await;
    assert!(e.contains("contains 'é'"), "{e}");

    let e = failure(json!({"domain": "example_corp.com", "hostname": "web"})).await;
    assert!(e.contains("`domain` \"example_corp.com\": label"), "{e}");

    let e = failure(json!({"hostname": "{{ rol }}-1"})).await;
    assert!(e.contains("`hostname`"), "{e}");
    assert!(e.contains("unknown variable `rol`"), "{e}");

    // Each part valid, together too long.
    let domain = [label.as_str(); 4].join(".");
    let e = failure(json!({"hostname": "a".repeat(63), "domain": domain})).await;
    assert!(e.contains("joined with `domain`"), "{e}");
}

#[tokio::test]
async fn case_is_kept_and_a_final_dot_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, _) = setup(
        dir.path(),
        json!({"hostname": "Web-1", "fqdn": "Web-1.Example.com.\n"}),
        instance(),
    );
    let r = run(&ctx).await.unwrap();
    assert_eq!(detail(&r, "hostname"), "Web-1");
    assert_eq!(detail(&r, "fqdn"), "Web-1.Example.com");
    assert_eq!(detail(&r, "domain"), "Example.com");
}

#[tokio::test]
async fn preserve_hostname_touches_nothing_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, sys) = setup(
        dir.path(),
        json!({"preserve_hostname": true, "hostname": "web"}),
        instance(),
    );
    fs::create_dir_all(ctx.host_path("/etc")).unwrap();
    fs::write(ctx.host_path("/etc/hostname"), "baked.example.com\n").unwrap();
    let hosts = "127.0.0.1 localhost\n127.0.1.1 baked.example.com baked\n";
    fs::write(ctx.host_path("/etc/hosts"), hosts).unwrap();
    let r = run(&ctx).await.unwrap();
    assert!(r.summary.contains("preserve_hostname"), "{}", r.summary);
    assert!(r.summary.contains("baked.example.com"), "{}", r.summary);
    assert_eq!(read(&ctx, "/etc/hostname"), "baked.example.com\n");
    assert_eq!(read(&ctx, "/etc/hosts"), hosts);
    assert!(sys.actions().is_empty(), "{:?}", sys.actions());
    assert_eq!(detail(&r, "hostname"), "baked");
    assert_eq!(detail(&r, "fqdn"), "baked.example.com");
    assert_eq!(detail(&r, "domain"), "example.com");
    assert_eq!(
        detail(&r, "uuid").len(),
        36,
        "later modules still get a uuid"
    );
}

#[tokio::test]
async fn prefer_fqdn_gives_the_fqdn_to_the_file_and_the_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, sys) = setup(
        dir.path(),
        json!({"hostname": "web", "domain": "example.com", "prefer_fqdn_over_hostname": true}),
        instance(),
    );
    let r = run(&ctx).await.unwrap();
    assert_eq!(read(&ctx, "/etc/hostname"), "web.example.com\n");
    assert_eq!(sethostnames(&sys), vec!["web.example.com"]);
    assert_eq!(detail(&r, "hostname"), "web", "details keep the short name");
    assert!(
        r.summary.contains("system name is web.example.com"),
        "{}",
        r.summary
    );
    assert_eq!(detail(&r, "fqdn"), "web.example.com");
    assert!(read(&ctx, "/etc/hosts").contains("127.0.1.1 web.example.com web\n"));

    // Without it, the short name.
    let dir = tempfile::tempdir().unwrap();
    let (ctx, sys) = setup(
        dir.path(),
        json!({"hostname": "web", "domain": "example.com"}),
        instance(),
    );
    run(&ctx).await.unwrap();
    assert_eq!(read(&ctx, "/etc/hostname"), "web\n");
    assert_eq!(sethostnames(&sys), vec!["web"]);
}

#[tokio::test]
async fn prefer_fqdn_respects_the_kernel_limit() {
    let e = failure(json!({
        "hostname": "a".repeat(40),
        "domain": "b".repeat(30),
        "prefer_fqdn_over_hostname": true,
    }))
    .await;
    assert!(e.contains("at most 64"), "{e}");
}

#[tokio::test]
async fn etc_hosts_foreign_lines_stay_and_a_rerun_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, sys) = setup(dir.path(), json!({"hostname": "web-1"}), instance());
    fs::create_dir_all(ctx.host_path("/etc")).unwrap();
    let foreign =
        "127.0.0.1\tlocalhost\n# keep me  \n\n::1 ip6-localhost ip6-loopback\n10.1.1.1 db\n";
    fs::write(ctx.host_path("/etc/hosts"), foreign).unwrap();
    fs::set_permissions(
        ctx.host_path("/etc/hosts"),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .unwrap();

    let r = run(&ctx).await.unwrap();
    assert!(
        r.summary.contains("wrote /etc/hostname, /etc/hosts"),
        "{}",
        r.summary
    );
    let hosts = read(&ctx, "/etc/hosts");
    assert_eq!(
        hosts,
        format!("{foreign}# BEGIN stoke hostname\n127.0.1.1 web-1\n# END stoke hostname\n")
    );
    assert_eq!(
        fs::metadata(ctx.host_path("/etc/hosts")).unwrap().mode() & 0o777,
        0o640,
        "mode kept"
    );

    // Same boot or next: nothing rewritten (atomic writes would change the inode),
    // but the kernel is told again.
    let (hosts_ino, name_ino) = (inode(&ctx, "/etc/hosts"), inode(&ctx, "/etc/hostname"));
    let r = run(&ctx).await.unwrap();
    assert!(r.summary.contains("already up to date"), "{}", r.summary);
    assert_eq!(inode(&ctx, "/etc/hosts"), hosts_ino);
    assert_eq!(inode(&ctx, "/etc/hostname"), name_ino);
    assert_eq!(read(&ctx, "/etc/hosts"), hosts);
    assert_eq!(sethostnames(&sys), vec!["web-1", "web-1"]);

    // Someone adds a line after the block; a new name replaces the block in place.
    fs::write(
        ctx.host_path("/etc/hosts"),
        format!("{hosts}10.2.2.2 cache\n"),
    )
    .unwrap();
    let (ctx2, _) = setup(
        dir.path(),
        json!({"hostname": "web-2", "domain": "example.com"}),
        instance(),
    );
    run(&ctx2).await.unwrap();
    assert_eq!(
        read(&ctx2, "/etc/hosts"),
        format!(
            "{foreign}# BEGIN stoke hostname\n127.0.1.1 web-2.example.com web-2\n# END stoke hostname\n10.2.2.2 cache\n"
        )
    );
    assert_eq!(read(&ctx2, "/etc/hostname"), "web-2\n");
}

#[tokio::test]
async fn an_existing_hostname_file_without_newline_is_not_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, _) = setup(dir.path(), json!({"hostname": "web"}), instance());
    fs::create_dir_all(ctx.host_path("/etc")).unwrap();
    fs::write(ctx.host_path("/etc/hostname"), "web").unwrap();
    let ino = inode(&ctx, "/etc/hostname");
    run(&ctx).await.unwrap();
    assert_eq!(inode(&ctx, "/etc/hostname"), ino);
}

#[tokio::test]
async fn default_comes_from_metadata_local_hostname() {
    let dir = tempfile::tempdir().unwrap();
    let md = InstanceData {
        local_hostname: Some("ip-10-0-0-1.ec2.internal".into()),
        local_ipv4: Some("10.0.0.1".into()),
        ..instance()
    };
    let (ctx, sys) = setup(dir.path(), json!({}), md);
    let r = run(&ctx).await.unwrap();
    assert_eq!(detail(&r, "hostname"), "ip-10-0-0-1");
    assert_eq!(detail(&r, "fqdn"), "ip-10-0-0-1.ec2.internal");
    assert_eq!(detail(&r, "domain"), "ec2.internal");
    assert_eq!(sethostnames(&sys), vec!["ip-10-0-0-1"]);
    assert!(read(&ctx, "/etc/hosts").contains("127.0.1.1 ip-10-0-0-1.ec2.internal ip-10-0-0-1\n"));
}

#[tokio::test]
async fn configured_domain_wins_over_the_metadata_domain() {
    let dir = tempfile::tempdir().unwrap();
    let md = InstanceData {
        local_hostname: Some("ip-10-0-0-1.ec2.internal".into()),
        ..instance()
    };
    let (ctx, _) = setup(dir.path(), json!({"domain": ".corp.example."}), md);
    let r = run(&ctx).await.unwrap();
    assert_eq!(detail(&r, "fqdn"), "ip-10-0-0-1.corp.example");
    assert_eq!(detail(&r, "domain"), "corp.example");
}

#[tokio::test]
async fn fqdn_template_can_use_the_metadata_hostname() {
    let dir = tempfile::tempdir().unwrap();
    let md = InstanceData {
        local_hostname: Some("ip-10-0-0-1.ec2.internal".into()),
        ..instance()
    };
    let (ctx, _) = setup(
        dir.path(),
        json!({"fqdn": "{{ hostname }}.example.com"}),
        md,
    );
    let r = run(&ctx).await.unwrap();
    assert_eq!(detail(&r, "hostname"), "ip-10-0-0-1");
    assert_eq!(detail(&r, "fqdn"), "ip-10-0-0-1.example.com");
}

#[tokio::test]
async fn default_falls_back_to_the_dashed_ipv4() {
    let dir = tempfile::tempdir().unwrap();
    let md = InstanceData {
        local_ipv4: Some("172.31.5.9".into()),
        ..instance()
    };
    let (ctx, _) = setup(dir.path(), json!({}), md);
    let r = run(&ctx).await.unwrap();
    assert_eq!(detail(&r, "hostname"), "ip-172-31-5-9");
    assert_eq!(detail(&r, "fqdn"), "ip-172-31-5-9");
    assert_eq!(detail(&r, "domain"), "");
}

#[tokio::test]
async fn bad_metadata_hostname_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let md = InstanceData {
        local_hostname: Some("my_host".into()),
        ..instance()
    };
    let (ctx, _) = setup(dir.path(), json!({}), md.clone());
    let e = run(&ctx).await.unwrap_err().to_string();
    assert!(
        e.contains("metadata local-hostname gave \"my_host\""),
        "{e}"
    );
    // Not used when a hostname is configured.
    let (ctx, _) = setup(dir.path(), json!({"hostname": "web"}), md);
    run(&ctx).await.unwrap();
}

#[tokio::test]
async fn nothing_to_name_it_by_leaves_it_alone_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, sys) = setup(dir.path(), json!({}), instance());
    let r = run(&ctx).await.unwrap();
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert!(sys.actions().is_empty());
    assert!(!ctx.host_path("/etc/hostname").exists());
    assert!(!ctx.host_path("/etc/hosts").exists());
    assert_eq!(detail(&r, "hostname"), "");
}

#[tokio::test]
async fn a_dotted_hostname_is_the_fqdn() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, sys) = setup(
        dir.path(),
        json!({"hostname": "db-1.prod.example.com"}),
        instance(),
    );
    let r = run(&ctx).await.unwrap();
    assert_eq!(detail(&r, "hostname"), "db-1");
    assert_eq!(detail(&r, "fqdn"), "db-1.prod.example.com");
    assert_eq!(detail(&r, "domain"), "prod.example.com");
    assert_eq!(sethostnames(&sys), vec!["db-1"]);
}

#[tokio::test]
async fn a_domain_that_disagrees_with_the_fqdn_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, _) = setup(
        dir.path(),
        json!({"hostname": "web", "fqdn": "web.a.example", "domain": "b.example"}),
        instance(),
    );
    let r = run(&ctx).await.unwrap();
    assert_eq!(detail(&r, "fqdn"), "web.a.example");
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert!(r.warnings[0].contains("b.example"), "{:?}", r.warnings);
}

#[tokio::test]
async fn create_hostname_file_false_does_not_create_it() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, sys) = setup(
        dir.path(),
        json!({"hostname": "web", "create_hostname_file": false}),
        instance(),
    );
    run(&ctx).await.unwrap();
    assert!(!ctx.host_path("/etc/hostname").exists());
    assert_eq!(sethostnames(&sys), vec!["web"]);
    // An existing file is still kept up to date.
    fs::write(ctx.host_path("/etc/hostname"), "old\n").unwrap();
    run(&ctx).await.unwrap();
    assert_eq!(read(&ctx, "/etc/hostname"), "web\n");
}

#[tokio::test]
async fn plan_describes_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, sys) = setup(
        dir.path(),
        json!({"hostname": "{{ role }}-{{ uuid8 }}", "domain": "example.com"}),
        instance(),
    );
    let p = Hostname.plan(&ctx).unwrap();
    assert_eq!(
        p,
        "would set hostname web-00000000 (fqdn web-00000000.example.com) (no uuid yet: shown as zeros)"
    );
    assert!(!ctx.state_dir.join("uuid").exists(), "plan wrote nothing");
    assert!(sys.actions().is_empty());

    let r = run(&ctx).await.unwrap();
    let p = Hostname.plan(&ctx).unwrap();
    assert_eq!(
        p,
        format!(
            "would set hostname {0} (fqdn {0}.example.com)",
            detail(&r, "hostname")
        )
    );

    let (bad, _) = setup(dir.path(), json!({"hostname": "web_1"}), instance());
    assert!(Hostname.plan(&bad).unwrap().starts_with("would fail: "));
    let (keep, _) = setup(dir.path(), json!({"preserve_hostname": true}), instance());
    assert!(
        Hostname
            .plan(&keep)
            .unwrap()
            .contains("leave the hostname alone")
    );
}

#[test]
fn check_name_accepts_rfc1123_names() {
    let o = Origin::Metadata("test");
    for ok in [
        "a",
        "web-1",
        "1web",
        "0a1b2c3d",
        "Web-1.Example.COM",
        &"a".repeat(63),
        &[&"a".repeat(63)[..]; 3].join("."),
    ] {
        check_name(ok, &o).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    let max = format!("{}.{}", "a".repeat(63), vec!["b".repeat(63); 3].join("."));
    assert_eq!(max.len(), 255);
    assert!(check_name(&max, &o).is_err());
    assert!(check_name(&max[2..], &o).is_ok(), "253 is allowed");
    for bad in ["", "a b", "a/b", "web-", "a.-b", "é", "a..b", ".a"] {
        assert!(check_name(bad, &o).is_err(), "{bad:?} accepted");
    }
}

// ---- manage_etc_hosts (cloud-init's meaning; absent: stoke's block) ----

fn with_files(root: &Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let p = root.join(path.trim_start_matches('/'));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
}

const DEBIAN: &str = "PRETTY_NAME=\"Debian GNU/Linux 12\"\nID=debian\n";
const AMAZON: &str = "NAME=\"Amazon Linux\"\nID=\"amzn\"\nID_LIKE=\"centos rhel fedora\"\n";
const ORIGINAL_HOSTS: &str = "127.0.0.1 localhost\n# the cache\n10.1.1.1 cache\n";

#[tokio::test]
async fn manage_etc_hosts_false_leaves_hosts_alone_even_a_stoke_block() {
    let dir = tempfile::tempdir().unwrap();
    let hosts =
        format!("{ORIGINAL_HOSTS}# BEGIN stoke hostname\n127.0.1.1 old\n# END stoke hostname\n");
    with_files(dir.path(), &[("/etc/hosts", &hosts)]);
    let (ctx, sys) = setup(
        dir.path(),
        json!({"hostname": "web", "fqdn": "web.example.com", "manage_etc_hosts": false}),
        instance(),
    );
    let before = inode(&ctx, "/etc/hosts");
    let r = run(&ctx).await.unwrap();
    assert_eq!(read(&ctx, "/etc/hosts"), hosts);
    assert_eq!(inode(&ctx, "/etc/hosts"), before, "not even rewritten");
    assert_eq!(
        read(&ctx, "/etc/hostname"),
        "web\n",
        "the hostname is still set"
    );
    assert_eq!(sethostnames(&sys), vec!["web"]);
    assert!(
        r.summary
            .contains("/etc/hosts left alone (manage_etc_hosts: false)"),
        "{}",
        r.summary
    );

    // No /etc/hosts at all: none is created.
    let dir = tempfile::tempdir().unwrap();
    let (ctx, _) = setup(
        dir.path(),
        json!({"hostname": "web", "manage_etc_hosts": "false"}),
        instance(),
    );
    run(&ctx).await.unwrap();
    assert!(!ctx.host_path("/etc/hosts").exists());
}

#[tokio::test]
async fn manage_etc_hosts_absent_keeps_stokes_block() {
    let dir = tempfile::tempdir().unwrap();
    with_files(dir.path(), &[("/etc/hosts", ORIGINAL_HOSTS)]);
    let (ctx, _) = setup(
        dir.path(),
        json!({"hostname": "web.example.com"}),
        instance(),
    );
    run(&ctx).await.unwrap();
    assert_eq!(
        read(&ctx, "/etc/hosts"),
        format!(
            "{ORIGINAL_HOSTS}# BEGIN stoke hostname\n127.0.1.1 web.example.com web\n# END stoke hostname\n"
        )
    );
}

#[tokio::test]
async fn manage_etc_hosts_true_renders_the_builtin_template_by_family() {
    let dir = tempfile::tempdir().unwrap();
    with_files(
        dir.path(),
        &[("/etc/os-release", DEBIAN), ("/etc/hosts", ORIGINAL_HOSTS)],
    );
    let (ctx, _) = setup(
        dir.path(),
        json!({"hostname": "web", "fqdn": "web.example.com", "manage_etc_hosts": true}),
        instance(),
    );
    let r = run(&ctx).await.unwrap();
    let header = "# Written by stoke at every boot (manage_etc_hosts: true): changes made here are lost.\n\
                  # To change it for good, set manage_etc_hosts to false or \"localhost\", or give the image\n\
                  # a template in /etc/cloud/templates/.\n";
    assert_eq!(
        read(&ctx, "/etc/hosts"),
        format!(
            "{header}127.0.0.1 localhost\n127.0.1.1 web.example.com web\n\n\
             ::1 localhost ip6-localhost ip6-loopback\nff02::1 ip6-allnodes\nff02::2 ip6-allrouters\n"
        )
    );
    assert!(
        r.summary
            .contains("/etc/hosts (manage_etc_hosts: true, from stoke's built-in template)"),
        "{}",
        r.summary
    );
    // The next boot finds it up to date and does not rewrite it.
    let before = inode(&ctx, "/etc/hosts");
    let r = run(&ctx).await.unwrap();
    assert_eq!(inode(&ctx, "/etc/hosts"), before);
    assert!(
        r.summary.contains("files already up to date"),
        "{}",
        r.summary
    );

    // Red Hat's family: the names on 127.0.0.1 and ::1; a short name only once.
    let dir = tempfile::tempdir().unwrap();
    with_files(dir.path(), &[("/etc/os-release", AMAZON)]);
    let (ctx, _) = setup(
        dir.path(),
        json!({"hostname": "db", "manage_etc_hosts": "yes"}),
        instance(),
    );
    run(&ctx).await.unwrap();
    assert_eq!(
        read(&ctx, "/etc/hosts"),
        format!(
            "{header}127.0.0.1 db\n127.0.0.1 localhost.localdomain localhost\n\
             127.0.0.1 localhost4.localdomain4 localhost4\n\n::1 db\n\
             ::1 localhost.localdomain localhost\n::1 localhost6.localdomain6 localhost6\n"
        )
    );
}

#[tokio::test]
async fn manage_etc_hosts_true_uses_the_images_cloud_init_template() {
    let dir = tempfile::tempdir().unwrap();
    // A jinja template in cloud-init's style: a comment trimmed away, a block, the names.
    let tmpl = "## template:jinja\n{# managed by the image -#}\n# hosts of {{ fqdn }}\n\
                {% if fqdn != hostname %}\n127.0.1.1 {{fqdn}} {{hostname}}\n{% endif %}\n\
                127.0.0.1 localhost\n";
    with_files(
        dir.path(),
        &[
            ("/etc/os-release", "ID=ubuntu\nID_LIKE=debian\n"),
            ("/etc/cloud/templates/hosts.debian.tmpl", tmpl),
            // Another family's template is not used.
            ("/etc/cloud/templates/hosts.redhat.tmpl", "wrong\n"),
        ],
    );
    let (ctx, _) = setup(
        dir.path(),
        json!({"hostname": "web", "domain": "example.com", "manage_etc_hosts": true}),
        instance(),
    );
    let r = run(&ctx).await.unwrap();
    assert_eq!(
        read(&ctx, "/etc/hosts"),
        "# hosts of web.example.com\n127.0.1.1 web.example.com web\n127.0.0.1 localhost\n"
    );
    assert!(
        r.summary
            .contains("from /etc/cloud/templates/hosts.debian.tmpl"),
        "{}",
        r.summary
    );

    // cloud-init's deprecated `template` value: the same, with a warning. A template without a
    // header is a basic one ($name, ${name}).
    let dir = tempfile::tempdir().unwrap();
    with_files(
        dir.path(),
        &[
            ("/etc/os-release", AMAZON),
            (
                "/etc/cloud/templates/hosts.redhat.tmpl",
                "127.0.0.1 ${fqdn} $hostname localhost\n# a lone $ stays\n",
            ),
        ],
    );
    let (ctx, _) = setup(
        dir.path(),
        json!({"fqdn": "db.example.com", "manage_etc_hosts": "template"}),
        instance(),
    );
    let r = run(&ctx).await.unwrap();
    assert_eq!(
        read(&ctx, "/etc/hosts"),
        "127.0.0.1 db.example.com db localhost\n# a lone $ stays\n"
    );
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("\"template\" is deprecated")),
        "{:?}",
        r.warnings
    );
}

#[tokio::test]
async fn a_bad_hosts_template_fails_with_its_file_and_line_and_writes_nothing() {
    for (tmpl, want) in [
        (
            "## template: jinja\n127.0.1.1 {{ fqdn }}\n{{ nope }}\n",
            "line 3",
        ),
        (
            "# plain\n127.0.1.1 $fqdn $nope\n",
            "line 2: unknown variable `nope`",
        ),
        (
            "## template: cheetah\n$hostname\n",
            "line 1: unknown template type",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        with_files(
            dir.path(),
            &[
                ("/etc/os-release", DEBIAN),
                ("/etc/cloud/templates/hosts.debian.tmpl", tmpl),
                ("/etc/hosts", ORIGINAL_HOSTS),
            ],
        );
        let (ctx, _) = setup(
            dir.path(),
            json!({"hostname": "web", "manage_etc_hosts": true}),
            instance(),
        );
        let e = run(&ctx).await.unwrap_err().to_string();
        assert!(
            e.contains("/etc/cloud/templates/hosts.debian.tmpl: ") && e.contains(want),
            "{tmpl:?}: {e}"
        );
        assert_eq!(read(&ctx, "/etc/hosts"), ORIGINAL_HOSTS);
    }
}

#[tokio::test]
async fn manage_etc_hosts_localhost_sets_only_the_127_0_1_1_line() {
    let dir = tempfile::tempdir().unwrap();
    // A stale name from the image, stoke's block from a boot without the key, a second
    // 127.0.1.1 line and a last line without a newline.
    let hosts = "127.0.0.1 localhost\n127.0.1.1   baked.example.com baked # from the build\n\
                 ::1 localhost\n# BEGIN stoke hostname\n127.0.1.1 old\n# END stoke hostname\n\
                 127.0.1.1 other\n10.1.1.1 cache";
    with_files(dir.path(), &[("/etc/hosts", hosts)]);
    let (ctx, _) = setup(
        dir.path(),
        json!({"hostname": "web", "fqdn": "web.example.com", "manage_etc_hosts": "localhost"}),
        instance(),
    );
    let r = run(&ctx).await.unwrap();
    let want = "127.0.0.1 localhost\n127.0.1.1 web.example.com web\n::1 localhost\n10.1.1.1 cache";
    assert_eq!(read(&ctx, "/etc/hosts"), want);
    assert!(
        r.summary
            .contains("/etc/hosts (manage_etc_hosts: localhost)"),
        "{}",
        r.summary
    );

    // A line that already names the machine is kept as it is, comment and spacing included.
    let kept = "127.0.0.1 localhost\n127.0.1.1  web.example.com web  # mine\n";
    fs::write(ctx.host_path("/etc/hosts"), kept).unwrap();
    run(&ctx).await.unwrap();
    assert_eq!(read(&ctx, "/etc/hosts"), kept);

    // No 127.0.1.1 line (or no file): appended.
    fs::write(ctx.host_path("/etc/hosts"), "127.0.0.1 localhost").unwrap();
    run(&ctx).await.unwrap();
    assert_eq!(
        read(&ctx, "/etc/hosts"),
        "127.0.0.1 localhost\n127.0.1.1 web.example.com web\n"
    );
    fs::remove_file(ctx.host_path("/etc/hosts")).unwrap();
    run(&ctx).await.unwrap();
    assert_eq!(read(&ctx, "/etc/hosts"), "127.0.1.1 web.example.com web\n");
}

#[tokio::test]
async fn preserve_hostname_with_manage_etc_hosts_uses_the_kept_name() {
    let dir = tempfile::tempdir().unwrap();
    with_files(
        dir.path(),
        &[
            ("/etc/hostname", "baked.example.com\n"),
            ("/etc/hosts", "127.0.0.1 localhost\n"),
        ],
    );
    let (ctx, sys) = setup(
        dir.path(),
        json!({"preserve_hostname": true, "hostname": "web", "manage_etc_hosts": "localhost"}),
        instance(),
    );
    let r = run(&ctx).await.unwrap();
    assert_eq!(
        read(&ctx, "/etc/hosts"),
        "127.0.0.1 localhost\n127.0.1.1 baked.example.com baked\n"
    );
    assert_eq!(read(&ctx, "/etc/hostname"), "baked.example.com\n");
    assert!(sethostnames(&sys).is_empty());
    assert!(r.summary.contains("wrote /etc/hosts"), "{}", r.summary);
}

#[test]
fn manage_etc_hosts_values_are_checked_with_their_position() {
    let spec = Hostname.spec().config;
    for ok in [
        "manage_etc_hosts: true\n",
        "manage_etc_hosts: no\n",
        "manage_etc_hosts: localhost\n",
        "manage_etc_hosts: \"template\"\n",
    ] {
        (spec.validate)(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    let e = (spec.validate)("hostname: web\nmanage_etc_hosts: sometimes\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected true, false or \"localhost\""), "{e}");
    assert!(e.contains("2:"), "names the line: {e}");
    assert!((spec.keys)().contains(&"manage_etc_hosts"));
}

#[test]
fn plan_says_what_happens_to_etc_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, _) = setup(
        dir.path(),
        json!({"hostname": "web", "manage_etc_hosts": false}),
        instance(),
    );
    let p = Hostname.plan(&ctx).unwrap();
    assert!(
        p.contains("/etc/hosts left alone (manage_etc_hosts: false)"),
        "{p}"
    );
    assert!(!ctx.host_path("/etc").exists(), "plan writes nothing");
}

#[tokio::test]
async fn resource_name_hostnames_of_ipv6_only_instances() {
    let dir = tempfile::tempdir().unwrap();
    // hostname-type resource-name: local-hostname is the instance id, no local-ipv4.
    let md = InstanceData {
        datasource: "ec2".into(),
        instance_id: "i-0123456789abcdef0".parse().unwrap(),
        local_hostname: Some("i-0123456789abcdef0.ec2.internal".into()),
        local_ipv6: Some("2600:1f18::10".into()),
        ..instance()
    };
    let (ctx, _) = setup(dir.path(), json!({}), md.clone());
    let r = run(&ctx).await.unwrap();
    assert_eq!(detail(&r, "hostname"), "i-0123456789abcdef0");
    assert_eq!(detail(&r, "fqdn"), "i-0123456789abcdef0.ec2.internal");
    assert!(read(&ctx, "/etc/hosts").contains("i-0123456789abcdef0.ec2.internal"));

    // No local-hostname at all: the resource name EC2 gives, from id and region.
    let dir = tempfile::tempdir().unwrap();
    for (region, fqdn) in [
        ("us-east-1", "i-0123456789abcdef0.ec2.internal"),
        (
            "eu-west-3",
            "i-0123456789abcdef0.eu-west-3.compute.internal",
        ),
    ] {
        let md = InstanceData {
            local_hostname: None,
            region: Some(region.into()),
            ..md.clone()
        };
        let (ctx, _) = setup(dir.path(), json!({}), md);
        let r = run(&ctx).await.unwrap();
        assert_eq!(detail(&r, "hostname"), "i-0123456789abcdef0");
        assert_eq!(detail(&r, "fqdn"), fqdn);
    }
    // Not on NoCloud, whose ids are anything: left alone as before.
    let (ctx, sys) = setup(dir.path(), json!({}), instance());
    run(&ctx).await.unwrap();
    assert!(sys.actions().is_empty());
}

#[tokio::test]
async fn a_tag_that_is_not_a_label_is_an_error_naming_the_tag() {
    let dir = tempfile::tempdir().unwrap();
    let (mut ctx, _) = setup(
        dir.path(),
        json!({"hostname": "{{ tags.role }}-{{ uuid8 }}"}),
        instance(),
    );
    ctx.vars.insert("tags.role".into(), "api".into());
    let r = run(&ctx).await.unwrap();
    assert!(detail(&r, "hostname").starts_with("api-"), "{r:?}");

    for bad in ["web server", "web.prod", "-x", ""] {
        let (mut ctx, sys) = setup(
            dir.path(),
            json!({"hostname": "{{ tags.role }}-{{ uuid8 }}"}),
            instance(),
        );
        ctx.vars.insert("tags.role".into(), bad.into());
        let e = run(&ctx).await.unwrap_err().to_string();
        assert!(e.contains("instance tag `role`"), "{bad:?}: {e}");
        assert!(sys.actions().is_empty(), "nothing set");
    }
    // In a domain, a dotted value is a name.
    let (mut ctx, _) = setup(
        dir.path(),
        json!({"hostname": "web", "domain": "{{ tags.zone }}"}),
        instance(),
    );
    ctx.vars
        .insert("tags.zone".into(), "prod.example.com".into());
    let r = run(&ctx).await.unwrap();
    assert_eq!(detail(&r, "fqdn"), "web.prod.example.com");
}
