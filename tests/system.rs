//! The system modules (docs/system.md) through the real `stoke` binary against a
//! sandbox root: what each writes, what commands it records, and bad input failing
//! the module with the entry named and nothing half-made.

#[path = "support/sandbox.rs"]
mod sandbox;

use sandbox::Sandbox;

const DEBIAN: &str = "ID=debian\nVERSION_CODENAME=bookworm\n";
const RHEL: &str = "ID=\"rhel\"\nID_LIKE=\"fedora\"\n";
const TEST_CA: &str = include_str!("fixtures/test-ca.pem");
const PGP_KEY: &str =
    "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZabc\n=abcd\n-----END PGP PUBLIC KEY BLOCK-----\n";

/// Every recorded command, argv joined by spaces, with the sandbox's path prefix removed.
fn commands(s: &Sandbox) -> Vec<String> {
    let root = s.root().display().to_string();
    s.actions_of("run")
        .iter()
        .map(|a| {
            a["argv"]
                .as_array()
                .map(|v| {
                    v.iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default()
                .replace(&root, "")
        })
        .collect()
}

fn errors(s: &Sandbox) -> String {
    s.status()["errors"].to_string()
}

fn module_error(s: &Sandbox, name: &str) -> String {
    let m = &s.status()["modules"][name];
    format!("{} {} {}", m["reason"], m["error"], errors(s))
}

/// The host's real zoneinfo files, copied into the root.
fn copy_zone(s: &Sandbox, zone: &str) {
    let data =
        std::fs::read(format!("/usr/share/zoneinfo/{zone}")).expect("host zoneinfo (tzdata)");
    s.write(&format!("/usr/share/zoneinfo/{zone}"), data);
}

#[test]
fn timezone_links_localtime_into_the_roots_zoneinfo_and_writes_etc_timezone() {
    let s = Sandbox::nocloud("iid-tz", "#cloud-config\ntimezone: Europe/Paris\n");
    s.write("/etc/os-release", DEBIAN);
    copy_zone(&s, "Europe/Paris");
    copy_zone(&s, "UTC");
    s.write("/etc/localtime", "old");
    let r = s.run_all();
    assert_eq!(
        s.module_state("timezone"),
        "ok",
        "{} {}",
        r.stderr,
        errors(&s)
    );
    assert_eq!(
        std::fs::read_link(s.path("/etc/localtime")).expect("a link"),
        std::path::Path::new("../usr/share/zoneinfo/Europe/Paris")
    );
    // The link resolves, inside the root, to the real TZif file.
    let resolved = std::fs::read(s.path("/etc/localtime")).expect("resolves");
    assert!(resolved.starts_with(b"TZif"));
    assert_eq!(s.read("/etc/timezone"), "Europe/Paris\n");
}

#[test]
fn unknown_timezone_fails_naming_it_and_changes_nothing() {
    for (zone, why) in [
        ("Europe/Atlantis", "unknown zone"),
        ("../../etc/passwd", "not a zone name"),
    ] {
        let s = Sandbox::nocloud("iid-tz", &format!("#cloud-config\ntimezone: {zone}\n"));
        s.write("/etc/os-release", DEBIAN);
        copy_zone(&s, "UTC");
        s.write("/etc/localtime", "old");
        s.run_all();
        assert_eq!(s.module_state("timezone"), "failed");
        let e = module_error(&s, "timezone");
        assert!(e.contains(zone) && e.contains(why), "{e}");
        assert_eq!(s.read("/etc/localtime"), "old", "untouched");
        assert!(!s.path("/etc/timezone").exists());
    }
}

#[test]
fn final_message_goes_to_the_console_with_cloud_init_and_stoke_variables() {
    let s = Sandbox::nocloud(
        "iid-fm",
        "#cloud-config\nfinal_message: \"done $VERSION on ${DATASOURCE} up $UPTIME s, host {{ hostname }}, $NOTAVAR\"\n",
    );
    s.write("/proc/uptime", "123.45 200.00\n");
    let r = s.run_all();
    assert_eq!(s.module_state("final-message"), "ok", "{}", r.stderr);
    let console = s.read("/run/stoke/console.log");
    let want = format!(
        "done {} on nocloud up 123.45 s, host seed-host, $NOTAVAR",
        env!("CARGO_PKG_VERSION")
    );
    assert!(console.contains(&want), "{console}");
    assert_eq!(s.status()["modules"]["final-message"]["summary"], want);
}

#[test]
fn default_final_message_has_a_timestamp() {
    let s = Sandbox::nocloud("iid-fm", "#cloud-config\n{}\n");
    s.run_all();
    let console = s.read("/run/stoke/console.log");
    let line = console
        .lines()
        .find(|l| l.starts_with("stoke v. "))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.contains(" finished at ") && line.contains(" +0000. Datasource nocloud."),
        "{console}"
    );
}

#[test]
fn ca_certs_writes_each_certificate_and_runs_update_ca_certificates_on_the_root() {
    let two = format!("{TEST_CA}{TEST_CA}");
    let user_data = format!(
        "#cloud-config\nca_certs:\n  remove_defaults: true\n  trusted:\n  - |\n{}  - |\n{}",
        indent(TEST_CA),
        indent(&two)
    );
    let s = Sandbox::nocloud("iid-ca", &user_data);
    s.write("/etc/os-release", DEBIAN);
    s.write(
        "/etc/ca-certificates.conf",
        "# comment\nmozilla/A.crt\n!mozilla/B.crt\n",
    );
    // Left by an earlier configuration with more certificates: removed.
    s.write(
        "/usr/local/share/ca-certificates/stoke-ca-cert-9.crt",
        "stale",
    );
    let r = s.run_all();
    assert_eq!(
        s.module_state("ca-certs"),
        "ok",
        "{} {}",
        r.stderr,
        errors(&s)
    );
    for n in 1..=3 {
        let pem = s.read(&format!(
            "/usr/local/share/ca-certificates/stoke-ca-cert-{n}.crt"
        ));
        assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 1, "{n}: {pem}");
        assert_eq!(
            pem.trim(),
            TEST_CA.trim(),
            "{n}: the same certificate, re-encoded"
        );
    }
    assert!(
        !s.path("/usr/local/share/ca-certificates/stoke-ca-cert-9.crt")
            .exists()
    );
    assert_eq!(
        s.read("/etc/ca-certificates.conf"),
        "# comment\n!mozilla/A.crt\n!mozilla/B.crt\n",
        "defaults deselected"
    );
    let cmds = commands(&s);
    assert!(
        cmds.contains(
            &"update-ca-certificates --fresh --certsconf /etc/ca-certificates.conf \
              --certsdir /usr/share/ca-certificates --localcertsdir /usr/local/share/ca-certificates \
              --etccertsdir /etc/ssl/certs --hooksdir /etc/ca-certificates/update.d"
                .to_string()
        ),
        "{cmds:?}"
    );
}

#[test]
fn ca_certs_on_the_rhel_family_use_the_anchors_and_update_ca_trust() {
    let user_data = format!(
        "#cloud-config\nca_certs:\n  trusted:\n  - |\n{}",
        indent(TEST_CA)
    );
    let s = Sandbox::nocloud("iid-ca", &user_data);
    s.write("/etc/os-release", RHEL);
    s.run_all();
    assert_eq!(s.module_state("ca-certs"), "ok", "{}", errors(&s));
    assert!(
        s.read("/etc/pki/ca-trust/source/anchors/stoke-ca-cert-1.crt")
            .contains("BEGIN CERTIFICATE")
    );
    assert!(commands(&s).contains(&"update-ca-trust".to_string()));
}

#[test]
fn a_pem_that_is_not_a_certificate_fails_naming_it_and_nothing_is_written() {
    let bad = "-----BEGIN CERTIFICATE-----\nTm90IGEgY2VydGlmaWNhdGUgYXQgYWxs\n-----END CERTIFICATE-----\n";
    for (entry, why) in [
        (bad, "not an X.509 certificate"),
        ("just text\n", "no `-----BEGIN CERTIFICATE-----`"),
    ] {
        let user_data = format!(
            "#cloud-config\nca_certs:\n  trusted:\n  - |\n{}  - |\n{}",
            indent(TEST_CA),
            indent(entry)
        );
        let s = Sandbox::nocloud("iid-ca", &user_data);
        s.write("/etc/os-release", DEBIAN);
        s.run_all();
        assert_eq!(s.module_state("ca-certs"), "failed");
        let e = module_error(&s, "ca-certs");
        assert!(e.contains("ca_certs.trusted[1]") && e.contains(why), "{e}");
        assert!(
            !s.path("/usr/local/share/ca-certificates").exists(),
            "nothing half-made"
        );
        assert!(!commands(&s).iter().any(|c| c.contains("update-ca")));
    }
}

#[test]
fn packages_with_an_apt_source_and_inline_key() {
    let user_data = format!(
        "#cloud-config\n\
         package_update: true\n\
         package_upgrade: true\n\
         packages: [htop, [curl, '7.88.1-10'], {{apt: [jq], yum: [not-on-debian]}}]\n\
         package_manager: {{timeout_seconds: 900}}\n\
         apt:\n  sources:\n    internal:\n      source: 'deb [signed-by=$KEY_FILE] http://repo.example/debian $RELEASE main'\n      key: |\n{}\
         \n    extra:\n      filename: internal\n      source: 'deb http://repo.example/extra $RELEASE main'\n",
        indent_by(PGP_KEY, 8)
    );
    let s = Sandbox::nocloud("iid-pkg", &user_data);
    s.write("/etc/os-release", DEBIAN);
    let r = s.stoke(&["run", "--stage", "local"]);
    s.stoke(&["run", "--stage", "network"]);
    assert_eq!(
        s.module_state("apt-sources"),
        "ok",
        "{} {}",
        r.stderr,
        errors(&s)
    );
    assert_eq!(
        s.read("/etc/apt/sources.list.d/internal.list"),
        "# Written by stoke from user-data (apt.sources)\n\
         deb http://repo.example/extra bookworm main\n\
         deb [signed-by=/etc/apt/keyrings/stoke-internal.asc] http://repo.example/debian bookworm main\n"
    );
    assert_eq!(s.read("/etc/apt/keyrings/stoke-internal.asc"), PGP_KEY);
    assert!(
        !commands(&s).iter().any(|c| c.starts_with("apt-get")),
        "not before the final stage"
    );
    s.stoke(&["run", "--stage", "final"]);
    assert_eq!(s.module_state("packages"), "ok", "{}", errors(&s));
    let apt: Vec<String> = commands(&s)
        .into_iter()
        .filter(|c| c.starts_with("apt-get"))
        .collect();
    let base = "apt-get -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confold -o Dpkg::Options::=--force-confdef --assume-yes --quiet";
    assert_eq!(
        apt,
        vec![
            format!("{base} update"),
            format!("{base} dist-upgrade"),
            format!("{base} install htop curl=7.88.1-10 jq"),
        ]
    );
    let p = &s.status()["modules"]["packages"];
    assert!(
        p["summary"]
            .as_str()
            .is_some_and(|x| x.starts_with("recorded, not run")),
        "{p}"
    );
    // Per instance: not again at the next boot.
    s.new_boot("boot-2");
    s.run_all();
    assert_eq!(
        commands(&s)
            .iter()
            .filter(|c| c.starts_with("apt-get"))
            .count(),
        3
    );
}

#[test]
fn packages_on_rhel_use_dnf_and_yum_repos_get_inline_keys() {
    let user_data = format!(
        "#cloud-config\npackages: [htop, [nginx, '1.24'], {{apt: [apt-only], dnf: [jq]}}]\n\
         yum_repos:\n  internal:\n    baseurl: http://repo.example/el9\n    enabled: true\n    gpgcheck: true\n    gpgkey: |\n{}",
        indent_by(PGP_KEY, 6)
    );
    let s = Sandbox::nocloud("iid-rpm", &user_data);
    s.write("/etc/os-release", RHEL);
    s.write("/usr/bin/dnf", "");
    s.run_all();
    assert_eq!(s.module_state("yum-repos"), "ok", "{}", errors(&s));
    assert_eq!(
        s.read("/etc/yum.repos.d/internal.repo"),
        "# Written by stoke from user-data (yum_repos)\n[internal]\nname=internal\n\
         baseurl=http://repo.example/el9\nenabled=1\ngpgcheck=1\n\
         gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-stoke-internal\n"
    );
    assert_eq!(
        s.read("/etc/pki/rpm-gpg/RPM-GPG-KEY-stoke-internal"),
        PGP_KEY
    );
    let dnf: Vec<String> = commands(&s)
        .into_iter()
        .filter(|c| c.starts_with("dnf"))
        .collect();
    assert_eq!(
        dnf,
        vec!["dnf --assumeyes install htop nginx-1.24 jq".to_string()]
    );
}

#[test]
fn bad_package_and_source_entries_fail_naming_them() {
    let s = Sandbox::nocloud(
        "iid-bad",
        "#cloud-config\npackages: [htop, '--allow-unauthenticated']\n\
         apt:\n  sources:\n    ppa:\n      source: 'ppa:someone/thing'\n\
         yum_repos:\n  nourl:\n    name: x\n",
    );
    s.write("/etc/os-release", DEBIAN);
    s.run_all();
    for (module, want) in [
        ("packages", "packages[1]"),
        ("apt-sources", "apt.sources.ppa"),
        ("yum-repos", "yum_repos.nourl"),
    ] {
        assert_eq!(s.module_state(module), "failed", "{module}");
        let e = module_error(&s, module);
        assert!(e.contains(want), "{module}: {e}");
    }
    assert!(!commands(&s).iter().any(|c| c.starts_with("apt-get")));
    assert!(!s.path("/etc/apt/sources.list.d").exists());
    assert!(!s.path("/etc/yum.repos.d").exists());
}

#[test]
fn ntp_adds_a_chrony_sources_drop_in_and_restarts_only_a_running_client() {
    let s = Sandbox::nocloud(
        "iid-ntp",
        "#cloud-config\nntp:\n  servers: [169.254.169.123]\n  pools: [2.pool.ntp.org]\n",
    );
    s.write("/etc/os-release", DEBIAN);
    let conf = "pool 2.debian.pool.ntp.org iburst\nsourcedir /run/chrony-dhcp\nsourcedir /etc/chrony/sources.d\nconfdir /etc/chrony/conf.d\n";
    s.write("/etc/chrony/chrony.conf", conf);
    s.run_all();
    assert_eq!(s.module_state("ntp"), "ok", "{}", errors(&s));
    assert_eq!(
        s.read("/etc/chrony/sources.d/stoke.sources"),
        "# Written by stoke from user-data (ntp)\nserver 169.254.169.123 iburst\npool 2.pool.ntp.org iburst\n"
    );
    assert_eq!(
        s.read("/etc/chrony/chrony.conf"),
        conf,
        "the image's file untouched"
    );
    assert!(commands(&s).contains(&"systemctl try-restart chrony.service".to_string()));
}

#[test]
fn ntp_timesyncd_drop_in_and_no_servers_is_not_a_silent_default() {
    let s = Sandbox::nocloud(
        "iid-ntp",
        "#cloud-config\nntp:\n  servers: [time.example]\n",
    );
    s.write("/usr/lib/systemd/systemd-timesyncd", "");
    s.run_all();
    assert_eq!(s.module_state("ntp"), "ok", "{}", errors(&s));
    assert_eq!(
        s.read("/etc/systemd/timesyncd.conf.d/stoke.conf"),
        "# Written by stoke from user-data (ntp)\n[Time]\nNTP=time.example\n"
    );
    assert!(commands(&s).contains(&"systemctl try-restart systemd-timesyncd.service".to_string()));

    let s = Sandbox::nocloud("iid-ntp", "#cloud-config\nntp: {enabled: true}\n");
    s.write("/usr/lib/systemd/systemd-timesyncd", "");
    s.run_all();
    assert_eq!(s.module_state("ntp"), "ok");
    assert!(!s.path("/etc/systemd/timesyncd.conf.d").exists());
    assert!(!commands(&s).iter().any(|c| c.contains("try-restart")));

    let s = Sandbox::nocloud(
        "iid-ntp",
        "#cloud-config\nntp: {ntp_client: ntpd, servers: [a.example]}\n",
    );
    s.run_all();
    assert_eq!(s.module_state("ntp"), "failed");
    assert!(module_error(&s, "ntp").contains("ntp_client `ntpd`"));
}

#[test]
fn power_state_is_handed_to_systemd_after_stoke_target() {
    let s = Sandbox::nocloud(
        "iid-pw",
        "#cloud-config\npower_state:\n  mode: reboot\n  delay: '+5'\n  message: \"Bye, it's time\"\n  timeout: 45\n  condition: test -f /etc/ready\n",
    );
    s.write("/run/systemd/system/.keep", "");
    s.stoke(&["run", "--stage", "local"]);
    s.stoke(&["run", "--stage", "network"]);
    assert!(
        !commands(&s).iter().any(|c| c.starts_with("systemd-run")),
        "not before the final stage"
    );
    s.stoke(&["run", "--stage", "final"]);
    assert_eq!(s.module_state("power-state"), "ok", "{}", errors(&s));
    let run: Vec<String> = commands(&s)
        .into_iter()
        .filter(|c| c.starts_with("systemd-run"))
        .collect();
    assert_eq!(
        run,
        vec![
            "systemd-run --unit=stoke-power-state --description=stoke: power_state (reboot) --collect \
             --no-block --property=After=stoke.target --service-type=oneshot \
             --property=TimeoutStartSec=645 -- /bin/sh /run/stoke/stoke-power-state.sh"
                .to_string()
        ]
    );
    let script = s.read("/run/stoke/stoke-power-state.sh");
    assert!(script.contains("status --wait --timeout 45"), "{script}");
    assert!(
        script.contains("/bin/sh -c 'test -f /etc/ready'\nrc=$?"),
        "{script}"
    );
    assert!(
        script.ends_with("exec shutdown -r +5 'Bye, it'\\''s time'\n"),
        "{script}"
    );
    // The script really runs in sh: the quoting holds.
    let out = std::process::Command::new("sh")
        .arg("-n")
        .arg(s.path("/run/stoke/stoke-power-state.sh"))
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn power_state_condition_false_or_bad_delay() {
    let s = Sandbox::nocloud(
        "iid-pw",
        "#cloud-config\npower_state: {mode: poweroff, condition: false}\n",
    );
    s.run_all();
    assert_eq!(s.module_state("power-state"), "ok");
    assert!(
        !commands(&s)
            .iter()
            .any(|c| c.contains("systemd-run") || c.contains("shutdown"))
    );
    assert!(s.actions_of("spawn_detached").is_empty());

    let s = Sandbox::nocloud(
        "iid-pw",
        "#cloud-config\npower_state: {mode: halt, delay: soon}\n",
    );
    s.run_all();
    assert_eq!(s.module_state("power-state"), "failed");
    assert!(module_error(&s, "power-state").contains("power_state.delay `soon`"));

    let s = Sandbox::nocloud("iid-pw", "#cloud-config\npower_state: {mode: explode}\n");
    s.run_all();
    assert!(errors(&s).contains("explode"), "{}", errors(&s));
}

fn indent(text: &str) -> String {
    indent_by(text, 4)
}

fn indent_by(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_string()
            } else {
                format!("{pad}{l}\n")
            }
        })
        .collect()
}
