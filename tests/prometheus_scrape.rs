//! A real Prometheus (Debian's `prometheus`) scrapes a test fulcrum with the
//! shipped scrape config, pointed at loopback only, and its query API returns
//! fulcrum's series (issue 8).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The shipped prometheus.yml with every address replaced by loopback ones: the
/// one fulcrum under test, and a refused port for the alertmanager.
fn loopback_config(admin: u16) -> String {
    let shipped =
        std::fs::read_to_string(repo_root().join("deploy/prometheus/prometheus.yml")).unwrap();
    let mut out = Vec::new();
    let mut skip = 0;
    for line in shipped.lines() {
        if skip > 0 {
            skip -= 1;
            continue;
        }
        if line.contains("198.51.100.12") {
            skip = 3; // its labels: node, node_zone
            continue;
        }
        let line = line
            .replace("198.51.100.11:9900", &format!("127.0.0.1:{admin}"))
            .replace("alertmanager.example.internal:9093", "127.0.0.1:1")
            .replace("scrape_interval: 15s", "scrape_interval: 1s")
            .replace("scrape_timeout: 5s", "scrape_timeout: 1s")
            .replace("evaluation_interval: 15s", "evaluation_interval: 1s");
        out.push(line);
    }
    let text = out.join("\n");
    // Network rule: nothing but loopback may be contacted.
    for l in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        assert!(
            !l.contains("198.51.") && !l.contains("example") && !l.contains("192.0.2."),
            "a non-loopback address is left in the test config: {l}"
        );
    }
    text
}

/// Every PromQL expression of the shipped Grafana dashboard (panels and template
/// variables), with Grafana's variables filled in, is valid for the real Prometheus,
/// and every fulcrum metric it names is one fulcrum defines (the SPEC §9 names of
/// src/metrics.rs; a labelled series only shows in `/metrics` once it is used).
async fn check_dashboard(prom: u16) {
    let source = std::fs::read_to_string(repo_root().join("src/metrics.rs")).unwrap();
    let defined: Vec<&str> = source
        .split('"')
        .filter(|w| w.starts_with("fulcrum_") && !w.contains(' '))
        .collect();
    assert!(defined.len() >= 24, "{defined:?}");
    let text =
        std::fs::read_to_string(repo_root().join("deploy/grafana/fulcrum-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON parses");
    let mut exprs = Vec::new();
    fn walk(panels: &serde_json::Value, out: &mut Vec<String>) {
        for p in panels.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push(t["expr"].as_str().expect("target has expr").to_string());
            }
            walk(&p["panels"], out);
        }
    }
    walk(&dash["panels"], &mut exprs);
    assert!(exprs.len() >= 20, "dashboard has {} queries", exprs.len());
    for v in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]
            .as_str()
            .and_then(|q| q.strip_prefix("label_values("))
        {
            let series = q.rsplit_once(',').expect("label_values(series, label)").0;
            exprs.push(series.to_string());
        }
    }
    let mut wrong = Vec::new();
    for e in &exprs {
        for name in e
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("fulcrum_"))
        {
            let base = name.strip_suffix("_bucket").unwrap_or(name);
            if !defined.contains(&base) {
                wrong.push(format!("{name}: not a fulcrum metric"));
            }
        }
        let q = e
            .replace("$__rate_interval", "1m")
            .replace("$node", ".*")
            .replace("$listener", ".*")
            .replace("$target_group", ".*");
        let enc = percent_encoding::utf8_percent_encode(&q, percent_encoding::NON_ALPHANUMERIC);
        let raw = format!(
            "GET /api/v1/query?query={enc} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        );
        let r = http_request(local(prom), raw.as_bytes()).await.unwrap();
        if r.status != 200 || !r.text().contains("\"status\":\"success\"") {
            wrong.push(format!("{q}: {} {}", r.status, r.text()));
        }
    }
    assert!(wrong.is_empty(), "dashboard queries:\n{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_scrapes_fulcrum() {
    bounded(90, async {
        let a = Backend::start("prom-a").await;
        let (admin, web, prom) = (free_port(), free_port(), free_port());
        let f = Fulcrum::start(&simple_config(admin, web, &[a.addr])).await;
        for i in 0..5 {
            assert_eq!(get(local(web), &format!("/s{i}")).await.status, 200);
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("prometheus.yml"), loopback_config(admin)).unwrap();
        std::fs::copy(
            repo_root().join("deploy/prometheus/fulcrum-alerts.yml"),
            dir.path().join("fulcrum-alerts.yml"),
        )
        .unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is missing: run scripts/install-test-deps.sh");
        let _guard = Kill(child);
        for query in ["fulcrum_requests_total", "fulcrum_healthy_targets"] {
            let path = format!("/api/v1/query?query={query}");
            let body = eventually(Duration::from_secs(45), query, || {
                let path = path.clone();
                async move {
                    let raw = format!(
                        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                    );
                    let r = http_request(local(prom), raw.as_bytes()).await.ok()?;
                    let text = r.text();
                    (text.contains("\"result\":[{") && text.contains(query)).then_some(text)
                }
            })
            .await;
            assert!(body.contains("\"job\":\"fulcrum\""), "{body}");
        }
        check_dashboard(prom).await;
        drop(f);
    })
    .await;
}
