//! route53 through the real binary against moto_server: register at boot,
//! deregister at `stoke shutdown`, register again at the next boot.

#[path = "support/sandbox.rs"]
mod sandbox;
#[path = "../modules/route53/tests/support/mod.rs"]
mod support;

use sandbox::Sandbox;
use support::moto::Moto;

fn user_data(endpoint: &str) -> String {
    format!(
        "#cloud-config\nhostname: web-1\nroute53:\n  zone_name: example.com\n  endpoint_url: {endpoint}\n  region: us-east-1\n  access_key_id: testing\n  secret_access_key: testing\n  ttl: 60\n  deregister_on_shutdown: true\n  budget_seconds: 20\n"
    )
}

#[test]
fn boot_registers_shutdown_deregisters_next_boot_registers_again() {
    let moto = match Moto::start() {
        Ok(m) => m,
        Err(why) => {
            stoke_api::testing::skip(&why);
            return;
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let admin = support::admin_client(&moto.url());
    let zone = rt.block_on(support::create_zone(&admin, "example.com"));
    let a_records = || rt.block_on(support::records(&admin, &zone, "web-1.example.com.", "A"));

    let s = Sandbox::nocloud("iid-one", &user_data(&moto.url()));
    let r = s.stoke(&["run", "--stage", "all"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(a_records(), vec![(60, vec!["10.0.0.7".to_string()])]);
    assert_eq!(s.module_state("route53"), "ok");
    assert_eq!(s.status()["modules"]["route53"]["frequency"], "per-boot");

    let down = s.stoke(&["shutdown"]);
    assert_eq!(down.code, 0, "{}", down.stderr);
    assert!(a_records().is_empty(), "deregistered at shutdown");

    s.new_boot("boot-2");
    assert_eq!(s.stoke(&["run", "--stage", "all"]).code, 0);
    assert_eq!(a_records().len(), 1, "a reboot registers again");
}

/// An IPv6-only EC2 instance with several network cards (IMDS lists the MACs in no useful
/// order): route53 registers A and AAAA of the primary interface (network-card 0,
/// device-number 0), with the instance profile's credentials from the IPv6 endpoint the
/// datasource found.
#[test]
fn ipv6_only_several_network_cards_a_and_aaaa_of_the_primary_interface() {
    use stoke_imds::double::{ImdsServer, Knobs, nobody};
    let moto = match Moto::start() {
        Ok(m) => m,
        Err(why) => {
            stoke_api::testing::skip(&why);
            return;
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let admin = support::admin_client(&moto.url());
    let zone = rt.block_on(support::create_zone(&admin, "example.com"));
    let records =
        |kind: &str| rt.block_on(support::records(&admin, &zone, "web-1.example.com.", kind));

    let mut tree = ImdsServer::multi_nic_tree();
    tree.insert(
        "meta-data/iam/security-credentials/stoke-role".into(),
        br#"{"Code":"Success","Type":"AWS-HMAC","AccessKeyId":"ASIAEXAMPLE","SecretAccessKey":"s3cr3t","Token":"sess","Expiration":"2999-01-01T00:00:00Z"}"#.to_vec(),
    );
    tree.insert(
        "user-data".into(),
        format!(
            "#cloud-config\nhostname: web-1\nroute53:\n  zone_name: example.com\n  endpoint_url: {}\n  region: us-east-1\n  record_types: [A, AAAA]\n  budget_seconds: 20\n",
            moto.url()
        )
        .into_bytes(),
    );
    let v6 = ImdsServer::start_on("[::1]:0", tree, Knobs::default());
    // Nothing answers on the IPv4 candidate.
    let v4 = nobody("127.0.0.1");
    let s = Sandbox::new();
    s.write("/sys/class/dmi/id/sys_vendor", "Amazon EC2\n");
    s.write(
        "/etc/stoke/stoke.yaml",
        format!(
            "imds:\n  endpoint: [\"{v4}\", \"{}\"]\n  budget_seconds: 10\nmodules:\n  ssh-authorized-keys: {{enabled: false}}\n",
            v6.url()
        ),
    );
    let aws = [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE",
        "AWS_EC2_METADATA_DISABLED",
    ];
    let r = s.stoke_without(&["run", "--stage", "all"], &aws);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(s.module_state("route53"), "ok");
    assert_eq!(records("A"), vec![(60, vec!["10.1.2.30".to_string()])]);
    assert_eq!(
        records("AAAA"),
        vec![(60, vec!["2600:1f18:aaaa:bbbb::30".to_string()])]
    );
    // The credentials came from the endpoint the datasource chose.
    assert_eq!(
        v6.requests("/latest/meta-data/iam/security-credentials/stoke-role"),
        1,
        "{:?}",
        v6.counts()
    );
}
