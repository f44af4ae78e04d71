//! Setting keys in puppet.conf (INI) without rewriting the rest of the file.
//!
//! cloud-init re-serialises the whole file (comments lost, `.old` copy left);
//! here only the named keys change: a key already in its section gets the new
//! value in place, a missing key is added at the end of its section, a missing
//! section is appended. Every other byte stays.

/// Sets `key = value` in `[section]` of `existing`.
pub fn set(existing: &str, section: &str, key: &str, value: &str) -> String {
    let mut lines: Vec<String> = existing.lines().map(str::to_string).collect();
    let mut current: Option<String> = None;
    // Index after the last non-blank line of the section's last block.
    let mut section_end: Option<usize> = None;
    let mut replaced = false;
    for (i, line) in lines.iter_mut().enumerate() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            current = Some(name.trim().to_string());
            if current.as_deref() == Some(section) {
                section_end = Some(i + 1);
            }
            continue;
        }
        if current.as_deref() != Some(section) {
            continue;
        }
        if !t.is_empty() {
            section_end = Some(i + 1);
        }
        if t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if let Some((k, _)) = t.split_once('=')
            && k.trim() == key
        {
            let indent = &line[..line.len() - line.trim_start().len()];
            *line = format!("{indent}{key} = {value}");
            replaced = true;
        }
    }
    if !replaced {
        match section_end {
            Some(at) => lines.insert(at, format!("{key} = {value}")),
            None => {
                if lines.last().is_some_and(|l| !l.trim().is_empty()) {
                    lines.push(String::new());
                }
                lines.push(format!("[{section}]"));
                lines.push(format!("{key} = {value}"));
            }
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_in_place_adds_to_section_and_appends_sections() {
        let conf = "# Debian's file\n[main]\nssldir = /var/lib/puppet/ssl\n\n[agent]\n  server = old\n# keep me\n\n[user]\nx = 1\n";
        let out = set(conf, "agent", "server", "puppet.example");
        assert_eq!(
            out,
            conf.replace("  server = old", "  server = puppet.example")
        );
        let out = set(&out, "agent", "certname", "web-1");
        assert_eq!(
            out,
            "# Debian's file\n[main]\nssldir = /var/lib/puppet/ssl\n\n[agent]\n  server = puppet.example\n# keep me\ncertname = web-1\n\n[user]\nx = 1\n"
        );
        let again = set(&out, "agent", "certname", "web-1");
        assert_eq!(again, out, "idempotent");
        let out = set(&out, "server", "autosign", "true");
        assert!(
            out.ends_with("x = 1\n\n[server]\nautosign = true\n"),
            "{out}"
        );
        assert_eq!(set("", "agent", "a", "b"), "[agent]\na = b\n");
        // A commented-out key is not the key.
        assert_eq!(
            set("[agent]\n#server = x\n", "agent", "server", "y"),
            "[agent]\n#server = x\nserver = y\n"
        );
    }
}
