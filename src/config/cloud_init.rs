//! cloud-init's top-level keys and what stoke does with each. People moving from
//! cloud-init get a warning naming a key stoke does not implement (the rest of their
//! user-data still applies); a key nobody defines is a typo, and an error.
//!
//! The key names are data (`cloud-init-keys.txt`, derived from cloud-init's published
//! schema; the file says how to refresh it), so the list cannot drift from cloud-init's
//! by hand. The compatibility table in docs/configuration.md is rendered from the same
//! data (`stoke schema --cloud-init`) and a test keeps the two equal.

use std::collections::BTreeMap;

const KEYS_FILE: &str = include_str!("cloud-init-keys.txt");

/// Every top-level key cloud-init defines or reads, in file order (sorted per section).
pub fn keys() -> impl Iterator<Item = &'static str> {
    KEYS_FILE
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
}

pub fn is_cloud_init_key(name: &str) -> bool {
    keys().any(|k| k == name)
}

/// Keys stoke implements whose meaning differs from cloud-init's, on purpose; the page
/// that says why is in the table's last column.
const DIFFERENT_MEANING: &[(&str, &str)] = &[
    (
        "bootcmd",
        "each run bounded by a timeout that kills its process group",
    ),
    (
        "runcmd",
        "bounded by a timeout that kills its process group; started at most once per instance, even after a crash",
    ),
    (
        "hostname",
        "a template (`{{ uuid8 }}`, `{{ tags.Name }}`); must be a valid RFC 1123 name",
    ),
    (
        "users",
        "a non-empty list without `default` keeps the default user",
    ),
    (
        "resize_rootfs",
        "`noblock` is the same as `true` (the resize is online)",
    ),
    (
        "mounts",
        "mount points compared as paths (`/` and system trees refused); `/dev/ephemeralN` read as \
         `ephemeralN`; an entry whose kernel device does not exist is skipped, not written to fstab; \
         an entry for the instance-store array's path takes it (the array stays unmounted, with a warning)",
    ),
    (
        "ntp",
        "drop-ins for chrony or systemd-timesyncd only; no client is installed",
    ),
    (
        "apt",
        "`sources` and proxies only: `primary`, `security`, `sources_list`, keyservers and `ppa:` are not supported",
    ),
    ("puppet", "stoke's own keys, not cloud-init's"),
    (
        "manage_etc_hosts",
        "absent: stoke keeps its own `127.0.1.1` block (cloud-init leaves the file alone); \
         `localhost` writes `127.0.1.1` on every distribution",
    ),
    (
        "no_ssh_fingerprints",
        "the authorized keys' fingerprints are SHA256 lines (`ssh-keygen -l` style), not cloud-init's hex table",
    ),
    (
        "ssh_fp_console_blacklist",
        "also takes short key type names (`rsa`, `ed25519`)",
    ),
    (
        "ssh_key_console_blacklist",
        "also takes short key type names (`rsa`, `ed25519`)",
    ),
    (
        "prefer_fqdn_over_hostname",
        "defaults to the short name on every distribution (cloud-init: the fqdn on the Red Hat family)",
    ),
    (
        "phone_home",
        "each try bounded (10 s) and all of them within 5 minutes; not delivered is a warning (the boot is degraded, still ready)",
    ),
    (
        "write_files",
        "a symlink at `path` is refused; an unknown encoding or owner fails that entry only",
    ),
];

/// What stoke does with a cloud-init key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    /// Implemented by a module, with cloud-init's meaning.
    Same { module: &'static str },
    /// Implemented by a module, with a different meaning (the note says how).
    Different {
        module: &'static str,
        note: &'static str,
    },
    /// Not implemented: a warning naming the key, and the rest of the document applies.
    Ignored,
}

/// `known` maps each key stoke implements to the module that reads it.
pub fn support(key: &str, known: &BTreeMap<&'static str, &'static str>) -> Support {
    let note = DIFFERENT_MEANING
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, n)| *n);
    match (known.get(key), note) {
        (Some(module), Some(note)) => Support::Different { module, note },
        (Some(module), None) => Support::Same { module },
        (None, _) => Support::Ignored,
    }
}

/// The compatibility table (Markdown): every cloud-init key, and what stoke does with it.
pub fn compat_table(known: &BTreeMap<&'static str, &'static str>) -> String {
    let mut keys: Vec<&str> = keys().collect();
    keys.sort_unstable();
    keys.dedup();
    let mut out =
        String::from("| cloud-init key | stoke | module | how it differs |\n|---|---|---|---|\n");
    for key in keys {
        let row = match support(key, known) {
            Support::Same { module } => format!("| `{key}` | supported | {module} | |"),
            Support::Different { module, note } => {
                format!("| `{key}` | supported, different meaning | {module} | {note} |")
            }
            Support::Ignored => format!("| `{key}` | warned and ignored | | |"),
        };
        out.push_str(&row);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_file_holds_the_schema_keys_and_the_read_ones() {
        let all: Vec<&str> = keys().collect();
        // From the schema, the ones issue 15 saw rejected as typos.
        for k in [
            "ssh",
            "rpi",
            "grub_dpkg",
            "grub-dpkg",
            "authkey_hash",
            "launch-index",
            "version",
            "migrate",
            "runcmd",
        ] {
            assert!(all.contains(&k), "{k} missing");
        }
        // Read by cloud-init's code, not in its schema.
        assert!(all.contains(&"datasource_list"));
        assert!(!all.contains(&"hostnme"));
        assert!(
            all.iter().all(|k| !k.contains(' ')),
            "one key per line: {all:?}"
        );
    }

    #[test]
    fn every_different_meaning_names_a_cloud_init_key() {
        for (k, _) in DIFFERENT_MEANING {
            assert!(is_cloud_init_key(k), "{k}");
        }
    }

    #[test]
    fn support_follows_the_modules() {
        let known = BTreeMap::from([("runcmd", "scripts"), ("fqdn", "hostname")]);
        assert_eq!(
            support("fqdn", &known),
            Support::Same { module: "hostname" }
        );
        assert!(matches!(
            support("runcmd", &known),
            Support::Different {
                module: "scripts",
                ..
            }
        ));
        assert_eq!(support("chef", &known), Support::Ignored);
        let table = compat_table(&known);
        assert!(
            table.contains("| `chef` | warned and ignored | | |"),
            "{table}"
        );
        assert!(table.contains("| `fqdn` | supported | hostname | |"));
    }
}
