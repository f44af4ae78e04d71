//! What is on a block device, from `blkid -p` (low-level probe, no cache) and `wipefs -n`,
//! and how stoke makes a filesystem on a blank one: shared by `disks` and `volumes`, which
//! must refuse the same things (never format what holds a filesystem or partition table).

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Cmd, Context, ModuleError, tools};

/// The filesystems stoke makes on a blank device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Filesystem {
    #[default]
    Xfs,
    Ext4,
}

impl Filesystem {
    pub fn as_str(self) -> &'static str {
        match self {
            Filesystem::Xfs => "xfs",
            Filesystem::Ext4 => "ext4",
        }
    }

    /// Longest label the filesystem stores.
    pub fn max_label(self) -> usize {
        match self {
            Filesystem::Xfs => 12,
            Filesystem::Ext4 => 16,
        }
    }

    /// The mkfs command for `host_device` (a host path) with this label (if any) and UUID; `extra`
    /// goes before the device. `nodiscard`: the device comes trimmed (instance store, a new
    /// EBS volume), and discarding at mkfs can take minutes.
    pub fn mkfs(
        self,
        ctx: &Context,
        host_device: &str,
        label: Option<&str>,
        uuid: &str,
        nodiscard: bool,
        extra: &[String],
    ) -> Cmd {
        let mut args: Vec<String> = Vec::new();
        if let Some(l) = label {
            args.extend(["-L".into(), l.into()]);
        }
        let tool = match self {
            Filesystem::Xfs => {
                args.extend(["-m".into(), format!("uuid={uuid}")]);
                if nodiscard {
                    args.push("-K".into());
                }
                tools::MKFS_XFS
            }
            Filesystem::Ext4 => {
                args.extend(["-U".into(), uuid.into()]);
                if nodiscard {
                    args.extend(["-E".into(), "nodiscard".into()]);
                }
                tools::MKFS_EXT4
            }
        };
        args.extend(extra.iter().cloned());
        args.push(host_device.into());
        Cmd::new(ctx.tool(tool), args).timeout(Duration::from_secs(900))
    }
}

/// What a device holds.
#[derive(Clone, Debug, PartialEq)]
pub enum Content {
    /// No signature found by blkid nor wipefs.
    Blank,
    Filesystem {
        fstype: String,
        uuid: Option<String>,
        label: Option<String>,
    },
    /// An md superblock; `name` is the array name (`host:name` or `any:name`).
    MdMember {
        array_uuid: Option<String>,
        name: Option<String>,
    },
    /// Anything else: a partition table, LVM, several signatures...
    Foreign(String),
}

impl Content {
    /// The signature found, for refusals ("xfs filesystem (UUID ...)").
    pub fn describe(&self) -> String {
        match self {
            Content::Blank => "nothing".into(),
            Content::Filesystem {
                fstype,
                uuid,
                label,
            } => {
                let mut s = format!("{fstype} filesystem");
                if let Some(u) = uuid {
                    s.push_str(&format!(" UUID={u}"));
                }
                if let Some(l) = label {
                    s.push_str(&format!(" LABEL={l}"));
                }
                s
            }
            Content::MdMember { name, array_uuid } => format!(
                "md superblock (array {}{})",
                name.as_deref().unwrap_or("?"),
                array_uuid
                    .as_deref()
                    .map(|u| format!(" UUID={u}"))
                    .unwrap_or_default()
            ),
            Content::Foreign(s) => s.clone(),
        }
    }
}

/// `KEY=value` lines of `-o export` / `--export` output (backslash escapes undone).
pub fn parse_export(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let mut out = String::new();
            let mut chars = v.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        out.push(n);
                    }
                } else {
                    out.push(c);
                }
            }
            (k.trim().to_string(), out)
        })
        .collect()
}

/// Classifies blkid's probe of one device. `None`: blkid found nothing.
pub fn classify(vars: &BTreeMap<String, String>) -> Option<Content> {
    let get = |k: &str| vars.get(k).filter(|v| !v.is_empty()).cloned();
    match get("TYPE").as_deref() {
        Some("linux_raid_member") => Some(Content::MdMember {
            array_uuid: get("UUID"),
            name: get("LABEL"),
        }),
        Some(t) if get("USAGE").as_deref() == Some("filesystem") || t == "xfs" || t == "ext4" => {
            Some(Content::Filesystem {
                fstype: t.to_string(),
                uuid: get("UUID"),
                label: get("LABEL"),
            })
        }
        Some(t) => Some(Content::Foreign(format!(
            "{t} signature{}",
            get("USAGE").map(|u| format!(" ({u})")).unwrap_or_default()
        ))),
        None => get("PTTYPE").map(|pt| Content::Foreign(format!("{pt} partition table"))),
    }
}

/// Probes `device` (an instance path). Never reports `Blank` unless blkid said
/// "nothing found" (exit 2, or empty success when commands are only recorded)
/// and wipefs listed no signature either; any other failure is an error.
///
/// blkid and wipefs run at once: both only read, and a blank disk (the first boot of every
/// instance) needs both answers, so the second would otherwise wait on the boot's critical
/// path for the first. wipefs's answer (or failure) counts only when blkid found nothing.
pub async fn probe(ctx: &Context, device: &str) -> Result<Content, ModuleError> {
    let host = ctx.host_path(device).display().to_string();
    let blkid = Cmd::new(
        ctx.tool(tools::BLKID),
        ["-p", "-o", "export", host.as_str()],
    )
    .timeout(Duration::from_secs(30));
    // blkid stops at the first signature it trusts; wipefs lists every one (backup
    // GPT at the end of the disk, stale superblocks...).
    let wipefs = Cmd::new(
        ctx.tool(tools::WIPEFS),
        ["-n", "--noheadings", "-O", "TYPE,OFFSET", host.as_str()],
    )
    .timeout(Duration::from_secs(30));
    let (found, listed) = tokio::join!(ctx.system.run(&blkid), ctx.system.run(&wipefs));
    let out = found?;
    match out.code {
        Some(0) => {
            if let Some(c) = classify(&parse_export(&out.stdout)) {
                return Ok(c);
            }
        }
        // "Nothing found". blkid also says 2 for a missing device, so a message on
        // stderr means something went wrong: not blank.
        Some(2) if out.stderr.trim().is_empty() => {}
        Some(8) => {
            return Ok(Content::Foreign(format!(
                "several conflicting signatures (blkid: ambivalent result{})",
                if out.stderr.trim().is_empty() {
                    String::new()
                } else {
                    format!(": {}", out.stderr.trim())
                }
            )));
        }
        _ => {
            out.check(&blkid)?;
        }
    }
    let out = listed?.check(&wipefs)?;
    let sigs: Vec<String> = out
        .stdout
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let t = f.next()?;
            Some(match f.next() {
                Some(off) => format!("{t} at {off}"),
                None => t.to_string(),
            })
        })
        .collect();
    if sigs.is_empty() {
        Ok(Content::Blank)
    } else {
        Ok(Content::Foreign(format!(
            "signatures found by wipefs: {}",
            sigs.join(", ")
        )))
    }
}

/// `nvme10n1` after `nvme2n1`: digits compare as numbers.
pub fn natural_key(s: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut num: Option<u64> = None;
    for c in s.chars() {
        if let Some(d) = c.to_digit(10) {
            num = Some(num.unwrap_or(0).saturating_mul(10).saturating_add(d as u64));
        } else {
            if let Some(n) = num.take() {
                out.push((std::mem::take(&mut text), n));
            }
            text.push(c);
        }
    }
    out.push((text, num.unwrap_or(0)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_blkid_output() {
        let fs = parse_export(
            "DEVNAME=/dev/loop0\nLABEL=my\\ data\nUUID=1234\nTYPE=ext4\nUSAGE=filesystem\n",
        );
        assert_eq!(
            classify(&fs),
            Some(Content::Filesystem {
                fstype: "ext4".into(),
                uuid: Some("1234".into()),
                label: Some("my data".into())
            })
        );
        let md = parse_export("TYPE=linux_raid_member\nUUID=aa\nLABEL=any:ephemeral\nUSAGE=raid\n");
        assert!(
            matches!(classify(&md), Some(Content::MdMember { name: Some(n), .. }) if n == "any:ephemeral")
        );
        let pt = parse_export("PTUUID=x\nPTTYPE=gpt\n");
        assert_eq!(classify(&pt).unwrap().describe(), "gpt partition table");
        let lvm = parse_export("TYPE=LVM2_member\nUSAGE=raid\n");
        assert_eq!(
            classify(&lvm).unwrap().describe(),
            "LVM2_member signature (raid)"
        );
        assert_eq!(classify(&parse_export("")), None);
    }
}
