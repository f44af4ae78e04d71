//! The image lineage as the status keeps and shows it: which image layers built this machine
//! (made by `app::lineage` from the layers' `image:` sections and `lineage.json`).

use serde::{Deserialize, Serialize};

use crate::config::ImageSection;

/// What `stoke clean` saw when it ended a layer's bake.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BuildFacts {
    /// UTC, RFC 3339.
    pub cleaned_at: String,
    pub stoke_version: String,
    /// The AMI the build instance was launched from (its IMDS `ami-id`): the layer's source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ami: Option<String>,
}

/// One layer of the lineage, as `stoke status` and `stoke query image` show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    /// The layer's file name (`50-app.yaml`).
    pub layer: String,
    #[serde(flatten)]
    pub image: ImageSection,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildFacts>,
}

/// The lineage in lines for `stoke status`: `image: app-web 1.4 <- base 2.0 <- foundation 1`
/// (newest first, as a reader asks "what is this"), then one line per layer.
pub fn render(layers: &[Layer]) -> String {
    if layers.is_empty() {
        return String::new();
    }
    let label = |l: &Layer| match (&l.image.name, &l.image.version) {
        (Some(n), Some(v)) => format!("{n} {v}"),
        (Some(n), None) => n.clone(),
        (None, _) => l.layer.clone(),
    };
    let chain: Vec<String> = layers.iter().rev().map(label).collect();
    let mut out = format!("image: {}\n", chain.join(" <- "));
    for l in layers {
        let mut facts = Vec::new();
        if let Some(a) = &l.image.ancestor {
            facts.push(format!("ancestor {a}"));
        }
        if let Some(b) = &l.image.built_at {
            facts.push(format!("built {b}"));
        }
        if let Some(b) = &l.image.builder {
            facts.push(format!("by {b}"));
        }
        if let Some(b) = &l.build {
            let mut s = format!("cleaned {} by stoke {}", b.cleaned_at, b.stoke_version);
            if let Some(ami) = &b.source_ami {
                s.push_str(&format!(" from {ami}"));
            }
            facts.push(s);
        }
        if !l.image.tags.is_empty() {
            let tags: Vec<String> = l
                .image
                .tags
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            facts.push(format!("tags {}", tags.join(",")));
        }
        out.push_str(&format!("  {}: {}", l.layer, label(l)));
        if !facts.is_empty() {
            out.push_str(&format!(" ({})", facts.join("; ")));
        }
        out.push('\n');
    }
    out
}
