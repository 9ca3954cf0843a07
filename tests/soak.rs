//! Soak: mixed traffic through the real binary for `FULCRUM_SOAK_SECS` seconds
//! (default 60): keep-alive and new-connection GETs, POSTs with Content-Length
//! and chunked bodies, an https listener, a tcp listener in front of an echo
//! target, a redirect and a fixed response from rules, a target whose health
//! check flaps, a reload every few seconds (alternating the admin API and SIGHUP;
//! each changes the fixed response and adds or removes a target) and `/metrics`
//! scrapes. Every response is checked for its status and bytes, and none may
//! fail. fulcrum's resident memory (VmRSS) is sampled: after a warm-up its growth
//! must stay under 32 MiB. The numbers are printed (`-- --nocapture`).
//!
//! A long run: `FULCRUM_SOAK_SECS=3600 cargo test --release --test soak -- --nocapture`.

mod common;
#[path = "common/l4tls.rs"]
mod l4tls;

use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use l4tls::{Kind, TcpTarget, Versions, self_signed, tls_connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Seconds of traffic when `FULCRUM_SOAK_SECS` is not set.
const DEFAULT_SECS: u64 = 60;
/// Allowed VmRSS growth from the end of the warm-up to the peak.
const RSS_GROWTH_BOUND_KIB: u64 = 32 * 1024;
/// Every loop also stops after this many rounds, whatever the time.
const MAX_ROUNDS: u64 = 5_000_000;
/// One network step (connect, a request, a response) must finish in this time.
const STEP: Duration = Duration::from_secs(10);
/// The backends of group `web` (`c` only in every other config generation).
const NAMES: [&str; 4] = ["a", "b", "flap", "c"];
const RELOAD_EVERY: Duration = Duration::from_secs(4);
const FLAP_EVERY: Duration = Duration::from_secs(3);
const SCRAPE_EVERY: Duration = Duration::from_secs(1);
const RSS_EVERY: Duration = Duration::from_millis(500);

fn soak_secs() -> u64 {
    match std::env::var("FULCRUM_SOAK_SECS") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("FULCRUM_SOAK_SECS={v:?} is not a number of seconds")),
        Err(_) => DEFAULT_SECS,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A network step with the [`STEP`] deadline; errors as text.
async fn step<T>(what: &str, f: impl Future<Output = io::Result<T>>) -> Result<T, String> {
    match tokio::time::timeout(STEP, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no progress in {STEP:?}")),
    }
}

/// `n` deterministic bytes for request `i`.
fn payload(i: u64, n: usize) -> Vec<u8> {
    (0..n as u64)
        .map(|k| (k.wrapping_mul(31).wrapping_add(i) % 251) as u8)
        .collect()
}

// ---------------------------------------------------------------------------------
// What each client saw

struct Outcome {
    kind: &'static str,
    ok: u64,
    errors: u64,
    /// The first few errors, with the time into the run.
    first: Vec<String>,
    start: Instant,
}

impl Outcome {
    fn new(kind: &'static str, start: Instant) -> Outcome {
        Outcome {
            kind,
            ok: 0,
            errors: 0,
            first: Vec::new(),
            start,
        }
    }

    /// Counts one checked exchange; true when it was good.
    fn record(&mut self, r: Result<(), String>) -> bool {
        match r {
            Ok(()) => {
                self.ok += 1;
                true
            }
            Err(e) => {
                self.errors += 1;
                if self.first.len() < 10 {
                    let at = self.start.elapsed().as_secs_f64();
                    self.first.push(format!("{at:.1}s {e}"));
                }
                false
            }
        }
    }
}

/// A response forwarded to a backend of `web` for `path` (path and query).
fn check_forwarded(r: &Response, path: &str) -> Result<(), String> {
    let who = r.text();
    if r.status != 200 {
        return Err(format!("{path}: status {} {r:?}", r.status));
    }
    if r.header("x-path") != Some(path) {
        return Err(format!("{path}: X-Path {:?}", r.header("x-path")));
    }
    if !NAMES.contains(&who.as_str()) || r.header("x-backend") != Some(who.as_str()) {
        return Err(format!("{path}: unexpected answer {r:?}"));
    }
    Ok(())
}

/// An echo of `sent` from `/echo`.
fn check_echo(r: &Response, path: &str, sent: &[u8]) -> Result<(), String> {
    if r.status != 200 {
        return Err(format!("POST {path}: status {} {r:?}", r.status));
    }
    if r.header("x-path") != Some(path) {
        return Err(format!("POST {path}: X-Path {:?}", r.header("x-path")));
    }
    if r.body != sent {
        return Err(format!(
            "POST {path}: echoed {} bytes, sent {} (first difference at {:?})",
            r.body.len(),
            sent.len(),
            r.body.iter().zip(sent).position(|(a, b)| a != b)
        ));
    }
    Ok(())
}

fn wants_close(r: &Response) -> bool {
    r.header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"))
}

// ---------------------------------------------------------------------------------
// Clients

/// GETs on a keep-alive connection, with a small POST (Content-Length or
/// chunked) every fourth request; reconnects when the connection is to close.
async fn keepalive(web: SocketAddr, end: Instant, start: Instant, id: u64) -> Outcome {
    let kind = if id == 1 {
        "keep-alive GET/POST (1)"
    } else {
        "keep-alive GET/POST (2)"
    };
    let mut out = Outcome::new(kind, start);
    let mut rng = fastrand::Rng::with_seed(id);
    let mut conn: Option<Conn> = None;
    let mut i = 0u64;
    while Instant::now() < end && i < MAX_ROUNDS {
        i += 1;
        tokio::time::sleep(ms(1)).await;
        let mut c = match conn.take() {
            Some(c) => c,
            None => match step("connect", Conn::connect(web)).await {
                Ok(c) => c,
                Err(e) => {
                    out.record(Err(e));
                    continue;
                }
            },
        };
        let r = if i % 4 == 0 {
            let path = format!("/echo?ka={id}-{i}");
            let body = payload(i, rng.usize(0..16 * 1024));
            let raw = if i % 8 == 0 {
                let mut raw = format!(
                    "POST {path} HTTP/1.1\r\nHost: soak.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
                .into_bytes();
                if !body.is_empty() {
                    raw.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
                    raw.extend_from_slice(&body);
                    raw.extend_from_slice(b"\r\n");
                }
                raw.extend_from_slice(b"0\r\n\r\n");
                raw
            } else {
                let mut raw = format!(
                    "POST {path} HTTP/1.1\r\nHost: soak.test\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                raw.extend_from_slice(&body);
                raw
            };
            let res = step("keep-alive POST", async {
                c.send(&raw).await?;
                c.read_response().await
            })
            .await;
            res.and_then(|r| check_echo(&r, &path, &body).map(|_| r))
        } else {
            let path = format!("/ka/{id}/{i}");
            step("keep-alive GET", c.get(&path))
                .await
                .and_then(|r| check_forwarded(&r, &path).map(|_| r))
        };
        match r {
            Ok(r) => {
                out.record(Ok(()));
                if !wants_close(&r) {
                    conn = Some(c);
                }
            }
            Err(e) => {
                out.record(Err(e));
            }
        }
    }
    out
}

/// One GET per new connection (`Connection: close`).
async fn new_conns(web: SocketAddr, end: Instant, start: Instant) -> Outcome {
    let mut out = Outcome::new("new-connection GET", start);
    let mut i = 0u64;
    while Instant::now() < end && i < MAX_ROUNDS {
        i += 1;
        let path = format!("/new/{i}?q={i}");
        let raw = format!("GET {path} HTTP/1.1\r\nHost: soak.test\r\nConnection: close\r\n\r\n");
        let r = step("GET", http_request(web, raw.as_bytes())).await;
        out.record(r.and_then(|r| check_forwarded(&r, &path)));
        tokio::time::sleep(ms(3)).await;
    }
    out
}

/// Streamed POSTs of up to 128 KiB on new connections, echoed back.
async fn posts(
    web: SocketAddr,
    end: Instant,
    start: Instant,
    framing: Framing,
    kind: &'static str,
) -> Outcome {
    let mut out = Outcome::new(kind, start);
    let mut rng = fastrand::Rng::with_seed(7);
    let mut i = 0u64;
    while Instant::now() < end && i < MAX_ROUNDS {
        i += 1;
        let path = format!("/echo?post={i}");
        let body = payload(i, rng.usize(0..128 * 1024));
        let head = format!("POST {path} HTTP/1.1\r\nHost: soak.test\r\nConnection: close\r\n");
        let r = step(
            "POST",
            exchange_streaming(web, &head, body.clone(), framing),
        )
        .await;
        out.record(r.and_then(|r| check_echo(&r, &path, &body)));
        tokio::time::sleep(ms(5)).await;
    }
    out
}

/// Keep-alive GETs over TLS to the https listener, 20 per connection.
async fn https(addr: SocketAddr, end: Instant, start: Instant) -> Outcome {
    let mut out = Outcome::new("https GET", start);
    let mut i = 0u64;
    'conns: while Instant::now() < end && i < MAX_ROUNDS {
        let tls = match step(
            "TLS connect",
            tls_connect(addr, Some("soak.test"), Versions::Both),
        )
        .await
        {
            Ok(t) => t,
            Err(e) => {
                out.record(Err(e));
                i += 1;
                tokio::time::sleep(ms(2)).await;
                continue;
            }
        };
        let (r, mut w) = tokio::io::split(tls);
        let mut reader = Reader::new(r);
        for _ in 0..20 {
            if Instant::now() >= end || i >= MAX_ROUNDS {
                break 'conns;
            }
            i += 1;
            let path = format!("/tls/{i}");
            let raw = format!("GET {path} HTTP/1.1\r\nHost: soak.test\r\n\r\n");
            let r = step("https GET", async {
                w.write_all(raw.as_bytes()).await?;
                w.flush().await?;
                reader.read_response().await
            })
            .await;
            let closing = r.as_ref().is_ok_and(wants_close);
            if !out.record(r.and_then(|r| check_forwarded(&r, &path))) || closing {
                continue 'conns;
            }
            tokio::time::sleep(ms(2)).await;
        }
    }
    out
}

/// A tcp connection per round: up to 96 KiB out, half-close, and the same bytes
/// plus the echo target's `<EOF>` back.
async fn tcp_echo(addr: SocketAddr, end: Instant, start: Instant) -> Outcome {
    let mut out = Outcome::new("tcp echo", start);
    let mut rng = fastrand::Rng::with_seed(11);
    let mut i = 0u64;
    while Instant::now() < end && i < MAX_ROUNDS {
        i += 1;
        let data = payload(i, rng.usize(1..96 * 1024));
        let r = step("tcp echo", async {
            let s = TcpStream::connect(addr).await?;
            let (mut r, mut w) = s.into_split();
            let send = async {
                w.write_all(&data).await?;
                w.shutdown().await
            };
            let mut back = Vec::with_capacity(data.len() + 5);
            let recv = r.read_to_end(&mut back);
            let (sent, got) = tokio::join!(send, recv);
            sent?;
            got?;
            Ok(back)
        })
        .await;
        out.record(r.and_then(|back| {
            let mut want = data.clone();
            want.extend_from_slice(b"<EOF>");
            if back == want {
                Ok(())
            } else {
                Err(format!(
                    "tcp echo: {} bytes back for {} sent",
                    back.len(),
                    data.len()
                ))
            }
        }));
        tokio::time::sleep(ms(5)).await;
    }
    out
}

/// GETs answered by rules: a redirect and a fixed response (whose body names the
/// config generation, which the reloads change).
async fn rules(
    web: SocketAddr,
    end: Instant,
    start: Instant,
    generation: Arc<AtomicU64>,
) -> Outcome {
    let mut out = Outcome::new("redirect / fixed response", start);
    let mut i = 0u64;
    while Instant::now() < end && i < MAX_ROUNDS {
        i += 1;
        let (path, redirect) = if i % 2 == 0 {
            (format!("/old/{i}"), true)
        } else {
            (format!("/fixed/{i}"), false)
        };
        let raw = format!("GET {path} HTTP/1.1\r\nHost: soak.test\r\nConnection: close\r\n\r\n");
        let newest = generation.load(Ordering::SeqCst);
        let r = step("GET", http_request(web, raw.as_bytes())).await;
        out.record(r.and_then(|r| {
            if redirect {
                let want = format!("http://moved.test:{}{path}", web.port());
                if r.status == 301 && r.header("location") == Some(want.as_str()) {
                    return Ok(());
                }
                return Err(format!("{path}: want 301 to {want}, got {r:?}"));
            }
            let text = r.text();
            let g = text
                .strip_prefix("soak-fixed-")
                .and_then(|g| g.parse::<u64>().ok());
            let fresh = g.is_some_and(|g| g + 1 >= newest && g <= newest + 1);
            if r.status == 200 && r.header("content-type") == Some("text/plain") && fresh {
                Ok(())
            } else {
                Err(format!("{path}: want soak-fixed-{newest}, got {r:?}"))
            }
        }));
        tokio::time::sleep(ms(5)).await;
    }
    out
}

// ---------------------------------------------------------------------------------
// The load balancer

struct Setup {
    admin: u16,
    web: u16,
    secure: u16,
    tcp: u16,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    access_log: std::path::PathBuf,
    web_targets: [SocketAddr; 4],
    echo: SocketAddr,
}

/// The config of generation `g`: the fixed response says `soak-fixed-g`, and
/// target `c` is in group `web` only when `g` is even.
fn config(s: &Setup, g: u64) -> String {
    let mut targets: Vec<String> = s.web_targets[..3]
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect();
    if g % 2 == 0 {
        targets.push(format!("\"{}\"", s.web_targets[3]));
    }
    format!(
        "node: {{name: soak, zone: zone-a}}\n\
         runtime: {{worker_threads: 2}}\n\
         admin: {{bind: \"127.0.0.1:{admin}\"}}\n\
         access_log: {{path: \"{log}\", format: json}}\n\
         certificates:\n\
         \x20 - {{name: site, cert: \"{cert}\", key: \"{key}\"}}\n\
         listeners:\n\
         \x20 - name: web\n\
         \x20   protocol: http\n\
         \x20   bind: \"127.0.0.1:{web}\"\n\
         \x20   rules:\n\
         \x20     - {{priority: 10, conditions: {{path: [\"/old/*\"]}}, action: {{redirect: {{host: moved.test, status: 301}}}}}}\n\
         \x20     - {{priority: 20, conditions: {{path: [\"/fixed/*\"]}}, action: {{fixed_response: {{status: 200, content_type: text/plain, body: \"soak-fixed-{g}\"}}}}}}\n\
         \x20   default_action: {{forward: web}}\n\
         \x20 - {{name: secure, protocol: https, bind: \"127.0.0.1:{secure}\", certificates: [site], default_action: {{forward: web}}}}\n\
         \x20 - {{name: echo, protocol: tcp, bind: \"127.0.0.1:{tcp}\", default_action: {{forward: echo}}}}\n\
         target_groups:\n\
         \x20 - name: web\n\
         \x20   protocol: http\n\
         \x20   deregistration_delay: 2s\n\
         \x20   health_check: {{{FAST_HC}}}\n\
         \x20   targets: [{targets}]\n\
         \x20 - name: echo\n\
         \x20   protocol: tcp\n\
         \x20   health_check: {{interval: 5s, timeout: 2s}}\n\
         \x20   targets: [\"{echo}\"]\n",
        admin = s.admin,
        log = s.access_log.display(),
        cert = s.cert.display(),
        key = s.key.display(),
        web = s.web,
        secure = s.secure,
        tcp = s.tcp,
        targets = targets.join(", "),
        echo = s.echo,
    )
}

/// VmRSS of a process in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime in seconds (`/proc/<pid>/stat` fields 14 and 15, 100 ticks/s).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<u64>() as f64 / 100.0
}

fn lines_in(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_mixed_traffic_reloads_and_flapping_health() {
    let secs = soak_secs();
    assert!(secs >= 5, "FULCRUM_SOAK_SECS={secs}: at least 5");
    bounded(secs + 120, async {
        let work = tempfile::tempdir().unwrap();
        let cert = self_signed(&["soak.test", "127.0.0.1"]);
        let (cert_path, key_path) = cert.write(work.path(), "site");
        let mut backends = Vec::new();
        for n in NAMES {
            backends.push(Backend::start(n).await);
        }
        let echo = TcpTarget::start(Kind::Echo).await;
        let s = Setup {
            admin: free_port(),
            web: free_port(),
            secure: free_port(),
            tcp: free_port(),
            cert: cert_path,
            key: key_path,
            access_log: work.path().join("access.log"),
            web_targets: [0, 1, 2, 3].map(|i| backends[i].addr),
            echo: echo.addr,
        };
        let generation = Arc::new(AtomicU64::new(0));
        let f = Fulcrum::start(&config(&s, 0)).await;
        let pid = f.pid();
        for b in &backends {
            f.wait_state("web", b.addr, "healthy", ms(8000)).await;
        }

        let start = Instant::now();
        let end = start + Duration::from_secs(secs);
        let warmup = Duration::from_secs((secs / 6).clamp(2, 10));
        let (web, secure, tcp) = (local(s.web), local(s.secure), local(s.tcp));
        let mut clients = vec![
            tokio::spawn(keepalive(web, end, start, 1)),
            tokio::spawn(keepalive(web, end, start, 2)),
            tokio::spawn(new_conns(web, end, start)),
            tokio::spawn(posts(web, end, start, Framing::ContentLength, "POST content-length")),
            tokio::spawn(posts(web, end, start, Framing::Chunked { chunk: 4096 }, "POST chunked")),
            tokio::spawn(https(secure, end, start)),
            tokio::spawn(tcp_echo(tcp, end, start)),
            tokio::spawn(rules(web, end, start, generation.clone())),
        ];

        // This task: the flapping health check, reloads, scrapes, RSS samples.
        let flap: Arc<AtomicU16> = backends[2].stats.hc_status.clone();
        let mut ops = Outcome::new("admin: /metrics, /api/v1/status, reloads", start);
        let mut rss: Vec<(Duration, u64)> = Vec::new();
        let (mut next_rss, mut next_scrape) = (start, start);
        let (mut next_reload, mut next_flap) = (start + RELOAD_EVERY, start + FLAP_EVERY);
        let (mut api_reloads, mut hups, mut flaps, mut rounds) = (0u64, 0u64, 0u64, 0u64);
        let cpu0 = cpu_secs(pid);
        while Instant::now() < end && rounds < MAX_ROUNDS {
            rounds += 1;
            let now = Instant::now();
            if now >= next_rss {
                next_rss += RSS_EVERY;
                if let Some(kib) = rss_kib(pid) {
                    rss.push((now - start, kib));
                }
            }
            if now >= next_flap {
                next_flap += FLAP_EVERY;
                flaps += 1;
                flap.store(if flaps % 2 == 1 { 500 } else { 200 }, Ordering::SeqCst);
            }
            if now >= next_scrape {
                next_scrape += SCRAPE_EVERY;
                let r = step("GET /metrics", admin_request(f.admin, "GET", "/metrics", None)).await;
                ops.record(r.and_then(|r| {
                    let ok = r.status == 200 && r.text().contains("fulcrum_health_checks_total");
                    ok.then_some(()).ok_or(format!("/metrics: {r:?}"))
                }));
                if rounds % 5 == 0 {
                    let r = step("status", admin_request(f.admin, "GET", "/api/v1/status", None));
                    ops.record(r.await.and_then(|r| {
                        let ok = r.status == 200
                            && serde_json::from_slice::<serde_json::Value>(&r.body).is_ok();
                        ok.then_some(()).ok_or(format!("/api/v1/status: {r:?}"))
                    }));
                }
            }
            if now >= next_reload {
                next_reload += RELOAD_EVERY;
                let g = generation.load(Ordering::SeqCst) + 1;
                f.reload_config(&config(&s, g));
                generation.store(g, Ordering::SeqCst);
                if g % 2 == 0 {
                    api_reloads += 1;
                    let r = step("reload", admin_request(f.admin, "POST", "/api/v1/reload", None));
                    ops.record(r.await.and_then(|r| {
                        let ok = r.status == 200 && r.text().contains("\"ok\"");
                        ok.then_some(()).ok_or(format!("POST /api/v1/reload: {r:?}"))
                    }));
                } else {
                    hups += 1;
                    f.sighup();
                }
            }
            tokio::time::sleep(ms(50)).await;
        }
        let cpu = cpu_secs(pid) - cpu0;
        flap.store(200, Ordering::SeqCst);
        let mut outcomes = Vec::new();
        for c in clients.drain(..) {
            outcomes.push(
                tokio::time::timeout(STEP * 2, c)
                    .await
                    .expect("a client did not stop at the end of the run")
                    .expect("client task"),
            );
        }
        outcomes.push(ops);
        let ran = start.elapsed().as_secs_f64();

        // The report.
        let mut report = format!("soak: {ran:.0} s of traffic (FULCRUM_SOAK_SECS={secs})\n");
        for o in &outcomes {
            let _ = writeln!(
                report,
                "  {:<44} {:>8} ok {:>4} errors ({:.0}/s)",
                o.kind,
                o.ok,
                o.errors,
                o.ok as f64 / ran
            );
        }
        let m = f.metrics().await;
        let reloads_ok = metric(&m, "fulcrum_config_reloads_total", &[("result", "success")]);
        let reloads_failed = metric(&m, "fulcrum_config_reloads_total", &[("result", "failure")]);
        // The balancer's own answers other than the rules' redirects (301) and
        // fixed responses (200): errors.
        let lb_responses = metric(&m, "fulcrum_lb_responses_total", &[]).unwrap_or(0.0)
            - metric(&m, "fulcrum_lb_responses_total", &[("code", "301")]).unwrap_or(0.0)
            - metric(&m, "fulcrum_lb_responses_total", &[("code", "200")]).unwrap_or(0.0);
        let flap_addr = backends[2].addr.to_string();
        let went_unhealthy = f
            .logs()
            .lines()
            .filter(|l| l.contains("target unhealthy") && l.contains(&flap_addr))
            .count();
        let _ = writeln!(
            report,
            "  reloads: {api_reloads} by the admin API, {hups} by SIGHUP; \
             fulcrum_config_reloads_total success {reloads_ok:?}, failure {reloads_failed:?}\n  \
             health flaps: {flaps} switches, the target went unhealthy {went_unhealthy} times\n  \
             fulcrum CPU: {cpu:.1} s over {ran:.0} s ({:.0}% of a core)",
            cpu / ran * 100.0
        );
        let warm: Vec<u64> = rss.iter().filter(|(t, _)| *t <= warmup).map(|s| s.1).collect();
        let after: Vec<u64> = rss.iter().filter(|(t, _)| *t > warmup).map(|s| s.1).collect();
        let first = rss.first().map_or(0, |s| s.1);
        let baseline = warm.last().copied().unwrap_or(first);
        let peak = after.iter().copied().max().unwrap_or(baseline);
        let last = rss.last().map_or(0, |s| s.1);
        let growth = peak.saturating_sub(baseline);
        let _ = writeln!(
            report,
            "  VmRSS: {first} KiB at the start, {baseline} KiB after the {warmup:?} warm-up, \
             peak {peak} KiB, {last} KiB at the end: growth {growth} KiB (bound {RSS_GROWTH_BOUND_KIB} KiB), \
             {} samples",
            rss.len()
        );
        eprintln!("{report}");

        let errors: Vec<String> = outcomes
            .iter()
            .filter(|o| o.errors > 0)
            .map(|o| format!("{} ({} errors):\n    {}", o.kind, o.errors, o.first.join("\n    ")))
            .collect();
        if !errors.is_empty() {
            // What the access log says about the balancer's own answers.
            let log = std::fs::read_to_string(&s.access_log).unwrap_or_default();
            let own: Vec<&str> = log
                .lines()
                .filter(|l| !l.contains("\"elb_status_code\":200") && l.contains("\"error_reason\":\""))
                .take(5)
                .collect();
            panic!(
                "unexpected errors:\n{}\n{report}\naccess-log lines with an error_reason:\n{}",
                errors.join("\n"),
                own.join("\n")
            );
        }
        for o in &outcomes {
            assert!(o.ok >= secs.min(10), "{}: only {} exchanges\n{report}", o.kind, o.ok);
        }
        assert_eq!(lb_responses, 0.0, "the balancer answered for itself\n{report}");
        assert_eq!(reloads_failed.unwrap_or(0.0), 0.0, "{report}");
        assert!(
            reloads_ok.unwrap_or(0.0) >= api_reloads as f64,
            "reloads not counted\n{report}"
        );
        if secs >= 20 {
            assert!(went_unhealthy >= 1, "the flapping target never went unhealthy\n{report}");
        }
        assert!(rss.len() >= 2, "no VmRSS samples of pid {pid}");
        assert!(
            growth < RSS_GROWTH_BOUND_KIB,
            "fulcrum's memory grew by {growth} KiB after the warm-up\n{report}"
        );

        // One access-log line per request and per tcp connection, none dropped.
        let logged: u64 = outcomes[..outcomes.len() - 1].iter().map(|o| o.ok).sum();
        let dropped = metric(&m, "fulcrum_access_log_dropped_total", &[]).unwrap_or(0.0);
        assert_eq!(dropped, 0.0, "access-log lines dropped\n{report}");
        let lines = eventually(ms(5000), "every exchange in the access log", || {
            let n = lines_in(&s.access_log) as u64;
            async move { (n >= logged).then_some(n) }
        })
        .await;
        assert_eq!(lines, logged, "access-log lines for {logged} exchanges");
        drop(f);
    })
    .await;
}
