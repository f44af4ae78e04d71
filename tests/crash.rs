//! Crash consistency, as a test: a first boot of the demo root (`demo/root`: NoCloud seed, image
//! layers, host keys, hostname, RAID and mounts, write_files, authorized_keys, runcmd) is killed
//! with SIGKILL at every write, rename, fsync, link, unlink and mkdir it makes (strace's
//! syscall fault injection: the N-th call of one syscall, N = 1, 2, … until a run completes),
//! then stoke runs again to the end. Each time the final tree must equal an uninterrupted
//! run's (names, kinds, modes, owners; the contents of every file two clean runs agree on), no
//! temp file may remain, no file may be empty or cut short, and no module that had finished
//! before the kill may run again.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

const STOKE: &str = env!("CARGO_BIN_EXE_stoke");

/// The syscalls a boot changes the disk with (stoke runs modules on one thread, so strace's
/// per-thread, per-syscall counter walks each one's calls in order). Commands are recorded, not
/// spawned, under `--root`: their boundary is the write of their record.
const BOUNDARIES: &[&str] = &[
    "write",
    "pwrite64",
    "writev",
    "rename",
    "renameat",
    "renameat2",
    "fsync",
    "fdatasync",
    "linkat",
    "unlink",
    "unlinkat",
    "mkdir",
    "mkdirat",
    "rmdir",
];

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let ft = e.file_type().expect("file type");
        if ft.is_dir() {
            copy_tree(&src, &dst);
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src).expect("link"), &dst)
                .expect("symlink");
        } else {
            std::fs::copy(&src, &dst).expect("copy");
        }
    }
}

/// A fresh copy of the demo root, on tmpfs where there is one: a run makes some fifty fsyncs,
/// and on a shared disk they, not stoke, would set the test's time.
fn demo_root() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .expect("tempdir");
    copy_tree(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/demo/root")),
        dir.path(),
    );
    dir
}

fn stoke(root: &Path) -> Command {
    let mut cmd = Command::new(STOKE);
    cmd.arg("--root")
        .arg(root)
        .args(["run", "--stage", "all"])
        .env_remove("JOURNAL_STREAM")
        .env_remove("INVOCATION_ID")
        .stdin(Stdio::null());
    cmd
}

#[derive(Debug, PartialEq, Eq, Clone)]
struct Entry {
    /// `d`, `f` or `l`, mode and owner.
    meta: String,
    /// A file's bytes (the root's path replaced by `ROOT`), a link's target.
    content: Vec<u8>,
}

fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    let root_text = root.display().to_string();
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).expect("lstat");
        let (kind, content) = if m.file_type().is_symlink() {
            (
                "l",
                std::fs::read_link(&p)
                    .expect("readlink")
                    .into_os_string()
                    .into_encoded_bytes(),
            )
        } else if m.is_dir() {
            for e in std::fs::read_dir(&p).expect("read_dir") {
                stack.push(e.expect("entry").path());
            }
            ("d", Vec::new())
        } else {
            let bytes = std::fs::read(&p).expect("read");
            let text = String::from_utf8_lossy(&bytes).replace(&root_text, "ROOT");
            ("f", text.into_bytes())
        };
        let rel = p.strip_prefix(root).expect("under root").to_path_buf();
        let meta = format!("{kind} {:o} {}:{}", m.mode() & 0o7777, m.uid(), m.gid());
        out.insert(rel, Entry { meta, content });
    }
    out
}

/// Module names with a finished (`ok`) semaphore for the instance.
fn finished_modules(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(instances) = std::fs::read_dir(root.join("var/lib/stoke/instances")) else {
        return out;
    };
    for inst in instances.flatten() {
        let Ok(sems) = std::fs::read_dir(inst.path().join("sem")) else {
            continue;
        };
        for sem in sems.flatten() {
            let text = std::fs::read_to_string(sem.path()).unwrap_or_default();
            let ok = serde_json::from_str::<serde_json::Value>(&text)
                .map(|v| v["ok"] == true)
                .unwrap_or(false);
            if ok {
                out.insert(sem.file_name().to_string_lossy().into_owned());
            }
        }
    }
    out
}

/// What an uninterrupted run leaves, and which files' contents are the same in every run
/// (not a generated uuid, key, timestamp or pid).
struct Reference {
    tree: BTreeMap<PathBuf, Entry>,
    deterministic: BTreeSet<PathBuf>,
}

fn reference() -> Reference {
    let runs: Vec<BTreeMap<PathBuf, Entry>> = (0..2)
        .map(|_| {
            let root = demo_root();
            let out = stoke(root.path()).output().expect("stoke");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            snapshot(root.path())
        })
        .collect();
    assert_eq!(
        runs[0].keys().collect::<Vec<_>>(),
        runs[1].keys().collect::<Vec<_>>(),
        "two clean runs make the same names"
    );
    let deterministic = runs[0]
        .iter()
        .filter(|(p, e)| runs[1].get(*p) == Some(e))
        .map(|(p, _)| p.clone())
        .collect();
    Reference {
        tree: runs[0].clone(),
        deterministic,
    }
}

/// Kills stoke at the `n`-th `syscall`, then runs it again to the end and checks the result.
/// `Ok(false)`: the run completed before an `n`-th call (this syscall is exhausted).
fn kill_and_recover(reference: &Reference, syscall: &str, n: u32) -> Result<bool, String> {
    let root = demo_root();
    let trace = format!("trace={syscall}");
    let inject = format!("inject={syscall}:signal=KILL:when={n}");
    let killed = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            &trace,
            "-e",
            &inject,
            "--",
        ])
        .arg(STOKE)
        .args(stoke(root.path()).get_args())
        .env_remove("JOURNAL_STREAM")
        .env_remove("INVOCATION_ID")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("strace: {e}"))?;
    let was_killed = killed.status.signal() == Some(9) || killed.status.code() == Some(128 + 9);
    if !was_killed {
        if killed.status.success() {
            return Ok(false);
        }
        return Err(format!(
            "{syscall} #{n}: the injected run ended with {:?}: {}",
            killed.status,
            String::from_utf8_lossy(&killed.stderr)
        ));
    }
    let finished_before = finished_modules(root.path());
    let again = stoke(root.path()).output().map_err(|e| e.to_string())?;
    let stderr = String::from_utf8_lossy(&again.stderr);
    let at = format!("killed at {syscall} #{n}");
    if !again.status.success() {
        return Err(format!(
            "{at}: the next run failed ({:?}):\n{stderr}",
            again.status
        ));
    }
    let mut problems = Vec::new();
    for module in &finished_before {
        if stderr.contains(&format!(" {module}: starting (")) {
            problems.push(format!("{module} had finished and ran again"));
        }
    }
    let tree = snapshot(root.path());
    for (path, entry) in &tree {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if name
            .as_deref()
            .is_some_and(|n| n.contains(".stoke-tmp-") || n.contains(".stoke-"))
        {
            problems.push(format!("temp file left: {}", path.display()));
        }
        match reference.tree.get(path) {
            None => problems.push(format!("not in a clean run's tree: {}", path.display())),
            Some(want) if want.meta != entry.meta => problems.push(format!(
                "{}: {} (a clean run: {})",
                path.display(),
                entry.meta,
                want.meta
            )),
            Some(want)
                if reference.deterministic.contains(path) && want.content != entry.content =>
            {
                problems.push(format!(
                    "{}: content differs from a clean run's",
                    path.display()
                ))
            }
            Some(want) if !want.content.is_empty() && entry.content.is_empty() => {
                problems.push(format!("{}: empty", path.display()))
            }
            Some(_) => {}
        }
        let is_json = path.extension().is_some_and(|e| e == "json")
            || path.starts_with("var/lib/stoke/instances")
                && path.parent().is_some_and(|p| p.ends_with("sem"));
        if is_json
            && entry.meta.starts_with('f')
            && serde_json::from_slice::<serde_json::Value>(&entry.content).is_err()
        {
            problems.push(format!("{}: not whole JSON", path.display()));
        }
    }
    for path in reference.tree.keys() {
        if !tree.contains_key(path) {
            problems.push(format!("missing: {}", path.display()));
        }
    }
    // The hostname is the one the instance's uuid gives (not a second uuid's).
    let uuid = std::fs::read_to_string(
        root.path()
            .join("var/lib/stoke/instances/iid-demo-0001/data/hostname/uuid"),
    )
    .unwrap_or_default();
    let hostname = std::fs::read_to_string(root.path().join("etc/hostname")).unwrap_or_default();
    if uuid.len() < 8 || hostname.trim() != format!("web-{}", &uuid[..8]) {
        problems.push(format!(
            "hostname {hostname:?} is not from the uuid {uuid:?}"
        ));
    }
    // A per-instance script is recorded (started) at most once.
    let actions =
        std::fs::read_to_string(root.path().join("run/stoke/actions.jsonl")).unwrap_or_default();
    let starts = actions
        .lines()
        .filter(|l| l.contains("runcmd-runcmd\"]"))
        .count();
    if starts > 1 {
        problems.push(format!("runcmd started {starts} times"));
    }
    if problems.is_empty() {
        Ok(true)
    } else {
        Err(format!("{at}:\n  {}", problems.join("\n  ")))
    }
}

#[test]
fn a_first_boot_killed_at_any_write_rename_fsync_or_unlink_ends_as_an_uninterrupted_one() {
    // Skips fail under STOKE_TEST_REQUIRE_ALL=1 (scripts/install-test-deps.sh installs strace).
    match Command::new("strace")
        .args(["-qq", "-o", "/dev/null", "true"])
        .output()
    {
        Err(_) => {
            stoke_api::testing::skip("strace is not installed");
            return;
        }
        Ok(out) if !out.status.success() => {
            stoke_api::testing::skip("strace cannot trace here (ptrace not permitted)");
            return;
        }
        Ok(_) => {}
    }
    let started = Instant::now();
    let reference = reference();
    // Each syscall's kill points, one worker per syscall at a time (two cores).
    let queue = Mutex::new(BOUNDARIES.to_vec());
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let Some(syscall) = queue.lock().expect("queue").pop() else {
                        return;
                    };
                    let mut n = 1;
                    let mut failures = Vec::new();
                    loop {
                        match kill_and_recover(&reference, syscall, n) {
                            Ok(true) => {}
                            Ok(false) => break,
                            Err(e) => failures.push(e),
                        }
                        n += 1;
                    }
                    results
                        .lock()
                        .expect("results")
                        .push((syscall, n - 1, failures));
                }
            });
        }
    });
    let results = results.into_inner().expect("results");
    let points: u32 = results.iter().map(|(_, n, _)| n).sum();
    let mut summary: Vec<String> = results.iter().map(|(s, n, _)| format!("{s} {n}")).collect();
    summary.sort();
    println!(
        "crash test: {points} kill points ({}) in {:.0?}",
        summary.join(", "),
        started.elapsed()
    );
    let failures: Vec<&String> = results.iter().flat_map(|(_, _, f)| f).collect();
    assert!(
        failures.is_empty(),
        "{} of {points} kill points:\n{}",
        failures.len(),
        failures
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(points > 100, "too few kill points: {points}");
}
