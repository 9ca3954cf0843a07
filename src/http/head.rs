//! HTTP/1 request and response heads (SPEC §3): parsing over httparse, the framing,
//! keep-alive and hop-by-hop decisions, and the heads fulcrum writes on.
//!
//! Invariants: pure (no I/O), no panic on any input, and no allocation once the caller's
//! reused buffers (`headers`, `out`) have grown. A parsed head owns no bytes: method,
//! target and header names and values are ranges into the buffer it was parsed from,
//! which the caller keeps unchanged until the head has been written on. A request's body
//! length is decided here only, and every head written to a target carries framing
//! headers we generated, so a target can never read a body differently from us.

use std::mem::MaybeUninit;
use std::ops::Range;

pub use crate::snapshot::XffMode;
use fields::*;

mod fields;
mod response;
mod write;
pub use response::{ResponseError, ResponseHead, parse_response};
pub use write::{ForwardInfo, write_upstream_request};
pub use write::{
    canonical_reason, write_client_response, write_error_response, write_error_response_no_body,
};

#[cfg(test)]
mod tests;

/// Most header lines in one head; more is 400 `TooManyHeaders` (request) or 502 (response).
pub const MAX_HEADERS: usize = 128;
/// Largest response head accepted from a target, bytes; more is 502.
pub const MAX_RESPONSE_HEAD: usize = 32 * 1024;
/// Most `X-Forwarded-For` addresses one request may carry over all its XFF headers; more is 463.
pub const MAX_FORWARDED_FOR: usize = 30;
/// Most header names the `Connection` headers of one message may list (besides `close`,
/// `keep-alive`, `upgrade`); more is 400 `BadHeader` (request) or 502 (response). Real
/// clients list one or two; the bound keeps the hop-by-hop matching cheap.
pub const MAX_CONNECTION_OPTIONS: usize = 16;
/// The interim response the balancer itself sends for `Expect: 100-continue`.
pub const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Size limits and the one framing policy switch for request heads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest head, bytes: leading empty lines, request line, header lines and the final
    /// empty line, CRLFs included. Default 64 KiB.
    pub max_head: usize,
    /// Longest request line, and longest header line, bytes without its CRLF. Default 16 KiB.
    pub max_line: usize,
    /// Both `Transfer-Encoding` and `Content-Length`: `true` (default) answers 400
    /// `BothTeClPresent`; `false` frames by Transfer-Encoding, never forwards the
    /// Content-Length, sets [`RequestHead::te_with_cl`] and clears `keep_alive`.
    pub reject_te_with_cl: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 64 * 1024,
            max_line: 16 * 1024,
            reject_te_with_cl: true,
        }
    }
}

/// The HTTP version of a message (only these two are accepted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Version {
    Http10,
    #[default]
    Http11,
}

/// How a message's body is delimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    #[default]
    None,
    /// Exactly this many bytes.
    ContentLength(u64),
    /// Chunked transfer coding, read through [`super::chunked::ChunkedDecoder`].
    Chunked,
    /// Responses only: the body runs until the target closes the connection.
    CloseDelimited,
}

/// The request method, for the decisions that depend on it (HEAD responses, retries).
/// Methods are case-sensitive: `get` is `Other` (an extension method).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Method {
    #[default]
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    Other,
}

impl Method {
    fn of(m: &[u8]) -> Method {
        match m {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"OPTIONS" => Method::Options,
            b"PATCH" => Method::Patch,
            _ => Method::Other,
        }
    }

    /// GET, HEAD, OPTIONS, PUT, DELETE: the methods SPEC §3 lets the keep-alive race retry.
    pub fn is_idempotent(self) -> bool {
        matches!(
            self,
            Method::Get | Method::Head | Method::Options | Method::Put | Method::Delete
        )
    }
}

/// A parsed request head. Ranges index the buffer given to [`parse_request`].
#[derive(Clone, Debug, Default)]
pub struct RequestHead {
    pub method: Range<usize>,
    pub method_kind: Method,
    /// The target as forwarded: origin-form (`/path?query`), `*` (OPTIONS only), or for
    /// an absolute-form request (`http://host/path`) its path and query only.
    pub target: Range<usize>,
    pub version: Version,
    /// (name, value) per header line in order; values without surrounding whitespace.
    /// Reused (cleared) by each parse; do not edit it, the writers rely on its indexes.
    pub headers: Vec<(Range<usize>, Range<usize>)>,
    /// Bytes of the head, including any leading empty lines; the body (or the next
    /// pipelined request) starts here.
    pub head_len: usize,
    pub framing: BodyFraming,
    /// The `Host` value, or the authority of an absolute-form target (which wins, RFC
    /// 9112 §3.2.2); `None` only for HTTP/1.0 without either.
    pub host: Option<Range<usize>>,
    /// The target was absolute-form: `host` came from it, the client's `Host` is dropped.
    pub absolute_form: bool,
    /// The client connection may carry another request after this one: HTTP/1.1 without
    /// `Connection: close`, HTTP/1.0 with `Connection: keep-alive`; false after
    /// Transfer-Encoding in HTTP/1.0 or [`Self::te_with_cl`].
    pub keep_alive: bool,
    /// HTTP/1.1, `Expect: 100-continue`, and a body: send [`CONTINUE_100`] before reading it.
    pub expect_continue: bool,
    /// HTTP/1.1 GET without a body, `Upgrade: websocket` and `Connection: upgrade`.
    pub upgrade_websocket: bool,
    /// `X-Forwarded-For` addresses (non-empty list elements) over all XFF headers.
    pub xff_count: usize,
    /// Both Transfer-Encoding and Content-Length (only with `reject_te_with_cl` off).
    pub te_with_cl: bool,
    /// Content-Length sent more than once (all with the same value).
    pub duplicate_content_length: bool,
    /// A header whose name normalises to a framing one (`Transfer_Encoding`); dropped.
    pub suspicious_header: bool,
    /// Bit i: `headers[i]` is never forwarded as is (hop-by-hop, framing, X-Forwarded-Proto/Port).
    drop_mask: u128,
    /// Bit i: `headers[i]` is an `X-Forwarded-For`.
    xff_mask: u128,
    scan: Scan,
}

impl RequestHead {
    /// The method bytes (empty if `buf` is not the parsed buffer).
    pub fn method<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        slice(buf, &self.method)
    }

    /// The target bytes as forwarded (see the `target` field).
    pub fn target<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        slice(buf, &self.target)
    }

    /// The host as sent (case and port kept), if any.
    pub fn host<'b>(&self, buf: &'b [u8]) -> Option<&'b [u8]> {
        self.host.as_ref().map(|r| slice(buf, r))
    }

    /// The first value of the header `name` (ASCII case-insensitive).
    pub fn header<'b>(&self, buf: &'b [u8], name: &str) -> Option<&'b [u8]> {
        find_header(buf, &self.headers, name)
    }

    /// Forgets a partial parse: needed only before reusing a head, after `Ok(None)`, on a
    /// different buffer (the scan resumes where the previous call stopped).
    pub fn clear(&mut self) {
        self.scan = Scan::default();
    }
}

/// Why a request is refused, in SPEC §3 precedence order (400, 501, 405, 463).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// 400, with ALB's reason name where it has one (`BothTeClPresent`,
    /// `MultipleContentLength`, `BadContentLength`, `BadTransferEncoding`, `BadHeader`,
    /// `MultipleTransferEncodingChunked`, `SpaceInUri`, `AmbiguousUri`, `BadUri`,
    /// `BadMethod`, `BadVersion`) or ours (`MissingHost`,
    /// `MultipleHost`, `BadHost`, `LineTooLong`, `HeaderTooLong`, `HeadTooLarge`,
    /// `TooManyHeaders`, `Malformed`).
    BadRequest(&'static str),
    /// 501: a well-formed Transfer-Encoding other than a lone `chunked`.
    NotImplemented(&'static str),
    /// 405: TRACE.
    MethodNotAllowed,
    /// 463: more than [`MAX_FORWARDED_FOR`] X-Forwarded-For addresses.
    TooManyForwardedFor,
}

impl RequestError {
    /// The status the balancer answers with.
    pub fn status(self) -> u16 {
        match self {
            RequestError::BadRequest(_) => 400,
            RequestError::NotImplemented(_) => 501,
            RequestError::MethodNotAllowed => 405,
            RequestError::TooManyForwardedFor => 463,
        }
    }

    /// A short reason for the access log.
    pub fn reason(self) -> &'static str {
        match self {
            RequestError::BadRequest(r) | RequestError::NotImplemented(r) => r,
            RequestError::MethodNotAllowed => "MethodNotAllowed",
            RequestError::TooManyForwardedFor => "TooManyForwardedFor",
        }
    }
}

/// Parses a request head at the start of `buf` into `head` (reusing `head.headers`).
/// `Ok(None)`: incomplete; read more and call again with the same bytes plus the new
/// ones (the scan resumes where it stopped, so a slow client costs linear time). On
/// `Err` the head's fields are unspecified. Errors follow SPEC §3 (see [`RequestError`]);
/// besides its list, these are 400 too: bare-LF line ends, `CONNECT` in any case, a
/// case variant of HEAD (`Head`: a target that upper-cases methods would answer it
/// without a body; other lower-case methods such as `get` are extension methods,
/// and `trace` in any case is 405), a target that is not origin-form,
/// absolute-form `http(s)://authority/path` or `*` (OPTIONS only), or that holds a `#`
/// (a fragment), a Host outside RFC 3986 authority characters, more than
/// [`MAX_HEADERS`] headers, and `Connection` naming more than
/// [`MAX_CONNECTION_OPTIONS`] headers.
pub fn parse_request(
    buf: &[u8],
    limits: &Limits,
    head: &mut RequestHead,
) -> Result<Option<()>, RequestError> {
    use RequestError::BadRequest;
    let head_len = match scan_head(buf, &mut head.scan, limits.max_line, limits.max_head, true) {
        Ok(Some(n)) => n,
        Ok(None) => return Ok(None),
        Err(e) => {
            head.scan = Scan::default();
            return Err(BadRequest(match e {
                ScanError::LineTooLong { first: true } => "LineTooLong",
                ScanError::LineTooLong { first: false } => "HeaderTooLong",
                ScanError::HeadTooLarge => "HeadTooLarge",
                ScanError::BareLf { first: true } => "Malformed",
                ScanError::BareLf { first: false } => "BadHeader",
            }));
        }
    };
    let hb = buf.get(..head_len).ok_or(BadRequest("Malformed"))?;
    let mut raw = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, hb, &mut raw)
    {
        Ok(httparse::Status::Complete(n)) if n == head_len => {}
        Ok(_) => return Err(BadRequest("Malformed")),
        Err(e) => return Err(BadRequest(diagnose_request(hb, e))),
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(BadRequest("Malformed"));
    };
    head.version = if minor == 0 {
        Version::Http10
    } else {
        Version::Http11
    };
    head.head_len = head_len;
    classify_request(
        hb,
        method.as_bytes(),
        target.as_bytes(),
        req.headers,
        limits,
        head,
    )
}

/// Where the request line at the start of `buf` is, without its line end (empty
/// lines before it are allowed, RFC 9112 §2.2); `None` before its end arrived.
fn request_line(buf: &[u8]) -> Option<(usize, usize)> {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let mut end = start + memchr::memchr(b'\n', &buf[start..])?;
    if end > start && buf[end - 1] == b'\r' {
        end -= 1;
    }
    Some((start, end))
}

/// A request line whose version is `HTTP/1.2` to `HTTP/1.9` (`NonCompliantVersion`,
/// Acceptable in ALB's table) is rewritten in place to `HTTP/1.1`, as it is then
/// served. Call it only after [`parse_request`] answered
/// `BadRequest("NonCompliantVersion")`; `false` when the line does not end so.
pub fn downgrade_version(buf: &mut [u8]) -> bool {
    let Some((start, end)) = request_line(buf) else {
        return false;
    };
    // The version is the line's last 8 bytes.
    match buf.get_mut(end.saturating_sub(8).max(start)..end) {
        Some(v) if v.len() == 8 && v.starts_with(b"HTTP/1.") && (b'2'..=b'9').contains(&v[7]) => {
            v[7] = b'1';
            true
        }
        _ => false,
    }
}

/// A request whose only fault is unencoded spaces (`SpaceInUri`, Acceptable in
/// ALB's table) or control characters other than NUL and CR (`AmbiguousUri`,
/// Ambiguous) in its target can be allowed: this rewrites the request line at the
/// start of `buf` in place with each such byte inside the target percent-encoded
/// (`%20`, `%09`, `%7F`, ...), so that the request parses and no target sees a byte
/// it could split or read differently. Call it only after [`parse_request`]
/// answered `BadRequest("SpaceInUri")` or `BadRequest("AmbiguousUri")` for `buf`;
/// `false` (nothing changed) when the line is not `METHOD SP target SP version` or
/// its target holds no such byte.
pub fn encode_target(buf: &mut Vec<u8>) -> bool {
    let Some((start, end)) = request_line(buf) else {
        return false;
    };
    let line = &buf[start..end];
    let (Some(first), Some(last)) = (memchr::memchr(b' ', line), memchr::memrchr(b' ', line))
    else {
        return false;
    };
    if last <= first + 1 {
        return false;
    }
    // Space and the control characters below it, and DEL.
    let encoded = |b: u8| b <= b' ' || b == 0x7f;
    let n = line[first + 1..last]
        .iter()
        .filter(|&&b| encoded(b))
        .count();
    if n == 0 {
        return false;
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut target = Vec::with_capacity(last - first - 1 + 2 * n);
    for &b in &line[first + 1..last] {
        if encoded(b) {
            target.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        } else {
            target.push(b);
        }
    }
    buf.splice(start + first + 1..start + last, target);
    true
}

/// A request whose header values hold control characters other than NUL and CR
/// (`NonCompliantHeader`, Acceptable in ALB's table) can be allowed: this replaces
/// each such byte in the value of a header with a well-formed name by a space, in
/// place, so that the head parses and no target sees the control character. The
/// request line, names and framing are left alone (a control character in a
/// Content-Length or Transfer-Encoding value stays an error: the caller only calls
/// this after [`parse_request`] answered `BadRequest("NonCompliantHeader")`).
/// `false`: nothing changed.
pub fn blank_controls_in_header_values(buf: &mut [u8]) -> bool {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let Some(line_len) = memchr::memchr(b'\n', &buf[start..]) else {
        return false;
    };
    let mut at = start + line_len + 1;
    let mut changed = false;
    while at < buf.len() {
        let end = memchr::memchr(b'\n', &buf[at..]).map_or(buf.len(), |n| at + n);
        let line = &buf[at..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break; // the end of the head
        }
        if let Some(colon) = memchr::memchr(b':', line) {
            let named = colon > 0
                && line[..colon]
                    .iter()
                    .all(|&b| crate::http::chunked::is_tchar(b));
            let framing = matches!(
                fields::Kind::of(&line[..colon]),
                fields::Kind::ContentLength
                    | fields::Kind::TransferEncoding
                    | fields::Kind::Suspicious
            );
            if named && !framing {
                let value_end = at + line.len();
                for b in &mut buf[at + colon + 1..value_end] {
                    if fields::is_soft_control(*b) {
                        *b = b' ';
                        changed = true;
                    }
                }
            }
        }
        at = end + 1;
    }
    changed
}

/// What the header lines say, gathered in one pass.
#[derive(Default)]
struct Facts {
    hosts: u32,
    bad_host: bool,
    cl: ContentLength,
    te: TransferEncoding,
    conn: ConnectionTokens,
    upgrade_ws: bool,
    expect_continue: bool,
    xff: usize,
    suspicious: bool,
}

fn classify_request(
    hb: &[u8],
    method: &[u8],
    target: &[u8],
    headers: &[httparse::Header<'_>],
    limits: &Limits,
    head: &mut RequestHead,
) -> Result<Option<()>, RequestError> {
    use RequestError::BadRequest;
    let malformed = BadRequest("Malformed");
    head.method = range_in(hb, method).ok_or(malformed)?;
    head.method_kind = Method::of(method);
    let mut kinds = [Kind::Other; MAX_HEADERS];
    let mut f = Facts::default();
    head.headers.clear();
    head.host = None;
    head.drop_mask = 0;
    head.xff_mask = 0;
    for (i, h) in headers.iter().enumerate() {
        let (Some(n), Some(v)) = (range_in(hb, h.name.as_bytes()), range_in(hb, h.value)) else {
            return Err(malformed);
        };
        let kind = Kind::of(h.name.as_bytes());
        if let Some(k) = kinds.get_mut(i) {
            *k = kind;
        }
        match kind {
            Kind::Host => {
                f.hosts += 1;
                f.bad_host |= !valid_host(h.value);
                head.host = Some(v.clone());
            }
            Kind::ContentLength => f.cl.add(h.value),
            Kind::TransferEncoding => f.te.add(h.value),
            Kind::Connection => f.conn.add(h.value),
            Kind::Upgrade => f.upgrade_ws |= has_token(h.value, b"websocket"),
            Kind::Expect => {
                f.expect_continue |= trim_ows(h.value).eq_ignore_ascii_case(b"100-continue")
            }
            Kind::ForwardedFor => {
                f.xff += list_elements(h.value).filter(|e| !e.is_empty()).count();
                head.xff_mask |= bit(i);
            }
            Kind::Suspicious => f.suspicious = true,
            _ => {}
        }
        if kind.is_hop_by_hop() || matches!(kind, Kind::ForwardedProto | Kind::ForwardedPort) {
            head.drop_mask |= bit(i);
        }
        head.headers.push((n, v));
    }
    let named = nominated(hb, &head.headers, &kinds, true);
    head.drop_mask |= named.unwrap_or(0);
    let v11 = head.version == Version::Http11;

    // Target forms; an absolute-form authority replaces the Host header (RFC 9112 §3.2.2).
    let bad_target = match absolute_form_split(target) {
        Some((authority, path)) => {
            f.bad_host |= !valid_host(authority);
            head.host = range_in(hb, authority);
            head.target = range_in(hb, path).ok_or(malformed)?;
            head.absolute_form = true;
            for (i, k) in kinds.iter().enumerate() {
                if *k == Kind::Host {
                    head.drop_mask |= bit(i);
                }
            }
            authority.is_empty() || authority.contains(&b'@') || !path.starts_with(b"/")
        }
        None => {
            head.target = range_in(hb, target).ok_or(malformed)?;
            head.absolute_form = false;
            !(target.starts_with(b"/") || (target == b"*" && method == b"OPTIONS"))
        }
    } || target.contains(&b'#'); // a fragment: rules and target would see other paths

    // 400 first, in this order; then 501, 405, 463 (SPEC §3).
    // A method is any token, matched case-sensitively (`get` is an extension method
    // that no `GET` rule matches, as with ALB, whose BadMethod is a non-token byte);
    // CONNECT, in any case, is refused as ELB does, and so are the case variants
    // of HEAD (`head`): a target that upper-cases methods would answer it without
    // a body, which the balancer would wait for.
    let bad_method = method.eq_ignore_ascii_case(b"CONNECT")
        || (method != b"HEAD" && method.eq_ignore_ascii_case(b"HEAD"));
    let reason = if bad_method {
        Some("BadMethod")
    } else if bad_target {
        Some("BadUri")
    } else if f.hosts > 1 {
        Some("MultipleHost")
    } else if f.bad_host {
        Some("BadHost")
    } else if named.is_none() {
        Some("BadHeader")
    } else if f.cl.bad {
        Some("BadContentLength")
    } else if f.cl.differ {
        Some("MultipleContentLength")
    } else if f.te.chunked > 1 {
        Some("MultipleTransferEncodingChunked")
    } else if f.te.malformed() {
        Some("BadTransferEncoding")
    } else if f.te.any && f.cl.count > 0 && limits.reject_te_with_cl {
        Some("BothTeClPresent")
    } else if f.hosts == 0 && v11 {
        // A Host header is required in HTTP/1.1 even with an absolute-form target
        // (RFC 9112 §3.2), whose authority then routes.
        Some("MissingHost")
    } else {
        None
    };
    if let Some(r) = reason {
        return Err(BadRequest(r));
    }

    head.framing = match (f.te.any, f.cl.value) {
        (true, _) => BodyFraming::Chunked,
        (false, Some(n)) => BodyFraming::ContentLength(n),
        (false, None) => BodyFraming::None,
    };
    head.te_with_cl = f.te.any && f.cl.count > 0;
    head.duplicate_content_length = f.cl.count > 1;
    head.suspicious_header = f.suspicious;
    let wants = if v11 {
        !f.conn.close
    } else {
        f.conn.keep_alive && !f.conn.close
    };
    // Chunked from HTTP/1.0 is faulty framing (RFC 9112 §6.1): serve it, then close.
    let te_from_http10 = f.te.any && !v11;
    head.keep_alive = wants && !head.te_with_cl && !te_from_http10;
    // Nothing to continue for an empty body: no 100, and the connection stays usable.
    head.expect_continue = v11
        && f.expect_continue
        && !matches!(
            head.framing,
            BodyFraming::None | BodyFraming::ContentLength(0)
        );
    head.upgrade_websocket = v11
        && head.method_kind == Method::Get
        && head.framing == BodyFraming::None
        && f.upgrade_ws
        && f.conn.upgrade;
    head.xff_count = f.xff;
    // Last, with the head's fields set (desync classification reads them): 501,
    // then 405 and 463, after which the connection can go on.
    if f.te.any && !f.te.lone_chunked() {
        return Err(RequestError::NotImplemented("UnsupportedTransferEncoding"));
    }
    // In any case: a target that upper-cases methods must never echo a request.
    if method.eq_ignore_ascii_case(b"TRACE") {
        return Err(RequestError::MethodNotAllowed);
    }
    if f.xff > MAX_FORWARDED_FOR {
        return Err(RequestError::TooManyForwardedFor);
    }
    Ok(Some(()))
}
