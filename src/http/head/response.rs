//! Response heads from targets: parsing, framing and keep-alive (SPEC §3, ALB 502 rules).

use std::mem::MaybeUninit;
use std::ops::Range;

use super::fields::*;
use super::{BodyFraming, MAX_HEADERS, MAX_RESPONSE_HEAD, Version};

/// A parsed response head. Ranges index the buffer given to [`parse_response`].
#[derive(Clone, Debug, Default)]
pub struct ResponseHead {
    pub version: Version,
    /// 100..=599.
    pub status: u16,
    pub reason: Range<usize>,
    /// As in [`RequestHead::headers`](super::RequestHead::headers).
    pub headers: Vec<(Range<usize>, Range<usize>)>,
    pub head_len: usize,
    pub framing: BodyFraming,
    /// The target connection may be reused after this response (never after a 101).
    pub keep_alive: bool,
    /// The target's Content-Length, validated, even when it does not frame the body
    /// (HEAD and 304 responses pass it on to the client).
    pub content_length: Option<u64>,
    /// A 101 whose `Upgrade` names `websocket`: the only 101 that may open a tunnel.
    pub upgrade_websocket: bool,
    pub(super) drop_mask: u128,
    /// Bit i: `headers[i]` is a Transfer-Encoding of a body in a coding other than
    /// `chunked` (`gzip, chunked`); 0 when there is none (see [`Self::transfer_coded`]).
    pub(super) coded_te: u128,
    pub(super) scan: Scan,
}

impl ResponseHead {
    /// The first value of the header `name` (ASCII case-insensitive).
    pub fn header<'b>(&self, buf: &'b [u8], name: &str) -> Option<&'b [u8]> {
        find_header(buf, &self.headers, name)
    }

    /// The body is in a transfer coding besides `chunked` (`Transfer-Encoding: gzip,
    /// chunked`): an HTTP/1.1 client gets the target's Transfer-Encoding as it was;
    /// an HTTP/1.0 client cannot be told (RFC 9112 §6.1), so it is answered 502.
    pub fn transfer_coded(&self) -> bool {
        self.coded_te != 0
    }

    /// As [`RequestHead::clear`](super::RequestHead::clear).
    pub fn clear(&mut self) {
        self.scan = Scan::default();
    }
}

/// Why a target's response head is refused; the caller answers 502 either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseError {
    /// Bad syntax or framing; the reason is a short name.
    Malformed(&'static str),
    /// The head is over [`MAX_RESPONSE_HEAD`].
    TooLarge,
}

impl ResponseError {
    /// A short reason for the access log.
    pub fn reason(self) -> &'static str {
        match self {
            ResponseError::Malformed(r) => r,
            ResponseError::TooLarge => "ResponseHeadTooLarge",
        }
    }
}

/// Parses a target's response head at the start of `buf` into `head`. `Ok(None)`:
/// incomplete. `request_method_head`: the request was HEAD, so the response has no body
/// (nor do 1xx, 204 and 304). Transfer-Encoding with `chunked` last frames the body, and
/// wins over Content-Length (then `keep_alive` is false); other codings, or neither
/// header, make the body close-delimited. Bare-LF line ends are accepted from targets.
pub fn parse_response(
    buf: &[u8],
    request_method_head: bool,
    head: &mut ResponseHead,
) -> Result<Option<()>, ResponseError> {
    use ResponseError::Malformed;
    let head_len = match scan_head(buf, &mut head.scan, usize::MAX, MAX_RESPONSE_HEAD, false) {
        Ok(Some(n)) => n,
        Ok(None) => return Ok(None),
        Err(_) => {
            head.scan = Scan::default();
            return Err(ResponseError::TooLarge);
        }
    };
    let hb = buf.get(..head_len).ok_or(Malformed("Malformed"))?;
    let mut raw = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, hb, &mut raw)
    {
        Ok(httparse::Status::Complete(n)) if n == head_len => {}
        Ok(_) => return Err(Malformed("Malformed")),
        Err(e) => {
            return Err(Malformed(match e {
                httparse::Error::Version => "BadVersion",
                httparse::Error::Status => "BadStatusLine",
                httparse::Error::TooManyHeaders => "TooManyHeaders",
                _ => "BadHeader",
            }));
        }
    }
    let (Some(minor), Some(status)) = (res.version, res.code) else {
        return Err(Malformed("Malformed"));
    };
    if !(100..=599).contains(&status) {
        return Err(Malformed("BadStatus"));
    }
    head.version = if minor == 0 {
        Version::Http10
    } else {
        Version::Http11
    };
    head.status = status;
    head.head_len = head_len;
    head.reason = reason_range(hb);
    head.headers.clear();
    head.drop_mask = 0;
    head.coded_te = 0;
    let mut te_mask = 0u128;
    let mut kinds = [Kind::Other; MAX_HEADERS];
    let (mut cl, mut te, mut conn) = (
        ContentLength::default(),
        TransferEncoding::default(),
        ConnectionTokens::default(),
    );
    let mut upgrade_ws = false;
    for (i, h) in res.headers.iter().enumerate() {
        let (Some(n), Some(v)) = (range_in(hb, h.name.as_bytes()), range_in(hb, h.value)) else {
            return Err(Malformed("Malformed"));
        };
        let kind = Kind::of(h.name.as_bytes());
        if let Some(k) = kinds.get_mut(i) {
            *k = kind;
        }
        match kind {
            Kind::ContentLength => cl.add(h.value),
            Kind::TransferEncoding => {
                te.add(h.value);
                te_mask |= bit(i);
            }
            Kind::Connection => conn.add(h.value),
            Kind::Upgrade => upgrade_ws |= has_token(h.value, b"websocket"),
            _ => {}
        }
        if kind.is_hop_by_hop() {
            head.drop_mask |= bit(i);
        }
        head.headers.push((n, v));
    }
    head.drop_mask |= nominated(hb, &head.headers, &kinds, false).ok_or(Malformed("BadHeader"))?;
    if cl.bad {
        return Err(Malformed("BadContentLength"));
    }
    if cl.differ {
        return Err(Malformed("MultipleContentLength"));
    }
    if te.bad || te.chunked > 1 {
        return Err(Malformed("BadTransferEncoding"));
    }
    let v11 = head.version == Version::Http11;
    let bodiless = status < 200 || status == 204 || status == 304 || request_method_head;
    head.framing = if bodiless {
        BodyFraming::None
    } else if te.any && te.last_chunked {
        BodyFraming::Chunked
    } else if te.any {
        BodyFraming::CloseDelimited
    } else if let Some(n) = cl.value {
        BodyFraming::ContentLength(n)
    } else {
        BodyFraming::CloseDelimited
    };
    head.content_length = cl.value;
    if te.compressed && !bodiless {
        head.coded_te = te_mask;
    }
    let wants = if v11 {
        !conn.close
    } else {
        conn.keep_alive && !conn.close
    };
    // A body framed despite a Content-Length, or chunked from HTTP/1.0, is not trusted
    // to leave the connection at a message boundary (RFC 9112 §6.1, §6.3).
    let doubtful = !bodiless && te.any && (cl.count > 0 || !v11);
    // After a 101 the connection speaks another protocol: never back to the pool.
    head.keep_alive =
        wants && head.framing != BodyFraming::CloseDelimited && !doubtful && status != 101;
    head.upgrade_websocket = status == 101 && upgrade_ws;
    Ok(Some(()))
}
