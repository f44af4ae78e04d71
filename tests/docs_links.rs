//! Every relative link in the README and the docs points at a file of this repository (the
//! README once sent contributors to ../shared/DESIGN.md, which a clone does not have).

use std::path::{Path, PathBuf};

fn markdown_files(repo: &Path) -> Vec<PathBuf> {
    let mut files = vec![repo.join("README.md")];
    for dir in ["docs", "docs/dev", "packaging", "vm-tests"] {
        if let Ok(entries) = std::fs::read_dir(repo.join(dir)) {
            files.extend(
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "md")),
            );
        }
    }
    files
}

/// `](target)` links, without their `#anchor`.
fn links(text: &str) -> Vec<String> {
    text.split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .map(|t| t.split('#').next().unwrap_or("").trim().to_string())
        .filter(|t| !t.is_empty() && !t.contains("://") && !t.starts_with("mailto:"))
        .collect()
}

#[test]
fn links_are_read_from_markdown() {
    let text = "see [a](docs/a.md#x), [web](https://x.org) and [b](../b.md)";
    assert_eq!(links(text), vec!["docs/a.md", "../b.md"]);
}

#[test]
fn relative_links_resolve_inside_the_repository() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in markdown_files(repo) {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let dir = file.parent().unwrap_or(repo);
        for link in links(&text) {
            checked += 1;
            let target = dir.join(&link);
            let inside = target
                .canonicalize()
                .is_ok_and(|t| t.starts_with(repo.canonicalize().unwrap_or_default()));
            if !inside {
                broken.push(format!("{}: {link}", file.display()));
            }
        }
    }
    assert!(
        checked >= 10,
        "only {checked} links read: is the parser reading them?"
    );
    assert!(
        broken.is_empty(),
        "links to nothing in the repository: {broken:#?}"
    );
}

#[test]
fn the_readme_points_at_the_design_in_the_repository() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    assert!(
        readme.contains("(docs/dev/design.md)"),
        "README must link docs/dev/design.md"
    );
    assert!(
        !readme.contains("../shared"),
        "nothing outside the repository"
    );
}
