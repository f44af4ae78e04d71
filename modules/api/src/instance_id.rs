//! The instance id, checked once. It arrives from IMDS, a NoCloud seed, DMI, the metadata
//! cache or `/var/lib/stoke/instance-id`, and it names a state directory: its constructor is
//! the only validation, so a value that got past it can be joined to a path.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

/// `[A-Za-z0-9._-]`, 1..=128 characters, not `.` or `..`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct InstanceId(String);

/// An id that could name a path outside its directory (or is empty, or too long).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidInstanceId {
    /// The refused value, cut short: it may be hostile and large.
    pub shown: String,
}

impl fmt::Display for InvalidInstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid instance id {:?} (allowed: 1 to 128 of A-Z a-z 0-9 . _ -, not . or ..)",
            self.shown
        )
    }
}

impl std::error::Error for InvalidInstanceId {}

/// Echoed values are cut to this many characters.
const SHOWN_MAX: usize = 80;

impl InstanceId {
    pub fn new(id: &str) -> Result<Self, InvalidInstanceId> {
        let ok = (1..=128).contains(&id.len())
            && id != "."
            && id != ".."
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(InstanceId(id.to_string()))
        } else {
            Err(InvalidInstanceId {
                shown: id.chars().take(SHOWN_MAX).collect(),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// This instance's directory under `instances` (e.g. `/var/lib/stoke/instances`): a
    /// single path component, never a way out of `instances`.
    pub fn dir_in(&self, instances: &Path) -> PathBuf {
        instances.join(&self.0)
    }
}

/// The id of an instance no datasource describes: cloud-init's `iid-datasource-none`. Modules
/// see it only when stoke knows nothing of the instance (it never names per-instance state:
/// the runner keeps per-instance modules back until an id is known).
impl Default for InstanceId {
    fn default() -> Self {
        InstanceId("iid-datasource-none".into())
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::ops::Deref for InstanceId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for InstanceId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for InstanceId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for InstanceId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl std::str::FromStr for InstanceId {
    type Err = InvalidInstanceId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        InstanceId::new(s)
    }
}

/// Read back from state or a cache, an id is validated like one from the network.
impl<'de> Deserialize<'de> for InstanceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        InstanceId::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_could_be_paths_are_refused() {
        for good in [
            "i-0123456789abcdef0",
            "iid-local01",
            "a.b_c-d",
            &"x".repeat(128),
        ] {
            let id = InstanceId::new(good).unwrap();
            assert_eq!(id.as_str(), good);
            assert_eq!(
                id.dir_in(Path::new("/var/lib/stoke/instances")),
                Path::new("/var/lib/stoke/instances").join(good)
            );
        }
        for bad in ["", ".", "..", "../etc", "a/b", "/abs", "a b", "a\nb", "é"] {
            assert!(InstanceId::new(bad).is_err(), "{bad:?}");
        }
        let long = "y".repeat(129);
        let err = InstanceId::new(&long).unwrap_err();
        assert_eq!(err.shown.len(), SHOWN_MAX, "a refused value is cut short");
    }

    #[test]
    fn a_tampered_value_does_not_deserialize() {
        let ok: InstanceId = serde_json::from_str("\"i-1\"").unwrap();
        assert_eq!(ok, "i-1");
        let err = serde_json::from_str::<InstanceId>("\"../../etc\"").unwrap_err();
        assert!(err.to_string().contains("invalid instance id"), "{err}");
    }
}
