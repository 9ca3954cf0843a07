//! The HTTP/1.1 proxy path (SPEC §3, §4): balancing, upstream keep-alive, streamed
//! bodies, forwarded and hop-by-hop headers, framing refusals, pipelining, retry.

mod common;

use std::time::Duration;

use common::*;

/// 3 targets, 30 requests on new connections: each target answers 10, in a
/// rotation that cycles (the answer to request i is the answer to request i % 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_robin_rotates_over_every_target() {
    bounded(60, async {
        let bs = [
            Backend::start("rr-a").await,
            Backend::start("rr-b").await,
            Backend::start("rr-c").await,
        ];
        let web = free_port();
        let addrs: Vec<_> = bs.iter().map(|b| b.addr).collect();
        let _f = Fulcrum::start(&simple_config(free_port(), web, &addrs)).await;
        let mut order = Vec::new();
        for _ in 0..30 {
            let r = get(local(web), "/").await;
            assert_eq!(r.status, 200, "{r:?}");
            order.push(r.text());
        }
        let first: std::collections::HashSet<_> = order[..3].iter().collect();
        assert_eq!(
            first.len(),
            3,
            "the first 3 answers name 3 targets: {order:?}"
        );
        for (i, name) in order.iter().enumerate() {
            assert_eq!(
                name,
                &order[i % 3],
                "answer {i} breaks the rotation: {order:?}"
            );
        }
        for b in &bs {
            assert_eq!(b.requests(), 10, "{} answered {}", b.name, b.requests());
        }
    })
    .await;
}

/// 50 sequential requests on one client connection reuse pooled connections to
/// the 2 targets instead of opening one per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_connections_are_kept_alive_and_reused() {
    bounded(60, async {
        let a = Backend::start("ka-a").await;
        let b = Backend::start("ka-b").await;
        let web = free_port();
        let _f = Fulcrum::start(&simple_config(free_port(), web, &[a.addr, b.addr])).await;
        let mut c = Conn::connect(local(web)).await.unwrap();
        for i in 0..50 {
            let r = c.get("/").await.unwrap_or_else(|e| panic!("request {i}: {e}"));
            assert_eq!(r.status, 200);
        }
        assert_eq!(a.requests() + b.requests(), 50);
        let used = a.data_connections() + b.data_connections();
        assert!(
            used <= 4,
            "50 requests opened {used} connections to the targets; pooled connections should be reused"
        );
    })
    .await;
}

/// A 5 MiB Content-Length body and a 3 MiB chunked body are echoed back intact,
/// and an 8 MiB response arrives intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_bodies_stream_intact_both_ways() {
    bounded(90, async {
        let a = Backend::start("big").await;
        let web = free_port();
        let _f = Fulcrum::start(&simple_config(free_port(), web, &[a.addr])).await;
        let head = "POST /echo HTTP/1.1\r\nHost: test.local\r\n";

        let body: Vec<u8> = (0..5 * 1024 * 1024).map(|i| (i * 31 % 256) as u8).collect();
        let r = exchange_streaming(local(web), head, body.clone(), Framing::ContentLength)
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), body.len(), "echoed length");
        assert!(r.body == body, "5 MiB body corrupted on the way");
        assert_eq!(
            a.last().header("content-length").as_deref(),
            Some("5242880"),
            "the target sees the client's Content-Length"
        );

        let body: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i * 7 % 253) as u8).collect();
        let framing = Framing::Chunked { chunk: 40_000 };
        let r = exchange_streaming(local(web), head, body.clone(), framing)
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), body.len(), "echoed length");
        assert!(r.body == body, "3 MiB chunked body corrupted on the way");

        let n = 8 * 1024 * 1024;
        let r = get(local(web), &format!("/big?n={n}")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), n);
        assert!(r.body == pattern(n), "8 MiB response corrupted on the way");

        // Large bodies are counted, and the connections stay usable for the next
        // exchange; the same through the splice(2) path (FULCRUM_HTTP_SPLICE=1).
        let web2 = free_port();
        let spliced = Fulcrum::start_env(
            &simple_config(free_port(), web2, &[a.addr]),
            &[("FULCRUM_HTTP_SPLICE", "1")],
        )
        .await;
        for (f, port, before) in [(&_f, web, 16), (&spliced, web2, 0)] {
            let mut c = Conn::connect(local(port)).await.unwrap();
            for n in [300 * 1024, 8 * 1024 * 1024, 70 * 1024] {
                let r = c.get(&format!("/big?n={n}")).await.unwrap();
                assert_eq!(r.status, 200);
                assert!(
                    r.body == pattern(n),
                    "{n}-byte body on a keep-alive connection (port {port})"
                );
            }
            let out = f
                .metric(
                    "fulcrum_processed_bytes_total",
                    &[("listener", "web"), ("direction", "out")],
                )
                .await
                .unwrap_or(0.0);
            let want = ((before + 8) * 1024 * 1024) as f64;
            assert!(out >= want, "processed bytes out on port {port}: {out}");
        }
    })
    .await;
}

/// X-Forwarded-For is appended to, X-Forwarded-Proto and -Port are set (replacing
/// the client's), hop-by-hop headers stop at the load balancer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forwarded_and_hop_by_hop_headers() {
    bounded(60, async {
        let a = Backend::start("hdr").await;
        let web = free_port();
        let _f = Fulcrum::start(&simple_config(free_port(), web, &[a.addr])).await;

        let raw = "GET /h HTTP/1.1\r\nHost: test.local\r\nX-Forwarded-For: 1.2.3.4\r\n\
                   X-Forwarded-Proto: https\r\nX-Forwarded-Port: 1\r\nConnection: close\r\n\r\n";
        let r = http_request(local(web), raw.as_bytes()).await.unwrap();
        assert_eq!(r.status, 200);
        let seen = a.last();
        assert_eq!(seen.header_all("x-forwarded-for"), ["1.2.3.4, 127.0.0.1"]);
        assert_eq!(seen.header_all("x-forwarded-proto"), ["http"]);
        assert_eq!(seen.header_all("x-forwarded-port"), [web.to_string()]);

        let raw = "GET /hop HTTP/1.1\r\nHost: test.local\r\nConnection: x-foo\r\nX-Foo: 1\r\n\
                   Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\n\
                   Upgrade: h2c\r\nX-Keep: yes\r\n\r\n";
        let r = http_request(local(web), raw.as_bytes()).await.unwrap();
        assert_eq!(r.status, 200);
        let seen = a.last();
        assert_eq!(seen.target, "/hop");
        for h in ["x-foo", "keep-alive", "te", "proxy-connection", "upgrade"] {
            assert!(
                seen.header(h).is_none(),
                "{h} reached the target: {:?}",
                seen.headers
            );
        }
        for v in seen.header_all("connection") {
            assert!(
                !v.to_ascii_lowercase().contains("x-foo"),
                "Connection: {v} reached the target"
            );
        }
        assert_eq!(seen.header("x-keep").as_deref(), Some("yes"));
    })
    .await;
}

fn framing_config(admin: u16, ports: [u16; 3], target: std::net::SocketAddr) -> String {
    let [def, mon, strict] = ports;
    format!(
        "runtime: {{worker_threads: 2}}\n\
         admin: {{bind: \"127.0.0.1:{admin}\"}}\n\
         listeners:\n\
         \x20 - {{name: defensive, bind: \"127.0.0.1:{def}\", default_action: {{forward: web}}}}\n\
         \x20 - {{name: monitor, bind: \"127.0.0.1:{mon}\", desync_mitigation: monitor, default_action: {{forward: web}}}}\n\
         \x20 - {{name: strictest, bind: \"127.0.0.1:{strict}\", desync_mitigation: strictest, default_action: {{forward: web}}}}\n\
         target_groups:\n\
         \x20 - name: web\n\
         \x20   health_check: {{path: /hc, interval: 30s, timeout: 2s}}\n\
         \x20   targets: [\"{target}\"]\n"
    )
}

/// Requests whose length the load balancer and a target could read differently are
/// refused in every desync mode (400; 501 for a well-formed coding other than
/// chunked) and never reach the target. Both TE and CL is "ambiguous": refused only
/// by `strictest`; the other modes forward it with the Content-Length removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unsafe_framing_is_refused_and_never_reaches_the_target() {
    bounded(60, async {
        let a = Backend::start("framing").await;
        let ports = [free_port(), free_port(), free_port()];
        let _f = Fulcrum::start(&framing_config(free_port(), ports, a.addr)).await;
        let [def, mon, strict] = ports;
        let h = "POST /echo HTTP/1.1\r\nHost: test.local\r\n";
        let cases: Vec<(&str, String, u16, Vec<u16>)> = vec![
            (
                "two Content-Length values",
                format!("{h}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
                400,
                vec![def, mon, strict],
            ),
            (
                "Transfer-Encoding: xchunked",
                format!("{h}Transfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
                400,
                vec![def, mon, strict],
            ),
            (
                "chunked twice",
                format!(
                    "{h}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                ),
                400,
                vec![def, mon, strict],
            ),
            (
                "Transfer-Encoding: gzip",
                format!("{h}Transfer-Encoding: gzip\r\n\r\nhello"),
                501,
                vec![def, mon],
            ),
            (
                "Transfer-Encoding: gzip, chunked",
                format!("{h}Transfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
                501,
                vec![def, mon],
            ),
            (
                "both Content-Length and Transfer-Encoding (strictest)",
                format!("{h}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
                400,
                vec![strict],
            ),
        ];
        let mut wrong = Vec::new();
        for (what, raw, want, listeners) in &cases {
            for port in listeners {
                match http_request(local(*port), raw.as_bytes()).await {
                    Ok(r) if r.status == *want => {}
                    Ok(r) => wrong.push(format!("{what} on port {port}: {} (want {want})", r.status)),
                    Err(e) => wrong.push(format!("{what} on port {port}: {e} (want {want})")),
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "listeners {def} defensive, {mon} monitor, {strict} strictest:\n{}",
            wrong.join("\n")
        );
        assert_eq!(a.requests(), 0, "a refused request reached the target: {:?}", a.seen());

        // BothTeClPresent is Ambiguous (aws-reference §4.4): defensive and monitor
        // allow it, normalised: forwarded chunked without the Content-Length, and
        // the client connection closes after the exchange.
        let raw = format!("{h}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
        for (mode, port) in [("defensive", def), ("monitor", mon)] {
            let mut c = Conn::connect(local(port)).await.unwrap();
            c.send(raw.as_bytes()).await.unwrap();
            let r = c.read_response().await.unwrap();
            assert_eq!(r.status, 200, "TE+CL on the {mode} listener: {r:?}");
            assert_eq!(r.text(), "hello");
            let seen = a.last();
            assert!(seen.header("content-length").is_none(), "CL forwarded: {:?}", seen.headers);
            assert!(
                c.closed_without_bytes(Duration::from_secs(5)).await,
                "the client connection stays open after a TE+CL request ({mode})"
            );
        }
        assert_eq!(a.requests(), 2);
    })
    .await;
}

/// A request without Content-Length or Transfer-Encoding has no body: the bytes
/// after its head are the next request (HTTP/1.1), and an HTTP/1.0 request is not
/// read until close.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_without_length_has_no_body() {
    bounded(60, async {
        let a = Backend::start("nobody").await;
        let web = free_port();
        let _f = Fulcrum::start(&simple_config(free_port(), web, &[a.addr])).await;

        let mut c = Conn::connect(local(web)).await.unwrap();
        c.send(b"POST /echo HTTP/1.1\r\nHost: test.local\r\n\r\nGET /second HTTP/1.1\r\nHost: test.local\r\n\r\n")
            .await
            .unwrap();
        let r1 = c.read_response().await.unwrap();
        assert_eq!(r1.status, 200);
        assert_eq!(r1.body, b"", "the first request had no body");
        let r2 = c.read_response().await.unwrap();
        assert_eq!(r2.status, 200);
        assert_eq!(r2.header("x-path"), Some("/second"));
        let seen: Vec<_> = a.seen().into_iter().map(|s| (s.method, s.target)).collect();
        assert_eq!(
            seen,
            [("POST".into(), "/echo".into()), ("GET".into(), "/second".into())]
        );

        // HTTP/1.0: the answer does not wait for the client to close.
        let mut c = Conn::connect(local(web)).await.unwrap();
        c.send(b"POST /echo HTTP/1.0\r\nHost: test.local\r\n\r\nNOT-A-BODY")
            .await
            .unwrap();
        let r = tokio::time::timeout(Duration::from_secs(5), c.read_response())
            .await
            .expect("an HTTP/1.0 request without length is answered without waiting for close")
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"", "bytes after the head were read as the body");
        assert_eq!(a.seen()[2].target, "/echo");
    })
    .await;
}

/// HTTP/1.1 without Host, or with two, is 400 and reaches no target.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn host_header_missing_or_repeated_is_400() {
    bounded(60, async {
        let a = Backend::start("host").await;
        let web = free_port();
        let _f = Fulcrum::start(&simple_config(free_port(), web, &[a.addr])).await;
        let r = http_request(local(web), b"GET / HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(r.status, 400);
        let r = http_request(local(web), b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(r.status, 400);
        assert_eq!(a.requests(), 0);
        // HTTP/1.0 without Host is fine.
        let r = http_request(local(web), b"GET /ten HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    })
    .await;
}

/// Two requests written at once get two answers, in order, even when the first
/// is the slower one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipelined_requests_are_answered_in_order() {
    bounded(60, async {
        let a = Backend::start("pipe").await;
        let web = free_port();
        let _f = Fulcrum::start(&simple_config(free_port(), web, &[a.addr])).await;
        let mut c = Conn::connect(local(web)).await.unwrap();
        c.send(
            b"GET /slow?ms=300 HTTP/1.1\r\nHost: test.local\r\n\r\n\
              GET /fast HTTP/1.1\r\nHost: test.local\r\n\r\n",
        )
        .await
        .unwrap();
        let r1 = c.read_response().await.unwrap();
        let r2 = c.read_response().await.unwrap();
        assert_eq!((r1.status, r2.status), (200, 200));
        assert_eq!(r1.header("x-path"), Some("/slow?ms=300"));
        assert_eq!(r2.header("x-path"), Some("/fast"));
        // The connection is still usable afterwards.
        assert_eq!(c.get("/third").await.unwrap().status, 200);
    })
    .await;
}

/// A target that refuses connections, in a group with a live one: every request is
/// answered by the live target (the failed connect is retried and counted), never
/// 502. Health checks go to a separate port so the dead target counts as healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_connect_is_retried_on_another_target() {
    bounded(60, async {
        let live = Backend::start("live").await;
        let hc = Backend::start("health").await;
        let dead = local(free_port());
        let (admin, web) = (free_port(), free_port());
        let yaml = format!(
            "runtime: {{worker_threads: 2}}\n\
             admin: {{bind: \"127.0.0.1:{admin}\"}}\n\
             listeners:\n\
             \x20 - {{name: web, bind: \"127.0.0.1:{web}\", default_action: {{forward: web}}}}\n\
             target_groups:\n\
             \x20 - name: web\n\
             \x20   health_check: {{port: {}, path: /hc, interval: 30s, timeout: 2s}}\n\
             \x20   targets: [\"{dead}\", \"{}\"]\n",
            hc.port(),
            live.addr
        );
        let f = Fulcrum::start(&yaml).await;
        for i in 0..20 {
            let r = get(local(web), &format!("/r{i}")).await;
            assert_eq!(r.status, 200, "request {i}: {r:?}");
            assert_eq!(r.text(), "live");
        }
        let mut c = Conn::connect(local(web)).await.unwrap();
        for i in 0..10 {
            let r = c.get(&format!("/k{i}")).await.unwrap();
            assert_eq!(r.status, 200, "keep-alive request {i}: {r:?}");
        }
        assert_eq!(live.requests(), 30);
        let retries = f
            .metric("fulcrum_retries_total", &[("target_group", "web")])
            .await;
        assert!(
            retries.unwrap_or(0.0) >= 1.0,
            "fulcrum_retries_total{{target_group=\"web\"}} = {retries:?}"
        );
    })
    .await;
}

/// Request bodies count as processed bytes in and in the access log's
/// `received_bytes`, response bodies in `sent_bytes` (ALB's ProcessedBytes and
/// log fields: the whole request and response, not only the heads).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_and_response_bodies_are_counted() {
    bounded(60, async {
        let a = Backend::start("count").await;
        let logdir = tempfile::tempdir().unwrap();
        let log = logdir.path().join("access.log");
        let web = free_port();
        let mut yaml = simple_config(free_port(), web, &[a.addr]);
        yaml.push_str(&format!(
            "access_log: {{path: \"{}\", format: json}}\n",
            log.display()
        ));
        let f = Fulcrum::start(&yaml).await;
        let head = "POST /echo HTTP/1.1\r\nHost: test.local\r\n";
        let n = 300_000;
        for framing in [Framing::ContentLength, Framing::Chunked { chunk: 10_000 }] {
            let r = exchange_streaming(local(web), head, pattern(n), framing)
                .await
                .unwrap();
            assert_eq!(r.status, 200);
            assert_eq!(r.body.len(), n);
        }
        // A refused head counts too (two Host headers: 400).
        let refused = b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n";
        let mut c = Conn::connect(local(web)).await.unwrap();
        c.send(refused).await.unwrap();
        assert_eq!(c.read_response().await.unwrap().status, 400);
        let bytes_in = f
            .metric(
                "fulcrum_processed_bytes_total",
                &[("listener", "web"), ("direction", "in")],
            )
            .await
            .unwrap_or(0.0);
        assert!(
            bytes_in >= (2 * n + refused.len()) as f64,
            "two {n}-byte request bodies and a refused head, processed bytes in: {bytes_in}"
        );
        let mut lines = Vec::new();
        for _ in 0..50 {
            lines = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .collect();
            if lines.len() >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(lines.len(), 3, "{lines:?}");
        // Each line is written when its exchange ends, and the two workers may end
        // them in either order: the refused one is found by its status.
        lines.sort_by_key(|l| l["elb_status_code"] == 400);
        let refused_line = &lines[2];
        assert_eq!(refused_line["elb_status_code"], 400, "{refused_line}");
        assert_eq!(
            refused_line["received_bytes"],
            refused.len() as u64,
            "{refused_line}"
        );
        assert!(
            refused_line["sent_bytes"].as_u64().unwrap() > 0,
            "{refused_line}"
        );
        for l in &lines[..2] {
            let received = l["received_bytes"].as_u64().unwrap();
            let sent = l["sent_bytes"].as_u64().unwrap();
            assert!(received >= n as u64, "received_bytes {received}: {l}");
            assert!(received < n as u64 + 4096, "received_bytes {received}: {l}");
            assert!(
                sent >= n as u64 && sent < n as u64 + 4096,
                "sent_bytes {sent}: {l}"
            );
        }
    })
    .await;
}
