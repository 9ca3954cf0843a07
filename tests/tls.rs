//! TLS (SPEC §2 certificates/listeners/target_groups, §4 health checks, §5): SNI picks
//! the listener's certificate, `tls_policy: tls13` refuses TLS 1.2, tls listeners to
//! tcp and tls groups, https target groups with and without verification, https and
//! tls health checks, and certificate rotation by reload.

mod common;
#[path = "common/l4tls.rs"]
mod l4tls;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::*;
use l4tls::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A config: `certs` are (name, cert path, key path); listeners and groups are
/// already indented YAML items.
fn yaml(
    admin: u16,
    certs: &[(&str, &Path, &Path)],
    listeners: &[String],
    groups: &[String],
) -> String {
    let mut y = format!(
        "node: {{name: lb-test, zone: zone-a}}\n\
         runtime: {{worker_threads: 2}}\n\
         admin: {{bind: \"127.0.0.1:{admin}\"}}\n"
    );
    if !certs.is_empty() {
        y += "certificates:\n";
        for (n, c, k) in certs {
            y += &format!(
                "  - {{name: {n}, cert: \"{}\", key: \"{}\"}}\n",
                c.display(),
                k.display()
            );
        }
    }
    format!(
        "{y}listeners:\n{}target_groups:\n{}",
        listeners.concat(),
        groups.concat()
    )
}

/// A listener item; `extra` are flow keys ending in `, `.
fn listener(name: &str, proto: &str, port: u16, group: &str, extra: &str) -> String {
    format!(
        "  - {{name: {name}, protocol: {proto}, bind: \"127.0.0.1:{port}\", {extra}default_action: {{forward: {group}}}}}\n"
    )
}

fn grp(name: &str, proto: &str, settings: &[&str], hc: &str, targets: &[SocketAddr]) -> String {
    let t: Vec<String> = targets.iter().map(|a| tgt(*a)).collect();
    group(name, proto, settings, hc, &t)
}

const SLOW_HTTP_HC: &str = "path: /hc, interval: 30s, timeout: 2s";
const SLOW_HC: &str = "interval: 30s, timeout: 2s";

/// Sends `msg` over a TLS connection and reads as many bytes back.
async fn tls_echo(addr: SocketAddr, msg: &[u8]) -> Vec<u8> {
    let mut s = tls_connect(addr, None, Versions::Both)
        .await
        .expect("TLS handshake with the listener");
    s.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(ms(5000), s.read_exact(&mut back))
        .await
        .expect("echo within 5 s")
        .expect("echo");
    back
}

/// An https listener with certificates [a, b]: SNI `b.test` and `x.wild.test` get
/// b's certificate; `a.test`, an unknown name and no SNI get a (the first); the
/// request goes through to the http group.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn https_listener_picks_the_certificate_by_sni() {
    bounded(30, async {
        let dir = tempfile::tempdir().unwrap();
        let a = self_signed(&["a.test"]);
        let b = self_signed(&["b.test", "*.wild.test"]);
        let (ac, ak) = a.write(dir.path(), "a");
        let (bc, bk) = b.write(dir.path(), "b");
        let be = Backend::start("sni-be").await;
        let (admin, port) = (free_port(), free_port());
        let _f = Fulcrum::start(&yaml(
            admin,
            &[("a", &ac, &ak), ("b", &bc, &bk)],
            &[listener(
                "web",
                "https",
                port,
                "web",
                "certificates: [a, b], ",
            )],
            &[grp("web", "http", &[], SLOW_HTTP_HC, &[be.addr])],
        ))
        .await;
        for (sni, want, which) in [
            (Some("b.test"), &b, "b"),
            (Some("B.TEST"), &b, "b"),
            (Some("x.wild.test"), &b, "b"),
            (Some("a.test"), &a, "a"),
            (Some("unknown.test"), &a, "a"),
            (None, &a, "a"),
        ] {
            let s = tls_connect(local(port), sni, Versions::Both)
                .await
                .unwrap_or_else(|e| panic!("handshake with SNI {sni:?}: {e}"));
            assert!(
                peer_leaf(&s) == want.der,
                "SNI {sni:?} should get certificate {which}"
            );
            assert_eq!(
                s.get_ref().1.alpn_protocol(),
                None,
                "no ALPN offered, none chosen"
            );
        }
        // A request through the TLS listener reaches the http group.
        let mut s = tls_connect(local(port), Some("a.test"), Versions::Both)
            .await
            .unwrap();
        s.write_all(b"GET /x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut resp = Vec::new();
        tokio::time::timeout(ms(5000), s.read_to_end(&mut resp))
            .await
            .expect("response within 5 s")
            .ok();
        assert!(
            text(&resp).starts_with("HTTP/1.1 200"),
            "answer: {}",
            text(&resp)
        );
        assert_eq!(be.requests(), 1);
    })
    .await;
}

/// An https listener `web` with one self-signed certificate (`a.test`) in front of
/// one backend; `extra` are listener flow keys ending in `, `. Returns the running
/// balancer, its port, and what must outlive it (the certificate files, the backend).
async fn one_https_listener(extra: &str) -> (Fulcrum, u16, tempfile::TempDir, Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (ac, ak) = self_signed(&["a.test"]).write(dir.path(), "a");
    let be = Backend::start("https-be").await;
    let (admin, port) = (free_port(), free_port());
    let f = Fulcrum::start(&yaml(
        admin,
        &[("a", &ac, &ak)],
        &[listener(
            "web",
            "https",
            port,
            "web",
            &format!("certificates: [a], {extra}"),
        )],
        &[grp("web", "http", &[], SLOW_HTTP_HC, &[be.addr])],
    ))
    .await;
    (f, port, dir, be)
}

/// ALPN on an https listener: `http/1.1` or `http/1.0` is chosen when offered (curl
/// --http1.0 offers only `http/1.0`) and the request is served; an offer of `h2`
/// alone fails the handshake. A client that connects and sends nothing is closed
/// after the listener's idle_timeout (1 s here), the only limit before a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn https_alpn_and_a_silent_client_closed_after_idle_timeout() {
    bounded(30, async {
        let (_f, port, _dir, _be) = one_https_listener("idle_timeout: 1s, ").await;
        for (offer, chosen) in [
            (&[b"h2" as &[u8], b"http/1.1"][..], b"http/1.1" as &[u8]),
            (&[b"http/1.0" as &[u8]][..], b"http/1.0"),
        ] {
            let mut s = tls_connect_alpn(local(port), offer)
                .await
                .unwrap_or_else(|e| panic!("handshake offering {offer:?}: {e}"));
            assert_eq!(s.get_ref().1.alpn_protocol(), Some(chosen));
            s.write_all(b"GET /alpn HTTP/1.0\r\nHost: a.test\r\n\r\n")
                .await
                .unwrap();
            let mut resp = Vec::new();
            tokio::time::timeout(ms(5000), s.read_to_end(&mut resp))
                .await
                .expect("response within 5 s")
                .ok();
            assert!(text(&resp).starts_with("HTTP/1.1 200"), "{}", text(&resp));
        }
        assert!(
            tls_connect_alpn(local(port), &[b"h2"]).await.is_err(),
            "an h2-only offer is refused"
        );
        // Silent before the handshake: closed after about idle_timeout.
        let mut silent = tokio::net::TcpStream::connect(local(port)).await.unwrap();
        let t0 = std::time::Instant::now();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(ms(8000), silent.read(&mut buf))
            .await
            .expect("closed within 8 s");
        let took = t0.elapsed();
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        assert!(
            took >= ms(700) && took < ms(4000),
            "closed {took:?} after connecting; idle_timeout is 1 s"
        );
    })
    .await;
}

/// A client that connected to an https listener and never started its handshake
/// does not hold up a shutdown: SIGTERM drops it as an idle connection, and the
/// process exits well before `shutdown_timeout` (30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pending_handshake_does_not_hold_up_shutdown() {
    bounded(30, async {
        let (mut f, port, _dir, _be) = one_https_listener("").await;
        let mut silent = tokio::net::TcpStream::connect(local(port)).await.unwrap();
        tokio::time::sleep(ms(300)).await;
        f.sigterm();
        let t0 = std::time::Instant::now();
        let status = f.wait_exit(Duration::from_secs(10)).await.expect("exits");
        assert_eq!(status.code(), Some(0), "{status}");
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "took {:?}",
            t0.elapsed()
        );
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(ms(2000), silent.read(&mut buf)).await;
        assert!(matches!(n, Ok(Ok(0) | Err(_))), "{n:?}");
    })
    .await;
}

/// `tls_policy: tls13` refuses a client that offers only TLS 1.2 and accepts TLS
/// 1.3; the default policy accepts TLS 1.2.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls13_policy_refuses_a_tls12_only_client() {
    bounded(30, async {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = self_signed(&["site.test"]).write(dir.path(), "site");
        let be = Backend::start("pol-be").await;
        let (admin, p13, p12) = (free_port(), free_port(), free_port());
        let _f = Fulcrum::start(&yaml(
            admin,
            &[("site", &c, &k)],
            &[
                listener(
                    "strict",
                    "https",
                    p13,
                    "web",
                    "certificates: [site], tls_policy: tls13, ",
                ),
                listener("dflt", "https", p12, "web", "certificates: [site], "),
            ],
            &[grp("web", "http", &[], SLOW_HTTP_HC, &[be.addr])],
        ))
        .await;
        let r = tls_connect(local(p13), Some("site.test"), Versions::Tls12Only).await;
        assert!(r.is_err(), "a TLS 1.2-only client was accepted by tls13");
        let s = tls_connect(local(p13), Some("site.test"), Versions::Tls13Only)
            .await
            .expect("TLS 1.3 works under tls13");
        assert_eq!(
            s.get_ref().1.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        let s = tls_connect(local(p12), Some("site.test"), Versions::Tls12Only)
            .await
            .expect("TLS 1.2 works under the default tls12 policy");
        assert_eq!(
            s.get_ref().1.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_2)
        );
    })
    .await;
}

/// A tls listener terminates TLS: to a tcp group the target receives plaintext; to
/// a tls group the load balancer re-encrypts to a TLS target.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_listener_to_tcp_and_to_tls_groups() {
    bounded(30, async {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = self_signed(&["l4.test"]).write(dir.path(), "site");
        let plain = TcpTarget::start(Kind::Echo).await;
        let secure = TcpTarget::start(Kind::TlsEcho).await;
        let (admin, p1, p2) = (free_port(), free_port(), free_port());
        let f = Fulcrum::start(&yaml(
            admin,
            &[("site", &c, &k)],
            &[
                listener("to-tcp", "tls", p1, "plain", "certificates: [site], "),
                listener("to-tls", "tls", p2, "secure", "certificates: [site], "),
            ],
            &[
                grp("plain", "tcp", &[], SLOW_HC, &[plain.addr]),
                grp("secure", "tls", &[], SLOW_HC, &[secure.addr]),
            ],
        ))
        .await;
        assert_eq!(tls_echo(local(p1), b"hello plain").await, b"hello plain");
        assert_eq!(
            text(&plain.received()),
            "hello plain",
            "the tcp target gets the plaintext"
        );
        assert_eq!(tls_echo(local(p2), b"hello tls").await, b"hello tls");
        assert_eq!(
            text(&secure.received()),
            "hello tls",
            "the tls target decrypted what the load balancer re-encrypted"
        );
        assert_eq!(secure.conns(), 1);
        assert_eq!(f.state_of("secure", secure.addr).await, "healthy");
    })
    .await;
}

/// An http listener forwarding to an `https` group (verify_tls false, the default)
/// answers 200 from a TLS target with a self-signed certificate; the https health
/// check passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_listener_to_an_https_group() {
    bounded(30, async {
        let t = TcpTarget::start(Kind::TlsHttp).await;
        let (admin, port) = (free_port(), free_port());
        let f = Fulcrum::start(&yaml(
            admin,
            &[],
            &[listener("web", "http", port, "sec", "")],
            &[grp("sec", "https", &[], SLOW_HC, &[t.addr])],
        ))
        .await;
        assert_eq!(f.state_of("sec", t.addr).await, "healthy");
        let r = get(local(port), "/hello").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "tls-ok");
        assert!(
            text(&t.received()).contains("GET /hello HTTP/1.1"),
            "{}",
            text(&t.received())
        );
    })
    .await;
}

/// `verify_tls: true` with the CA that signed the target's certificate (SAN
/// 127.0.0.1) answers 200; with another CA the handshake fails and the answer is 502,
/// even though the first group left a verified connection to the same target in
/// the pool (pooled TLS connections are never shared between groups).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_tls_with_the_right_and_a_wrong_ca_file() {
    bounded(30, async {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("fulcrum test CA");
        let other = TestCa::new("some other CA");
        let ca_path = dir.path().join("ca.pem");
        let other_path = dir.path().join("other.pem");
        std::fs::write(&ca_path, &ca.pem).unwrap();
        std::fs::write(&other_path, &other.pem).unwrap();
        let leaf = ca.sign(&["127.0.0.1", "localhost"]);
        let t = TcpTarget::start_tls(Kind::TlsHttpKeepAlive, Some(&leaf)).await;
        let (admin, good, bad) = (free_port(), free_port(), free_port());
        let good_ca = format!("ca_file: \"{}\"", ca_path.display());
        let bad_ca = format!("ca_file: \"{}\"", other_path.display());
        // One worker: the pooled connection is where the next request looks.
        let f = Fulcrum::start(
            &yaml(
                admin,
                &[],
                &[
                    listener("good", "http", good, "good", ""),
                    listener("bad", "http", bad, "bad", ""),
                ],
                &[
                    grp(
                        "good",
                        "https",
                        &["verify_tls: true", &good_ca],
                        SLOW_HC,
                        &[t.addr],
                    ),
                    grp(
                        "bad",
                        "https",
                        &["verify_tls: true", &bad_ca],
                        SLOW_HC,
                        &[t.addr],
                    ),
                ],
            )
            .replace("worker_threads: 2", "worker_threads: 1"),
        )
        .await;
        let r = get(local(good), "/v").await;
        assert_eq!(r.status, 200, "right CA: {}", r.text());
        assert_eq!(r.text(), "tls-ok");
        let r = get(local(good), "/v2").await;
        assert_eq!(r.status, 200, "right CA, pooled: {}", r.text());
        let served = t.conns();
        let r = get(local(bad), "/v").await;
        assert_eq!(r.status, 502, "wrong CA: {}", r.text());
        assert_eq!(
            t.conns(),
            served,
            "no request was sent over the bad handshake"
        );
        assert_eq!(f.state_of("good", t.addr).await, "healthy");
        assert_ne!(f.state_of("bad", t.addr).await, "healthy");
    })
    .await;
}

/// A target that completes the TCP handshake but never the TLS one: the request is
/// answered 502 (a failed handshake, not 504) once the 10 s handshake limit passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_tls_handshake_to_the_target_is_502_after_10_s() {
    bounded(60, async {
        // Never accepted: the kernel completes TCP connections into the backlog and
        // the ClientHello waits there unanswered.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let (admin, port) = (free_port(), free_port());
        let _f = Fulcrum::start(&yaml(
            admin,
            &[],
            &[listener("web", "http", port, "sec", "")],
            &[grp("sec", "https", &[], SLOW_HC, &[addr])],
        ))
        .await;
        let t0 = std::time::Instant::now();
        let r = get(local(port), "/stall").await;
        let took = t0.elapsed();
        assert_eq!(r.status, 502, "{}", r.text());
        assert!(
            took >= Duration::from_secs(8) && took < Duration::from_secs(25),
            "answered after {took:?}"
        );
        drop(silent);
    })
    .await;
}

/// https and tls health checks: a target with a working TLS server is healthy, one
/// that answers garbage instead of a handshake goes unhealthy with
/// `Target.FailedHealthChecks`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn https_and_tls_health_checks() {
    bounded(40, async {
        let https_ok = TcpTarget::start(Kind::TlsHttp).await;
        let tls_ok = TcpTarget::start(Kind::TlsEcho).await;
        let junk1 = TcpTarget::start(Kind::Garbage).await;
        let junk2 = TcpTarget::start(Kind::Garbage).await;
        let hc = "interval: 1s, timeout: 500ms, healthy_threshold: 2, unhealthy_threshold: 2";
        let (admin, web, raw) = (free_port(), free_port(), free_port());
        let f = Fulcrum::start(&yaml(
            admin,
            &[],
            &[
                listener("web", "http", web, "hs", ""),
                listener("raw", "tcp", raw, "ts", ""),
            ],
            &[
                grp(
                    "hs",
                    "https",
                    &[],
                    &format!("protocol: https, path: /, {hc}"),
                    &[https_ok.addr, junk1.addr],
                ),
                grp(
                    "ts",
                    "tls",
                    &[],
                    &format!("protocol: tls, {hc}"),
                    &[tls_ok.addr, junk2.addr],
                ),
            ],
        ))
        .await;
        for (g, addr) in [("hs", https_ok.addr), ("ts", tls_ok.addr)] {
            f.wait_state(g, addr, "healthy", ms(5000)).await;
        }
        for (g, addr) in [("hs", junk1.addr), ("ts", junk2.addr)] {
            let (t, _) = f.wait_state(g, addr, "unhealthy", ms(8000)).await;
            assert_eq!(t["reason"], "Target.FailedHealthChecks", "{g}: {t}");
        }
        assert!(
            junk1.conns() >= 2 && junk2.conns() >= 2,
            "the checks connected"
        );
        assert!(https_ok.conns() >= 1, "the https check sent a request");
        // Still healthy after several more rounds.
        tokio::time::sleep(ms(2500)).await;
        assert_eq!(f.state_of("hs", https_ok.addr).await, "healthy");
        assert_eq!(f.state_of("ts", tls_ok.addr).await, "healthy");
    })
    .await;
}

/// Certificate rotation: new PEM files in place of the old ones and a reload; a new
/// connection receives the new certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificate_rotation_by_reload() {
    bounded(30, async {
        let dir = tempfile::tempdir().unwrap();
        let old = self_signed(&["rot.test"]);
        let new = self_signed(&["rot.test"]);
        let (c, k) = old.write(dir.path(), "site");
        let be = Backend::start("rot-be").await;
        let (admin, port) = (free_port(), free_port());
        let cfg = yaml(
            admin,
            &[("site", &c, &k)],
            &[listener(
                "web",
                "https",
                port,
                "web",
                "certificates: [site], ",
            )],
            &[grp("web", "http", &[], SLOW_HTTP_HC, &[be.addr])],
        );
        let f = Fulcrum::start(&cfg).await;
        let s = tls_connect(local(port), Some("rot.test"), Versions::Both)
            .await
            .unwrap();
        assert!(peer_leaf(&s) == old.der, "the first certificate is served");
        drop(s);

        new.write(dir.path(), "site");
        f.reload_yaml(&cfg).await;
        let s = tls_connect(local(port), Some("rot.test"), Versions::Both)
            .await
            .unwrap();
        assert!(
            peer_leaf(&s) == new.der,
            "a new connection after the reload gets the new certificate"
        );
        let s = tls_connect(local(port), None, Versions::Tls12Only)
            .await
            .unwrap();
        assert!(peer_leaf(&s) == new.der, "TLS 1.2 too, and without SNI");
    })
    .await;
}
