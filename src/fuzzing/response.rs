//! Response heads from targets: parsing, and the head the balancer writes to clients.
//!
//! The input is read as what a target sent on one connection: responses one after
//! the other (each body delimited as its head says), up to [`MAX_RESPONSES`].

use super::{Pairs, connection_listed, framing_like, lossy, pairs, text};
use crate::http::chunked::ChunkedDecoder;
use crate::http::head::{
    self, BodyFraming, MAX_HEADERS, ResponseError, ResponseHead, Version, canonical_reason,
};

/// Most responses of one input that are parsed one after the other.
const MAX_RESPONSES: usize = 4;
/// Most header lines `write_client_response` adds (framing, Upgrade and Connection).
const ADDED: usize = 3;
/// Names never passed on to a client as received (hop-by-hop and framing).
const NOT_FORWARDED: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "content-length",
    "transfer-encoding",
];

/// Parses `data` as a target's byte stream; see the module docs.
pub fn response_head(data: &[u8]) {
    let mut rest = data;
    for _ in 0..MAX_RESPONSES {
        // The same bytes as the answer to a HEAD request: no body, whatever it says.
        if let Some(Ok(h)) = parse_checked(rest, true) {
            check_client(rest, &h, true);
        }
        let Some(Ok(h)) = parse_checked(rest, false) else {
            return;
        };
        check_client(rest, &h, false);
        let Some(next) = body_end(rest, &h) else {
            return;
        };
        rest = &rest[next..];
        if rest.is_empty() {
            return;
        }
    }
}

/// Parses `buf` whole and one byte at a time (same answer), then checks the head.
fn parse_checked(buf: &[u8], head_req: bool) -> Option<Result<ResponseHead, ResponseError>> {
    let (got, whole, step) = super::whole_and_stepped(buf, |b, h: &mut ResponseHead| {
        head::parse_response(b, head_req, h)
    });
    match got {
        Ok(None) => None,
        Ok(Some(())) => {
            assert_eq!(format!("{whole:?}"), format!("{step:?}"), "{:?}", text(buf));
            check_head(buf, &whole, head_req);
            Some(Ok(whole))
        }
        Err(e) => {
            assert!(!e.reason().is_empty());
            Some(Err(e))
        }
    }
}

fn check_head(buf: &[u8], h: &ResponseHead, head_req: bool) {
    let within = |r: &std::ops::Range<usize>| r.start <= r.end && r.end <= h.head_len;
    assert!(h.head_len > 0 && h.head_len <= buf.len() && h.head_len <= head::MAX_RESPONSE_HEAD);
    assert!(within(&h.reason) && h.headers.iter().all(|(n, v)| within(n) && within(v)));
    assert!(h.headers.len() <= MAX_HEADERS);
    assert!((100..=599).contains(&h.status));
    let bodiless = h.status < 200 || h.status == 204 || h.status == 304 || head_req;
    if bodiless {
        assert_eq!(h.framing, BodyFraming::None);
    } else {
        assert_ne!(h.framing, BodyFraming::None);
    }
    if let BodyFraming::ContentLength(n) = h.framing {
        assert_eq!(h.content_length, Some(n));
    }
    if h.framing == BodyFraming::CloseDelimited || h.status == 101 {
        assert!(!h.keep_alive);
    }
    if h.upgrade_websocket {
        assert_eq!(h.status, 101);
    }
}

/// Where the body of `h` ends in `buf`, if it is all there (and delimited).
fn body_end(buf: &[u8], h: &ResponseHead) -> Option<usize> {
    match h.framing {
        BodyFraming::None => Some(h.head_len),
        BodyFraming::ContentLength(n) => usize::try_from(n)
            .ok()
            .and_then(|n| h.head_len.checked_add(n))
            .filter(|end| *end <= buf.len()),
        BodyFraming::Chunked => {
            let mut out = Vec::new();
            match ChunkedDecoder::new().feed(&buf[h.head_len..], &mut out) {
                Ok((n, true)) => Some(h.head_len + n),
                _ => None,
            }
        }
        BodyFraming::CloseDelimited => None,
    }
}

/// The head written to a client re-parses with the status, reason, framing and
/// end-to-end headers of the target's, in order, and the connection headers we chose.
fn check_client(raw: &[u8], h: &ResponseHead, head_req: bool) {
    for version in [Version::Http11, Version::Http10] {
        for close in [false, true] {
            // As the connection loop does: chunked to HTTP/1.0 goes out unframed.
            let framing_out = if version == Version::Http10 && h.framing == BodyFraming::Chunked {
                BodyFraming::CloseDelimited
            } else {
                h.framing
            };
            let close = close || framing_out == BodyFraming::CloseDelimited;
            let mut out = Vec::new();
            head::write_client_response(raw, h, framing_out, close, version, &mut out);
            let shown = || format!("{}\nfrom\n{}", text(&out), text(&raw[..h.head_len]));
            let mut again = ResponseHead::default();
            let r = head::parse_response(&out, head_req, &mut again);
            if r == Err(ResponseError::Malformed("TooManyHeaders"))
                && h.headers.len() + ADDED > MAX_HEADERS
            {
                // Our framing and connection lines come on top of the target's: a
                // client that counts header lines exactly as we do may refuse.
                continue;
            }
            assert_eq!(r, Ok(Some(())), "client head refused:\n{}", shown());
            assert_eq!(again.head_len, out.len(), "{}", shown());
            assert_eq!(again.status, h.status);
            let reason = &raw[h.reason.clone()];
            let want_reason = if reason.is_empty() {
                canonical_reason(h.status).as_bytes()
            } else {
                reason
            };
            assert_eq!(&out[again.reason.clone()], want_reason, "{}", shown());
            assert_eq!(again.framing, framing_out, "{}", shown());
            assert_eq!(again.upgrade_websocket, h.status == 101, "{}", shown());
            if close {
                assert!(!again.keep_alive, "{}", shown());
            }
            let want = expected(raw, h, framing_out, close, version);
            let got = pairs(&out, &again.headers);
            assert!(
                got == want,
                "{}\n{:?}\n!= {:?}",
                shown(),
                lossy(&got),
                lossy(&want)
            );
        }
    }
}

/// The client's header list, from SPEC §3 and the `write_client_response` contract.
fn expected(
    raw: &[u8],
    h: &ResponseHead,
    framing_out: BodyFraming,
    close: bool,
    version: Version,
) -> Pairs {
    let target = pairs(raw, &h.headers);
    let listed = connection_listed(&target);
    let mut out: Pairs = target
        .iter()
        .filter(|(n, _)| {
            !(NOT_FORWARDED
                .iter()
                .any(|d| n.eq_ignore_ascii_case(d.as_bytes()))
                || framing_like(n)
                || listed.iter().any(|t| t.eq_ignore_ascii_case(n)))
        })
        .cloned()
        .collect();
    // A body in a transfer coding (`gzip, chunked`) keeps the target's
    // Transfer-Encoding lines for an HTTP/1.1 client (it then has no
    // Content-Length); otherwise only `chunked` is written.
    // Worked out from the target's lines, not from the parser's verdict: a coding
    // other than `chunked` and `identity`, on a response that has a body.
    let te_lines = || {
        target
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(b"transfer-encoding"))
    };
    let compressed = te_lines().any(|(_, v)| {
        v.split(|&c| c == b',').any(|t| {
            let t = t.trim_ascii();
            !t.is_empty()
                && !t.eq_ignore_ascii_case(b"chunked")
                && !t.eq_ignore_ascii_case(b"identity")
        })
    });
    assert_eq!(
        h.transfer_coded(),
        compressed && h.framing != BodyFraming::None
    );
    let coded = compressed
        && h.framing != BodyFraming::None
        && version == Version::Http11
        && matches!(
            framing_out,
            BodyFraming::Chunked | BodyFraming::CloseDelimited
        );
    if coded {
        out.extend(te_lines().cloned());
    }
    let mut push = |n: &str, v: &[u8]| out.push((n.as_bytes().to_vec(), v.to_vec()));
    // A bodiless answer keeps the target's Content-Length (HEAD, 304), but 1xx and
    // 204 never carry one.
    let length = match (framing_out, h.content_length) {
        (BodyFraming::None, Some(n)) if h.status >= 200 && h.status != 204 => Some(n),
        (BodyFraming::ContentLength(n), _) => Some(n),
        _ => None,
    };
    if let Some(n) = length {
        push("Content-Length", n.to_string().as_bytes());
    }
    if !coded && framing_out == BodyFraming::Chunked {
        push("Transfer-Encoding", b"chunked");
    }
    if h.status == 101 {
        push("Upgrade", b"websocket");
        push("Connection", b"upgrade");
    } else if close {
        push("Connection", b"close");
    } else if version == Version::Http10 {
        push("Connection", b"keep-alive");
    }
    out
}
