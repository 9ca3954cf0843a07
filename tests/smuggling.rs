//! Request-smuggling regressions: the framing bugs other proxies and servers shipped
//! (HAProxy, Pingora, nginx, Node's llhttp, Kestrel, h11, ...), each replayed as
//! bytes through fulcrum's three desync modes in front of a raw-socket target that
//! records everything (the lab of tests/common/lab.rs, shared with `desync.rs`,
//! whose cases are not repeated here). In every case no hidden request reaches the
//! target (`/smuggled` never arrives as a request, nor `/internal`, which a rule
//! answers 403), every head the target gets frames its body one way only, and the
//! status and connection handling follow SPEC §3.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;

/// `POST path` with extra header lines and a body framed by its Content-Length.
fn post_cl(path: &str, extra: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: test.local\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// `POST /chunked` with a chunked body given raw.
fn post_chunked(body: &str) -> String {
    format!(
        "POST /chunked HTTP/1.1\r\nHost: test.local\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
    )
}

/// A chunked body whose first size line is `line` (without its line end): a lenient
/// parser that reads past the fault finds the smuggled request after a last chunk.
fn bad_chunk(line: &str) -> String {
    post_chunked(&format!("{line}\r\nhello\r\n0\r\n\r\n{SMUGGLED}"))
}

/// The body of the target's last request.
fn last_body(b: &RawBackend) -> String {
    b.requests()
        .last()
        .map(|r| text(&r.body))
        .unwrap_or_default()
}

/// CVE-2019-18277 (HAProxy, legacy mode): `Transfer-Encoding: \x0bchunked` was not
/// recognised as chunked by HAProxy, which framed the request by its Content-Length,
/// while a backend that trims all whitespace read it chunked. A control character
/// in a framing header is refused in every mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_cve_2019_18277_vertical_tab_before_chunked() {
    bounded(120, async {
        let lab = lab().await;
        let mut wrong = Vec::new();
        for (what, te) in [
            ("vertical tab", "Transfer-Encoding: \x0bchunked\r\n"),
            ("form feed", "Transfer-Encoding: \x0cchunked\r\n"),
            ("vertical tab after", "Transfer-Encoding: chunked\x0b\r\n"),
        ] {
            run_case(
                &lab,
                &format!("CL.TE {what}"),
                cl_te(te),
                Want::Refused(&[400]),
                &mut wrong,
            )
            .await;
            run_case(
                &lab,
                &format!("TE.CL {what}"),
                te_cl(te),
                Want::Refused(&[400]),
                &mut wrong,
            )
            .await;
        }
        report(wrong);
    })
    .await;
}

/// CVE-2021-40346 (HAProxy 2.0-2.5): header name and value lengths were packed in
/// one 32-bit field; a 270-byte name `Content-Length0aaa…` overflowed into the value
/// length, so HAProxy checked one Content-Length and forwarded another, and the body
/// (a whole request) was read as a second request. Here the long name is just an
/// unknown header: the body stays the body. Content-Length values past 64 bits are
/// refused, not wrapped; one past 32 bits is forwarded exactly as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_cve_2021_40346_length_overflows() {
    bounded(120, async {
        let lab = lab().await;
        let mut wrong = Vec::new();
        let long = format!("Content-Length0{}:\r\n", "a".repeat(255));
        run_case(&lab, "270-byte header name", post_cl("/long", &long, SMUGGLED), Want::Served, &mut wrong).await;
        for r in lab.raw.requests() {
            if r.body != SMUGGLED.as_bytes() {
                wrong.push(format!("long name: body at the target {:?}", text(&r.body)));
            }
            let cut = r.headers.iter().find(|(k, _)| {
                let k = k.to_ascii_lowercase();
                k.starts_with("content-length") && k != "content-length" && k.len() != 270
            });
            if let Some((k, _)) = cut {
                wrong.push(format!("the long name was forwarded cut to {} bytes", k.len()));
            }
        }
        for cl in ["18446744073709551617", "18446744073709551616", "99999999999999999999999"] {
            let raw = format!("POST /wrap HTTP/1.1\r\nHost: test.local\r\nContent-Length: {cl}\r\n\r\n{SMUGGLED}");
            run_case(&lab, &format!("Content-Length {cl}"), raw, Want::Refused(&[400]), &mut wrong).await;
        }
        // 2^32 + 1 wraps to 1 in 32 bits: the target must see it whole, and the
        // bytes after the head only as body.
        let marker = "Content-Length: 4294967297\r\n";
        for (mode, port) in &lab.ports {
            let before = lab.raw.count();
            let seen_before = text(&lab.raw.received()).matches(marker).count();
            let mut c = Conn::connect(local(*port)).await.unwrap();
            c.send(format!("POST /u32 HTTP/1.1\r\nHost: test.local\r\nContent-Length: 4294967297\r\n\r\n{SMUGGLED}").as_bytes())
                .await
                .unwrap();
            let seen = tokio::time::timeout(Duration::from_secs(5), async {
                while text(&lab.raw.received()).matches(marker).count() == seen_before {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            })
            .await;
            if seen.is_err() {
                wrong.push(format!("2^32+1 [{mode}]: the target never got {marker:?}"));
            }
            drop(c);
            tokio::time::sleep(Duration::from_millis(300)).await;
            let new = new_requests(&lab.raw, before, &format!("2^32+1 [{mode}]"), &mut wrong);
            match new.as_slice() {
                [r] if !r.complete && r.body == SMUGGLED.as_bytes() => {}
                other => wrong.push(format!("2^32+1 [{mode}]: target saw {:?}", other.iter().map(|r| (&r.head, text(&r.body), r.complete)).collect::<Vec<_>>())),
            }
        }
        report(wrong);
    })
    .await;
}

/// CVE-2023-25725 (HAProxy): an empty header name ended HAProxy's internal header
/// list early, so headers after it (Content-Length among them) were parsed for
/// framing but not forwarded. An empty name is malformed: 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_cve_2023_25725_empty_header_name() {
    bounded(120, async {
        let lab = lab().await;
        let mut wrong = Vec::new();
        for (what, line) in [
            (": x", ": x\r\n"),
            (":", ":\r\n"),
            (": Content-Length", ": Content-Length: 0\r\n"),
        ] {
            let raw = post_cl("/empty-name", line, SMUGGLED);
            run_case(
                &lab,
                &format!("header line {what:?}"),
                raw,
                Want::Refused(&[400]),
                &mut wrong,
            )
            .await;
        }
        report(wrong);
    })
    .await;
}

/// CVE-2023-40225 (HAProxy): an empty Content-Length value (alone, or before a
/// comma) was taken as absent and forwarded as is; a backend reading it as 0 took
/// the body for the next request. Every empty list element is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_cve_2023_40225_empty_content_length() {
    bounded(120, async {
        let lab = lab().await;
        let mut wrong = Vec::new();
        let n = SMUGGLED.len();
        for (what, lines) in [
            (
                "empty, then a value",
                format!("Content-Length: \r\nContent-Length: {n}\r\n"),
            ),
            ("empty alone", "Content-Length:\r\n".to_string()),
            ("trailing comma", format!("Content-Length: {n},\r\n")),
            ("leading comma", format!("Content-Length: ,{n}\r\n")),
        ] {
            let raw = format!("POST /cl HTTP/1.1\r\nHost: test.local\r\n{lines}\r\n{SMUGGLED}");
            run_case(&lab, what, raw, Want::Refused(&[400]), &mut wrong).await;
        }
        report(wrong);
    })
    .await;
}

/// CVE-2023-45539 (HAProxy): `#` was accepted in the request target, so a path rule
/// (`path_end .png`) matched `/admin#.png` while the backend served `/admin`. A
/// fragment is never part of a request target (RFC 9112 §3.2): 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_cve_2023_45539_fragment_in_request_target() {
    bounded(120, async {
        let lab = lab().await;
        let mut wrong = Vec::new();
        for target in ["/internal#x", "/ok#/internal", "/ok?q=1#frag"] {
            let raw = format!("GET {target} HTTP/1.1\r\nHost: test.local\r\n\r\n");
            run_case(
                &lab,
                &format!("target {target}"),
                raw,
                Want::Refused(&[400]),
                &mut wrong,
            )
            .await;
        }
        report(wrong);
    })
    .await;
}

/// HTTP/0.9 (HAProxy upgraded `GET /path` lines to HTTP/1.0 and accepted other
/// methods too): a request line without a version is not HTTP/1.x. 400, and the
/// line never reaches the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_http09_request_line_is_refused() {
    bounded(120, async {
        let lab = lab().await;
        let mut wrong = Vec::new();
        for (what, raw) in [
            ("GET /smuggled", "GET /smuggled\r\n\r\n".to_string()),
            (
                "POST /smuggled",
                "POST /smuggled\r\nHost: test.local\r\n\r\n".to_string(),
            ),
            (
                "HTTP/0.9 version",
                "GET /smuggled HTTP/0.9\r\nHost: test.local\r\n\r\n".to_string(),
            ),
            (
                "HTTP/2.0 version",
                "GET /smuggled HTTP/2.0\r\nHost: test.local\r\n\r\n".to_string(),
            ),
        ] {
            run_case(&lab, what, raw, Want::Refused(&[400, 505]), &mut wrong).await;
        }
        report(wrong);
    })
    .await;
}

/// CVE-2026-2833 (Pingora < 0.8): any request with `Upgrade` switched both sides to a
/// byte tunnel before the target said 101, so a body (or pipelined bytes) went to the
/// target unparsed. A non-WebSocket upgrade is dropped and the body stays a body; a
/// `h2c` upgrade with a request right behind it gets that request parsed and routed
/// (403), never tunnelled. (`desync.rs` covers a WebSocket upgrade answered 200.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pingora_cve_2026_2833_upgrade_before_101_is_no_tunnel() {
    bounded(120, async {
        let lab = lab().await;
        let mut wrong = Vec::new();
        let up = post_cl("/up", "Upgrade: foo\r\nConnection: Upgrade\r\n", SMUGGLED);
        run_case(&lab, "Upgrade: foo with a body", up, Want::Served, &mut wrong).await;
        for r in lab.raw.requests() {
            if r.body != SMUGGLED.as_bytes() || !r.header_all("upgrade").is_empty() {
                wrong.push(format!("Upgrade: foo reached the target as {:?} body {:?}", r.head, text(&r.body)));
            }
        }
        let h2c = "GET /h2c HTTP/1.1\r\nHost: test.local\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n\
                   HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\nGET /internal HTTP/1.1\r\nHost: test.local\r\n\r\n";
        run_pipelined(&lab, "Upgrade: h2c, then a request", h2c, &mut wrong).await;
        if lab.raw.received().windows(9).any(|w| w == b"/internal") {
            wrong.push("bytes of /internal reached the target".into());
        }
        report(wrong);
    })
    .await;
}

/// CVE-2026-2835 (Pingora < 0.8): HTTP/1.0 requests with Transfer-Encoding were
/// framed differently by Pingora and the backend. Chunked from an HTTP/1.0 client is
/// ambiguous (ALB's UndefinedTransferEncodingSemantics): strictest answers 400, the
/// other modes serve it, forwarded as HTTP/1.1 chunked, and close the connection
/// after it; other codings are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pingora_cve_2026_2835_http10_transfer_encoding() {
    bounded(120, async {
        let lab = lab().await;
        let mut wrong = Vec::new();
        let chunked = "POST /ten HTTP/1.0\r\nHost: test.local\r\nConnection: keep-alive\r\n\
                       Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /internal HTTP/1.0\r\nHost: test.local\r\n\r\n";
        let mut pipelined = Vec::new();
        run_pipelined(&lab, "HTTP/1.0 chunked", chunked, &mut pipelined).await;
        wrong.extend(pipelined.into_iter().filter(|w| !w.contains("[strictest]")));
        let strictest = lab.ports.iter().find(|(m, _)| *m == "strictest").map(|p| p.1);
        let before = lab.raw.count();
        let mut c = Conn::connect(local(strictest.expect("a strictest listener"))).await.unwrap();
        let _ = c.send(chunked.as_bytes()).await;
        match tokio::time::timeout(Duration::from_secs(10), c.read_response()).await {
            Ok(Ok(r)) if r.status == 400 => {}
            other => wrong.push(format!("HTTP/1.0 chunked [strictest]: {other:?}, want 400")),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if lab.raw.count() != before {
            wrong.push("HTTP/1.0 chunked [strictest] reached the target".into());
        }
        for r in lab.raw.requests() {
            if r.body != b"hello" {
                wrong.push(format!("HTTP/1.0 chunked body at the target: {:?}", text(&r.body)));
            }
        }
        for te in ["identity", "gzip", "chunked, identity"] {
            let raw = format!(
                "POST /ten HTTP/1.0\r\nHost: test.local\r\nTransfer-Encoding: {te}\r\n\r\n0\r\n\r\n{SMUGGLED}"
            );
            run_case(&lab, &format!("HTTP/1.0 Transfer-Encoding: {te}"), raw, Want::Refused(&[400, 501]), &mut wrong).await;
        }
        report(wrong);
    })
    .await;
}

/// CVE-2025-4366 (Pingora < 0.5): a response served from cache left the request body
/// unread on a kept-alive connection, and the body was parsed as the next request.
/// The balancer's own answers (fixed responses) drain the body, Content-Length or
/// chunked, or close the connection when it is too long to drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pingora_cve_2025_4366_own_answer_drains_the_body() {
    bounded(120, async {
        let lab = lab().await;
        let mut wrong = Vec::new();
        let chunked_body = format!("{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n", SMUGGLED.len());
        let cases = [
            ("Content-Length", post_cl("/internal", "", SMUGGLED)),
            (
                "chunked",
                format!("POST /internal HTTP/1.1\r\nHost: test.local\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_body}"),
            ),
        ];
        for (what, raw) in &cases {
            for (mode, port) in &lab.ports {
                let what = format!("{what} body to a fixed response [{mode}]");
                let before = lab.raw.count();
                let mut c = Conn::connect(local(*port)).await.unwrap();
                c.send(raw.as_bytes()).await.unwrap();
                match tokio::time::timeout(Duration::from_secs(5), c.read_response()).await {
                    Ok(Ok(r)) if r.status == 403 => {}
                    other => wrong.push(format!("{what}: {other:?}")),
                }
                let _ = c.send(b"GET /after HTTP/1.1\r\nHost: test.local\r\n\r\n").await;
                let second = tokio::time::timeout(Duration::from_secs(5), c.read_response()).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                let new = new_requests(&lab.raw, before, &what, &mut wrong);
                let targets: Vec<_> = new.iter().map(|r| r.target.clone()).collect();
                match second {
                    Ok(Ok(r)) if r.status == 200 && targets == ["/after"] => {}
                    Ok(Err(_)) if targets.is_empty() => {}
                    other => wrong.push(format!("{what}: then {other:?}, target saw {targets:?}")),
                }
            }
        }
        // Too long to drain (2 MiB): answered and closed, the body never parsed.
        let n = 2 << 20;
        let body: Vec<u8> = SMUGGLED.bytes().cycle().take(n).collect();
        for (mode, port) in &lab.ports {
            let what = format!("2 MiB body to a fixed response [{mode}]");
            let before = lab.raw.count();
            let s = tokio::net::TcpStream::connect(local(*port)).await.unwrap();
            let (r, mut w) = s.into_split();
            let head = format!("POST /internal HTTP/1.1\r\nHost: test.local\r\nContent-Length: {n}\r\n\r\n");
            let body = body.clone();
            let writer = tokio::spawn(async move {
                let _ = w.write_all(head.as_bytes()).await;
                let _ = w.write_all(&body).await;
                let _ = w.write_all(b"GET /after HTTP/1.1\r\nHost: test.local\r\n\r\n").await;
                w
            });
            let mut reader = Reader::new(r);
            match tokio::time::timeout(Duration::from_secs(5), reader.read_response()).await {
                Ok(Ok(r)) if r.status == 403 => {}
                other => wrong.push(format!("{what}: {other:?}")),
            }
            let second = tokio::time::timeout(Duration::from_secs(10), reader.read_response()).await;
            drop(writer.await);
            tokio::time::sleep(Duration::from_millis(100)).await;
            let new = new_requests(&lab.raw, before, &what, &mut wrong);
            let targets: Vec<_> = new.iter().map(|r| r.target.clone()).collect();
            match second {
                Ok(Ok(r)) if r.status == 200 && targets == ["/after"] => {}
                Ok(Err(_)) if targets.is_empty() => {}
                other => wrong.push(format!("{what}: then {other:?}, target saw {targets:?}")),
            }
        }
        report(wrong);
    })
    .await;
}

/// CVE-2013-2028 (nginx 1.3.9-1.4.0): a chunk size near 2^64 turned negative in a
/// signed conversion and overflowed a stack buffer; other parsers wrap such sizes to
/// small numbers and lose the body boundary. Sizes of 2^63 and more are refused; a
/// size written with many leading zeros is read by its value and forwarded in the
/// canonical form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_cve_2013_2028_chunk_size_overflow() {
    bounded(120, async {
        let lab = lab().await;
        let mut wrong = Vec::new();
        for size in [
            "ffffffffffffffff",
            "8000000000000000",
            "10000000000000005",
            "fffffffffffffffffffffffffffffff5",
        ] {
            run_case(
                &lab,
                &format!("chunk size {size}"),
                bad_chunk(size),
                Want::RefusedInBody(&[400]),
                &mut wrong,
            )
            .await;
        }
        let zeros = format!("{}5\r\nhello\r\n0\r\n\r\n", "0".repeat(1000));
        run_case(
            &lab,
            "chunk size with 1000 leading zeros",
            post_chunked(&zeros),
            Want::Served,
            &mut wrong,
        )
        .await;
        let got = last_body(&lab.raw);
        if got != "hello" {
            wrong.push(format!("leading zeros: body at the target {got:?}"));
        }
        if text(&lab.raw.received()).contains("00000000") {
            wrong.push("the long chunk size was forwarded as sent, not re-encoded".into());
        }
        report(wrong);
    })
    .await;
}

/// CVE-2023-38697 (protocol-http1, Falcon) and CVE-2018-7159 (Node): Content-Length
/// and chunk sizes with `+`, `-`, `0x` or inner spaces were read as numbers by one
/// parser and refused or read differently by another. Only digits (Content-Length)
/// and hex digits (chunk size) are numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falcon_cve_2023_38697_signed_and_prefixed_numbers() {
    bounded(180, async {
        let lab = lab().await;
        let mut wrong = Vec::new();
        let n = SMUGGLED.len();
        for cl in [
            format!("+{n}"),
            format!("-{n}"),
            format!("0x{n:x}"),
            "4 5".into(),
            format!("{n}abc"),
            "1e2".into(),
        ] {
            let raw = format!(
                "POST /num HTTP/1.1\r\nHost: test.local\r\nContent-Length: {cl}\r\n\r\n{SMUGGLED}"
            );
            run_case(
                &lab,
                &format!("Content-Length {cl:?}"),
                raw,
                Want::Refused(&[400]),
                &mut wrong,
            )
            .await;
        }
        for size in ["0x5", "+5", "-5", " 5", "5 ", "5\t;ext"] {
            run_case(
                &lab,
                &format!("chunk size {size:?}"),
                bad_chunk(size),
                Want::RefusedInBody(&[400]),
                &mut wrong,
            )
            .await;
        }
        report(wrong);
    })
    .await;
}

/// CVE-2022-32213 and CVE-2022-32215 (Node's llhttp): obs-fold (a header line that
/// starts with whitespace continues the previous one) let a `Transfer-Encoding` span
/// two lines that llhttp and a front end read differently. Folded lines are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodejs_cve_2022_32215_obs_fold_transfer_encoding() {
    bounded(120, async {
        let lab = lab().await;
        let mut wrong = Vec::new();
        for (what, te) in [
            ("folded value", "Transfer-Encoding: gzip,\r\n chunked\r\n"),
            ("empty then folded", "Transfer-Encoding:\r\n chunked\r\n"),
            ("tab fold", "X-Pad: a\r\n\tTransfer-Encoding: chunked\r\n"),
        ] {
            run_case(
                &lab,
                &format!("CL.TE {what}"),
                cl_te(te),
                Want::Refused(&[400]),
                &mut wrong,
            )
            .await;
            run_case(
                &lab,
                &format!("TE.CL {what}"),
                te_cl(te),
                Want::Refused(&[400]),
                &mut wrong,
            )
            .await;
        }
        report(wrong);
    })
    .await;
}

/// CVE-2022-32214 and CVE-2022-35256 (llhttp): lines ended by a bare LF (or a head
/// ended by `\r\n\n`) were accepted, so a header a CRLF-strict front end saw as part
/// of one line became a framing header for Node. Bare LF anywhere in the head: 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodejs_cve_2022_32214_and_35256_lines_not_ended_by_crlf() {
    bounded(120, async {
        let lab = lab().await;
        let mut wrong = Vec::new();
        let n = SMUGGLED.len();
        let cases = [
            (
                "LF before Transfer-Encoding",
                cl_te("X-Pad: a\nTransfer-Encoding: chunked\r\n"),
            ),
            (
                "LF after Content-Length",
                format!(
                    "POST /lf HTTP/1.1\r\nHost: test.local\r\nContent-Length: {n}\n\r\n{SMUGGLED}"
                ),
            ),
            (
                "head ended by CRLF LF",
                format!(
                    "POST /lf HTTP/1.1\r\nHost: test.local\r\nContent-Length: {n}\r\n\n{SMUGGLED}"
                ),
            ),
            (
                "request line ended by LF",
                format!(
                    "POST /lf HTTP/1.1\nHost: test.local\r\nContent-Length: {n}\r\n\r\n{SMUGGLED}"
                ),
            ),
        ];
        for (what, raw) in cases {
            run_case(&lab, what, raw, Want::Refused(&[400]), &mut wrong).await;
        }
        report(wrong);
    })
    .await;
}

/// CVE-2023-30589 (llhttp): a lone CR ended a header line, so `X: a\rContent-Length:
/// 0` was two headers to Node and one to a CRLF-strict front end. A CR not followed
/// by LF is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodejs_cve_2023_30589_cr_only_line_ending() {
    bounded(120, async {
        let lab = lab().await;
        let mut wrong = Vec::new();
        let n = SMUGGLED.len();
        let cases = [
            (
                "CR inside a line",
                post_cl("/cr", "X-Pad: a\rContent-Length: 0\r\n", SMUGGLED),
            ),
            (
                "CR-only header lines",
                format!("POST /cr HTTP/1.1\rHost: test.local\rContent-Length: {n}\r\r{SMUGGLED}"),
            ),
            (
                "CR before Transfer-Encoding",
                cl_te("X-Pad: a\rTransfer-Encoding: chunked\r\n"),
            ),
        ];
        for (what, raw) in cases {
            run_case(&lab, what, raw, Want::Refused(&[400]), &mut wrong).await;
        }
        report(wrong);
    })
    .await;
}

/// CVE-2025-23167 (Node 20's llhttp): `\r\n\rX` ended the head, so the bytes after it
/// (a request) were a body to Node and more header lines to a front end. The head
/// ends only at an empty line; the stray CR is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodejs_cve_2025_23167_head_ended_by_cr_and_a_byte() {
    bounded(120, async {
        let lab = lab().await;
        let mut wrong = Vec::new();
        let raw = format!("GET /crx HTTP/1.1\r\nHost: test.local\r\n\rX{SMUGGLED}");
        run_case(
            &lab,
            "head ended by \\r\\n\\rX",
            raw,
            Want::Refused(&[400]),
            &mut wrong,
        )
        .await;
        report(wrong);
    })
    .await;
}

/// CVE-2024-27982 (Node): a space before a header name (` Content-Length: 47`) was
/// ignored by Node while front ends saw no Content-Length; CVE-2021-22959 (llhttp):
/// a space between a name and its colon likewise. Both are refused for
/// Content-Length (`desync.rs` covers `Transfer-Encoding :`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodejs_cve_2024_27982_whitespace_around_content_length_name() {
    bounded(120, async {
        let lab = lab().await;
        let mut wrong = Vec::new();
        let n = SMUGGLED.len();
        for (what, line) in [
            ("space before the name", format!(" Content-Length: {n}\r\n")),
            ("tab before the name", format!("\tContent-Length: {n}\r\n")),
            (
                "space before the colon",
                format!("Content-Length : {n}\r\n"),
            ),
            ("tab before the colon", format!("Content-Length\t: {n}\r\n")),
        ] {
            let raw = format!("GET /ws HTTP/1.1\r\nHost: test.local\r\n{line}\r\n{SMUGGLED}");
            run_case(&lab, what, raw, Want::Refused(&[400]), &mut wrong).await;
        }
        report(wrong);
    })
    .await;
}

/// CVE-2024-22019 (Node): chunk extensions were read without a bound, so one chunk
/// line could make the server read data forever. A size line over 4 KiB is refused
/// as soon as it passes the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodejs_cve_2024_22019_unbounded_chunk_extension() {
    bounded(120, async {
        let lab = lab().await;
        let mut wrong = Vec::new();
        let ext = format!("5;{}", "x".repeat(1 << 20));
        run_case(
            &lab,
            "1 MiB chunk extension",
            bad_chunk(&ext),
            Want::RefusedInBody(&[400]),
            &mut wrong,
        )
        .await;
        report(wrong);
    })
    .await;
}

/// "Funky chunks" TERM.EXT (2025; CVE-2025-55315 in Kestrel): a bare LF inside a chunk
/// extension ended the size line for one parser and not for the other, so the two
/// disagreed on where the chunk data began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn funky_chunks_term_ext_bare_lf_in_chunk_extension() {
    bounded(120, async {
        let lab = lab().await;
        let mut wrong = Vec::new();
        let smuggle_len = format!("{:x}", SMUGGLED.len() + 7);
        for (what, body) in [
            ("LF after ;", "5;\nhello\r\n0\r\n\r\n".to_string()),
            (
                "LF inside the extension",
                format!("2;a\nxx\r\n{smuggle_len}\r\n0\r\n\r\n{SMUGGLED}\r\n0\r\n\r\n"),
            ),
            ("LF after the size", "5\nhello\r\n0\r\n\r\n".to_string()),
        ] {
            run_case(
                &lab,
                what,
                post_chunked(&body),
                Want::RefusedInBody(&[400]),
                &mut wrong,
            )
            .await;
        }
        report(wrong);
    })
    .await;
}

/// "Funky chunks" EXT.TERM (2025): a bare CR inside a chunk extension was a line end
/// for one parser and extension text for the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn funky_chunks_ext_term_bare_cr_in_chunk_extension() {
    bounded(120, async {
        let lab = lab().await;
        let mut wrong = Vec::new();
        for (what, body) in [
            (
                "CR inside the extension",
                format!("5;a\rX\r\nhello\r\n0\r\n\r\n{SMUGGLED}"),
            ),
            (
                "CR after the size",
                format!("5\rhello\r\n0\r\n\r\n{SMUGGLED}"),
            ),
            (
                "NUL in the extension",
                format!("5;a\x00b\r\nhello\r\n0\r\n\r\n{SMUGGLED}"),
            ),
        ] {
            run_case(
                &lab,
                what,
                post_chunked(&body),
                Want::RefusedInBody(&[400]),
                &mut wrong,
            )
            .await;
        }
        report(wrong);
    })
    .await;
}

/// "Funky chunks" TERM.SPILL / SPILL.TERM (2025; CVE-2025-43859 in h11, which took any
/// two bytes after chunk data as its line end): chunk data longer than its size, or
/// ended by a bare LF, shifts the next size line for a lenient parser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn funky_chunks_spill_chunk_data_longer_than_its_size() {
    bounded(120, async {
        let lab = lab().await;
        let mut wrong = Vec::new();
        for (what, body) in [
            (
                "two spare bytes",
                format!("5\r\nhelloXX\r\n0\r\n\r\n{SMUGGLED}"),
            ),
            (
                "data ended by LF",
                format!("5\r\nhello\n0\r\n\r\n{SMUGGLED}"),
            ),
            (
                "data ended by CR",
                format!("5\r\nhello\r0\r\n\r\n{SMUGGLED}"),
            ),
            (
                "last chunk ended by LF LF",
                format!("5\r\nhello\r\n0\n\n{SMUGGLED}"),
            ),
            (
                "last chunk ended by CRLF LF",
                format!("5\r\nhello\r\n0\r\n\n{SMUGGLED}"),
            ),
        ] {
            run_case(
                &lab,
                what,
                post_chunked(&body),
                Want::RefusedInBody(&[400]),
                &mut wrong,
            )
            .await;
        }
        report(wrong);
    })
    .await;
}

/// Trailer smuggling: a front end that forwards the trailer section as is, or that
/// ends the body at the last chunk, lets a request hidden in the trailers (or framing
/// headers there) reach the backend. Trailers are dropped, and a trailer line that
/// is not a field (a request line, a folded line) is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailer_section_smuggling() {
    bounded(120, async {
        let lab = lab().await;
        let mut wrong = Vec::new();
        let framing_trailers =
            "5\r\nhello\r\n0\r\nContent-Length: 50\r\nTransfer-Encoding: chunked\r\n\r\n";
        run_case(
            &lab,
            "framing headers as trailers",
            post_chunked(framing_trailers),
            Want::Served,
            &mut wrong,
        )
        .await;
        if last_body(&lab.raw) != "hello" {
            wrong.push(format!(
                "trailers: body at the target {:?}",
                last_body(&lab.raw)
            ));
        }
        if text(&lab.raw.received()).contains("Content-Length: 50") {
            wrong.push("a trailer field was forwarded".into());
        }
        for (what, body) in [
            (
                "a request in the trailers",
                format!("5\r\nhello\r\n0\r\n{SMUGGLED}"),
            ),
            (
                "folded trailer",
                "5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n".to_string(),
            ),
            (
                "trailer without colon",
                "5\r\nhello\r\n0\r\nX-T\r\n\r\n".to_string(),
            ),
        ] {
            run_case(
                &lab,
                what,
                post_chunked(&body),
                Want::RefusedInBody(&[400]),
                &mut wrong,
            )
            .await;
        }
        report(wrong);
    })
    .await;
}

/// CL.0 and TE.0 (Kettle 2022; TE.0 2024): a server that ignores the body of some
/// requests reads it as the next request. At the balancer the bytes after a zero
/// length body are the client's next request: parsed and routed by the rules
/// (`/internal` is answered 403), never passed through to the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cl_0_and_te_0_bytes_after_an_empty_body_meet_the_rules() {
    bounded(120, async {
        let lab = lab().await;
        let mut wrong = Vec::new();
        let next = "GET /internal HTTP/1.1\r\nHost: test.local\r\n\r\n";
        let cl0 = format!("POST /cl0 HTTP/1.1\r\nHost: test.local\r\nContent-Length: 0\r\n\r\n{next}");
        run_pipelined(&lab, "CL.0", cl0, &mut wrong).await;
        let te0 = format!("POST /te0 HTTP/1.1\r\nHost: test.local\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{next}");
        run_pipelined(&lab, "TE.0", te0, &mut wrong).await;
        // TE.0 with the request inside a chunk: forwarded as data of a chunk.
        let inside = format!("{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n", SMUGGLED.len());
        run_case(&lab, "TE.0 request inside a chunk", post_chunked(&inside), Want::Served, &mut wrong).await;
        if last_body(&lab.raw) != SMUGGLED {
            wrong.push(format!("TE.0: body at the target {:?}", last_body(&lab.raw)));
        }
        report(wrong);
    })
    .await;
}

/// Absolute-form request lines (`GET http://host/path`): the authority replaces Host
/// and the path is routed like any other, so `/internal` behind an absolute-form
/// target meets its 403 rule; the target gets origin-form with one Host. User info
/// in the authority is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_request_target_is_routed_by_its_path() {
    bounded(120, async {
        let lab = lab().await;
        let mut wrong = Vec::new();
        for (mode, port) in &lab.ports {
            let before = lab.raw.count();
            let mut c = Conn::connect(local(*port)).await.unwrap();
            c.send(b"GET http://test.local/internal HTTP/1.1\r\nHost: test.local\r\n\r\n")
                .await
                .unwrap();
            match tokio::time::timeout(Duration::from_secs(5), c.read_response()).await {
                Ok(Ok(r)) if r.status == 403 => {}
                other => wrong.push(format!("absolute-form /internal [{mode}]: {other:?}")),
            }
            c.send(b"GET HTTP://Other.Example:8080/ok?x=1 HTTP/1.1\r\nHost: test.local\r\n\r\n")
                .await
                .unwrap();
            match tokio::time::timeout(Duration::from_secs(5), c.read_response()).await {
                Ok(Ok(r)) if r.status == 200 => {}
                other => wrong.push(format!("absolute-form /ok [{mode}]: {other:?}")),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let new = new_requests(
                &lab.raw,
                before,
                &format!("absolute-form [{mode}]"),
                &mut wrong,
            );
            match new.as_slice() {
                [r] if r.target == "/ok?x=1" && r.header_all("host") == ["Other.Example:8080"] => {}
                other => wrong.push(format!(
                    "absolute-form [{mode}]: target saw {:?}",
                    other.iter().map(|r| &r.head).collect::<Vec<_>>()
                )),
            }
        }
        let userinfo = "GET http://user@test.local/ok HTTP/1.1\r\nHost: test.local\r\n\r\n";
        run_case(
            &lab,
            "absolute-form with user info",
            userinfo,
            Want::Refused(&[400]),
            &mut wrong,
        )
        .await;
        report(wrong);
    })
    .await;
}

/// `Expect: 100-continue` (the load balancer answers it, SPEC §3): a request with a
/// body sent at once is forwarded with that body; one to the balancer's own answer
/// (a fixed response) does not leave the client waiting for a `100 Continue` that
/// never comes, and the body the client then sends is never read as a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_never_turns_a_body_into_a_request() {
    bounded(120, async {
        let lab = lab().await;
        let mut wrong = Vec::new();
        let eager = post_cl("/expect", "Expect: 100-continue\r\n", SMUGGLED);
        run_case(&lab, "Expect with the body sent at once", eager, Want::Served, &mut wrong).await;
        if last_body(&lab.raw) != SMUGGLED {
            wrong.push(format!("Expect: body at the target {:?}", last_body(&lab.raw)));
        }
        for (mode, port) in &lab.ports {
            let what = format!("Expect to a fixed response [{mode}]");
            let before = lab.raw.count();
            let mut c = Conn::connect(local(*port)).await.unwrap();
            let head = format!(
                "POST /internal HTTP/1.1\r\nHost: test.local\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
                SMUGGLED.len()
            );
            c.send(head.as_bytes()).await.unwrap();
            let first = tokio::time::timeout(Duration::from_secs(3), c.read_head()).await;
            let status_of = |h: &str| h.split(' ').nth(1).unwrap_or("").to_string();
            match first {
                Ok(Ok(h)) if status_of(&h) == "100" => {
                    let _ = c.send(SMUGGLED.as_bytes()).await;
                    match tokio::time::timeout(Duration::from_secs(5), c.read_response()).await {
                        Ok(Ok(r)) if r.status == 403 => {}
                        other => wrong.push(format!("{what}: after 100, {other:?}")),
                    }
                }
                Ok(Ok(h)) if status_of(&h) == "403" => {
                    let _ = c.read_bytes(6).await; // "denied"
                    // A client whose wait ran out sends the body anyway.
                    let _ = c.send(SMUGGLED.as_bytes()).await;
                }
                Ok(other) => wrong.push(format!("{what}: {other:?}")),
                Err(_) => wrong.push(format!("{what}: neither 100 Continue nor an answer within 3 s")),
            }
            let _ = c.send(b"GET /after HTTP/1.1\r\nHost: test.local\r\n\r\n").await;
            let second = tokio::time::timeout(Duration::from_secs(5), c.read_response()).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let new = new_requests(&lab.raw, before, &what, &mut wrong);
            let targets: Vec<_> = new.iter().map(|r| r.target.clone()).collect();
            match second {
                Ok(Ok(r)) if r.status == 200 && targets == ["/after"] => {}
                Ok(Err(_)) if targets.is_empty() => {}
                other => wrong.push(format!("{what}: then {other:?}, target saw {targets:?}")),
            }
        }
        report(wrong);
    })
    .await;
}

/// Leading zeros and lists in Content-Length: `0005` is the number 5 and goes out as
/// `5`; a list of equal values (`5, 5`) is a duplicate, ambiguous in ALB's table;
/// `5, 6` differ and are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_leading_zeros_and_lists() {
    bounded(120, async {
        let lab = lab().await;
        let mut wrong = Vec::new();
        let zeros = "POST /zeros HTTP/1.1\r\nHost: test.local\r\nContent-Length: 0005\r\n\r\nhello";
        run_case(&lab, "Content-Length 0005", zeros, Want::Served, &mut wrong).await;
        for r in lab.raw.requests() {
            if r.header_all("content-length") != ["5"] || r.body != b"hello" {
                wrong.push(format!("Content-Length 0005 reached the target as {:?}", r.head));
            }
        }
        let same = "POST /list HTTP/1.1\r\nHost: test.local\r\nContent-Length: 5, 5\r\n\r\nhello";
        run_case(&lab, "Content-Length 5, 5", same, Want::Ambiguous { lenient: true }, &mut wrong).await;
        let differ = format!("POST /list HTTP/1.1\r\nHost: test.local\r\nContent-Length: 5, {}\r\n\r\nhello{SMUGGLED}", 5 + SMUGGLED.len());
        run_case(&lab, "Content-Length 5, N", differ, Want::Refused(&[400]), &mut wrong).await;
        report(wrong);
    })
    .await;
}

/// Response queue poisoning (Kettle 2021; the response-side twin of smuggling): a
/// target that sends bytes nobody asked for after a complete response must not have
/// them read as the answer to the next request that reuses its connection, which may
/// be another client's. An idle pooled connection with unread bytes (or a FIN) is
/// closed instead of reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_queue_poisoning_unsolicited_bytes_on_an_idle_target_connection() {
    bounded(60, async {
        let target = RawBackend::start(Mode::ExtraResponse).await;
        let web = free_port();
        let f = Fulcrum::start(&simple_config(free_port(), web, &[target.addr])).await;
        let mut answers = Vec::new();
        for i in 0..8 {
            let mut c = Conn::connect(local(web)).await.unwrap();
            let r = tokio::time::timeout(Duration::from_secs(5), c.get(&format!("/r{i}"))).await;
            answers.push(match r {
                Ok(Ok(r)) => format!("{} {}", r.status, r.text()),
                other => format!("{other:?}"),
            });
            // Longer than the target's 50 ms delay before its stray bytes.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            answers.iter().all(|a| a == "200 ok"),
            "answers: {answers:?}\ntarget saw {:?}\n{}",
            target
                .requests()
                .iter()
                .map(|r| &r.target)
                .collect::<Vec<_>>(),
            f.logs()
        );
        assert_eq!(target.count(), 8, "every request reached the target");
    })
    .await;
}
