//! The shared credentials file (`~/.aws/credentials`): plain INI, one section
//! per profile, `aws_access_key_id`, `aws_secret_access_key` and optionally
//! `aws_session_token`.

use std::collections::BTreeMap;

use crate::credentials::Credentials;

/// The profiles of a credentials file: name → key → value. A section named
/// twice is merged, later keys winning (as the AWS CLI reads it).
pub fn parse(text: &str) -> Result<BTreeMap<String, BTreeMap<String, String>>, String> {
    let mut profiles: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    // After `key =` with no value, indented lines are that key's nested
    // settings (`s3 =` blocks): nothing this module reads.
    let mut nested = false;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if nested && raw.starts_with([' ', '\t']) {
            continue;
        }
        nested = false;
        if let Some(rest) = line.strip_prefix('[') {
            let Some(name) = rest
                .split(['#', ';'])
                .next()
                .and_then(|r| r.trim().strip_suffix(']'))
            else {
                return Err(format!("line {}: unclosed section header", n + 1));
            };
            // `[profile x]` belongs in ~/.aws/config, but the CLI tolerates it here.
            let name = name.trim();
            let name = name.strip_prefix("profile ").unwrap_or(name).trim();
            profiles.entry(name.to_string()).or_default();
            current = Some(name.to_string());
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {}: expected `key = value`", n + 1));
        };
        let Some(section) = &current else {
            return Err(format!("line {}: a key before any [profile] header", n + 1));
        };
        nested = value.trim().is_empty();
        profiles
            .entry(section.clone())
            .or_default()
            .insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    Ok(profiles)
}

/// The credentials of `profile`: `Ok(None)` when the file has no such profile,
/// an error naming the missing key when it has one without both keys.
pub fn credentials(text: &str, profile: &str) -> Result<Option<Credentials>, String> {
    let profiles = parse(text)?;
    let Some(p) = profiles.get(profile) else {
        return Ok(None);
    };
    let get = |k: &str| p.get(k).map(|v| v.as_str()).filter(|v| !v.is_empty());
    let missing = |k: &str| {
        format!(
            "profile `{profile}` has no `{k}`{}",
            if p.contains_key("role_arn")
                || p.contains_key("sso_session")
                || p.contains_key("credential_process")
            {
                " (role_arn, SSO and credential_process profiles are not supported: give keys, or use the instance profile)"
            } else {
                ""
            }
        )
    };
    let id = get("aws_access_key_id").ok_or_else(|| missing("aws_access_key_id"))?;
    let secret = get("aws_secret_access_key").ok_or_else(|| missing("aws_secret_access_key"))?;
    Ok(Some(Credentials {
        access_key_id: id.to_string(),
        secret_access_key: secret.to_string(),
        session_token: get("aws_session_token")
            .or_else(|| get("aws_security_token"))
            .map(str::to_string),
        expires: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# a comment
[default]
aws_access_key_id = AKIDDEFAULT
aws_secret_access_key=secret/default+x=
; another comment

[ci]
aws_access_key_id = AKIDCI
aws_secret_access_key = secretci
aws_session_token = tok==

[half]
aws_access_key_id = AKIDHALF

[assume]
role_arn = arn:aws:iam::123456789012:role/r
source_profile = default

[default]
region = eu-west-1
s3 =
    max_concurrent_requests = 20
";

    #[test]
    fn profiles_are_read_and_merged() {
        let d = credentials(FILE, "default").unwrap().unwrap();
        assert_eq!(d.access_key_id, "AKIDDEFAULT");
        assert_eq!(d.secret_access_key, "secret/default+x=");
        assert_eq!(d.session_token, None);
        let ci = credentials(FILE, "ci").unwrap().unwrap();
        assert_eq!(
            (ci.access_key_id.as_str(), ci.session_token.as_deref()),
            ("AKIDCI", Some("tok=="))
        );
        assert_eq!(parse(FILE).unwrap()["default"]["region"], "eu-west-1");
    }

    #[test]
    fn absent_profile_is_none_and_missing_keys_are_named() {
        assert!(credentials(FILE, "nope").unwrap().is_none());
        let e = credentials(FILE, "half").unwrap_err();
        assert!(e.contains("`aws_secret_access_key`"), "{e}");
        let e = credentials(FILE, "assume").unwrap_err();
        assert!(
            e.contains("`aws_access_key_id`") && e.contains("role_arn"),
            "{e}"
        );
    }

    #[test]
    fn malformed_lines_say_where() {
        assert!(parse("[default\nx = y\n").unwrap_err().contains("line 1"));
        assert!(parse("x = y\n").unwrap_err().contains("before any"));
        assert!(parse("[a]\njust words\n").unwrap_err().contains("line 2"));
        assert!(credentials("", "default").unwrap().is_none());
    }
}
