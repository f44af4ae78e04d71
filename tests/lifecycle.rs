//! lifecycle through the real binary against the Auto Scaling double: the
//! engine gives the module the boot's outcome (a failed check → ABANDON, a
//! clean boot → CONTINUE), and only the launch boot answers the hook.

#[path = "support/sandbox.rs"]
mod sandbox;
#[path = "../modules/lifecycle/tests/support/mod.rs"]
mod support;

use sandbox::Sandbox;
use support::{Double, GROUP, HOOK, INSTANCE, KEY, REGION, SECRET, assert_clean, of};

fn user_data(endpoint: &str, checks: &str) -> String {
    format!(
        "#cloud-config\nlifecycle:\n  hook_name: {HOOK}\n  group_name: {GROUP}\n  endpoint_url: {endpoint}\n  \
         region: {REGION}\n  access_key_id: {KEY}\n  secret_access_key: {SECRET}\n  budget_seconds: 20\n{checks}"
    )
}

fn double() -> Option<Double> {
    match Double::start(0) {
        Ok(d) => Some(d),
        Err(why) => {
            stoke_api::testing::skip(&why);
            None
        }
    }
}

#[test]
fn a_failed_check_abandons_the_launch_and_a_reboot_sends_nothing() {
    let Some(mut d) = double() else { return };
    let s = Sandbox::nocloud(
        INSTANCE,
        &user_data(
            &d.url(),
            "checks:\n  app-config:\n    file: /etc/app/app.conf\n",
        ),
    );
    let r = s.stoke(&["run", "--stage", "all"]);
    assert_eq!(r.code, 1, "the boot is error: {}", r.stderr);
    assert_eq!(s.module_state("checks"), "failed");
    assert_eq!(s.module_state("lifecycle"), "ok");
    let events = d.settle();
    assert_clean(&events);
    let done = of(&events, "CompleteLifecycleAction");
    assert_eq!(done.len(), 1, "{events:?}");
    assert_eq!(done[0]["params"]["LifecycleActionResult"], "ABANDON");
    let summary = s.status()["modules"]["lifecycle"]["summary"].to_string();
    assert!(summary.contains("checks"), "{summary}");

    // The next boot of the same instance, now healthy: the hook was answered at launch.
    s.write("/etc/app/app.conf", "ok\n");
    s.new_boot("boot-2");
    let r = s.stoke(&["run", "--stage", "all"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let summary = s.status()["modules"]["lifecycle"]["summary"].to_string();
    assert!(summary.contains("not the launch boot"), "{summary}");
    let events = d.settle();
    assert_eq!(
        of(&events, "CompleteLifecycleAction").len(),
        1,
        "{events:?}"
    );
}

#[test]
fn a_clean_boot_continues() {
    let Some(mut d) = double() else { return };
    let s = Sandbox::nocloud(INSTANCE, &user_data(&d.url(), ""));
    let r = s.stoke(&["run", "--stage", "all"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let events = d.settle();
    assert_clean(&events);
    let done = of(&events, "CompleteLifecycleAction");
    assert_eq!(done.len(), 1, "{events:?}");
    assert_eq!(done[0]["params"]["LifecycleActionResult"], "CONTINUE");
}
