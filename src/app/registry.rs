//! Every module stoke knows, in one list.

use std::sync::Arc;

use stoke_api::Module;

/// Modules due together start in this order, and the runtime is single-threaded: the slowest
/// work (host key generation) comes first so that it overlaps everything else.
pub fn modules() -> Vec<Arc<dyn Module>> {
    let mut all: Vec<Box<dyn Module>> = Vec::new();
    // Runs first in its stage anyway (the user's early commands); listed first to say so.
    all.extend(stoke_scripts::modules());
    // Accounts before their keys (ssh-authorized-keys runs after users-groups).
    all.extend(stoke_users::modules());
    all.extend(stoke_ssh::modules());
    all.extend(stoke_hostname::modules());
    all.extend(stoke_rootfs::modules());
    all.extend(stoke_disks::modules());
    all.extend(stoke_volumes::modules());
    all.extend(stoke_mounts::modules());
    all.extend(stoke_route53::modules());
    all.extend(stoke_puppet::modules());
    all.extend(stoke_files::modules());
    all.extend(stoke_system::modules());
    all.extend(stoke_checks::modules());
    all.extend(stoke_lifecycle::modules());
    all.extend(stoke_report::modules());
    all.into_iter().map(Arc::from).collect()
}
