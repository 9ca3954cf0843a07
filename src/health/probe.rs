//! One health check over a real socket (SPEC §4): connect, optionally send a PROXY
//! v2 `LOCAL` header, then for `http` send one `GET` and read only as far as the
//! status line. The whole exchange is bounded by the check's `timeout`; every way
//! it can end is classified into an [`Outcome`] for the pure state machine.
//!
//! The connection is closed after every check, as ALB does.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::health::state::Outcome;
use crate::snapshot::{HealthCheck, HealthProtocol};

/// PROXY protocol v2 header with command `LOCAL` and no addresses: the 12-byte
/// signature, version 2 / `LOCAL` (0x20), `AF_UNSPEC` (0x00), length 0. NLB sends
/// it on health-check connections of groups that use PROXY v2.
pub const PROXY_V2_LOCAL: [u8; 16] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x20, 0x00, 0x00, 0x00,
];

/// The longest response head read before giving up (16 KiB); interim `1xx`
/// responses count towards it.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// The `User-Agent` health-check requests carry.
pub const USER_AGENT: &str = "fulcrum-health-check";

const TLS_NOT_SUPPORTED: &str = "https/tls health check without a TLS client configuration";

/// Runs one check against `addr` (the target's address with the check's port
/// applied by the caller) and returns its outcome. `host_header`: the Host to send
/// (hc.host or the target's configured address). `proxy_v2_local`: send a PROXY
/// protocol v2 LOCAL header first (16 bytes: the v2 signature, 0x20, 0x00, length 0).
///
/// - `tcp` passes once the connection is established (and the header, if any,
///   written); the connection is then closed.
/// - `http` sends `GET <hc.path>` with `Host`, `User-Agent: fulcrum-health-check`
///   and `Connection: close`, and decides on the first final status line: a
///   status `hc.matches` is a pass, any other is [`Outcome::Code`]. Interim `1xx`
///   responses (but `101`) are skipped. The body and the rest of the head are
///   not read.
/// - `https` and `tls` need the TLS client of [`probe_with_tls`]; called here,
///   without one, they fail at once (`Failed("https/tls health check without a
///   TLS client configuration")`) without connecting.
///
/// Failures: longer than `hc.timeout` (connect included) → [`Outcome::Timeout`];
/// refused → `Failed("connection refused")`; reset → `Failed("connection
/// reset")`; closed before a status line → `Failed("connection closed before
/// the status line")`; a malformed status line → `Failed("malformed response:
/// …")`; a head over 16 KiB → `Failed("response head too large")`.
pub async fn probe(
    addr: SocketAddr,
    hc: &HealthCheck,
    host_header: &str,
    proxy_v2_local: bool,
) -> Outcome {
    probe_with_tls(addr, hc, host_header, proxy_v2_local, None).await
}

/// TLS settings for `https` and `tls` checks: the group's client config and the
/// name to present.
pub type TlsClient = (
    std::sync::Arc<rustls::ClientConfig>,
    rustls::pki_types::ServerName<'static>,
);

/// [`probe`] with the TLS client that `https` and `tls` checks use: `tls` passes
/// on a completed handshake, `https` runs the `http` exchange over TLS. A
/// handshake failure is `Failed("TLS handshake failed: …")`.
pub async fn probe_with_tls(
    addr: SocketAddr,
    hc: &HealthCheck,
    host_header: &str,
    proxy_v2_local: bool,
    tls: Option<TlsClient>,
) -> Outcome {
    let check = async {
        match hc.protocol {
            HealthProtocol::Tcp => match connect(addr, proxy_v2_local).await {
                Ok(_stream) => Outcome::Pass,
                Err(failed) => failed,
            },
            HealthProtocol::Http => match connect(addr, proxy_v2_local).await {
                Ok(stream) => http_check(stream, hc, host_header).await,
                Err(failed) => failed,
            },
            HealthProtocol::Https | HealthProtocol::Tls => {
                let Some((cfg, name)) = tls else {
                    return Outcome::Failed(TLS_NOT_SUPPORTED.to_owned());
                };
                let stream = match connect(addr, proxy_v2_local).await {
                    Ok(s) => s,
                    Err(failed) => return failed,
                };
                let tls_stream = match tokio_rustls::TlsConnector::from(cfg)
                    .connect(name, stream)
                    .await
                {
                    Ok(t) => t,
                    Err(e) => return Outcome::Failed(format!("TLS handshake failed: {e}")),
                };
                if hc.protocol == HealthProtocol::Tls {
                    Outcome::Pass
                } else {
                    http_check(tls_stream, hc, host_header).await
                }
            }
        }
    };
    tokio::time::timeout(hc.timeout, check)
        .await
        .unwrap_or(Outcome::Timeout)
}

/// Connects and writes the PROXY v2 `LOCAL` header when asked. The header goes
/// first on the wire, before any TLS handshake.
async fn connect(addr: SocketAddr, proxy_v2_local: bool) -> Result<TcpStream, Outcome> {
    let mut stream = TcpStream::connect(addr).await.map_err(io_failure)?;
    if proxy_v2_local {
        stream
            .write_all(&PROXY_V2_LOCAL)
            .await
            .map_err(io_failure)?;
    }
    Ok(stream)
}

/// The HTTP exchange over any byte stream (plain TCP now, TLS later).
async fn http_check<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    hc: &HealthCheck,
    host: &str,
) -> Outcome {
    let Some(request) = request(&hc.path, host) else {
        return Outcome::Failed("invalid health-check path or host".to_owned());
    };
    if let Err(e) = stream.write_all(&request).await {
        return io_failure(e);
    }
    if let Err(e) = stream.flush().await {
        return io_failure(e);
    }
    let mut buf = vec![0u8; MAX_RESPONSE_HEAD];
    let mut filled = 0;
    let mut start = 0;
    loop {
        match parse_head(&buf[start..filled]) {
            Head::Final(code) if hc.matches(code) => return Outcome::Pass,
            Head::Final(code) => return Outcome::Code(code),
            Head::Interim(len) => {
                start += len;
                continue;
            }
            Head::Malformed(e) => return Outcome::Failed(format!("malformed response: {e}")),
            Head::Partial => {}
        }
        if filled == buf.len() {
            return Outcome::Failed("response head too large".to_owned());
        }
        match stream.read(&mut buf[filled..]).await {
            Ok(0) => {
                return Outcome::Failed("connection closed before the status line".to_owned());
            }
            Ok(n) => filled += n,
            Err(e) => return io_failure(e),
        }
    }
}

/// The request bytes; `None` when the path or host would break the request line
/// or a header (config validation should already have refused them). An empty
/// path means `/`.
fn request(path: &str, host: &str) -> Option<Vec<u8>> {
    let path = if path.is_empty() { "/" } else { path };
    let bad = |s: &str| s.is_empty() || s.bytes().any(|b| b.is_ascii_control() || b == b' ');
    if bad(path) || bad(host) {
        return None;
    }
    Some(
        format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\nConnection: close\r\n\r\n"
        )
        .into_bytes(),
    )
}

/// What the bytes received so far (from the start of the current head) say.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// The status line is not complete yet.
    Partial,
    /// A complete interim (`1xx` but `101`) head of this many bytes; skip it.
    Interim(usize),
    /// A complete final status line with this status.
    Final(u16),
    Malformed(httparse::Error),
}

/// Decides on the status line alone: once it is complete and final, what follows
/// (headers, body) is not looked at, so the outcome never depends on how the
/// bytes were split across reads. Interim heads must be complete to be skipped.
fn parse_head(buf: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let parsed = response.parse(buf);
    // httparse sets `reason` only once the whole status line (CRLF included) is in.
    if let (Some(code), Some(_)) = (response.code, response.reason) {
        if !is_interim(code) {
            return Head::Final(code);
        }
    }
    match parsed {
        // Complete with a final status was handled above.
        Ok(httparse::Status::Complete(len)) => Head::Interim(len),
        Ok(httparse::Status::Partial) => Head::Partial,
        Err(e) => Head::Malformed(e),
    }
}

fn is_interim(code: u16) -> bool {
    (100..200).contains(&code) && code != 101
}

/// A socket error as an outcome with a short reason.
fn io_failure(e: io::Error) -> Outcome {
    let why = match e.kind() {
        io::ErrorKind::TimedOut => return Outcome::Timeout,
        io::ErrorKind::ConnectionRefused => "connection refused",
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => "connection reset",
        io::ErrorKind::BrokenPipe | io::ErrorKind::UnexpectedEof => "connection closed",
        io::ErrorKind::HostUnreachable => "host unreachable",
        io::ErrorKind::NetworkUnreachable => "network unreachable",
        io::ErrorKind::AddrNotAvailable => "address not available",
        _ => return Outcome::Failed(e.to_string()),
    };
    Outcome::Failed(why.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;

    fn check(protocol: HealthProtocol, matcher: &[(u16, u16)]) -> HealthCheck {
        HealthCheck {
            protocol,
            port: None,
            path: "/".to_owned(),
            host: None,
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            healthy_threshold: 5,
            unhealthy_threshold: 2,
            matcher: matcher.to_vec(),
        }
    }

    fn http() -> HealthCheck {
        check(HealthProtocol::Http, &[(200, 200)])
    }

    fn failed(why: &str) -> Outcome {
        Outcome::Failed(why.to_owned())
    }

    async fn listen() -> (TcpListener, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        (l, addr)
    }

    /// An address nothing listens on.
    fn closed_port() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }

    /// Reads one request head (after a PROXY header, if any).
    async fn read_request(s: &mut TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        let mut chunk = [0u8; 1024];
        while !(got.len() > PROXY_V2_LOCAL.len() && got.ends_with(b"\r\n\r\n")) {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
        got
    }

    /// Serves one connection: reads the request, writes each part of `response`
    /// (with a pause between parts), closes; yields the bytes it received.
    fn serve(l: TcpListener, response: Vec<&'static [u8]>) -> JoinHandle<Vec<u8>> {
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let got = read_request(&mut s).await;
            for (i, part) in response.iter().enumerate() {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let _ = s.write_all(part).await;
            }
            got
        })
    }

    async fn answer(response: &'static [u8], hc: &HealthCheck) -> Outcome {
        let (l, addr) = listen().await;
        let server = serve(l, vec![response]);
        let outcome = probe(addr, hc, "target", false).await;
        server.await.unwrap();
        outcome
    }

    #[tokio::test]
    async fn status_200_passes() {
        let out = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", &http()).await;
        assert_eq!(out, Outcome::Pass);
    }

    #[tokio::test]
    async fn status_500_is_a_code_mismatch() {
        let out = answer(b"HTTP/1.1 500 Internal Server Error\r\n\r\n", &http()).await;
        assert_eq!(out, Outcome::Code(500));
    }

    #[tokio::test]
    async fn range_matcher_passes_204() {
        let hc = check(HealthProtocol::Http, &[(200, 299)]);
        assert_eq!(
            answer(b"HTTP/1.1 204 No Content\r\n\r\n", &hc).await,
            Outcome::Pass
        );
    }

    #[tokio::test]
    async fn status_line_split_across_writes_is_read_whole() {
        let (l, addr) = listen().await;
        let server = serve(l, vec![b"HTTP/1.1 2", b"04 No", b" Content\r\n\r\n"]);
        let hc = check(HealthProtocol::Http, &[(204, 204)]);
        assert_eq!(probe(addr, &hc, "t", false).await, Outcome::Pass);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn interim_responses_are_skipped() {
        let out = answer(
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 503 Busy\r\n\r\n",
            &http(),
        )
        .await;
        assert_eq!(out, Outcome::Code(503));
    }

    #[tokio::test]
    async fn refused_connection_fails() {
        let out = probe(closed_port(), &http(), "t", false).await;
        assert_eq!(out, failed("connection refused"));
    }

    #[tokio::test]
    async fn silent_target_times_out_after_the_timeout() {
        let (l, addr) = listen().await;
        let server = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(s);
        });
        let mut hc = http();
        hc.timeout = Duration::from_millis(300);
        let started = Instant::now();
        let out = probe(addr, &hc, "t", false).await;
        let took = started.elapsed();
        server.abort();
        assert_eq!(out, Outcome::Timeout);
        assert!(took >= Duration::from_millis(290), "too early: {took:?}");
        assert!(took < Duration::from_secs(3), "too late: {took:?}");
    }

    #[tokio::test]
    async fn garbage_answer_fails() {
        let out = answer(b"garbage\r\n\r\n", &http()).await;
        assert_eq!(out, failed("malformed response: invalid HTTP version"));
        let out = answer(b"HTTP/1.1 2x0 OK\r\n\r\n", &http()).await;
        assert_eq!(out, failed("malformed response: invalid response status"));
    }

    #[tokio::test]
    async fn close_before_the_status_line_fails() {
        let out = answer(b"HTTP/1.1 200", &http()).await;
        assert_eq!(out, failed("connection closed before the status line"));
        let out = answer(b"", &http()).await;
        assert_eq!(out, failed("connection closed before the status line"));
    }

    #[tokio::test]
    async fn reset_fails() {
        let (l, addr) = listen().await;
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            read_request(&mut s).await;
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
        });
        let out = probe(addr, &http(), "t", false).await;
        server.await.unwrap();
        assert_eq!(out, failed("connection reset"));
    }

    #[tokio::test]
    async fn oversized_head_fails() {
        static LONG: [u8; 20_000] = [b'a'; 20_000];
        let (l, addr) = listen().await;
        let server = serve(l, vec![b"HTTP/1.1 200 ", &LONG]);
        let out = probe(addr, &http(), "t", false).await;
        server.await.unwrap();
        assert_eq!(out, failed("response head too large"));
    }

    #[tokio::test]
    async fn tcp_check_passes_on_connect_and_fails_on_a_closed_port() {
        let (_l, addr) = listen().await;
        let hc = check(HealthProtocol::Tcp, &[(200, 200)]);
        assert_eq!(probe(addr, &hc, "t", false).await, Outcome::Pass);
        assert_eq!(
            probe(closed_port(), &hc, "t", false).await,
            failed("connection refused")
        );
    }

    #[tokio::test]
    async fn tls_checks_need_a_tls_client() {
        for protocol in [HealthProtocol::Https, HealthProtocol::Tls] {
            let hc = check(protocol, &[(200, 200)]);
            assert_eq!(
                probe(closed_port(), &hc, "t", false).await,
                failed(TLS_NOT_SUPPORTED)
            );
        }
    }

    /// A TLS server on loopback with a fresh self-signed certificate that answers
    /// `response` to one request per connection.
    async fn tls_server(response: &'static [u8]) -> SocketAddr {
        crate::install_crypto_provider();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["target.test".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let chain = vec![cert.der().clone()];
        let der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let cfg = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, der)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
        let (l, addr) = listen().await;
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut t) = acceptor.accept(s).await {
                        let mut buf = [0u8; 1024];
                        let _ = t.read(&mut buf).await;
                        let _ = t.write_all(response).await;
                        let _ = t.shutdown().await;
                    }
                });
            }
        });
        addr
    }

    fn insecure_client() -> TlsClient {
        let cfg = crate::tls::client::client_config(false, None).unwrap();
        (
            cfg,
            rustls::pki_types::ServerName::try_from("target.test").unwrap(),
        )
    }

    #[tokio::test]
    async fn https_and_tls_checks_run_over_tls() {
        let addr = tls_server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        let https = check(HealthProtocol::Https, &[(200, 200)]);
        assert_eq!(
            probe_with_tls(addr, &https, "t", false, Some(insecure_client())).await,
            Outcome::Pass
        );
        let tls = check(HealthProtocol::Tls, &[(200, 200)]);
        assert_eq!(
            probe_with_tls(addr, &tls, "t", false, Some(insecure_client())).await,
            Outcome::Pass
        );
        let bad = tls_server(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n").await;
        assert_eq!(
            probe_with_tls(bad, &https, "t", false, Some(insecure_client())).await,
            Outcome::Code(503)
        );
        // a plain-text server fails the handshake
        let (plain, paddr) = listen().await;
        tokio::spawn(async move {
            if let Ok((mut s, _)) = plain.accept().await {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await;
            }
        });
        match probe_with_tls(paddr, &tls, "t", false, Some(insecure_client())).await {
            Outcome::Failed(m) => assert!(m.starts_with("TLS handshake failed"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn sends_the_configured_path_and_host() {
        let (l, addr) = listen().await;
        let server = serve(l, vec![b"HTTP/1.1 200 OK\r\n\r\n"]);
        let mut hc = http();
        hc.path = "/healthz?deep=1".to_owned();
        assert_eq!(
            probe(addr, &hc, "api.example.com", false).await,
            Outcome::Pass
        );
        let got = server.await.unwrap();
        assert_eq!(
            String::from_utf8(got).unwrap(),
            "GET /healthz?deep=1 HTTP/1.1\r\nHost: api.example.com\r\n\
             User-Agent: fulcrum-health-check\r\nConnection: close\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn proxy_v2_local_header_comes_first() {
        let (l, addr) = listen().await;
        let server = serve(l, vec![b"HTTP/1.1 200 OK\r\n\r\n"]);
        assert_eq!(probe(addr, &http(), "t", true).await, Outcome::Pass);
        let got = server.await.unwrap();
        assert_eq!(got[..16], PROXY_V2_LOCAL);
        assert!(got[16..].starts_with(b"GET / HTTP/1.1\r\nHost: t\r\n"));
    }

    #[tokio::test]
    async fn tcp_check_sends_only_the_proxy_header() {
        let (l, addr) = listen().await;
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            got
        });
        let hc = check(HealthProtocol::Tcp, &[(200, 200)]);
        assert_eq!(probe(addr, &hc, "t", true).await, Outcome::Pass);
        assert_eq!(server.await.unwrap(), PROXY_V2_LOCAL);
    }

    #[test]
    fn proxy_header_is_the_v2_signature_with_local_and_no_addresses() {
        assert_eq!(&PROXY_V2_LOCAL[..12], b"\r\n\r\n\0\r\nQUIT\n");
        assert_eq!(PROXY_V2_LOCAL[12], 0x20);
        assert_eq!(PROXY_V2_LOCAL[13], 0x00);
        assert_eq!(
            u16::from_be_bytes([PROXY_V2_LOCAL[14], PROXY_V2_LOCAL[15]]),
            0
        );
    }

    #[test]
    fn request_refuses_what_would_break_the_head() {
        assert_eq!(
            request("", "h").unwrap(),
            b"GET / HTTP/1.1\r\nHost: h\r\nUser-Agent: fulcrum-health-check\r\nConnection: close\r\n\r\n"
        );
        assert!(request("/a\r\nX: y", "h").is_none());
        assert!(request("/a b", "h").is_none());
        assert!(request("/", "h\r\n").is_none());
        assert!(request("/", "").is_none());
    }

    #[test]
    fn parse_head_decides_on_the_status_line_alone() {
        assert_eq!(parse_head(b""), Head::Partial);
        assert_eq!(parse_head(b"HTTP/1.1 200"), Head::Partial);
        assert_eq!(parse_head(b"HTTP/1.1 200 OK"), Head::Partial);
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\n"), Head::Final(200));
        assert_eq!(parse_head(b"HTTP/1.0 404\r\n"), Head::Final(404));
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nBad Header\r\n"),
            Head::Final(200)
        );
        assert_eq!(parse_head(b"HTTP/1.1 100 Continue\r\n"), Head::Partial);
        assert_eq!(
            parse_head(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"),
            Head::Interim(25)
        );
        assert_eq!(parse_head(b"HTTP/1.1 101 Switching\r\n"), Head::Final(101));
        assert_eq!(
            parse_head(b"HTTP/2 200\r\n"),
            Head::Malformed(httparse::Error::Version)
        );
    }

    #[test]
    fn parse_head_does_not_depend_on_how_bytes_are_split() {
        let full: &[u8] =
            b"HTTP/1.1 103 Hints\r\nLink: <x>\r\n\r\nHTTP/1.1 500 Oops\r\nA: b\r\n\r\n";
        let mut start = 0;
        let mut decided = None;
        for end in 0..=full.len() {
            match parse_head(&full[start..end]) {
                Head::Partial => {}
                Head::Interim(n) => start += n,
                other => {
                    decided = Some((other, end));
                    break;
                }
            }
        }
        let first_line_end = full.len() - b"A: b\r\n\r\n".len();
        assert_eq!(decided, Some((Head::Final(500), first_line_end)));
    }

    #[test]
    fn socket_errors_map_to_short_reasons() {
        use io::ErrorKind::*;
        let reason = |k| io_failure(io::Error::from(k));
        assert_eq!(reason(ConnectionRefused), failed("connection refused"));
        assert_eq!(reason(ConnectionReset), failed("connection reset"));
        assert_eq!(reason(BrokenPipe), failed("connection closed"));
        assert_eq!(reason(TimedOut), Outcome::Timeout);
    }
}
