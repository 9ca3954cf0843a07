//! Seeded, deterministic rule sets and lookups for the rule-table benches and
//! tests (not part of the product): one listener's rules as config YAML, within
//! ALB's limits so the real loader accepts them with `aws_compat: true`, and
//! requests that match an early rule, a late rule, or nothing.
//!
//! The mix: exact hosts (some with a path, a method, a header or a second `*.`
//! host), `*.domain` and other host wildcards, `/api/v3/*`-style path prefixes,
//! exact paths, mid-pattern path wildcards (`/img7/*/thumb?.png`), paths no prefix
//! can index (`*/admin3/*`), `www.shop.*` and `*shop*` hosts, and header-, query-,
//! method- and source-ip-only rules. Pools of hosts and paths grow with the rule
//! count, so a host carries a handful of rules at any size.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::time::SystemTime;

use super::RequestView;
use crate::snapshot::{ConfigSource, Snapshot};

/// splitmix64: tiny, seeded, the same sequence on every platform.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    /// True `pct` times in a hundred.
    pub fn chance(&mut self, pct: usize) -> bool {
        self.below(100) < pct
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        let i = self.below(items.len());
        items.get(i).copied().unwrap_or_default()
    }
}

/// One generated rule, as written in the YAML.
#[derive(Clone, Debug, Default)]
pub struct RuleSpec {
    pub priority: u32,
    pub host: Vec<String>,
    pub path: Vec<String>,
    pub method: Vec<String>,
    pub headers: Vec<(String, Vec<String>)>,
    /// (key, value) patterns.
    pub query: Vec<(Option<String>, String)>,
    pub source_ip: Vec<String>,
    pub action: String,
}

impl RuleSpec {
    /// Condition values, as ALB counts them (at most 5).
    pub fn values(&self) -> usize {
        self.host.len()
            + self.path.len()
            + self.method.len()
            + self.headers.iter().map(|(_, v)| v.len()).sum::<usize>()
            + self.query.len()
            + self.source_ip.len()
    }
}

/// What a lookup was made to hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LookupKind {
    /// Satisfies a rule among the first tenth.
    Early,
    /// Satisfies a rule among the last tenth.
    Late,
    /// Made to match no rule.
    Miss,
}

/// An owned request for [`RequestView`].
#[derive(Clone, Debug)]
pub struct Lookup {
    pub kind: LookupKind,
    pub host: String,
    pub path: String,
    pub query: String,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub source: IpAddr,
}

impl Lookup {
    /// Calls `f` with a view of this request.
    pub fn with_view<R>(&self, f: impl FnOnce(&RequestView) -> R) -> R {
        let headers = |visit: &mut dyn FnMut(&str, &str) -> bool| {
            self.headers.iter().any(|(n, v)| visit(n, v))
        };
        f(&RequestView {
            host: &self.host,
            path: &self.path,
            query: &self.query,
            method: &self.method,
            headers: &headers,
            source: self.source,
        })
    }

    fn plain(kind: LookupKind, j: usize) -> Lookup {
        Lookup {
            kind,
            host: "www.example.com".to_owned(),
            path: format!("/home/{j}"),
            query: String::new(),
            method: "GET".to_owned(),
            headers: vec![
                (
                    "User-Agent".into(),
                    "Mozilla/5.0 (X11; Linux x86_64)".into(),
                ),
                ("Accept".into(), "*/*".into()),
                ("Accept-Encoding".into(), "gzip, br".into()),
                ("Cookie".into(), format!("session=s{j}")),
                ("X-Request-Id".into(), format!("req-{j}")),
            ],
            source: IpAddr::V4(Ipv4Addr::new(198, 51, 100, (j % 250) as u8)),
        }
    }
}

/// A listener's rules and the lookups to run against them.
pub struct Workload {
    /// In ascending priority (the loaded listener's order).
    pub rules: Vec<RuleSpec>,
    /// The whole config file; its one listener is `listeners[0]`.
    pub yaml: String,
    pub lookups: Vec<Lookup>,
}

const WORDS: [&str; 16] = [
    "shop", "api", "auth", "media", "pay", "search", "user", "cart", "blog", "docs", "mail", "cdn",
    "track", "feed", "chat", "news",
];
const TLDS: [&str; 4] = ["com", "net", "org", "io"];
const GROUPS: [&str; 4] = ["a", "b", "c", "d"];

fn name(k: usize) -> String {
    format!("{}{k}", WORDS.get(k % WORDS.len()).copied().unwrap_or("x"))
}

fn tld(k: usize) -> &'static str {
    TLDS.get(k % TLDS.len()).copied().unwrap_or("com")
}

/// A text the pattern matches: each `*` and `?` filled in.
fn fill(rng: &mut Rng, pattern: &str, star: &[&str]) -> String {
    let mut out = String::with_capacity(pattern.len() + 8);
    for c in pattern.chars() {
        match c {
            '*' => out.push_str(rng.pick(star)),
            '?' => out.push(char::from(b'a' + rng.below(26) as u8)),
            c => out.push(c),
        }
    }
    out
}

const HOST_FILL: [&str; 3] = ["x", "eu.edge", "a.b.c"];
const PATH_FILL: [&str; 4] = ["", "v2", "seg/42/item", "deep/er/path.html"];

/// Builds `rules` rules and `lookups` lookups (a third each early, late, miss)
/// from `seed`; the same arguments always give the same workload.
pub fn workload(rules: usize, lookups: usize, seed: u64) -> Workload {
    let mut rng = Rng::new(seed);
    let n = rules.max(1);
    let step = (49_999 / n).clamp(1, 100) as u32;
    let mut specs = Vec::with_capacity(n);
    let mut witnesses = Vec::with_capacity(n);
    for i in 0..n {
        let (mut spec, witness) = rule(&mut rng, n, i);
        spec.priority = (i as u32 + 1) * step;
        debug_assert!(spec.values() <= 5, "{spec:?}");
        specs.push(spec);
        witnesses.push(witness);
    }
    let tenth = (n / 10).max(1);
    let mut out = Vec::with_capacity(lookups);
    for j in 0..lookups {
        let (kind, at) = match j % 3 {
            0 => (LookupKind::Early, Some(rng.below(tenth))),
            1 => (LookupKind::Late, Some(n - 1 - rng.below(tenth))),
            _ => (LookupKind::Miss, None),
        };
        let lookup = at
            .and_then(|i| witnesses.get(i))
            .map(|w| Lookup { kind, ..w.clone() });
        out.push(lookup.unwrap_or_else(|| miss(&mut rng, j)));
    }
    // The file lists rules out of order; the loader sorts them by priority.
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let mut yaml = String::from(
        "limits: {aws_compat: true}\ntarget_groups: [{name: a}, {name: b}, {name: c}, {name: d}]\nlisteners:\n  - name: bench\n    bind: 127.0.0.1:8080\n    rules:\n",
    );
    for &i in &order {
        if let Some(s) = specs.get(i) {
            write_rule(&mut yaml, s);
        }
    }
    yaml.push_str("    default_action: {fixed_response: {status: 404}}\n");
    Workload {
        rules: specs,
        yaml,
        lookups: out,
    }
}

fn miss(rng: &mut Rng, j: usize) -> Lookup {
    let mut l = Lookup::plain(LookupKind::Miss, j);
    l.host = format!("h{j}.nomatch{}.test", rng.below(1000));
    l.path = format!("/nothing/{}/{j}", name(rng.below(64)));
    l.query = format!("utm_source=news&id={j}");
    l
}

/// One rule of kind drawn from the mix, and a request that satisfies it.
fn rule(rng: &mut Rng, n: usize, i: usize) -> (RuleSpec, Lookup) {
    let mut s = RuleSpec {
        action: format!(
            "{{forward: {}}}",
            GROUPS.get(i % GROUPS.len()).copied().unwrap_or("a")
        ),
        ..RuleSpec::default()
    };
    let mut l = Lookup::plain(LookupKind::Early, i);
    let hosts = (n / 6).max(2);
    let domains = (n / 10).max(2);
    let services = (n / 4).max(4);
    let k = rng.below(hosts);
    let svc = rng.below(services);
    let roll = rng.below(100);
    match roll {
        // Exact host, often with a path, sometimes a method, a header or a second host.
        0..24 => {
            s.host.push(format!("{}.example.{}", name(k), tld(k)));
            if rng.chance(60) {
                s.path.push(format!("/{}/v{}/*", name(svc), svc % 4 + 1));
            }
            if rng.chance(15) {
                s.method = vec!["GET".into(), "HEAD".into()];
            } else if rng.chance(10) {
                s.headers
                    .push(("x-canary".into(), vec![format!("{}-on", name(svc))]));
            }
            if rng.chance(10) {
                s.host.push(format!("*.{}.example.{}", name(k), tld(k)));
            }
        }
        // `*.domain`, often with a path, sometimes a header.
        24..38 => {
            let d = rng.below(domains);
            s.host
                .push(format!("*.{}.apps.example.{}", name(d), tld(d)));
            if rng.chance(50) {
                s.path.push(format!("/{}/*", name(svc)));
            }
            if rng.chance(10) {
                s.headers.push(("x-tenant".into(), vec![format!("t{svc}")]));
            }
        }
        // Other host wildcards: `?` in the first label, a dot-less suffix.
        38..42 => {
            let d = rng.below(domains);
            s.host.push(if rng.chance(50) {
                format!("api-?.{}.svc.example.net", name(d))
            } else {
                format!("*{}.example.io", name(d))
            });
        }
        // Path prefix, no host; sometimes two, a method or a query.
        42..62 => {
            s.path
                .push(format!("/api/v{}/{}/*", svc % 4 + 1, name(svc)));
            if rng.chance(15) {
                s.path.push(format!("/{}/legacy*", name(svc)));
            }
            if rng.chance(15) {
                s.method.push("POST".into());
                l.method = "POST".into();
            }
            if rng.chance(10) {
                s.query
                    .push((Some("version".into()), format!("{}*", svc % 7)));
            }
        }
        // Exact path.
        62..66 => s.path.push(if rng.chance(50) {
            format!("/healthz/{}", name(svc))
        } else {
            format!("/.well-known/{}", name(svc))
        }),
        // Mid-pattern wildcards: only the literal before the first wildcard helps.
        66..74 => {
            s.path.push(match rng.below(3) {
                0 => format!("/img{svc}/*/thumb?.png"),
                1 => format!("/static/{}/*.js", name(svc)),
                _ => format!("/v?/{}/*", name(svc)),
            });
            if rng.chance(20) {
                s.headers
                    .push(("x-client".into(), vec![format!("app-{}*", svc % 9)]));
            }
        }
        // Paths no prefix can index.
        74..77 => s.path.push(if rng.chance(33) {
            format!("*/admin{svc}/*")
        } else {
            format!("*/{}.json", name(svc))
        }),
        // `www.name.*` and `*name*` hosts.
        77..79 => s.host.push(if rng.chance(75) {
            format!("www.{}.*", name(k))
        } else {
            format!("*{}*", name(k))
        }),
        // Headers, most with a path; a few user-agent patterns.
        79..87 => {
            s.headers.push(match rng.below(10) {
                0..5 => ("x-tenant".into(), vec![format!("t{svc}")]),
                5..9 => ("x-canary".into(), vec![format!("{}-on", name(svc))]),
                _ => ("user-agent".into(), vec![format!("*bot{}*", svc % 8)]),
            });
            if rng.chance(65) {
                s.path.push(format!("/{}/*", name(svc)));
            }
        }
        // Query, half with a path.
        87..92 => {
            s.query.push(if rng.chance(50) {
                (Some("version".into()), format!("v{svc}*"))
            } else {
                (None, format!("debug{svc}"))
            });
            if rng.chance(50) {
                s.path.push(format!("/{}/*", name(svc)));
            }
        }
        // Source address, half with a path, half with a method.
        _ => {
            let a = (svc % 250) as u8;
            s.source_ip.push(format!("10.{a}.0.0/16"));
            l.source = IpAddr::V4(Ipv4Addr::new(10, a, 7, 9));
            if rng.chance(50) {
                s.path.push(format!("/internal/{}/*", name(svc)));
            }
            if rng.chance(50) {
                s.method = vec!["POST".into(), "PUT".into()];
                l.method = "PUT".into();
            }
        }
    }
    if let Some(h) = s.host.first() {
        l.host = fill(rng, h, &HOST_FILL);
    }
    if let Some(p) = s.path.first() {
        l.path = fill(rng, p, &PATH_FILL);
    }
    for (name, values) in &s.headers {
        let value = values.first().map(|v| fill(rng, v, &["x", "Agent/1.0"]));
        l.headers.push((name.clone(), value.unwrap_or_default()));
    }
    let mut pairs: Vec<String> = Vec::new();
    if let Some((key, value)) = s.query.first() {
        let key = key.clone().unwrap_or_else(|| "flag".into());
        // Percent-encode the first character now and then: the matcher decodes.
        let mut value = fill(rng, value, &["", "1", "beta"]);
        if rng.chance(30) {
            if let Some(c) = value.chars().next().filter(char::is_ascii) {
                value = format!("%{:02X}{}", c as u32, &value[1..]);
            }
        }
        pairs.push(format!("{key}={value}"));
    }
    if rng.chance(30) {
        pairs.insert(0, format!("page={}", rng.below(20)));
    }
    l.query = pairs.join("&");
    (s, l)
}

fn quoted(out: &mut String, items: &[String]) {
    out.push('[');
    for (i, v) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "\"{v}\"");
    }
    out.push(']');
}

fn write_rule(out: &mut String, s: &RuleSpec) {
    let _ = write!(
        out,
        "      - priority: {}\n        conditions: {{",
        s.priority
    );
    let mut first = true;
    let mut field = |out: &mut String, name: &str| {
        if !first {
            out.push_str(", ");
        }
        first = false;
        let _ = write!(out, "{name}: ");
    };
    for (name, items) in [
        ("host", &s.host),
        ("path", &s.path),
        ("method", &s.method),
        ("source_ip", &s.source_ip),
    ] {
        if !items.is_empty() {
            field(out, name);
            quoted(out, items);
        }
    }
    if !s.headers.is_empty() {
        field(out, "headers");
        out.push('{');
        for (i, (name, values)) in s.headers.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "{name}: ");
            quoted(out, values);
        }
        out.push('}');
    }
    if !s.query.is_empty() {
        field(out, "query");
        out.push('[');
        for (i, (key, value)) in s.query.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            match key {
                Some(k) => {
                    let _ = write!(out, "{{key: \"{k}\", value: \"{value}\"}}");
                }
                None => {
                    let _ = write!(out, "{{value: \"{value}\"}}");
                }
            }
        }
        out.push(']');
    }
    let _ = writeln!(out, "}}\n        action: {}", s.action);
}

/// Loads a workload's YAML through the real config loader.
pub fn load(yaml: &str) -> Result<Snapshot, String> {
    let dir = std::env::temp_dir();
    let source = ConfigSource {
        path: dir.join("bench.yaml"),
        sha256: String::new(),
        loaded_at: SystemTime::now(),
    };
    crate::config::load_text(
        yaml,
        "bench.yaml",
        dir,
        source,
        crate::config::LoadOptions {
            env: Box::new(|_| None),
        },
    )
    .map_err(|errs| {
        errs.iter()
            .map(|e| format!("{e:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    })
}
