//! Parsing and validating OpenSSH public key lines (`authorized_keys` format:
//! `[options] type base64 [comment]`), so a bad line is reported and skipped
//! instead of landing in a file sshd reads.

use base64::Engine;

/// Key types accepted in `authorized_keys` (plain keys; certificates are
/// trusted through a `cert-authority` line instead).
pub const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    "ssh-dss",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// Option names sshd understands in `authorized_keys` (matched case-insensitively, as sshd does).
const OPTIONS: &[&str] = &[
    "agent-forwarding",
    "cert-authority",
    "command",
    "environment",
    "expiry-time",
    "from",
    "no-agent-forwarding",
    "no-port-forwarding",
    "no-pty",
    "no-touch-required",
    "no-user-rc",
    "no-x11-forwarding",
    "permitlisten",
    "permitopen",
    "port-forwarding",
    "principals",
    "pty",
    "restrict",
    "touch-required",
    "tunnel",
    "user-rc",
    "verify-required",
    "x11-forwarding",
];

/// Longer than any real public key line (a 16384-bit RSA key with long options is ~3 KiB).
pub const MAX_LINE: usize = 16 * 1024;

/// One valid key line, split into its parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLine {
    pub options: Option<String>,
    pub key_type: String,
    pub base64: String,
    pub comment: Option<String>,
}

impl KeyLine {
    /// The line as written to `authorized_keys`, with `options` replacing the line's own when given.
    pub fn render(&self, options: Option<&str>) -> String {
        let mut out = String::new();
        if let Some(o) = options.or(self.options.as_deref())
            && !o.is_empty()
        {
            out.push_str(o);
            out.push(' ');
        }
        out.push_str(&self.key_type);
        out.push(' ');
        out.push_str(&self.base64);
        if let Some(c) = &self.comment {
            out.push(' ');
            out.push_str(c);
        }
        out
    }

    /// Identity of the key itself (options and comment aside), for de-duplication.
    pub fn identity(&self) -> (&str, &str) {
        (&self.key_type, &self.base64)
    }
}

/// Why a line is not a usable key. Messages never echo key material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BadKey {
    TooLong(usize),
    ControlChar,
    PrivateKey,
    UnknownType(String),
    MissingKey,
    BadBase64,
    BlobMismatch(String),
    BadOptions(String),
}

impl std::fmt::Display for BadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadKey::TooLong(n) => write!(f, "line is {n} bytes, longer than any real key ({MAX_LINE})"),
            BadKey::ControlChar => f.write_str("line contains control characters"),
            BadKey::PrivateKey => f.write_str(
                "this is a PRIVATE key; only public keys belong in authorized keys (rotate it: it has been exposed in configuration)",
            ),
            BadKey::UnknownType(t) => write!(f, "unknown key type `{t}` (known: {})", KEY_TYPES.join(", ")),
            BadKey::MissingKey => f.write_str("key type without key data"),
            BadKey::BadBase64 => f.write_str("key data is not valid base64"),
            BadKey::BlobMismatch(t) => write!(f, "key data does not hold a `{t}` key"),
            BadKey::BadOptions(why) => write!(f, "bad options: {why}"),
        }
    }
}

/// A short, printable excerpt of an unknown word (never a long blob that could be key material).
fn excerpt(word: &str) -> String {
    let clean: String = word
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(24)
        .collect();
    if word.chars().count() > 24 {
        format!("{clean}…")
    } else {
        clean
    }
}

/// Parses one line. `Ok(None)` for blank lines and `#` comments.
pub fn parse(line: &str) -> Result<Option<KeyLine>, BadKey> {
    let line = line.trim_matches(|c| c == ' ' || c == '\t' || c == '\r' || c == '\n');
    if line.len() > MAX_LINE {
        return Err(BadKey::TooLong(line.len()));
    }
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err(BadKey::ControlChar);
    }
    if line.starts_with("-----BEGIN") && line.contains("PRIVATE KEY") {
        return Err(BadKey::PrivateKey);
    }
    let (first, rest) = split_word(line);
    let (options, key_type, rest) = if KEY_TYPES.contains(&first) {
        (None, first, rest)
    } else {
        let (opts, rest) = split_options(line)?;
        let (key_type, rest) = split_word(rest);
        if key_type.is_empty() {
            // A lone unknown word: more likely a wrong type than options.
            return Err(BadKey::UnknownType(excerpt(first)));
        }
        if !KEY_TYPES.contains(&key_type) {
            // Either the first word is an unknown type, or options precede an unknown type.
            return Err(if looks_like_options(opts) {
                BadKey::UnknownType(excerpt(key_type))
            } else {
                BadKey::UnknownType(excerpt(first))
            });
        }
        check_options(opts)?;
        (Some(opts.to_string()), key_type, rest)
    };
    let (b64, comment) = split_word(rest);
    if b64.is_empty() {
        return Err(BadKey::MissingKey);
    }
    let blob = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| BadKey::BadBase64)?;
    // The blob starts with the key type as an SSH string (u32 length, bytes).
    let inner = blob
        .get(..4)
        .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
        .and_then(|n| blob.get(4..4 + n));
    if inner != Some(key_type.as_bytes()) {
        return Err(BadKey::BlobMismatch(key_type.to_string()));
    }
    let comment = comment.trim();
    Ok(Some(KeyLine {
        options,
        key_type: key_type.to_string(),
        base64: b64.to_string(),
        comment: (!comment.is_empty()).then(|| comment.to_string()),
    }))
}

fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start_matches([' ', '\t']);
    match s.find([' ', '\t']) {
        Some(i) => (&s[..i], s[i..].trim_start_matches([' ', '\t'])),
        None => (s, ""),
    }
}

/// Splits leading options at the first whitespace outside double quotes.
fn split_options(line: &str) -> Result<(&str, &str), BadKey> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ' ' | '\t' if !quoted => return Ok((&line[..i], &line[i..])),
            _ => {}
        }
    }
    if quoted {
        Err(BadKey::BadOptions("unterminated quote".into()))
    } else {
        Ok((line, ""))
    }
}

fn looks_like_options(s: &str) -> bool {
    check_options(s).is_ok()
}

/// Checks an options string: comma-separated `name` or `name="value"`, names known to sshd.
pub fn check_options(opts: &str) -> Result<(), BadKey> {
    let bad = |why: String| Err(BadKey::BadOptions(why));
    let mut rest = opts;
    loop {
        let name_end = rest.find([',', '=']).unwrap_or(rest.len());
        let name = &rest[..name_end];
        if name.is_empty() {
            return bad("empty option".into());
        }
        if !OPTIONS.contains(&name.to_ascii_lowercase().as_str()) {
            return bad(format!("unknown option `{}`", excerpt(name)));
        }
        rest = &rest[name_end..];
        if let Some(after) = rest.strip_prefix('=') {
            let Some(body) = after.strip_prefix('"') else {
                return bad(format!("value of `{name}` must be in double quotes"));
            };
            let mut end = None;
            let mut escaped = false;
            for (i, c) in body.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let Some(end) = end else {
                return bad("unterminated quote".into());
            };
            rest = &body[end + 1..];
        }
        match rest.strip_prefix(',') {
            Some(r) => rest = r,
            None if rest.is_empty() => return Ok(()),
            None => return bad(format!("unexpected text after option `{name}`")),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A syntactically valid key blob for `key_type` (not a real key: sshd is not involved here).
    pub fn fake_key(key_type: &str, seed: u32) -> String {
        let mut blob = Vec::new();
        blob.extend_from_slice(&(key_type.len() as u32).to_be_bytes());
        blob.extend_from_slice(key_type.as_bytes());
        blob.extend_from_slice(&32u32.to_be_bytes());
        blob.extend(seed.to_be_bytes().iter().cycle().take(32));
        format!(
            "{key_type} {}",
            base64::engine::general_purpose::STANDARD.encode(blob)
        )
    }

    #[test]
    fn parses_plain_and_optioned_lines() {
        let k = fake_key("ssh-ed25519", 1);
        let p = parse(&format!("  {k} alice@laptop  \r")).unwrap().unwrap();
        assert_eq!(p.key_type, "ssh-ed25519");
        assert_eq!(p.comment.as_deref(), Some("alice@laptop"));
        assert_eq!(p.render(None), format!("{k} alice@laptop"));
        let line = format!(r#"no-pty,command="echo \"hi there\", bye",from="10.0.0.0/8" {k}"#);
        let p = parse(&line).unwrap().unwrap();
        assert_eq!(
            p.options.as_deref(),
            Some(r#"no-pty,command="echo \"hi there\", bye",from="10.0.0.0/8""#)
        );
        assert_eq!(p.render(None), line);
        assert_eq!(p.render(Some("restrict")), format!("restrict {k}"));
        assert_eq!(parse("# comment").unwrap(), None);
        assert_eq!(parse("   ").unwrap(), None);
    }

    #[test]
    fn rejects_bad_lines_with_reasons() {
        let k = fake_key("ssh-ed25519", 1);
        let b64 = k.split(' ').nth(1).unwrap();
        assert_eq!(
            parse(&format!("ssh-foo {b64}")),
            Err(BadKey::UnknownType("ssh-foo".into()))
        );
        assert_eq!(parse("ssh-ed25519"), Err(BadKey::MissingKey));
        assert_eq!(parse("ssh-ed25519 not*base64"), Err(BadKey::BadBase64));
        assert_eq!(
            parse(&format!("ssh-rsa {b64}")),
            Err(BadKey::BlobMismatch("ssh-rsa".into()))
        );
        assert!(matches!(
            parse(&format!("bogus-opt {k}")),
            Err(BadKey::BadOptions(_))
        ));
        assert!(matches!(
            parse(&format!("command=\"x {k}")),
            Err(BadKey::BadOptions(_))
        ));
        assert!(matches!(
            parse(&format!("command=x {k}")),
            Err(BadKey::BadOptions(_))
        ));
        assert_eq!(
            parse("-----BEGIN OPENSSH PRIVATE KEY-----"),
            Err(BadKey::PrivateKey)
        );
        assert_eq!(parse(&format!("{k}\0x")), Err(BadKey::ControlChar));
        assert_eq!(parse(&format!("{k} a\nb")), Err(BadKey::ControlChar));
        let long = format!("{k} {}", "x".repeat(MAX_LINE));
        assert!(matches!(parse(&long), Err(BadKey::TooLong(_))));
        // A long unknown word is never echoed whole.
        let msg = parse(&"A".repeat(500)).unwrap_err().to_string();
        assert!(msg.len() < 300 && msg.contains('…'), "{msg}");
    }

    #[test]
    fn default_disable_root_opts_are_valid_options() {
        let opts = crate::authorized::DEFAULT_DISABLE_ROOT_OPTS
            .replace("$USER", "admin")
            .replace("$DISABLE_USER", "root");
        check_options(&opts).unwrap();
    }
}
