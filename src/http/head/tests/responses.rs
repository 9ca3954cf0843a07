use super::*;
use BodyFraming::{Chunked, CloseDelimited, ContentLength, None as NoBody};
use ResponseError::{Malformed, TooLarge};

/// (name, raw, request was HEAD, framing, keep_alive, content_length)
type ResponseCase = (
    &'static str,
    &'static [u8],
    bool,
    BodyFraming,
    bool,
    Option<u64>,
);

#[rustfmt::skip]
#[test]
fn response_framing_and_keep_alive() {
    let cases: &[ResponseCase] = &[
        ("200 with CL", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false, ContentLength(5), true, Some(5)),
        ("CL duplicate, same", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", false, ContentLength(5), true, Some(5)),
        ("chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false, Chunked, true, None),
        ("chunked wins over CL, then close", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", false, Chunked, false, Some(5)),
        ("gzip, chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", false, Chunked, true, None),
        ("gzip only: close-delimited", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false, CloseDelimited, false, None),
        ("chunked not last: close-delimited", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", false, CloseDelimited, false, None),
        ("neither: close-delimited", b"HTTP/1.1 200 OK\r\n\r\n", false, CloseDelimited, false, None),
        ("Connection: close", b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", false, ContentLength(0), false, Some(0)),
        ("HEAD with CL", b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", true, NoBody, true, Some(99)),
        ("HEAD with chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true, NoBody, true, None),
        ("HEAD with neither", b"HTTP/1.1 200 OK\r\n\r\n", true, NoBody, true, None),
        ("204", b"HTTP/1.1 204 No Content\r\n\r\n", false, NoBody, true, None),
        ("204 with CL", b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n", false, NoBody, true, Some(3)),
        ("304 with CL", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 12\r\n\r\n", false, NoBody, true, Some(12)),
        ("100", b"HTTP/1.1 100 Continue\r\n\r\n", false, NoBody, true, None),
        ("103", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", false, NoBody, true, None),
        ("101", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", false, NoBody, false, None),
        ("1.0 with CL closes", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n", false, ContentLength(2), false, Some(2)),
        ("1.0 keep-alive", b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n", false, ContentLength(2), true, Some(2)),
        ("1.0 close-delimited", b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n", false, CloseDelimited, false, None),
        ("1.0 chunked closes", b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n", false, Chunked, false, None),
        ("bare LF accepted", b"HTTP/1.1 200 OK\nContent-Length: 1\n\n", false, ContentLength(1), true, Some(1)),
        ("leading empty line", b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n", false, ContentLength(1), true, Some(1)),
    ];
    for (name, raw, head_req, framing, ka, cl) in cases {
        let h = resp(raw, *head_req).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!((h.framing, h.keep_alive, h.content_length), (*framing, *ka, *cl), "{name}");
        assert_eq!(h.head_len, raw.len(), "{name}");
    }
}

#[rustfmt::skip]
#[test]
fn refused_responses() {
    let cases: &[(&str, &[u8], ResponseError)] = &[
        ("CL differ", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", Malformed("MultipleContentLength")),
        ("CL list differ", b"HTTP/1.1 200 OK\r\nContent-Length: 1,2\r\n\r\n", Malformed("MultipleContentLength")),
        ("CL signed", b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n", Malformed("BadContentLength")),
        ("chunked twice", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", Malformed("BadTransferEncoding")),
        ("xchunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\n", Malformed("BadTransferEncoding")),
        ("HTTP/2", b"HTTP/2 200 OK\r\n\r\n", Malformed("BadVersion")),
        ("two-digit status", b"HTTP/1.1 20 OK\r\n\r\n", Malformed("BadStatusLine")),
        ("status 600", b"HTTP/1.1 600 X\r\n\r\n", Malformed("BadStatus")),
        ("status 099", b"HTTP/1.1 099 X\r\n\r\n", Malformed("BadStatus")),
        ("NUL in value", b"HTTP/1.1 200 OK\r\nX: a\0\r\n\r\n", Malformed("BadHeader")),
        ("obs-fold", b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", Malformed("BadHeader")),
        ("space before colon", b"HTTP/1.1 200 OK\r\nX : a\r\n\r\n", Malformed("BadHeader")),
        ("garbage", b"hello\r\n\r\n", Malformed("BadVersion")),
    ];
    for (name, raw, want) in cases {
        assert_eq!(resp(raw, false).map(|h| h.framing), Err(*want), "{name}");
    }
}

#[test]
fn response_head_over_32_kib_is_too_large() {
    let head_of = |len: usize| {
        let mut h = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        h.resize(len - 4, b'v');
        h.extend_from_slice(b"\r\n\r\n");
        h
    };
    assert!(resp(&head_of(MAX_RESPONSE_HEAD), false).is_ok());
    assert_eq!(
        resp(&head_of(MAX_RESPONSE_HEAD + 1), false).map(|_| ()),
        Err(TooLarge)
    );
    let mut head = ResponseHead::default();
    let big = head_of(MAX_RESPONSE_HEAD + 10);
    assert_eq!(
        parse_response(&big[..MAX_RESPONSE_HEAD - 1], false, &mut head),
        Ok(None)
    );
    assert_eq!(
        parse_response(&big[..MAX_RESPONSE_HEAD], false, &mut head),
        Err(TooLarge)
    );
}

#[test]
fn reason_phrase_and_status() {
    let raw = b"HTTP/1.1 404 Not  Found \xff\r\n\r\n";
    let h = resp(raw, false).unwrap();
    assert_eq!((h.status, h.version), (404, Version::Http11));
    assert_eq!(&raw[h.reason.clone()], b"Not  Found \xff");
    let raw = b"HTTP/1.1 200\r\n\r\n";
    assert_eq!(resp(raw, false).unwrap().reason, 12..12);
    let raw = b"HTTP/1.1 200 \r\n\r\n";
    assert!(resp(raw, false).unwrap().reason.is_empty());
}

#[test]
fn websocket_101_is_recognised() {
    let ws = resp(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        false,
    );
    assert!(ws.unwrap().upgrade_websocket);
    let h2c = resp(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n",
        false,
    );
    assert!(!h2c.unwrap().upgrade_websocket);
    let ok200 = resp(
        b"HTTP/1.1 200 OK\r\nUpgrade: websocket\r\nContent-Length: 0\r\n\r\n",
        false,
    );
    assert!(!ok200.unwrap().upgrade_websocket);
}

#[test]
fn every_prefix_of_a_response_is_incomplete() {
    let full = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello";
    let end = full.len() - 5;
    let mut resumed = ResponseHead::default();
    for cut in 0..end {
        let mut fresh = ResponseHead::default();
        assert_eq!(
            parse_response(&full[..cut], false, &mut fresh),
            Ok(None),
            "prefix {cut}"
        );
        assert_eq!(
            parse_response(&full[..cut], false, &mut resumed),
            Ok(None),
            "resumed {cut}"
        );
    }
    assert_eq!(parse_response(full, false, &mut resumed), Ok(Some(())));
    assert_eq!((resumed.head_len, resumed.framing), (end, ContentLength(5)));
}

#[test]
fn response_errors_have_reasons() {
    assert_eq!(TooLarge.reason(), "ResponseHeadTooLarge");
    assert_eq!(Malformed("BadHeader").reason(), "BadHeader");
}
