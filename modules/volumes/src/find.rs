//! Finding a volume: NVMe controllers in `/sys/class/nvme` (EBS on Nitro: the serial is the
//! volume id, the identify data holds the requested name), else a plain `/dev/xvdf` or
//! `/dev/sdf` (Xen instances; or a udev rule's link), all read under the context's root.

use std::collections::BTreeMap;
use std::path::Path;

use stoke_api::probe::natural_key;
use stoke_api::{Context, FileKind, RootDir};

use crate::config::{Entry, Want};
use crate::identify::{self, name_key};

/// One NVMe controller as sysfs shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Controller {
    /// `nvme1`
    pub name: String,
    pub model: String,
    pub serial: String,
    /// Its block device (`nvme1n1`), the lowest namespace; `None` before it has one.
    pub block: Option<String>,
}

fn read_attr(root: &RootDir, path: &str) -> Option<String> {
    root.read_regular(Path::new(path), 4096)
        .ok()
        .flatten()
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
}

/// `nvme1n1` for `nvme1n1`; with native multipath the controller lists its path
/// `nvme1c1n1`, whose block device is the head `nvme1n1`.
fn namespace_block(entry: &str) -> Option<String> {
    let rest = entry.strip_prefix("nvme")?;
    let (subsys, rest) = rest.split_at(rest.find(|c: char| !c.is_ascii_digit())?);
    let rest = match rest.strip_prefix('c') {
        Some(r) => r.trim_start_matches(|c: char| c.is_ascii_digit()),
        None => rest,
    };
    let nsid = rest.strip_prefix('n')?;
    (!subsys.is_empty() && !nsid.is_empty() && nsid.bytes().all(|b| b.is_ascii_digit()))
        .then(|| format!("nvme{subsys}n{nsid}"))
}

/// Every NVMe controller, in name order (numbers compared as numbers).
pub fn controllers(root: &RootDir) -> Vec<Controller> {
    let mut out: Vec<Controller> = root
        .list_dir(Path::new("/sys/class/nvme"))
        .unwrap_or_default()
        .into_iter()
        .map(|(name, _)| name)
        .filter(|n| {
            n.strip_prefix("nvme")
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|name| {
            let dir = format!("/sys/class/nvme/{name}");
            let mut blocks: Vec<String> = root
                .list_dir(Path::new(&dir))
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(e, _)| namespace_block(&e))
                .collect();
            blocks.sort_by_key(|b| natural_key(b));
            Controller {
                model: read_attr(root, &format!("{dir}/model")).unwrap_or_default(),
                serial: read_attr(root, &format!("{dir}/serial")).unwrap_or_default(),
                block: blocks.into_iter().next(),
                name,
            }
        })
        .collect();
    out.sort_by_key(|c| natural_key(&c.name));
    out
}

/// Where an entry's volume is.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    /// The block device, as an instance path (`/dev/nvme1n1`, `/dev/xvdf`).
    pub device: String,
    /// How it was recognised, for status.
    pub how: String,
    /// The volume id (serial form) when known.
    pub volume_key: Option<String>,
    /// The requested name when known (`sdf`).
    pub requested: Option<String>,
    pub nvme: bool,
}

/// The requested name of each EBS controller, read once per run (and per controller).
#[derive(Default)]
pub struct IdentifyCache {
    names: BTreeMap<String, Option<String>>,
    pub warnings: Vec<String>,
}

impl IdentifyCache {
    async fn requested(&mut self, ctx: &Context, c: &Controller) -> Option<String> {
        // By name and serial: a controller number may be reused by another attachment.
        let key = format!("{} {}", c.name, c.serial);
        if let Some(n) = self.names.get(&key) {
            return n.clone();
        }
        let dev = ctx.host_path(format!("/dev/{}", c.name));
        let name = match ctx.system.nvme_identify_controller(&dev).await {
            Ok(data) => match identify::parse(&data) {
                Ok(id) => id.requested,
                Err(e) => {
                    self.warnings.push(format!("/dev/{}: {e}", c.name));
                    None
                }
            },
            Err(e) => {
                // Not remembered: a controller that just appeared may answer at the next look.
                self.warnings.push(format!(
                    "cannot read the requested device name of /dev/{} ({}): {e}",
                    c.name, c.serial
                ));
                return None;
            }
        };
        self.names.insert(key, name.clone());
        name
    }
}

/// Looks for one entry's volume now.
pub async fn find(
    ctx: &Context,
    root: &RootDir,
    ctrls: &[Controller],
    cache: &mut IdentifyCache,
    entry: &Entry,
) -> Option<Found> {
    match &entry.want {
        Want::VolumeId(key) => {
            // Any model: the serial is what identifies an EBS volume (and a test VM's disk).
            let c = ctrls
                .iter()
                .find(|c| identify::volume_key(&c.serial).as_deref() == Some(key))?;
            let block = c.block.as_ref()?;
            Some(Found {
                device: format!("/dev/{block}"),
                how: format!("NVMe controller {} serial {}", c.name, c.serial),
                volume_key: Some(key.clone()),
                requested: None,
                nvme: true,
            })
        }
        Want::Device { key, .. } => {
            for c in ctrls.iter().filter(|c| c.model == identify::EBS_MODEL) {
                let Some(req) = cache.requested(ctx, c).await else {
                    continue;
                };
                if name_key(&req).as_ref() != Some(key) {
                    continue;
                }
                let Some(block) = &c.block else {
                    continue;
                };
                return Some(Found {
                    device: format!("/dev/{block}"),
                    how: format!("EBS NVMe controller {} attached as {req}", c.name),
                    volume_key: identify::volume_key(&c.serial),
                    requested: Some(req),
                    nvme: true,
                });
            }
            // Xen instances name the disk itself; a distribution's udev rule may link it.
            for name in [format!("xvd{key}"), format!("sd{key}")] {
                let path = format!("/dev/{name}");
                if let Ok(Some((_, st))) = root.real_path(Path::new(&path))
                    && st.kind == FileKind::Other
                {
                    return Some(Found {
                        device: path.clone(),
                        how: format!("block device {path}"),
                        volume_key: None,
                        requested: Some(name),
                        nvme: false,
                    });
                }
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_and_their_block_devices() {
        assert_eq!(namespace_block("nvme1n1").as_deref(), Some("nvme1n1"));
        assert_eq!(namespace_block("nvme3c3n1").as_deref(), Some("nvme3n1"));
        assert_eq!(namespace_block("nvme12n2").as_deref(), Some("nvme12n2"));
        for no in ["nvme1", "model", "nvme1n", "nvmen1", "power", "nvme1n1p1"] {
            assert_eq!(namespace_block(no), None, "{no}");
        }
        let mut v = vec!["nvme10", "nvme2", "nvme1"];
        v.sort_by_key(|s| natural_key(s));
        assert_eq!(v, ["nvme1", "nvme2", "nvme10"]);
    }
}
