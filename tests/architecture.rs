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

/// Non-test source of the engine and the modules: each file's text up to its first
/// `#[cfg(test)]` (test modules close the file by convention), test-only files left out.
fn production_sources() -> Vec<(String, String)> {
    let mut files = Vec::new();
    rust_files(&workspace().join("src"), &mut files);
    rust_files(&workspace().join("modules"), &mut files);
    let mut out = Vec::new();
    for file in files {
        let rel = file
            .strip_prefix(workspace())
            .expect("in workspace")
            .display()
            .to_string();
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let test_only = name == "tests.rs"
            || name.ends_with("_tests.rs")
            || name.starts_with("tests_")
            || rel.contains("/tests/")
            || rel.contains("/examples/")
            || rel.contains("/benches/");
        if test_only {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read source");
        let text = text.split("#[cfg(test)]").next().unwrap_or("").to_string();
        out.push((rel, text));
    }
    out
}

/// Calls that do I/O on the path they are given: fed a `host_path` join, each would follow
/// a symlink under `--root` out of the root.
const IO_CALLS: &[&str] = &[
    "fs::",
    "File::",
    "OpenOptions",
    ".exists()",
    ".is_dir()",
    ".is_file()",
    ".metadata()",
    "canonicalize",
    "read_dir",
    "read_link",
    "atomic_write",
    "read_to_string_opt",
    "statfs",
    "statvfs",
    ".output_log(",
];

/// The `host_path` joins left in production code, per file, and why each is no I/O (or
/// what is still to move to `Root::fs`). A new one fails the test: open through
/// `Root::fs`/`Context::fs`, or add it here with its reason.
const HOST_PATHS: &[(&str, usize, &str)] = &[
    (
        "modules/api/src/context.rs",
        2,
        "the definition and Context's delegate",
    ),
    (
        "modules/api/src/rootfs.rs",
        2,
        "a chown's path for the sandbox's record; the lexical fallback",
    ),
    ("modules/ssh/src/hostkeys.rs", 8, "messages"),
    ("modules/ssh/src/authorized.rs", 2, "messages"),
    ("modules/ssh/src/safefs.rs", 1, "messages"),
    (
        "modules/mounts/src/lib.rs",
        6,
        "blkid argv (stable_spec), messages",
    ),
    (
        "modules/mounts/src/swap.rs",
        12,
        "mkswap/swapon argv and messages",
    ),
    ("modules/disks/src/apply.rs", 2, "mkfs/mdadm argv, messages"),
    ("modules/disks/src/discover.rs", 2, "messages"),
    ("modules/volumes/src/find.rs", 1, "nvme/ebsnvme-id argv"),
    ("modules/volumes/src/lib.rs", 1, "mkfs argv"),
    ("modules/api/src/probe.rs", 1, "blkid argv"),
    (
        "modules/rootfs/src/lib.rs",
        5,
        "growpart/resize argv, messages",
    ),
    ("modules/users/src/passwords.rs", 1, "chpasswd argv"),
    ("modules/users/src/lib.rs", 2, "messages"),
    ("modules/users/src/accounts.rs", 1, "messages"),
    ("modules/system/src/timezone.rs", 2, "messages"),
    (
        "modules/system/src/ca_certs.rs",
        1,
        "update-ca-certificates argv",
    ),
    ("modules/puppet/src/lib.rs", 2, "messages"),
    ("modules/puppet/src/lock.rs", 1, "a message"),
    (
        "modules/api/src/fake.rs",
        2,
        "the test context's state directories (host paths by contract)",
    ),
    (
        "src/paths.rs",
        7,
        "config, seed, state, run and log directories, boot id, DMI: for messages; their files are opened inside the root (Paths::read/write/remove_tree, Paths::config/seed → InputDir, RUN_DIR for the lock)",
    ),
    (
        "src/app/mod.rs",
        1,
        "the metrics file, written through Paths::write",
    ),
    ("src/cli/mod.rs", 1, "read through Paths::read"),
    (
        "src/cli/exec_record.rs",
        1,
        "the result file's name in messages; it is written in its directory opened inside the root",
    ),
];

#[test]
fn no_host_path_join_feeds_io_and_every_one_left_has_a_reason() {
    let mut io = Vec::new();
    let mut over = Vec::new();
    for (rel, text) in production_sources() {
        let mut count = 0;
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            // `resolved_host_path` resolves inside the root first: not a lexical join.
            let code = code.replace("resolved_host_path(", "");
            if !code.contains("host_path(") || code.contains("fn host_path(") {
                continue;
            }
            count += 1;
            if IO_CALLS.iter().any(|c| code.contains(c)) {
                io.push(format!("{rel}:{}: {}", n + 1, line.trim()));
            }
        }
        let allowed = HOST_PATHS
            .iter()
            .find(|(f, _, _)| *f == rel)
            .map_or(0, |(_, n, _)| *n);
        if count > allowed {
            over.push(format!("{rel}: {count} host_path joins, {allowed} allowed"));
        }
    }
    assert!(
        io.is_empty(),
        "I/O through a host_path join (open through Root::fs / Context::fs instead):\n{}",
        io.join("\n")
    );
    assert!(
        over.is_empty(),
        "host_path joins beyond the allowlist in tests/architecture.rs (open through \
         Root::fs, or add the use with its reason: argv or message only):\n{}",
        over.join("\n")
    );
}

#[test]
fn the_host_path_scan_sees_io_on_a_join() {
    let code = "let t = std::fs::read_to_string(ctx.host_path(\"/etc/x\"));";
    assert!(IO_CALLS.iter().any(|c| code.contains(c)) && code.contains("host_path("));
}

/// A module's state directories are host paths: a join of one, opened, would follow a link
/// in a `--root` tree out of it. Modules go through `Context::read_state_in`/`write_state_in`/
/// `remove_state`/`create_state_dir` (and `resolved_state_path` for argv and messages); only
/// Context itself joins, for a test's state directory outside its root.
#[test]
fn no_module_joins_its_state_directory() {
    let mut found = Vec::new();
    for (rel, text) in production_sources() {
        if !rel.starts_with("modules/") || rel == "modules/api/src/context.rs" {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains("state_dir.join(") {
                found.push(format!("{rel}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "a state directory joined (use Context's state helpers):\n{}",
        found.join("\n")
    );
}
