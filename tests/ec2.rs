//! The real `stoke` binary against the IMDSv2 test double on 127.0.0.1.

#[path = "support/sandbox.rs"]
mod sandbox;

use std::time::{Duration, Instant};

use sandbox::Sandbox;
use stoke_imds::double::{ImdsServer, Knobs, Tree, nobody};

const IID: &str = "i-0123456789abcdef0";

fn ec2_root(srv: &ImdsServer, budget: f64) -> Sandbox {
    ec2_root_at(&srv.url(), budget)
}

/// `endpoint` as YAML: a URL, or a flow list of URLs raced as `auto` races IPv4 and IPv6.
fn ec2_root_at(endpoint: &str, budget: f64) -> Sandbox {
    let s = Sandbox::new();
    s.write("/sys/class/dmi/id/sys_vendor", "Amazon EC2\n");
    s.write("/sys/class/dmi/id/board_vendor", "Amazon EC2\n");
    s.write(
        "/etc/stoke/stoke.yaml",
        format!(
            // ssh keys are the ssh module's tests' business; the double's keys are not real keys.
            "imds:\n  endpoint: {endpoint}\n  budget_seconds: {budget}\n  request_timeout_seconds: 0.5\nmodules:\n  ssh-authorized-keys: {{enabled: false}}\n",
        ),
    );
    s
}

#[test]
fn brand_new_instance_waits_for_the_network_stage_then_applies_user_data() {
    let srv = ImdsServer::happy();
    let s = ec2_root(&srv, 10.0);
    let local = s.stoke(&["run", "--stage", "local"]);
    assert_eq!(
        srv.total_requests(),
        0,
        "the local stage never touches the network"
    );
    assert_eq!(local.code, 3, "not finished: {}", local.stderr);
    assert_eq!(s.module_state("hostname"), "deferred");

    let net = s.stoke(&["run", "--stage", "network"]);
    assert!(srv.total_requests() > 0);
    assert_eq!(s.module_state("hostname"), "ok", "{}", net.stderr);
    assert_eq!(
        s.read("/etc/hostname").trim(),
        "web-1",
        "from EC2 user-data"
    );
    let st = s.status();
    assert_eq!(st["instance_id"], IID);
    assert_eq!(st["datasource"], "ec2");
    assert_eq!(
        st["modules"]["hostname"]["stage"], "local",
        "a local module, run late"
    );
    assert_eq!(s.stoke(&["run", "--stage", "final"]).code, 0);
    assert_eq!(
        s.stoke(&["query", "availability-zone"]).stdout.trim(),
        "us-east-1a"
    );
    let keys = s.stoke(&["query", "public-keys"]).stdout;
    assert!(
        keys.contains("alice@example") && keys.contains("bob@example"),
        "{keys}"
    );
    assert_eq!(s.stoke(&["query", "block-device-mapping"]).code, 0);
    // Nothing uses tags or interfaces: neither is asked for.
    assert_eq!(srv.requests("/latest/meta-data/tags/instance"), 0);
    assert_eq!(
        srv.requests("/latest/meta-data/network/interfaces/macs/"),
        0
    );
}

#[test]
fn reboot_of_a_nitro_instance_uses_the_cache_in_the_local_stage() {
    let srv = ImdsServer::happy();
    let s = ec2_root(&srv, 10.0);
    assert_eq!(s.run_all().code, 0);
    let requests = srv.total_requests();
    s.new_boot("boot-2");
    s.write("/sys/class/dmi/id/board_asset_tag", format!("{IID}\n"));
    let local = s.stoke(&["run", "--stage", "local"]);
    assert_eq!(
        srv.total_requests(),
        requests,
        "no network in the local stage"
    );
    assert_eq!(s.module_state("hostname"), "ok", "{}", local.stderr);
    assert_eq!(s.status()["instance_id"], IID);
}

#[test]
fn imds_disabled_fails_fast_and_the_boot_goes_on() {
    let srv = ImdsServer::start(
        ImdsServer::default_tree(),
        Knobs {
            token_forbidden: true,
            ..Knobs::default()
        },
    );
    let s = ec2_root(&srv, 20.0);
    let started = Instant::now();
    let r = s.run_all();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "403 is not retried"
    );
    assert_eq!(r.code, 2, "degraded: {}", r.stderr);
    let errors = s.status()["errors"].to_string();
    assert!(
        errors.contains("403") && errors.contains("disabled"),
        "{errors}"
    );
    assert_eq!(s.module_state("hostname"), "deferred");
    assert_eq!(srv.requests("/latest/api/token"), 1);
}

#[test]
fn a_hanging_imds_costs_at_most_the_budget() {
    let srv = ImdsServer::start(
        ImdsServer::default_tree(),
        Knobs {
            hang: true,
            ..Knobs::default()
        },
    );
    let s = ec2_root(&srv, 1.0);
    s.stoke(&["run", "--stage", "local"]);
    let started = Instant::now();
    let r = s.stoke(&["run", "--stage", "network"]);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "budget 1 s, took {took:?}");
    assert_eq!(s.module_state("hostname"), "deferred", "{}", r.stderr);
    let errors = s.status()["errors"].to_string();
    assert!(errors.contains("budget"), "{errors}");
}

#[test]
fn server_errors_are_retried_and_an_expired_token_refreshed() {
    let srv = ImdsServer::start(
        ImdsServer::default_tree(),
        Knobs {
            leading_500s: 3,
            reject_first_token: true,
            ..Knobs::default()
        },
    );
    let s = ec2_root(&srv, 10.0);
    let r = s.run_all();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(s.read("/etc/hostname").trim(), "web-1");
    assert!(srv.tokens_issued() >= 2, "token refreshed after the 401");
}

#[test]
fn garbage_and_oversized_answers_are_reported_not_trusted() {
    for knobs in [
        Knobs {
            garbage_bodies: true,
            ..Knobs::default()
        },
        Knobs {
            huge_user_data: Some(20 * 1024 * 1024),
            ..Knobs::default()
        },
    ] {
        let srv = ImdsServer::start(ImdsServer::default_tree(), knobs.clone());
        let s = ec2_root(&srv, 5.0);
        let r = s.run_all();
        assert_eq!(r.code, 2, "{knobs:?}: {}", r.stderr);
        assert!(!s.path("/etc/hostname").exists(), "{knobs:?}");
        let errors = s.status()["errors"].to_string();
        assert!(errors.contains("EC2 IMDS"), "{knobs:?}: {errors}");
    }
}

#[test]
fn gzip_and_multipart_user_data_are_decoded() {
    use std::io::Write;
    let mut tree = ImdsServer::default_tree();
    let mime = "Content-Type: multipart/mixed; boundary=\"XYZ\"\nMIME-Version: 1.0\n\n--XYZ\nContent-Type: text/x-shellscript\n\n#!/bin/sh\necho hi\n--XYZ\nContent-Type: text/cloud-config\n\n#cloud-config\nhostname: from-mime\n--XYZ--\n";
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(mime.as_bytes()).unwrap();
    tree.insert("user-data".into(), gz.finish().unwrap());
    let srv = ImdsServer::start(tree, Knobs::default());
    let s = ec2_root(&srv, 10.0);
    let r = s.run_all();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(s.read("/etc/hostname").trim(), "from-mime");
    let scripts = &s.status()["modules"]["scripts"]["details"]["scripts"];
    assert_eq!(scripts[0]["name"], "part-001", "{scripts}");
    assert_eq!(
        scripts[0]["outcome"], "recorded",
        "the sandbox records the script part"
    );
}

/// `ssh-keygen` runs the sandbox recorded (one per key type).
fn keygens(s: &Sandbox) -> usize {
    s.actions_of("run")
        .iter()
        .filter(|a| {
            a["argv"][0]
                .as_str()
                .is_some_and(|p| p.ends_with("ssh-keygen"))
        })
        .count()
}

#[test]
fn before_metadata_modules_run_in_the_local_stage_of_a_new_nitro_instance() {
    let mut tree = ImdsServer::default_tree();
    tree.insert(
        "user-data".into(),
        b"#cloud-config\nhostname: web-1\nssh_genkeytypes: [ed25519]\n".to_vec(),
    );
    let srv = ImdsServer::start(tree, Knobs::default());
    let s = ec2_root(&srv, 10.0);
    s.write("/sys/class/dmi/id/board_asset_tag", format!("{IID}\n"));
    s.write(
        "/etc/stoke/stoke.d/20-early.yaml",
        "modules:\n  ssh-host-keys: {before_metadata: true}\n  hostname: {before_metadata: true}\n",
    );

    let local = s.stoke(&["run", "--stage", "local"]);
    assert_eq!(
        srv.total_requests(),
        0,
        "the local stage never touches the network"
    );
    assert_eq!(s.module_state("ssh-host-keys"), "ok", "{}", local.stderr);
    assert_eq!(
        keygens(&s),
        3,
        "the image's key types: {:?}",
        s.actions_of("run")
    );
    let st = s.status();
    let keys = &st["modules"]["ssh-host-keys"];
    assert_eq!(keys["before_metadata"], true);
    assert!(keys["reason"].as_str().unwrap().contains(IID), "{keys}");
    // hostname needs the metadata: the switch does not apply to it.
    assert_eq!(s.module_state("hostname"), "deferred");
    let reason = st["modules"]["hostname"]["reason"].as_str().unwrap();
    assert!(reason.contains("does not apply"), "{reason}");
    assert!(st["instance_id"].is_null(), "the metadata is still to come");

    let net = s.stoke(&["run", "--stage", "network"]);
    assert_eq!(s.module_state("hostname"), "ok", "{}", net.stderr);
    assert_eq!(s.module_state("ssh-host-keys"), "ok");
    assert_eq!(
        keygens(&s),
        3,
        "per-instance: not again once the metadata says {IID}"
    );
    // The user-data asked for other key types, which came too late: said, not hidden.
    let st = s.status();
    let warnings = st["warnings"].to_string();
    assert!(
        warnings.contains("ssh-host-keys: ran before the metadata"),
        "{warnings}"
    );
    assert!(
        st["modules"]["ssh-host-keys"]["warnings"]
            .to_string()
            .contains("not applied")
    );

    // User-data that leaves the module's keys alone: nothing to say.
    let srv = ImdsServer::happy();
    let q = ec2_root(&srv, 10.0);
    q.write("/sys/class/dmi/id/board_asset_tag", format!("{IID}\n"));
    q.write(
        "/etc/stoke/stoke.d/20-early.yaml",
        "modules:\n  ssh-host-keys: {before_metadata: true}\n  mounts: {before_metadata: true}\n",
    );
    q.stoke(&["run", "--stage", "local"]);
    // mounts runs after disks, which is not early: it waits with it (or it would miss its volumes).
    assert_eq!(q.module_state("mounts"), "deferred");
    let reason = q.status()["modules"]["mounts"]["reason"].to_string();
    assert!(reason.contains("runs after disks"), "{reason}");
    q.stoke(&["run", "--stage", "network"]);
    assert_eq!(q.module_state("ssh-host-keys"), "ok");
    assert_eq!(q.module_state("mounts"), "ok");
    assert!(
        !q.status()["warnings"]
            .to_string()
            .contains("before the metadata"),
        "{}",
        q.status()["warnings"]
    );

    // disks and mounts early, no `volumes:` in the image: mounts does not wait for volumes
    // (it has nothing to wait for); with `volumes:` in the image it would.
    let srv = ImdsServer::happy();
    let v = ec2_root(&srv, 10.0);
    v.write("/sys/class/dmi/id/board_asset_tag", format!("{IID}\n"));
    v.write(
        "/etc/stoke/stoke.d/20-early.yaml",
        "modules:\n  disks: {before_metadata: true}\n  mounts: {before_metadata: true}\n",
    );
    let local = v.stoke(&["run", "--stage", "local"]);
    assert_eq!(v.module_state("mounts"), "ok", "{}", local.stderr);
    assert_eq!(
        v.module_state("volumes"),
        "deferred",
        "it waits, but holds nothing back"
    );
    v.write(
        "/etc/stoke/stoke.d/30-volumes.yaml",
        "volumes: [{volume_id: vol-0123456789abcdef0, filesystem: ext4, mount_point: /data}]\n",
    );
    v.new_boot("boot-2");
    v.stoke(&["run", "--stage", "local"]);
    let reason = v.status()["modules"]["mounts"]["reason"].to_string();
    assert!(reason.contains("runs after volumes"), "{reason}");

    // Without the switch the same instance waits for its metadata, as before.
    let srv = ImdsServer::happy();
    let d = ec2_root(&srv, 10.0);
    d.write("/sys/class/dmi/id/board_asset_tag", format!("{IID}\n"));
    d.stoke(&["run", "--stage", "local"]);
    assert_eq!(d.module_state("ssh-host-keys"), "deferred");
    assert_eq!(keygens(&d), 0);
}

/// `--root` makes no request to this machine's metadata service: only to one the config gives.
#[test]
fn a_sandbox_never_asks_this_machines_metadata_service() {
    let s = Sandbox::new();
    s.write("/sys/class/dmi/id/sys_vendor", "Amazon EC2\n");
    let r = s.run_all();
    assert_eq!(r.code, 2, "{}", r.stderr);
    let errors = s.status()["errors"].to_string();
    assert!(
        errors.contains("does not ask this machine's metadata service"),
        "{errors}"
    );
}

#[test]
fn an_ipv6_only_instance_finds_imds_on_ipv6_and_keeps_it() {
    // 127.0.0.1 stands for 169.254.169.254 and ::1 for fd00:ec2::254; IPv4 is slow here so
    // that the next boot shows which endpoint goes first.
    let v4 = ImdsServer::start(
        ImdsServer::default_tree(),
        Knobs {
            delay: Duration::from_millis(1500),
            ..Knobs::default()
        },
    );
    let v6 = ImdsServer::start_on("[::1]:0", ImdsServer::default_tree(), Knobs::default());
    let s = ec2_root_at(&format!("[\"{}\", \"{}\"]", v4.url(), v6.url()), 10.0);
    let r = s.run_all();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(s.read("/etc/hostname").trim(), "web-1");
    assert_eq!(s.stoke(&["query", "imds-endpoint"]).stdout.trim(), v6.url());
    assert_eq!(v4.requests("/latest/user-data"), 0, "{:?}", v4.counts());
    // One request, or two when a loaded machine made the client retry one.
    let first = v6.requests("/latest/user-data");
    assert!((1..=2).contains(&first), "{:?}", v6.counts());

    // Next boot: the remembered endpoint goes first and answers; IPv4 (slow) serves nothing.
    // (Whether IPv4 is asked at all depends on how fast ::1 answers: not asserted.)
    s.new_boot("boot-2");
    let r = s.run_all();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(v4.requests("/latest/user-data"), 0, "{:?}", v4.counts());
    assert!(
        v6.requests("/latest/user-data") > first,
        "{:?}",
        v6.counts()
    );
    assert_eq!(s.stoke(&["query", "imds-endpoint"]).stdout.trim(), v6.url());
}

#[test]
fn ipv4_only_and_nothing_at_all_within_the_budget() {
    let v4 = ImdsServer::happy();
    let s = ec2_root_at(
        &format!("[\"{}\", \"{}\"]", v4.url(), nobody("[::1]")),
        10.0,
    );
    assert_eq!(s.run_all().code, 0);
    assert_eq!(s.stoke(&["query", "imds-endpoint"]).stdout.trim(), v4.url());

    // Neither answers: one budget for both, and the error names both.
    let (a, b) = (nobody("127.0.0.1"), nobody("[::1]"));
    let s = ec2_root_at(&format!("[\"{a}\", \"{b}\"]"), 1.0);
    s.stoke(&["run", "--stage", "local"]);
    let started = Instant::now();
    s.stoke(&["run", "--stage", "network"]);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "budget 1 s, took {took:?}");
    let errors = s.status()["errors"].to_string();
    assert!(errors.contains(&a) && errors.contains(&b), "{errors}");
    assert_eq!(s.module_state("hostname"), "deferred");
}

fn tagged(role: &str) -> Tree {
    let mut t = ImdsServer::default_tree();
    t.insert("meta-data/tags/instance".into(), b"Name\nrole".to_vec());
    t.insert(
        "meta-data/tags/instance/Name".into(),
        b"web server 1".to_vec(),
    );
    t.insert(
        "meta-data/tags/instance/role".into(),
        role.as_bytes().to_vec(),
    );
    t.insert(
        "user-data".into(),
        b"#cloud-config\nhostname: \"{{ tags.role }}-{{ instance_id }}\"\n".to_vec(),
    );
    t
}

#[test]
fn instance_tags_in_a_hostname_template() {
    let srv = ImdsServer::start(tagged("api"), Knobs::default());
    let s = ec2_root(&srv, 10.0);
    let r = s.run_all();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(s.read("/etc/hostname").trim(), format!("api-{IID}"));
    // One request for the list, one for the tag used; the unused one is not read.
    assert_eq!(srv.requests("/latest/meta-data/tags/instance"), 1);
    assert_eq!(srv.requests("/latest/meta-data/tags/instance/role"), 1);
    assert_eq!(srv.requests("/latest/meta-data/tags/instance/Name"), 0);
    assert_eq!(s.stoke(&["query", "tags.role"]).stdout.trim(), "api");
    let all: serde_json::Value =
        serde_json::from_str(&s.stoke(&["query", "tags"]).stdout).expect("json");
    assert_eq!(all, serde_json::json!({"role": "api"}));
    let q = s.stoke(&["query", "tags.Name"]);
    assert_ne!(q.code, 0);
    assert!(q.stderr.contains("no tag `Name`"), "{}", q.stderr);

    // A reboot reads the tag from the cache in the local stage.
    s.new_boot("boot-2");
    s.write("/sys/class/dmi/id/board_asset_tag", format!("{IID}\n"));
    let local = s.stoke(&["run", "--stage", "local"]);
    assert_eq!(s.module_state("hostname"), "ok", "{}", local.stderr);
}

#[test]
fn a_tag_that_is_no_hostname_label_or_no_tag_at_all_is_said() {
    let srv = ImdsServer::start(tagged("web server"), Knobs::default());
    let s = ec2_root(&srv, 10.0);
    let r = s.run_all();
    assert_ne!(r.code, 0);
    assert_eq!(s.module_state("hostname"), "failed");
    let err = s.status()["modules"]["hostname"]["error"].to_string();
    assert!(
        err.contains("instance tag `role`") && err.contains("web server"),
        "{err}"
    );

    // Tags not enabled for the instance (IMDS answers 404): a warning says so.
    let mut t = tagged("api");
    t.retain(|k, _| !k.starts_with("meta-data/tags"));
    let srv = ImdsServer::start(t, Knobs::default());
    let s = ec2_root(&srv, 10.0);
    s.run_all();
    assert_eq!(s.module_state("hostname"), "failed");
    let warnings = s.status()["warnings"].to_string();
    assert!(
        warnings.contains("`role`") && warnings.contains("tags are off"),
        "{warnings}"
    );
    assert_eq!(srv.requests("/latest/meta-data/tags/instance"), 1);
}
