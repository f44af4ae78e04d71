//! What `ssh-keygen -l` prints for a public key ("3072 SHA256:… root@host (RSA)"), computed
//! in-process: at boot each `ssh-keygen` is another process start on the critical path.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use sha2::{Digest, Sha256};

use crate::keyline::KeyLine;

/// The `ssh-keygen -l` line for a key; `None` when its blob cannot be read.
pub fn fingerprint(key: &KeyLine) -> Option<String> {
    let blob = STANDARD.decode(&key.base64).ok()?;
    let (bits, kind) = size_and_kind(&key.key_type, &blob)?;
    let hash = STANDARD_NO_PAD.encode(Sha256::digest(&blob));
    let comment = key
        .comment
        .as_deref()
        .filter(|c| !c.is_empty())
        .unwrap_or("no comment");
    Some(format!("{bits} SHA256:{hash} {comment} ({kind})"))
}

/// Key size in bits and ssh-keygen's name for the type.
fn size_and_kind(key_type: &str, blob: &[u8]) -> Option<(usize, &'static str)> {
    Some(match key_type {
        "ssh-ed25519" => (256, "ED25519"),
        "sk-ssh-ed25519@openssh.com" => (256, "ED25519-SK"),
        "ecdsa-sha2-nistp256" => (256, "ECDSA"),
        "ecdsa-sha2-nistp384" => (384, "ECDSA"),
        "ecdsa-sha2-nistp521" => (521, "ECDSA"),
        "sk-ecdsa-sha2-nistp256@openssh.com" => (256, "ECDSA-SK"),
        // string "ssh-rsa", mpint e, mpint n: the size is n's.
        "ssh-rsa" => (mpint_bits(fields(blob, 3)?[2]), "RSA"),
        // string "ssh-dss", mpint p, q, g, y: the size is p's.
        "ssh-dss" => (mpint_bits(fields(blob, 2)?[1]), "DSA"),
        _ => return None,
    })
}

/// The first `n` length-prefixed fields of an SSH wire-format blob.
fn fields(mut blob: &[u8], n: usize) -> Option<Vec<&[u8]>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
        out.push(blob.get(4..4 + len)?);
        blob = &blob[4 + len..];
    }
    Some(out)
}

fn mpint_bits(m: &[u8]) -> usize {
    let m = &m[m.iter().take_while(|b| **b == 0).count()..];
    match m.first() {
        Some(first) => m.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(parts: &[&[u8]]) -> String {
        let mut blob = Vec::new();
        for p in parts {
            blob.extend((p.len() as u32).to_be_bytes());
            blob.extend(*p);
        }
        STANDARD.encode(blob)
    }

    fn key(key_type: &str, base64: String, comment: Option<&str>) -> KeyLine {
        KeyLine {
            options: None,
            key_type: key_type.into(),
            base64,
            comment: comment.map(str::to_string),
        }
    }

    #[test]
    fn rsa_size_is_the_modulus_bit_length_without_the_sign_byte() {
        let mut n = vec![0u8, 0x80];
        n.extend([0u8; 383]); // 0x80 followed by 383 bytes: 3072 bits
        let k = key(
            "ssh-rsa",
            wire(&[b"ssh-rsa", &[1, 0, 1], &n]),
            Some("root@h"),
        );
        let line = fingerprint(&k).unwrap();
        assert!(line.starts_with("3072 SHA256:"), "{line}");
        assert!(line.ends_with(" root@h (RSA)"), "{line}");
    }

    #[test]
    fn truncated_blobs_and_unknown_types_give_none() {
        let short = STANDARD.encode([0u8, 0, 0, 9, b's']);
        assert_eq!(fingerprint(&key("ssh-rsa", short, None)), None);
        assert_eq!(fingerprint(&key("ssh-foo", wire(&[b"x"]), None)), None);
        assert_eq!(fingerprint(&key("ssh-ed25519", "%%%".into(), None)), None);
    }

    #[test]
    fn a_key_without_comment_says_so_as_ssh_keygen_does() {
        let k = key("ssh-ed25519", wire(&[b"ssh-ed25519", &[7; 32]]), None);
        assert!(fingerprint(&k).unwrap().ends_with(" no comment (ED25519)"));
    }
}
