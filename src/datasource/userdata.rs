//! User-data decoding, the same whatever the datasource: gzip (detected by its magic
//! bytes, size-capped), MIME (multipart split into parts, nested multipart, base64 and
//! quoted-printable bodies), `#cloud-config`, `#!` scripts and boothooks. What stoke does
//! not handle (`#include`, part handlers, ...) is kept in
//! [`UserData::other`] so the caller can report it.

use base64::Engine as _;
use std::io::Read;

/// User-data split by kind, in the order the parts appeared.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UserData {
    /// `#cloud-config` YAML documents (including their `#cloud-config` line).
    pub cloud_configs: Vec<String>,
    /// `#!` scripts, `text/x-shellscript[-per-*]` parts and boothooks, in order.
    pub scripts: Vec<Part>,
    /// Parts stoke does not support; worth a warning naming their type.
    pub other: Vec<Part>,
    /// `## template: jinja` parts that did not render (dropped; the others still apply).
    pub template_errors: Vec<String>,
}

/// Renders a `## template: jinja` body (its header line removed); the error says where.
pub type Render<'a> = &'a dyn Fn(&str) -> Result<String, String>;

#[derive(Clone, Debug, PartialEq)]
pub struct Part {
    /// MIME type, lower case (`text/x-shellscript`; sniffed for non-MIME user-data).
    pub content_type: String,
    /// From `Content-Disposition: ...; filename=...`, when given.
    pub filename: Option<String>,
    /// The body, transfer-decoded and gunzipped.
    pub content: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum UserDataError {
    #[error("{what}: starts like gzip (1f 8b) but does not decompress: {reason}")]
    Gzip { what: String, reason: String },
    #[error("{what}: more than {limit} bytes once decompressed (a gzip bomb?)")]
    TooLarge { what: String, limit: usize },
    #[error("{what}: not UTF-8 text (invalid byte at offset {offset})")]
    NotUtf8 { what: String, offset: usize },
    #[error("{what}: malformed MIME: {reason}")]
    Mime { what: String, reason: String },
}

/// Total decompressed size allowed, over all gzip layers and parts.
const MAX_DECOMPRESSED: usize = 64 * 1024 * 1024;
/// Nesting allowed (multipart in multipart, gzip in a part).
const MAX_DEPTH: usize = 8;
/// MIME entities allowed in one user-data (cloud-init users send a handful).
const MAX_PARTS: usize = 1000;

/// Splits raw user-data into cloud-configs, scripts and unsupported parts.
#[cfg(test)]
pub fn decode(raw: &[u8]) -> Result<UserData, UserDataError> {
    decode_limited(raw, MAX_DECOMPRESSED, None)
}

/// Like [`decode`], rendering `## template: jinja` parts (whole user-data or a part) first.
pub fn decode_rendering(raw: &[u8], render: Render) -> Result<UserData, UserDataError> {
    decode_limited(raw, MAX_DECOMPRESSED, Some(render))
}

fn decode_limited(
    raw: &[u8],
    max_decompressed: usize,
    render: Option<Render>,
) -> Result<UserData, UserDataError> {
    let mut d = Decoder {
        out: UserData::default(),
        parts: 0,
        budget: max_decompressed,
        limit: max_decompressed,
        render,
    };
    d.content(raw, None, None, "user-data", 0)?;
    Ok(d.out)
}

struct Decoder<'r> {
    out: UserData,
    /// MIME entities seen so far.
    parts: usize,
    render: Option<Render<'r>>,
    /// Decompressed bytes still allowed.
    budget: usize,
    limit: usize,
}

impl Decoder<'_> {
    /// A body whose type is `declared` (from MIME headers) or to be sniffed (`None`).
    fn content(
        &mut self,
        bytes: &[u8],
        declared: Option<&str>,
        filename: Option<&str>,
        what: &str,
        depth: usize,
    ) -> Result<(), UserDataError> {
        if depth > MAX_DEPTH {
            return Err(mime(
                what,
                format!("nested more than {MAX_DEPTH} levels deep"),
            ));
        }
        if bytes.starts_with(&[0x1f, 0x8b]) {
            let plain = self.gunzip(bytes, what)?;
            let declared = declared.filter(|t| !t.contains("gzip"));
            return self.content(&plain, declared, filename, what, depth + 1);
        }
        let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
        let top = declared.is_none();
        let ty = match declared {
            Some(t) if !is_sniffed(t) => t.to_string(),
            _ => {
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    return Ok(());
                }
                if top && looks_like_mime(bytes) {
                    return self.message(bytes, what, depth + 1);
                }
                sniff(bytes).to_string()
            }
        };
        let part = |content: Vec<u8>| Part {
            content_type: ty.clone(),
            filename: filename.map(String::from),
            content,
        };
        match ty.as_str() {
            "text/cloud-config" => {
                let text = utf8(bytes, what)?;
                self.out.cloud_configs.push(text.to_string());
            }
            "text/x-shellscript"
            | "text/x-shellscript-per-boot"
            | "text/x-shellscript-per-instance"
            | "text/x-shellscript-per-once"
            | "text/cloud-boothook" => {
                if top {
                    utf8(bytes, what)?;
                }
                self.out.scripts.push(part(bytes.to_vec()));
            }
            "text/jinja2" if self.render.is_some() => {
                let text = utf8(bytes, what)?;
                // The header line goes; the rendered text is user-data of its own kind.
                let body = text.split_once('\n').map_or("", |(_, rest)| rest);
                let rendered = self.render.map(|r| r(body));
                match rendered {
                    Some(Ok(out)) => {
                        return self.content(out.as_bytes(), None, filename, what, depth + 1);
                    }
                    Some(Err(e)) => self.out.template_errors.push(format!(
                        "{what}: jinja template: {e}; this part was not applied"
                    )),
                    None => {}
                }
            }
            _ => {
                if top {
                    utf8(bytes, what)?;
                }
                self.out.other.push(part(bytes.to_vec()));
            }
        }
        Ok(())
    }

    /// A MIME entity: headers, a blank line, a body.
    fn message(&mut self, bytes: &[u8], what: &str, depth: usize) -> Result<(), UserDataError> {
        // Multipart in multipart recurses here without passing through `content`: bound it
        // here too (thousands of levels would overflow the stack before any module runs).
        if depth > MAX_DEPTH {
            return Err(mime(
                what,
                format!("nested more than {MAX_DEPTH} levels deep"),
            ));
        }
        self.parts += 1;
        if self.parts > MAX_PARTS {
            return Err(mime(what, format!("more than {MAX_PARTS} parts")));
        }
        let (headers, body) = split_headers(bytes);
        let ctype = header(&headers, "content-type").unwrap_or("text/plain");
        let (ty, params) = parse_params(ctype);
        let filename = header(&headers, "content-disposition")
            .and_then(|v| parse_params(v).1.into_iter().find(|(k, _)| k == "filename"))
            .map(|(_, v)| v);
        let cte = header(&headers, "content-transfer-encoding")
            .unwrap_or("7bit")
            .trim()
            .to_ascii_lowercase();
        if ty.starts_with("multipart/") {
            if !matches!(cte.as_str(), "7bit" | "8bit" | "binary") {
                return Err(mime(
                    what,
                    format!("a multipart body cannot be {cte}-encoded"),
                ));
            }
            let Some((_, boundary)) = params.iter().find(|(k, _)| k == "boundary") else {
                return Err(mime(what, format!("{ty} without a boundary parameter")));
            };
            if boundary.is_empty() || boundary.len() > 200 {
                return Err(mime(what, format!("unusable boundary {boundary:?}")));
            }
            let Some(parts) = split_multipart(body, boundary) else {
                return Err(mime(
                    what,
                    format!("no part delimited by boundary {boundary:?}"),
                ));
            };
            for (i, p) in parts.into_iter().enumerate() {
                let label = if what.contains(" part ") {
                    format!("{what}.{}", i + 1)
                } else {
                    format!("{what} part {}", i + 1)
                };
                self.message(p, &label, depth + 1)?;
            }
            return Ok(());
        }
        let decoded = match cte.as_str() {
            "7bit" | "8bit" | "binary" => body.to_vec(),
            "base64" => base64_decode(body).map_err(|e| mime(what, format!("base64 body: {e}")))?,
            "quoted-printable" => quoted_printable(body),
            other => {
                return Err(mime(
                    what,
                    format!("unsupported Content-Transfer-Encoding {other:?}"),
                ));
            }
        };
        let what = format!("{what} ({ty})");
        self.content(&decoded, Some(&ty), filename.as_deref(), &what, depth)
    }

    fn gunzip(&mut self, bytes: &[u8], what: &str) -> Result<Vec<u8>, UserDataError> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes)
            .take(self.budget as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| UserDataError::Gzip {
                what: what.to_string(),
                reason: e.to_string(),
            })?;
        if out.len() > self.budget {
            return Err(UserDataError::TooLarge {
                what: what.to_string(),
                limit: self.limit,
            });
        }
        self.budget -= out.len();
        Ok(out)
    }
}

fn mime(what: &str, reason: impl Into<String>) -> UserDataError {
    UserDataError::Mime {
        what: what.to_string(),
        reason: reason.into(),
    }
}

fn utf8<'a>(bytes: &'a [u8], what: &str) -> Result<&'a str, UserDataError> {
    std::str::from_utf8(bytes).map_err(|e| UserDataError::NotUtf8 {
        what: what.to_string(),
        offset: e.valid_up_to(),
    })
}

/// Declared types whose real kind is found from the content, as cloud-init does.
fn is_sniffed(ty: &str) -> bool {
    matches!(
        ty,
        "text/plain" | "application/octet-stream" | "application/gzip" | "application/x-gzip"
    )
}

/// The kind of a body from its first line, with cloud-init's type names.
fn sniff(bytes: &[u8]) -> &'static str {
    let first = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let first = first.trim_ascii_end();
    let starts = |p: &[u8]| first.len() >= p.len() && first[..p.len()].eq_ignore_ascii_case(p);
    if first == b"#cloud-config" {
        "text/cloud-config"
    } else if first.starts_with(b"#!") {
        "text/x-shellscript"
    } else if starts(b"#cloud-config-archive") {
        "text/cloud-config-archive"
    } else if starts(b"#include-once") {
        "text/x-include-once-url"
    } else if starts(b"#include") {
        "text/x-include-url"
    } else if starts(b"#cloud-boothook") {
        "text/cloud-boothook"
    } else if starts(b"#part-handler") {
        "text/part-handler"
    } else if starts(b"## template: jinja") {
        "text/jinja2"
    } else {
        "text/plain"
    }
}

fn looks_like_mime(bytes: &[u8]) -> bool {
    let first = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let Some(colon) = first.iter().position(|&b| b == b':') else {
        return false;
    };
    let name = first[..colon].trim_ascii();
    name.eq_ignore_ascii_case(b"content-type") || name.eq_ignore_ascii_case(b"mime-version")
}

/// Header lines (unfolded, names lower-cased) and the body after the blank line. A line
/// that cannot be a header ends the headers (lenient, like Python's `email`).
fn split_headers(bytes: &[u8]) -> (Vec<(String, String)>, &[u8]) {
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let end = bytes[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| pos + i);
        let next = (end + 1).min(bytes.len());
        let line = String::from_utf8_lossy(&bytes[pos..end]);
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            return (headers, &bytes[next..]);
        }
        if line.starts_with([' ', '\t'])
            && let Some((_, v)) = headers.last_mut()
        {
            v.push(' ');
            v.push_str(line.trim());
            pos = next;
            continue;
        }
        match line.split_once(':') {
            Some((name, value))
                if !name.is_empty() && !name.contains(|c: char| c.is_whitespace()) =>
            {
                headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
            }
            _ => return (headers, &bytes[pos..]),
        }
        pos = next;
    }
    (headers, &bytes[bytes.len()..])
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `type/sub; a=1; b="x;y"` → (`type/sub` lower-cased, [(a, 1), (b, x;y)]).
fn parse_params(value: &str) -> (String, Vec<(String, String)>) {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in value.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
        } else if quoted && c == '\\' {
            cur.push(c);
            escaped = true;
        } else if c == '"' {
            cur.push(c);
            quoted = !quoted;
        } else if c == ';' && !quoted {
            fields.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    fields.push(cur);
    let mut it = fields.into_iter();
    let ty = it.next().unwrap_or_default().trim().to_ascii_lowercase();
    let params = it
        .filter_map(|f| {
            let (k, v) = f.split_once('=')?;
            let v = v.trim();
            let v = match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                Some(inner) => {
                    let mut s = String::new();
                    let mut esc = false;
                    for c in inner.chars() {
                        if c == '\\' && !esc {
                            esc = true;
                        } else {
                            s.push(c);
                            esc = false;
                        }
                    }
                    s
                }
                None => v.to_string(),
            };
            Some((k.trim().to_ascii_lowercase(), v))
        })
        .collect();
    (ty, params)
}

/// The parts of a multipart body (RFC 2046): the line break before a delimiter belongs
/// to the delimiter; preamble and epilogue are dropped. A missing close delimiter is
/// tolerated (the last part runs to the end). `None` when no delimiter is found.
fn split_multipart<'a>(body: &'a [u8], boundary: &str) -> Option<Vec<&'a [u8]>> {
    let delim = format!("--{boundary}");
    let delim = delim.as_bytes();
    let mut parts = Vec::new();
    let mut start: Option<usize> = None;
    let mut pos = 0;
    while pos < body.len() {
        let end = body[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |i| pos + i);
        let next = (end + 1).min(body.len());
        let line = &body[pos..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(rest) = line.strip_prefix(delim) {
            let close = rest.starts_with(b"--");
            if close || rest.iter().all(|&b| b == b' ' || b == b'\t') {
                if let Some(s) = start {
                    let mut e = pos;
                    if e > s && body[e - 1] == b'\n' {
                        e -= 1;
                        if e > s && body[e - 1] == b'\r' {
                            e -= 1;
                        }
                    }
                    parts.push(&body[s..e]);
                }
                if close {
                    return Some(parts);
                }
                start = Some(next);
            }
        }
        pos = next;
    }
    match start {
        Some(s) => {
            parts.push(&body[s..]);
            Some(parts)
        }
        None => None,
    }
}

fn base64_decode(body: &[u8]) -> Result<Vec<u8>, base64::DecodeError> {
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let compact: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    engine.decode(compact)
}

/// RFC 2045 quoted-printable; a stray `=` is kept as is.
fn quoted_printable(body: &[u8]) -> Vec<u8> {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let mut out = Vec::with_capacity(body.len());
    let mut lines = body.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = line.trim_ascii_end();
        let (line, soft) = match line.strip_suffix(b"=") {
            Some(l) => (l, true),
            None => (line, false),
        };
        let mut i = 0;
        while i < line.len() {
            if line[i] == b'='
                && let (Some(h), Some(l)) = (
                    line.get(i + 1).copied().and_then(hex),
                    line.get(i + 2).copied().and_then(hex),
                )
            {
                out.push((h << 4) | l);
                i += 3;
                continue;
            }
            out.push(line[i]);
            i += 1;
        }
        if !soft && lines.peek().is_some() {
            out.push(b'\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("gzip");
        e.finish().expect("gzip")
    }

    #[test]
    fn empty_is_nothing() {
        assert_eq!(decode(b"").expect("ok"), UserData::default());
        assert_eq!(decode(b" \n\t\n").expect("ok"), UserData::default());
    }

    #[test]
    fn cloud_config_and_script() {
        let ud = decode(b"#cloud-config\nhostname: a\n").expect("ok");
        assert_eq!(ud.cloud_configs, ["#cloud-config\nhostname: a\n"]);
        assert!(ud.scripts.is_empty() && ud.other.is_empty());

        let ud = decode(b"\xef\xbb\xbf#cloud-config\r\nhostname: a\r\n").expect("ok");
        assert_eq!(ud.cloud_configs, ["#cloud-config\r\nhostname: a\r\n"]);

        let ud = decode(b"#!/bin/bash\necho hi\n").expect("ok");
        assert_eq!(ud.scripts.len(), 1);
        assert_eq!(ud.scripts[0].content_type, "text/x-shellscript");
        assert_eq!(ud.scripts[0].content, b"#!/bin/bash\necho hi\n");
    }

    #[test]
    fn boothooks_and_script_parts_by_frequency_are_scripts_in_order() {
        let ud = decode(b"#cloud-boothook\necho\n").expect("ok");
        assert_eq!(ud.scripts.len(), 1);
        assert_eq!(ud.scripts[0].content_type, "text/cloud-boothook");

        let msg = b"Content-Type: multipart/mixed; boundary=XX\n\n--XX\n\
Content-Type: text/x-shellscript-per-boot\nContent-Disposition: attachment; filename=\"b.sh\"\n\n\
#!/bin/sh\necho boot\n--XX\nContent-Type: text/cloud-boothook\n\n#cloud-boothook\necho hook\n\
--XX\nContent-Type: text/x-shellscript-per-once\n\n#!/bin/sh\necho once\n--XX--\n";
        let ud = decode(msg).expect("ok");
        let kinds: Vec<_> = ud.scripts.iter().map(|p| p.content_type.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "text/x-shellscript-per-boot",
                "text/cloud-boothook",
                "text/x-shellscript-per-once"
            ]
        );
        assert_eq!(ud.scripts[0].filename.as_deref(), Some("b.sh"));
    }

    #[test]
    fn unsupported_kinds_are_other() {
        for (text, ty) in [
            (
                &b"#include\nhttp://example.com/x\n"[..],
                "text/x-include-url",
            ),
            (b"#cloud-config-archive\n- a\n", "text/cloud-config-archive"),
            // Without a renderer (never at boot) a template stays unread.
            (b"## template: jinja\n#cloud-config\n", "text/jinja2"),
            (b"hostname: a\n", "text/plain"),
        ] {
            let ud = decode(text).expect("ok");
            assert!(ud.cloud_configs.is_empty() && ud.scripts.is_empty());
            assert_eq!(ud.other.len(), 1);
            assert_eq!(ud.other[0].content_type, ty);
        }
    }

    #[test]
    fn non_utf8_is_an_error() {
        let err = decode(b"#cloud-config\nhostname: \xff\n").expect_err("bad");
        assert!(
            matches!(err, UserDataError::NotUtf8 { offset: 24, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("UTF-8"));
        assert!(decode(b"\xfe\xff\x00garbage").is_err());
    }

    #[test]
    fn gzip_is_detected_by_magic() {
        let ud = decode(&gz(b"#cloud-config\nhostname: z\n")).expect("ok");
        assert_eq!(ud.cloud_configs, ["#cloud-config\nhostname: z\n"]);
        let err = decode(b"\x1f\x8bnot really gzip").expect_err("bad");
        assert!(matches!(err, UserDataError::Gzip { .. }), "{err}");
    }

    #[test]
    fn gzip_bomb_is_capped() {
        // 1 MiB of zeros is ~1 KiB of gzip; concatenated members decompress back to back.
        let member = gz(&vec![0u8; 1024 * 1024]);
        let bomb = member.repeat(5);
        assert!(bomb.len() < 64 * 1024);
        let err = decode_limited(&bomb, 4 * 1024 * 1024, None).expect_err("bomb");
        assert!(
            matches!(err, UserDataError::TooLarge { limit, .. } if limit == 4 << 20),
            "{err}"
        );
        assert_eq!(
            decode_limited(&bomb, 5 * 1024 * 1024, None)
                .expect("fits")
                .other
                .len(),
            1
        );
    }

    const MULTI: &str = "Content-Type: multipart/mixed; boundary=\"===============123==\"\r\n\
MIME-Version: 1.0\r\n\
\r\n\
This is the preamble.\r\n\
--===============123==\r\n\
Content-Type: text/cloud-config; charset=\"us-ascii\"\r\n\
MIME-Version: 1.0\r\n\
Content-Transfer-Encoding: 7bit\r\n\
Content-Disposition: attachment; filename=\"cloud-config.txt\"\r\n\
\r\n\
#cloud-config\r\n\
hostname: one\r\n\
\r\n\
--===============123==\r\n\
Content-Type: text/x-shellscript; charset=\"us-ascii\"\r\n\
Content-Transfer-Encoding: base64\r\n\
Content-Disposition: attachment;\r\n\
\tfilename=\"setup.sh\"\r\n\
\r\n\
IyEvYmluL3NoCmVjaG8g\r\n\
aGkK\r\n\
--===============123==\r\n\
Content-Type: text/x-include-url\r\n\
\r\n\
http://example.com/more\r\n\
--===============123==\r\n\
Content-Type: text/plain\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
#cloud-config\r\n\
hostname: t=\r\n\
wo=3D2\r\n\
--===============123==--\r\n\
epilogue\r\n";

    #[test]
    fn multipart_parts_are_split_and_decoded() {
        let ud = decode(MULTI.as_bytes()).expect("ok");
        assert_eq!(
            ud.cloud_configs,
            [
                "#cloud-config\r\nhostname: one\r\n",
                "#cloud-config\nhostname: two=2"
            ]
        );
        assert_eq!(ud.scripts.len(), 1);
        assert_eq!(ud.scripts[0].content, b"#!/bin/sh\necho hi\n");
        assert_eq!(ud.scripts[0].filename.as_deref(), Some("setup.sh"));
        assert_eq!(ud.other.len(), 1);
        assert_eq!(ud.other[0].content_type, "text/x-include-url");
        assert_eq!(ud.other[0].content, b"http://example.com/more");
        // gzip of the whole message, as `cloud-init devel make-mime | gzip` gives.
        assert_eq!(decode(&gz(MULTI.as_bytes())).expect("ok"), ud);
    }

    #[test]
    fn nested_multipart_and_gzip_part() {
        let inner_cfg =
            base64::engine::general_purpose::STANDARD.encode(gz(b"#cloud-config\na: 1\n"));
        let msg = format!(
            "Content-Type: multipart/mixed; boundary=outer\n\n\
--outer\nContent-Type: multipart/alternative; boundary=inner\n\n\
--inner\nContent-Type: application/x-gzip\nContent-Transfer-Encoding: base64\n\n{inner_cfg}\n\
--inner\n\n#!/bin/sh\ntrue\n--inner--\n\
--outer\nContent-Type: text/cloud-config\n\nb: 2\n--outer--\n"
        );
        let ud = decode(msg.as_bytes()).expect("ok");
        assert_eq!(ud.cloud_configs, ["#cloud-config\na: 1\n", "b: 2"]);
        assert_eq!(ud.scripts.len(), 1);
        assert_eq!(ud.scripts[0].content, b"#!/bin/sh\ntrue");
    }

    #[test]
    fn missing_close_delimiter_is_tolerated() {
        let ud =
            decode(b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\n#cloud-config\nx: 1\n")
                .expect("ok");
        assert_eq!(ud.cloud_configs, ["#cloud-config\nx: 1\n"]);
    }

    #[test]
    fn malformed_mime_is_an_error() {
        for bad in [
            &b"Content-Type: multipart/mixed\n\n--x\n\nhi\n--x--\n"[..],
            b"Content-Type: multipart/mixed; boundary=zz\n\n--x\n\nhi\n--x--\n",
            b"Content-Type: text/cloud-config\nContent-Transfer-Encoding: base64\n\n!!!not base64!!!\n",
            b"Content-Type: text/cloud-config\nContent-Transfer-Encoding: x-uuencode\n\nbegin\n",
        ] {
            let err = decode(bad).expect_err("bad");
            assert!(matches!(err, UserDataError::Mime { .. }), "{err}");
        }
    }

    #[test]
    fn non_utf8_part_names_the_part() {
        let msg = b"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/cloud-config\n\nx: \xff\n--b--\n";
        let err = decode(msg).expect_err("bad");
        assert!(err.to_string().contains("part 1"), "{err}");
        assert!(matches!(err, UserDataError::NotUtf8 { .. }), "{err}");
    }

    #[test]
    fn single_part_mime_message() {
        let ud = decode(b"Content-Type: text/x-shellscript\nMIME-Version: 1.0\n\n#!/bin/sh\n")
            .expect("ok");
        assert_eq!(ud.scripts.len(), 1);
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let mut msg = b"#cloud-config\n".to_vec();
        for _ in 0..20 {
            msg = gz(&msg);
        }
        assert!(decode(&msg).is_err());
    }

    /// Thousands of nested multiparts (well under the size cap) end in an error, not a crash.
    #[test]
    fn deeply_nested_multipart_is_an_error_not_a_stack_overflow() {
        let mut msg = String::from("#cloud-config\n");
        for i in 0..3000 {
            msg = format!(
                "Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n{msg}\n--b{i}--\n"
            );
        }
        let err = decode(msg.as_bytes()).expect_err("too deep");
        assert!(err.to_string().contains("levels deep"), "{err}");
    }

    #[test]
    fn too_many_parts_is_an_error() {
        let mut msg = String::from("Content-Type: multipart/mixed; boundary=B\n\n");
        for _ in 0..1500 {
            msg.push_str("--B\nContent-Type: text/x-shellscript\n\n#!/bin/sh\n");
        }
        msg.push_str("--B--\n");
        let err = decode(msg.as_bytes()).expect_err("too many");
        assert!(err.to_string().contains("more than 1000 parts"), "{err}");
    }

    #[test]
    fn parses_params_with_quotes() {
        let (ty, p) = parse_params(r#"Multipart/Mixed; Boundary="a;b\"c"; charset=utf-8"#);
        assert_eq!(ty, "multipart/mixed");
        assert_eq!(
            p,
            [
                ("boundary".to_string(), "a;b\"c".to_string()),
                ("charset".to_string(), "utf-8".to_string())
            ]
        );
    }
}
