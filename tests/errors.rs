//! The statuses the load balancer answers itself (SPEC §3's table, aws-reference
//! §5.1) provoked over real sockets, their precedence, the metrics that count them
//! (§9), and the request-path extras of §3: `X-Amzn-Trace-Id`, `Expect:
//! 100-continue`, WebSocket tunnels and the removal of `Upgrade: h2c`.
//! (`client_keep_alive` needs at least 60 s and is not tested here.)

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::*;

/// Raw targets by behaviour, each behind `/g/<group>`.
const RAW_GROUPS: [(&str, Mode); 10] = [
    ("reset-head", Mode::ResetInHead),
    ("reset-body", Mode::ResetInBody),
    ("garbage", Mode::Garbage),
    ("huge", Mode::HugeHead),
    ("close", Mode::Close),
    ("sorry", Mode::Status(503)),
    ("silent", Mode::Silent),
    ("ws", Mode::WebSocket),
    ("ok", Mode::Status(200)),
    ("gzip", Mode::GzipChunked),
];

struct Setup {
    f: Fulcrum,
    web: u16,
    app: Backend,
    _raw: Vec<RawBackend>,
    /// The JSON access log.
    log: std::path::PathBuf,
    _logdir: tempfile::TempDir,
}

/// Listener `web` (header_timeout 1s, idle_timeout 2s) with a default group `app`
/// (hyper backend), `/g/<name>` for each raw group, `refused` (a closed port),
/// `dead2` (two closed ports) and `empty` (no targets).
async fn setup() -> Setup {
    let app = Backend::start("app").await;
    let hc = "health_check: {path: /hc, interval: 30s, timeout: 2s}";
    let mut groups = format!("  - {{name: app, {hc}, targets: [\"{}\"]}}\n", app.addr);
    let mut rules = String::new();
    let mut raw = Vec::new();
    let mut add = |name: &str, targets: String, groups: &mut String| {
        // The WebSocket group is sticky: its 101 carries the cookie too.
        let sticky = if name == "ws" {
            ", stickiness: {type: lb_cookie, duration: 1h}"
        } else {
            ""
        };
        groups.push_str(&format!(
            "  - {{name: {name}, {hc}{sticky}, targets: [{targets}]}}\n"
        ));
        rules.push_str(&format!(
            "      - {{priority: {}, conditions: {{path: [\"/g/{name}*\"]}}, action: {{forward: {name}}}}}\n",
            rules.lines().count() + 1
        ));
    };
    for (name, mode) in RAW_GROUPS {
        let b = RawBackend::start(mode).await;
        add(name, format!("\"{}\"", b.addr), &mut groups);
        raw.push(b);
    }
    add("refused", target_list(&[local(free_port())]), &mut groups);
    add(
        "dead2",
        target_list(&[local(free_port()), local(free_port())]),
        &mut groups,
    );
    add("empty", String::new(), &mut groups);
    let (admin, web) = (free_port(), free_port());
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("access.log");
    let yaml = format!(
        "runtime: {{worker_threads: 2}}\n\
         admin: {{bind: \"127.0.0.1:{admin}\"}}\n\
         access_log: {{path: \"{}\", format: json}}\n\
         listeners:\n\
         \x20 - name: web\n\
         \x20   bind: \"127.0.0.1:{web}\"\n\
         \x20   header_timeout: 1s\n\
         \x20   idle_timeout: 2s\n\
         \x20   default_action: {{forward: app}}\n\
         \x20   rules:\n{rules}\
         target_groups:\n{groups}",
        log.display()
    );
    let f = Fulcrum::start(&yaml).await;
    Setup {
        f,
        web,
        app,
        _raw: raw,
        log,
        _logdir: logdir,
    }
}

impl Setup {
    /// Sends raw bytes on a new connection; the answer and whether the connection
    /// was closed after it.
    async fn send(&self, raw: &[u8]) -> (Response, bool) {
        let mut c = Conn::connect(local(self.web)).await.unwrap();
        let _ = c.send(raw).await; // the balancer may close before reading it all
        let r = tokio::time::timeout(Duration::from_secs(10), c.read_response())
            .await
            .unwrap_or_else(|_| panic!("no answer within 10 s to {:?}", preview(raw)))
            .unwrap_or_else(|e| panic!("no answer to {:?}: {e}", preview(raw)));
        let closed = c.closed_without_bytes(Duration::from_secs(2)).await;
        (r, closed)
    }

    /// The JSON access-log line of the first request whose request line holds
    /// `needle` (waits up to 5 s for the log writer).
    async fn log_line(&self, needle: &str) -> serde_json::Value {
        for _ in 0..50 {
            let found = std::fs::read_to_string(&self.log)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|l| l["request"].as_str().is_some_and(|r| r.contains(needle)));
            if let Some(l) = found {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no access-log line for {needle}");
    }

    async fn lb(&self, code: &str) -> f64 {
        self.f
            .metric(
                "fulcrum_lb_responses_total",
                &[("listener", "web"), ("code", code)],
            )
            .await
            .unwrap_or(0.0)
    }
}

fn preview(raw: &[u8]) -> String {
    text(&raw[..raw.len().min(120)])
}

fn get_with(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test.local\r\n{extra}Connection: close\r\n\r\n")
        .into_bytes()
}

fn xff(n: usize) -> String {
    (1..=n)
        .map(|i| format!("10.0.0.{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_and_oversized_requests_are_400() {
    bounded(60, async {
        let s = setup().await;
        let line = |n: usize| get_with(&format!("/{}", "a".repeat(n)), "");
        let header = |n: usize| get_with("/", &format!("X-Big: {}\r\n", "b".repeat(n)));
        let pad = |n: usize| {
            let h: String = (0..n)
                .map(|i| format!("X-Pad-{i}: {}\r\n", "c".repeat(14 << 10)))
                .collect();
            get_with("/", &h)
        };
        // The first five lose track of the stream: the connection must close.
        let cases: [(&str, Vec<u8>); 7] = [
            ("not HTTP", b"\x01\x02 garbage\r\n\r\n".to_vec()),
            (
                "bad version",
                b"GET / HTTX/1.1\r\nHost: test.local\r\n\r\n".to_vec(),
            ),
            ("request line over 16 KiB", line(17 << 10)),
            ("a header over 16 KiB", header(17 << 10)),
            ("headers over 64 KiB", pad(5)),
            (
                "two Host headers",
                b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n".to_vec(),
            ),
            ("HTTP/1.1 without Host", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        ];
        for (i, (what, raw)) in cases.iter().enumerate() {
            let (r, closed) = s.send(raw).await;
            assert_eq!(r.status, 400, "{what}: {r:?}");
            if i < 5 {
                let conn = r.header("connection").map(str::to_ascii_lowercase);
                assert_eq!(conn.as_deref(), Some("close"), "{what}: {r:?}");
                assert!(closed, "{what}: connection left open after the 400");
            }
        }
        // Just under each limit is served.
        for (what, raw) in [
            ("line 15 KiB", line(15 << 10)),
            ("header 15 KiB", header(15 << 10)),
            ("headers 42 KiB", pad(3)),
        ] {
            let (r, _) = s.send(&raw).await;
            assert_eq!(r.status, 200, "{what}: {r:?}");
        }
        assert_eq!(s.app.requests(), 3, "a refused request reached the target");
        assert_eq!(
            s.lb("400").await,
            cases.len() as f64,
            "fulcrum_lb_responses_total{{code=\"400\"}}"
        );
    })
    .await;
}

/// TRACE is 405, more than 30 X-Forwarded-For addresses 463, `Transfer-Encoding:
/// gzip` 501; when several apply, 400 before 501 before 405 before 463.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn method_xff_and_coding_errors_in_precedence_order() {
    bounded(60, async {
        let s = setup().await;
        let x31 = format!("X-Forwarded-For: {}\r\n", xff(31));
        let split31 = format!(
            "X-Forwarded-For: {}\r\nX-Forwarded-For: {}\r\n",
            xff(16),
            xff(15)
        );
        let gzip = "Transfer-Encoding: gzip\r\n";
        let req = |m: &str, extra: &str| {
            format!("{m} / HTTP/1.1\r\nHost: test.local\r\n{extra}Connection: close\r\n\r\n")
        };
        let cases = [
            ("TRACE", req("TRACE", ""), 405),
            ("31 addresses", req("GET", &x31), 463),
            ("31 addresses over two headers", req("GET", &split31), 463),
            ("gzip", req("POST", gzip), 501),
            ("TRACE + gzip", req("TRACE", gzip), 501),
            ("TRACE + 31 addresses", req("TRACE", &x31), 405),
            (
                "gzip + 31 addresses",
                req("POST", &format!("{x31}{gzip}")),
                501,
            ),
            (
                "TRACE without Host",
                "TRACE / HTTP/1.1\r\n\r\n".to_string(),
                400,
            ),
            (
                "gzip + two Hosts",
                req("POST", &format!("Host: b.example\r\n{gzip}")),
                400,
            ),
        ];
        let mut wrong = Vec::new();
        for (what, raw, want) in &cases {
            let (r, _) = s.send(raw.as_bytes()).await;
            if r.status != *want {
                wrong.push(format!("{what}: {} (want {want})", r.status));
            }
        }
        let (r, _) = s
            .send(req("GET", &format!("X-Forwarded-For: {}\r\n", xff(30))).as_bytes())
            .await;
        if r.status != 200 {
            wrong.push(format!("30 addresses: {} (want 200)", r.status));
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        assert_eq!(
            s.app.requests(),
            1,
            "only the 30-address request reaches the target"
        );
        for (code, n) in [("400", 2.0), ("405", 2.0), ("463", 2.0), ("501", 3.0)] {
            assert_eq!(
                s.lb(code).await,
                n,
                "fulcrum_lb_responses_total{{code=\"{code}\"}}"
            );
        }
    })
    .await;
}

/// A head still incomplete `header_timeout` (1s) after its first byte is 408, even
/// while bytes trickle in; a connection idle before or between requests closes
/// silently after `idle_timeout` (2s), with no 408.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn header_timeout_is_408_and_idle_connections_close_silently() {
    bounded(60, async {
        let s = setup().await;
        let mut idle = Conn::connect(local(s.web)).await.unwrap();
        let idle_since = Instant::now();
        let (r, mut w) = tokio::net::TcpStream::connect(local(s.web))
            .await
            .unwrap()
            .into_split();
        let t = Instant::now();
        let trickle = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = w.write_all(b"GET / HTTP/1.1\r\n").await;
            for b in b"Host: test.local\r\nX-Slow: 1234567890" {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if w.write_all(&[*b]).await.is_err() {
                    break;
                }
            }
            w
        });
        let r = Reader::new(r)
            .read_response()
            .await
            .expect("an answer to the slow head");
        let took = t.elapsed();
        trickle.abort();
        assert_eq!(r.status, 408, "{r:?}");
        assert!(
            took >= Duration::from_millis(800),
            "408 after {took:?}, before header_timeout"
        );
        assert!(took <= Duration::from_secs(5), "408 only after {took:?}");

        // Idle before the first request (nothing sent) and between requests.
        assert!(
            idle.closed_without_bytes(Duration::from_secs(6)).await,
            "an idle new connection got bytes or stayed open"
        );
        let t = idle_since.elapsed();
        assert!(
            t >= Duration::from_millis(1500),
            "closed after {t:?}, before idle_timeout"
        );
        let mut c3 = Conn::connect(local(s.web)).await.unwrap();
        assert_eq!(c3.get("/first").await.unwrap().status, 200);
        let t = Instant::now();
        assert!(
            c3.closed_without_bytes(Duration::from_secs(6)).await,
            "an idle keep-alive connection got bytes or stayed open"
        );
        assert!(
            t.elapsed() >= Duration::from_millis(1500),
            "closed after {:?}, before idle_timeout",
            t.elapsed()
        );
        assert_eq!(
            s.lb("408").await,
            1.0,
            "fulcrum_lb_responses_total{{code=\"408\"}}"
        );
    })
    .await;
}

/// A client that goes away while its request is at the target: one 460 counted.
async fn client_gone(hard: bool) {
    let s = setup().await;
    let mut c = Conn::connect(local(s.web)).await.unwrap();
    c.send(&get_with("/slow?ms=1000", "")).await.unwrap();
    eventually(
        Duration::from_secs(5),
        "the request reaching the target",
        || async { (s.app.requests() > 0).then_some(()) },
    )
    .await;
    let stream = c.into_inner();
    if hard {
        socket2::SockRef::from(&stream)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    }
    drop(stream);
    let how = if hard { "reset" } else { "closed" };
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let n = s.lb("460").await;
        if n == 1.0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "client {how} before the response: fulcrum_lb_responses_total{{code=\"460\"}} = {n}, want 1"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_reset_before_the_response_is_460() {
    bounded(60, client_gone(true)).await;
}

/// A plain close (FIN) while the target works: the client is gone all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_close_before_the_response_is_460() {
    bounded(60, client_gone(false)).await;
}

/// A client that closes in the middle of its request body is gone before its
/// response as well: 460.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_close_mid_body_is_460() {
    bounded(60, async {
        let s = setup().await;
        let mut c = Conn::connect(local(s.web)).await.unwrap();
        c.send(b"POST /upload HTTP/1.1\r\nHost: test.local\r\nContent-Length: 100\r\n\r\nabc")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(c);
        let deadline = Instant::now() + Duration::from_secs(6);
        while s.lb("460").await != 1.0 {
            assert!(
                Instant::now() < deadline,
                "fulcrum_lb_responses_total{{code=\"460\"}} = {}, want 1",
                s.lb("460").await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let l = s.log_line("/upload").await;
        assert_eq!(l["elb_status_code"], 460, "{l}");
    })
    .await;
}

/// A target's body in a transfer coding besides chunked (`Transfer-Encoding: gzip,
/// chunked`) reaches an HTTP/1.1 client byte for byte with that header (a plain
/// `chunked` would hand it gzip bytes as if they were the content); an HTTP/1.0
/// client, which cannot be sent a transfer coding, gets 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_coded_body_keeps_its_coding() {
    bounded(60, async {
        let s = setup().await;
        // Twice on one connection: the chunked framing ended where it should.
        let mut c = Conn::connect(local(s.web)).await.unwrap();
        for i in 0..2 {
            c.send(b"GET /g/gzip HTTP/1.1\r\nHost: test.local\r\n\r\n")
                .await
                .unwrap();
            let r = tokio::time::timeout(Duration::from_secs(10), c.read_response())
                .await
                .expect("an answer within 10 s")
                .unwrap_or_else(|e| panic!("request {i}: {e}"));
            assert_eq!(r.status, 200, "{r:?}");
            assert_eq!(
                r.header("transfer-encoding"),
                Some("gzip, chunked"),
                "{r:?}"
            );
            assert_eq!(r.body, GZIP_HELLO, "{r:?}");
        }
        let (r, closed) = s.send(b"GET /g/gzip HTTP/1.0\r\n\r\n").await;
        assert_eq!(r.status, 502, "{r:?}");
        assert!(closed, "HTTP/1.0 without keep-alive closes");
        let l = s.log_line("/g/gzip HTTP/1.0").await;
        assert_eq!(l["elb_status_code"], 502, "{l}");
        assert_eq!(l["target_status_code"], 200, "{l}");
    })
    .await;
}

/// 502: refused connect (one target; two, each tried once and counted as a retry),
/// a reset in the response head, garbage, a head over 32 KiB, a close with the
/// request outstanding. A reset in the body cuts the response short.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn target_failures_are_502() {
    bounded(60, async {
        let s = setup().await;
        let mut wrong = Vec::new();
        let groups = ["refused", "dead2", "reset-head", "garbage", "huge", "close"];
        for g in groups {
            let (r, _) = s.send(&get_with(&format!("/g/{g}"), "")).await;
            if r.status != 502 {
                wrong.push(format!("{g}: {} (want 502): {r:?}", r.status));
            }
        }
        let mut c = Conn::connect(local(s.web)).await.unwrap();
        c.send(&get_with("/g/reset-body", "")).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(10), c.read_response()).await {
            Ok(Err(_)) => {}
            other => wrong.push(format!(
                "reset in the body: {other:?} (want a cut-short response)"
            )),
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        // A failed connect is logged with the group and the target it tried.
        let l = s.log_line("/g/refused").await;
        assert_eq!(l["elb_status_code"], 502, "{l}");
        assert_eq!(l["target_group"], "refused", "{l}");
        assert!(
            l["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("127.0.0.1:")),
            "{l}"
        );
        assert_eq!(
            s.lb("502").await,
            groups.len() as f64,
            "fulcrum_lb_responses_total{{code=\"502\"}}"
        );
        let retries =
            s.f.metric("fulcrum_retries_total", &[("target_group", "dead2")])
                .await;
        assert_eq!(
            retries,
            Some(1.0),
            "fulcrum_retries_total{{target_group=\"dead2\"}}"
        );
        // No other target, no retry.
        let retries =
            s.f.metric("fulcrum_retries_total", &[("target_group", "refused")])
                .await;
        assert_eq!(
            retries.unwrap_or(0.0),
            0.0,
            "fulcrum_retries_total{{target_group=\"refused\"}}"
        );
        // A target was chosen, so the request counts (RequestCount), once, even
        // though no connection to it could be made; each refused connect counts as
        // a connection error.
        for (g, errors) in [("refused", 1.0), ("dead2", 2.0)] {
            let labels = [("target_group", g)];
            let requests = s.f.metric("fulcrum_requests_total", &labels).await;
            assert_eq!(requests, Some(1.0), "fulcrum_requests_total of {g}");
            let errs =
                s.f.metric("fulcrum_target_connection_errors_total", &labels)
                    .await;
            assert_eq!(errs, Some(errors), "connection errors of {g}");
        }
        // With no target to choose, nothing counts.
        let (r, _) = s.send(&get_with("/g/empty", "")).await;
        assert_eq!(r.status, 503, "{r:?}");
        let requests =
            s.f.metric("fulcrum_requests_total", &[("target_group", "empty")])
                .await;
        assert_eq!(requests.unwrap_or(0.0), 0.0, "requests of the empty group");
    })
    .await;
}

/// 503 for a group without targets (the balancer's), told apart from a target's own
/// 503 (counted by class, not as the balancer's).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_targets_is_503_and_target_answers_are_counted_by_class() {
    bounded(60, async {
        let s = setup().await;
        let (r, _) = s.send(&get_with("/g/empty", "")).await;
        assert_eq!(r.status, 503, "{r:?}");
        assert_eq!(r.header("x-backend"), None);
        // The access log names the group even though no target answered.
        let l = s.log_line("/g/empty").await;
        assert_eq!(l["elb_status_code"], 503, "{l}");
        assert_eq!(l["target_group"], "empty", "{l}");
        assert_eq!(l["target"], serde_json::Value::Null, "{l}");
        assert_eq!(l["target_status_code"], serde_json::Value::Null, "{l}");
        let (r, _) = s.send(&get_with("/g/sorry", "")).await;
        assert_eq!(r.status, 503, "{r:?}");
        assert_eq!(r.header("x-backend"), Some("raw"), "the target's own 503");
        let (r, _) = s.send(&get_with("/", "")).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            s.lb("503").await,
            1.0,
            "fulcrum_lb_responses_total{{code=\"503\"}}"
        );
        let m = s.f.metrics().await;
        for (g, class) in [("sorry", "5xx"), ("app", "2xx")] {
            let n = metric(
                &m,
                "fulcrum_target_responses_total",
                &[("target_group", g), ("code_class", class)],
            );
            assert_eq!(
                n,
                Some(1.0),
                "fulcrum_target_responses_total{{target_group=\"{g}\",code_class=\"{class}\"}}"
            );
        }
        let n = metric(
            &m,
            "fulcrum_target_responses_total",
            &[("target_group", "empty")],
        )
        .unwrap_or(0.0);
        assert_eq!(
            n, 0.0,
            "a target response counted for the group without targets"
        );

        // To a HEAD request the balancer's answer is the head alone: it announces
        // the page's length, no body bytes follow (up to the close it asks for).
        let mut c = Conn::connect(local(s.web)).await.unwrap();
        c.send(b"HEAD /g/empty HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let head = c.read_head().await.unwrap();
        assert!(head.starts_with("HTTP/1.1 503"), "{head:?}");
        assert!(
            head.to_ascii_lowercase().contains("content-length: "),
            "{head:?}"
        );
        assert!(
            c.closed_without_bytes(Duration::from_secs(5)).await,
            "no body after the head of a HEAD answer"
        );
    })
    .await;
}

/// After a 405, 463 or 503 to a bodiless HTTP/1.1 keep-alive request the
/// connection carries on (no `Connection: close`): the next request on it is served.
/// A 400 still closes it, and a HEAD refused with 463 gets the head alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn error_answers_keep_a_connection_that_can_go_on() {
    bounded(60, async {
        let s = setup().await;
        let x31 = format!("X-Forwarded-For: {}\r\n", xff(31));
        for (what, raw, want) in [
            (
                "TRACE",
                "TRACE / HTTP/1.1\r\nHost: test.local\r\n\r\n".to_string(),
                405,
            ),
            (
                "31 addresses",
                format!("GET / HTTP/1.1\r\nHost: test.local\r\n{x31}\r\n"),
                463,
            ),
            (
                "empty group",
                "GET /g/empty HTTP/1.1\r\nHost: test.local\r\n\r\n".to_string(),
                503,
            ),
            (
                "empty group, Content-Length: 0",
                "POST /g/empty HTTP/1.1\r\nHost: test.local\r\nContent-Length: 0\r\n\r\n"
                    .to_string(),
                503,
            ),
        ] {
            let mut c = Conn::connect(local(s.web)).await.unwrap();
            c.send(raw.as_bytes()).await.unwrap();
            let r = c.read_response().await.unwrap();
            assert_eq!(r.status, want, "{what}: {r:?}");
            assert_eq!(r.header("connection"), None, "{what}: {r:?}");
            c.send(b"GET /next HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let next = c.read_response().await.unwrap();
            assert_eq!(
                next.status, 200,
                "{what}: the next request on the connection: {next:?}"
            );
        }
        // The refused requests are logged with their request line.
        let l = s.log_line("TRACE http://").await;
        assert_eq!(l["elb_status_code"], 405, "{l}");
        let want = format!("TRACE http://test.local:{}/ HTTP/1.1", s.web);
        assert_eq!(l["request"], want.as_str(), "{l}");
        // A 400 ends the connection.
        let mut c = Conn::connect(local(s.web)).await.unwrap();
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
            .await
            .unwrap();
        let r = c.read_response().await.unwrap();
        assert_eq!(r.status, 400, "{r:?}");
        assert_eq!(r.header("connection"), Some("close"), "{r:?}");
        assert!(
            c.closed_without_bytes(Duration::from_secs(5)).await,
            "closed after the 400"
        );
        // HEAD: the head alone, and the connection goes on.
        let mut c = Conn::connect(local(s.web)).await.unwrap();
        c.send(format!("HEAD / HTTP/1.1\r\nHost: test.local\r\n{x31}\r\n").as_bytes())
            .await
            .unwrap();
        let head = c.read_head().await.unwrap();
        assert!(head.starts_with("HTTP/1.1 463"), "{head:?}");
        c.send(b"GET /after-head HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let next = c.read_response().await.unwrap();
        assert_eq!(next.status, 200, "no body bytes came between: {next:?}");
    })
    .await;
}

/// A target that accepts and never answers: 504 after the listener's idle_timeout (2s).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_target_is_504_after_idle_timeout() {
    bounded(60, async {
        let s = setup().await;
        let t = Instant::now();
        let (r, _) = s.send(&get_with("/g/silent", "")).await;
        let took = t.elapsed();
        assert_eq!(r.status, 504, "{r:?}");
        assert!(
            took >= Duration::from_millis(1500),
            "504 after {took:?}, before idle_timeout"
        );
        assert!(took <= Duration::from_secs(8), "504 only after {took:?}");
        assert_eq!(
            s.lb("504").await,
            1.0,
            "fulcrum_lb_responses_total{{code=\"504\"}}"
        );
    })
    .await;
}

/// `1-<8 hex epoch seconds>-<24 hex>`: the epoch, if the id has that shape.
fn trace_epoch(id: &str) -> Option<u64> {
    let rest = id.strip_prefix("1-")?;
    let (time, random) = rest.split_once('-')?;
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    (hex(time, 8) && hex(random, 24)).then(|| u64::from_str_radix(time, 16).unwrap())
}

/// `X-Amzn-Trace-Id` in ALB's format: added as `Root=1-...` (current epoch), or
/// extended to `Self=1-...;Root=<the client's>`; an existing Self is replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trace_id_is_added_or_extended() {
    bounded(60, async {
        let s = setup().await;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut roots = Vec::new();
        for _ in 0..2 {
            s.send(&get_with("/t", "")).await;
            let ids = s.app.last().header_all("x-amzn-trace-id");
            assert_eq!(ids.len(), 1, "{ids:?}");
            let root = ids[0].strip_prefix("Root=").unwrap_or("");
            let epoch = trace_epoch(root).unwrap_or_else(|| {
                panic!("{:?} is not Root=1-[0-9a-f]{{8}}-[0-9a-f]{{24}}", ids[0])
            });
            assert!(
                epoch.abs_diff(now) < 300,
                "trace epoch {epoch} vs now {now}"
            );
            roots.push(root.to_string());
        }
        assert_ne!(roots[0], roots[1], "two requests got the same trace id");

        let client_root = "Root=1-5759e988-bd862e3fe1be46a994272793";
        for sent in [
            client_root.to_string(),
            format!("Self=1-67891233-abcdef012345678912345678;{client_root}"),
        ] {
            s.send(&get_with("/t", &format!("X-Amzn-Trace-Id: {sent}\r\n")))
                .await;
            let ids = s.app.last().header_all("x-amzn-trace-id");
            assert_eq!(ids.len(), 1, "{ids:?}");
            let (self_part, root) = ids[0]
                .split_once(';')
                .unwrap_or_else(|| panic!("sent {sent:?}, target saw {:?}", ids[0]));
            assert_eq!(root, client_root, "sent {sent:?}, target saw {:?}", ids[0]);
            let self_id = self_part.strip_prefix("Self=").unwrap_or("");
            assert!(
                trace_epoch(self_id).is_some(),
                "sent {sent:?}, target saw {:?}",
                ids[0]
            );
            assert!(
                !sent.contains(self_id),
                "Self not replaced: sent {sent:?}, target saw {:?}",
                ids[0]
            );
        }
    })
    .await;
}

/// `Expect: 100-continue`: the client gets `HTTP/1.1 100 Continue` before it sends
/// the body, then the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expect_100_continue_is_answered_before_the_body() {
    bounded(60, async {
        let s = setup().await;
        let mut c = Conn::connect(local(s.web)).await.unwrap();
        c.send(b"POST /echo HTTP/1.1\r\nHost: test.local\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
            .await
            .unwrap();
        let head = tokio::time::timeout(Duration::from_secs(5), c.read_head())
            .await
            .expect("no 100 Continue within 5 s while the body is held back")
            .unwrap();
        assert!(head.starts_with("HTTP/1.1 100 Continue"), "{head:?}");
        c.send(b"hello").await.unwrap();
        let r = c.read_response().await.unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "hello"), "{r:?}");
    })
    .await;
}

/// WebSocket: the target's 101 reaches the client, then bytes flow both ways
/// through a tunnel (HTTP-looking bytes included, not parsed).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn websocket_upgrade_becomes_a_tunnel_after_101() {
    bounded(60, async {
        let s = setup().await;
        let mut c = Conn::connect(local(s.web)).await.unwrap();
        c.send(
            b"GET /g/ws HTTP/1.1\r\nHost: test.local\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
        let head = c.read_head().await.unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head:?}");
        assert!(head.to_ascii_lowercase().contains("upgrade: websocket"), "{head:?}");
        // The group's sticky cookie is set on the 101 as on any response (SPEC §4).
        assert!(head.contains("\r\nSet-Cookie: FULCRUMLB="), "{head:?}");
        let io = async {
            assert_eq!(c.read_bytes(8).await.unwrap(), b"welcome\n", "target to client");
            for msg in [b"ping-1".to_vec(), b"GET /internal HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), pattern(32 * 1024)] {
                c.send(&msg).await.unwrap();
                assert!(c.read_bytes(msg.len()).await.unwrap() == msg, "echo of {} bytes", msg.len());
            }
        };
        tokio::time::timeout(Duration::from_secs(10), io).await.expect("tunnel traffic within 10 s");
        let quiet = Instant::now();

        // Tunnel bytes count as processed bytes both ways (SPEC §9).
        let labels = |d| [("listener", "web"), ("direction", d)];
        let moved = 6 + 36 + 32 * 1024;
        let bytes_in = s.f.metric("fulcrum_processed_bytes_total", &labels("in")).await.unwrap_or(0.0);
        let bytes_out = s.f.metric("fulcrum_processed_bytes_total", &labels("out")).await.unwrap_or(0.0);
        assert!(bytes_in >= moved as f64, "processed bytes in: {bytes_in}");
        assert!(bytes_out >= (moved + 8) as f64, "processed bytes out: {bytes_out}");

        // A silent tunnel closes after the listener's idle_timeout (2 s) from its
        // last byte, not before.
        assert!(
            c.closed_without_bytes(Duration::from_secs(15)).await,
            "the silent tunnel closed within 15 s"
        );
        let took = quiet.elapsed();
        assert!(
            took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
            "closed after {took:?}, idle_timeout is 2 s"
        );

        // The access log types the upgraded connection `ws`, as ALB does.
        let mut ws_line = None;
        for _ in 0..50 {
            ws_line = std::fs::read_to_string(&s.log)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .find(|l| l["request"].as_str().is_some_and(|r| r.contains("/g/ws")));
            if ws_line.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let ws_line = ws_line.expect("an access-log line for the upgrade");
        assert_eq!(ws_line["type"], "ws", "{ws_line}");
        assert_eq!(ws_line["elb_status_code"], 101, "{ws_line}");
    })
    .await;
}

/// `Upgrade: h2c` (and the HTTP2-Settings its Connection names) never reaches the
/// target, and the client gets the target's ordinary answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn h2c_upgrade_is_removed() {
    bounded(60, async {
        let s = setup().await;
        let (r, _) = s
            .send(&get_with("/h2c", "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"))
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        let seen = s.app.last();
        for h in ["upgrade", "http2-settings"] {
            assert!(seen.header(h).is_none(), "{h} reached the target: {:?}", seen.headers);
        }
        for v in seen.header_all("connection") {
            assert!(!v.to_ascii_lowercase().contains("upgrade"), "Connection: {v} reached the target");
        }
    })
    .await;
}
