//! At boot stoke starts from a cold page cache, and its executable is paged in as its code runs.
//! Kernel readahead turns each page fault into a read of up to 128 KiB around it, most of which
//! this run never executes: measured in a test VM, a `stoke run` read ~6 MiB of the binary to run
//! code from a fraction of that. Asking for no readahead on our own mappings reads only the pages
//! that are used.

use std::num::NonZeroUsize;
use std::ptr::NonNull;

use nix::sys::mman::{MmapAdvise, madvise};

/// `MADV_RANDOM` on every mapping of the running executable. Best effort: on any error the
/// kernel's default readahead stays.
pub fn no_readahead_on_self() {
    let (Ok(exe), Ok(maps)) = (
        std::fs::read_link("/proc/self/exe"),
        std::fs::read_to_string("/proc/self/maps"),
    ) else {
        return;
    };
    let exe = exe.to_string_lossy();
    for line in maps.lines() {
        // "start-end perms offset dev inode   path"
        let mut f = line.split_whitespace();
        let (Some(range), Some(path)) = (f.next(), f.nth(4)) else {
            continue;
        };
        if path != exe {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        let (Some(addr), Some(len)) = (
            NonNull::new(start as *mut std::ffi::c_void),
            NonZeroUsize::new(end.saturating_sub(start)),
        ) else {
            continue;
        };
        // SAFETY: the range is one of this process's own mappings, as the kernel lists them;
        // MADV_RANDOM only changes readahead, never the contents or protection of the pages.
        let _ = unsafe { madvise(addr, len.get(), MmapAdvise::MADV_RANDOM) };
    }
}
