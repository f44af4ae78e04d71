//! For tests that need what a fresh machine may lack (real tools, root, loop devices): skip
//! with a reason everyone sees, or fail when `STOKE_TEST_REQUIRE_ALL=1` (CI and `scripts/test`
//! set it) says that every test must run.

use std::path::Path;

/// Set to `1`: a test that would skip fails instead.
pub const REQUIRE_ALL: &str = "STOKE_TEST_REQUIRE_ALL";

/// True when `STOKE_TEST_REQUIRE_ALL=1`.
pub fn require_all() -> bool {
    std::env::var_os(REQUIRE_ALL).is_some_and(|v| v == "1")
}

/// The running test cannot run here, for `reason`. Without `STOKE_TEST_REQUIRE_ALL=1` it is a
/// skip, written straight to stderr (`eprintln!` would be captured and never shown for a passing
/// test) as one `SKIPPED <test>: <reason>` line that `scripts/test` counts; with it, a panic.
pub fn skip(reason: &str) {
    skip_or_fail(require_all(), reason, &mut std::io::stderr());
}

fn skip_or_fail(fail: bool, reason: &str, out: &mut dyn std::io::Write) {
    let current = std::thread::current();
    let test = current.name().unwrap_or("a test");
    if fail {
        panic!("{test} cannot run here: {reason} ({REQUIRE_ALL}=1 makes every skip a failure)");
    }
    let _ = writeln!(
        out,
        "SKIPPED {test}: {reason} (scripts/test installs what the tests need)"
    );
}

/// Whether `program` is an executable file on `PATH` (how `Command::new` will look for it).
pub fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| {
        Path::new(&dir)
            .join(program)
            .metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// True when every program is on `PATH`; otherwise skips (see [`skip`]) naming the missing ones.
pub fn need_tools(programs: &[&str]) -> bool {
    let missing: Vec<&str> = programs.iter().copied().filter(|p| !on_path(p)).collect();
    if missing.is_empty() {
        return true;
    }
    skip(&format!("not installed: {}", missing.join(", ")));
    false
}

/// True when running as root; otherwise skips saying what root is `for_what`.
pub fn need_root(for_what: &str) -> bool {
    if geteuid() == 0 {
        return true;
    }
    skip(&format!("needs root ({for_what})"));
    false
}

// libc's, always linked: not worth a dependency of the api crate for one call.
unsafe extern "C" {
    safe fn geteuid() -> u32;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_program_every_machine_has_and_not_a_made_up_one() {
        assert!(on_path("sh"));
        assert!(!on_path("stoke-no-such-tool-here"));
    }

    #[test]
    fn without_the_switch_a_skip_is_not_a_failure() {
        let mut out = Vec::new();
        skip_or_fail(false, "a reason", &mut out);
        let line = String::from_utf8_lossy(&out);
        assert!(
            line.starts_with(
                "SKIPPED testing::tests::without_the_switch_a_skip_is_not_a_failure: a reason"
            ),
            "{line}"
        );
    }

    #[test]
    #[should_panic(expected = "cannot run here: a reason (STOKE_TEST_REQUIRE_ALL=1")]
    fn with_the_switch_a_skip_is_a_failure() {
        skip_or_fail(true, "a reason", &mut Vec::new());
    }
}
