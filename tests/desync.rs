//! Request smuggling (SPEC §3 desync mitigation, aws-reference §4.4): each case runs
//! against three listeners in `monitor`, `defensive` and `strictest` mode in front of
//! a raw-socket target that records every byte and parses requests itself. Whatever
//! the mode, no request the client did not send as a request of its own may reach
//! the target (`GET /smuggled` never appears as a request there), every head the
//! target gets frames its body one way only, and the statuses follow SPEC §3.
//! The lab is shared with `smuggling.rs` (tests/common/lab.rs).

mod common;

use std::time::Duration;

use common::*;

/// The request targets the default group's target received that start with `prefix`.
fn targets_seen(lab: &Lab, prefix: &str) -> Vec<String> {
    lab.raw
        .requests()
        .into_iter()
        .map(|r| r.target)
        .filter(|t| t.starts_with(prefix))
        .collect()
}

/// Each mode's listener counted exactly one acceptable request.
async fn one_acceptable_per_mode(lab: &Lab, wrong: &mut Vec<String>) {
    let m = lab.f.metrics().await;
    for mode in MODES {
        let n = metric(
            &m,
            "fulcrum_desync_requests_total",
            &[("listener", mode), ("classification", "acceptable")],
        );
        if n != Some(1.0) {
            wrong.push(format!(
                "{mode}: fulcrum_desync_requests_total acceptable = {n:?}, want 1"
            ));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfer_encoding_with_content_length() {
    bounded(120, async {
        let lab = lab().await;
        let mut wrong = Vec::new();
        let te = "Transfer-Encoding: chunked\r\n";
        run_case(
            &lab,
            "CL.TE",
            &cl_te(te),
            Want::TeCl { lenient: false },
            &mut wrong,
        )
        .await;
        run_case(
            &lab,
            "TE.CL",
            &te_cl(te),
            Want::TeCl { lenient: false },
            &mut wrong,
        )
        .await;
        // Forwarded as chunked, the TE.CL body is the smuggled text as data.
        let bodies: Vec<_> = lab
            .raw
            .requests()
            .into_iter()
            .filter(|r| r.target == "/tecl")
            .collect();
        for r in &bodies {
            assert_eq!(
                r.body,
                SMUGGLED.as_bytes(),
                "TE.CL body as the target read it: {:?}",
                r.head
            );
        }
        report(wrong);
    })
    .await;
}

/// Unencoded spaces in the target (`SpaceInUri`, Acceptable): strictest answers
/// 400; defensive and monitor forward the request with each space as `%20`, so the
/// target reads one request line with the method, target and version the balancer
/// read; the request is counted as acceptable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spaces_in_the_target() {
    bounded(120, async {
        let lab = lab().await;
        let mut wrong = Vec::new();
        let raw = "GET /sp ace/x y?q=a b HTTP/1.1\r\nHost: test.local\r\n\r\n";
        run_case(&lab, "space in URI", raw, Want::Acceptable, &mut wrong).await;
        let seen = targets_seen(&lab, "/sp");
        assert_eq!(
            seen,
            ["/sp%20ace/x%20y?q=a%20b", "/sp%20ace/x%20y?q=a%20b"],
            "{seen:?}"
        );
        one_acceptable_per_mode(&lab, &mut wrong).await;
        report(wrong);
    })
    .await;
}

/// HTTP/1.2 (`NonCompliantVersion`, Acceptable): strictest answers 400; defensive
/// and monitor serve it as HTTP/1.1 (the target reads an HTTP/1.1 request line);
/// counted as acceptable. HTTP/1.10 stays a Severe `BadVersion`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_minor_version_above_one() {
    bounded(120, async {
        let lab = lab().await;
        let mut wrong = Vec::new();
        let raw = "GET /v12 HTTP/1.2\r\nHost: test.local\r\n\r\n";
        run_case(&lab, "HTTP/1.2", raw, Want::Acceptable, &mut wrong).await;
        let heads: Vec<String> = lab
            .raw
            .requests()
            .into_iter()
            .filter(|r| r.target == "/v12")
            .map(|r| r.head)
            .collect();
        assert_eq!(heads.len(), 2, "{heads:?}");
        for h in &heads {
            assert!(h.starts_with("GET /v12 HTTP/1.1\r\n"), "{h:?}");
        }
        one_acceptable_per_mode(&lab, &mut wrong).await;
        let raw = "GET /v110 HTTP/1.10\r\nHost: test.local\r\n\r\n";
        run_case(&lab, "HTTP/1.10", raw, Want::Refused(&[400]), &mut wrong).await;
        report(wrong);
    })
    .await;
}

/// Control characters other than NUL and CR in the target (`AmbiguousUri`,
/// Ambiguous): strictest answers 400; defensive forwards and then closes, monitor
/// forwards, each with the bytes percent-encoded so no target sees one; NUL in the
/// target stays a Severe `BadUri` (400 everywhere).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn control_characters_in_the_target() {
    bounded(120, async {
        let lab = lab().await;
        let mut wrong = Vec::new();
        let raw = "GET /amb\x01x\ty HTTP/1.1\r\nHost: test.local\r\n\r\n";
        run_case(
            &lab,
            "control bytes in the target",
            raw,
            Want::Ambiguous { lenient: false },
            &mut wrong,
        )
        .await;
        let seen = targets_seen(&lab, "/amb");
        assert_eq!(seen, ["/amb%01x%09y", "/amb%01x%09y"], "{seen:?}");
        let nul = "GET /nul\x00x HTTP/1.1\r\nHost: test.local\r\n\r\n";
        run_case(
            &lab,
            "NUL in the target",
            nul,
            Want::Refused(&[400]),
            &mut wrong,
        )
        .await;
        report(wrong);
    })
    .await;
}

/// Control characters other than NUL and CR in a header value
/// (`NonCompliantHeader`, Acceptable): strictest answers 400; defensive and monitor
/// forward the request with each such byte as a space, so no target sees one; the
/// request is counted as acceptable. NUL stays a Severe `BadHeader`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn control_characters_in_a_header_value() {
    bounded(120, async {
        let lab = lab().await;
        let mut wrong = Vec::new();
        let raw = "GET /ctl HTTP/1.1\r\nHost: test.local\r\nX-Note: a\x01b\x7fc\r\n\r\n";
        run_case(
            &lab,
            "control bytes in a value",
            raw,
            Want::Acceptable,
            &mut wrong,
        )
        .await;
        let seen: Vec<String> = lab
            .raw
            .requests()
            .into_iter()
            .filter(|r| r.target == "/ctl")
            .filter_map(|r| {
                r.headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("x-note"))
                    .map(|(_, v)| v.clone())
            })
            .collect();
        assert_eq!(seen, ["a b c", "a b c"], "X-Note as the targets read it");
        one_acceptable_per_mode(&lab, &mut wrong).await;
        let nul = "GET /nul HTTP/1.1\r\nHost: test.local\r\nX-Note: a\0b\r\n\r\n";
        run_case(
            &lab,
            "NUL in a value",
            nul,
            Want::Refused(&[400]),
            &mut wrong,
        )
        .await;
        report(wrong);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repeated_content_length() {
    bounded(120, async {
        let lab = lab().await;
        let mut wrong = Vec::new();
        let same = "POST /dup HTTP/1.1\r\nHost: test.local\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello";
        run_case(&lab, "two equal Content-Length", same, Want::Ambiguous { lenient: false }, &mut wrong).await;
        for r in lab.raw.requests() {
            assert_eq!(r.body, b"hello", "{:?}", r.head);
        }
        let differ = format!(
            "POST /diff HTTP/1.1\r\nHost: test.local\r\nContent-Length: 5\r\nContent-Length: {}\r\n\r\nhello{SMUGGLED}",
            5 + SMUGGLED.len()
        );
        run_case(&lab, "two different Content-Length", &differ, Want::Refused(&[400]), &mut wrong).await;
        report(wrong);
    })
    .await;
}

/// Obfuscated Transfer-Encoding, each in a CL.TE and a TE.CL shape. Trailing space
/// and a tab before the value are optional whitespace (RFC 9112): the balancer may
/// read them as `chunked` (then it is TE+CL) or refuse them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn obfuscated_transfer_encoding() {
    bounded(180, async {
        let lab = lab().await;
        let mut wrong = Vec::new();
        let cases: [(&str, &str, Want); 6] = [
            (
                "trailing space",
                "Transfer-Encoding: chunked \r\n",
                Want::TeCl { lenient: true },
            ),
            (
                "tab before the value",
                "Transfer-Encoding:\tchunked\r\n",
                Want::TeCl { lenient: true },
            ),
            (
                "xchunked",
                "Transfer-Encoding: xchunked\r\n",
                Want::Refused(&[400]),
            ),
            (
                "chunked, identity",
                "Transfer-Encoding: chunked, identity\r\n",
                Want::Refused(&[400, 501]),
            ),
            (
                "space before the colon",
                "Transfer-Encoding : chunked\r\n",
                Want::Refused(&[400]),
            ),
            (
                "two TE headers",
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                Want::Refused(&[400]),
            ),
        ];
        for (what, lines, want) in cases {
            run_case(
                &lab,
                &format!("CL.TE {what}"),
                &cl_te(lines),
                want,
                &mut wrong,
            )
            .await;
            run_case(
                &lab,
                &format!("TE.CL {what}"),
                &te_cl(lines),
                want,
                &mut wrong,
            )
            .await;
        }
        // `Transfer_Encoding` is not Transfer-Encoding to the balancer (framed by its
        // Content-Length) but is to some servers: ALB's SuspiciousHeader, ambiguous.
        // It must not reach the target.
        let raw = cl_te("Transfer_Encoding: chunked\r\n");
        run_case(
            &lab,
            "CL.TE Transfer_Encoding",
            &raw,
            Want::Ambiguous { lenient: true },
            &mut wrong,
        )
        .await;
        report(wrong);
    })
    .await;
}

/// A target that answers 200 to `Upgrade: websocket`: no tunnel. The next bytes are a
/// new request (here refused by a rule with 403) or the connection closes; they
/// never reach the target. Sent after the answer, and pipelined.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrade_refused_by_the_target_is_no_tunnel() {
    bounded(60, async {
        let lab = lab().await;
        let mut wrong = Vec::new();
        let upgrade = "GET /ws HTTP/1.1\r\nHost: test.local\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                       Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        let next = "GET /internal HTTP/1.1\r\nHost: test.local\r\n\r\n";
        for (mode, port) in &lab.ports {
            for pipelined in [false, true] {
                let what = format!("upgrade answered 200 [{mode}, pipelined {pipelined}]");
                let before = lab.raw.count();
                let mut c = Conn::connect(local(*port)).await.unwrap();
                if pipelined {
                    c.send(format!("{upgrade}{next}").as_bytes()).await.unwrap();
                } else {
                    c.send(upgrade.as_bytes()).await.unwrap();
                }
                match c.read_response().await {
                    Ok(r) if r.status == 200 => {}
                    other => wrong.push(format!("{what}: first answer {other:?}")),
                }
                if !pipelined {
                    let _ = c.send(next.as_bytes()).await;
                }
                match tokio::time::timeout(Duration::from_secs(5), c.read_response()).await {
                    Ok(Ok(r)) if r.status == 403 => {}
                    Ok(Err(_)) => {} // closed: fine
                    other => wrong.push(format!("{what}: after it: {other:?}")),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                let new = new_requests(&lab.raw, before, &what, &mut wrong);
                if new.len() != 1 {
                    wrong.push(format!("{what}: the target got {} requests", new.len()));
                }
            }
        }
        if lab.raw.received().windows(9).any(|w| w == b"/internal") {
            wrong.push("bytes of /internal reached the target".into());
        }
        report(wrong);
    })
    .await;
}

/// HTTP/1.0 POST without Content-Length has no body: the answer comes without the
/// client closing, and the next request's bytes are never a body.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http10_post_without_length_is_not_close_delimited() {
    bounded(60, async {
        let lab = lab().await;
        let mut wrong = Vec::new();
        for (mode, port) in &lab.ports {
            let what = format!("HTTP/1.0 POST [{mode}]");
            let before = lab.raw.count();
            let mut c = Conn::connect(local(*port)).await.unwrap();
            c.send(b"POST /ten HTTP/1.0\r\nHost: test.local\r\nConnection: keep-alive\r\n\r\nGET /second HTTP/1.0\r\nHost: test.local\r\n\r\n")
                .await
                .unwrap();
            match tokio::time::timeout(Duration::from_secs(5), c.read_response()).await {
                Ok(Ok(r)) if r.status == 200 => {}
                other => wrong.push(format!("{what}: {other:?}")),
            }
            let second = tokio::time::timeout(Duration::from_secs(5), c.read_response()).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let new = new_requests(&lab.raw, before, &what, &mut wrong);
            let shape: Vec<_> = new.iter().map(|r| (r.method.as_str(), r.target.as_str(), r.body.len())).collect();
            let ok = match second {
                Ok(Ok(r)) if r.status == 200 => shape == [("POST", "/ten", 0), ("GET", "/second", 0)],
                Ok(Err(_)) => shape == [("POST", "/ten", 0)] || shape == [("POST", "/ten", 0), ("GET", "/second", 0)],
                _ => false,
            };
            if !ok {
                wrong.push(format!("{what}: target saw {shape:?}"));
            }
        }
        report(wrong);
    })
    .await;
}

/// The target answers before reading a 1 MiB body made of smuggled requests; the
/// client then sends a second request on the same connection. The body is never
/// read as requests; the second is answered or the connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unread_body_after_an_early_answer_is_never_a_request() {
    bounded(120, async {
        let lab = lab().await;
        let mut wrong = Vec::new();
        let n = 1 << 20;
        let body: Vec<u8> = SMUGGLED.bytes().cycle().take(n).collect();
        for (mode, port) in &lab.ports {
            let what = format!("early answer [{mode}]");
            let before = lab.early.count();
            let s = tokio::net::TcpStream::connect(local(*port)).await.unwrap();
            let (r, mut w) = s.into_split();
            let head =
                format!("POST /early HTTP/1.1\r\nHost: test.local\r\nContent-Length: {n}\r\n\r\n");
            let body = body.clone();
            let writer = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let _ = w.write_all(head.as_bytes()).await;
                let _ = w.write_all(&body).await;
                w
            });
            let mut reader = Reader::new(r);
            match tokio::time::timeout(Duration::from_secs(10), reader.read_response()).await {
                Ok(Ok(r)) if r.status == 200 => {}
                other => wrong.push(format!("{what}: first answer {other:?}")),
            }
            let mut w = writer.await.unwrap();
            {
                use tokio::io::AsyncWriteExt;
                let _ = w
                    .write_all(b"GET /early-second HTTP/1.1\r\nHost: test.local\r\n\r\n")
                    .await;
            }
            let second =
                tokio::time::timeout(Duration::from_secs(10), reader.read_response()).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let new = new_requests(&lab.early, before, &what, &mut wrong);
            let targets: Vec<_> = new.iter().map(|r| r.target.as_str()).collect();
            match second {
                Ok(Ok(r)) if r.status == 200 => {
                    if targets != ["/early", "/early-second"] {
                        wrong.push(format!("{what}: target saw {targets:?}"));
                    }
                }
                Ok(Err(_)) if targets == ["/early"] || targets == ["/early", "/early-second"] => {}
                other => wrong.push(format!(
                    "{what}: second answer {other:?}, target saw {targets:?}"
                )),
            }
        }
        report(wrong);
    })
    .await;
}

/// `fulcrum_desync_requests_total{listener,classification}` as the metric shows it,
/// the classification matched without regard to case.
fn desync_count(m: &str, listener: &str, class: &str) -> f64 {
    [class.to_string(), class[..1].to_uppercase() + &class[1..]]
        .iter()
        .filter_map(|c| {
            metric(
                m,
                "fulcrum_desync_requests_total",
                &[("listener", listener), ("classification", c)],
            )
        })
        .sum()
}

/// 400 comes before 405 and 463 (SPEC §3), a desync block's 400 too: a GET with
/// `Content-Length: 0` (acceptable) and 31 X-Forwarded-For addresses is 463 in
/// monitor and defensive, 400 in strictest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_desync_block_comes_before_405_and_463() {
    bounded(60, async {
        let lab = lab().await;
        let addrs: Vec<String> = (1..=31).map(|i| format!("10.0.0.{i}")).collect();
        let raw = format!(
            "GET /p HTTP/1.1\r\nHost: test.local\r\nContent-Length: 0\r\nX-Forwarded-For: {}\r\nConnection: close\r\n\r\n",
            addrs.join(", ")
        );
        for (mode, port) in &lab.ports {
            let r = http_request(local(*port), raw.as_bytes()).await.unwrap();
            let want = if *mode == "strictest" { 400 } else { 463 };
            assert_eq!(r.status, want, "{mode}: {r:?}");
        }
        let trace = "TRACE /t HTTP/1.1\r\nHost: test.local\r\nX-Note: a\x01b\r\nConnection: close\r\n\r\n";
        for (mode, port) in &lab.ports {
            let r = http_request(local(*port), trace.as_bytes()).await.unwrap();
            let want = if *mode == "strictest" { 400 } else { 405 };
            assert_eq!(r.status, want, "TRACE with a control byte in a header, {mode}: {r:?}");
        }
        // 400 before 501 too: `Transfer-Encoding: gzip` alone is 501 in every mode;
        // with obs-text in a header value (NonCompliantHeader, acceptable; the head
        // still parses) strictest blocks it first.
        let gzip = |extra: &str| {
            format!(
                "POST /z HTTP/1.1\r\nHost: test.local\r\n{extra}Transfer-Encoding: gzip\r\nConnection: close\r\n\r\n"
            )
        };
        for (mode, port) in &lab.ports {
            let r = http_request(local(*port), gzip("").as_bytes()).await.unwrap();
            assert_eq!(r.status, 501, "gzip alone, {mode}: {r:?}");
            let r = http_request(local(*port), gzip("X-Note: caf\u{e9}\r\n").as_bytes())
                .await
                .unwrap();
            let want = if *mode == "strictest" { 400 } else { 501 };
            assert_eq!(r.status, want, "gzip with obs-text in a header, {mode}: {r:?}");
        }
    })
    .await;
}

/// GET with a `Content-Length: 5` body is ambiguous (UndefinedContentLengthSemantics):
/// monitor allows it, defensive allows it and closes after, strictest answers 400;
/// each listener counts it. Different Content-Lengths count as severe; compliant
/// requests are not counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn desync_metric_counts_non_compliant_requests() {
    bounded(60, async {
        let lab = lab().await;
        let mut wrong = Vec::new();
        for (_, port) in &lab.ports {
            let r = get(local(*port), "/compliant").await;
            assert_eq!(r.status, 200);
        }
        let get_body = "GET /getbody HTTP/1.1\r\nHost: test.local\r\nContent-Length: 5\r\n\r\nhello";
        run_case(&lab, "GET with a body", get_body, Want::Ambiguous { lenient: false }, &mut wrong).await;
        let differ = "POST /d HTTP/1.1\r\nHost: test.local\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab";
        run_case(&lab, "different Content-Lengths", differ, Want::Refused(&[400]), &mut wrong).await;
        let m = lab.f.metrics().await;
        for (mode, _) in &lab.ports {
            for (class, want) in [("ambiguous", 1.0), ("severe", 1.0), ("compliant", 0.0)] {
                let got = desync_count(&m, mode, class);
                if got != want {
                    wrong.push(format!("fulcrum_desync_requests_total{{listener=\"{mode}\",classification=\"{class}\"}} = {got}, want {want}"));
                }
            }
        }
        let code400 = |mode: &str| metric(&m, "fulcrum_lb_responses_total", &[("listener", mode), ("code", "400")]).unwrap_or(0.0);
        for (mode, want) in [("monitor", 1.0), ("defensive", 1.0), ("strictest", 2.0)] {
            if code400(mode) != want {
                wrong.push(format!("fulcrum_lb_responses_total{{listener=\"{mode}\",code=\"400\"}} = {}, want {want}", code400(mode)));
            }
        }
        report(wrong);
    })
    .await;
}
