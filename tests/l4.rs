//! L4 behaviour (SPEC §5, §2 listeners/target_groups, §4 draining): tcp listeners
//! pass bytes unchanged both ways, propagate half-close, close silent connections
//! after `idle_timeout`, retry a refusing target on another one, honour `allow`,
//! drain removed targets' connections on reload, send PROXY v2 headers, and take the
//! splice(2) path for plain tcp.

mod common;
#[path = "common/l4tls.rs"]
mod l4tls;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use l4tls::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A config with `listeners` and `target_groups` items (already indented YAML).
fn yaml(admin: u16, listeners: &[String], groups: &[String]) -> String {
    format!(
        "node: {{name: lb-test, zone: zone-a}}\n\
         runtime: {{worker_threads: 2}}\n\
         admin: {{bind: \"127.0.0.1:{admin}\"}}\n\
         listeners:\n{}target_groups:\n{}",
        listeners.concat(),
        groups.concat()
    )
}

/// A tcp listener `name` on `port` forwarding to `group`, with extra flow keys.
fn tcp_listener(name: &str, port: u16, group: &str, extra: &str) -> String {
    format!(
        "  - {{name: {name}, protocol: tcp, bind: \"127.0.0.1:{port}\", {extra}default_action: {{forward: {group}}}}}\n"
    )
}

/// A tcp group with slow health checks (connect) and extra `key: value` lines.
fn tcp_group(name: &str, settings: &[&str], targets: &[SocketAddr]) -> String {
    let t: Vec<String> = targets.iter().map(|a| tgt(*a)).collect();
    group(name, "tcp", settings, "interval: 30s, timeout: 2s", &t)
}

/// Writes `data` (then shuts down the write side) while reading everything back.
async fn roundtrip(addr: SocketAddr, data: Vec<u8>) -> Vec<u8> {
    let s = TcpStream::connect(addr).await.expect("connect");
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.expect("write");
        w.shutdown().await.expect("shutdown write");
        w
    });
    let mut got = Vec::new();
    r.read_to_end(&mut got).await.expect("read to end");
    drop(writer.await.unwrap());
    got
}

/// 8 MiB through a tcp listener to an echo target come back intact (the target
/// appends `<EOF>` after seeing the client's FIN).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tcp_echo_of_several_mib_both_ways() {
    bounded(60, async {
        let echo = TcpTarget::start(Kind::Echo).await;
        let (admin, port) = (free_port(), free_port());
        let _f = Fulcrum::start(&yaml(
            admin,
            &[tcp_listener("raw", port, "tg", "")],
            &[tcp_group("tg", &[], &[echo.addr])],
        ))
        .await;
        let data = pattern(8 * 1024 * 1024);
        let got = roundtrip(local(port), data.clone()).await;
        assert_eq!(got.len(), data.len() + 5, "bytes back");
        assert!(got[..data.len()] == data[..], "payload changed on the way");
        assert_eq!(&got[data.len()..], b"<EOF>");
        assert_eq!(echo.received().len(), 64 * 1024, "the target saw the bytes");
        assert!(echo.received()[..] == data[..64 * 1024]);
    })
    .await;
}

/// Half-close: the client shuts down its write side; the target sees EOF (and only
/// then answers `<EOF>`), and that answer still reaches the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tcp_half_close_is_propagated() {
    bounded(30, async {
        let echo = TcpTarget::start(Kind::Echo).await;
        let (admin, port) = (free_port(), free_port());
        let _f = Fulcrum::start(&yaml(
            admin,
            &[tcp_listener("raw", port, "tg", "")],
            &[tcp_group("tg", &[], &[echo.addr])],
        ))
        .await;
        let mut s = TcpStream::connect(local(port)).await.unwrap();
        s.write_all(b"ping").await.unwrap();
        let mut four = [0u8; 4];
        s.read_exact(&mut four).await.unwrap();
        assert_eq!(&four, b"ping");
        s.shutdown().await.unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(ms(5000), s.read_to_end(&mut rest))
            .await
            .expect("the answer after the FIN arrives")
            .unwrap();
        assert_eq!(text(&rest), "<EOF>", "the target's reply after it saw EOF");
    })
    .await;
}

/// `idle_timeout: 2s` closes a silent connection: not before ~1.5 s, by ~6 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tcp_idle_timeout_closes_a_silent_connection() {
    bounded(30, async {
        let echo = TcpTarget::start(Kind::Echo).await;
        let (admin, port) = (free_port(), free_port());
        let _f = Fulcrum::start(&yaml(
            admin,
            &[tcp_listener("raw", port, "tg", "idle_timeout: 2s, ")],
            &[tcp_group("tg", &[], &[echo.addr])],
        ))
        .await;
        let mut s = TcpStream::connect(local(port)).await.unwrap();
        s.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        s.read_exact(&mut one).await.unwrap();
        let quiet = Instant::now();
        let mut buf = Vec::new();
        let r = tokio::time::timeout(ms(8000), s.read_to_end(&mut buf)).await;
        let took = quiet.elapsed();
        assert!(r.is_ok(), "still open after 8 s of silence");
        assert!(
            took >= ms(1500) && took <= ms(6000),
            "closed after {took:?}; idle_timeout is 2 s"
        );
        assert!(
            !text(&buf).contains("x"),
            "no more data expected: {:?}",
            text(&buf)
        );
    })
    .await;
}

/// One target refuses connections (closed traffic port, health checks pass on
/// another port), the other is alive: every client connection is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tcp_connect_failure_retries_another_target() {
    bounded(60, async {
        let echo = TcpTarget::start(Kind::Echo).await;
        let hc = TcpTarget::start(Kind::Echo).await;
        let dead = local(free_port());
        let (admin, port) = (free_port(), free_port());
        let hc_port = hc.addr.port();
        let g = group(
            "tg",
            "tcp",
            &[],
            &format!("port: {hc_port}, interval: 30s, timeout: 2s"),
            &[tgt(dead), tgt(echo.addr)],
        );
        let f = Fulcrum::start(&yaml(admin, &[tcp_listener("raw", port, "tg", "")], &[g])).await;
        assert_eq!(f.state_of("tg", dead).await, "healthy");
        assert_eq!(f.state_of("tg", echo.addr).await, "healthy");
        for i in 0..10 {
            let msg = format!("hello {i}");
            let got = roundtrip(local(port), msg.clone().into_bytes()).await;
            assert_eq!(text(&got), format!("{msg}<EOF>"), "connection {i}");
        }
        assert_eq!(echo.conns(), 10, "every connection reached the live target");
        // Each connection routed to a target counts as one of the group's
        // requests (Classic ELB's RequestCount for TCP); each refused connect as a
        // connection error, and the move to the live target as a retry.
        let requests = f
            .metric(
                "fulcrum_requests_total",
                &[("listener", "raw"), ("target_group", "tg")],
            )
            .await;
        assert_eq!(requests, Some(10.0), "fulcrum_requests_total");
        let errors = f
            .metric(
                "fulcrum_target_connection_errors_total",
                &[("target_group", "tg")],
            )
            .await
            .unwrap_or(0.0);
        let retries = f
            .metric("fulcrum_retries_total", &[("target_group", "tg")])
            .await
            .unwrap_or(0.0);
        assert_eq!(errors, retries, "every refused connect was retried");
    })
    .await;
}

/// `allow: [10.0.0.0/8]` on a tcp listener closes connections from 127.0.0.1 at
/// accept; nothing reaches the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tcp_allow_list_rejects_other_sources() {
    bounded(30, async {
        let echo = TcpTarget::start(Kind::Echo).await;
        let (admin, port, open) = (free_port(), free_port(), free_port());
        let _f = Fulcrum::start(&yaml(
            admin,
            &[
                tcp_listener("closed", port, "tg", "allow: [10.0.0.0/8], "),
                tcp_listener("open", open, "tg", "allow: [127.0.0.0/8], "),
            ],
            &[tcp_group("tg", &[], &[echo.addr])],
        ))
        .await;
        assert!(closed_at_accept(local(port)).await, "127.0.0.1 was let in");
        assert_eq!(echo.conns(), 0, "a rejected connection reached the target");
        let got = roundtrip(local(open), b"ok".to_vec()).await;
        assert_eq!(text(&got), "ok<EOF>", "an allowed source is served");
    })
    .await;
}

/// Draining on reload: a connection to a removed target keeps working, new
/// connections go to the remaining target, and it is closed when
/// `deregistration_delay: 1s` ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tcp_draining_on_reload() {
    bounded(60, async {
        let a = TcpTarget::start(Kind::Echo).await;
        let b = TcpTarget::start(Kind::Echo).await;
        let (admin, port) = (free_port(), free_port());
        let cfg = |t: &[SocketAddr]| {
            yaml(
                admin,
                &[tcp_listener("raw", port, "tg", "")],
                &[tcp_group("tg", &["deregistration_delay: 1s"], t)],
            )
        };
        let f = Fulcrum::start(&cfg(&[a.addr, b.addr])).await;
        let mut c = TcpStream::connect(local(port)).await.unwrap();
        c.write_all(b"one").await.unwrap();
        let mut three = [0u8; 3];
        c.read_exact(&mut three).await.unwrap();
        let (gone, stays) = if a.conns() == 1 { (&a, &b) } else { (&b, &a) };
        assert_eq!((gone.conns(), stays.conns()), (1, 0));

        f.reload_yaml(&cfg(&[stays.addr])).await;
        let reloaded = Instant::now();
        assert_eq!(f.state_of("tg", gone.addr).await, "draining");
        for i in 0..4 {
            let got = roundtrip(local(port), format!("n{i}").into_bytes()).await;
            assert_eq!(text(&got), format!("n{i}<EOF>"));
        }
        assert_eq!(
            stays.conns(),
            4,
            "new connections go to the remaining target"
        );
        assert_eq!(gone.conns(), 1, "no new connection to the draining target");
        c.write_all(b"two").await.unwrap();
        c.read_exact(&mut three).await.unwrap();
        assert_eq!(&three, b"two", "the old connection works while draining");

        let mut rest = Vec::new();
        let r = tokio::time::timeout(ms(5000), c.read_to_end(&mut rest)).await;
        let took = reloaded.elapsed();
        assert!(r.is_ok(), "the connection was not closed after the delay");
        assert!(
            took >= ms(700) && took <= ms(3000),
            "closed {took:?} after the reload; the delay is 1 s"
        );
        eventually(ms(2000), "the target side is closed too", || async {
            (gone.open() == 0).then_some(())
        })
        .await;
    })
    .await;
}

/// `proxy_protocol_v2: true`: the target reads a PROXY v2 header (PROXY command
/// 0x21, TCP over IPv4 0x11) with the client's true address and port and the
/// listener's address; then the payload flows. Health checks send `LOCAL` (0x20).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proxy_v2_header_carries_the_client_address() {
    bounded(30, async {
        let t = TcpTarget::start(Kind::ProxyEcho).await;
        let (admin, port) = (free_port(), free_port());
        let _f = Fulcrum::start(&yaml(
            admin,
            &[tcp_listener("raw", port, "tg", "")],
            &[tcp_group("tg", &["proxy_protocol_v2: true"], &[t.addr])],
        ))
        .await;
        let mut s = TcpStream::connect(local(port)).await.unwrap();
        let me = s.local_addr().unwrap();
        s.write_all(b"hello").await.unwrap();
        let mut five = [0u8; 5];
        s.read_exact(&mut five).await.unwrap();
        assert_eq!(&five, b"hello", "payload after the header");
        let hs = t.proxy_headers();
        let proxied: Vec<&ProxyHeader> = hs.iter().filter(|h| h.cmd == 0x21).collect();
        assert_eq!(proxied.len(), 1, "headers: {hs:?}");
        let h = proxied[0];
        assert_eq!(h.fam, 0x11, "TCP over IPv4: {h:?}");
        assert_eq!(h.src, Some(me), "the client's address and port: {h:?}");
        assert_eq!(h.dst, Some(local(port)), "the listener's address: {h:?}");
        assert!(
            hs.iter().any(|h| h.cmd == 0x20),
            "health checks send a LOCAL header: {hs:?}"
        );
        assert_eq!(text(&t.received()), "hello", "the header is not payload");
    })
    .await;
}

/// Plain tcp connections take the splice path:
/// `fulcrum_l4_splice_connections_total{listener=...}` counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plain_tcp_takes_the_splice_path() {
    bounded(30, async {
        let echo = TcpTarget::start(Kind::Echo).await;
        let (admin, port) = (free_port(), free_port());
        let f = Fulcrum::start(&yaml(
            admin,
            &[tcp_listener("raw", port, "tg", "")],
            &[tcp_group("tg", &[], &[echo.addr])],
        ))
        .await;
        let name = "fulcrum_l4_splice_connections_total";
        let before = f.metric(name, &[("listener", "raw")]).await.unwrap_or(0.0);
        for i in 0..3 {
            let got = roundtrip(local(port), pattern(100_000 + i)).await;
            assert_eq!(got.len(), 100_005 + i);
        }
        let n = eventually(ms(3000), "the splice counter reaches 3", || async {
            let v = f.metric(name, &[("listener", "raw")]).await?;
            (v - before >= 3.0).then_some(v - before)
        })
        .await;
        assert_eq!(n, 3.0, "one count per plain tcp connection");
    })
    .await;
}
