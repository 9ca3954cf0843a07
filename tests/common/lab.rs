//! The smuggling lab of `desync.rs` and `smuggling.rs` (SPEC §3 desync mitigation):
//! three listeners in `monitor`, `defensive` and `strictest` mode in front of a
//! raw-socket target that records every byte and parses requests itself. Whatever
//! the mode, no request the client did not send as a request of its own may reach
//! the target (`GET /smuggled` never appears as a request there, nor `/internal`,
//! which a rule answers 403), every head the target gets frames its body one way
//! only, and the statuses follow SPEC §3.

use std::time::Duration;

use super::{Conn, Fulcrum, Mode, RawBackend, RawRequest, free_port, local};

pub const MODES: [&str; 3] = ["monitor", "defensive", "strictest"];
/// The request hidden in a body; the target must never see it as a request.
pub const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: test.local\r\n\r\n";

pub struct Lab {
    pub f: Fulcrum,
    /// (mode, port), in the order of [`MODES`].
    pub ports: Vec<(&'static str, u16)>,
    /// The default group: answers 200 after each whole request.
    pub raw: RawBackend,
    /// `/early*`: answers 200 as soon as the head arrived.
    pub early: RawBackend,
}

/// Three listeners, one per mode; `/internal*` is refused by a rule (403), so a
/// request that reaches the target there went around the rules.
pub async fn lab() -> Lab {
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
pub enum Want {
    /// Refused in every mode with one of these statuses, never forwarded.
    Refused(&'static [u16]),
    /// Refused in every mode with one of these statuses once the body shows the
    /// fault (a chunked body is streamed, so the head may have gone out): the target
    /// may have the head, but never a whole body, and its connection is closed.
    RefusedInBody(&'static [u16]),
    /// Both Transfer-Encoding and Content-Length (ambiguous): strictest 400; the
    /// others forward it chunked without the Content-Length and close both
    /// connections after. `lenient`: a 400 in those modes is accepted too.
    TeCl { lenient: bool },
    /// Ambiguous (ALB): strictest 400; defensive forwards and closes the client
    /// connection after; monitor forwards. `lenient`: 400 accepted in those too.
    Ambiguous { lenient: bool },
    /// Compliant: 200 in every mode, exactly one request at the target.
    Served,
    /// Acceptable (ALB): strictest 400; defensive and monitor forward it.
    Acceptable,
}

/// Why a head forwarded to the target could be framed two ways, if it could.
pub fn framing_problem(r: &RawRequest) -> Option<String> {
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
    } else if cl
        .first()
        .is_some_and(|v| v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()))
    {
        Some(format!("Content-Length {cl:?}"))
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
pub fn new_requests(
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

/// Waits (at most 5 s) until the target saw connection `conn` closed.
pub async fn target_conn_closes(b: &RawBackend, conn: usize) -> bool {
    tokio::time::timeout(Duration::from_secs(5), async {
        while !b.conn_closed(conn) {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await
    .is_ok()
}

/// Sends `raw` on each listener and checks the answer, the connection and what the
/// target received against `want`.
pub async fn run_case(
    lab: &Lab,
    case: &str,
    raw: impl AsRef<[u8]>,
    want: Want,
    wrong: &mut Vec<String>,
) {
    let raw = raw.as_ref();
    for (mode, port) in &lab.ports {
        let what = format!("{case} [{mode}]");
        let before = lab.raw.count();
        let mut c = Conn::connect(local(*port)).await.unwrap();
        let _ = c.send(raw).await;
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
        let strict = *mode == "strictest";
        let (ok_statuses, must_close, must_forward): (Vec<u16>, bool, bool) = match want {
            Want::Refused(s) | Want::RefusedInBody(s) => (s.to_vec(), true, false),
            Want::TeCl { .. } | Want::Ambiguous { .. } if strict => (vec![400], true, false),
            Want::TeCl { lenient } => {
                (if lenient { vec![200, 400] } else { vec![200] }, true, true)
            }
            Want::Ambiguous { lenient } => (
                if lenient { vec![200, 400] } else { vec![200] },
                *mode == "defensive",
                true,
            ),
            Want::Served => (vec![200], false, true),
            Want::Acceptable if strict => (vec![400], true, false),
            Want::Acceptable => (vec![200], false, true),
        };
        // Anything left in the client's bytes must not be served as another request:
        // no further answer comes (a closed connection answers nothing).
        let wait = Duration::from_secs(if must_close { 3 } else { 1 });
        let closed = c.closed_without_bytes(wait).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let new = new_requests(&lab.raw, before, &what, wrong);
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
        } else if let Want::RefusedInBody(_) = want {
            for r in &new {
                if r.complete {
                    wrong.push(format!(
                        "{what}: refused with {status} but the target got a whole request: {:?} body {:?}",
                        r.head,
                        super::text(&r.body)
                    ));
                } else if !target_conn_closes(&lab.raw, r.conn).await {
                    wrong.push(format!(
                        "{what}: refused with {status}; the target connection stayed open"
                    ));
                }
            }
        } else if !new.is_empty() {
            wrong.push(format!(
                "{what}: refused with {status} but forwarded {:?}",
                new.iter().map(|r| &r.head).collect::<Vec<_>>()
            ));
        }
        if let (Want::TeCl { .. }, 200, Some(r)) = (want, status, new.first()) {
            if !target_conn_closes(&lab.raw, r.conn).await {
                wrong.push(format!(
                    "{what}: the target connection stayed open after a TE+CL request"
                ));
            }
        }
    }
}

/// Sends `raw` (a request, then `GET /internal` right behind it) on each listener:
/// the first is answered 200 and reaches the target with the body it framed; the
/// bytes after it are parsed by the balancer as a request of their own, so they meet
/// the rules (403) or the connection closes; either way they never reach the target.
pub async fn run_pipelined(lab: &Lab, case: &str, raw: impl AsRef<[u8]>, wrong: &mut Vec<String>) {
    let raw = raw.as_ref();
    for (mode, port) in &lab.ports {
        let what = format!("{case} [{mode}]");
        let before = lab.raw.count();
        let mut c = Conn::connect(local(*port)).await.unwrap();
        let _ = c.send(raw).await;
        match tokio::time::timeout(Duration::from_secs(10), c.read_response()).await {
            Ok(Ok(r)) if r.status == 200 => {}
            other => wrong.push(format!("{what}: first answer {other:?}")),
        }
        match tokio::time::timeout(Duration::from_secs(10), c.read_response()).await {
            Ok(Ok(r)) if r.status == 403 => {}
            Ok(Err(_)) => {} // closed: fine
            other => wrong.push(format!("{what}: second answer {other:?}")),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let new = new_requests(&lab.raw, before, &what, wrong);
        if new.len() != 1 {
            wrong.push(format!(
                "{what}: the target got {} requests: {:?}",
                new.len(),
                new.iter().map(|r| &r.head).collect::<Vec<_>>()
            ));
        }
    }
}

/// CL.TE: the Content-Length covers a chunked body's end and a smuggled request;
/// TE.CL: a short Content-Length, the smuggled request inside a chunk.
pub fn cl_te(te_lines: &str) -> String {
    let body = format!("0\r\n\r\n{SMUGGLED}");
    format!(
        "POST /clte HTTP/1.1\r\nHost: test.local\r\nContent-Length: {}\r\n{te_lines}\r\n{body}",
        body.len()
    )
}

pub fn te_cl(te_lines: &str) -> String {
    format!(
        "POST /tecl HTTP/1.1\r\nHost: test.local\r\n{te_lines}Content-Length: 4\r\n\r\n{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n",
        SMUGGLED.len()
    )
}

/// Fails the test with every problem found, one per line.
pub fn report(wrong: Vec<String>) {
    assert!(
        wrong.is_empty(),
        "{} problem(s):\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
