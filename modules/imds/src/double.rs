//! An EC2 IMDSv2 test double (feature `double`): a tiny HTTP/1.1 server on 127.0.0.1 or
//! `[::1]` (std only, one thread per connection) serving a metadata tree with the token
//! protocol, plus knobs to make it misbehave the ways a real network path does.
//!
//! ```ignore
//! use stoke_imds::double::{ImdsServer, Knobs};
//! let srv = ImdsServer::start(ImdsServer::default_tree(), Knobs { leading_500s: 2, ..Knobs::default() });
//! let endpoint = srv.url(); // "http://127.0.0.1:PORT"
//! // IPv6 (standing in for fd00:ec2::254): ImdsServer::start_on("[::1]:0", tree, knobs)
//! // ... point the client at it, then:
//! assert_eq!(srv.requests("/latest/api/token"), 1);
//! ```
//!
//! Tree keys are paths under `/latest/`: `meta-data/instance-id`, `user-data`, ...
//! A GET of a directory (`meta-data/public-keys/`) answers the tree's own entry for
//! that key when there is one (IMDS lists public keys as `0=name`), otherwise the names
//! of the immediate children, one a line, sub-directories with a trailing `/`.
//!
//! Used by this crate's tests (tests/session.rs) and, as a dev-dependency with the feature,
//! by the agent's tests (the EC2 datasource, the lineage, tests/ec2.rs, tests/route53.rs).
//! Test code: a failure to bind panics.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

pub const TOKEN_PATH: &str = "/latest/api/token";
pub const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
pub const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";

/// Ways to misbehave. `Knobs::default()` is a well-behaved IMDSv2.
#[derive(Clone, Debug, Default)]
pub struct Knobs {
    /// Wait this long before answering each request.
    pub delay: Duration,
    /// Answer the first N requests (token PUT included) with 500.
    pub leading_500s: usize,
    /// Answer the token PUT with 403 (IMDS disabled / tokens blocked).
    pub token_forbidden: bool,
    /// The first GET that carries a valid token gets 401 and that token is revoked
    /// (a token that expired in flight). Happens once.
    pub reject_first_token: bool,
    /// Answer every GET with 200 and an HTML page (a captive portal or proxy answering
    /// in IMDS's place).
    pub garbage_bodies: bool,
    /// Answer `/latest/user-data` with this many bytes, chunked (no Content-Length).
    pub huge_user_data: Option<usize>,
    /// Accept connections and read requests but never answer any of them.
    pub hang: bool,
    /// Never answer GETs of this one path (e.g. `/latest/user-data`).
    pub hang_path: Option<String>,
}

pub type Tree = BTreeMap<String, Vec<u8>>;

#[derive(Default)]
struct State {
    counts: BTreeMap<String, usize>,
    total: usize,
    tokens: BTreeSet<String>,
    tokens_issued: usize,
    rejected_once: bool,
    streams: Vec<TcpStream>,
}

struct Shared {
    tree: Tree,
    knobs: Knobs,
    state: Mutex<State>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    stop: AtomicBool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking connection thread must not wedge the assertions of the test.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `tree` with `path` set to `v`.
pub fn with(mut tree: Tree, path: &str, v: &[u8]) -> Tree {
    tree.insert(path.to_string(), v.to_vec());
    tree
}

/// Runs a client's future to its end on a runtime of its own (the double needs none).
pub fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// A URL where nothing listens on `host` (`127.0.0.1`, `[::1]`): a port that was free a
/// moment ago, so connecting is refused.
pub fn nobody(host: &str) -> String {
    let l = TcpListener::bind(format!("{host}:0")).unwrap_or_else(|e| panic!("bind {host}: {e}"));
    format!("http://{}", l.local_addr().expect("local_addr"))
}

/// The running server; dropping it stops it and closes every open connection.
pub struct ImdsServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl ImdsServer {
    /// Starts on 127.0.0.1 with an OS-chosen port.
    pub fn start(tree: Tree, knobs: Knobs) -> ImdsServer {
        ImdsServer::start_on("127.0.0.1:0", tree, knobs)
    }

    /// Starts on `addr` (`"[::1]:0"`: IPv6 loopback only, as IMDS's IPv6 address stands
    /// for `[fd00:ec2::254]` in tests).
    pub fn start_on(addr: &str, tree: Tree, knobs: Knobs) -> ImdsServer {
        let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let addr = listener.local_addr().expect("local_addr");
        let shared = Arc::new(Shared {
            tree,
            knobs,
            state: Mutex::new(State::default()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let sh = shared.clone();
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sh.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = conn else { continue };
                let _ = stream.set_nodelay(true);
                if let Ok(clone) = stream.try_clone() {
                    sh.state().streams.push(clone);
                }
                let sh = sh.clone();
                std::thread::spawn(move || serve(stream, &sh));
            }
        });
        ImdsServer {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// A well-behaved server with [`ImdsServer::default_tree`].
    pub fn happy() -> ImdsServer {
        ImdsServer::start(ImdsServer::default_tree(), Knobs::default())
    }

    /// A plausible instance: two public keys, three block devices, `#cloud-config` user-data.
    pub fn default_tree() -> Tree {
        let mut t = Tree::new();
        let mut put = |k: &str, v: &str| {
            t.insert(k.to_string(), v.as_bytes().to_vec());
        };
        put("meta-data/instance-id", "i-0123456789abcdef0");
        put("meta-data/instance-type", "m6id.large");
        put("meta-data/local-ipv4", "10.1.2.3");
        put("meta-data/ipv6", "2600:1f18:aaaa:bbbb::10");
        put("meta-data/local-hostname", "ip-10-1-2-3.ec2.internal");
        put("meta-data/placement/region", "us-east-1");
        put("meta-data/placement/availability-zone", "us-east-1a");
        put("meta-data/public-keys/", "0=alice\n1=bob");
        put(
            "meta-data/public-keys/0/openssh-key",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAlice alice@example\n",
        );
        put(
            "meta-data/public-keys/1/openssh-key",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBob bob@example",
        );
        put("meta-data/block-device-mapping/ami", "/dev/xvda");
        put("meta-data/block-device-mapping/root", "/dev/xvda");
        put("meta-data/block-device-mapping/ephemeral0", "sdb");
        put("user-data", "#cloud-config\nhostname: web-1\n");
        t
    }

    /// Several network cards, MACs listed in no useful order: the primary is network-card 0,
    /// device-number 0 (not the first listed, not a device 0 on another card).
    pub fn multi_nic_tree() -> Tree {
        let mut t = ImdsServer::default_tree();
        let macs = "meta-data/network/interfaces/macs/";
        let mut put = |k: &str, v: &str| {
            t.insert(format!("{macs}{k}"), v.as_bytes().to_vec());
        };
        put(
            "",
            "0e:00:00:00:00:03/\n0e:00:00:00:00:01/\n0e:00:00:00:00:02/\n",
        );
        for (mac, card, dev, v4, v6) in [
            (
                "0e:00:00:00:00:03",
                "1",
                "0",
                "10.9.9.9",
                "2600:1f18:aaaa:bbbb::99",
            ),
            (
                "0e:00:00:00:00:01",
                "0",
                "1",
                "10.1.9.9",
                "2600:1f18:aaaa:bbbb::19",
            ),
            (
                "0e:00:00:00:00:02",
                "0",
                "0",
                "10.1.2.30\n10.1.2.31",
                "2600:1f18:aaaa:bbbb::30\n2600:1f18:aaaa:bbbb::31",
            ),
        ] {
            put(&format!("{mac}/network-card"), card);
            put(&format!("{mac}/device-number"), dev);
            put(&format!("{mac}/local-ipv4s"), v4);
            put(&format!("{mac}/ipv6s"), v6);
        }
        t
    }

    /// `http://127.0.0.1:PORT` (or `http://[::1]:PORT`) — the endpoint to configure the client with.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client configuration for this server: its URL, a 10 s budget, 2 s attempts (tests
    /// that want a tighter budget override those).
    pub fn config(&self) -> crate::ImdsConfig {
        crate::ImdsConfig {
            endpoint: self.url().into(),
            budget: Duration::from_secs(10),
            request_timeout: Duration::from_secs(2),
            ..crate::ImdsConfig::default()
        }
    }

    /// Requests received for this path (e.g. `/latest/meta-data/instance-id`), any method.
    pub fn requests(&self, path: &str) -> usize {
        self.shared.state().counts.get(path).copied().unwrap_or(0)
    }

    /// Requests received, all paths.
    pub fn total_requests(&self) -> usize {
        self.shared.state().total
    }

    /// Per-path request counts.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        self.shared.state().counts.clone()
    }

    /// Tokens handed out by successful PUTs.
    pub fn tokens_issued(&self) -> usize {
        self.shared.state().tokens_issued
    }

    /// The largest number of requests that were being handled at the same moment.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Asserts what a client that fetches well did: one token, every path asked once, and at
    /// least `min_in_flight` requests handled at the same moment (not one after the other).
    pub fn assert_one_token_each_path_once(&self, min_in_flight: usize) {
        assert_eq!(self.tokens_issued(), 1);
        assert_eq!(self.requests(TOKEN_PATH), 1);
        assert!(
            self.counts().values().all(|&n| n == 1),
            "{:?}",
            self.counts()
        );
        let most = self.max_in_flight();
        assert!(most >= min_in_flight, "max in flight {most}");
    }
}

impl Drop for ImdsServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for s in self.shared.state().streams.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

struct Request {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
}

fn read_request(r: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut it = line.split_whitespace();
    let method = it.next()?.to_string();
    let path = it.next()?.to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
    })
}

fn serve(stream: TcpStream, sh: &Shared) {
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut w = write_half;
    let mut r = BufReader::new(stream);
    while let Some(req) = read_request(&mut r) {
        if sh.stop.load(Ordering::SeqCst) {
            return;
        }
        let now = sh.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        sh.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let ok = handle(&req, &mut r, &mut w, sh);
        sh.in_flight.fetch_sub(1, Ordering::SeqCst);
        if !ok {
            return;
        }
    }
}

/// Answers one request; false when the connection is finished.
fn handle(req: &Request, r: &mut BufReader<TcpStream>, w: &mut TcpStream, sh: &Shared) -> bool {
    let k = &sh.knobs;
    let n = {
        let mut st = sh.state();
        *st.counts.entry(req.path.clone()).or_default() += 1;
        st.total += 1;
        st.total
    };
    if k.hang || (req.method == "GET" && k.hang_path.as_deref() == Some(req.path.as_str())) {
        // Hold the connection until the client gives up or the server stops.
        let mut sink = [0u8; 1024];
        while matches!(r.read(&mut sink), Ok(m) if m > 0) {}
        return false;
    }
    if !k.delay.is_zero() {
        std::thread::sleep(k.delay);
    }
    if n <= k.leading_500s {
        return respond(w, 500, &[], b"Internal Server Error");
    }
    if req.path == TOKEN_PATH {
        if req.method != "PUT" {
            return respond(w, 405, &[], b"Method Not Allowed");
        }
        if k.token_forbidden {
            return respond(w, 403, &[], b"Forbidden");
        }
        let ttl: Option<u32> = req.headers.get(TTL_HEADER).and_then(|v| v.parse().ok());
        let Some(ttl) = ttl.filter(|t| (1..=21600).contains(t)) else {
            return respond(w, 400, &[], b"Bad Request");
        };
        let token = {
            let mut st = sh.state();
            st.tokens_issued += 1;
            let token = format!("token-{}-AQAAAExampleExample==", st.tokens_issued);
            st.tokens.insert(token.clone());
            token
        };
        let ttl = ttl.to_string();
        return respond(w, 200, &[(TTL_HEADER, &ttl)], token.as_bytes());
    }
    if req.method != "GET" {
        return respond(w, 405, &[], b"Method Not Allowed");
    }
    {
        let mut st = sh.state();
        let token = req.headers.get(TOKEN_HEADER);
        let valid = token.is_some_and(|t| st.tokens.contains(t));
        if !valid {
            drop(st);
            return respond(w, 401, &[], b"Unauthorized");
        }
        if k.reject_first_token && !st.rejected_once {
            st.rejected_once = true;
            if let Some(t) = token {
                st.tokens.remove(t);
            }
            drop(st);
            return respond(w, 401, &[], b"Unauthorized");
        }
    }
    if k.garbage_bodies {
        return respond(
            w,
            200,
            &[("content-type", "text/html")],
            b"<!DOCTYPE html><html><body><h1>Welcome to Hotel WiFi</h1></body></html>",
        );
    }
    let Some(key) = req.path.strip_prefix("/latest/") else {
        return respond(w, 404, &[], b"Not Found");
    };
    if key == "user-data"
        && let Some(size) = k.huge_user_data
    {
        return stream_chunked(w, size);
    }
    if let Some(v) = sh.tree.get(key) {
        return respond(w, 200, &[], v);
    }
    if key.ends_with('/') || key.is_empty() {
        let mut names = BTreeSet::new();
        for child in sh.tree.keys() {
            if let Some(rest) = child.strip_prefix(key) {
                match rest.split_once('/') {
                    Some((dir, _)) => names.insert(format!("{dir}/")),
                    None => names.insert(rest.to_string()),
                };
            }
        }
        names.remove("");
        names.remove("/");
        if !names.is_empty() {
            let list = names.into_iter().collect::<Vec<_>>().join("\n");
            return respond(w, 200, &[], list.as_bytes());
        }
    }
    respond(w, 404, &[], b"Not Found")
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Internal Server Error",
    }
}

fn respond(w: &mut TcpStream, status: u16, extra: &[(&str, &str)], body: &[u8]) -> bool {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nServer: EC2ws\r\n",
        reason(status),
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes()).is_ok() && w.write_all(body).is_ok() && w.flush().is_ok()
}

/// Streams `size` bytes of `#` chunked; stops early when the client hangs up.
fn stream_chunked(w: &mut TcpStream, size: usize) -> bool {
    let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n";
    if w.write_all(head.as_bytes()).is_err() {
        return false;
    }
    let chunk = vec![b'#'; 64 * 1024];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len());
        let ok = w.write_all(format!("{n:x}\r\n").as_bytes()).is_ok()
            && w.write_all(&chunk[..n]).is_ok()
            && w.write_all(b"\r\n").is_ok();
        if !ok {
            return false;
        }
        left -= n;
    }
    w.write_all(b"0\r\n\r\n").is_ok() && w.flush().is_ok()
}
