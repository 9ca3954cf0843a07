//! Properties over generated input, with a fixed case budget, in the normal test suite.
//!
//! They complement the properties beside the code (head parsing and splitting in
//! `src/http/head/tests/props.rs`, the chunked codec in `src/http/chunked/tests.rs`,
//! patterns against wildmatch in `src/router/pattern.rs`, the rule table against the
//! linear scan in `src/router/table.rs`): here whole client and target byte streams,
//! well-formed by construction, go through the differential checks the fuzz targets
//! run (`fulcrum::fuzzing`), and a few properties that no fuzz target states.

use proptest::prelude::*;

use fulcrum::http::chunked::ChunkedDecoder;
use fulcrum::http::head::{
    self, BodyFraming, Limits, RequestHead, ResponseHead, write_error_response,
    write_error_response_no_body,
};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A message body and how it is framed.
#[derive(Clone, Debug)]
enum Body {
    None,
    Length(Vec<u8>),
    Chunked(Vec<Vec<u8>>),
}

impl Body {
    fn framing(&self) -> BodyFraming {
        match self {
            Body::None => BodyFraming::None,
            Body::Length(b) => BodyFraming::ContentLength(b.len() as u64),
            Body::Chunked(_) => BodyFraming::Chunked,
        }
    }

    fn header(&self) -> Option<String> {
        match self {
            Body::None => None,
            Body::Length(b) => Some(format!("Content-Length: {}", b.len())),
            Body::Chunked(_) => Some("Transfer-Encoding: chunked".into()),
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Body::None => {}
            Body::Length(b) => out.extend_from_slice(b),
            Body::Chunked(chunks) => {
                for c in chunks.iter().filter(|c| !c.is_empty()) {
                    out.extend_from_slice(format!("{:X}\r\n", c.len()).as_bytes());
                    out.extend_from_slice(c);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
            }
        }
    }
}

fn body() -> impl Strategy<Value = Body> {
    let bytes = || prop::collection::vec(any::<u8>(), 0..40);
    prop_oneof![
        Just(Body::None),
        bytes().prop_map(Body::Length),
        prop::collection::vec(bytes(), 0..4).prop_map(Body::Chunked),
    ]
}

/// A header line other than Host and the framing ones: end-to-end names, hop-by-hop
/// names, and a `Connection` that lists some of them.
fn header() -> impl Strategy<Value = String> {
    let value = "[!-~]([ -~]{0,10}[!-~])?";
    prop_oneof![
        ("X-[A-Za-z0-9]{1,6}", value).prop_map(|(n, v)| format!("{n}: {v}")),
        (
            prop::sample::select(vec![
                "Accept",
                "Cookie",
                "Keep-Alive",
                "TE",
                "Trailer",
                "Proxy-Connection",
                "Upgrade",
                "Expect",
                "X-Forwarded-Proto",
                "X-Forwarded-Port",
                "X-Amzn-Trace-Id",
            ]),
            value
        )
            .prop_map(|(n, v)| format!("{n}: {v}")),
        "(1\\.2\\.3\\.4|::1| ?)(, (10\\.0\\.0\\.[0-9]|fe80::1| ?)){0,3}"
            .prop_map(|v| format!("X-Forwarded-For: {v}")),
        prop::collection::vec(
            prop::sample::select(vec![
                "close",
                "keep-alive",
                "upgrade",
                "X-A1",
                "Cookie",
                "Host",
                "x-b"
            ]),
            1..4
        )
        .prop_map(|t| format!("Connection: {}", t.join(", "))),
    ]
}

/// One request a client could send, as text, with the parts it should parse to.
#[derive(Clone, Debug)]
struct Request {
    method: &'static str,
    target: String,
    /// What the parser forwards as the target (the path of an absolute-form one).
    forwarded_target: String,
    http10: bool,
    headers: Vec<String>,
    body: Body,
}

impl Request {
    fn write(&self, out: &mut Vec<u8>) {
        let version = if self.http10 { "HTTP/1.0" } else { "HTTP/1.1" };
        out.extend_from_slice(format!("{} {} {version}\r\n", self.method, self.target).as_bytes());
        for h in &self.headers {
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(h) = self.body.header() {
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        self.body.write(out);
    }
}

fn request() -> impl Strategy<Value = Request> {
    let method = prop::sample::select(vec![
        "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "BREW",
    ]);
    let path = "/[a-z0-9/._~%-]{0,12}(\\?[a-z0-9=&%]{0,8})?";
    (
        method,
        path,
        prop::option::of("[a-z]{1,5}\\.(example|test)(:[1-9][0-9]{0,3})?"),
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(header(), 0..6),
        body(),
    )
        .prop_map(
            |(method, path, host, absolute, http10, mut headers, body)| {
                let (target, host_line) = match &host {
                    Some(h) if absolute => {
                        (format!("http://{h}{path}"), Some("Host: ignored".into()))
                    }
                    Some(h) => (path.clone(), Some(format!("Host: {h}"))),
                    None => (path.clone(), None),
                };
                match host_line {
                    Some(h) => headers.insert(0, h),
                    None if !http10 => headers.insert(0, "Host: default.example".into()),
                    None => {}
                }
                Request {
                    method,
                    target,
                    forwarded_target: path,
                    http10,
                    headers,
                    body,
                }
            },
        )
}

/// One response a target could send.
#[derive(Clone, Debug)]
struct Response {
    status: u16,
    reason: &'static str,
    http10: bool,
    headers: Vec<String>,
    body: Body,
}

impl Response {
    fn write(&self, out: &mut Vec<u8>) {
        let version = if self.http10 { "HTTP/1.0" } else { "HTTP/1.1" };
        out.extend_from_slice(format!("{version} {} {}\r\n", self.status, self.reason).as_bytes());
        for h in &self.headers {
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        let bodiless = self.status < 200 || self.status == 204 || self.status == 304;
        if !bodiless {
            if let Some(h) = self.body.header() {
                out.extend_from_slice(h.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        out.extend_from_slice(b"\r\n");
        if !bodiless {
            self.body.write(out);
        }
    }
}

fn response() -> impl Strategy<Value = Response> {
    (
        prop::sample::select(vec![
            100u16, 101, 200, 201, 204, 206, 301, 304, 404, 500, 503, 599,
        ]),
        prop::sample::select(vec!["OK", "", "Fine Thanks", "caf\u{e9}"]),
        any::<bool>(),
        prop::collection::vec(header(), 0..6),
        body(),
    )
        .prop_map(|(status, reason, http10, headers, body)| Response {
            status,
            reason,
            http10,
            headers,
            // A body runs to the end of the connection without framing: give it one.
            body: match body {
                Body::None => Body::Length(Vec::new()),
                b => b,
            },
        })
}

proptest! {
    #![proptest_config(config())]

    /// A client's stream of pipelined requests passes every request-head check:
    /// whole and byte-at-a-time parses agree, both Transfer-Encoding policies agree,
    /// and what would be forwarded re-parses to the same request with exactly the
    /// end-to-end headers, in order.
    #[test]
    fn client_streams_pass_the_request_checks(reqs in prop::collection::vec(request(), 1..4)) {
        let mut stream = Vec::new();
        for r in &reqs {
            r.write(&mut stream);
        }
        fulcrum::fuzzing::request_head(&stream);
    }

    /// Each request of a pipelined stream is found exactly where it was written: the
    /// body framing the parser decides consumes exactly the body that was sent, so
    /// the next bytes are read as the next request and never as part of a body.
    #[test]
    fn pipelined_requests_split_at_their_bodies(reqs in prop::collection::vec(request(), 1..5)) {
        let mut stream = Vec::new();
        let mut starts = Vec::new();
        for r in &reqs {
            starts.push(stream.len());
            r.write(&mut stream);
        }
        starts.push(stream.len());
        let mut at = 0;
        for (i, r) in reqs.iter().enumerate() {
            prop_assert_eq!(at, starts[i]);
            let buf = &stream[at..];
            let mut h = RequestHead::default();
            let parsed = head::parse_request(buf, &Limits::default(), &mut h);
            prop_assert_eq!(parsed, Ok(Some(())), "{:?}", String::from_utf8_lossy(buf));
            prop_assert_eq!(h.method(buf), r.method.as_bytes());
            prop_assert_eq!(h.target(buf), r.forwarded_target.as_bytes());
            prop_assert_eq!(h.framing, r.body.framing());
            at += h.head_len;
            match h.framing {
                BodyFraming::ContentLength(n) => at += n as usize,
                BodyFraming::Chunked => {
                    let (n, done) = ChunkedDecoder::new()
                        .feed(&stream[at..], &mut Vec::new())
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert!(done);
                    at += n;
                }
                _ => {}
            }
        }
        prop_assert_eq!(at, stream.len());
    }

    /// A target's stream of responses passes every response-head check: whole and
    /// byte-at-a-time parses agree, and the head written to the client re-parses with
    /// the same status, reason, framing and end-to-end headers.
    #[test]
    fn target_streams_pass_the_response_checks(resps in prop::collection::vec(response(), 1..4)) {
        let mut stream = Vec::new();
        for r in &resps {
            r.write(&mut stream);
        }
        let mut h = ResponseHead::default();
        prop_assert_eq!(head::parse_response(&stream, false, &mut h), Ok(Some(())));
        prop_assert_eq!(h.status, resps[0].status);
        fulcrum::fuzzing::response_head(&stream);
    }

    /// The balancer's own answers parse back as what they say: the status (500 for
    /// one out of range), a Content-Length that covers exactly the body written, and
    /// `Connection: close` when asked; without the body, the same head.
    #[test]
    fn error_responses_parse_back(status: u16, close: bool) {
        let mut out = Vec::new();
        write_error_response(status, close, &mut out);
        let mut bare = Vec::new();
        write_error_response_no_body(status, close, &mut bare);
        let want = if (100..=999).contains(&status) { status } else { 500 };
        if want > 599 {
            // Not a status a target could send, so our parser refuses it.
            return Ok(());
        }
        let mut h = ResponseHead::default();
        prop_assert_eq!(head::parse_response(&out, false, &mut h), Ok(Some(())));
        prop_assert_eq!(h.status, want);
        prop_assert!(out.starts_with(&bare));
        let body = out.len() - h.head_len;
        prop_assert_eq!(bare.len(), h.head_len);
        match h.framing {
            BodyFraming::ContentLength(n) => prop_assert_eq!(n as usize, body),
            BodyFraming::None => prop_assert_eq!(body, 0),
            other => prop_assert!(false, "framing {:?}", other),
        }
        if close {
            prop_assert!(!h.keep_alive);
        }
    }

    /// PROXY v2 headers for any pair of addresses read back as those addresses.
    #[test]
    fn proxy_v2_headers_read_back(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
        fulcrum::fuzzing::proxy_v2(&bytes);
    }
}

/// Line-level damage to a config file: drop, repeat or swap lines, overwrite a byte
/// with YAML punctuation, or cut the file short.
#[derive(Clone, Debug)]
enum Damage {
    Drop(usize),
    Repeat(usize),
    Swap(usize, usize),
    Overwrite(usize, usize, char),
    Cut(usize),
}

fn damage() -> impl Strategy<Value = Damage> {
    let line = 0usize..200;
    prop_oneof![
        line.clone().prop_map(Damage::Drop),
        line.clone().prop_map(Damage::Repeat),
        (line.clone(), line.clone()).prop_map(|(a, b)| Damage::Swap(a, b)),
        (
            line,
            0usize..40,
            prop::sample::select(vec![
                ':', '-', ' ', '\t', '[', '{', '}', '*', '&', '#', '"', '\'', '0', 'x', '!', '|',
                '>'
            ])
        )
            .prop_map(|(l, c, ch)| Damage::Overwrite(l, c, ch)),
        (0usize..8000).prop_map(Damage::Cut),
    ]
}

fn apply(text: &str, damages: &[Damage]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for d in damages {
        let n = lines.len().max(1);
        match *d {
            Damage::Drop(i) if !lines.is_empty() => {
                lines.remove(i % n);
            }
            Damage::Repeat(i) if !lines.is_empty() => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            Damage::Swap(a, b) if !lines.is_empty() => lines.swap(a % n, b % n),
            Damage::Overwrite(i, c, ch) if !lines.is_empty() => {
                let l = &mut lines[i % n];
                let mut chars: Vec<char> = l.chars().collect();
                if !chars.is_empty() {
                    let at = c % chars.len();
                    chars[at] = ch;
                    *l = chars.into_iter().collect();
                }
            }
            Damage::Cut(at) => {
                let joined = lines.join("\n");
                let mut end = at.min(joined.len());
                while !joined.is_char_boundary(end) {
                    end -= 1;
                }
                lines = joined[..end].lines().map(str::to_owned).collect();
            }
            _ => {}
        }
    }
    lines.join("\n")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..config() })]

    /// Damaged versions of real config files load or are refused with positioned
    /// errors inside the file; the loader never panics, and a file that still loads
    /// routes through its rule tables as through the linear scan.
    #[test]
    fn damaged_configs_are_refused_cleanly(
        which in 0usize..3,
        damages in prop::collection::vec(damage(), 1..4),
    ) {
        let base = [
            include_str!("../config/fulcrum.yaml"),
            include_str!("../config/demo.yaml"),
            include_str!("../fuzz/corpus/config/rules.yaml"),
        ][which];
        fulcrum::fuzzing::config(apply(base, &damages).as_bytes());
    }
}
