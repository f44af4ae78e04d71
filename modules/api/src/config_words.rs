//! Configuration errors in the user's words. The YAML deserializer speaks of "sequence start",
//! "invalid u32" and "untagged enum ModeRepr"; a person wrote `ssh_genkeytypes: ed25519` and
//! needs to read "ssh_genkeytypes must be a list, e.g. [ed25519]". The key's path is read back
//! from the text at the error's position (block-style YAML, as configs are written); when it
//! cannot be, the message still reads as words, without the path.

use crate::config::nearest;

/// The message for a deserializer `message` at `line`:`column` (1-based) of `text`.
pub fn reword(message: &str, text: &str, line: Option<u64>, column: Option<u64>) -> String {
    let at = line.zip(column).and_then(|(l, c)| {
        Some((
            usize::try_from(l).ok()?.checked_sub(1)?,
            usize::try_from(c).ok()?.checked_sub(1)?,
        ))
    });
    if let Some(rest) = message.strip_prefix("unknown field `") {
        // Here the position is the key's own.
        let path = at.and_then(|(l, c)| key_path(text, l, c, true));
        return unknown_key(rest, path.as_deref());
    }
    // Everywhere else the position is the value's.
    let path = at.and_then(|(l, c)| key_path(text, l, c, false));
    let written = at.and_then(|(l, c)| scalar_at(text, l, c));
    let subject = path.clone().unwrap_or_else(|| "this value".to_string());
    let example = |wrap: fn(&str) -> String| {
        written
            .as_deref()
            .map(|w| format!(", e.g. {}", wrap(w)))
            .unwrap_or_default()
    };
    match message {
        "expected sequence start" => {
            format!("{subject} must be a list{}", example(|w| format!("[{w}]")))
        }
        "expected mapping start" => format!(
            "{subject} must be a mapping of keys to values (indented `key: value` lines, or {{key: value}})"
        ),
        "expected string scalar" => {
            format!("{subject} must be a single text value, not a list or a mapping")
        }
        "invalid boolean" => format!("{subject} must be true or false{}", got(&written)),
        m if m.starts_with("invalid u") => {
            format!(
                "{subject} must be a whole number, 0 or more{}",
                got(&written)
            )
        }
        m if m.starts_with("invalid i") => {
            format!("{subject} must be a whole number{}", got(&written))
        }
        m if m.starts_with("invalid f") => format!("{subject} must be a number{}", got(&written)),
        m if m.starts_with("unknown variant `") => {
            let rest = &m["unknown variant `".len()..];
            let value = rest.split('`').next().unwrap_or("");
            let choices = rest.split("expected one of ").nth(1).unwrap_or("");
            let mut out = format!("{subject} must be one of {choices} (not `{value}`)");
            let candidates = choices.split(", ").map(|c| c.trim_matches('`'));
            if let Some(best) = nearest(value, candidates) {
                out.push_str(&format!("; did you mean `{best}`?"));
            }
            out
        }
        m if m.starts_with("data did not match any variant") => format!(
            "{subject}{}: not a value it accepts (see docs/configuration.md or `stoke schema --json-schema`)",
            got(&written)
        ),
        m if m.starts_with("missing field `") => {
            let field = m["missing field `".len()..].split('`').next().unwrap_or("");
            format!("{subject} needs `{field}`")
        }
        // A module's own message may name its key already.
        m => match &path {
            Some(p) if !m.starts_with(&format!("{p}:")) => format!("{p}: {m}"),
            _ => m.to_string(),
        },
    }
}

fn got(written: &Option<String>) -> String {
    written
        .as_deref()
        .map(|w| format!(" (not `{w}`)"))
        .unwrap_or_default()
}

/// "unknown field `x`, expected one of a, b" as the top-level check says it: the key, where,
/// the nearest known key, else the keys there are.
fn unknown_key(rest: &str, path: Option<&str>) -> String {
    let name = rest.split('`').next().unwrap_or("");
    let expected = rest
        .split("expected one of ")
        .nth(1)
        .or_else(|| rest.split("expected ").nth(1))
        .unwrap_or("");
    let candidates: Vec<&str> = expected
        .split(", ")
        .map(|c| c.trim_matches('`'))
        .filter(|c| !c.is_empty())
        .collect();
    let section = path
        .and_then(|p| p.rsplit_once('.'))
        .map(|(parent, _)| format!(" in `{parent}`"))
        .unwrap_or_default();
    let mut out = format!("unknown key `{name}`{section}");
    match nearest(name, candidates.iter().copied()) {
        Some(best) => out.push_str(&format!("; did you mean `{best}`?")),
        None if !candidates.is_empty() => {
            out.push_str(&format!(" (known keys: {})", candidates.join(", ")))
        }
        None => {}
    }
    out
}

/// The dotted path of the key at (`line`, `col`) (0-based) when `at_key`, else of the key whose
/// value starts there. `[]` marks a list item on the way (`route53.records[].ttl`).
fn key_path(text: &str, line: usize, col: usize, at_key: bool) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let here = *lines.get(line)?;
    let before: String = here.chars().take(col).collect();
    let (mut key, mut indent) = if let Some(open) = before.find(['{', '[']) {
        // Inside a flow collection on the key's line (`hostname: {frequency: x}`, `[a, b]`).
        let outer = &before[..open];
        let outer_key = outer.trim_end().strip_suffix(':').map(|k| {
            let start = k.len() - k.trim_start_matches([' ', '-']).len();
            (unquote(k[start..].trim()).to_string(), start)
        });
        let (outer_key, start) = outer_key?;
        let inner = &before[open..];
        let key = if inner.ends_with(['[', ',', ' ']) && inner.contains('[') && !inner.contains('{')
        {
            format!("{outer_key}[]")
        } else if at_key {
            let rest: String = here.chars().skip(col).collect();
            format!("{outer_key}.{}", key_of(&rest)?)
        } else {
            let k = inner.trim_end().strip_suffix(':')?;
            let k = k.rsplit(['{', ',']).next().unwrap_or("");
            format!("{outer_key}.{}", unquote(k.trim()))
        };
        (key, start)
    } else if at_key {
        let rest: String = here.chars().skip(col).collect();
        let key = key_of(&rest)?;
        if before.trim() == "-" {
            (format!("[].{key}"), indent_of(here))
        } else {
            (key, col)
        }
    } else if let Some(k) = before.trim_end().strip_suffix(':') {
        // `key: value` on one line; the key may follow a list dash.
        let start = k.len() - k.trim_start_matches([' ', '-']).len();
        let key = unquote(k[start..].trim()).to_string();
        if k.trim_start().starts_with('-') {
            (format!("[].{key}"), indent_of(k))
        } else {
            (key, start)
        }
    } else if before.trim().is_empty() || before.trim() == "-" {
        // A value on the lines under its key: the key is the parent found below.
        (String::new(), col.min(indent_of(here)))
    } else {
        return None;
    };
    let mut path: Vec<String> = Vec::new();
    if !key.is_empty() {
        path.push(std::mem::take(&mut key));
    }
    for l in lines[..line].iter().rev() {
        let content = l.trim_start();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let ind = indent_of(l);
        if ind >= indent {
            continue;
        }
        if let Some(item) = content.strip_prefix("- ") {
            // A list item: a key on the dash's line is a sibling, not a parent.
            let item_indent = ind + 2 + (item.len() - item.trim_start().len());
            if item_indent == indent {
                indent = ind;
                if let Some(last) = path.first_mut() {
                    last.insert_str(0, "[].");
                } else {
                    path.insert(0, "[]".to_string());
                }
                continue;
            }
            return None;
        }
        let parent = key_of(content)?;
        indent = ind;
        match path.first_mut() {
            Some(first) if first.starts_with("[]") => first.insert_str(0, &parent),
            _ => path.insert(0, parent),
        }
        if ind == 0 {
            break;
        }
    }
    (!path.is_empty()).then(|| path.join(".").replace(".[]", "[]"))
}

/// `key` of a `key: ...` or `key:` line.
fn key_of(content: &str) -> Option<String> {
    let (k, _) = content.split_once(':')?;
    let k = unquote(k.trim());
    (!k.is_empty() && !k.contains(['{', '[', ' '])).then(|| k.to_string())
}

fn unquote(s: &str) -> &str {
    s.trim_matches(|c| c == '"' || c == '\'')
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// The plain scalar written at (`line`, `col`), if that is what is there (not a `[` or `{`).
fn scalar_at(text: &str, line: usize, col: usize) -> Option<String> {
    let here = text.lines().nth(line)?;
    // Only a value right after its key or inside a flow list (`[a, b]`), not a nested mapping.
    let before: String = here.chars().take(col).collect();
    if !before.trim_end().ends_with([':', '[', ',']) {
        return None;
    }
    let rest: String = here.chars().skip(col).collect();
    let value = rest.split(" #").next().unwrap_or("").trim();
    let value = value
        .trim_end_matches(',')
        .trim_end_matches([']', '}'])
        .trim();
    let plain = !value.is_empty() && !value.starts_with(['[', '{', '&', '*', '|', '>']);
    plain.then(|| unquote(value).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(message: &str, text: &str, line: u64, col: u64) -> String {
        reword(message, text, Some(line), Some(col))
    }

    #[test]
    fn a_scalar_where_a_list_goes_gets_an_example_list() {
        assert_eq!(
            at(
                "expected sequence start",
                "ssh_genkeytypes: ed25519\n",
                1,
                18
            ),
            "ssh_genkeytypes must be a list, e.g. [ed25519]"
        );
        assert_eq!(
            at(
                "expected sequence start",
                "disks:\n  devices: /dev/nvme1n1\n",
                2,
                12
            ),
            "disks.devices must be a list, e.g. [/dev/nvme1n1]"
        );
        // The value on the lines under the key: the key is its parent.
        assert_eq!(
            at(
                "expected sequence start",
                "ssh_genkeytypes:\n  a: b\n",
                2,
                3
            ),
            "ssh_genkeytypes must be a list"
        );
    }

    #[test]
    fn numbers_booleans_and_choices_in_words() {
        let text = "route53:\n  records:\n    - name: a\n      ttl: abc\n  wait_for_sync: maybe\n";
        assert_eq!(
            at("invalid u32", text, 4, 12),
            "route53.records[].ttl must be a whole number, 0 or more (not `abc`)"
        );
        assert_eq!(
            at("invalid boolean", text, 5, 18),
            "route53.wait_for_sync must be true or false (not `maybe`)"
        );
        assert_eq!(
            at(
                "unknown variant `raid9`, expected one of raid0, jbod, single, off",
                "disks:\n  mode: raid9\n",
                2,
                9
            ),
            "disks.mode must be one of raid0, jbod, single, off (not `raid9`); did you mean `raid0`?"
        );
        assert_eq!(
            at(
                "data did not match any variant of untagged enum ModeRepr",
                "puppet:\n  mode: sometimes\n",
                2,
                9
            ),
            "puppet.mode (not `sometimes`): not a value it accepts (see docs/configuration.md or \
             `stoke schema --json-schema`)"
        );
    }

    #[test]
    fn an_unknown_nested_key_names_its_section_and_the_nearest_key() {
        let message = "unknown field `zone_idd`, expected one of hosted_zone_id, zone_name, ttl";
        assert_eq!(
            at(message, "route53:\n  zone_idd: Z1\n", 2, 3),
            "unknown key `zone_idd` in `route53`; did you mean `hosted_zone_id`?"
        );
        let message = "unknown field `qqqq`, expected one of hosted_zone_id, zone_name";
        assert_eq!(
            at(message, "route53:\n  qqqq: 1\n", 2, 3),
            "unknown key `qqqq` in `route53` (known keys: hosted_zone_id, zone_name)"
        );
    }

    #[test]
    fn keys_in_list_items_are_marked() {
        let text = "route53:\n  records:\n    - nmae: a\n    - name: [x]\n";
        assert_eq!(
            at(
                "unknown field `nmae`, expected one of name, ttl",
                text,
                3,
                7
            ),
            "unknown key `nmae` in `route53.records[]`; did you mean `name`?"
        );
        assert_eq!(
            at("expected string scalar", text, 4, 13),
            "route53.records[].name must be a single text value, not a list or a mapping"
        );
    }

    #[test]
    fn flow_collections_on_the_keys_line() {
        let text = "modules:\n  hostname: {frequency: always}\nssh_genkeytypes: [ed25519, 3]\n";
        assert_eq!(
            at(
                "unknown variant `always`, expected one of once, per-instance, per-boot",
                text,
                2,
                25
            ),
            "modules.hostname.frequency must be one of once, per-instance, per-boot (not `always`)"
        );
        assert_eq!(
            at(
                "unknown field `frequncy`, expected one of frequency, enabled",
                "modules:\n  hostname: {frequncy: per-boot}\n",
                2,
                14
            ),
            "unknown key `frequncy` in `modules.hostname`; did you mean `frequency`?"
        );
        assert_eq!(
            at(
                "unknown variant `3`, expected one of ecdsa, ed25519",
                text,
                3,
                28
            ),
            "ssh_genkeytypes[] must be one of ecdsa, ed25519 (not `3`)"
        );
    }

    #[test]
    fn without_a_readable_position_the_words_stay() {
        assert_eq!(
            reword("expected sequence start", "{a: b}", None, None),
            "this value must be a list"
        );
        assert_eq!(
            reword("something else", "", Some(9), Some(9)),
            "something else"
        );
    }
}
