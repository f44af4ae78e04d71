//! NVMe Identify Controller data (4096 bytes) as EBS fills it, and the names people give
//! a volume. The NVMe base specification fixes the head: PCI vendor id (bytes 0..2), serial
//! number (4..24) and model number (24..64), ASCII padded with spaces. EBS puts the
//! volume id in the serial (`vol0123…`, no dash) and, in the vendor-specific area
//! (3072..4096), the block-device name the volume was attached as: its first 32 bytes,
//! ASCII, padded with spaces or NULs, written as `sdf`, `/dev/sdf` or `xvdba`
//! (AWS: "Amazon EBS and NVMe"; amazon-ec2-utils' `ebsnvme-id` reads the same bytes).

use stoke_api::NVME_IDENTIFY_LEN;

/// The model number of an EBS volume's controller.
pub const EBS_MODEL: &str = "Amazon Elastic Block Store";
/// Amazon's PCI vendor id.
pub const AMAZON_VENDOR_ID: u16 = 0x1d0f;

const SERIAL: std::ops::Range<usize> = 4..24;
const MODEL: std::ops::Range<usize> = 24..64;
/// Where the requested block-device name is: the start of the vendor-specific area.
const REQUESTED_NAME: std::ops::Range<usize> = 3072..3104;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identify {
    pub vendor_id: u16,
    pub serial: String,
    pub model: String,
    /// The requested block-device name without `/dev/` (`sdf`, `xvdba`); `None` when the
    /// area is empty or does not hold a device name.
    pub requested: Option<String>,
}

impl Identify {
    pub fn is_ebs(&self) -> bool {
        self.model == EBS_MODEL
    }
}

/// Parses identify data. Only the length is an error: any bytes may be in the fields, and
/// what is not text is left out rather than guessed at.
pub fn parse(data: &[u8]) -> Result<Identify, String> {
    if data.len() != NVME_IDENTIFY_LEN {
        return Err(format!(
            "identify data is {} bytes, not {NVME_IDENTIFY_LEN}",
            data.len()
        ));
    }
    let requested = ascii_field(&data[REQUESTED_NAME])
        .map(|n| n.strip_prefix("/dev/").unwrap_or(&n).to_string())
        .filter(|n| {
            !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    Ok(Identify {
        vendor_id: u16::from_le_bytes([data[0], data[1]]),
        serial: ascii_field(&data[SERIAL]).unwrap_or_default(),
        model: ascii_field(&data[MODEL]).unwrap_or_default(),
        requested,
    })
}

/// A padded ASCII field: up to the first NUL, spaces trimmed; `None` when it holds
/// anything but printable ASCII.
fn ascii_field(bytes: &[u8]) -> Option<String> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let text = &bytes[..end];
    if !text.iter().all(|b| (0x20..0x7f).contains(b)) {
        return None;
    }
    Some(String::from_utf8_lossy(text).trim().to_string())
}

/// What makes two block-device names the same EBS attachment point: `sdf`, `xvdf` and
/// `/dev/sdf` are one name to EC2 (Xen kernels renamed `sd` to `xvd`; Nitro keeps the
/// name only in the identify data). `Some("f")` for those; `None` for a name that is not an
/// EC2 block-device name (`sd` or `xvd` and one or two letters).
pub fn name_key(name: &str) -> Option<String> {
    let n = name.trim();
    let n = n.strip_prefix("/dev/").unwrap_or(n);
    let letters = n.strip_prefix("xvd").or_else(|| n.strip_prefix("sd"))?;
    (matches!(letters.len(), 1 | 2) && letters.bytes().all(|b| b.is_ascii_lowercase()))
        .then(|| letters.to_string())
}

/// A volume id as EC2 writes it (`vol-0123…`) or as its NVMe serial does (`vol0123…`),
/// in the serial's form; `None` when it is neither (8 or 17 hex digits after `vol`).
pub fn volume_key(id: &str) -> Option<String> {
    let id = id.trim().to_ascii_lowercase();
    let hex = id.strip_prefix("vol-").or_else(|| id.strip_prefix("vol"))?;
    (matches!(hex.len(), 8 | 17) && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("vol{hex}"))
}

/// `vol0123…` → `vol-0123…`, as EC2 and its console write it.
pub fn volume_id_text(key: &str) -> String {
    match key.strip_prefix("vol") {
        Some(hex) if !hex.starts_with('-') => format!("vol-{hex}"),
        _ => key.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_mean_the_same_attachment() {
        for n in ["sdf", "xvdf", "/dev/sdf", "/dev/xvdf", " sdf "] {
            assert_eq!(name_key(n).as_deref(), Some("f"), "{n}");
        }
        assert_eq!(name_key("/dev/xvdba").as_deref(), Some("ba"));
        for bad in ["nvme1n1", "sdf1", "sd", "xvdabc", "/dev/sdF", "hdf", ""] {
            assert_eq!(name_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn volume_ids_in_either_spelling() {
        assert_eq!(
            volume_key("vol-0123456789abcdef0").as_deref(),
            Some("vol0123456789abcdef0")
        );
        assert_eq!(
            volume_key("vol0123456789ABCDEF0").as_deref(),
            Some("vol0123456789abcdef0")
        );
        assert_eq!(volume_key("vol-1a2b3c4d").as_deref(), Some("vol1a2b3c4d"));
        for bad in [
            "vol-123",
            "vol-0123456789abcdefg",
            "snap-1a2b3c4d",
            "1a2b3c4d",
        ] {
            assert_eq!(volume_key(bad), None, "{bad}");
        }
        assert_eq!(
            volume_id_text("vol0123456789abcdef0"),
            "vol-0123456789abcdef0"
        );
    }
}
