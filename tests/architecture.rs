//! The shape the design promises (docs/dev/design.md): a module crate reaches the world only
//! through stoke-api (and the shared library crates), never through another module crate;
//! module crates hold no unsafe code; modules exchange data through stoke-api's typed outputs.

use std::path::Path;

/// Library crates a module crate may use: no `Module` lives in them.
const LIBRARIES: &[&str] = &["stoke-api", "stoke-imds", "stoke-aws"];

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The `stoke-*` names in a Cargo.toml's `[dependencies]` section (not dev-dependencies).
fn stoke_dependencies(manifest: &str) -> Vec<String> {
    let mut in_deps = false;
    let mut out = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps
            && let Some((name, _)) = line.split_once('=')
            && name.trim().starts_with("stoke-")
        {
            out.push(name.trim().to_string());
        }
    }
    out
}

fn module_crates() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(workspace().join("modules")).expect("modules/") {
        let dir = entry.expect("entry").path();
        let Ok(lib) = std::fs::read_to_string(dir.join("src/lib.rs")) else {
            continue;
        };
        if !lib.contains("pub fn modules()") {
            continue;
        }
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("Cargo.toml");
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        out.push((name, manifest, lib));
    }
    out.sort();
    out
}

#[test]
fn module_crates_reach_the_world_only_through_the_libraries() {
    let crates = module_crates();
    assert!(crates.len() >= 10, "found {} module crates", crates.len());
    for (name, manifest, _) in &crates {
        for dep in stoke_dependencies(manifest) {
            assert!(
                LIBRARIES.contains(&dep.as_str()),
                "modules/{name} depends on {dep}: a module crate may use only {LIBRARIES:?} \
                 (share data through stoke_api::outputs instead)"
            );
        }
    }
}

#[test]
fn module_crates_forbid_unsafe_code() {
    for (name, _, lib) in module_crates() {
        assert!(
            lib.contains("#![forbid(unsafe_code)]"),
            "modules/{name}/src/lib.rs lacks #![forbid(unsafe_code)]"
        );
    }
}

#[test]
fn the_dependency_reader_sees_only_real_dependencies() {
    let manifest = "[package]\nname = \"x\"\n[dependencies]\nstoke-api = { workspace = true }\n\
                    serde = \"1\"\n[dev-dependencies]\nstoke-disks = { path = \"../disks\" }\n";
    assert_eq!(stoke_dependencies(manifest), ["stoke-api"]);
}
