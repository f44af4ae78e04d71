//! cloud-init keys whose meaning stoke once got wrong, through the real binary (sandbox root):
//! each is read as a known key (no "not supported" warning) and does what cloud-init does.

#[path = "support/sandbox.rs"]
mod sandbox;

use sandbox::Sandbox;

/// Every warning in the status, of the engine and of each module.
fn warnings(s: &Sandbox) -> String {
    s.status().to_string()
}

#[test]
fn manage_etc_hosts_false_leaves_hosts_alone_and_the_ssh_console_keys_are_known() {
    let s = Sandbox::nocloud(
        "iid-one",
        "#cloud-config\nhostname: web\nmanage_etc_hosts: false\nssh:\n  emit_keys_to_console: false\n\
         ssh_fp_console_blacklist: [ssh-rsa]\nssh_key_console_blacklist: [ssh-dss]\n\
         no_ssh_fingerprints: true\n",
    );
    let r = s.run_all();
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    assert_eq!(s.read("/etc/hosts"), "127.0.0.1 localhost\n");
    assert_eq!(s.read("/etc/hostname"), "web\n");
    let all = warnings(&s);
    for key in [
        "manage_etc_hosts",
        "`ssh`",
        "ssh_fp_console_blacklist",
        "ssh_key_console_blacklist",
        "no_ssh_fingerprints",
    ] {
        assert!(
            !all.contains(&format!("{key}` is a cloud-init key not supported")),
            "{key}: {all}"
        );
    }
    assert!(!all.contains("not supported by stoke"), "{all}");
}

#[test]
fn manage_etc_hosts_localhost_and_absent() {
    let s = Sandbox::nocloud(
        "iid-one",
        "#cloud-config\nfqdn: web.example.com\nmanage_etc_hosts: localhost\n",
    );
    s.write(
        "/etc/hosts",
        "127.0.0.1 localhost\n127.0.1.1 image-build\n::1 localhost\n",
    );
    let r = s.run_all();
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    assert_eq!(
        s.read("/etc/hosts"),
        "127.0.0.1 localhost\n127.0.1.1 web.example.com web\n::1 localhost\n"
    );

    // Without the key: stoke's block (its documented default), from the metadata's name.
    let s = Sandbox::nocloud("iid-one", "#cloud-config\n{}\n");
    let r = s.run_all();
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    assert_eq!(
        s.read("/etc/hosts"),
        "127.0.0.1 localhost\n# BEGIN stoke hostname\n127.0.1.1 seed-host\n# END stoke hostname\n"
    );
}

#[test]
fn a_bad_manage_etc_hosts_value_is_an_error_with_its_line() {
    let s = Sandbox::nocloud(
        "iid-one",
        "#cloud-config\nhostname: web\nmanage_etc_hosts: sometimes\n",
    );
    let r = s.run_all();
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains(
            "user-data:3:19: manage_etc_hosts: \"sometimes\": expected true, false or \"localhost\""
        ),
        "{}",
        r.stderr
    );
    assert_eq!(
        s.read("/etc/hosts").lines().next(),
        Some("127.0.0.1 localhost")
    );
}
