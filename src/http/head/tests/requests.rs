use super::*;
use BodyFraming::{Chunked, ContentLength, None as NoBody};
use RequestError::{BadRequest, MethodNotAllowed, NotImplemented, TooManyForwardedFor};

#[test]
fn forwarded_for_counts_over_all_headers() {
    let thirty = req(&[
        "GET / HTTP/1.1",
        "Host: a",
        &xff(20),
        &xff(10),
        "X-Forwarded-For: ,, ",
    ]);
    assert_eq!(ok(&thirty).xff_count, 30);
    let over = req(&["GET / HTTP/1.1", "Host: a", &xff(20), &xff(11)]);
    assert_eq!(parse(&over).map(|_| ()), Err(TooManyForwardedFor));
}

#[test]
fn bare_lf_line_ends_are_refused() {
    assert_eq!(
        parse(b"GET / HTTP/1.1\nHost: a\n\n").map(|_| ()),
        Err(BadRequest("Malformed"))
    );
    assert_eq!(
        parse(b"GET / HTTP/1.1\r\nHost: a\n\r\n").map(|_| ()),
        Err(BadRequest("BadHeader"))
    );
    assert_eq!(
        parse(b"GET / HTTP/1.1\r\nHost: a\r\n\n").map(|_| ()),
        Err(BadRequest("BadHeader"))
    );
}

#[test]
fn obs_text_in_values_is_kept() {
    let raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-Name: caf\xc3\xa9 \xff\r\n\r\n";
    assert_eq!(
        ok(raw).header(raw, "x-name"),
        Some(&b"caf\xc3\xa9 \xff"[..])
    );
}

#[test]
fn non_utf8_target_is_refused() {
    let raw = b"GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(parse(raw).map(|_| ()), Err(BadRequest("BadUri")));
}

#[test]
fn ranges_point_into_the_buffer() {
    let raw = req(&[
        "GET /a?b=1 HTTP/1.1",
        "Host: example.com",
        "User-Agent: t/1",
        "X-Empty:",
    ]);
    let h = ok(&raw);
    assert_eq!(h.method(&raw), b"GET");
    assert_eq!(h.method_kind, Method::Get);
    assert_eq!(h.target(&raw), b"/a?b=1");
    assert_eq!(h.version, Version::Http11);
    let names: Vec<String> = h
        .headers
        .iter()
        .map(|(n, v)| format!("{}={}", text(&raw[n.clone()]), text(&raw[v.clone()])))
        .collect();
    assert_eq!(names, ["Host=example.com", "User-Agent=t/1", "X-Empty="]);
    assert_eq!(h.header(&raw, "user-agent"), Some(&b"t/1"[..]));
    assert_eq!(h.header(&raw, "missing"), None);
}

#[test]
fn absolute_form_target_is_forwarded_as_origin_form() {
    let raw = req(&["GET http://B.example/p/q?x=1 HTTP/1.1", "Host: other"]);
    let h = ok(&raw);
    assert!(h.absolute_form);
    assert_eq!(h.target(&raw), b"/p/q?x=1");
    assert_eq!(h.host(&raw), Some(&b"B.example"[..]));
}

#[test]
fn every_prefix_of_a_request_is_incomplete() {
    let full = req(&[
        "POST /upload?x=1 HTTP/1.1",
        "Host: example.com",
        "Content-Length: 5",
        "X-A: b",
    ]);
    for cut in 0..full.len() {
        let mut fresh = RequestHead::default();
        assert_eq!(
            parse_request(&full[..cut], &Limits::default(), &mut fresh),
            Ok(None),
            "prefix {cut}"
        );
    }
    // The same, resuming one head over a growing buffer, byte by byte.
    let mut head = RequestHead::default();
    for cut in 0..full.len() {
        assert_eq!(
            parse_request(&full[..cut], &Limits::default(), &mut head),
            Ok(None),
            "resumed prefix {cut}"
        );
    }
    assert_eq!(
        parse_request(&full, &Limits::default(), &mut head),
        Ok(Some(()))
    );
    assert_eq!(head.framing, ContentLength(5));
    assert_eq!(head.head_len, full.len());
}

#[test]
fn every_split_point_gives_the_same_head() {
    let full = req(&[
        "GET /x HTTP/1.1",
        "Host: a",
        "Connection: close",
        "X-Forwarded-For: 1.2.3.4",
    ]);
    let whole = ok(&full);
    for cut in 0..full.len() {
        let mut head = RequestHead::default();
        assert_eq!(
            parse_request(&full[..cut], &Limits::default(), &mut head),
            Ok(None)
        );
        assert_eq!(
            parse_request(&full, &Limits::default(), &mut head),
            Ok(Some(()))
        );
        assert_eq!(format!("{head:?}"), format!("{whole:?}"), "split at {cut}");
    }
}

#[test]
fn pipelined_requests_are_parsed_one_after_another() {
    let first = req(&["GET /1 HTTP/1.1", "Host: a"]);
    let second = req(&["POST /2 HTTP/1.1", "Host: a", "Content-Length: 3"]);
    let mut buf = [
        first.clone(),
        second.clone(),
        b"abcGET /3 HTTP/1.1\r\nHo".to_vec(),
    ]
    .concat();
    let mut head = RequestHead::default();
    assert_eq!(
        parse_request(&buf, &Limits::default(), &mut head),
        Ok(Some(()))
    );
    assert_eq!(head.head_len, first.len());
    assert_eq!(head.target(&buf), b"/1");
    buf.drain(..head.head_len);
    assert_eq!(
        parse_request(&buf, &Limits::default(), &mut head),
        Ok(Some(()))
    );
    assert_eq!(
        (head.head_len, head.framing),
        (second.len(), ContentLength(3))
    );
    buf.drain(..head.head_len + 3);
    assert_eq!(parse_request(&buf, &Limits::default(), &mut head), Ok(None));
    buf.extend_from_slice(b"st: a\r\n\r\n");
    assert_eq!(
        parse_request(&buf, &Limits::default(), &mut head),
        Ok(Some(()))
    );
    assert_eq!(head.target(&buf), b"/3");
}

#[test]
fn http10_body_without_length_is_the_next_request() {
    let buf = b"POST /a HTTP/1.0\r\nHost: a\r\n\r\nGET /b HTTP/1.0\r\n\r\n";
    let mut head = RequestHead::default();
    assert_eq!(
        parse_request(buf, &Limits::default(), &mut head),
        Ok(Some(()))
    );
    assert_eq!(head.framing, NoBody);
    let rest = &buf[head.head_len..];
    assert_eq!(
        parse_request(rest, &Limits::default(), &mut head),
        Ok(Some(()))
    );
    assert_eq!(head.target(rest), b"/b");
}

#[test]
fn leading_empty_lines_are_skipped() {
    let raw = b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let h = ok(raw);
    assert_eq!((h.head_len, h.target(raw)), (raw.len(), &b"/"[..]));
}

/// A request line of exactly `len` bytes (without CRLF).
fn request_line(len: usize) -> String {
    format!("GET /{} HTTP/1.1", "a".repeat(len - 14))
}

/// A header line of exactly `len` bytes (without CRLF).
fn header_line(len: usize) -> String {
    format!("X-Fill: {}", "v".repeat(len - 8))
}

/// A whole head of exactly `len` bytes, no line over 16 000.
fn head_of(len: usize) -> Vec<u8> {
    let mut lines = vec!["GET / HTTP/1.1".to_string(), "Host: a".to_string()];
    let mut left = len - (16 + 9 + 2);
    while left > 0 {
        let line = left.clamp(10, 16_002);
        let line = if left - line < 10 && left - line > 0 {
            line - 10
        } else {
            line
        };
        lines.push(header_line(line - 2));
        left -= line;
    }
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let raw = req(&refs);
    assert_eq!(raw.len(), len);
    raw
}

#[test]
fn size_limits_are_exact() {
    let limits = Limits::default();
    let at = |lines: &[&str]| parse(&req(lines)).map(|_| ());
    assert_eq!(at(&[&request_line(16 * 1024), "Host: a"]), Ok(()));
    assert_eq!(
        at(&[&request_line(16 * 1024 + 1), "Host: a"]),
        Err(BadRequest("LineTooLong"))
    );
    assert_eq!(
        at(&["GET / HTTP/1.1", "Host: a", &header_line(16 * 1024)]),
        Ok(())
    );
    assert_eq!(
        at(&["GET / HTTP/1.1", "Host: a", &header_line(16 * 1024 + 1)]),
        Err(BadRequest("HeaderTooLong"))
    );
    assert_eq!(parse(&head_of(limits.max_head)).map(|_| ()), Ok(()));
    assert_eq!(
        parse(&head_of(limits.max_head + 1)).map(|_| ()),
        Err(BadRequest("HeadTooLarge"))
    );
}

#[test]
fn size_limits_apply_before_the_head_is_complete() {
    let mut head = RequestHead::default();
    let limits = Limits::default();
    let line = request_line(16 * 1024 + 1);
    assert_eq!(
        parse_request(&line.as_bytes()[..16 * 1024], &limits, &mut head),
        Ok(None)
    );
    assert_eq!(
        parse_request(line.as_bytes(), &limits, &mut head),
        Err(BadRequest("LineTooLong"))
    );
    // A CR that may start the line end does not count yet.
    let mut at_limit = request_line(16 * 1024).into_bytes();
    at_limit.push(b'\r');
    assert_eq!(
        parse_request(&at_limit, &limits, &mut RequestHead::default()),
        Ok(None)
    );
    let header = format!("GET / HTTP/1.1\r\n{}", header_line(16 * 1024 + 1));
    assert_eq!(
        parse_request(header.as_bytes(), &limits, &mut head),
        Err(BadRequest("HeaderTooLong"))
    );
    let big = head_of(limits.max_head + 100);
    assert_eq!(
        parse_request(&big[..limits.max_head - 1], &limits, &mut head),
        Ok(None)
    );
    assert_eq!(
        parse_request(&big[..limits.max_head], &limits, &mut head),
        Err(BadRequest("HeadTooLarge"))
    );
}

/// Found by fuzzing (fuzz/regressions/request_head/limit-order-*): a long header line
/// that also runs past the head limit was `HeaderTooLong` when read whole but
/// `HeadTooLarge` when read in pieces. The limit a byte-at-a-time reader crosses first
/// now wins however the bytes arrive.
#[test]
fn limit_errors_do_not_depend_on_how_the_bytes_arrive() {
    let limits = Limits::default();
    let whole_and_stepped = |raw: &[u8]| {
        let whole = parse_request(raw, &limits, &mut RequestHead::default());
        let mut head = RequestHead::default();
        let mut stepped = Ok(None);
        for end in (0..=raw.len()).step_by(7).chain([raw.len()]) {
            stepped = parse_request(&raw[..end], &limits, &mut head);
            if stepped != Ok(None) {
                break;
            }
        }
        (whole, stepped)
    };
    // The head limit falls inside the long line's first 16 KiB: HeadTooLarge.
    let mut late = head_of(limits.max_head - 8 * 1024)[..limits.max_head - 8 * 1024 - 2].to_vec();
    late.extend_from_slice(header_line(20 * 1024).as_bytes());
    late.extend_from_slice(b"\r\n\r\n");
    let e = Err(BadRequest("HeadTooLarge"));
    assert_eq!(whole_and_stepped(&late), (e, e));
    // The long line crosses 16 KiB before the head reaches 64 KiB: HeaderTooLong.
    let mut early =
        head_of(limits.max_head - 20 * 1024)[..limits.max_head - 20 * 1024 - 2].to_vec();
    early.extend_from_slice(header_line(20 * 1024).as_bytes());
    early.extend_from_slice(b"\r\n\r\n");
    let e = Err(BadRequest("HeaderTooLong"));
    assert_eq!(whole_and_stepped(&early), (e, e));
    // A bare LF after a line that is already too long: the length was seen first.
    let mut bare = b"GET / HTTP/1.1\r\n".to_vec();
    bare.extend_from_slice(header_line(16 * 1024 + 1).as_bytes());
    bare.extend_from_slice(b"\n\r\n");
    let e = Err(BadRequest("HeaderTooLong"));
    assert_eq!(whole_and_stepped(&bare), (e, e));
}

#[test]
fn too_many_headers() {
    let mut lines = vec!["GET / HTTP/1.1".to_string(), "Host: a".to_string()];
    lines.extend((1..MAX_HEADERS).map(|i| format!("X-{i}: v")));
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert_eq!(ok(&req(&refs)).headers.len(), MAX_HEADERS);
    lines.push("X-Last: v".into());
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert_eq!(
        parse(&req(&refs)).map(|_| ()),
        Err(BadRequest("TooManyHeaders"))
    );
}

#[test]
fn te_with_cl_can_be_relaxed() {
    let relaxed = Limits {
        reject_te_with_cl: false,
        ..Limits::default()
    };
    let raw = req(&[
        "POST / HTTP/1.1",
        "Host: a",
        "Content-Length: 6",
        "Transfer-Encoding: chunked",
    ]);
    let h = parse_with(&raw, &relaxed).unwrap();
    assert_eq!(
        (h.framing, h.te_with_cl, h.keep_alive),
        (Chunked, true, false)
    );
    // Length that cannot be determined stays refused.
    let bad = req(&[
        "POST / HTTP/1.1",
        "Host: a",
        "Content-Length: 6",
        "Transfer-Encoding: xchunked",
    ]);
    assert_eq!(
        parse_with(&bad, &relaxed).map(|_| ()),
        Err(BadRequest("BadTransferEncoding"))
    );
    let gzip = req(&[
        "POST / HTTP/1.1",
        "Host: a",
        "Content-Length: 6",
        "Transfer-Encoding: gzip",
    ]);
    assert_eq!(
        parse_with(&gzip, &relaxed).map(|_| ()),
        Err(NotImplemented("UnsupportedTransferEncoding"))
    );
}

#[test]
fn desync_facts_are_recorded() {
    let h = ok(&req(&[
        "POST / HTTP/1.1",
        "Host: a",
        "Content-Length: 2",
        "content-length: 2",
    ]));
    assert!(h.duplicate_content_length && !h.suspicious_header && !h.te_with_cl);
    let h = ok(&req(&[
        "POST / HTTP/1.1",
        "Host: a",
        "Transfer_Encoding: chunked",
    ]));
    assert!(h.suspicious_header && !h.duplicate_content_length);
}

/// A 501 head is classified for desync mitigation before it is answered, so its
/// fields are its own, never those of the request before it on the connection.
#[test]
fn a_501_head_sets_its_own_fields() {
    let mut head = RequestHead::default();
    let first = req(&[
        "POST / HTTP/1.1",
        "Host: a",
        "Content-Length: 5",
        "Transfer_Encoding: x",
    ]);
    assert_eq!(
        parse_request(&first, &Limits::default(), &mut head),
        Ok(Some(()))
    );
    assert!(head.suspicious_header);
    let gzip = req(&["GET / HTTP/1.1", "Host: a", "Transfer-Encoding: gzip"]);
    assert_eq!(
        parse_request(&gzip, &Limits::default(), &mut head),
        Err(NotImplemented("UnsupportedTransferEncoding"))
    );
    assert_eq!(head.framing, BodyFraming::Chunked);
    assert!(!head.suspicious_header && !head.te_with_cl && !head.duplicate_content_length);
}

#[test]
fn errors_know_their_status() {
    assert_eq!(BadRequest("x").status(), 400);
    assert_eq!(NotImplemented("x").status(), 501);
    assert_eq!(MethodNotAllowed.status(), 405);
    assert_eq!(TooManyForwardedFor.status(), 463);
    assert_eq!(BadRequest("SpaceInUri").reason(), "SpaceInUri");
}

#[test]
fn a_reused_head_is_reset_between_requests() {
    let mut head = RequestHead::default();
    let a = req(&[
        "POST http://x/ HTTP/1.1",
        "Host: a",
        "Content-Length: 5",
        "X-Forwarded-For: 1.1.1.1",
    ]);
    assert_eq!(
        parse_request(&a, &Limits::default(), &mut head),
        Ok(Some(()))
    );
    let b = req(&["GET / HTTP/1.0"]);
    assert_eq!(
        parse_request(&b, &Limits::default(), &mut head),
        Ok(Some(()))
    );
    assert_eq!(
        (
            head.framing,
            head.host.clone(),
            head.absolute_form,
            head.xff_count
        ),
        (NoBody, None, false, 0)
    );
    assert!(head.headers.is_empty());
}

#[test]
fn connection_may_name_a_bounded_number_of_headers() {
    let names = |n: usize| {
        let list: Vec<String> = (0..n).map(|i| format!("X-{i}")).collect();
        format!("Connection: close, {}, ,keep-alive", list.join(", "))
    };
    let at_limit = req(&["GET / HTTP/1.1", "Host: a", &names(MAX_CONNECTION_OPTIONS)]);
    assert!(!ok(&at_limit).keep_alive);
    let over = req(&[
        "GET / HTTP/1.1",
        "Host: a",
        &names(MAX_CONNECTION_OPTIONS + 1),
    ]);
    assert_eq!(parse(&over).map(|_| ()), Err(BadRequest("BadHeader")));
    let raw = format!(
        "HTTP/1.1 200 OK\r\n{}\r\n\r\n",
        names(MAX_CONNECTION_OPTIONS + 1)
    );
    assert_eq!(
        resp(raw.as_bytes(), false).map(|_| ()),
        Err(ResponseError::Malformed("BadHeader"))
    );
}

/// A target with spaces is re-written with `%20` in place, pipelined bytes kept, and
/// then parses; other lines are left alone.
#[test]
fn spaces_in_the_target_are_encoded_in_place() {
    let mut buf =
        b"\r\nGET /a b/c  d?q=x y HTTP/1.1\r\nHost: a\r\n\r\nGET /next HTTP/1.1\r\n".to_vec();
    let mut h = RequestHead::default();
    assert_eq!(
        parse_request(&buf, &Limits::default(), &mut h),
        Err(RequestError::BadRequest("SpaceInUri"))
    );
    assert!(encode_target(&mut buf));
    assert_eq!(
        buf,
        b"\r\nGET /a%20b/c%20%20d?q=x%20y HTTP/1.1\r\nHost: a\r\n\r\nGET /next HTTP/1.1\r\n"
            .to_vec()
    );
    let mut h = RequestHead::default();
    assert_eq!(
        parse_request(&buf, &Limits::default(), &mut h),
        Ok(Some(()))
    );
    assert_eq!(h.target(&buf), b"/a%20b/c%20%20d?q=x%20y");
    for line in [
        &b"GET / HTTP/1.1\r\n"[..],
        b"GET /\r\n",
        b"GET\r\n",
        b"no line end",
    ] {
        let mut b = line.to_vec();
        assert!(!encode_target(&mut b), "{line:?}");
        assert_eq!(b, line);
    }
}

/// Control characters other than NUL and CR in the target are `AmbiguousUri`, and
/// are percent-encoded like spaces (upper-case hex); NUL stays `BadUri`.
#[test]
fn control_characters_in_the_target_are_encoded_in_place() {
    let mut buf = b"GET /a\x01b\tc d\x7f HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
    let mut h = RequestHead::default();
    assert_eq!(
        parse_request(&buf, &Limits::default(), &mut h),
        Err(RequestError::BadRequest("AmbiguousUri"))
    );
    assert!(encode_target(&mut buf));
    assert_eq!(
        buf,
        b"GET /a%01b%09c%20d%7F HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()
    );
    let mut h = RequestHead::default();
    assert_eq!(
        parse_request(&buf, &Limits::default(), &mut h),
        Ok(Some(()))
    );
    let nul = b"GET /a\x00b HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(
        parse_request(nul, &Limits::default(), &mut RequestHead::default()),
        Err(RequestError::BadRequest("BadUri"))
    );
}

/// Control characters other than NUL and CR in header values become spaces in
/// place (names, the request line, the body and pipelined bytes untouched), and the
/// head then parses.
#[test]
fn control_characters_in_header_values_are_blanked_in_place() {
    let mut buf =
        b"GET /a\x01 HTTP/1.1\r\nHost: a\r\nX-A: x\x01y\x7f\r\nX-B: \x0bz\r\n\r\nX-C: \x01\r\n"
            .to_vec();
    assert!(blank_controls_in_header_values(&mut buf));
    assert_eq!(
        buf,
        b"GET /a\x01 HTTP/1.1\r\nHost: a\r\nX-A: x y \r\nX-B:  z\r\n\r\nX-C: \x01\r\n".to_vec()
    );
    let mut buf = b"GET / HTTP/1.1\r\nHost: a\r\nX-A: x\x01y\r\n\r\n".to_vec();
    let mut h = RequestHead::default();
    assert_eq!(
        parse_request(&buf, &Limits::default(), &mut h),
        Err(RequestError::BadRequest("NonCompliantHeader"))
    );
    assert!(blank_controls_in_header_values(&mut buf));
    let mut h = RequestHead::default();
    assert_eq!(
        parse_request(&buf, &Limits::default(), &mut h),
        Ok(Some(()))
    );
    // Framing headers and malformed names are left for the parser to refuse.
    for raw in [
        &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \x0b1\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\x0b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX\x01A: \x01\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        let mut b = raw.to_vec();
        assert!(!blank_controls_in_header_values(&mut b), "{raw:?}");
        assert_eq!(b, raw);
    }
}
