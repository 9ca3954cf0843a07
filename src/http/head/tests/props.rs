//! Properties over arbitrary and near-valid heads.

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;

use super::*;

fn request_lines() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("GET / HTTP/1.1"),
        Just("POST /a?b HTTP/1.1"),
        Just("HEAD /x HTTP/1.0"),
        Just("GET http://h.example/p HTTP/1.1"),
        Just("OPTIONS * HTTP/1.1"),
        Just("TRACE / HTTP/1.1"),
        Just("GET /a b HTTP/1.1"),
        Just("GET / HTTP/2.0"),
        Just("get / HTTP/1.1"),
    ]
}

fn header_lines() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("Host: a"),
        Just("Host: b:8080"),
        Just("Content-Length: 5"),
        Just("Content-Length: 7"),
        Just("Content-Length: 5, 5"),
        Just("Content-Length: -1"),
        Just("Transfer-Encoding: chunked"),
        Just("Transfer-Encoding: gzip"),
        Just("Transfer-Encoding: xchunked"),
        Just("Transfer-Encoding : chunked"),
        Just("Transfer_Encoding: chunked"),
        Just("Connection: close"),
        Just("Connection: keep-alive, X-A, Host"),
        Just("Connection: Upgrade"),
        Just("Upgrade: websocket"),
        Just("Expect: 100-continue"),
        Just("X-A: 1"),
        Just("X-Forwarded-For: 1.1.1.1, 2.2.2.2"),
        Just("X-Forwarded-Proto: http"),
        Just("Keep-Alive: 5"),
        Just(" folded"),
        Just("X-Bad: a\u{0}b"),
        Just(""),
    ]
}

fn near_valid_request() -> impl Strategy<Value = Vec<u8>> {
    (
        request_lines(),
        proptest::collection::vec(header_lines(), 0..8),
        any::<bool>(),
    )
        .prop_map(|(first, headers, lf)| {
            let eol = if lf { "\n" } else { "\r\n" };
            let mut s = format!("{first}\r\n");
            for h in headers {
                s.push_str(h);
                s.push_str("\r\n");
            }
            s.push_str(eol);
            s.into_bytes()
        })
}

fn response_heads() -> impl Strategy<Value = Vec<u8>> {
    let status = prop_oneof![
        Just("HTTP/1.1 200 OK"),
        Just("HTTP/1.0 200 OK"),
        Just("HTTP/1.1 204 No Content"),
        Just("HTTP/1.1 304 Not Modified"),
        Just("HTTP/1.1 101 Switching Protocols"),
        Just("HTTP/1.1 100 Continue"),
        Just("HTTP/1.1 404"),
    ];
    let header = prop_oneof![
        Just("Content-Length: 3"),
        Just("Content-Length: 4"),
        Just("Transfer-Encoding: chunked"),
        Just("Transfer-Encoding: gzip"),
        Just("Connection: close"),
        Just("Connection: keep-alive"),
        Just("Upgrade: websocket"),
        Just("X-A: b"),
    ];
    (status, proptest::collection::vec(header, 0..6)).prop_map(|(s, hs)| {
        let mut lines = vec![s];
        lines.extend(hs);
        req(&lines)
    })
}

/// Parses `raw` fed in the pieces `cuts` describes, resuming one head.
fn parse_split(raw: &[u8], cuts: &[usize], limits: &Limits) -> String {
    let mut head = RequestHead::default();
    for &cut in cuts {
        match parse_request(&raw[..cut.min(raw.len())], limits, &mut head) {
            Ok(None) => {}
            other => return format!("{other:?} {head:?}"),
        }
    }
    let r = parse_request(raw, limits, &mut head);
    format!("{r:?} {head:?}")
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..600)) {
        let tiny = Limits { max_head: 64, max_line: 16, reject_te_with_cl: false };
        for limits in [Limits::default(), tiny] {
            let mut head = RequestHead::default();
            if let Ok(Some(())) = parse_request(&raw, &limits, &mut head) {
                prop_assert!(head.head_len <= raw.len());
                prop_assert!(head.headers.iter().all(|(n, v)| n.end <= raw.len() && v.end <= raw.len()));
            }
        }
        let mut head = ResponseHead::default();
        if let Ok(Some(())) = parse_response(&raw, false, &mut head) {
            prop_assert!(head.head_len <= raw.len() && head.reason.end <= raw.len());
        }
    }

    #[test]
    fn arbitrary_text_heads_never_panic(s in "[A-Za-z0-9 :/\r\n\t,;-]{0,200}") {
        let mut head = RequestHead::default();
        let _ = parse_request(s.as_bytes(), &Limits::default(), &mut head);
        let mut head = ResponseHead::default();
        let _ = parse_response(s.as_bytes(), true, &mut head);
    }

    #[test]
    fn split_feeding_matches_whole(raw in near_valid_request(), mut cuts in proptest::collection::vec(0usize..300, 0..6)) {
        cuts.sort_unstable();
        let limits = Limits::default();
        prop_assert_eq!(parse_split(&raw, &cuts, &limits), parse_split(&raw, &[], &limits));
    }

    /// What we send a target parses back to the same request, with no hop-by-hop left.
    #[test]
    fn upstream_head_reparses_the_same(raw in near_valid_request(), mode in 0u8..3) {
        let mut head = RequestHead::default();
        if let Ok(Some(())) = parse_request(&raw, &Limits::default(), &mut head) {
            let xff = [XffMode::Append, XffMode::Preserve, XffMode::Remove][usize::from(mode)];
            let fwd = ForwardInfo { client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST), proto: "http", port: 80, xff };
            let mut out = Vec::new();
            write_upstream_request(&raw, &head, &fwd, &[("X-Amzn-Trace-Id", "Root=1-0-0")], &mut out);
            let mut again = RequestHead::default();
            prop_assert_eq!(parse_request(&out, &Limits::default(), &mut again), Ok(Some(())), "{}", text(&out));
            prop_assert_eq!(again.head_len, out.len());
            prop_assert_eq!(again.framing, head.framing);
            prop_assert_eq!(again.method(&out), head.method(&raw));
            prop_assert_eq!(again.target(&out), head.target(&raw));
            prop_assert_eq!(again.host(&out).unwrap_or_default(), head.host(&raw).unwrap_or_default());
            prop_assert_eq!(again.upgrade_websocket, head.upgrade_websocket);
            for (n, _) in &again.headers {
                let n = &out[n.clone()];
                let hop = ["keep-alive", "proxy-connection", "te", "trailer", "expect", "transfer_encoding"];
                prop_assert!(!hop.iter().any(|h| h.as_bytes().eq_ignore_ascii_case(n)), "{}", text(&out));
            }
            let named = raw[..head.head_len].windows(8).any(|w| w == b"X-A, Hos");
            prop_assert_eq!(again.header(&out, "x-a").is_some(), !named && head.header(&raw, "x-a").is_some());
        }
    }

    /// What we send a client parses back with the framing we chose.
    #[test]
    fn client_head_reparses_the_same(raw in response_heads(), head_req: bool, close: bool) {
        let mut head = ResponseHead::default();
        if let Ok(Some(())) = parse_response(&raw, head_req, &mut head) {
            let mut out = Vec::new();
            write_client_response(&raw, &head, head.framing, close, Version::Http11, &mut out);
            let mut again = ResponseHead::default();
            prop_assert_eq!(parse_response(&out, head_req, &mut again), Ok(Some(())), "{}", text(&out));
            prop_assert_eq!((again.status, again.framing), (head.status, head.framing));
            if close {
                prop_assert!(!again.keep_alive || head.status == 101);
            }
        }
    }
}
