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

/// The agent's parts (top-level modules of `src/`) and the parts each may import
/// (`crate::<part>`): cli → app → runner → {config, datasource, state} → stoke-api, with
/// `paths` and `system` as leaves. Test code inside a part is not counted.
const PARTS: &[(&str, &[&str])] = &[
    ("main", &["cli"]),
    ("cli", &["app", "config", "state", "paths"]),
    (
        "app",
        &["runner", "config", "datasource", "state", "paths", "system"],
    ),
    ("runner", &["config", "state", "paths"]),
    ("datasource", &["config", "paths"]),
    ("state", &["config", "paths"]),
    ("config", &[]),
    ("paths", &[]),
    ("system", &[]),
];

/// Every `crate::<part>` a source file names outside its `#[cfg(test)]` module.
fn crate_imports(text: &str) -> Vec<String> {
    let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    let mut out = Vec::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let part: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !part.is_empty() {
                out.push(part);
            }
        }
        // `use crate::{a, b::c}` names several parts at once.
        if let Some(group) = line.strip_prefix("use crate::{") {
            for item in group.split(',') {
                let part: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !part.is_empty() {
                    out.push(part);
                }
            }
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_agents_parts_import_only_in_the_allowed_direction() {
    let src = workspace().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut seen_parts = std::collections::BTreeSet::new();
    let mut wrong = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let part = first.trim_end_matches(".rs").to_string();
        let Some((_, allowed)) = PARTS.iter().find(|(p, _)| *p == part) else {
            panic!("src/{} belongs to no part: add it to PARTS", rel.display());
        };
        seen_parts.insert(part.clone());
        let text = std::fs::read_to_string(file).unwrap();
        for import in crate_imports(&text) {
            if import != part && !allowed.contains(&import.as_str()) {
                wrong.push(format!("src/{}: {part} → {import}", rel.display()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the direction:\n{}",
        wrong.join("\n")
    );
    assert_eq!(seen_parts.len(), PARTS.len(), "parts found: {seen_parts:?}");
}

#[test]
fn the_import_scan_sees_what_it_must() {
    let text = "use crate::config::Loaded;\nuse crate::{runner::Instance, state};\n\
                fn f() { crate::datasource::x(); }\n// crate::cli in a comment\n\
                #[cfg(test)]\nmod tests { use crate::system; }\n";
    assert_eq!(
        crate_imports(text),
        vec!["config", "runner", "state", "datasource"]
    );
}
