//! A small HTTP/1.1 proxy in front of moto_server that behaves like Route53
//! under load: above a rate (token bucket) it answers `Throttling`, and on
//! demand `PriorRequestNotComplete` or a 503, with the AWS XML error body.
//! std threads only: one per client connection, keep-alive supported.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the proxy did, by outcome and by API action.
#[derive(Default, Clone, Debug)]
pub struct Counts {
    pub forwarded: u64,
    pub throttled: u64,
    pub injected: u64,
    /// Forwarded requests per action ("ChangeResourceRecordSets" ...).
    pub actions: BTreeMap<String, u64>,
}

struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Takes a token if there is one (rate 0 = unlimited).
    fn take(&mut self) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct Shared {
    upstream: SocketAddr,
    bucket: Mutex<Bucket>,
    counts: Mutex<Counts>,
    /// The next N ChangeResourceRecordSets answer PriorRequestNotComplete.
    prior_not_complete: AtomicU32,
    /// The next N requests (any) answer 503.
    unavailable: AtomicU32,
    /// Every request answers Throttling.
    throttle_all: AtomicBool,
    /// Changes look PENDING (moto reports INSYNC at once).
    pending: AtomicBool,
    stop: AtomicBool,
}

pub struct Proxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Proxy {
    /// A proxy to `upstream` letting `rate` requests/s through (bursts of
    /// `burst`), throttling the rest. `rate` 0 lets everything through.
    pub fn start(upstream: SocketAddr, rate: f64, burst: f64) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        let addr = listener.local_addr().expect("proxy addr");
        let shared = Arc::new(Shared {
            upstream,
            bucket: Mutex::new(Bucket {
                rate,
                burst: burst.max(1.0),
                tokens: burst.max(1.0),
                at: Instant::now(),
            }),
            counts: Mutex::new(Counts::default()),
            prior_not_complete: AtomicU32::new(0),
            unavailable: AtomicU32::new(0),
            throttle_all: AtomicBool::new(false),
            pending: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    let s = s.clone();
                    std::thread::spawn(move || serve(conn, &s));
                }
            }
        });
        Proxy { addr, shared }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn counts(&self) -> Counts {
        self.shared.counts.lock().unwrap().clone()
    }

    pub fn prior_request_not_complete(&self, next: u32) {
        self.shared.prior_not_complete.store(next, Ordering::SeqCst);
    }

    pub fn unavailable(&self, next: u32) {
        self.shared.unavailable.store(next, Ordering::SeqCst);
    }

    pub fn throttle_all(&self, on: bool) {
        self.shared.throttle_all.store(on, Ordering::SeqCst);
    }

    /// While on, every change status in an answer reads PENDING.
    pub fn pending(&self, on: bool) {
        self.shared.pending.store(on, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

struct Request {
    method: String,
    path: String,
    head: Vec<String>,
    body: Vec<u8>,
}

fn read_request(r: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut head = Vec::new();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end().to_string();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().ok()?;
        }
        head.push(h);
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        head,
        body,
    })
}

/// The Route53 API action of a request, from its method and path.
fn action(method: &str, path: &str) -> &'static str {
    let p = path.split('?').next().unwrap_or("");
    let p = p.trim_start_matches("/2013-04-01/");
    match (method, p) {
        ("POST", p) if p.starts_with("hostedzone/") && p.contains("/rrset") => {
            "ChangeResourceRecordSets"
        }
        ("GET", p) if p.starts_with("hostedzone/") && p.contains("/rrset") => {
            "ListResourceRecordSets"
        }
        ("GET", p) if p.starts_with("change/") => "GetChange",
        ("GET", p) if p.starts_with("hostedzonesbyname") => "ListHostedZonesByName",
        ("POST", "hostedzone") => "CreateHostedZone",
        ("GET", p) if p.starts_with("hostedzone/") => "GetHostedZone",
        _ => "Other",
    }
}

fn error_response(status: &str, kind: &str, code: &str, message: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\"?>\n<ErrorResponse xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\">\
         <Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error>\
         <RequestId>x</RequestId></ErrorResponse>"
    );
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/xml\r\nx-amzn-RequestId: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn serve(conn: TcpStream, s: &Shared) {
    let Ok(write_half) = conn.try_clone() else {
        return;
    };
    let mut out = write_half;
    let mut r = BufReader::new(conn);
    while let Some(req) = read_request(&mut r) {
        let act = action(&req.method, &req.path);
        let answer = if s.throttle_all.load(Ordering::SeqCst) || !s.bucket.lock().unwrap().take() {
            s.counts.lock().unwrap().throttled += 1;
            error_response("400 Bad Request", "Sender", "Throttling", "Rate exceeded")
        } else if act == "ChangeResourceRecordSets" && take_one(&s.prior_not_complete) {
            s.counts.lock().unwrap().injected += 1;
            error_response(
                "400 Bad Request",
                "Sender",
                "PriorRequestNotComplete",
                "The request was rejected because Route 53 was still processing a prior request.",
            )
        } else if take_one(&s.unavailable) {
            s.counts.lock().unwrap().injected += 1;
            error_response(
                "503 Service Unavailable",
                "Receiver",
                "ServiceUnavailable",
                "try again",
            )
        } else {
            {
                let mut c = s.counts.lock().unwrap();
                c.forwarded += 1;
                *c.actions.entry(act.to_string()).or_default() += 1;
            }
            match forward(s.upstream, &req, s.pending.load(Ordering::SeqCst)) {
                Some(resp) => resp,
                None => error_response("502 Bad Gateway", "Receiver", "BadGateway", "upstream"),
            }
        };
        if out.write_all(&answer).is_err() {
            break;
        }
    }
    let _ = out.shutdown(Shutdown::Both);
}

fn take_one(n: &AtomicU32) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
        .is_ok()
}

/// Sends the request upstream on a fresh connection (Connection: close) and
/// returns the response re-framed with a Content-Length for keep-alive.
fn forward(upstream: SocketAddr, req: &Request, pending: bool) -> Option<Vec<u8>> {
    let mut up = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)).ok()?;
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.path);
    for h in &req.head {
        if !h.to_ascii_lowercase().starts_with("connection:") {
            head.push_str(h);
            head.push_str("\r\n");
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    up.write_all(head.as_bytes()).ok()?;
    up.write_all(&req.body).ok()?;
    let mut raw = Vec::new();
    up.read_to_end(&mut raw).ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.to_string();
    let mut out = format!("{status}\r\n");
    for h in lines {
        let lower = h.to_ascii_lowercase();
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            body = dechunk(&body)?;
            continue;
        }
        if lower.starts_with("connection:") || lower.starts_with("content-length:") {
            continue;
        }
        out.push_str(h);
        out.push_str("\r\n");
    }
    if pending {
        body = String::from_utf8_lossy(&body)
            .replace("<Status>INSYNC</Status>", "<Status>PENDING</Status>")
            .into_bytes();
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&body);
    Some(bytes)
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_str = String::from_utf8_lossy(&b[..eol]).to_string();
        let size = usize::from_str_radix(size_str.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}
