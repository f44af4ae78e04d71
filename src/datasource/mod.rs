//! Where the instance's identity and user-data come from.
//!
//! Detection is local (DMI files, the seed directory): no boot waits on a
//! network probe. The local stage never touches the network: EC2 metadata is
//! cached per instance, and on a reboot of the same Nitro instance
//! (`board_asset_tag` = instance id) the cache is used at once.

pub mod ec2;
pub mod jinja;
mod nocloud;
pub mod userdata;
mod volume_label;

use std::path::Path;

use serde::{Deserialize, Serialize};
use stoke_api::{
    Frequency, InstanceData, InstanceId, ScriptKind, Stage, System, UserScript, read_to_string_opt,
    sha256_hex,
};

use crate::config::{DatasourceKind, EngineConfig};
use crate::paths::Paths;

/// Metadata and raw user-data of this instance.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    pub instance: InstanceData,
    pub user_data: Option<Vec<u8>>,
    pub vendor_data: Option<Vec<u8>>,
    pub from_cache: bool,
    /// The IMDS session that fetched this (EC2, this stage): what the configuration turns out
    /// to use beyond the base metadata (tags, interfaces) is fetched with it.
    pub imds: Option<Live>,
}

/// A live IMDS session; not part of what was found (equal whatever it is).
#[derive(Clone)]
pub struct Live(pub std::sync::Arc<stoke_imds::Session>);

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Live({})", self.0.endpoint())
    }
}

impl PartialEq for Live {
    fn eq(&self, _: &Live) -> bool {
        true
    }
}

/// What the datasource answered.
#[derive(Debug)]
pub enum Answer {
    Found(Box<Found>),
    /// Metadata exists but cannot be had in this stage (brand-new EC2 instance, local stage).
    /// The instance id, when DMI gives it (Nitro).
    Pending {
        why: String,
        instance_id: Option<InstanceId>,
    },
    /// No datasource applies (a bare machine, a demo root without seed).
    Nothing(String),
    /// A datasource applies but failed; the stage goes on without metadata.
    Failed(String),
}

/// What DMI says about the platform.
#[derive(Debug, Default)]
pub struct Dmi {
    pub ec2: bool,
    /// On Nitro, the instance id.
    pub asset_tag: Option<InstanceId>,
}

pub fn read_dmi(paths: &Paths) -> Dmi {
    let field = |f: &str| {
        read_to_string_opt(&paths.dmi(f))
            .ok()
            .flatten()
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let vendor = field("sys_vendor");
    let board = field("board_vendor");
    let uuid = field("product_uuid").to_ascii_lowercase();
    let ec2 = vendor == "Amazon EC2" || board == "Amazon EC2" || uuid.starts_with("ec2");
    let tag = field("board_asset_tag");
    Dmi {
        ec2,
        asset_tag: (ec2 && tag.starts_with("i-"))
            .then(|| InstanceId::new(&tag).ok())
            .flatten(),
    }
}

/// The instance ids stoke knew before this stage asked: the caller reads them from state.
#[derive(Clone, Copy, Debug, Default)]
pub struct KnownIds<'a> {
    /// Found by an earlier stage of this boot: the final stage reuses the network stage's
    /// metadata instead of asking again.
    pub this_boot: Option<&'a InstanceId>,
    /// The last instance's (`/var/lib/stoke/instance-id`): its cache names the metadata
    /// endpoint that answered last time.
    pub last: Option<&'a InstanceId>,
}

/// Asks the datasource that applies (NoCloud, EC2) what this instance is, with what it says.
pub async fn ask(
    paths: &Paths,
    cfg: &EngineConfig,
    system: &dyn System,
    stage: Stage,
    known: KnownIds<'_>,
) -> Answer {
    // A NoCloud volume is probed (blkid, mount) once per boot: the later
    // stages reuse what the local stage cached.
    if stage != Stage::Local
        && let Some(found) = known.this_boot.and_then(|iid| load_cache(paths, iid))
        && found.instance.datasource == "nocloud"
    {
        return Answer::Found(Box::new(found));
    }
    let dmi = read_dmi(paths);
    let explicit = cfg.datasource.is_some();
    let kinds = cfg
        .datasource
        .clone()
        .unwrap_or_else(|| vec![DatasourceKind::Nocloud, DatasourceKind::Ec2]);
    let use_volume = cfg
        .nocloud
        .as_ref()
        .and_then(|n| n.use_volume)
        .unwrap_or(!dmi.ec2);
    for kind in kinds {
        match kind {
            DatasourceKind::Nocloud => match nocloud::read(paths, system, use_volume).await {
                Ok(Some(found)) => return Answer::Found(Box::new(found)),
                Ok(None) => {}
                Err(e) => return Answer::Failed(format!("nocloud: {e}")),
            },
            DatasourceKind::Ec2 if dmi.ec2 || explicit => {
                return ec2(paths, cfg, &dmi, stage, known).await;
            }
            DatasourceKind::Ec2 => {}
        }
    }
    Answer::Nothing("no datasource found (no NoCloud seed, not EC2 by DMI)".into())
}

async fn ec2(
    paths: &Paths,
    cfg: &EngineConfig,
    dmi: &Dmi,
    stage: Stage,
    known: KnownIds<'_>,
) -> Answer {
    let cached = dmi
        .asset_tag
        .as_ref()
        .or(known.this_boot)
        .and_then(|iid| load_cache(paths, iid));
    // Only the network stage asks IMDS; the others use what it (or a previous boot) cached.
    if stage != Stage::Network {
        return match cached {
            Some(found) => Answer::Found(Box::new(found)),
            None => Answer::Pending {
                why: "EC2 metadata is fetched in the network stage".into(),
                instance_id: dmi.asset_tag.clone(),
            },
        };
    }
    // The endpoint that answered last time goes first (on an IPv6-only instance, IPv6): from
    // this instance's cache, else the last instance's (a Xen reboot knows no id before asking).
    let preferred = match &cached {
        Some(c) => c.instance.imds_endpoint.clone(),
        None => known.last.and_then(|iid| last_endpoint(paths, iid)),
    };
    match fetch_ec2(paths, cfg, preferred.as_deref()).await {
        Ok(found) => Answer::Found(Box::new(found)),
        Err(e) => match cached {
            Some(found) => {
                tracing::warn!("EC2 metadata refresh failed, using the cache: {e}");
                Answer::Found(Box::new(found))
            }
            None => Answer::Failed(format!("ec2: {e}")),
        },
    }
}

/// The IMDS endpoint the last instance's cache names (only `metadata.json` is read: a
/// preference needs no user-data, nor its checksum).
fn last_endpoint(paths: &Paths, iid: &InstanceId) -> Option<String> {
    let path = paths.instance_dir(iid).join("data").join("metadata.json");
    let text = paths.read(&path).ok()??;
    let entry: CacheEntry = serde_json::from_str(&text).ok()?;
    entry.instance.imds_endpoint
}

async fn fetch_ec2(
    paths: &Paths,
    cfg: &EngineConfig,
    preferred: Option<&str>,
) -> Result<Found, String> {
    let imds = cfg.imds.clone().unwrap_or_default();
    // `--root` never changes (nor asks) the machine it runs on: this machine's metadata
    // service is not the sandbox's instance.
    let candidates = imds.endpoint.candidates().map_err(|e| e.to_string())?;
    if !paths.root.is_host()
        && let Some(own) = candidates.iter().find(|c| is_link_local_imds(c))
    {
        return Err(format!(
            "under --root, stoke does not ask this machine's metadata service ({own}); \
             give the sandbox's own with imds.endpoint"
        ));
    }
    let started = std::time::Instant::now();
    let (md, session) = ec2::connect_and_fetch(&imds, preferred)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(
        "EC2 metadata for {} fetched from {} in {:.1} ms",
        md.instance.instance_id,
        session.endpoint(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    Ok(Found {
        instance: md.instance,
        user_data: md.user_data,
        vendor_data: None,
        from_cache: false,
        imds: Some(Live(session)),
    })
}

/// Fetches, with the stage's IMDS session, what the configuration uses beyond the base
/// metadata: the tags its templates name and the network interfaces (route53, `local_ipv6`).
/// `texts`: every configuration document and template, before rendering. Nothing is fetched
/// (nor scanned) without a live session: a boot that reads the cache asks nothing new.
pub async fn fetch_extras<'a>(
    found: &mut Found,
    texts: impl Iterator<Item = &'a str>,
) -> Result<Vec<String>, String> {
    let Some(Live(session)) = found.imds.clone() else {
        return Ok(Vec::new());
    };
    let want = needs(texts);
    if want.is_empty() {
        return Ok(Vec::new());
    }
    tracing::debug!(?want, "EC2: fetching what the configuration uses");
    ec2::fetch_extras(&session, &want, &mut found.instance)
        .await
        .map_err(|e| format!("ec2: {e}"))
}

/// What `texts` refer to: `tags.<Key>` (also `tags["Key"]`) and anything that needs the
/// interfaces. A mention too many costs a request; one too few cannot happen for the names
/// templates use.
pub fn needs<'a>(texts: impl Iterator<Item = &'a str>) -> ec2::Extras {
    let mut out = ec2::Extras::default();
    let (mut lifecycle, mut group_given) = (false, false);
    for t in texts {
        if t.contains("route53") || t.contains("local_ipv6") || t.contains("local-ipv6") {
            out.interfaces = true;
        }
        lifecycle |= t.contains("lifecycle");
        group_given |= t.contains("group_name");
        let b = t.as_bytes();
        let mut from = 0;
        while let Some(at) = t[from..].find("tags") {
            let i = from + at;
            from = i + 4;
            if i > 0 && (b[i - 1].is_ascii_alphanumeric() || b"_.".contains(&b[i - 1])) {
                continue;
            }
            let rest = &t[i + 4..];
            let key = if let Some(r) = rest.strip_prefix('.') {
                let end = r
                    .find(|c: char| !(c.is_ascii_alphanumeric() || "+-=._:@".contains(c)))
                    .unwrap_or(r.len());
                r[..end].trim_end_matches('.')
            } else if let Some(r) = rest.strip_prefix("[\"").or_else(|| rest.strip_prefix("['")) {
                let q = if rest.starts_with("[\"") { '"' } else { '\'' };
                r.split(q).next().unwrap_or("")
            } else {
                continue;
            };
            if ec2::valid_tag_key(key) {
                out.tags.insert(key.to_string());
            }
        }
    }
    // The lifecycle hook's group, when no layer gives `group_name` (asking for a tag that is not
    // there is a warning: not for an instance whose configuration names its group).
    if lifecycle && !group_given {
        out.tags.insert(stoke_lifecycle::GROUP_TAG.to_string());
    }
    out
}

/// The metadata service's own addresses (IPv4 and Nitro's IPv6), whatever the scheme and port.
fn is_link_local_imds(endpoint: &str) -> bool {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let host = rest.split('/').next().unwrap_or("");
    let host = host.strip_prefix('[').map_or_else(
        || host.split(':').next().unwrap_or(""),
        |h| h.split(']').next().unwrap_or(""),
    );
    matches!(
        host.to_ascii_lowercase().as_str(),
        "169.254.169.254" | "fd00:ec2::254" | "instance-data" | "instance-data.ec2.internal"
    )
}

#[derive(Serialize, Deserialize)]
struct CacheEntry {
    instance: InstanceData,
    user_data_sha256: Option<String>,
    vendor_data_sha256: Option<String>,
}

/// Writes (atomically, with fsync) only when the content differs: the cache
/// is rewritten on every stage of every boot, and an fsync is the costliest
/// thing a no-op boot would otherwise do.
fn write_if_changed(paths: &Paths, path: &Path, data: &[u8]) -> std::io::Result<()> {
    if paths
        .read_bytes(path)
        .is_ok_and(|old| old.as_deref() == Some(data))
    {
        return Ok(());
    }
    paths.write(path, data, 0o600, true)
}

/// Keeps what the datasource said under `instances/<iid>/data/`.
pub fn store_cache(paths: &Paths, found: &Found) -> std::io::Result<()> {
    let dir = paths.instance_dir(&found.instance.instance_id).join("data");
    let write_opt = |name: &str, data: &Option<Vec<u8>>| -> std::io::Result<Option<String>> {
        let path = dir.join(name);
        match data {
            Some(d) => {
                write_if_changed(paths, &path, d)?;
                Ok(Some(sha256_hex(d)))
            }
            None => {
                let _ = paths.remove(&path);
                Ok(None)
            }
        }
    };
    let entry = CacheEntry {
        instance: found.instance.clone(),
        user_data_sha256: write_opt("user-data", &found.user_data)?,
        vendor_data_sha256: write_opt("vendor-data", &found.vendor_data)?,
    };
    let json = serde_json::to_vec_pretty(&entry).map_err(std::io::Error::other)?;
    write_if_changed(paths, &dir.join("metadata.json"), &json)
}

pub fn load_cache(paths: &Paths, iid: &InstanceId) -> Option<Found> {
    let dir = paths.instance_dir(iid).join("data");
    let text = paths.read(&dir.join("metadata.json")).ok()??;
    let entry: CacheEntry = serde_json::from_str(&text).ok()?;
    // State read back is input like any other: a cache whose instance id is not the one it is
    // filed under (a tampered image, a hostile --root tree) is not used — its id would name
    // paths for semaphores and state.
    if entry.instance.instance_id != *iid {
        tracing::warn!("metadata cache for {iid} names another instance id; ignored");
        return None;
    }
    let read = |name: &str, sha: &Option<String>| -> Option<Vec<u8>> {
        let want = sha.as_ref()?;
        let data = paths.read_bytes(&dir.join(name)).ok()??;
        // A torn or tampered cache is ignored rather than trusted.
        (sha256_hex(&data) == *want).then_some(data)
    };
    Some(Found {
        user_data: read("user-data", &entry.user_data_sha256),
        vendor_data: read("vendor-data", &entry.vendor_data_sha256),
        instance: entry.instance,
        from_cache: true,
        imds: None,
    })
}

/// What a user-data (or vendor-data) blob holds for stoke.
#[derive(Debug, Default)]
pub struct Decoded {
    /// The `#cloud-config` YAML documents, in order.
    pub documents: Vec<String>,
    /// Scripts and boothooks, in order.
    pub scripts: Vec<UserScript>,
    /// The parts stoke does not act on.
    pub warnings: Vec<String>,
    /// Parts that could not be used (a template that did not render); the others apply.
    pub errors: Vec<String>,
}

/// Splits a user-data blob into configuration documents and scripts; an error when the
/// blob is unusable.
pub fn decode_user_data(raw: &[u8], template: &serde_json::Value) -> Result<Decoded, String> {
    let render = |body: &str| jinja::render(body, template);
    let ud = userdata::decode_rendering(raw, &render).map_err(|e| e.to_string())?;
    let mut out = Decoded {
        documents: ud.cloud_configs,
        errors: ud.template_errors,
        ..Decoded::default()
    };
    for (i, part) in ud.scripts.into_iter().enumerate() {
        let kind = match part.content_type.as_str() {
            "text/cloud-boothook" => ScriptKind::Boothook,
            "text/x-shellscript-per-boot" => ScriptKind::Script(Frequency::PerBoot),
            "text/x-shellscript-per-once" => ScriptKind::Script(Frequency::Once),
            _ => ScriptKind::Script(Frequency::PerInstance),
        };
        let name = script_name(part.filename.as_deref(), i + 1, &out.scripts);
        out.scripts.push(UserScript {
            name,
            kind,
            content: part.content,
        });
    }
    for part in &ud.other {
        out.warnings.push(format!(
            "part {} of type {} is not supported by stoke; ignored",
            part.filename.as_deref().unwrap_or("(unnamed)"),
            part.content_type
        ));
    }
    Ok(out)
}

/// One user-data (or vendor-data) blob, ready for the loader: its cloud-config documents
/// (one group: they stand or fall together), its scripts, and what was wrong, each
/// naming the blob.
#[derive(Debug, Default)]
pub struct Layer {
    /// Zero or one group of documents.
    pub documents: Vec<Vec<crate::config::Source>>,
    pub scripts: Vec<UserScript>,
    pub warnings: Vec<String>,
    pub errors: Vec<stoke_api::ConfigError>,
}

/// Decodes `raw` as `run` reads it (gzip, MIME, jinja, scripts, `#cloud-config`);
/// `stoke schema` checks a user-data file through here too.
pub fn decode_layer(name: &str, raw: &[u8], template: &serde_json::Value) -> Layer {
    let decoded = match decode_user_data(raw, template) {
        Ok(d) => d,
        Err(e) => {
            return Layer {
                errors: vec![stoke_api::ConfigError::new(e).in_source(name)],
                ..Layer::default()
            };
        }
    };
    let n = decoded.documents.len();
    let group: Vec<crate::config::Source> = decoded
        .documents
        .into_iter()
        .enumerate()
        .map(|(i, text)| crate::config::Source {
            name: if n == 1 {
                name.to_string()
            } else {
                format!("{name} part {}", i + 1)
            },
            text,
        })
        .collect();
    Layer {
        documents: vec![group],
        scripts: decoded.scripts,
        warnings: decoded
            .warnings
            .into_iter()
            .map(|w| format!("{name}: {w}"))
            .collect(),
        errors: decoded
            .errors
            .into_iter()
            .map(|e| stoke_api::ConfigError::new(e).in_source(name))
            .collect(),
    }
}

/// A part's file name when it is a plain, new name; `part-NNN` otherwise (as cloud-init
/// names unnamed parts). The name becomes a file under the instance's state directory.
fn script_name(filename: Option<&str>, index: usize, taken: &[UserScript]) -> String {
    let plain = filename.filter(|f| {
        !f.is_empty()
            && f.len() <= 100
            && *f != "."
            && *f != ".."
            && !f.starts_with('.')
            && f.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c))
    });
    match plain {
        Some(f) if !taken.iter().any(|s| s.name == f) => f.to_string(),
        _ => format!("part-{index:03}"),
    }
}

#[cfg(test)]
mod boundary_tests {
    use super::*;

    #[test]
    fn the_metadata_services_own_addresses_are_recognised() {
        for e in [
            "http://169.254.169.254",
            "http://169.254.169.254:80/",
            "http://[fd00:ec2::254]/latest",
            "http://instance-data",
        ] {
            assert!(is_link_local_imds(e), "{e}");
        }
        for e in [
            "http://127.0.0.1:8080",
            "http://[::1]:9000",
            "http://169.254.169.25",
        ] {
            assert!(!is_link_local_imds(e), "{e}");
        }
    }

    #[test]
    fn a_cache_naming_another_instance_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(stoke_api::Root::new(dir.path()), None, None);
        let found = |iid: &str| Found {
            instance: InstanceData {
                datasource: "ec2".into(),
                instance_id: iid.parse().unwrap(),
                ..InstanceData::default()
            },
            user_data: None,
            vendor_data: None,
            from_cache: false,
            imds: None,
        };
        store_cache(&paths, &found("i-good")).unwrap();
        assert!(load_cache(&paths, &"i-good".parse().unwrap()).is_some());
        // Tampered: the cache filed under i-good says its instance is "../../../tmp/x".
        let meta = paths
            .instance_dir(&"i-good".parse().unwrap())
            .join("data/metadata.json");
        let text = std::fs::read_to_string(&meta).unwrap();
        std::fs::write(&meta, text.replace("\"i-good\"", "\"../../../tmp/x\"")).unwrap();
        assert!(load_cache(&paths, &"i-good".parse().unwrap()).is_none());
    }

    #[test]
    fn what_the_configuration_uses_is_what_is_fetched() {
        let n = needs(
            [
                "hostname: \"{{ tags.role }}-{{ uuid8 }}\"\n",
                "## template: jinja\n#cloud-config\nfqdn: {{ tags['app:tier'] }}.{{ tags[\"Name\"] }}\n",
                "x: {{ mytags.no }} {{ v1.tags.no }} {{ tags.a.b. }}",
            ]
            .into_iter(),
        );
        let tags: Vec<&str> = n.tags.iter().map(String::as_str).collect();
        assert_eq!(tags, ["Name", "a.b", "app:tier", "role"]);
        assert!(!n.interfaces);
        assert!(needs(["route53:\n  zone_name: example.com\n"].into_iter()).interfaces);
        assert!(needs(["hostname: {{ local_ipv6 }}"].into_iter()).interfaces);
        assert!(needs(["hostname: web\nruncmd: [ls]\n"].into_iter()).is_empty());
        let n = needs(["lifecycle:\n  hook_name: launching\n"].into_iter());
        assert!(n.tags.contains("aws:autoscaling:groupName"), "{n:?}");
        let n = needs(
            [
                "lifecycle:\n  hook_name: h\n",
                "lifecycle: {group_name: web}",
            ]
            .into_iter(),
        );
        assert!(n.is_empty(), "{n:?}");
    }
}
