//! Image lineage: which image layers built this machine, foundation first.
//!
//! Each image layer (`stoke.yaml`, `stoke.d/*.yaml`) may say who it is with `image:`. Maps
//! merge deeply, so the merged configuration would keep only a mix of the layers' `image:`
//! sections: the loader instead records each accepted image layer's section, in layer order,
//! before merging (`Loaded::images`). The build facts a layer cannot know about itself (when
//! it was baked, by which stoke, from which AMI) are recorded by `stoke clean` at the end of
//! the bake in `lineage.json` next to the layers, keyed by layer file name: the user's YAML is
//! never edited.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stoke_api::InputDir;

use crate::config::ImageSection;
use crate::paths::Paths;
use crate::state::lineage::{BuildFacts, Layer};

/// `lineage.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Recorded {
    #[serde(default)]
    layers: BTreeMap<String, BuildFacts>,
}

const FILE: &str = "lineage.json";
const MAX_FILE: u64 = 1024 * 1024;

fn file_name(source: &str) -> String {
    Path::new(source)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| source.to_string())
}

fn read_recorded(config: &InputDir) -> Recorded {
    match config.read(FILE, MAX_FILE) {
        Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(
                "{}: unreadable ({e}); ignored",
                config.shown(FILE).display()
            );
            Recorded::default()
        }),
        Ok(None) => Recorded::default(),
        Err(e) => {
            tracing::warn!("{}: {e}", config.shown(FILE).display());
            Recorded::default()
        }
    }
}

/// The lineage: every image layer with an `image:` section or recorded build facts, in layer
/// order. `images` holds (source name, `image:` value) of the accepted image layers.
pub fn of(config: &InputDir, images: &[(String, serde_json::Value)]) -> Vec<Layer> {
    let recorded = read_recorded(config);
    let layer_files = crate::config::image_sources(config)
        .map(|s| s.into_iter().map(|s| s.name).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut out = Vec::new();
    for source in layer_files {
        let name = file_name(&source);
        let image = images
            .iter()
            .find(|(s, _)| *s == source)
            .and_then(|(_, v)| serde_json::from_value::<ImageSection>(v.clone()).ok());
        let build = recorded.layers.get(&name).cloned();
        if image.is_none() && build.is_none() {
            continue;
        }
        out.push(Layer {
            layer: name,
            image: image.unwrap_or_default(),
            build,
        });
    }
    out
}

/// `stoke clean`: records `facts` for every image layer that has none yet (the layers this
/// bake added; earlier bakes recorded theirs). Returns the layers recorded.
pub fn record(
    config: &InputDir,
    facts: &BuildFacts,
    system: &dyn stoke_api::System,
) -> std::io::Result<Vec<String>> {
    let layers = crate::config::image_sources(config)?;
    if layers.is_empty() {
        return Ok(Vec::new());
    }
    let mut recorded = read_recorded(config);
    let mut new = Vec::new();
    for l in layers {
        let name = file_name(&l.name);
        if !recorded.layers.contains_key(&name) {
            recorded.layers.insert(name.clone(), facts.clone());
            new.push(name);
        }
    }
    if new.is_empty() {
        return Ok(new);
    }
    let json = serde_json::to_vec_pretty(&recorded).map_err(std::io::Error::other)?;
    config.write(FILE, &json, 0o644, system)?;
    Ok(new)
}

/// The facts `stoke clean` can see now. The source AMI only on the host of an EC2 build
/// instance (DMI), asked of IMDS within `budget`; never under `--root`.
pub async fn build_facts(paths: &Paths, imds: &stoke_imds::ImdsConfig) -> BuildFacts {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let source_ami = if paths.root.is_host() && crate::datasource::read_dmi(paths).ec2 {
        source_ami(imds).await
    } else {
        None
    };
    BuildFacts {
        cleaned_at: rfc3339(now),
        stoke_version: env!("CARGO_PKG_VERSION").to_string(),
        source_ami,
    }
}

/// How long `stoke clean` may spend asking IMDS for the AMI: it is a build step.
const AMI_BUDGET: Duration = Duration::from_secs(5);

async fn source_ami(imds: &stoke_imds::ImdsConfig) -> Option<String> {
    let mut cfg = imds.clone();
    cfg.budget = cfg.budget.min(AMI_BUDGET);
    // `connect` races the endpoint's candidates (auto: IPv4 and IPv6) within the budget.
    let ami = async {
        let session = stoke_imds::Session::connect(&cfg, None).await?;
        session
            .within_budget(session.value("meta-data/ami-id"))
            .await
    };
    // Bounded here too, whatever the client does inside.
    let Ok(answer) = tokio::time::timeout(AMI_BUDGET + Duration::from_secs(1), ami).await else {
        tracing::warn!("lineage: no source AMI: IMDS did not answer within {AMI_BUDGET:?}");
        return None;
    };
    match answer {
        Ok(v) => v.filter(|v| v.starts_with("ami-")),
        Err(e) => {
            tracing::warn!("lineage: no source AMI: {e}");
            None
        }
    }
}

/// `2026-12-02T10:16:26Z` from Unix seconds.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = stoke_api::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use stoke_imds::double::{ImdsServer, Knobs, run};

    fn cfg(srv: &ImdsServer, budget: Duration) -> stoke_imds::ImdsConfig {
        stoke_imds::ImdsConfig {
            endpoint: srv.url().into(),
            budget,
            request_timeout: Duration::from_secs(1),
            token_ttl_secs: 21600,
        }
    }

    #[test]
    fn the_source_ami_is_the_build_instances_ami_id() {
        let mut tree = ImdsServer::default_tree();
        tree.insert("meta-data/ami-id".into(), b"ami-0123abcd".to_vec());
        let srv = ImdsServer::start(tree, Knobs::default());
        let ami = run(source_ami(&cfg(&srv, Duration::from_secs(10))));
        assert_eq!(ami.as_deref(), Some("ami-0123abcd"));
    }

    #[test]
    fn a_silent_imds_costs_clean_its_budget_and_no_ami() {
        let srv = ImdsServer::start(
            ImdsServer::default_tree(),
            Knobs {
                hang: true,
                ..Knobs::default()
            },
        );
        let started = std::time::Instant::now();
        let ami = run(source_ami(&cfg(&srv, Duration::from_secs(1))));
        assert_eq!(ami, None);
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn dates_are_utc_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_440_938_160), "2015-08-30T12:36:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn clean_records_only_the_layers_without_facts() {
        let dir = tempfile::tempdir().unwrap();
        let sys = crate::system::Sandbox::new(
            dir.path().join("actions"),
            dir.path().join("console"),
            false,
        );
        std::fs::create_dir_all(dir.path().join("stoke.d")).unwrap();
        std::fs::write(dir.path().join("stoke.d/10-base.yaml"), "{}\n").unwrap();
        let config = stoke_api::InputDir::new(stoke_api::Root::new(dir.path()), "/", dir.path());
        let first = BuildFacts {
            cleaned_at: "2026-01-01T00:00:00Z".into(),
            stoke_version: "0.1.0".into(),
            source_ami: Some("ami-1".into()),
        };
        assert_eq!(record(&config, &first, &sys).unwrap(), vec!["10-base.yaml"]);
        std::fs::write(dir.path().join("stoke.d/50-app.yaml"), "{}\n").unwrap();
        let second = BuildFacts {
            cleaned_at: "2026-02-01T00:00:00Z".into(),
            ..first.clone()
        };
        assert_eq!(record(&config, &second, &sys).unwrap(), vec!["50-app.yaml"]);
        let layers = of(&config, &[]);
        assert_eq!(layers.len(), 2);
        assert_eq!(
            layers[0].build.as_ref(),
            Some(&first),
            "kept from its own bake"
        );
        assert_eq!(layers[1].build.as_ref(), Some(&second));
        assert!(record(&config, &second, &sys).unwrap().is_empty());
    }
}
