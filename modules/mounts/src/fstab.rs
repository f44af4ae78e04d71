//! A small /etc/fstab reader and editor: six whitespace-separated fields with
//! octal escapes (`\040` for a space). stoke owns the lines whose options carry
//! its marker and rewrites only those; every other byte stays as it was.

use stoke_api::unescape_octal;
/// The option that marks a line as stoke's (`x-*` options are ignored by mount(8),
/// the kernel and systemd). Lines for the `disks` results carry `x-stoke=disks`, for the
/// `volumes` results `x-stoke=volumes`.
pub const MARKER: &str = "x-stoke";
pub const MARKER_DISKS: &str = "x-stoke=disks";
/// Lines for the `volumes` results (EBS data volumes).
pub const MARKER_VOLUMES: &str = "x-stoke=volumes";
/// The swap file line of the `swap` module: `mounts` leaves it alone.
pub const MARKER_SWAP: &str = "x-stoke=swap";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub spec: String,
    pub file: String,
    pub vfstype: String,
    pub mntops: String,
    pub freq: String,
    pub passno: String,
}

impl Entry {
    /// The line as stoke writes it (tab-separated, escaped, newline-terminated).
    pub fn render(&self) -> String {
        let f = [
            &self.spec,
            &self.file,
            &self.vfstype,
            &self.mntops,
            &self.freq,
            &self.passno,
        ];
        let mut s = f.iter().map(|x| escape(x)).collect::<Vec<_>>().join("\t");
        s.push('\n');
        s
    }

    pub fn options(&self) -> impl Iterator<Item = &str> {
        self.mntops.split(',').filter(|o| !o.is_empty())
    }

    /// Whether stoke wrote this line.
    pub fn is_owned(&self) -> bool {
        self.options()
            .any(|o| o == MARKER || o.starts_with("x-stoke="))
    }

    pub fn is_disks(&self) -> bool {
        self.options().any(|o| o == MARKER_DISKS)
    }

    pub fn is_volumes(&self) -> bool {
        self.options().any(|o| o == MARKER_VOLUMES)
    }

    pub fn is_swap(&self) -> bool {
        self.options().any(|o| o == MARKER_SWAP)
    }
}

/// Escapes the characters fstab cannot hold literally.
pub fn escape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    for c in field.chars() {
        match c {
            ' ' => out.push_str("\\040"),
            '\t' => out.push_str("\\011"),
            '\n' => out.push_str("\\012"),
            '\\' => out.push_str("\\134"),
            '#' if out.is_empty() => out.push_str("\\043"),
            c => out.push(c),
        }
    }
    out
}

/// Parses one line: None for blanks, comments and lines with too few fields.
/// Missing freq/passno read as "0" (as mount(8) does).
pub fn parse_line(line: &str) -> Option<Entry> {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') {
        return None;
    }
    let f: Vec<String> = t.split_whitespace().map(unescape_octal).collect();
    if f.len() < 4 {
        return None;
    }
    Some(Entry {
        spec: f[0].clone(),
        file: f[1].clone(),
        vfstype: f[2].clone(),
        mntops: f[3].clone(),
        freq: f.get(4).cloned().unwrap_or_else(|| "0".into()),
        passno: f.get(5).cloned().unwrap_or_else(|| "0".into()),
    })
}

/// Every entry of a file, with its 1-based line number.
pub fn entries(text: &str) -> Vec<(usize, Entry)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| parse_line(l).map(|e| (i + 1, e)))
        .collect()
}

/// Normalises a mount point for comparisons (`/mnt/` = `/mnt`).
/// A mount point as a path, not a spelling: `//`, `.` and trailing `/` dropped, `..` taken
/// back (never above `/`). `/media//cdrom0/` and `/mnt/../media/cdrom0` are `/media/cdrom0`.
pub fn norm(mp: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in mp.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Mount points stoke never mounts over: the root and the system's own trees.
pub fn is_system_mount_point(mp: &str) -> bool {
    const SYSTEM: &[&str] = &[
        "/", "/boot", "/usr", "/etc", "/bin", "/sbin", "/lib", "/lib64", "/var", "/proc", "/sys",
        "/dev", "/run",
    ];
    let mp = norm(mp);
    SYSTEM.contains(&mp.as_str())
        || ["/proc/", "/sys/", "/dev/", "/boot/"]
            .iter()
            .any(|p| mp.starts_with(p))
}

/// The result of [`rewrite`].
#[derive(Debug, PartialEq)]
pub struct Rewrite {
    pub text: String,
    /// Mount points of stoke lines that were dropped.
    pub removed: Vec<String>,
}

/// Rewrites stoke's lines of `existing` to be exactly `desired`: an owned line
/// whose mount point is still wanted is replaced in place, other owned lines are
/// dropped (unless `keep` says so), new entries are appended in the given order.
/// Foreign lines, comments and blanks stay byte-identical.
pub fn rewrite(existing: &str, desired: &[Entry], keep: impl Fn(&Entry) -> bool) -> Rewrite {
    let mut out = String::with_capacity(existing.len() + 256);
    let mut emitted = vec![false; desired.len()];
    let mut removed = Vec::new();
    for raw in existing.split_inclusive('\n') {
        let Some(e) = parse_line(raw).filter(Entry::is_owned) else {
            out.push_str(raw);
            continue;
        };
        if keep(&e) {
            out.push_str(raw);
            continue;
        }
        let want = desired
            .iter()
            .enumerate()
            .find(|(i, d)| !emitted[*i] && norm(&d.file) == norm(&e.file));
        match want {
            Some((i, d)) => {
                emitted[i] = true;
                // Keep the line exactly when nothing changed (whitespace included).
                if parse_line(raw).as_ref() == Some(d) && raw.ends_with('\n') {
                    out.push_str(raw);
                } else {
                    out.push_str(&d.render());
                }
            }
            None => removed.push(e.file.clone()),
        }
    }
    for (d, done) in desired.iter().zip(&emitted) {
        if !done {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&d.render());
        }
    }
    Rewrite { text: out, removed }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(spec: &str, file: &str, opts: &str) -> Entry {
        Entry {
            spec: spec.into(),
            file: file.into(),
            vfstype: "xfs".into(),
            mntops: opts.into(),
            freq: "0".into(),
            passno: "2".into(),
        }
    }

    const FOREIGN: &str = "# /etc/fstab: static file system information.\n\
        UUID=aaaa-bbbb /               ext4    errors=remount-ro 0       1\n\
        \n\
        /dev/sr0\t/media/cdrom0 udf,iso9660 user,noauto\t0 0\n\
        #  a  comment  with   spacing  \n\
        tmpfs /tmp tmpfs   defaults,size=1G\n";

    #[test]
    fn escapes_round_trip() {
        let s = "/mnt/my data\\x\tz";
        assert_eq!(escape(s), "/mnt/my\\040data\\134x\\011z");
        assert_eq!(unescape_octal(&escape(s)), s);
        let l = parse_line("LABEL=a\\040b /srv/a\\040dir ext4 defaults").unwrap();
        assert_eq!(
            (l.spec.as_str(), l.file.as_str()),
            ("LABEL=a b", "/srv/a dir")
        );
        assert_eq!((l.freq.as_str(), l.passno.as_str()), ("0", "0"));
        assert_eq!(parse_line("   # comment"), None);
        assert_eq!(parse_line("only two"), None);
    }

    #[test]
    fn foreign_lines_are_byte_identical_and_rerun_is_idempotent() {
        let want = [e("UUID=1", "/mnt", "defaults,nofail,x-stoke=disks")];
        let once = rewrite(FOREIGN, &want, |_| false);
        assert!(once.text.starts_with(FOREIGN), "{}", once.text);
        assert_eq!(
            &once.text[FOREIGN.len()..],
            "UUID=1\t/mnt\txfs\tdefaults,nofail,x-stoke=disks\t0\t2\n"
        );
        let twice = rewrite(&once.text, &want, |_| false);
        assert_eq!(twice.text, once.text);
        assert!(twice.removed.is_empty());
    }

    #[test]
    fn replaces_in_place_and_removes_what_disappeared() {
        let start = format!(
            "{FOREIGN}UUID=old /data xfs defaults,x-stoke 0 2\n# keep me\nUUID=2 /gone ext4 x-stoke 0 2\n"
        );
        let want = [
            e("UUID=new", "/data/", "defaults,x-stoke"),
            e("UUID=3", "/new", "x-stoke"),
        ];
        let r = rewrite(&start, &want, |_| false);
        assert_eq!(
            r.text,
            format!(
                "{FOREIGN}UUID=new\t/data/\txfs\tdefaults,x-stoke\t0\t2\n# keep me\nUUID=3\t/new\txfs\tx-stoke\t0\t2\n"
            )
        );
        assert_eq!(r.removed, vec!["/gone".to_string()]);
        let none = rewrite(&r.text, &[], |_| false);
        assert_eq!(none.text, format!("{FOREIGN}# keep me\n"));
    }

    #[test]
    fn kept_lines_and_missing_final_newline() {
        let start = "tmpfs /tmp tmpfs defaults 0 0";
        let want = [e("UUID=1", "/mnt", "x-stoke")];
        let r = rewrite(start, &want, |_| false);
        assert_eq!(
            r.text,
            format!("{start}\nUUID=1\t/mnt\txfs\tx-stoke\t0\t2\n")
        );
        let with_disks = format!("{}UUID=9 /mnt/data0 xfs nofail,x-stoke=disks 0 2\n", r.text);
        let kept = rewrite(&with_disks, &want, |e| e.is_disks());
        assert_eq!(kept.text, with_disks);
    }
}
