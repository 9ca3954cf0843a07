//! Target-group helpers for the health, balancing and drain tests (SPEC §4): config
//! builders, status lookups, reloads, requests with extra headers, and tallies of
//! which backend answered.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Fulcrum, Response, http_request};

/// Short health checks: every second, 500 ms timeout, thresholds 2 and 2.
pub const FAST_HC: &str =
    "path: /hc, interval: 1s, timeout: 500ms, healthy_threshold: 2, unhealthy_threshold: 2";

/// One listener: (name, protocol, port on 127.0.0.1, default forward group).
pub type Lst<'a> = (&'a str, &'a str, u16, &'a str);

/// A whole config: `node` is the flow mapping's contents (`name: lb-a, zone: a`),
/// then the admin API, the listeners and the given `target_groups` items.
pub fn lb_config(node: &str, admin: u16, listeners: &[Lst], groups: &[String]) -> String {
    let mut y = format!(
        "node: {{{node}}}\nruntime: {{worker_threads: 2}}\nadmin: {{bind: \"127.0.0.1:{admin}\"}}\nlisteners:\n"
    );
    for (name, proto, port, group) in listeners {
        y += &format!(
            "  - {{name: {name}, protocol: {proto}, bind: \"127.0.0.1:{port}\", default_action: {{forward: {group}}}}}\n"
        );
    }
    y += "target_groups:\n";
    for g in groups {
        y += g;
    }
    y
}

/// One `target_groups` item: `settings` are `key: value` lines (algorithm,
/// cross_zone, …), `hc` the health_check flow mapping's contents, `targets` items
/// made by [`tgt`], [`tgt_zone`] or [`tgt_weight`].
pub fn group(
    name: &str,
    protocol: &str,
    settings: &[&str],
    hc: &str,
    targets: &[String],
) -> String {
    let mut y = format!("  - name: {name}\n    protocol: {protocol}\n");
    for s in settings {
        y += &format!("    {s}\n");
    }
    y += &format!("    health_check: {{{hc}}}\n");
    y += &format!("    targets: [{}]\n", targets.join(", "));
    y
}

pub fn tgt(addr: SocketAddr) -> String {
    format!("{{address: \"{addr}\"}}")
}

pub fn tgt_zone(addr: SocketAddr, zone: &str) -> String {
    format!("{{address: \"{addr}\", zone: {zone}}}")
}

pub fn tgt_weight(addr: SocketAddr, weight: u32) -> String {
    format!("{{address: \"{addr}\", weight: {weight}}}")
}

/// The status entry of target `addr` in group `group`, if listed.
pub fn find_target(st: &Value, group: &str, addr: SocketAddr) -> Option<Value> {
    st["target_groups"]
        .as_array()?
        .iter()
        .find(|g| g["name"] == group)?["targets"]
        .as_array()?
        .iter()
        .find(|t| t["address"] == addr.to_string())
        .cloned()
}

impl Fulcrum {
    /// The status entry of one target, `None` when it is not listed.
    pub async fn target(&self, group: &str, addr: SocketAddr) -> Option<Value> {
        find_target(&self.status_json(None).await, group, addr)
    }

    /// The target's `state`, or `absent` when it is not listed.
    pub async fn state_of(&self, group: &str, addr: SocketAddr) -> String {
        match self.target(group, addr).await {
            Some(t) => t["state"].as_str().unwrap_or("?").to_string(),
            None => "absent".into(),
        }
    }

    /// Polls the status every 25 ms until the target is in `state` (`absent`: not
    /// listed) and returns its entry (`Null` when absent) and when it was seen.
    pub async fn wait_state(
        &self,
        group: &str,
        addr: SocketAddr,
        state: &str,
        within: Duration,
    ) -> (Value, Instant) {
        let deadline = Instant::now() + within;
        loop {
            let t = self.target(group, addr).await;
            let now = Instant::now();
            let cur = t
                .as_ref()
                .map_or("absent", |t| t["state"].as_str().unwrap_or("?"));
            if cur == state {
                return (t.unwrap_or(Value::Null), now);
            }
            assert!(
                now < deadline,
                "{group}/{addr} not {state} within {within:?}; last seen: {t:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Writes `yaml` and reloads through `POST /api/v1/reload`; panics unless 200.
    pub async fn reload_yaml(&self, yaml: &str) {
        self.reload_config(yaml);
        let (st, body) = self.admin_post("/api/v1/reload", None).await;
        assert_eq!(st, 200, "reload: {body}");
    }
}

/// `GET path` on a new connection with extra header lines (`Name: value`).
pub async fn get_with(addr: SocketAddr, path: &str, headers: &[String]) -> Response {
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let raw =
        format!("GET {path} HTTP/1.1\r\nHost: test.local\r\n{extra}Connection: close\r\n\r\n");
    http_request(addr, raw.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("GET {path} on {addr}: {e}"))
}

/// Who answered: the backend's `X-Backend`, else `status N`.
pub fn served_by(r: &Response) -> String {
    match r.header("x-backend") {
        Some(b) => b.to_string(),
        None => format!("status {}", r.status),
    }
}

/// The `Set-Cookie` header setting cookie `name`, if any.
pub fn set_cookie(r: &Response, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    r.headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.clone())
        .find(|v| v.starts_with(&prefix))
}

/// The value of a `Set-Cookie` header (between the first `=` and the first `;`).
pub fn cookie_value(set_cookie: &str) -> String {
    let v = set_cookie.split(';').next().unwrap_or("");
    v.split_once('=')
        .map(|(_, v)| v.to_string())
        .unwrap_or_default()
}

/// Sends `n` sequential `GET path` requests and counts who answered them.
pub async fn tally(addr: SocketAddr, path: &str, n: usize) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for _ in 0..n {
        *out.entry(served_by(&get_with(addr, path, &[]).await))
            .or_insert(0) += 1;
    }
    out
}

/// The count for `who` in a tally (0 when absent).
pub fn count(t: &BTreeMap<String, usize>, who: &str) -> usize {
    t.get(who).copied().unwrap_or(0)
}

/// Background traffic: sequential `GET /` on new connections every 20 ms, each
/// recorded with its start time and who answered (or the error).
pub struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<Vec<(Instant, String)>>,
}

impl Sampler {
    pub fn start(addr: SocketAddr) -> Sampler {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut out = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let at = Instant::now();
                    let raw = b"GET / HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n";
                    let who =
                        match tokio::time::timeout(Duration::from_secs(5), http_request(addr, raw))
                            .await
                        {
                            Ok(Ok(r)) => served_by(&r),
                            Ok(Err(e)) => format!("error {e}"),
                            Err(_) => "error timeout".into(),
                        };
                    out.push((at, who));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                out
            }
        });
        Sampler { stop, task }
    }

    pub async fn finish(self) -> Vec<(Instant, String)> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.task.await.expect("sampler task")
    }
}

/// Listener `web` (http, on `web`) forwarding to group `web` whose targets are
/// `targets`, health-checked on `hc_port` of their own addresses instead (so a
/// target that takes no connection, such as a [`super::Blackhole`], still counts
/// as healthy when something answers on `hc_port`).
pub fn checked_elsewhere(admin: u16, web: u16, targets: &[SocketAddr], hc_port: u16) -> String {
    let g = group(
        "web",
        "http",
        &[],
        &format!("port: {hc_port}, path: /hc, interval: 30s, timeout: 2s"),
        &targets.iter().map(|t| tgt(*t)).collect::<Vec<_>>(),
    );
    lb_config(
        "name: lb-test, zone: zone-a",
        admin,
        &[("web", "http", web, "web")],
        &[g],
    )
}
