//! `/etc/fstab`: parsing, mount point normalisation, and stoke's rewrite of its own lines.
#![no_main]

use stoke_mounts::fstab;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let entries = fstab::entries(text);
    for (_, e) in &entries {
        let _ = fstab::norm(&e.file);
        let _ = fstab::is_system_mount_point(&e.file);
        let _ = fstab::escape(&e.file);
    }
    let desired: Vec<fstab::Entry> = entries.iter().take(2).map(|(_, e)| e.clone()).collect();
    let _ = fstab::rewrite(text, &desired, |_| true);
    let _ = fstab::rewrite(text, &[], |_| false);
});
