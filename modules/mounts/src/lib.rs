//! `mounts` (work in progress).

pub fn modules() -> Vec<Box<dyn stoke_api::Module>> {
    Vec::new()
}
