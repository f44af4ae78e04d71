//! Boot reports and image lineage end to end, through the binary in a sandbox root: the
//! layers say who they are, `stoke clean` records each bake's facts, `stoke status` and
//! `stoke query image` show the lineage, and the boot's end POSTs it (with the status) to a
//! local server.

#[path = "support/sandbox.rs"]
mod sandbox;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use sandbox::Sandbox;

struct Seen {
    line: String,
    content_type: String,
    body: Vec<u8>,
}

/// Answers every request with `code` on a free port; each request read goes to the channel.
fn serve(code: u16) -> (String, mpsc::Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let (mut len, mut content_type) = (0usize, String::new());
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    match k.trim().to_ascii_lowercase().as_str() {
                        "content-length" => len = v.trim().parse().unwrap_or(0),
                        "content-type" => content_type = v.trim().to_string(),
                        _ => {}
                    }
                }
            }
            let mut body = vec![0u8; len];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let _ = write!(
                stream,
                "HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            let _ = tx.send(Seen {
                line: line.trim().to_string(),
                content_type,
                body,
            });
        }
    });
    (url, rx)
}

fn layers(sb: &Sandbox, report_url: &str) {
    sb.write(
        "/etc/stoke/stoke.d/10-base.yaml",
        "image:\n  name: base\n  version: '2.0'\n  ancestor: debian-12\n  builder: packer\n",
    );
    sb.write(
        "/etc/stoke/stoke.d/50-app.yaml",
        format!(
            "image:\n  name: app\n  version: '1.4'\n  ancestor: base-2.0\n  tags: {{team: web}}\n\
             report:\n  url: {report_url}/boot/$INSTANCE_ID\n  headers: {{X-Fleet: blue}}\n  timeout: 10\n"
        ),
    );
}

#[test]
fn the_lineage_is_recorded_per_bake_shown_and_reported_at_the_end_of_the_boot() {
    let (url, seen) = serve(200);
    let sb = Sandbox::nocloud("i-lineage", "#cloud-config\nhostname: web-1\n");
    sb.write(
        "/etc/stoke/stoke.d/10-base.yaml",
        "image: {name: base, version: '2.0'}\n",
    );
    // The base layer's bake ends.
    let clean = sb.stoke(&["clean"]);
    assert_eq!(clean.code, 0, "{}", clean.stderr);
    assert!(
        clean.stdout.contains("lineage: 10-base.yaml built "),
        "{}",
        clean.stdout
    );
    let recorded = sb.read("/etc/stoke/lineage.json");
    let base_facts: serde_json::Value = serde_json::from_str(&recorded).expect("lineage.json");
    assert_eq!(
        base_facts["layers"]["10-base.yaml"]["stoke_version"],
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        base_facts["layers"]["10-base.yaml"]
            .get("source_ami")
            .is_none(),
        "no IMDS asked under --root"
    );
    // The app layer's bake: only the new layer gets this bake's facts.
    layers(&sb, &url);
    let clean = sb.stoke(&["clean"]);
    assert!(
        clean.stdout.contains("lineage: 50-app.yaml") && !clean.stdout.contains("10-base"),
        "{}",
        clean.stdout
    );
    let query = sb.stoke(&["query", "image"]);
    assert_eq!(query.code, 0, "{}", query.stderr);
    let image: serde_json::Value = serde_json::from_str(&query.stdout).expect("json");
    assert_eq!(image[0]["layer"], "10-base.yaml");
    assert_eq!(image[0]["name"], "base");
    assert_eq!(
        image[0]["ancestor"], "debian-12",
        "each layer its own, unmerged"
    );
    assert_eq!(
        image[0]["build"], base_facts["layers"]["10-base.yaml"],
        "kept from its own bake"
    );
    assert_eq!(image[1]["name"], "app");
    assert_eq!(image[1]["tags"]["team"], "web");
    assert!(image[1]["build"]["cleaned_at"].as_str().is_some());

    // The instance boots.
    let run = sb.run_all();
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let req = seen
        .recv_timeout(Duration::from_secs(30))
        .expect("the report arrived");
    assert_eq!(req.line, "POST /boot/i-lineage HTTP/1.1");
    assert_eq!(req.content_type, "application/json");
    let posted: serde_json::Value = serde_json::from_slice(&req.body).expect("json body");
    assert_eq!(posted["status"], "done", "the word the boot ends with");
    assert_eq!(posted["instance_id"], "i-lineage");
    assert_eq!(posted["lineage"], image);
    assert_eq!(posted["modules"]["hostname"]["state"], "ok");

    let status = sb.status();
    assert_eq!(status["modules"]["report"]["state"], "ok", "{status}");
    assert_eq!(
        status["modules"]["report"]["details"]["delivery"]["delivered"],
        true
    );
    assert_eq!(status["lineage"], image);
    let human = sb.stoke(&["status"]);
    assert!(
        human.stdout.contains("image: app 1.4 <- base 2.0"),
        "{}",
        human.stdout
    );
    assert!(
        human
            .stdout
            .contains("50-app.yaml: app 1.4 (ancestor base-2.0"),
        "{}",
        human.stdout
    );
}

#[test]
fn phone_home_from_user_data_posts_the_instances_identity_once() {
    let (url, seen) = serve(200);
    let sb = Sandbox::nocloud(
        "i-phone",
        &format!(
            "#cloud-config\nhostname: web-2\nphone_home:\n  url: {url}/$INSTANCE_ID\n  \
             post: [instance_id, hostname]\n  tries: 2\nimage: {{name: sneaky}}\n"
        ),
    );
    let run = sb.run_all();
    let req = seen
        .recv_timeout(Duration::from_secs(30))
        .expect("phone_home arrived");
    assert_eq!(req.line, "POST /i-phone HTTP/1.1");
    assert_eq!(req.content_type, "application/x-www-form-urlencoded");
    assert_eq!(
        String::from_utf8_lossy(&req.body),
        "instance_id=i-phone&hostname=web-2"
    );
    let status = sb.status();
    assert_eq!(status["modules"]["phone-home"]["state"], "ok", "{status}");
    // `image:` belongs to image layers: user-data's is said and left out.
    assert_eq!(run.code, 2, "degraded by the warning: {}", run.stderr);
    let warnings = status["warnings"].to_string();
    assert!(
        warnings.contains("user-data: `image:` describes an image layer"),
        "{warnings}"
    );
    assert!(status.get("lineage").is_none(), "{status}");
    // Per instance: the next boot does not phone home again.
    sb.new_boot("boot-2");
    sb.run_all();
    assert!(seen.recv_timeout(Duration::from_millis(200)).is_err());
}

#[test]
fn an_undelivered_report_is_a_warning_within_its_budget() {
    let (url, seen) = serve(503);
    let sb = Sandbox::nocloud("i-down", "#cloud-config\n");
    sb.write(
        "/etc/stoke/stoke.d/50-app.yaml",
        format!("report: {{url: '{url}', timeout: 2}}\n"),
    );
    let started = std::time::Instant::now();
    let run = sb.run_all();
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(run.code, 2, "degraded, still ready: {}", run.stderr);
    let status = sb.status();
    let report = &status["modules"]["report"];
    assert_eq!(report["state"], "ok", "{report}");
    assert_eq!(report["details"]["delivery"]["http_status"], 503);
    assert!(
        report["warnings"][0]
            .as_str()
            .unwrap_or_default()
            .contains("not delivered"),
        "{report}"
    );
    assert!(seen.recv_timeout(Duration::from_secs(5)).is_ok());
}

#[test]
fn a_boot_whose_check_failed_still_reports_and_says_error() {
    let (url, seen) = serve(200);
    let sb = Sandbox::nocloud("i-notready", "#cloud-config\n");
    sb.write(
        "/etc/stoke/stoke.d/50-app.yaml",
        format!(
            "checks:\n  app-config: {{file: /etc/app/app.conf}}\nreport: {{url: '{url}', timeout: 10}}\n"
        ),
    );
    let run = sb.run_all();
    assert_eq!(run.code, 1, "{}", run.stderr);
    let req = seen
        .recv_timeout(Duration::from_secs(30))
        .expect("the report arrived");
    let posted: serde_json::Value = serde_json::from_slice(&req.body).expect("json body");
    assert_eq!(
        posted["status"], "error",
        "not ready, and the fleet is told"
    );
    assert_eq!(posted["modules"]["checks"]["state"], "failed");
    assert!(
        posted["modules"]["checks"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("app-config"),
        "{}",
        posted["modules"]["checks"]
    );
    assert_eq!(sb.status()["modules"]["report"]["state"], "ok");
}
