//! The label of a NoCloud seed volume (ISO 9660 or FAT), read from the device itself: finding
//! the `cidata` volume before udev has made its by-label link costs a few reads instead of a
//! `blkid` process (~0.3 s at boot in a slow VM, on the path of every module). Only the
//! superblocks' own label fields are read; a label kept only in a FAT root directory entry is
//! not seen here, and the caller falls back to `blkid`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::fcntl::OFlag;

/// A volume's filesystem type (as `mount -t` names it) and its label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    pub fstype: &'static str,
    pub label: String,
}

/// ISO 9660's primary volume descriptor: sector 16 of 2048 bytes; "CD001" at byte 1, the
/// volume identifier (32 bytes, space padded) at byte 40.
const ISO_PVD: u64 = 16 * 2048;

/// Reads `device` (a host path: a block device, or an image file in a test root).
pub fn read(device: &Path) -> Option<Volume> {
    let mut f = open(device)?;
    let mut pvd = [0u8; 72];
    if read_at(&mut f, ISO_PVD, &mut pvd)
        && let Some(label) = iso9660_label(&pvd)
    {
        return Some(Volume {
            fstype: "iso9660",
            label,
        });
    }
    let mut boot = [0u8; 512];
    if !read_at(&mut f, 0, &mut boot) {
        return None;
    }
    fat_label(&boot).map(|label| Volume {
        fstype: "vfat",
        label,
    })
}

/// Whether `device` holds an ISO 9660 volume ("CD001" in its first volume descriptor); a seed
/// that is not is taken for FAT.
pub fn is_iso9660(device: &Path) -> bool {
    let mut magic = [0u8; 6];
    open(device).is_some_and(|mut f| read_at(&mut f, ISO_PVD, &mut magic))
        && &magic[1..6] == b"CD001"
}

/// Opened non-blocking: a CD drive without a disc (or a FIFO in a test root) answers at once
/// instead of waiting.
fn open(device: &Path) -> Option<File> {
    File::options()
        .read(true)
        .custom_flags((OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW | OFlag::O_NOCTTY).bits())
        .open(device)
        .ok()
}

fn read_at(f: &mut File, offset: u64, buf: &mut [u8]) -> bool {
    f.seek(SeekFrom::Start(offset)).is_ok() && f.read_exact(buf).is_ok()
}

fn iso9660_label(pvd: &[u8; 72]) -> Option<String> {
    // Type 1 (primary), "CD001", version 1.
    if pvd[0] != 1 || &pvd[1..6] != b"CD001" || pvd[6] != 1 {
        return None;
    }
    text(&pvd[40..72])
}

/// A FAT boot sector's volume label: in the extended BPB (boot signature 0x29), at byte 43 for
/// FAT12/16 and 71 for FAT32 (whose 16-bit FAT size, bytes 22–23, is 0).
fn fat_label(boot: &[u8; 512]) -> Option<String> {
    if boot[510..512] != [0x55, 0xAA] {
        return None;
    }
    let fat32 = boot[22] == 0 && boot[23] == 0;
    let (sig, label, kind) = if fat32 { (66, 71, 82) } else { (38, 43, 54) };
    if boot[sig] != 0x29 || &boot[kind..kind + 3] != b"FAT" {
        return None;
    }
    text(&boot[label..label + 11])
}

/// A label field: printable ASCII, trailing spaces (and NULs) removed; `None` if empty or not text.
fn text(field: &[u8]) -> Option<String> {
    let end = field
        .iter()
        .rposition(|&b| b != b' ' && b != 0)
        .map_or(0, |i| i + 1);
    let field = &field[..end];
    if field.is_empty() || !field.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        return None;
    }
    Some(String::from_utf8_lossy(field).into_owned())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The first 4 KiB of a FAT12 volume with this boot-sector label (for the NoCloud tests too).
    pub(in crate::datasource) fn fat16_boot(label: &[u8; 11]) -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        b[22] = 1; // 16-bit FAT size: not FAT32
        b[38] = 0x29;
        b[43..54].copy_from_slice(label);
        b[54..62].copy_from_slice(b"FAT12   ");
        b[510] = 0x55;
        b[511] = 0xAA;
        b
    }

    #[test]
    fn fat_labels_are_read_from_the_extended_boot_sector() {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("vdc");
        std::fs::write(&dev, fat16_boot(b"CIDATA     ")).unwrap();
        assert_eq!(
            read(&dev),
            Some(Volume {
                fstype: "vfat",
                label: "CIDATA".into()
            })
        );
        let mut fat32 = vec![0u8; 4096];
        fat32[66] = 0x29;
        fat32[71..82].copy_from_slice(b"cidata     ");
        fat32[82..90].copy_from_slice(b"FAT32   ");
        fat32[510] = 0x55;
        fat32[511] = 0xAA;
        std::fs::write(&dev, &fat32).unwrap();
        assert_eq!(read(&dev).map(|v| v.label), Some("cidata".into()));
        // No boot signature, no extended BPB, or not FAT: no label.
        let mut b = fat16_boot(b"CIDATA     ");
        b[511] = 0;
        std::fs::write(&dev, &b).unwrap();
        assert_eq!(read(&dev), None);
        let mut b = fat16_boot(b"CIDATA     ");
        b[38] = 0x28;
        std::fs::write(&dev, &b).unwrap();
        assert_eq!(read(&dev), None);
        let mut b = fat16_boot(b"CIDATA     ");
        b[54..57].copy_from_slice(b"NTF");
        std::fs::write(&dev, &b).unwrap();
        assert_eq!(read(&dev), None);
        // A label that is not text.
        std::fs::write(&dev, fat16_boot(b"CI\x01ATA     ")).unwrap();
        assert_eq!(read(&dev), None);
    }

    #[test]
    fn iso9660_labels_are_read_from_the_primary_volume_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("sr0");
        let mut data = vec![0u8; 40_000];
        let pvd = ISO_PVD as usize;
        data[pvd] = 1;
        data[pvd + 1..pvd + 6].copy_from_slice(b"CD001");
        data[pvd + 6] = 1;
        data[pvd + 40..pvd + 72].copy_from_slice(&[b' '; 32]);
        data[pvd + 40..pvd + 46].copy_from_slice(b"cidata");
        std::fs::write(&dev, &data).unwrap();
        assert_eq!(
            read(&dev),
            Some(Volume {
                fstype: "iso9660",
                label: "cidata".into()
            })
        );
        assert!(is_iso9660(&dev));
        // Too short for the descriptor, absent, or a FIFO (opened non-blocking: no wait).
        std::fs::write(&dev, b"short").unwrap();
        assert_eq!(read(&dev), None);
        assert!(!is_iso9660(&dev));
        assert_eq!(read(&dir.path().join("absent")), None);
        let fifo = dir.path().join("fifo");
        nix_mkfifo(&fifo);
        assert_eq!(read(&fifo), None);
    }

    /// Real volumes made by the tools seeds are made with (the VM suite's `make_seed`).
    #[test]
    fn volumes_made_by_mkfs_vfat_and_genisoimage_are_read_as_blkid_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("fat.img");
        std::fs::write(&img, vec![0u8; 1024 * 1024]).unwrap();
        let Ok(st) = std::process::Command::new("mkfs.vfat")
            .args(["-n", "CIDATA"])
            .arg(&img)
            .output()
        else {
            return stoke_api::testing::skip("mkfs.vfat is not installed");
        };
        assert!(st.status.success(), "{st:?}");
        assert_eq!(
            read(&img),
            Some(Volume {
                fstype: "vfat",
                label: "CIDATA".into()
            })
        );
        let d = dir.path().join("seed");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("meta-data"), "instance-id: i-1\n").unwrap();
        let iso = dir.path().join("seed.iso");
        let Ok(st) = std::process::Command::new("genisoimage")
            .args(["-quiet", "-volid", "cidata", "-joliet", "-rock", "-output"])
            .arg(&iso)
            .arg(&d)
            .output()
        else {
            return stoke_api::testing::skip("genisoimage is not installed");
        };
        assert!(st.status.success(), "{st:?}");
        assert_eq!(
            read(&iso),
            Some(Volume {
                fstype: "iso9660",
                label: "cidata".into()
            })
        );
    }

    fn nix_mkfifo(path: &Path) {
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    }
}
