//! Fleet burst benchmark: N instances register at once through a proxy that
//! lets `rate` requests/s reach moto_server and answers `Throttling` to the
//! rest (Route53's account limit is 5/s).
//!
//!   burst [--n 200] [--rate 5] [--bucket 5] [--budget 120] [--max-backoff S]
//!         [--stoke PATH] [--stage all] [--work DIR] [--in-process]
//!
//! Each instance is a real `stoke --root <its sandbox> run --stage <stage>`
//! process (`--stoke`, default: the `stoke` binary of the same build next to
//! this example). Its root gets a NoCloud seed with its own instance-id,
//! local-ipv4 and hostname, a `route53:` section pointing at the proxy, and
//! every other module but hostname turned off. When all have exited, the
//! outcome of each is read from its `run/stoke/status.json`. Roots go under
//! `--work` (kept for inspection; bench/route53-burst.sh removes it), else a
//! temporary directory removed at the end.
//!
//! `--in-process` runs the N registrations as tasks of one process instead
//! (the module's `run` with its retry loop, no binary; for N too large for N
//! processes here).
//!
//! Needs moto_server (scripts/install-moto.sh; STOKE_MOTO_SERVER to point
//! elsewhere). Prints a summary and one JSON line (`RESULT {...}`).
//! Run by bench/route53-burst.sh.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ZONE: &str = "burst.test";

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn num(args: &[String], name: &str, default: f64) -> f64 {
    arg(args, name).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} wants a number, got {v}"))
    })
}

fn ip_of(i: usize) -> String {
    format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn round2(d: Duration) -> f64 {
    (d.as_secs_f64() * 100.0).round() / 100.0
}

/// What the benchmark varies; the same for every instance.
struct Params {
    endpoint: String,
    zone: String,
    budget: u64,
    max_backoff: Option<f64>,
}

impl Params {
    /// The `route53:` section of one instance (the hostname comes from the
    /// hostname module; credentials are static).
    fn section(&self) -> Value {
        let mut s = json!({
            "hosted_zone_id": self.zone,
            "zone_name": ZONE,
            "endpoint_url": self.endpoint,
            "region": "us-east-1",
            "access_key_id": "testing",
            "secret_access_key": "testing",
            "budget_seconds": self.budget,
        });
        if let Some(m) = self.max_backoff {
            s["max_backoff_seconds"] = json!(m);
        }
        s
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n = num(&args, "--n", 200.0) as usize;
    let rate = num(&args, "--rate", 5.0);
    let bucket = num(&args, "--bucket", 5.0);
    let in_process = args.iter().any(|a| a == "--in-process");
    let stage = arg(&args, "--stage").unwrap_or_else(|| "all".into());
    let stoke = arg(&args, "--stoke").map_or_else(
        || {
            // target/<profile>/examples/burst -> target/<profile>/stoke
            let exe = std::env::current_exe().expect("own path");
            exe.parent()
                .and_then(Path::parent)
                .expect("examples dir")
                .join("stoke")
        },
        PathBuf::from,
    );
    if !in_process && !stoke.exists() {
        eprintln!(
            "cannot run: {} not found (cargo build --bin stoke, or --stoke PATH)",
            stoke.display()
        );
        std::process::exit(2);
    }

    let moto = support::moto::Moto::start().unwrap_or_else(|reason| {
        eprintln!("cannot run: {reason}");
        std::process::exit(2)
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let admin = support::admin_client(&moto.url());
    let zone = rt.block_on(support::create_zone(&admin, ZONE));
    let proxy = support::proxy::Proxy::start(moto.addr, rate, bucket);
    let p = Params {
        endpoint: proxy.url(),
        zone: zone.clone(),
        budget: num(&args, "--budget", 120.0) as u64,
        max_backoff: arg(&args, "--max-backoff").map(|m| m.parse().expect("--max-backoff")),
    };

    eprintln!(
        "{n} registrations, {}, through a proxy at {rate} req/s (bucket {bucket})...",
        if in_process {
            "concurrent tasks in one process".to_string()
        } else {
            format!(
                "separate `{} run --stage {stage}` processes",
                stoke.display()
            )
        }
    );
    let (results, spawned, total) = if in_process {
        let start = Instant::now();
        let r = in_tasks(n, &p);
        (r, None, start.elapsed())
    } else {
        let tmp;
        let work = match arg(&args, "--work") {
            Some(w) => PathBuf::from(w),
            None => {
                tmp = tempfile::tempdir().expect("tempdir");
                tmp.path().to_path_buf()
            }
        };
        let (r, s, t) = in_processes(n, &p, &stoke, &stage, &work);
        (r, Some(s), t)
    };
    let in_zone = rt.block_on(a_records(&admin, &zone));
    let mode = if in_process {
        "tasks".to_string()
    } else {
        format!("stoke run --stage {stage}")
    };
    report(
        n, rate, bucket, &mode, &results, total, spawned, in_zone, &proxy,
    );
    drop(proxy);
    drop(moto);
    if results.iter().filter(|r| r["ok"] == true).count() != n {
        std::process::exit(1);
    }
}

/// Writes instance `i`'s sandbox root: boot id, hosts, NoCloud seed.
fn make_root(root: &Path, i: usize, p: &Params) {
    let write = |rel: &str, text: String| {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    };
    write("proc/sys/kernel/random/boot_id", "burst-boot\n".into());
    write("etc/hosts", "127.0.0.1 localhost\n".into());
    write(
        "var/lib/stoke/seed/nocloud/meta-data",
        format!("instance-id: i-node{i}\nlocal-ipv4: {}\n", ip_of(i)),
    );
    let user_data = json!({
        "hostname": format!("node{i}"),
        "modules": {
            "ssh-host-keys": {"enabled": false},
            "ssh-authorized-keys": {"enabled": false},
            "disks": {"enabled": false},
            "mounts": {"enabled": false},
            "puppet": {"enabled": false},
        },
        "route53": p.section(),
    });
    // JSON is YAML: one flow-style document.
    write(
        "var/lib/stoke/seed/nocloud/user-data",
        format!("#cloud-config\n{user_data}\n"),
    );
}

/// N `stoke` processes started back to back; each outcome from its status.json.
/// Returns the results, how long spawning took and the total from the first
/// spawn to the last exit (writing the roots is not timed).
fn in_processes(
    n: usize,
    p: &Params,
    stoke: &Path,
    stage: &str,
    work: &Path,
) -> (Vec<Value>, Duration, Duration) {
    let roots: Vec<PathBuf> = (0..n).map(|i| work.join(format!("node{i}"))).collect();
    for (i, root) in roots.iter().enumerate() {
        make_root(root, i, p);
    }
    let start = Instant::now();
    let mut children: Vec<Option<Child>> = Vec::with_capacity(n);
    let mut begun = Vec::with_capacity(n);
    for root in &roots {
        let log = File::create(root.join("stoke.log")).expect("log file");
        let child = Command::new(stoke)
            .arg("--root")
            .arg(root)
            .args(["run", "--stage", stage])
            .env_remove("JOURNAL_STREAM")
            .env_remove("INVOCATION_ID")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", stoke.display()));
        begun.push(Instant::now());
        children.push(Some(child));
    }
    let spawned = start.elapsed();

    // Collect exits as they happen (for per-process wall time); bounded by
    // the budget plus the module timeout's slack, then the rest are killed.
    let deadline = Instant::now() + Duration::from_secs(p.budget + 180);
    let mut exits: Vec<Option<(i32, Duration)>> = vec![None; n];
    let mut left = n;
    while left > 0 {
        for (i, slot) in children.iter_mut().enumerate() {
            if let Some(c) = slot
                && let Ok(Some(status)) = c.try_wait()
            {
                exits[i] = Some((status.code().unwrap_or(-1), begun[i].elapsed()));
                *slot = None;
                left -= 1;
            }
        }
        if left > 0 && Instant::now() > deadline {
            for c in children.iter_mut().flatten() {
                let _ = c.kill();
                let _ = c.wait();
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let total = start.elapsed();

    let results = roots
        .iter()
        .zip(exits)
        .map(|(root, exit)| {
            let status: Value = std::fs::read_to_string(root.join("run/stoke/status.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(Value::Null);
            let m = &status["modules"]["route53"];
            let Some((code, took)) = exit else {
                return json!({"ok": false, "error": "killed at the deadline", "state": m["state"]});
            };
            let ok = code == 0 && m["state"] == "ok";
            json!({
                "ok": ok,
                "exit": code,
                "state": m["state"],
                "hostname_state": status["modules"]["hostname"]["state"],
                "attempts": m["details"]["attempts"],
                "retried": m["details"]["retried"],
                "module_ms": m["details"]["elapsed_ms"],
                "ms": took.as_millis() as u64,
                "error": if ok { Value::Null } else {
                    json!(m["error"].as_str().or(m["summary"].as_str()).unwrap_or("no route53 status"))
                },
            })
        })
        .collect();
    (results, spawned, total)
}

/// N concurrent tasks of this process, each running the module once.
fn in_tasks(n: usize, p: &Params) -> Vec<Value> {
    let mt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    mt.block_on(async {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let section = p.section();
                tokio::spawn(async move {
                    let root = tempfile::tempdir().expect("tempdir");
                    let endpoint = section["endpoint_url"].as_str().unwrap_or("").to_string();
                    let ctx = support::instance_ctx(
                        root.path(),
                        &endpoint,
                        &format!("node{i}"),
                        &ip_of(i),
                        section,
                    );
                    let t = Instant::now();
                    let ms = |t: Instant| t.elapsed().as_millis() as u64;
                    match stoke_route53::modules().remove(0).run(&ctx).await {
                        Ok(r) => json!({
                            "ok": true,
                            "attempts": r.details["attempts"],
                            "retried": r.details["retried"],
                            "ms": ms(t),
                        }),
                        Err(e) => json!({"ok": false, "error": e.to_string(), "ms": ms(t)}),
                    }
                })
            })
            .collect();
        let mut out = Vec::with_capacity(n);
        for t in tasks {
            out.push(
                t.await
                    .unwrap_or_else(|e| json!({"ok": false, "error": e.to_string()})),
            );
        }
        out
    })
}

/// What moto holds: A records in the zone (each instance's, once).
async fn a_records(admin: &support::Admin, zone: &str) -> usize {
    support::all_records(admin, zone)
        .await
        .iter()
        .filter(|(_, kind, _, _)| kind == "A")
        .count()
}

#[allow(clippy::too_many_arguments)]
fn report(
    n: usize,
    rate: f64,
    bucket: f64,
    mode: &str,
    results: &[Value],
    total: Duration,
    spawned: Option<Duration>,
    in_zone: usize,
    proxy: &support::proxy::Proxy,
) {
    let good: Vec<&Value> = results.iter().filter(|r| r["ok"] == true).collect();
    let ok = good.len();
    let mut attempts: BTreeMap<u64, usize> = BTreeMap::new();
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    let mut ms: Vec<u64> = Vec::new();
    let mut module_ms: Vec<u64> = Vec::new();
    for r in &good {
        *attempts
            .entry(r["attempts"].as_u64().unwrap_or(0))
            .or_default() += 1;
        if let Some(m) = r["retried"].as_object() {
            for (k, v) in m {
                *reasons.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
            }
        }
        ms.push(r["ms"].as_u64().unwrap_or(0));
        if let Some(m) = r["module_ms"].as_u64() {
            module_ms.push(m);
        }
    }
    ms.sort_unstable();
    module_ms.sort_unstable();
    let sorted_attempts: Vec<u64> = attempts
        .iter()
        .flat_map(|(a, c)| std::iter::repeat_n(*a, *c))
        .collect();
    let floor = n as f64 / rate;
    let counts = proxy.counts();
    let result = json!({
        "n": n,
        "mode": mode,
        "rate": rate,
        "bucket": bucket,
        "succeeded": ok,
        "a_records_in_zone": in_zone,
        "total_s": round2(total),
        "spawn_s": spawned.map(round2),
        "floor_s": floor,
        "ratio_to_floor": (total.as_secs_f64() / floor * 1000.0).round() / 1000.0,
        "attempts_per_registration": attempts,
        "attempts_p50": percentile(&sorted_attempts, 0.5),
        "attempts_p90": percentile(&sorted_attempts, 0.9),
        "attempts_max": sorted_attempts.last().copied().unwrap_or(0),
        "retried_by_code": reasons,
        "latency_ms_p50": percentile(&ms, 0.5),
        "latency_ms_p90": percentile(&ms, 0.9),
        "latency_ms_max": ms.last().copied().unwrap_or(0),
        "module_ms_p50": percentile(&module_ms, 0.5),
        "module_ms_max": module_ms.last().copied().unwrap_or(0),
        "proxy_forwarded": counts.forwarded,
        "proxy_throttled": counts.throttled,
        "proxy_actions": counts.actions,
    });
    println!(
        "succeeded {ok}/{n}, records in zone {in_zone}; total {:.1} s vs floor {floor:.1} s ({:.2}x); \
         attempts p50 {} p90 {} max {}; proxy throttled {} of {} requests",
        total.as_secs_f64(),
        total.as_secs_f64() / floor,
        result["attempts_p50"],
        result["attempts_p90"],
        result["attempts_max"],
        counts.throttled,
        counts.throttled + counts.forwarded
    );
    for e in results.iter().filter(|r| r["ok"] != true).take(5) {
        println!("error: {e}");
    }
    println!("RESULT {result}");
}
