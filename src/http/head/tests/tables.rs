//! The named tables of accepted and refused requests (one case a line, so unformatted).

use super::*;
use BodyFraming::{Chunked, ContentLength, None as NoBody};
use RequestError::{BadRequest, MethodNotAllowed, NotImplemented, TooManyForwardedFor};

#[rustfmt::skip]
#[test]
fn accepted_requests() {
    // (name, lines, framing, host)
    let cases: &[(&str, &[&str], BodyFraming, Option<&str>)] = &[
        ("plain GET", &["GET / HTTP/1.1", "Host: a"], NoBody, Some("a")),
        ("GET with CL 0", &["GET / HTTP/1.1", "Host: a", "Content-Length: 0"], ContentLength(0), Some("a")),
        ("POST with CL", &["POST /f HTTP/1.1", "Host: a", "Content-Length: 5"], ContentLength(5), Some("a")),
        ("duplicate CL, same value", &["POST / HTTP/1.1", "Host: a", "Content-Length: 5", "Content-Length: 5"], ContentLength(5), Some("a")),
        ("CL list, same value", &["POST / HTTP/1.1", "Host: a", "Content-Length: 5, 5"], ContentLength(5), Some("a")),
        ("CL with leading OWS ( 1)", &["POST / HTTP/1.1", "Host: a", "Content-Length:  1"], ContentLength(1), Some("a")),
        ("CL with trailing OWS", &["POST / HTTP/1.1", "Host: a", "Content-Length: 5 \t"], ContentLength(5), Some("a")),
        ("CL leading zeros", &["POST / HTTP/1.1", "Host: a", "Content-Length: 007"], ContentLength(7), Some("a")),
        ("CL u64::MAX", &["POST / HTTP/1.1", "Host: a", "Content-Length: 18446744073709551615"], ContentLength(u64::MAX), Some("a")),
        ("chunked", &["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked"], Chunked, Some("a")),
        ("chunked, mixed case", &["POST / HTTP/1.1", "Host: a", "transfer-encoding: ChUnKeD"], Chunked, Some("a")),
        // HTAB is legal OWS; the target only ever sees our own `Transfer-Encoding: chunked`.
        ("TE with tab before value", &["POST / HTTP/1.1", "Host: a", "Transfer-Encoding:\tchunked"], Chunked, Some("a")),
        ("TE with trailing OWS", &["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked \t"], Chunked, Some("a")),
        ("names in any case", &["POST / HTTP/1.1", "HOST: a", "content-LENGTH: 3"], ContentLength(3), Some("a")),
        ("HTTP/1.0 without Host", &["GET / HTTP/1.0"], NoBody, None),
        ("HTTP/1.0 body without CL is no body", &["POST / HTTP/1.0", "Host: a"], NoBody, Some("a")),
        ("HTTP/1.1 POST without CL is no body", &["POST / HTTP/1.1", "Host: a"], NoBody, Some("a")),
        ("absolute-form", &["GET http://b.example:8080/p?q HTTP/1.1", "Host: a"], NoBody, Some("b.example:8080")),
        ("absolute-form, upper-case scheme", &["GET HTTPS://b/ HTTP/1.1", "Host: b"], NoBody, Some("b")),
        ("OPTIONS *", &["OPTIONS * HTTP/1.1", "Host: a"], NoBody, Some("a")),
        ("extension method", &["PURGE /x HTTP/1.1", "Host: a"], NoBody, Some("a")),
        // Methods are case-sensitive tokens: these are extension methods, not GET/HEAD.
        ("lower-case method", &["get / HTTP/1.1", "Host: a"], NoBody, Some("a")),
        ("empty header value", &["GET / HTTP/1.1", "Host: a", "X-Empty:"], NoBody, Some("a")),
        ("IPv6 host and port", &["GET / HTTP/1.1", "Host: [::1]:8080"], NoBody, Some("[::1]:8080")),
        ("empty Host", &["GET / HTTP/1.1", "Host:"], NoBody, Some("")),
        ("Transfer_Encoding is not framing", &["POST / HTTP/1.1", "Host: a", "Transfer_Encoding: chunked"], NoBody, Some("a")),
        ("Content_Length is not framing", &["POST / HTTP/1.1", "Host: a", "Content_Length: 5"], NoBody, Some("a")),
        ("30 XFF addresses", &["GET / HTTP/1.1", "Host: a", &xff(30)], NoBody, Some("a")),
    ];
    for (name, lines, framing, host) in cases {
        let raw = req(lines);
        let head = parse(&raw).unwrap_or_else(|e| panic!("{name}: refused {e:?}"));
        assert_eq!(head.framing, *framing, "{name}");
        assert_eq!(head.host(&raw).map(text).as_deref(), *host, "{name}");
        assert_eq!(head.head_len, raw.len(), "{name}");
    }
}

#[rustfmt::skip]
#[test]
fn refused_requests() {
    let bad = BadRequest;
    let cases: &[(&str, &[&str], RequestError)] = &[
        // CL.TE and TE.CL
        ("CL.TE", &["POST / HTTP/1.1", "Host: a", "Content-Length: 6", "Transfer-Encoding: chunked"], bad("BothTeClPresent")),
        ("TE.CL", &["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked", "Content-Length: 3"], bad("BothTeClPresent")),
        ("TE.CL with CL 0", &["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked", "Content-Length: 0"], bad("BothTeClPresent")),
        ("TE gzip with CL: 400 before 501", &["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: gzip", "Content-Length: 3"], bad("BothTeClPresent")),
        // TE.TE obfuscations
        ("TE xchunked", &["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: xchunked"], bad("BadTransferEncoding")),
        ("TE chunked-false", &["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked-false"], bad("BadTransferEncoding")),
        ("TE space before colon", &["POST / HTTP/1.1", "Host: a", "Transfer-Encoding : chunked"], bad("BadTransferEncoding")),
        ("TE chunked then TE x", &["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked", "Transfer-Encoding: x"], bad("BadTransferEncoding")),
        ("TE chunked, identity", &["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked, identity"], bad("BadTransferEncoding")),
        ("TE chunked twice in one", &["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked, chunked"], bad("MultipleTransferEncodingChunked")),
        ("TE chunked twice in two", &["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked", "Transfer-Encoding: chunked"], bad("MultipleTransferEncodingChunked")),
        ("TE chunked;foo", &["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked;foo"], bad("BadTransferEncoding")),
        ("TE chunked with junk after space", &["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked foo"], bad("BadTransferEncoding")),
        ("TE trailing comma", &["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked,"], bad("BadTransferEncoding")),
        ("TE leading comma", &["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: , chunked"], bad("BadTransferEncoding")),
        ("TE empty", &["POST / HTTP/1.1", "Host: a", "Transfer-Encoding:"], bad("BadTransferEncoding")),
        ("TE quoted", &["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: \"chunked\""], bad("BadTransferEncoding")),
        ("TE vertical tab before", &["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: \x0bchunked"], bad("BadTransferEncoding")),
        ("TE vertical tab after", &["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked\x0b"], bad("BadTransferEncoding")),
        ("TE NUL", &["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked\0"], bad("BadTransferEncoding")),
        ("TE obs-fold", &["POST / HTTP/1.1", "Host: a", "Transfer-Encoding:", " chunked"], bad("BadHeader")),
        ("TE identity", &["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: identity"], NotImplemented("UnsupportedTransferEncoding")),
        ("TE gzip", &["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: gzip"], NotImplemented("UnsupportedTransferEncoding")),
        ("TE gzip, chunked", &["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: gzip, chunked"], NotImplemented("UnsupportedTransferEncoding")),
        ("TE gzip then chunked", &["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: gzip", "Transfer-Encoding: chunked"], NotImplemented("UnsupportedTransferEncoding")),
        // Content-Length
        ("CL +1", &["POST / HTTP/1.1", "Host: a", "Content-Length: +1"], bad("BadContentLength")),
        ("CL -1", &["POST / HTTP/1.1", "Host: a", "Content-Length: -1"], bad("BadContentLength")),
        ("CL 0x1", &["POST / HTTP/1.1", "Host: a", "Content-Length: 0x1"], bad("BadContentLength")),
        ("CL 1 1", &["POST / HTTP/1.1", "Host: a", "Content-Length: 1 1"], bad("BadContentLength")),
        ("CL 1a", &["POST / HTTP/1.1", "Host: a", "Content-Length: 1a"], bad("BadContentLength")),
        ("CL empty", &["POST / HTTP/1.1", "Host: a", "Content-Length:"], bad("BadContentLength")),
        ("CL trailing comma", &["POST / HTTP/1.1", "Host: a", "Content-Length: 1,"], bad("BadContentLength")),
        ("CL over u64", &["POST / HTTP/1.1", "Host: a", "Content-Length: 18446744073709551616"], bad("BadContentLength")),
        ("CL space before colon", &["POST / HTTP/1.1", "Host: a", "Content-Length : 1"], bad("BadContentLength")),
        ("CL vertical tab", &["POST / HTTP/1.1", "Host: a", "Content-Length: \x0b1"], bad("BadContentLength")),
        ("CL duplicate, different", &["POST / HTTP/1.1", "Host: a", "Content-Length: 1", "Content-Length: 2"], bad("MultipleContentLength")),
        ("CL list, different", &["POST / HTTP/1.1", "Host: a", "Content-Length: 1, 2"], bad("MultipleContentLength")),
        // Header syntax
        ("NUL in value", &["GET / HTTP/1.1", "Host: a", "X-A: a\0b"], bad("BadHeader")),
        ("CR in value", &["GET / HTTP/1.1", "Host: a", "X-A: a\rb"], bad("BadHeader")),
        ("DEL in value", &["GET / HTTP/1.1", "Host: a", "X-A: a\x7fb"], bad("NonCompliantHeader")),
        ("control bytes in value", &["GET / HTTP/1.1", "Host: a", "X-A: \x01a\x0bb\x1f"], bad("NonCompliantHeader")),
        ("control byte and NUL in value", &["GET / HTTP/1.1", "Host: a", "X-A: \x01a\0"], bad("BadHeader")),
        ("control byte in name", &["GET / HTTP/1.1", "Host: a", "X\x01A: b"], bad("BadHeader")),
        ("control byte in TE", &["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: \x01chunked"], bad("BadTransferEncoding")),
        ("control byte in a TE look-alike", &["POST / HTTP/1.1", "Host: a", "Transfer_Encoding: \x01chunked"], bad("BadHeader")),
        ("obs-fold", &["GET / HTTP/1.1", "Host: a", "X-A: a", " b"], bad("BadHeader")),
        ("obs-fold with tab", &["GET / HTTP/1.1", "Host: a", "X-A: a", "\tb"], bad("BadHeader")),
        ("space before colon", &["GET / HTTP/1.1", "Host: a", "X-A : b"], bad("BadHeader")),
        ("no colon", &["GET / HTTP/1.1", "Host: a", "X-A"], bad("BadHeader")),
        ("empty name", &["GET / HTTP/1.1", "Host: a", ": b"], bad("BadHeader")),
        ("NUL in name", &["GET / HTTP/1.1", "Host: a", "X\0A: b"], bad("BadHeader")),
        // Host
        ("HTTP/1.1 without Host", &["GET / HTTP/1.1"], bad("MissingHost")),
        ("absolute-form without Host", &["GET http://a/ HTTP/1.1"], bad("MissingHost")),
        ("two Hosts", &["GET / HTTP/1.1", "Host: a", "Host: b"], bad("MultipleHost")),
        ("two Hosts, same value", &["GET / HTTP/1.1", "Host: a", "Host: a"], bad("MultipleHost")),
        ("HTTP/1.0 with two Hosts", &["GET / HTTP/1.0", "Host: a", "Host: b"], bad("MultipleHost")),
        ("Host with a space", &["GET / HTTP/1.1", "Host: a b"], bad("BadHost")),
        ("Host with a slash", &["GET / HTTP/1.1", "Host: a/b"], bad("BadHost")),
        ("absolute-form with userinfo", &["GET http://u@a/ HTTP/1.1", "Host: a"], bad("BadUri")),
        ("absolute-form without path", &["GET http://a HTTP/1.1", "Host: a"], bad("BadUri")),
        // Request line
        ("HTTP/2.0", &["GET / HTTP/2.0", "Host: a"], bad("BadVersion")),
        ("HTTP/1.2", &["GET / HTTP/1.2", "Host: a"], bad("NonCompliantVersion")),
        ("HTTP/1.10", &["GET / HTTP/1.10", "Host: a"], bad("BadVersion")),
        ("HTTP/1.2 with NUL in URI", &["GET /a\x00b HTTP/1.2", "Host: a"], bad("BadUri")),
        ("HTTP/1.2 with a control byte in URI", &["GET /a\x01b HTTP/1.2", "Host: a"], bad("AmbiguousUri")),
        ("h2 preface", &["PRI * HTTP/2.0", "", "SM"], bad("BadVersion")),
        ("lower-case version", &["GET / http/1.1", "Host: a"], bad("Malformed")),
        ("space in URI", &["GET /a b HTTP/1.1", "Host: a"], bad("SpaceInUri")),
        ("control byte in URI", &["GET /a\x01b HTTP/1.1", "Host: a"], bad("AmbiguousUri")),
        ("tab in URI", &["GET /a\tb HTTP/1.1", "Host: a"], bad("AmbiguousUri")),
        ("NUL in URI", &["GET /a\x00b HTTP/1.1", "Host: a"], bad("BadUri")),
        ("relative target", &["GET a HTTP/1.1", "Host: a"], bad("BadUri")),
        ("* for GET", &["GET * HTTP/1.1", "Host: a"], bad("BadUri")),
        ("double space", &["GET  / HTTP/1.1", "Host: a"], bad("Malformed")),
        ("trailing space", &["GET / HTTP/1.1 ", "Host: a"], bad("Malformed")),
        ("missing version", &["GET /", "Host: a"], bad("Malformed")),
        ("CONNECT", &["CONNECT a:443 HTTP/1.1", "Host: a:443"], bad("BadMethod")),
        ("lower-case connect", &["connect a:443 HTTP/1.1", "Host: a:443"], bad("BadMethod")),
        ("mixed-case HEAD", &["Head / HTTP/1.1", "Host: a"], bad("BadMethod")),
        ("bad method byte", &["GE(T / HTTP/1.1", "Host: a"], bad("BadMethod")),
        ("leading space", &[" GET / HTTP/1.1", "Host: a"], bad("BadMethod")),
        // 405 and 463, and precedence
        ("TRACE", &["TRACE / HTTP/1.1", "Host: a"], MethodNotAllowed),
        ("lower-case trace", &["trace / HTTP/1.1", "Host: a"], MethodNotAllowed),
        ("TRACE without Host: 400 first", &["TRACE / HTTP/1.1"], bad("MissingHost")),
        ("TRACE with gzip: 501 first", &["TRACE / HTTP/1.1", "Host: a", "Transfer-Encoding: gzip"], NotImplemented("UnsupportedTransferEncoding")),
        ("gzip with space in URI: 400 first", &["POST /a b HTTP/1.1", "Host: a", "Transfer-Encoding: gzip"], bad("SpaceInUri")),
        ("TRACE with 31 XFF: 405 first", &["TRACE / HTTP/1.1", "Host: a", &xff(31)], MethodNotAllowed),
        ("31 XFF addresses", &["GET / HTTP/1.1", "Host: a", &xff(31)], TooManyForwardedFor),
        ("31 XFF with CL conflict: 400 first", &["GET / HTTP/1.1", "Host: a", &xff(31), "Content-Length: 1, 2"], bad("MultipleContentLength")),
        ("31 XFF with gzip: 501 first", &["GET / HTTP/1.1", "Host: a", &xff(31), "Transfer-Encoding: gzip"], NotImplemented("UnsupportedTransferEncoding")),
    ];
    for (name, lines, want) in cases {
        assert_eq!(parse(&req(lines)).map(|h| h.framing), Err(*want), "{name}");
    }
}

#[rustfmt::skip]
#[test]
fn keep_alive_expect_and_upgrade() {
    // (name, lines, keep_alive, expect_continue, upgrade_websocket)
    let cases: &[(&str, &[&str], bool, bool, bool)] = &[
        ("1.1 default", &["GET / HTTP/1.1", "Host: a"], true, false, false),
        ("1.1 close", &["GET / HTTP/1.1", "Host: a", "Connection: close"], false, false, false),
        ("1.1 close in a list", &["GET / HTTP/1.1", "Host: a", "Connection: keep-alive, CLOSE"], false, false, false),
        ("1.1 close in a second header", &["GET / HTTP/1.1", "Host: a", "Connection: x", "Connection: close"], false, false, false),
        ("1.0 default", &["GET / HTTP/1.0"], false, false, false),
        ("1.0 keep-alive", &["GET / HTTP/1.0", "Connection: Keep-Alive"], true, false, false),
        ("1.0 chunked closes", &["POST / HTTP/1.0", "Connection: keep-alive", "Transfer-Encoding: chunked"], false, false, false),
        ("expect with body", &["POST / HTTP/1.1", "Host: a", "Expect: 100-Continue", "Content-Length: 1"], true, true, false),
        ("expect chunked", &["POST / HTTP/1.1", "Host: a", "Expect: 100-continue", "Transfer-Encoding: chunked"], true, true, false),
        ("expect without body", &["GET / HTTP/1.1", "Host: a", "Expect: 100-continue"], true, false, false),
        ("expect with an empty body", &["POST / HTTP/1.1", "Host: a", "Expect: 100-continue", "Content-Length: 0"], true, false, false),
        ("expect in 1.0 ignored", &["POST / HTTP/1.0", "Expect: 100-continue", "Content-Length: 1"], false, false, false),
        ("other expectation", &["POST / HTTP/1.1", "Host: a", "Expect: x", "Content-Length: 1"], true, false, false),
        ("websocket", &["GET /ws HTTP/1.1", "Host: a", "Upgrade: WebSocket", "Connection: keep-alive, Upgrade"], true, false, true),
        ("websocket without Connection: upgrade", &["GET /ws HTTP/1.1", "Host: a", "Upgrade: websocket"], true, false, false),
        ("h2c", &["GET / HTTP/1.1", "Host: a", "Upgrade: h2c", "Connection: Upgrade, HTTP2-Settings"], true, false, false),
        ("websocket by POST", &["POST /ws HTTP/1.1", "Host: a", "Upgrade: websocket", "Connection: upgrade"], true, false, false),
        ("websocket with a body", &["GET /ws HTTP/1.1", "Host: a", "Upgrade: websocket", "Connection: upgrade", "Content-Length: 2"], true, false, false),
        ("websocket in 1.0", &["GET /ws HTTP/1.0", "Upgrade: websocket", "Connection: upgrade"], false, false, false),
    ];
    for (name, lines, ka, expect, ws) in cases {
        let h = ok(&req(lines));
        assert_eq!((h.keep_alive, h.expect_continue, h.upgrade_websocket), (*ka, *expect, *ws), "{name}");
    }
}

/// Every header name that matters is known in any letter case; the framing names
/// spelt with `_` are suspicious; near misses of every length are ordinary.
#[test]
fn header_kinds_by_name() {
    use super::super::fields::Kind;
    let known = [
        ("host", Kind::Host),
        ("content-length", Kind::ContentLength),
        ("transfer-encoding", Kind::TransferEncoding),
        ("connection", Kind::Connection),
        ("keep-alive", Kind::KeepAlive),
        ("proxy-connection", Kind::ProxyConnection),
        ("te", Kind::Te),
        ("trailer", Kind::Trailer),
        ("upgrade", Kind::Upgrade),
        ("expect", Kind::Expect),
        ("x-forwarded-for", Kind::ForwardedFor),
        ("x-forwarded-proto", Kind::ForwardedProto),
        ("x-forwarded-port", Kind::ForwardedPort),
    ];
    for (name, kind) in known {
        assert_eq!(Kind::of(name.as_bytes()), kind, "{name}");
        assert_eq!(
            Kind::of(name.to_ascii_uppercase().as_bytes()),
            kind,
            "{name}"
        );
        // One letter changed: same length, another name.
        let mut near = name.as_bytes().to_vec();
        near[0] = b'z';
        assert_eq!(Kind::of(&near), Kind::Other, "{name}");
    }
    for name in ["Transfer_Encoding", "content_length", "TRANSFER_encoding"] {
        assert_eq!(Kind::of(name.as_bytes()), Kind::Suspicious, "{name}");
    }
    for name in [
        "",
        "t",
        "hos",
        "hostx",
        "server",
        "date",
        "x-forwarded_for",
        "content-type",
    ] {
        assert_eq!(Kind::of(name.as_bytes()), Kind::Other, "{name}");
    }
}
