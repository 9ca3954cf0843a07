//! Request smuggling (SPEC §3 desync mitigation, aws-reference §4.4): each case runs
//! against three listeners in `monitor`, `defensive` and `strictest` mode in front of
//! a raw-socket target that records every byte and parses requests itself. Whatever
//! the mode, no request the client did not send as a request of its own may reach
//! the target (`GET /smuggled` never appears as a request there), every head the
//! target gets frames its body one way only, and the statuses follow SPEC §3.

mod common;

use std::time::Duration;

use common::*;

const MODES: [&str; 3] = ["monitor", "defensive", "strictest"];
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: test.local\r\n\r\n";

struct Lab {
    f: Fulcrum,
    /// (mode, port), in the order of [`MODES`].
    ports: Vec<(&'static str, u16)>,
    /// The default group: answers 200 after each whole request.
    raw: RawBackend,
    /// `/early*`: answers 200 as soon as the head arrived.
    early: RawBackend,
}

/// Three listeners, one per mode; `/internal*` is refused by a rule (403), so a
/// request that reaches the target there went around the rules.
async fn lab() -> Lab {
    let raw = RawBackend::start(Mode::Status(200)).await;
    let early = RawBackend::start(Mode::Early).await;
    let admin = free_port();
    let ports: Vec<_> = MODES.iter().map(|m| (*m, free_port())).collect();
    let mut yaml = format!(
        "runtime: {{worker_threads: 2}}\nadmin: {{bind: \"127.0.0.1:{admin}\"}}\nlisteners:\n"
    );
    for (mode, port) in &ports {
        yaml.push_str(&format!(
            "  - name: {mode}\n    bind: \"127.0.0.1:{port}\"\n    desync_mitigation: {mode}\n    \
             default_action: {{forward: raw}}\n    rules:\n      \
             - {{priority: 1, conditions: {{path: [\"/internal*\"]}}, action: {{fixed_response: {{status: 403, body: denied}}}}}}\n      \
             - {{priority: 2, conditions: {{path: [\"/early*\"]}}, action: {{forward: early}}}}\n"
        ));
    }
    for (g, b) in [("raw", &raw), ("early", &early)] {
        yaml.push_str(&format!(
            "{}  - {{name: {g}, health_check: {{path: /hc, interval: 30s, timeout: 2s}}, targets: [\"{}\"]}}\n",
            if g == "raw" { "target_groups:\n" } else { "" },
            b.addr
        ));
    }
    let f = Fulcrum::start(&yaml).await;
    Lab {
        f,
        ports,
        raw,
        early,
    }
}

/// What SPEC §3 wants for a case.
#[derive(Clone, Copy, Debug)]
enum Want {
    /// Refused in every mode with one of these statuses, never forwarded.
    Refused(&'static [u16]),
    /// Both Transfer-Encoding and Content-Length (ambiguous): strictest 400; the
    /// others forward it chunked without the Content-Length and close both
    /// connections after. `lenient`: a 400 in those modes is accepted too.
    TeCl { lenient: bool },
    /// Ambiguous (ALB): strictest 400; defensive forwards and closes the client
    /// connection after; monitor forwards. `lenient`: 400 accepted in those too.
    Ambiguous { lenient: bool },
}

/// Why a head forwarded to the target could be framed two ways, if it could.
fn framing_problem(r: &RawRequest) -> Option<String> {
    let cl = r.header_all("content-length");
    let te = r.header_all("transfer-encoding");
    let sneaky = r.headers.iter().find(|(k, _)| {
        let n = k.trim().to_ascii_lowercase().replace('_', "-");
        (n == "transfer-encoding" || n == "content-length") && !k.eq_ignore_ascii_case(&n)
    });
    if cl.len() > 1 {
        Some(format!("{} Content-Length headers", cl.len()))
    } else if !te.is_empty() && !cl.is_empty() {
        Some("both Transfer-Encoding and Content-Length".into())
    } else if te.len() > 1
        || te
            .first()
            .is_some_and(|v| !v.eq_ignore_ascii_case("chunked"))
    {
        Some(format!("Transfer-Encoding {te:?}"))
    } else if let Some((k, _)) = sneaky {
        Some(format!("header {k:?} that normalises to a framing header"))
    } else if r.version != 1 {
        Some("not HTTP/1.1".into())
    } else {
        None
    }
}

/// The raw requests since `from`, checked: none is `/smuggled` or `/internal`, each
/// frames its body one way; the list of (method, target).
fn new_requests(
    b: &RawBackend,
    from: usize,
    case: &str,
    wrong: &mut Vec<String>,
) -> Vec<RawRequest> {
    let all = b.requests();
    let new: Vec<RawRequest> = all.get(from..).unwrap_or_default().to_vec();
    for r in &new {
        if r.target.contains("/smuggled") || r.target.starts_with("/internal") {
            wrong.push(format!(
                "{case}: the target got a request the client never sent as one: {}",
                r.head
            ));
        }
        if let Some(p) = framing_problem(r) {
            wrong.push(format!("{case}: forwarded head with {p}: {:?}", r.head));
        }
    }
    if b.unparsable() > 0 {
        wrong.push(format!(
            "{case}: the target got {} head(s) it could not parse",
            b.unparsable()
        ));
    }
    new
}

/// Sends `raw` on each listener and checks the answer, the connection and what the
/// target received against `want`.
async fn run_case(lab: &Lab, case: &str, raw: &str, want: Want, wrong: &mut Vec<String>) {
    for (mode, port) in &lab.ports {
        let what = format!("{case} [{mode}]");
        let before = lab.raw.count();
        let mut c = Conn::connect(local(*port)).await.unwrap();
        let _ = c.send(raw.as_bytes()).await;
        let resp = tokio::time::timeout(Duration::from_secs(10), c.read_response()).await;
        let status = match resp {
            Ok(Ok(r)) => r.status,
            Ok(Err(e)) => {
                wrong.push(format!("{what}: no response: {e}"));
                continue;
            }
            Err(_) => {
                wrong.push(format!("{what}: no response within 10 s"));
                continue;
            }
        };
        // Anything left in the client's bytes must not be served as another request.
        let closed = c.closed_without_bytes(Duration::from_secs(3)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let new = new_requests(&lab.raw, before, &what, wrong);
        let strict = *mode == "strictest";
        let (ok_statuses, must_close, must_forward): (Vec<u16>, bool, bool) = match want {
            Want::Refused(s) => (s.to_vec(), true, false),
            Want::TeCl { .. } | Want::Ambiguous { .. } if strict => (vec![400], true, false),
            Want::TeCl { lenient } => {
                (if lenient { vec![200, 400] } else { vec![200] }, true, true)
            }
            Want::Ambiguous { lenient } => (
                if lenient { vec![200, 400] } else { vec![200] },
                *mode == "defensive",
                true,
            ),
        };
        if !ok_statuses.contains(&status) {
            wrong.push(format!(
                "{what}: status {status}, want one of {ok_statuses:?}"
            ));
        }
        if must_close && !closed {
            wrong.push(format!(
                "{what}: the client connection was not closed after the answer"
            ));
        }
        if status == 200 {
            if !must_forward || new.len() != 1 {
                wrong.push(format!(
                    "{what}: answered 200 with {} request(s) at the target",
                    new.len()
                ));
            }
        } else if !new.is_empty() {
            wrong.push(format!(
                "{what}: refused with {status} but forwarded {:?}",
                new.iter().map(|r| &r.head).collect::<Vec<_>>()
            ));
        }
        if let (Want::TeCl { .. }, 200, Some(r)) = (want, status, new.first()) {
            let conn = r.conn;
            let up_closed = tokio::time::timeout(Duration::from_secs(5), async {
                while !lab.raw.conn_closed(conn) {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            })
            .await
            .is_ok();
            if !up_closed {
                wrong.push(format!(
                    "{what}: the target connection stayed open after a TE+CL request"
                ));
            }
        }
    }
}

fn report(wrong: Vec<String>, f: &Fulcrum) {
    let _ = f;
    assert!(
        wrong.is_empty(),
        "{} problem(s):\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// CL.TE: the Content-Length covers a chunked body's end and a smuggled request;
/// TE.CL: a short Content-Length, the smuggled request inside a chunk.
fn cl_te(te_lines: &str) -> String {
    let body = format!("0\r\n\r\n{SMUGGLED}");
    format!(
        "POST /clte HTTP/1.1\r\nHost: test.local\r\nContent-Length: {}\r\n{te_lines}\r\n{body}",
        body.len()
    )
}

fn te_cl(te_lines: &str) -> String {
    format!(
        "POST /tecl HTTP/1.1\r\nHost: test.local\r\n{te_lines}Content-Length: 4\r\n\r\n{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n",
        SMUGGLED.len()
    )
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
        report(wrong, &lab.f);
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
        report(wrong, &lab.f);
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
        report(wrong, &lab.f);
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
        report(wrong, &lab.f);
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
        report(wrong, &lab.f);
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
        report(wrong, &lab.f);
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
        report(wrong, &lab.f);
    })
    .await;
}
