//! `/proc/self/mountinfo` (proc(5)), read one way for every module: what is mounted where,
//! from which device.

/// One line: `ID PARENT MAJ:MIN ROOT POINT OPTS [OPTIONAL...] - TYPE SOURCE SUPER_OPTS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountInfo {
    /// The device number (`0:N` for filesystems without a block device).
    pub dev: Option<(u32, u32)>,
    /// Where it is mounted (octal escapes such as `\040` resolved).
    pub mount_point: String,
    pub fstype: String,
    /// What is mounted (`/dev/md127`, `tmpfs`), escapes resolved.
    pub source: String,
    /// The mount's options, then the superblock's (`rw,noatime,...`).
    pub options: Vec<String>,
}

pub fn parse_line(line: &str) -> Option<MountInfo> {
    let (left, right) = line.split_once(" - ")?;
    let left: Vec<&str> = left.split(' ').collect();
    let right: Vec<&str> = right.split(' ').collect();
    if left.len() < 6 || right.len() < 2 {
        return None;
    }
    let dev = left[2]
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
    let mut options: Vec<String> = left[5].split(',').map(str::to_string).collect();
    if let Some(sb) = right.get(2) {
        options.extend(sb.split(',').map(str::to_string));
    }
    Some(MountInfo {
        dev,
        mount_point: crate::unescape_octal(left[4]),
        fstype: right[0].to_string(),
        source: crate::unescape_octal(right[1]),
        options,
    })
}

/// Every well-formed line, in order (the last mount on a path is the visible one).
pub fn parse(text: &str) -> Vec<MountInfo> {
    text.lines().filter_map(parse_line).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_with_optional_fields_and_escapes() {
        let text = "36 35 98:0 /mnt1 /mnt/my\\040disk rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue\n\
                    garbage\n\
                    40 1 0:5 / /proc rw - proc proc rw\n";
        let m = parse(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].dev, Some((98, 0)));
        assert_eq!(m[0].mount_point, "/mnt/my disk");
        assert_eq!(m[0].fstype, "ext3");
        assert_eq!(m[0].source, "/dev/root");
        assert_eq!(m[0].options, ["rw", "noatime", "rw", "errors=continue"]);
        assert_eq!(m[1].mount_point, "/proc");
        assert_eq!(parse_line("1 2 3 4 5 - x"), None);
    }
}
