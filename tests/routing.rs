//! Listener rules over real sockets (SPEC §2 rules and actions, §3 routing and
//! redirects, §4 group stickiness, §9 metrics): every condition type, AND across
//! conditions and OR within one, priority order, the default action, weighted and
//! sticky forwards, redirects and fixed responses.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use common::*;

/// Every group of the routing config; each has one backend answering its name.
const GROUPS: [&str; 22] = [
    "default",
    "hostwild",
    "hostq",
    "hostexact",
    "api",
    "pathq",
    "method",
    "get",
    "header",
    "query",
    "qvalue",
    "qstar",
    "src10",
    "src127",
    "and",
    "low",
    "high",
    "blue",
    "green",
    "never",
    "v6",
    "v6default",
];

const RULES: &str = r#"
      - {priority: 10, conditions: {host: ["*.wild.example.com"]}, action: {forward: hostwild}}
      - {priority: 11, conditions: {host: ["h?.example.com"]}, action: {forward: hostq}}
      - {priority: 12, conditions: {host: ["exact.example.com"]}, action: {forward: hostexact}}
      - {priority: 20, conditions: {path: ["/api*"]}, action: {forward: api}}
      - {priority: 21, conditions: {path: ["/v?/items"]}, action: {forward: pathq}}
      - {priority: 30, conditions: {method: [PURGE]}, action: {forward: method}}
      - {priority: 31, conditions: {method: [GET], path: ["/m-get"]}, action: {forward: get}}
      - {priority: 40, conditions: {headers: {X-Env: ["beta*"]}}, action: {forward: header}}
      - {priority: 50, conditions: {query: [{key: version, value: "2*"}]}, action: {forward: query}}
      - {priority: 51, conditions: {query: [{value: value}]}, action: {forward: qvalue}}
      - {priority: 52, conditions: {query: [{key: star, value: 'a\*b'}]}, action: {forward: qstar}}
      - {priority: 60, conditions: {source_ip: ["10.0.0.0/8"]}, action: {forward: src10}}
      - {priority: 61, conditions: {source_ip: ["127.0.0.0/8"], path: ["/src*"]}, action: {forward: src127}}
      - {priority: 70, conditions: {host: ["and.example.com", "or.example.com"], path: ["/both*", "/either*"]}, action: {forward: and}}
      - {priority: 90, conditions: {path: ["/prio/*"]}, action: {forward: low}}
      - {priority: 85, conditions: {path: ["/prio/x*"]}, action: {forward: high}}
      - {priority: 100, conditions: {path: ["/w/*"]}, action: {forward: {target_groups: [{name: blue, weight: 90}, {name: green, weight: 10}, {name: never, weight: 0}]}}}
      - {priority: 101, conditions: {path: ["/sticky*"]}, action: {forward: {target_groups: [{name: blue, weight: 50}, {name: green, weight: 50}], stickiness: 1h}}}
      - {priority: 110, conditions: {path: ["/r1/*"]}, action: {redirect: {protocol: HTTPS, status: 301}}}
      - {priority: 111, conditions: {path: ["/r2/*"]}, action: {redirect: {host: "new.#{host}", path: "/moved/#{path}", status: 302}}}
      - {priority: 112, conditions: {path: ["/r3/*"]}, action: {redirect: {protocol: HTTPS, port: 8443, path: "/#{host}/#{path}", query: "from=#{port}&#{query}"}}}
      - {priority: 113, conditions: {path: ["/r4/*"]}, action: {redirect: {protocol: HTTPS, port: '#{port}'}}}
      - {priority: 120, conditions: {path: ["/fixed*"]}, action: {fixed_response: {status: 418, content_type: application/json, body: '{"teapot":true}'}}}
      - {priority: 121, conditions: {host: ["maintenance.example.com"]}, action: {fixed_response: {status: 503, content_type: text/plain, body: "back soon"}}}
"#;

struct Setup {
    f: Fulcrum,
    web: u16,
    /// The IPv6 listener on [::1].
    v6: u16,
    _backends: Vec<Backend>,
}

async fn setup() -> Setup {
    let mut backends = Vec::new();
    let mut groups = String::new();
    for g in GROUPS {
        let b = Backend::start(g).await;
        groups.push_str(&format!(
            "  - {{name: {g}, health_check: {{path: /hc, interval: 30s, timeout: 2s}}, targets: [\"{}\"]}}\n",
            b.addr
        ));
        backends.push(b);
    }
    let (admin, web, v6) = (free_port(), free_port(), free_port());
    let yaml = format!(
        "runtime: {{worker_threads: 2}}\n\
         admin: {{bind: \"127.0.0.1:{admin}\"}}\n\
         listeners:\n\
         \x20 - name: web\n\
         \x20   bind: \"127.0.0.1:{web}\"\n\
         \x20   default_action: {{forward: default}}\n\
         \x20   rules:{RULES}\
         \x20 - name: v6\n\
         \x20   bind: \"[::1]:{v6}\"\n\
         \x20   default_action: {{forward: v6default}}\n\
         \x20   rules:\n\
         \x20     - {{priority: 1, conditions: {{source_ip: [\"127.0.0.0/8\"]}}, action: {{forward: src127}}}}\n\
         \x20     - {{priority: 2, conditions: {{source_ip: [\"::1/128\"]}}, action: {{forward: v6}}}}\n\
         target_groups:\n{groups}"
    );
    let f = Fulcrum::start(&yaml).await;
    Setup {
        f,
        web,
        v6,
        _backends: backends,
    }
}

/// Sends `METHOD target` with `host` (none when `None`) and extra header lines on a
/// new connection; the answer.
async fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    host: Option<&str>,
    extra: &str,
) -> Response {
    let host = host.map(|h| format!("Host: {h}\r\n")).unwrap_or_default();
    let raw = format!("{method} {target} HTTP/1.1\r\n{host}{extra}Connection: close\r\n\r\n");
    http_request(addr, raw.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{method} {target} (host {host:?}): {e}"))
}

/// Which group answered: the backend's name, or `status NNN` for anything else.
fn who(r: &Response) -> String {
    match r.header("x-backend") {
        Some(b) if r.status == 200 => b.to_string(),
        _ => format!("status {}", r.status),
    }
}

/// Routing cases: "METHOD target", Host ("" for test.example.org), extra header
/// lines, the group expected to answer.
const CASES: [[&str; 4]; 44] = [
    ["GET /", "", "", "default"],
    // host: case-insensitive, port removed; * spans labels (dots too); ? is one char
    ["GET /", "a.b.wild.example.com", "", "hostwild"],
    ["GET /", "A.B.WILD.Example.COM:8080", "", "hostwild"],
    ["GET /", "wild.example.com", "", "default"],
    ["GET /", "h1.example.com", "", "hostq"],
    ["GET /", "h12.example.com", "", "default"],
    ["GET /", "h.example.com", "", "default"],
    ["GET /", "EXACT.example.com:1234", "", "hostexact"],
    // path: case-sensitive, raw (not decoded), without the query
    ["GET /api/users", "", "", "api"],
    ["GET /api?x=1", "", "", "api"],
    ["GET /API/users", "", "", "default"],
    ["GET /%61pi/users", "", "", "default"],
    ["GET /x?next=/api", "", "", "default"],
    ["GET /v1/items", "", "", "pathq"],
    ["GET /v12/items", "", "", "default"],
    ["GET /v1/items/more", "", "", "default"],
    // method: exact, case-sensitive
    ["PURGE /m", "", "", "method"],
    ["Purge /m", "", "", "default"],
    ["GET /m-get", "", "", "get"],
    ["POST /m-get", "", "Content-Length: 0\r\n", "default"],
    // headers: name and value case-insensitive, any instance of a repeated header
    ["GET /h", "", "X-ENV: Beta-7\r\n", "header"],
    ["GET /h", "", "x-env: prod\r\nX-Env: beta\r\n", "header"],
    ["GET /h", "", "x-env: prod\r\n", "default"],
    ["GET /h", "", "x-environment: beta\r\n", "default"],
    // query: key/value, key case-insensitive, percent-decoded; value only; \* literal
    ["GET /q?version=2.5", "", "", "query"],
    ["GET /q?a=1&VERSION=2x", "", "", "query"],
    ["GET /q?v%65rsion=2", "", "", "query"],
    ["GET /q?version=12", "", "", "default"],
    ["GET /q?any=v%61lue", "", "", "qvalue"],
    ["GET /q?k=VALUE", "", "", "qvalue"],
    ["GET /q?k=values", "", "", "default"],
    // a bare token is a value for the conditions without a key
    ["GET /q?a=1&value", "", "", "qvalue"],
    ["GET /q?version", "", "", "default"],
    ["GET /q?star=a*b", "", "", "qstar"],
    ["GET /q?star=a%2Ab", "", "", "qstar"],
    ["GET /q?star=axxb", "", "", "default"],
    // source_ip: 127.0.0.0/8 matches (10.0.0.0/8 ranks first and does not)
    ["GET /src", "", "", "src127"],
    // AND across conditions, OR within one
    ["GET /both", "and.example.com", "", "and"],
    ["GET /either/1", "or.example.com", "", "and"],
    ["GET /neither", "and.example.com", "", "default"],
    ["GET /both", "x.example.com", "", "default"],
    // ascending priority whatever the file order (85 is listed after 90)
    ["GET /prio/x1", "", "", "high"],
    ["GET /prio/y", "", "", "low"],
    ["GET /api?version=2", "", "", "api"],
];

/// Every condition type, AND/OR, priority order and the default action.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_condition_type_routes_over_real_sockets() {
    bounded(90, async {
        let s = setup().await;
        let web = local(s.web);
        let ex = Some("test.example.org");
        let mut wrong = Vec::new();
        for [req, host, extra, want] in CASES {
            let (method, target) = req.split_once(' ').unwrap();
            let host = if host.is_empty() {
                "test.example.org"
            } else {
                host
            };
            let r = send(web, method, target, Some(host), extra).await;
            if who(&r) != want {
                wrong.push(format!(
                    "{req} Host {host} {extra:?} -> {} (want {want})",
                    who(&r)
                ));
            }
        }

        // HTTP/1.0 without Host routes with an empty host: default.
        let r = http_request(web, b"GET /ten HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        if who(&r) != "default" {
            wrong.push(format!("HTTP/1.0 without Host -> {}", who(&r)));
        }
        // A lower-case `get` is not the GET of rule 31 (refusing it is fine too).
        let r = send(web, "get", "/m-get", ex, "").await;
        if who(&r) == "get" {
            wrong.push("`get /m-get` was routed by the `method: [GET]` rule".into());
        }
        // Two Host headers: SPEC §3 answers 400 rather than routing by either.
        let r = send(
            web,
            "GET",
            "/",
            Some("exact.example.com"),
            "Host: h1.example.com\r\n",
        )
        .await;
        if r.status != 400 {
            wrong.push(format!("two Host headers -> {} (want 400)", who(&r)));
        }
        // The IPv6 listener: ::1 matches ::1/128, not 127.0.0.0/8.
        let v6: SocketAddr = format!("[::1]:{}", s.v6).parse().unwrap();
        let r = send(v6, "GET", "/", Some("v6.example.com"), "").await;
        if who(&r) != "v6" {
            wrong.push(format!(
                "[::1] client with source_ip ::1/128 -> {} (want v6)",
                who(&r)
            ));
        }
        assert!(wrong.is_empty(), "misrouted:\n{}", wrong.join("\n"));
        let _ = &s.f;
    })
    .await;
}

/// 90/10/0 over 1,000 requests on fresh connections: blue within 90 % ± 5 points,
/// the weight-0 group never; target responses are counted per group.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn weighted_forward_splits_by_weight() {
    bounded(120, async {
        let s = setup().await;
        let mut tally: HashMap<String, usize> = HashMap::new();
        for i in 0..1000 {
            let r = get(local(s.web), &format!("/w/{i}")).await;
            *tally.entry(who(&r)).or_default() += 1;
        }
        let blue = tally.get("blue").copied().unwrap_or(0);
        let green = tally.get("green").copied().unwrap_or(0);
        assert_eq!(blue + green, 1000, "answers: {tally:?}");
        assert!(
            (850..=950).contains(&blue),
            "blue answered {blue} of 1000 (want 900 ± 50): {tally:?}"
        );
        assert!(
            !tally.contains_key("never"),
            "the weight-0 group was chosen: {tally:?}"
        );
        let m = s.f.metrics().await;
        for (g, n) in [("blue", blue), ("green", green)] {
            let got = metric(
                &m,
                "fulcrum_target_responses_total",
                &[("target_group", g), ("code_class", "2xx")],
            );
            assert_eq!(
                got,
                Some(n as f64),
                "fulcrum_target_responses_total{{target_group=\"{g}\",code_class=\"2xx\"}}"
            );
        }
        let never =
            metric(&m, "fulcrum_requests_total", &[("target_group", "never")]).unwrap_or(0.0);
        assert_eq!(never, 0.0, "requests routed to the weight-0 group");
    })
    .await;
}

/// The `FULCRUMLBTG` cookie of a sticky weighted forward: its value and attributes.
fn group_cookie(r: &Response) -> Option<(String, Vec<String>)> {
    r.headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .find_map(|(_, v)| {
            let mut parts = v.split(';').map(|p| p.trim().to_string());
            let first = parts.next()?;
            let value = first.strip_prefix("FULCRUMLBTG=")?.to_string();
            Some((value, parts.collect()))
        })
}

/// Changes the character at `at` to another of its kind (digit, hex letter, letter)
/// so the decoded value changes whatever the encoding.
fn tamper(v: &str, at: usize) -> String {
    let mut b = v.as_bytes().to_vec();
    let c = b[at];
    b[at] = match c {
        b'0'..=b'9' => b'0' + (c - b'0' + 1) % 10,
        b'a'..=b'f' => b'a' + (c - b'a' + 1) % 6,
        b'A'..=b'F' => b'A' + (c - b'A' + 1) % 6,
        b'g'..=b'z' => b'g' + (c - b'g' + 1) % 20,
        b'G'..=b'Z' => b'G' + (c - b'G' + 1) % 20,
        b'-' => b'_',
        _ => b'0',
    };
    String::from_utf8(b).unwrap()
}

/// A sticky 50/50 forward: the answer sets `FULCRUMLBTG=...; Path=/; HttpOnly` with
/// an `Expires` an hour ahead; sending it back keeps the same group 50 times; a
/// tampered value is ignored (routing by weight again) and replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sticky_weighted_forward_pins_the_group_with_a_signed_cookie() {
    bounded(90, async {
        let s = setup().await;
        let web = local(s.web);
        let first = send(web, "GET", "/sticky", Some("shop.example.com"), "").await;
        assert_eq!(first.status, 200, "{first:?}");
        let group = who(&first);
        let (value, attrs) = group_cookie(&first)
            .unwrap_or_else(|| panic!("no Set-Cookie: FULCRUMLBTG=...: {:?}", first.headers));
        assert!(!value.is_empty(), "empty cookie value");
        let has = |a: &str| attrs.iter().any(|x| x.eq_ignore_ascii_case(a));
        assert!(has("Path=/"), "no Path=/ in {attrs:?}");
        assert!(has("HttpOnly"), "no HttpOnly in {attrs:?}");
        let expires = attrs
            .iter()
            .find_map(|a| {
                a.strip_prefix("Expires=")
                    .or_else(|| a.strip_prefix("expires="))
            })
            .unwrap_or_else(|| panic!("no Expires in {attrs:?}"));
        let at =
            httpdate::parse_http_date(expires).unwrap_or_else(|e| panic!("Expires={expires}: {e}"));
        let ahead = at.duration_since(SystemTime::now()).unwrap_or_default();
        assert!(
            (Duration::from_secs(3480)..=Duration::from_secs(3720)).contains(&ahead),
            "Expires={expires} is {ahead:?} ahead, want about 1h"
        );

        for i in 0..50 {
            let cookie = if i % 2 == 0 {
                format!("Cookie: FULCRUMLBTG={value}\r\n")
            } else {
                format!("Cookie: a=1; FULCRUMLBTG={value}; b=2\r\n")
            };
            let r = send(
                web,
                "GET",
                &format!("/sticky/{i}"),
                Some("shop.example.com"),
                &cookie,
            )
            .await;
            assert_eq!(
                who(&r),
                group,
                "request {i} with the cookie left group {group}"
            );
        }

        // Tampered values: ignored (both groups come back, by weight) and replaced.
        let mut seen = HashMap::<String, usize>::new();
        for (k, at) in [0, value.len() / 2].into_iter().enumerate() {
            let bad = tamper(&value, at);
            assert_ne!(bad, value);
            for i in 0..20 {
                let r = send(
                    web,
                    "GET",
                    &format!("/sticky/t{k}{i}"),
                    Some("shop.example.com"),
                    &format!("Cookie: FULCRUMLBTG={bad}\r\n"),
                )
                .await;
                assert_eq!(r.status, 200, "{r:?}");
                *seen.entry(who(&r)).or_default() += 1;
                let (new, _) = group_cookie(&r).unwrap_or_else(|| {
                    panic!("a tampered cookie was not replaced: {:?}", r.headers)
                });
                assert_ne!(new, bad, "the tampered value was set again");
            }
        }
        assert_eq!(
            seen.len(),
            2,
            "40 requests with tampered cookies all went to one group: {seen:?}"
        );
    })
    .await;
}

/// Redirect Locations per SPEC §3 and ALB (`#{path}` without its leading slash,
/// HTTP→HTTPS moves to 443 which is left out, no `?` for an empty query, 301/302);
/// fixed responses; both counted per listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redirects_and_fixed_responses() {
    bounded(60, async {
        let s = setup().await;
        let web = local(s.web);
        let p = s.web;
        let host = format!("example.com:{p}");
        let cases = [
            (
                "/r1/a/b?x=1&y=2",
                301,
                "https://example.com/r1/a/b?x=1&y=2".to_string(),
            ),
            ("/r1/a?", 301, "https://example.com/r1/a".to_string()),
            ("/r1/", 301, "https://example.com/r1/".to_string()),
            (
                "/r2/p",
                302,
                format!("http://new.example.com:{p}/moved/r2/p"),
            ),
            (
                "/r2/p?k=v",
                302,
                format!("http://new.example.com:{p}/moved/r2/p?k=v"),
            ),
            (
                "/r3/z?q=1",
                301,
                format!("https://example.com:8443/example.com/r3/z?from={p}&q=1"),
            ),
            // `port: "#{port}"` given: the protocol changes, the port stays.
            ("/r4/x", 301, format!("https://example.com:{p}/r4/x")),
        ];
        let mut wrong = Vec::new();
        for (target, status, want) in &cases {
            let r = send(web, "GET", target, Some(&host), "").await;
            if r.status != *status || r.header("location") != Some(want.as_str()) {
                wrong.push(format!(
                    "{target}: {} Location {:?} (want {status} {want})",
                    r.status,
                    r.header("location")
                ));
            }
        }
        assert!(wrong.is_empty(), "redirects:\n{}", wrong.join("\n"));

        let r = send(web, "GET", "/fixed/1", Some(&host), "").await;
        assert_eq!(r.status, 418, "{r:?}");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.text(), r#"{"teapot":true}"#);
        let r = send(web, "GET", "/any", Some("Maintenance.Example.com"), "").await;
        assert_eq!(r.status, 503, "{r:?}");
        assert_eq!(r.header("content-type"), Some("text/plain"));
        assert_eq!(r.text(), "back soon");

        let m = s.f.metrics().await;
        let redirects = metric(&m, "fulcrum_redirects_total", &[("listener", "web")]);
        assert_eq!(
            redirects,
            Some(cases.len() as f64),
            "fulcrum_redirects_total{{listener=\"web\"}}"
        );
        let fixed = metric(&m, "fulcrum_fixed_responses_total", &[("listener", "web")]);
        assert_eq!(
            fixed,
            Some(2.0),
            "fulcrum_fixed_responses_total{{listener=\"web\"}}"
        );
        // Nothing reached a target; the balancer generated every answer itself, so
        // each counts by its code (ALB's HTTPCode_ELB_3XX/4XX/5XX).
        assert_eq!(
            metric(&m, "fulcrum_target_responses_total", &[]).unwrap_or(0.0),
            0.0
        );
        let by_status = |code: u16| cases.iter().filter(|c| c.1 == code).count() as f64;
        for (code, want) in [
            ("301", by_status(301)),
            ("302", by_status(302)),
            ("418", 1.0),
            ("503", 1.0),
        ] {
            assert_eq!(
                metric(
                    &m,
                    "fulcrum_lb_responses_total",
                    &[("listener", "web"), ("code", code)]
                ),
                Some(want),
                "fulcrum_lb_responses_total{{code=\"{code}\"}}"
            );
        }
    })
    .await;
}

/// The balancer's own answers: to an HTTP/1.0 keep-alive client a fixed response
/// says `Connection: keep-alive` and the connection serves the next request; a
/// request body that stops arriving is bounded by the listener's idle_timeout
/// (1 s here), not waited for forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fixed_responses_keep_http10_alive_and_time_out_stalled_bodies() {
    bounded(60, async {
        let (admin, web) = (free_port(), free_port());
        let yaml = format!(
            "runtime: {{worker_threads: 2}}\n\
             admin: {{bind: \"127.0.0.1:{admin}\"}}\n\
             listeners:\n\
             \x20 - name: web\n\
             \x20   bind: \"127.0.0.1:{web}\"\n\
             \x20   idle_timeout: 1s\n\
             \x20   default_action: {{fixed_response: {{status: 200, content_type: text/plain, body: \"fixed\"}}}}\n"
        );
        let _f = Fulcrum::start(&yaml).await;

        let mut c = Conn::connect(local(web)).await.unwrap();
        for i in 0..2 {
            c.send(b"GET /a HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
                .await
                .unwrap();
            let head = c.read_head().await.unwrap();
            assert!(head.starts_with("HTTP/1.1 200"), "request {i}: {head:?}");
            assert!(
                head.to_ascii_lowercase().contains("connection: keep-alive"),
                "request {i}: {head:?}"
            );
            assert_eq!(c.read_bytes(5).await.unwrap(), b"fixed");
        }

        let mut c = Conn::connect(local(web)).await.unwrap();
        c.send(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
            .await
            .unwrap();
        let t0 = Instant::now();
        assert!(
            c.closed_without_bytes(Duration::from_secs(10)).await,
            "the stalled body was waited for past idle_timeout"
        );
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(700) && took < Duration::from_secs(5),
            "closed after {took:?}, idle_timeout is 1 s"
        );
    })
    .await;
}
