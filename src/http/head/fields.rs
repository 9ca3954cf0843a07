//! The pieces of head parsing: header kinds, the framing-header grammars, the resumable
//! end-of-head scan, error diagnosis, and small byte helpers.

use std::ops::Range;

use super::{MAX_CONNECTION_OPTIONS, MAX_HEADERS};
use crate::http::chunked::is_tchar;

/// Header names that matter here (ASCII case-insensitive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    KeepAlive,
    ProxyConnection,
    Te,
    Trailer,
    Upgrade,
    Expect,
    ForwardedFor,
    ForwardedProto,
    ForwardedPort,
    /// A name that normalises to Transfer-Encoding or Content-Length; never forwarded.
    Suspicious,
    Other,
}

impl Kind {
    pub(super) fn of(name: &[u8]) -> Kind {
        let is = |lit: &[u8]| name.eq_ignore_ascii_case(lit);
        // `Transfer_Encoding`, `Content_Length`: some servers read `_` as `-`.
        let framing_like = |lit: &[u8]| {
            name.len() == lit.len()
                && name
                    .iter()
                    .zip(lit)
                    .all(|(a, b)| a.eq_ignore_ascii_case(b) || (*a == b'_' && *b == b'-'))
        };
        // By length first: most names are compared with at most two candidates.
        match name.len() {
            2 if is(b"te") => Kind::Te,
            4 if is(b"host") => Kind::Host,
            6 if is(b"expect") => Kind::Expect,
            7 if is(b"trailer") => Kind::Trailer,
            7 if is(b"upgrade") => Kind::Upgrade,
            10 if is(b"connection") => Kind::Connection,
            10 if is(b"keep-alive") => Kind::KeepAlive,
            14 if is(b"content-length") => Kind::ContentLength,
            15 if is(b"x-forwarded-for") => Kind::ForwardedFor,
            16 if is(b"proxy-connection") => Kind::ProxyConnection,
            16 if is(b"x-forwarded-port") => Kind::ForwardedPort,
            17 if is(b"transfer-encoding") => Kind::TransferEncoding,
            17 if is(b"x-forwarded-proto") => Kind::ForwardedProto,
            14 if framing_like(b"content-length") => Kind::Suspicious,
            17 if framing_like(b"transfer-encoding") => Kind::Suspicious,
            _ => Kind::Other,
        }
    }

    /// Never forwarded as received: hop-by-hop, framing (rewritten by us), and Upgrade
    /// and Expect (a WebSocket upgrade is re-written canonically; 100-continue is ours).
    pub(super) fn is_hop_by_hop(self) -> bool {
        !matches!(
            self,
            Kind::Host
                | Kind::ForwardedFor
                | Kind::ForwardedProto
                | Kind::ForwardedPort
                | Kind::Other
        )
    }
}

/// Headers named in `Connection` (other than its own options), as a drop mask; `None`
/// when more than [`MAX_CONNECTION_OPTIONS`] names are listed. In requests, `Host` and
/// `X-Forwarded-For` cannot be dropped this way.
pub(super) fn nominated(
    hb: &[u8],
    headers: &[(Range<usize>, Range<usize>)],
    kinds: &[Kind; MAX_HEADERS],
    request: bool,
) -> Option<u128> {
    let mut mask = 0u128;
    let mut listed = 0;
    for ((_, value), kind) in headers.iter().zip(kinds) {
        if *kind != Kind::Connection {
            continue;
        }
        for token in list_elements(slice(hb, value)) {
            if token.is_empty()
                || [&b"close"[..], b"keep-alive", b"upgrade"]
                    .iter()
                    .any(|o| o.eq_ignore_ascii_case(token))
            {
                continue;
            }
            listed += 1;
            if listed > MAX_CONNECTION_OPTIONS {
                return None;
            }
            let mut b = 1u128;
            for ((name, _), k) in headers.iter().zip(kinds) {
                let protected = request && matches!(k, Kind::Host | Kind::ForwardedFor);
                if mask & b == 0
                    && name.len() == token.len()
                    && !protected
                    && slice(hb, name).eq_ignore_ascii_case(token)
                {
                    mask |= b;
                }
                b <<= 1;
            }
        }
    }
    Some(mask)
}

/// Content-Length values over all its headers: digits only, comma lists of one value.
#[derive(Default)]
pub(super) struct ContentLength {
    pub(super) value: Option<u64>,
    pub(super) count: u32,
    pub(super) bad: bool,
    pub(super) differ: bool,
}

impl ContentLength {
    pub(super) fn add(&mut self, v: &[u8]) {
        for element in list_elements(v) {
            self.count += 1;
            let n = if element.is_empty() || !element.iter().all(u8::is_ascii_digit) {
                None
            } else {
                element.iter().try_fold(0u64, |n, d| {
                    n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
                })
            };
            match (n, self.value) {
                (None, _) => self.bad = true,
                (Some(n), None) => self.value = Some(n),
                (Some(n), Some(prev)) => self.differ |= n != prev,
            }
        }
    }
}

/// Transfer-Encoding codings over all its headers, in order.
#[derive(Default)]
pub(super) struct TransferEncoding {
    pub(super) any: bool,
    /// An empty element, or one that is not a registered coding (`xchunked`, `chunked;x`).
    pub(super) bad: bool,
    pub(super) chunked: u32,
    pub(super) others: u32,
    pub(super) last_chunked: bool,
    /// A coding other than `chunked` and `identity` (`gzip, chunked`): the body
    /// bytes are encoded, and only that header says so.
    pub(super) compressed: bool,
}

impl TransferEncoding {
    pub(super) fn add(&mut self, v: &[u8]) {
        // Registered codings (IANA, plus `identity` which SPEC names); any other token
        // (`xchunked`, `chunked2`) is taken as an obfuscation, not as a coding to refuse.
        const KNOWN: [&[u8]; 6] = [
            b"gzip",
            b"deflate",
            b"compress",
            b"identity",
            b"x-gzip",
            b"x-compress",
        ];
        self.any = true;
        for coding in list_elements(v) {
            if coding.is_empty()
                || !KNOWN
                    .iter()
                    .chain([&&b"chunked"[..]])
                    .any(|k| k.eq_ignore_ascii_case(coding))
            {
                self.bad = true;
            } else if coding.eq_ignore_ascii_case(b"chunked") {
                self.chunked += 1;
                self.last_chunked = true;
            } else {
                self.others += 1;
                self.last_chunked = false;
                self.compressed |= !coding.eq_ignore_ascii_case(b"identity");
            }
        }
    }

    /// The length cannot be determined: bad syntax, `chunked` twice or not last.
    pub(super) fn malformed(&self) -> bool {
        self.bad || self.chunked > 1 || (self.chunked == 1 && !self.last_chunked)
    }

    pub(super) fn lone_chunked(&self) -> bool {
        self.chunked == 1 && self.others == 0 && !self.bad
    }
}

#[derive(Default)]
pub(super) struct ConnectionTokens {
    pub(super) close: bool,
    pub(super) keep_alive: bool,
    pub(super) upgrade: bool,
}

impl ConnectionTokens {
    pub(super) fn add(&mut self, v: &[u8]) {
        for t in list_elements(v) {
            self.close |= t.eq_ignore_ascii_case(b"close");
            self.keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
            self.upgrade |= t.eq_ignore_ascii_case(b"upgrade");
        }
    }
}

/// Resumable search for the end of a head.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Scan {
    /// Where the search resumes.
    pub(super) pos: usize,
    /// Start of the line being read.
    pub(super) line_start: usize,
    /// A non-empty line has been seen (leading empty lines are skipped, RFC 9112 §2.2).
    pub(super) seen_line: bool,
}

#[derive(Debug)]
pub(super) enum ScanError {
    LineTooLong { first: bool },
    HeadTooLarge,
    BareLf { first: bool },
}

/// Finds the end of the head (the first empty line after a non-empty one) and returns
/// its length, enforcing the line and head limits as bytes arrive. With `crlf_only`,
/// every LF must follow a CR. Each byte is examined once over the calls of one parse.
pub(super) fn scan_head(
    buf: &[u8],
    st: &mut Scan,
    max_line: usize,
    max_head: usize,
    crlf_only: bool,
) -> Result<Option<usize>, ScanError> {
    if st.pos > buf.len() || st.line_start > st.pos {
        *st = Scan::default();
    }
    loop {
        let rest = buf.get(st.pos..).unwrap_or_default();
        let Some(off) = memchr::memchr(b'\n', rest) else {
            let mut partial = buf.len() - st.line_start;
            if partial > 0 && buf.last() == Some(&b'\r') {
                partial -= 1;
            }
            first_crossed(
                buf,
                st,
                max_line,
                max_head,
                partial > max_line,
                buf.len() >= max_head,
            )?;
            st.pos = buf.len();
            return Ok(None);
        };
        let nl = st.pos + off;
        let has_cr = nl > st.line_start && buf.get(nl - 1) == Some(&b'\r');
        let content = nl - st.line_start - usize::from(has_cr);
        let next = nl + 1;
        first_crossed(
            buf,
            st,
            max_line,
            max_head,
            content > max_line,
            next > max_head,
        )?;
        if crlf_only && !has_cr {
            return Err(ScanError::BareLf {
                first: !st.seen_line,
            });
        }
        if content == 0 && st.seen_line {
            *st = Scan::default();
            return Ok(Some(next));
        }
        st.seen_line |= content > 0;
        st.line_start = next;
        st.pos = next;
    }
}

/// Of the limits the line being read breaks (`line_long`: over `max_line`;
/// `head_large`: the head cannot end within `max_head`), the error for the one a byte
/// at a time reader would see first (the line limit on a tie), so that the answer does
/// not depend on how the bytes were split into reads.
fn first_crossed(
    buf: &[u8],
    st: &Scan,
    max_line: usize,
    max_head: usize,
    line_long: bool,
    head_large: bool,
) -> Result<(), ScanError> {
    // The line is over the limit from its (max_line + 1)th byte, or one byte later
    // when that byte is a CR (it might have started the line end).
    let line_at = || {
        let at = st.line_start.saturating_add(max_line);
        at.saturating_add(1 + usize::from(buf.get(at) == Some(&b'\r')))
    };
    if line_long && (!head_large || line_at() <= max_head) {
        return Err(ScanError::LineTooLong {
            first: !st.seen_line,
        });
    }
    if head_large {
        return Err(ScanError::HeadTooLarge);
    }
    Ok(())
}

/// The 400 reason for a head httparse refused (cold path).
pub(super) fn diagnose_request(hb: &[u8], err: httparse::Error) -> &'static str {
    if err == httparse::Error::TooManyHeaders {
        return "TooManyHeaders";
    }
    let start = hb
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(hb.len());
    let rest = &hb[start..];
    let end = rest
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(rest.len());
    if let Some(reason) = diagnose_request_line(&rest[..end]) {
        return reason;
    }
    // A header line is at fault: name it after the header when that one decides framing.
    for line in rest.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':');
        let valid = colon.is_some_and(|c| {
            c > 0
                && line[..c].iter().all(|&b| is_tchar(b))
                && line[c + 1..].iter().all(|&b| is_field_byte(b))
        });
        if !valid {
            let name = trim_ows(&line[..colon.unwrap_or(0)]);
            // Only control characters other than NUL and CR in the value of a
            // well-named header: ALB's NonCompliantHeader (Acceptable).
            let soft = colon.is_some_and(|c| {
                c > 0
                    && line[..c].iter().all(|&b| is_tchar(b))
                    && line[c + 1..]
                        .iter()
                        .all(|&b| is_field_byte(b) || is_soft_control(b))
            });
            return match Kind::of(name) {
                Kind::TransferEncoding => "BadTransferEncoding",
                Kind::ContentLength => "BadContentLength",
                // A framing look-alike (`Transfer_Encoding`) stays an error too.
                Kind::Suspicious => "BadHeader",
                _ if soft => "NonCompliantHeader",
                _ => "BadHeader",
            };
        }
    }
    "Malformed"
}

pub(super) fn diagnose_request_line(line: &[u8]) -> Option<&'static str> {
    let Some(sp) = line.iter().position(|&b| b == b' ') else {
        return Some("Malformed");
    };
    let (method, rest) = (&line[..sp], &line[sp + 1..]);
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Some("BadMethod");
    }
    let Some(sp) = rest.iter().rposition(|&b| b == b' ') else {
        return Some("Malformed");
    };
    let (uri, version) = (&rest[..sp], &rest[sp + 1..]);
    // HTTP/1.2 to HTTP/1.9: harmless but not compliant (Acceptable in ALB's table),
    // served as HTTP/1.1 unless strictest; a fault of the target comes first.
    let minor_above_one = matches!(
        version,
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', b'2'..=b'9']
    );
    if version != b"HTTP/1.1" && version != b"HTTP/1.0" && !minor_above_one {
        return Some(if version.starts_with(b"HTTP/") {
            "BadVersion"
        } else {
            "Malformed"
        });
    }
    if uri.is_empty() || uri.starts_with(b" ") || uri.ends_with(b" ") {
        Some("Malformed")
    } else if uri.iter().any(|&b| b == 0 || b == b'\r') || std::str::from_utf8(uri).is_err() {
        Some("BadUri")
    } else if uri.iter().any(|&b| b < 0x20 || b == 0x7f) {
        // Other control characters: Ambiguous in ALB's table.
        Some("AmbiguousUri")
    } else if uri.contains(&b' ') {
        Some("SpaceInUri")
    } else if minor_above_one {
        Some("NonCompliantVersion")
    } else {
        None
    }
}

/// The reason phrase of a status line that httparse accepted: after `HTTP/1.x NNN `.
pub(super) fn reason_range(hb: &[u8]) -> Range<usize> {
    let start = hb
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(hb.len());
    let end = hb[start..]
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .map_or(hb.len(), |e| start + e);
    (start + 13).min(end)..end
}

/// `http://authority/path` or `https://...` (scheme case-insensitive) → (authority, path).
pub(super) fn absolute_form_split(target: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = [&b"http://"[..], b"https://"].iter().find_map(|scheme| {
        let head = target.get(..scheme.len())?;
        head.eq_ignore_ascii_case(scheme)
            .then(|| &target[scheme.len()..])
    })?;
    let end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    Some(rest.split_at(end))
}

/// RFC 3986 `host [":" port]` characters (reg-name, IP literal, percent-encoding).
pub(super) fn valid_host(h: &[u8]) -> bool {
    h.iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%:[]".contains(&b))
}

/// HTAB, SP, VCHAR, obs-text: the bytes of a field value.
pub(super) fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80
}

/// A control character a header value may not hold but that cannot end or split
/// a line either: all but NUL, LF and CR (TAB is a field byte).
pub(super) fn is_soft_control(b: u8) -> bool {
    matches!(b, 0x01..=0x08 | 0x0b | 0x0c | 0x0e..=0x1f | 0x7f)
}

/// The elements of a comma list, each trimmed of spaces and tabs (empty ones included).
pub(super) fn list_elements(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(trim_ows)
}

pub(super) fn has_token(v: &[u8], token: &[u8]) -> bool {
    list_elements(v).any(|t| t.eq_ignore_ascii_case(token))
}

pub(super) fn trim_ows(v: &[u8]) -> &[u8] {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = v.iter().position(|b| !ows(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !ows(b)).map_or(start, |e| e + 1);
    &v[start..end]
}

pub(super) fn bit(i: usize) -> u128 {
    u32::try_from(i)
        .ok()
        .and_then(|i| 1u128.checked_shl(i))
        .unwrap_or(0)
}

/// Where `part` (a sub-slice of `base`) lies in `base`.
pub(super) fn range_in(base: &[u8], part: &[u8]) -> Option<Range<usize>> {
    let start = part.as_ptr().addr().checked_sub(base.as_ptr().addr())?;
    let end = start.checked_add(part.len())?;
    (end <= base.len()).then_some(start..end)
}

/// `buf[r]`, or empty when `r` is out of range (a caller passing the wrong buffer).
pub(super) fn slice<'b>(buf: &'b [u8], r: &Range<usize>) -> &'b [u8] {
    buf.get(r.clone()).unwrap_or_default()
}

pub(super) fn find_header<'b>(
    buf: &'b [u8],
    headers: &[(Range<usize>, Range<usize>)],
    name: &str,
) -> Option<&'b [u8]> {
    headers
        .iter()
        .find(|(n, _)| slice(buf, n).eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| slice(buf, v))
}

/// Appends `n` in decimal.
pub(super) fn push_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}
