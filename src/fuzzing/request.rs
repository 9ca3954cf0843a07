//! Request heads: parsing, desync classification, and the head forwarded to a target.
//!
//! The input is read as what a client sent on one connection: a head, its body, and
//! whatever follows (the next pipelined request), up to [`MAX_PIPELINED`] requests.

use std::net::{IpAddr, Ipv4Addr};

use super::{Pairs, connection_listed, framing_like, lossy, pairs, text};
use crate::http::chunked::ChunkedDecoder;
use crate::http::desync::{self, Act, Class};
use crate::http::head::{
    self, BodyFraming, ForwardInfo, Limits, MAX_FORWARDED_FOR, Method, RequestError, RequestHead,
    Version, XffMode,
};
use crate::snapshot::DesyncMode;

/// Most requests of one input that are parsed one after the other.
const MAX_PIPELINED: usize = 8;
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
const TRACE: (&str, &str) = (
    "X-Amzn-Trace-Id",
    "Root=1-00000000-000000000000000000000000",
);
/// Most header lines `write_upstream_request` adds: Host, Upgrade and Connection,
/// X-Forwarded-For, -Proto and -Port, two `extra` lines, and the framing header.
const ADDED: usize = 9;
/// Names the balancer never forwards as received (hop-by-hop, framing, ours).
const NOT_FORWARDED: [&str; 11] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "content-length",
    "transfer-encoding",
    "x-forwarded-proto",
    "x-forwarded-port",
];

type Parsed = Option<Result<RequestHead, RequestError>>;

/// Parses `data` as a client's byte stream; see the module docs.
pub fn request_head(data: &[u8]) {
    let strict = Limits::default();
    let relaxed = Limits {
        reject_te_with_cl: false,
        ..strict
    };
    let tiny = Limits {
        max_head: 96,
        max_line: 32,
        reject_te_with_cl: true,
    };
    parse_checked(data, &tiny);
    let mut rest = data;
    for _ in 0..MAX_PIPELINED {
        let a = parse_checked(rest, &strict);
        let b = parse_checked(rest, &relaxed);
        compare_policies(rest, &a, &b);
        let Some(Ok(h)) = b else {
            return;
        };
        check_forwarded(rest, &h);
        let Some(next) = body_end(rest, &h) else {
            return;
        };
        rest = &rest[next..];
        if rest.is_empty() {
            return;
        }
    }
}

/// Parses `buf` whole and again one byte at a time (the resumable scan must give the
/// same answer), then checks what a parsed head or an error says.
fn parse_checked(buf: &[u8], limits: &Limits) -> Parsed {
    let (got, whole, step) = super::whole_and_stepped(buf, |b, h: &mut RequestHead| {
        head::parse_request(b, limits, h)
    });
    match got {
        Ok(None) => None,
        Ok(Some(())) => {
            assert_eq!(
                format!("{whole:?}"),
                format!("{step:?}"),
                "byte-at-a-time head differs: {:?}",
                text(buf)
            );
            check_head(buf, &whole);
            Some(Ok(whole))
        }
        Err(e) => {
            assert!(matches!(e.status(), 400 | 405 | 463 | 501), "{e:?}");
            assert!(!e.reason().is_empty());
            if let Some(v) = desync::classify_error(e) {
                assert_eq!(v.reason, e.reason());
                assert_ne!(v.class, Class::Compliant);
            }
            Some(Err(e))
        }
    }
}

/// What a parsed head promises, and its desync verdict under every mode.
fn check_head(buf: &[u8], h: &RequestHead) {
    let within = |r: &std::ops::Range<usize>| r.start <= r.end && r.end <= h.head_len;
    assert!(h.head_len > 0 && h.head_len <= buf.len());
    assert!(within(&h.method) && within(&h.target) && h.host.as_ref().is_none_or(within));
    assert!(h.headers.iter().all(|(n, v)| within(n) && within(v)));
    assert!(h.headers.len() <= head::MAX_HEADERS);
    assert!(!h.method(buf).is_empty());
    assert!(h.host.is_some() || h.version == Version::Http10);
    if h.te_with_cl {
        assert_eq!(h.framing, BodyFraming::Chunked);
        assert!(!h.keep_alive);
    }
    if h.framing == BodyFraming::Chunked && h.version == Version::Http10 {
        assert!(!h.keep_alive, "chunked from HTTP/1.0 must close");
    }
    if h.expect_continue {
        assert!(h.framing != BodyFraming::None && h.version == Version::Http11);
    }
    if h.upgrade_websocket {
        assert!(h.framing == BodyFraming::None && h.method_kind == Method::Get);
    }
    assert!(h.xff_count <= MAX_FORWARDED_FOR);
    let v = desync::classify(buf, h);
    assert_eq!(v.class == Class::Compliant, v.reason.is_empty(), "{v:?}");
    let rank = |a: Act| match a {
        Act::Allow => 0,
        Act::AllowThenClose => 1,
        Act::Block => 2,
    };
    let acts = [
        DesyncMode::Monitor,
        DesyncMode::Defensive,
        DesyncMode::Strictest,
    ]
    .map(|m| rank(desync::act(m, v.class)));
    assert!(acts[0] <= acts[1] && acts[1] <= acts[2], "{v:?} {acts:?}");
}

/// Refusing Transfer-Encoding with Content-Length changes that one answer only.
fn compare_policies(buf: &[u8], strict: &Parsed, relaxed: &Parsed) {
    let show = |p: &Parsed| match p {
        None => "incomplete".to_owned(),
        Some(Ok(h)) => format!("{h:?}"),
        Some(Err(e)) => format!("{e:?}"),
    };
    match (strict, relaxed) {
        (Some(Err(RequestError::BadRequest("BothTeClPresent"))), Some(Ok(h))) => {
            assert!(h.te_with_cl && h.framing == BodyFraming::Chunked && !h.keep_alive);
        }
        // Only the checks that come after it in SPEC §3 order can still refuse.
        (Some(Err(RequestError::BadRequest("BothTeClPresent"))), Some(Err(e))) => assert!(
            matches!(
                e,
                RequestError::BadRequest("MissingHost")
                    | RequestError::NotImplemented(_)
                    | RequestError::MethodNotAllowed
                    | RequestError::TooManyForwardedFor
            ),
            "{e:?} for {:?}",
            text(buf)
        ),
        (a, b) => assert_eq!(show(a), show(b), "policies disagree on {:?}", text(buf)),
    }
}

/// Where the body of `h` ends in `buf`, if it is all there.
fn body_end(buf: &[u8], h: &RequestHead) -> Option<usize> {
    match h.framing {
        BodyFraming::None => Some(h.head_len),
        BodyFraming::ContentLength(n) => usize::try_from(n)
            .ok()
            .and_then(|n| h.head_len.checked_add(n))
            .filter(|end| *end <= buf.len()),
        BodyFraming::Chunked => {
            let mut dec = ChunkedDecoder::new();
            let mut out = Vec::new();
            match dec.feed(&buf[h.head_len..], &mut out) {
                Ok((n, true)) => Some(h.head_len + n),
                _ => None,
            }
        }
        BodyFraming::CloseDelimited => panic!("a request is never close-delimited"),
    }
}

/// The head sent to a target re-parses as the same request, with exactly the
/// client's end-to-end headers in order, ours after them, and one framing header.
fn check_forwarded(raw: &[u8], h: &RequestHead) {
    let roomy = Limits {
        max_head: 1 << 20,
        max_line: 1 << 20,
        reject_te_with_cl: true,
    };
    let close = [TRACE, ("Connection", "close")];
    for xff in [XffMode::Append, XffMode::Preserve, XffMode::Remove] {
        for extra in [&close[..1], &close[..]] {
            let fwd = ForwardInfo {
                client_ip: CLIENT,
                proto: "https",
                port: 8443,
                xff,
            };
            let mut out = Vec::new();
            head::write_upstream_request(raw, h, &fwd, extra, &mut out);
            let mut again = RequestHead::default();
            let r = head::parse_request(&out, &roomy, &mut again);
            if r == Err(RequestError::TooManyForwardedFor)
                && xff == XffMode::Append
                && h.xff_count == MAX_FORWARDED_FOR
            {
                // Our own address is the 31st: a target applying the same limit refuses.
                continue;
            }
            if r == Err(RequestError::BadRequest("TooManyHeaders"))
                && h.headers.len() + ADDED > head::MAX_HEADERS
            {
                // Likewise our lines on top of the client's, for a header count limit.
                continue;
            }
            let shown = || format!("{}\nfrom\n{}", text(&out), text(&raw[..h.head_len]));
            assert_eq!(r, Ok(Some(())), "forwarded head refused:\n{}", shown());
            assert_eq!(again.head_len, out.len(), "{}", shown());
            assert_eq!(again.method(&out), h.method(raw), "{}", shown());
            assert_eq!(again.target(&out), h.target(raw), "{}", shown());
            assert_eq!(again.version, Version::Http11);
            assert_eq!(again.framing, h.framing, "{}", shown());
            assert_eq!(
                again.host(&out).unwrap_or_default(),
                h.host(raw).unwrap_or_default(),
                "{}",
                shown()
            );
            assert!(!again.absolute_form && !again.expect_continue);
            assert!(!again.te_with_cl && !again.duplicate_content_length);
            assert!(!again.suspicious_header, "{}", shown());
            assert_eq!(again.upgrade_websocket, h.upgrade_websocket, "{}", shown());
            assert_eq!(again.keep_alive, extra.len() == 1, "{}", shown());
            let xff_want = match xff {
                XffMode::Append => h.xff_count + 1,
                XffMode::Preserve => h.xff_count,
                XffMode::Remove => 0,
            };
            assert_eq!(again.xff_count, xff_want, "{}", shown());
            let got = pairs(&out, &again.headers);
            let want = expected(raw, h, xff, extra);
            assert!(
                got == want,
                "{}\n{:?}\n!= {:?}",
                shown(),
                lossy(&got),
                lossy(&want)
            );

            // Forwarding the forwarded head again changes nothing.
            let fwd = ForwardInfo {
                xff: XffMode::Preserve,
                ..fwd
            };
            let mut out2 = Vec::new();
            head::write_upstream_request(&out, &again, &fwd, extra, &mut out2);
            let mut third = RequestHead::default();
            assert_eq!(head::parse_request(&out2, &roomy, &mut third), Ok(Some(())));
            // (The same headers; a WebSocket upgrade's are written after the client's, so
            // the order can change.)
            let (mut again2, mut got) = (pairs(&out2, &third.headers), got);
            again2.sort();
            got.sort();
            assert!(again2 == got, "{}\n{:?}", shown(), lossy(&again2));
            assert_eq!(third.target(&out2), again.target(&out));
        }
    }
}

/// The forwarded header list, from SPEC §3 and the `write_upstream_request` contract.
fn expected(raw: &[u8], h: &RequestHead, xff: XffMode, extra: &[(&str, &str)]) -> Pairs {
    let is = |n: &[u8], s: &str| n.eq_ignore_ascii_case(s.as_bytes());
    let client = pairs(raw, &h.headers);
    let listed = connection_listed(&client);
    let mut out: Pairs = Vec::new();
    for (n, v) in &client {
        let protected = is(n, "host") || is(n, "x-forwarded-for");
        let dropped = NOT_FORWARDED.iter().any(|d| is(n, d))
            || framing_like(n)
            || (!protected && listed.iter().any(|t| t.eq_ignore_ascii_case(n)))
            || (is(n, "x-forwarded-for") && xff != XffMode::Preserve)
            || (is(n, "host") && h.absolute_form)
            || extra.iter().any(|(e, _)| is(n, e));
        if !dropped {
            out.push((n.clone(), v.clone()));
        }
    }
    let mut push = |n: &str, v: &[u8]| out.push((n.as_bytes().to_vec(), v.to_vec()));
    if h.absolute_form {
        push("Host", h.host(raw).unwrap_or_default());
    } else if h.host.is_none() {
        push("Host", b"");
    }
    if h.upgrade_websocket {
        push("Upgrade", b"websocket");
        push("Connection", b"upgrade");
    }
    if xff == XffMode::Append {
        let mut v = Vec::new();
        for (n, value) in &client {
            if is(n, "x-forwarded-for") && !value.is_empty() {
                v.extend_from_slice(value);
                v.extend_from_slice(b", ");
            }
        }
        v.extend_from_slice(CLIENT.to_string().as_bytes());
        push("X-Forwarded-For", &v);
    }
    push("X-Forwarded-Proto", b"https");
    push("X-Forwarded-Port", b"8443");
    for (n, v) in extra {
        push(n, v.as_bytes());
    }
    match h.framing {
        BodyFraming::ContentLength(n) => push("Content-Length", n.to_string().as_bytes()),
        BodyFraming::Chunked => push("Transfer-Encoding", b"chunked"),
        BodyFraming::None | BodyFraming::CloseDelimited => {}
    }
    out
}
