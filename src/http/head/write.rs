//! Writing heads: the request head sent to a target, the response head sent to a
//! client, and the balancer's own error responses. Appends to the caller's reused buffer.

use std::io::Write as _;
use std::net::IpAddr;

use super::fields::{bit, push_u64, slice};
use super::{BodyFraming, RequestHead, ResponseHead, Version, XffMode};

/// Where a request came from and how its listener forwards it.
#[derive(Clone, Copy, Debug)]
pub struct ForwardInfo<'a> {
    /// The client's address (an IPv4-mapped IPv6 address is written as IPv4).
    pub client_ip: IpAddr,
    /// `http` or `https`, for X-Forwarded-Proto.
    pub proto: &'a str,
    /// The listener port the client connected to, for X-Forwarded-Port.
    pub port: u16,
    pub xff: XffMode,
}

/// Appends the head to send to a target: `METHOD TARGET HTTP/1.1`; the client's headers
/// in order and spelling, less hop-by-hop ones (`Connection` and those it names, except
/// Host and X-Forwarded-For; `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `Upgrade`,
/// `Expect`) and framing ones, less X-Forwarded-Proto/Port, less X-Forwarded-For unless
/// `preserve`, less any header named in `extra`; then `Host` when we must supply it
/// (absolute-form: the URI's authority; HTTP/1.0 without one: empty), `Upgrade: websocket`
/// and `Connection: upgrade` for a WebSocket upgrade, X-Forwarded-For (`append`: the
/// client's values, then the client IP), X-Forwarded-Proto and -Port, the `extra` lines,
/// the framing header for `head.framing`, and the empty line. `extra` lines replace the
/// client's headers of the same names (e.g. `X-Amzn-Trace-Id`, or `Host`); they must not
/// carry CR or LF, nor name X-Forwarded-*, framing, `Connection` or `Upgrade` headers.
pub fn write_upstream_request(
    buf: &[u8],
    head: &RequestHead,
    fwd: &ForwardInfo<'_>,
    extra: &[(&str, &str)],
    out: &mut Vec<u8>,
) {
    debug_assert!(
        extra
            .iter()
            .all(|(n, v)| !n.contains(['\r', '\n']) && !v.contains(['\r', '\n']))
    );
    out.extend_from_slice(head.method(buf));
    out.push(b' ');
    out.extend_from_slice(head.target(buf));
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let in_extra = |name: &[u8]| {
        extra
            .iter()
            .any(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))
    };
    for (i, (n, v)) in head.headers.iter().enumerate() {
        let name = slice(buf, n);
        let is_xff = head.xff_mask & bit(i) != 0;
        if head.drop_mask & bit(i) != 0
            || (is_xff && fwd.xff != XffMode::Preserve)
            || in_extra(name)
        {
            continue;
        }
        push_header(out, name, slice(buf, v));
    }
    if !in_extra(b"host") {
        if head.absolute_form {
            push_header(out, b"Host", head.host(buf).unwrap_or_default());
        } else if head.host.is_none() {
            // HTTP/1.1 needs a Host; empty says there is no authority (RFC 9112 §3.2).
            out.extend_from_slice(b"Host:\r\n");
        }
    }
    if head.upgrade_websocket {
        out.extend_from_slice(b"Upgrade: websocket\r\nConnection: upgrade\r\n");
    }
    if fwd.xff == XffMode::Append {
        out.extend_from_slice(b"X-Forwarded-For: ");
        for (i, (_, v)) in head.headers.iter().enumerate() {
            let v = slice(buf, v);
            if head.xff_mask & bit(i) != 0 && !v.is_empty() {
                out.extend_from_slice(v);
                out.extend_from_slice(b", ");
            }
        }
        push_ip(out, fwd.client_ip.to_canonical());
        out.extend_from_slice(b"\r\n");
    }
    push_header(out, b"X-Forwarded-Proto", fwd.proto.as_bytes());
    out.extend_from_slice(b"X-Forwarded-Port: ");
    push_u64(out, u64::from(fwd.port));
    out.extend_from_slice(b"\r\n");
    for (n, v) in extra {
        push_header(out, n.as_bytes(), v.as_bytes());
    }
    push_framing(out, head.framing);
    out.extend_from_slice(b"\r\n");
}

/// Appends an address the way `Display` writes it (IPv4 without formatting
/// machinery: it is on every forwarded request).
fn push_ip(out: &mut Vec<u8>, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, u64::from(o));
            }
        }
        std::net::IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Appends the head to send to a client: `HTTP/1.1 <status> <reason>` (the canonical
/// reason when the target sent none); the target's headers less hop-by-hop and framing
/// ones; the framing header for `framing_out` (what the caller will really send:
/// `ContentLength(n)` or `Chunked`; `None` for a bodiless response, which keeps the
/// target's Content-Length of a HEAD or 304 response; `CloseDelimited` writes nothing);
/// then for a 101 `Upgrade: websocket` and `Connection: upgrade`, else `Connection: close`
/// when `close`, else `Connection: keep-alive` for an HTTP/1.0 client (whose connection
/// stays open only if it asked for keep-alive, so `close` must be set otherwise). Never
/// pass `Chunked` for an HTTP/1.0 client: decode with `ChunkedDecoder::data_only` and close.
pub fn write_client_response(
    buf: &[u8],
    head: &ResponseHead,
    framing_out: BodyFraming,
    close: bool,
    client_version: Version,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(out, u64::from(head.status));
    out.push(b' ');
    let reason = slice(buf, &head.reason);
    out.extend_from_slice(if reason.is_empty() {
        canonical_reason(head.status).as_bytes()
    } else {
        reason
    });
    out.extend_from_slice(b"\r\n");
    for (i, (n, v)) in head.headers.iter().enumerate() {
        if head.drop_mask & bit(i) == 0 {
            push_header(out, slice(buf, n), slice(buf, v));
        }
    }
    // A body in a transfer coding (`gzip, chunked`) keeps the target's
    // Transfer-Encoding: it frames the body the same way (chunked last, or up to
    // the close) and names the coding, which `Transfer-Encoding: chunked` would lose.
    let coded = head.coded_te != 0
        && client_version == Version::Http11
        && matches!(
            framing_out,
            BodyFraming::Chunked | BodyFraming::CloseDelimited
        );
    if coded {
        for (i, (n, v)) in head.headers.iter().enumerate() {
            if head.coded_te & bit(i) != 0 {
                push_header(out, slice(buf, n), slice(buf, v));
            }
        }
    } else {
        match (framing_out, head.content_length) {
            (BodyFraming::None, Some(n)) if head.status >= 200 && head.status != 204 => {
                push_framing(out, BodyFraming::ContentLength(n));
            }
            _ => push_framing(out, framing_out),
        }
    }
    if head.status == 101 {
        out.extend_from_slice(b"Upgrade: websocket\r\nConnection: upgrade\r\n");
    } else if close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if client_version == Version::Http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends a response from the balancer itself: status line, `Server: fulcrum`,
/// `Content-Type: text/html`, `Content-Length`, `Connection: close` when `close`, and a
/// short HTML body naming the status (ALB's layout). A status outside 100..=999 is 500.
pub fn write_error_response(status: u16, close: bool, out: &mut Vec<u8>) {
    error_response(status, close, true, out);
}

/// As [`write_error_response`] without the body bytes (the head still announces their
/// length): the answer to a HEAD request.
pub fn write_error_response_no_body(status: u16, close: bool, out: &mut Vec<u8>) {
    error_response(status, close, false, out);
}

fn error_response(status: u16, close: bool, with_body: bool, out: &mut Vec<u8>) {
    const PARTS: [&str; 3] = [
        "<html>\r\n<head><title>",
        "</title></head>\r\n<body>\r\n<center><h1>",
        "</h1></center>\r\n</body>\r\n</html>\r\n",
    ];
    let status = if (100..=999).contains(&status) {
        status
    } else {
        500
    };
    let reason = canonical_reason(status);
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\nServer: fulcrum\r\n");
    let has_body = status >= 200 && status != 204 && status != 304;
    if has_body {
        let title_len = 4 + reason.len();
        let len = PARTS.iter().map(|p| p.len()).sum::<usize>() + 2 * title_len;
        out.extend_from_slice(b"Content-Type: text/html\r\n");
        push_framing(out, BodyFraming::ContentLength(len as u64));
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if has_body && with_body {
        for (i, part) in PARTS.iter().enumerate() {
            out.extend_from_slice(part.as_bytes());
            if i < 2 {
                push_u64(out, u64::from(status));
                out.push(b' ');
                out.extend_from_slice(reason.as_bytes());
            }
        }
    }
}

/// The reason phrase written for `status` when none is given ("" for unknown codes).
pub fn canonical_reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        102 => "Processing",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        418 => "I'm a teapot",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        423 => "Locked",
        424 => "Failed Dependency",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        460 => "Client Closed Request",
        463 => "Too Many Forwarded Addresses",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        511 => "Network Authentication Required",
        _ => "",
    }
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn push_framing(out: &mut Vec<u8>, framing: BodyFraming) {
    match framing {
        BodyFraming::ContentLength(n) => {
            out.extend_from_slice(b"Content-Length: ");
            push_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        BodyFraming::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        BodyFraming::None | BodyFraming::CloseDelimited => {}
    }
}
