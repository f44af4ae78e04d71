//! A sandbox root for running the real `stoke` binary with `--root`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Sandbox {
    /// An empty root with a boot id, a passwd and a hosts file.
    pub fn new() -> Sandbox {
        let s = Sandbox {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        s.write("/proc/sys/kernel/random/boot_id", "boot-1\n");
        s.write(
            "/etc/passwd",
            "root:x:0:0:root:/root:/bin/bash\nadmin:x:1000:1000::/home/admin:/bin/sh\n",
        );
        s.write("/etc/hosts", "127.0.0.1 localhost\n");
        s
    }

    /// With a NoCloud seed for `iid` and the given user-data.
    pub fn nocloud(iid: &str, user_data: &str) -> Sandbox {
        let s = Sandbox::new();
        s.seed(iid, user_data);
        s
    }

    pub fn seed(&self, iid: &str, user_data: &str) {
        self.write(
            "/var/lib/stoke/seed/nocloud/meta-data",
            format!("instance-id: {iid}\nlocal-hostname: seed-host\nlocal-ipv4: 10.0.0.7\n"),
        );
        self.write("/var/lib/stoke/seed/nocloud/user-data", user_data);
    }

    /// Two NVMe instance-store disks (as /sys/block shows them) and their device nodes.
    pub fn instance_store(&self) {
        for (n, minor) in [("nvme1n1", 1), ("nvme2n1", 2)] {
            self.write(&format!("/sys/block/{n}/dev"), format!("259:{minor}\n"));
            self.write(&format!("/sys/block/{n}/size"), "1953125000\n");
            self.write(
                &format!("/sys/block/{n}/device/model"),
                "Amazon EC2 NVMe Instance Storage\n",
            );
            self.write(&format!("/dev/{n}"), "");
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p.trim_start_matches('/'))
    }

    pub fn write(&self, p: &str, content: impl AsRef<[u8]>) {
        let path = self.path(p);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
    }

    pub fn read(&self, p: &str) -> String {
        std::fs::read_to_string(self.path(p)).unwrap_or_default()
    }

    pub fn new_boot(&self, id: &str) {
        self.write("/proc/sys/kernel/random/boot_id", format!("{id}\n"));
    }

    pub fn stoke(&self, args: &[&str]) -> Run {
        self.stoke_without(args, &[])
    }

    /// Like [`Sandbox::stoke`], with these environment variables removed (e.g. the AWS ones,
    /// so that credentials come from the instance profile).
    pub fn stoke_without(&self, args: &[&str], remove: &[&str]) -> Run {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_stoke"));
        cmd.arg("--root")
            .arg(self.root())
            .args(args)
            .env_remove("JOURNAL_STREAM")
            .env_remove("INVOCATION_ID");
        for name in remove {
            cmd.env_remove(name);
        }
        let out: Output = cmd.output().expect("run stoke");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn run_all(&self) -> Run {
        self.stoke(&["run", "--stage", "all"])
    }

    pub fn status(&self) -> serde_json::Value {
        let text = self.read("/run/stoke/status.json");
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }

    pub fn module_state(&self, name: &str) -> String {
        self.status()["modules"][name]["state"]
            .as_str()
            .unwrap_or("absent")
            .to_string()
    }

    /// Recorded actions, one JSON value each.
    pub fn actions(&self) -> Vec<serde_json::Value> {
        self.read("/run/stoke/actions.jsonl")
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn actions_of(&self, kind: &str) -> Vec<serde_json::Value> {
        self.actions()
            .into_iter()
            .filter(|a| a["action"] == kind)
            .collect()
    }

    /// Every file under the root (relative paths), to prove nothing escaped it.
    pub fn files(&self) -> Vec<String> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            if let Ok(rd) = std::fs::read_dir(dir) {
                for e in rd.flatten() {
                    let p = e.path();
                    if p.is_dir() && !p.is_symlink() {
                        walk(base, &p, out);
                    } else if let Ok(rel) = p.strip_prefix(base) {
                        out.push(rel.display().to_string());
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(self.root(), self.root(), &mut out);
        out.sort();
        out
    }
}
