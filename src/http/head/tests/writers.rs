use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));

fn fwd(xff: XffMode) -> ForwardInfo<'static> {
    ForwardInfo {
        client_ip: CLIENT,
        proto: "https",
        port: 443,
        xff,
    }
}

fn upstream(lines: &[&str], f: &ForwardInfo<'_>, extra: &[(&str, &str)]) -> String {
    upstream_with(lines, &Limits::default(), f, extra)
}

fn upstream_with(
    lines: &[&str],
    limits: &Limits,
    f: &ForwardInfo<'_>,
    extra: &[(&str, &str)],
) -> String {
    let raw = req(lines);
    let head = parse_with(&raw, limits).unwrap();
    let mut out = b"stale".to_vec();
    out.clear();
    write_upstream_request(&raw, &head, f, extra, &mut out);
    text(&out)
}

#[test]
fn hop_by_hop_headers_are_removed() {
    let got = upstream(
        &[
            "POST /p?q HTTP/1.1",
            "host: a.example",
            "Connection: keep-alive, X-Secret, host, x-forwarded-for",
            "X-Secret: s",
            "Keep-Alive: timeout=5",
            "Proxy-Connection: keep-alive",
            "TE: trailers",
            "Trailer: X-Sum",
            "Upgrade: h2c",
            "Expect: 100-continue",
            "X-Forwarded-For: 10.0.0.1",
            "X-Forwarded-Proto: http",
            "x-forwarded-port: 80",
            "Content-Length: 5",
            "Content-Length: 5",
            "Transfer_Encoding: chunked",
            "Accept: */*",
        ],
        &fwd(XffMode::Append),
        &[],
    );
    assert_eq!(
        got,
        "POST /p?q HTTP/1.1\r\nhost: a.example\r\nAccept: */*\r\n\
         X-Forwarded-For: 10.0.0.1, 192.0.2.7\r\nX-Forwarded-Proto: https\r\n\
         X-Forwarded-Port: 443\r\nContent-Length: 5\r\n\r\n"
    );
}

#[test]
fn xff_modes() {
    let lines = [
        "GET / HTTP/1.1",
        "Host: a",
        "X-Forwarded-For: 1.1.1.1, 2.2.2.2",
        "X-A: b",
        "x-forwarded-for: 3.3.3.3",
    ];
    let tail = "X-Forwarded-Proto: https\r\nX-Forwarded-Port: 443\r\n\r\n";
    assert_eq!(
        upstream(&lines, &fwd(XffMode::Append), &[]),
        format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\nX-Forwarded-For: 1.1.1.1, 2.2.2.2, 3.3.3.3, 192.0.2.7\r\n{tail}"
        )
    );
    assert_eq!(
        upstream(&lines, &fwd(XffMode::Preserve), &[]),
        format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1, 2.2.2.2\r\nX-A: b\r\nx-forwarded-for: 3.3.3.3\r\n{tail}"
        )
    );
    assert_eq!(
        upstream(&lines, &fwd(XffMode::Remove), &[]),
        format!("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n{tail}")
    );
    let none = ["GET / HTTP/1.1", "Host: a"];
    assert!(
        upstream(&none, &fwd(XffMode::Append), &[]).contains("\r\nX-Forwarded-For: 192.0.2.7\r\n")
    );
    assert!(!upstream(&none, &fwd(XffMode::Preserve), &[]).contains("X-Forwarded-For"));
    let empty = ["GET / HTTP/1.1", "Host: a", "X-Forwarded-For:"];
    assert!(
        upstream(&empty, &fwd(XffMode::Append), &[]).contains("\r\nX-Forwarded-For: 192.0.2.7\r\n")
    );
}

#[test]
fn client_ip_formats() {
    let v6 = ForwardInfo {
        client_ip: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        ..fwd(XffMode::Append)
    };
    assert!(
        upstream(&["GET / HTTP/1.1", "Host: a"], &v6, &[])
            .contains("X-Forwarded-For: 2001:db8::1\r\n")
    );
    let mapped = ForwardInfo {
        client_ip: IpAddr::V6(Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped()),
        ..fwd(XffMode::Append)
    };
    assert!(
        upstream(&["GET / HTTP/1.1", "Host: a"], &mapped, &[])
            .contains("X-Forwarded-For: 10.1.2.3\r\n")
    );
}

#[test]
fn proto_port_extra_and_framing() {
    let http = ForwardInfo {
        proto: "http",
        port: 8080,
        ..fwd(XffMode::Remove)
    };
    let got = upstream(
        &[
            "POST / HTTP/1.1",
            "Host: a",
            "X-Amzn-Trace-Id: Root=old",
            "Transfer-Encoding: chunked",
            "X-B: c",
        ],
        &http,
        &[("X-Amzn-Trace-Id", "Self=1-2-3;Root=old")],
    );
    assert_eq!(
        got,
        "POST / HTTP/1.1\r\nHost: a\r\nX-B: c\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Port: 8080\r\n\
         X-Amzn-Trace-Id: Self=1-2-3;Root=old\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
}

#[test]
fn te_with_cl_relaxed_forwards_chunked_only() {
    let relaxed = Limits {
        reject_te_with_cl: false,
        ..Limits::default()
    };
    let got = upstream_with(
        &[
            "POST / HTTP/1.1",
            "Host: a",
            "Content-Length: 6",
            "Transfer-Encoding: chunked",
        ],
        &relaxed,
        &fwd(XffMode::Remove),
        &[],
    );
    assert!(
        got.ends_with("X-Forwarded-Port: 443\r\nTransfer-Encoding: chunked\r\n\r\n"),
        "{got}"
    );
    assert!(!got.contains("Content-Length"));
}

#[test]
fn host_is_supplied_when_needed() {
    let got = upstream(
        &["GET http://B.example:81/x?y HTTP/1.1", "Host: other"],
        &fwd(XffMode::Remove),
        &[],
    );
    assert!(
        got.starts_with("GET /x?y HTTP/1.1\r\nHost: B.example:81\r\nX-Forwarded-Proto"),
        "{got}"
    );
    let got = upstream(
        &["GET / HTTP/1.0", "Connection: keep-alive"],
        &fwd(XffMode::Remove),
        &[],
    );
    assert!(
        got.starts_with("GET / HTTP/1.1\r\nHost:\r\nX-Forwarded-Proto"),
        "{got}"
    );
    let got = upstream(
        &["GET / HTTP/1.0"],
        &fwd(XffMode::Remove),
        &[("Host", "x.example")],
    );
    assert!(
        got.contains("\r\nHost: x.example\r\n") && !got.contains("Host:\r\n"),
        "{got}"
    );
}

#[test]
fn websocket_upgrade_is_forwarded_canonically() {
    let got = upstream(
        &[
            "GET /chat HTTP/1.1",
            "Host: a",
            "Upgrade: WebSocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: k",
            "Sec-WebSocket-Version: 13",
        ],
        &fwd(XffMode::Remove),
        &[],
    );
    assert_eq!(
        got,
        "GET /chat HTTP/1.1\r\nHost: a\r\nSec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\
         Upgrade: websocket\r\nConnection: upgrade\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Port: 443\r\n\r\n"
    );
    let h2c = upstream(
        &[
            "GET / HTTP/1.1",
            "Host: a",
            "Upgrade: h2c",
            "Connection: Upgrade, HTTP2-Settings",
            "HTTP2-Settings: x",
        ],
        &fwd(XffMode::Remove),
        &[],
    );
    assert_eq!(
        h2c,
        "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Port: 443\r\n\r\n"
    );
}

fn client(raw: &[u8], head_req: bool, framing: BodyFraming, close: bool, v: Version) -> String {
    let head = resp(raw, head_req).unwrap();
    let mut out = Vec::new();
    write_client_response(raw, &head, framing, close, v, &mut out);
    text(&out)
}

#[test]
fn client_response_rewrites_framing_and_connection() {
    let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive, X-Internal\r\nX-Internal: 1\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\nContent-Length: 9\r\nSet-Cookie: a=1\r\n\r\n";
    assert_eq!(
        client(raw, false, BodyFraming::Chunked, true, Version::Http11),
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(
        client(
            raw,
            false,
            BodyFraming::CloseDelimited,
            false,
            Version::Http10
        ),
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\nConnection: keep-alive\r\n\r\n"
    );
    let cl = b"HTTP/1.0 200 Fine\r\nContent-Length: 3\r\n\r\n";
    assert_eq!(
        client(
            cl,
            false,
            BodyFraming::ContentLength(3),
            false,
            Version::Http11
        ),
        "HTTP/1.1 200 Fine\r\nContent-Length: 3\r\n\r\n"
    );
}

#[test]
fn bodiless_responses_keep_their_content_length() {
    let head_resp = b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nETag: x\r\n\r\n";
    assert_eq!(
        client(head_resp, true, BodyFraming::None, false, Version::Http11),
        "HTTP/1.1 200 OK\r\nETag: x\r\nContent-Length: 1234\r\n\r\n"
    );
    let not_modified = b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n";
    assert_eq!(
        client(
            not_modified,
            false,
            BodyFraming::None,
            false,
            Version::Http11
        ),
        "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"
    );
    let no_content = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(
        client(no_content, false, BodyFraming::None, false, Version::Http11),
        "HTTP/1.1 204 No Content\r\n\r\n"
    );
}

#[test]
fn status_line_and_upgrade() {
    assert_eq!(
        client(
            b"HTTP/1.1 503\r\nContent-Length: 0\r\n\r\n",
            false,
            BodyFraming::ContentLength(0),
            true,
            Version::Http11
        ),
        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(
        client(
            b"HTTP/1.1 299 \r\n\r\n",
            false,
            BodyFraming::CloseDelimited,
            true,
            Version::Http11
        ),
        "HTTP/1.1 299 \r\nConnection: close\r\n\r\n"
    );
    let ws = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n";
    assert_eq!(
        client(ws, false, BodyFraming::None, false, Version::Http11),
        "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
    );
}

#[test]
fn error_responses() {
    let mut out = Vec::new();
    write_error_response(502, true, &mut out);
    let body = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n";
    assert_eq!(
        text(&out),
        format!(
            "HTTP/1.1 502 Bad Gateway\r\nServer: fulcrum\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    );
    for status in [400, 405, 408, 460, 463, 501, 503, 504] {
        out.clear();
        write_error_response(status, false, &mut out);
        let head = resp(&out, false).unwrap();
        assert_eq!(head.status, status);
        assert!(head.keep_alive);
        assert_eq!(
            head.framing,
            BodyFraming::ContentLength((out.len() - head.head_len) as u64)
        );
        assert!(!canonical_reason(status).is_empty());
    }
    out.clear();
    write_error_response_no_body(404, false, &mut out);
    let head = resp(&out, true).unwrap();
    assert_eq!(
        (head.head_len, head.content_length.is_some()),
        (out.len(), true)
    );
    out.clear();
    write_error_response(7, false, &mut out);
    assert!(out.starts_with(b"HTTP/1.1 500 Internal Server Error\r\n"));
}

#[test]
fn client_response_keeps_a_transfer_coding_besides_chunked() {
    let gz =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Type: text/plain\r\n\r\n";
    assert!(resp(gz, false).unwrap().transfer_coded());
    assert_eq!(
        client(gz, false, BodyFraming::Chunked, false, Version::Http11),
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
    );
    // Split over two headers: both go on, in order.
    let split = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(
        client(split, false, BodyFraming::Chunked, false, Version::Http11),
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    // Not chunked last: the body runs to the close, the coding is still named.
    let to_close = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n";
    assert_eq!(
        client(
            to_close,
            false,
            BodyFraming::CloseDelimited,
            true,
            Version::Http11
        ),
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\n"
    );
    // `identity` is no coding of the bytes, and a HEAD answer has no body.
    let identity = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity, chunked\r\n\r\n";
    assert!(!resp(identity, false).unwrap().transfer_coded());
    assert_eq!(
        client(
            identity,
            false,
            BodyFraming::Chunked,
            false,
            Version::Http11
        ),
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    assert!(!resp(gz, true).unwrap().transfer_coded());
}
