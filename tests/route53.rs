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
