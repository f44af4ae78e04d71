//! Real block devices for tests on this machine: sparse files on loop devices under
//! a temp root whose /dev, /sys and /proc are the host's, and a FakeSystem whose
//! responder really runs each command. Loops are detached (and mounts undone) on drop.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use stoke_api::fake::FakeSystem;
use stoke_api::testing;
use stoke_api::{CmdOutput, SysError, System};

pub struct Host {
    pub loops: Vec<String>,
    pub mounted: Arc<Mutex<Vec<PathBuf>>>,
    /// The host's /dev, /sys and /proc bound into the root, unmounted last.
    binds: Vec<PathBuf>,
    // Dropped after `Drop::drop` has unmounted and detached.
    dir: tempfile::TempDir,
    root: PathBuf,
}

fn sh(program: &str, args: &[&str]) -> std::io::Result<std::process::Output> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
}

impl Host {
    /// Every program the real-device tests run (the harness's and the tests' own).
    pub const TOOLS: &'static [&'static str] = &[
        "losetup",
        "blkid",
        "wipefs",
        "mkfs.xfs",
        "mkfs.ext4",
        "mount",
        "umount",
    ];

    /// `n` sparse disks of `mib` MiB; None (the test skips, saying why, or fails under
    /// STOKE_TEST_REQUIRE_ALL=1) when this machine cannot do it: not root, a tool missing,
    /// no loop devices.
    pub fn new(n: usize, mib: u64) -> Option<Host> {
        if !testing::need_root("loop devices, mkfs, mount") || !testing::need_tools(Self::TOOLS) {
            return None;
        }
        let dir = tempfile::tempdir().ok()?;
        let root = fs::canonicalize(dir.path()).ok()?;
        let mut host = Host {
            loops: Vec::new(),
            mounted: Arc::default(),
            binds: Vec::new(),
            dir,
            root: root.clone(),
        };
        // The host's trees bind-mounted, not linked: a link to `/dev` would be resolved
        // inside the root (stoke never follows a link out of it) and lead to itself.
        for d in ["dev", "sys", "proc"] {
            let at = root.join(d);
            fs::create_dir_all(&at).ok()?;
            let target = at.display().to_string();
            match sh("mount", &["--bind", &format!("/{d}"), &target]) {
                Ok(o) if o.status.success() => host.binds.push(at),
                _ => {
                    testing::skip(&format!("cannot bind-mount /{d} into a test root"));
                    return None;
                }
            }
        }
        fs::create_dir_all(root.join("etc")).ok()?;
        for i in 0..n {
            let img = host.root.join(format!("disk{i}.img"));
            fs::File::create(&img)
                .and_then(|f| f.set_len(mib << 20))
                .ok()?;
            let out = match sh("losetup", &["-f", "--show", &img.display().to_string()]) {
                Ok(o) if o.status.success() => o,
                Ok(o) => {
                    testing::skip(&format!(
                        "no loop device: {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    ));
                    return None;
                }
                Err(e) => {
                    testing::skip(&format!("no loop device: losetup: {e}"));
                    return None;
                }
            };
            host.loops
                .push(String::from_utf8_lossy(&out.stdout).trim().to_string());
        }
        Some(host)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A FakeSystem that really runs the storage tools (and only those: a
    /// `systemctl daemon-reload` must not reach the machine running the tests).
    pub fn system(&self) -> Arc<FakeSystem> {
        let fake = FakeSystem::new();
        fake.respond(|cmd| {
            let real = ["blkid", "wipefs", "mkfs.xfs", "mkfs.ext4", "mdadm"];
            if !real.contains(&cmd.program.as_str()) {
                return None;
            }
            Some(
                match Command::new(&cmd.program)
                    .args(&cmd.args)
                    .stdin(Stdio::null())
                    .output()
                {
                    Ok(o) => CmdOutput {
                        code: o.status.code(),
                        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
                        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
                    },
                    Err(e) => CmdOutput::failed(127, e.to_string()),
                },
            )
        });
        fake
    }

    /// Makes `fake` also really mount (at the moment the module asks, so nested
    /// mount points see their parent mounted); the mounts are undone on drop.
    pub fn mounting(&self, fake: Arc<FakeSystem>) -> Arc<dyn System> {
        let mounted = self.mounted.clone();
        fake.on_mount(move |m| {
            let target = m.target.display().to_string();
            let mut args = vec!["-t", m.fstype.as_str()];
            if !m.options.is_empty() {
                args.extend(["-o", m.options.as_str()]);
            }
            args.extend([m.source.as_str(), target.as_str()]);
            let out = sh("mount", &args).map_err(|e| SysError::Call {
                call: "mount",
                what: target.clone(),
                source: e,
            })?;
            if !out.status.success() {
                return Err(SysError::Call {
                    call: "mount",
                    what: target,
                    source: std::io::Error::other(
                        String::from_utf8_lossy(&out.stderr).into_owned(),
                    ),
                });
            }
            mounted.lock().unwrap().push(m.target.clone());
            Ok(())
        });
        fake
    }

    /// `blkid -p -o export` of a device, as KEY=value pairs.
    pub fn blkid(&self, dev: &str) -> Vec<(String, String)> {
        let out = sh("blkid", &["-p", "-o", "export", dev]).unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect()
    }

    pub fn blkid_get(&self, dev: &str, key: &str) -> Option<String> {
        self.blkid(dev)
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Poisoned by a failed assertion that held the lock: the mounts must still go.
        let mounted = self
            .mounted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        // Lazily (`-l`): detached even when busy, before the temp dir is removed — a
        // bind of the host's /dev left mounted would have its nodes removed with it.
        for m in mounted.iter().rev().chain(self.binds.iter().rev()) {
            let _ = sh("umount", &["-l", &m.display().to_string()]);
        }
        for l in &self.loops {
            let _ = sh("losetup", &["-d", l]);
        }
    }
}
