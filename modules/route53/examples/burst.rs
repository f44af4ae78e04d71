//! Fleet burst benchmark: N instances register at once, each in its own
//! process, through a proxy that lets `rate` requests/s reach moto_server and
//! answers `Throttling` to the rest (Route53's account limit is 5/s).
//!
//!   burst [--n 200] [--rate 5] [--bucket 5] [--budget 120] [--max-backoff S] [--in-process]
//!
//! `--in-process` runs the N registrations as tasks of one process instead
//! (same module code and retry loop; for N too large for N processes here).
//!
//! Needs moto_server (scripts/install-moto.sh; STOKE_MOTO_SERVER to point
//! elsewhere). Prints a summary and one JSON line (`RESULT {...}`).
//! Run by bench/route53-burst.sh; the child mode (`register ...`) is one instance.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{Value, json};

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

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("register") {
        register(&args);
    } else {
        orchestrate(&args);
    }
}

/// One instance: run the module once, print one JSON line.
fn register(args: &[String]) {
    let get = |n: &str| arg(args, n).unwrap_or_else(|| panic!("register needs {n}"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let line = rt.block_on(register_once(
        get("--endpoint"),
        get("--zone"),
        get("--host"),
        get("--ip"),
        get("--budget").parse().expect("--budget"),
        arg(args, "--max-backoff").map(|m| m.parse().expect("--max-backoff")),
    ));
    println!("{line}");
}

/// Runs the module for one simulated instance; the outcome as JSON.
async fn register_once(
    endpoint: String,
    zone: String,
    host: String,
    ip: String,
    budget: u64,
    max_backoff: Option<f64>,
) -> Value {
    let root = tempfile::tempdir().expect("tempdir");
    let mut section = json!({
        "hosted_zone_id": zone,
        "zone_name": "burst.test",
        "budget_seconds": budget,
    });
    if let Some(m) = max_backoff {
        section["max_backoff_seconds"] = json!(m);
    }
    let ctx = support::instance_ctx(root.path(), &endpoint, &host, &ip, section);
    let t = Instant::now();
    match stoke_route53::modules().remove(0).run(&ctx).await {
        Ok(r) => json!({
            "ok": true,
            "attempts": r.details["attempts"],
            "retried": r.details["retried"],
            "ms": t.elapsed().as_millis() as u64,
        }),
        Err(e) => {
            json!({"ok": false, "error": e.to_string(), "ms": t.elapsed().as_millis() as u64})
        }
    }
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

fn orchestrate(args: &[String]) {
    let n = num(args, "--n", 200.0) as usize;
    let rate = num(args, "--rate", 5.0);
    let bucket = num(args, "--bucket", 5.0);
    let budget = num(args, "--budget", 120.0) as u64;
    let max_backoff = arg(args, "--max-backoff");

    let moto = support::moto::Moto::start().unwrap_or_else(|reason| {
        eprintln!("cannot run: {reason}");
        std::process::exit(2)
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let admin = support::admin_client(&moto.url());
    let zone = rt.block_on(support::create_zone(&admin, "burst.test"));
    let proxy = support::proxy::Proxy::start(moto.addr, rate, bucket);
    let exe = std::env::current_exe().expect("own path");

    let in_process = args.iter().any(|a| a == "--in-process");
    eprintln!(
        "{n} registrations, {}, through a proxy at {rate} req/s (bucket {bucket})...",
        if in_process {
            "concurrent tasks in one process"
        } else {
            "separate processes"
        }
    );
    let start = Instant::now();
    let max_backoff_f = max_backoff
        .as_ref()
        .map(|m| m.parse::<f64>().expect("--max-backoff"));
    let (results, spawned): (Vec<Value>, _) = if in_process {
        let mt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let results = mt.block_on(async {
            let tasks: Vec<_> = (0..n)
                .map(|i| {
                    tokio::spawn(register_once(
                        proxy.url(),
                        zone.clone(),
                        format!("node{i}"),
                        ip_of(i),
                        budget,
                        max_backoff_f,
                    ))
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
        });
        (results, None)
    } else {
        let mut children = Vec::with_capacity(n);
        for i in 0..n {
            let mut cmd = Command::new(&exe);
            cmd.args(["register", "--endpoint", &proxy.url(), "--zone", &zone])
                .args(["--host", &format!("node{i}")])
                .args(["--ip", &ip_of(i)])
                .args(["--budget", &budget.to_string()])
                .stdout(Stdio::piped());
            if let Some(m) = &max_backoff {
                cmd.args(["--max-backoff", m]);
            }
            children.push(cmd.spawn().expect("spawn child"));
        }
        let spawned = start.elapsed();
        let mut results: Vec<Value> = Vec::with_capacity(n);
        for mut c in children {
            let mut line = String::new();
            if let Some(out) = c.stdout.take() {
                let _ = BufReader::new(out).read_line(&mut line);
            }
            let status = c.wait().expect("wait child");
            results.push(serde_json::from_str(&line).unwrap_or_else(
                |_| json!({"ok": false, "error": format!("child exited {status} without a result")}),
            ));
        }
        (results, Some(spawned))
    };
    let total = start.elapsed();

    let ok = results.iter().filter(|r| r["ok"] == true).count();
    let mut attempts: BTreeMap<u64, usize> = BTreeMap::new();
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    let mut ms: Vec<u64> = Vec::new();
    for r in results.iter().filter(|r| r["ok"] == true) {
        *attempts
            .entry(r["attempts"].as_u64().unwrap_or(0))
            .or_default() += 1;
        if let Some(m) = r["retried"].as_object() {
            for (k, v) in m {
                *reasons.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
            }
        }
        ms.push(r["ms"].as_u64().unwrap_or(0));
    }
    ms.sort_unstable();
    let mut sorted_attempts: Vec<u64> = Vec::new();
    for (a, c) in &attempts {
        sorted_attempts.extend(std::iter::repeat_n(*a, *c));
    }
    let errors: Vec<&Value> = results.iter().filter(|r| r["ok"] != true).take(5).collect();
    // What moto holds: every instance's A record, once.
    let in_zone = rt.block_on(async {
        let mut count = 0usize;
        let mut start: Option<(String, aws_sdk_route53::types::RrType)> = None;
        loop {
            let mut req = admin.list_resource_record_sets().hosted_zone_id(&zone);
            if let Some((name, kind)) = start.take() {
                req = req.start_record_name(name).start_record_type(kind);
            }
            let out = req.send().await.expect("list records");
            count += out
                .resource_record_sets()
                .iter()
                .filter(|s| s.r#type().as_str() == "A")
                .count();
            match (out.next_record_name(), out.next_record_type()) {
                (Some(n), Some(t)) if out.is_truncated() => start = Some((n.into(), t.clone())),
                _ => break,
            }
        }
        count
    });
    let floor = n as f64 / rate;
    let counts = proxy.counts();
    let result = json!({
        "n": n,
        "mode": if in_process { "tasks" } else { "processes" },
        "rate": rate,
        "bucket": bucket,
        "succeeded": ok,
        "a_records_in_zone": in_zone,
        "total_s": (total.as_secs_f64() * 100.0).round() / 100.0,
        "spawn_s": spawned.map(|d| (d.as_secs_f64() * 100.0).round() / 100.0),
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
        "proxy_forwarded": counts.forwarded,
        "proxy_throttled": counts.throttled,
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
    for e in &errors {
        println!("error: {e}");
    }
    println!("RESULT {result}");
    drop(proxy);
    drop(moto);
    if ok != n {
        std::process::exit(1);
    }
}
