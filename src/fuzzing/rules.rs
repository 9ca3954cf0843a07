//! The indexed rule table against the linear scan, over rules and requests built
//! from the input's bytes (small alphabets, so that rules and requests meet).

use std::net::IpAddr;

use super::Cursor;
use crate::router::pattern::{Pattern, PatternOptions};
use crate::router::table::RuleTable;
use crate::router::{RequestView, matches};
use crate::snapshot::{Action, Conditions, FixedResponse, QueryCondition, Rule};

const MAX_RULES: usize = 40;
const MAX_REQUESTS: usize = 16;
const HOST: [char; 12] = ['a', 'b', 'c', '.', '.', '*', '?', '-', 'A', 'é', '1', 'w'];
const PATH: [char; 9] = ['/', '/', 'a', 'b', '*', '?', '.', '%', 'A'];
const VALUE: [char; 10] = ['a', 'B', '1', '*', '?', '%', '\\', '2', 'e', ' '];
const METHODS: [&str; 4] = ["GET", "POST", "BREW", "get"];
const HEADERS: [&str; 4] = ["x-a", "X-B", "host", "y"];
const NETS: [&str; 8] = [
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.3/32",
    "192.168.1.0/24",
    "0.0.0.0/0",
    "::/0",
    "2001:db8::/32",
    "::ffff:10.0.0.0/104",
];
const SOURCES: [&str; 6] = [
    "10.1.2.3",
    "10.9.9.9",
    "192.168.1.7",
    "8.8.8.8",
    "2001:db8::1",
    "::ffff:10.1.2.3",
];

/// An owned request for [`RequestView`].
#[derive(Debug)]
struct Req {
    host: String,
    path: String,
    query: String,
    method: &'static str,
    headers: Vec<(&'static str, String)>,
    source: IpAddr,
}

/// Builds up to [`MAX_RULES`] rules and [`MAX_REQUESTS`] requests from `data`; the
/// table's first match must be the linear scan's for every request.
pub fn rule_table(data: &[u8]) {
    let mut c = Cursor::new(data);
    let n = c.below(MAX_RULES + 1);
    let rules: Vec<Rule> = (0..n).map(|i| rule(&mut c, i as u32)).collect();
    let table = RuleTable::build(&rules);
    // The same index with every residual list sifted (small sets stay below the
    // production threshold).
    let sifting = RuleTable::sifting_from(&rules, 1);
    let stats = table.stats();
    assert_eq!(stats.rules, rules.len());
    assert_eq!(stats.by_host + stats.by_path + stats.residual, rules.len());
    let mut asked = 0;
    while asked < MAX_REQUESTS && (asked == 0 || !c.is_empty()) {
        let r = request(&mut c);
        view(&r, |v| {
            let linear = rules.iter().position(|rule| matches(&rule.conditions, v));
            assert_eq!(table.first_match(&rules, v), linear, "{r:?}");
            assert_eq!(sifting.first_match(&rules, v), linear, "sieve: {r:?}");
            // A table asked about other rules than its own scans them.
            if let Some(fewer) = rules.get(1..) {
                let linear = fewer.iter().position(|rule| matches(&rule.conditions, v));
                assert_eq!(table.first_match(fewer, v), linear, "{r:?}");
            }
        });
        asked += 1;
    }
}

fn view<R>(r: &Req, f: impl FnOnce(&RequestView) -> R) -> R {
    let headers =
        |visit: &mut dyn FnMut(&str, &str) -> bool| r.headers.iter().any(|(n, v)| visit(n, v));
    f(&RequestView {
        host: &r.host,
        path: &r.path,
        query: &r.query,
        method: r.method,
        headers: &headers,
        source: r.source,
    })
}

fn word(c: &mut Cursor<'_>, alphabet: &[char], max: usize) -> String {
    let len = c.below(max + 1);
    (0..len)
        .map(|_| alphabet[c.below(alphabet.len())])
        .collect()
}

fn patterns(c: &mut Cursor<'_>, alphabet: &[char], opts: PatternOptions) -> Vec<Pattern> {
    let n = 1 + c.below(3);
    (0..n)
        .map(|_| Pattern::compile(&word(c, alphabet, 10), opts))
        .collect()
}

fn rule(c: &mut Cursor<'_>, priority: u32) -> Rule {
    let flags = c.byte();
    let mut cond = Conditions::default();
    if flags & 1 != 0 {
        cond.host = patterns(c, &HOST, PatternOptions::HOST);
    }
    if flags & 2 != 0 {
        cond.path = patterns(c, &PATH, PatternOptions::PATH);
    }
    if flags & 4 != 0 {
        cond.method = (0..1 + c.below(2))
            .map(|_| METHODS[c.below(METHODS.len())].to_owned())
            .collect();
    }
    if flags & 8 != 0 {
        for _ in 0..1 + c.below(2) {
            let name = HEADERS[c.below(HEADERS.len())].to_ascii_lowercase();
            cond.headers
                .push((name, patterns(c, &VALUE, PatternOptions::HEADER_VALUE)));
        }
    }
    if flags & 16 != 0 {
        for _ in 0..1 + c.below(2) {
            let key = (c.byte() & 1 == 1)
                .then(|| Pattern::compile(&word(c, &VALUE, 4), PatternOptions::QUERY));
            cond.query.push(QueryCondition {
                key,
                value: Pattern::compile(&word(c, &VALUE, 6), PatternOptions::QUERY),
            });
        }
    }
    if flags & 32 != 0 {
        cond.source_ip = (0..1 + c.below(2))
            .filter_map(|_| NETS[c.below(NETS.len())].parse().ok())
            .collect();
    }
    Rule {
        priority,
        conditions: cond,
        action: Action::FixedResponse(FixedResponse {
            status: 200,
            content_type: String::new(),
            body: String::new(),
        }),
    }
}

fn request(c: &mut Cursor<'_>) -> Req {
    let flags = c.byte();
    let mut host = word(c, &HOST, 16);
    if flags & 1 != 0 {
        // Past the table's stack buffer for lower-casing.
        host = host.repeat(300 / host.len().max(1) + 1);
    }
    let path = word(c, &PATH, 16);
    let mut query = String::new();
    for _ in 0..c.below(3) {
        query.push_str(&word(c, &VALUE, 4));
        if c.byte() & 1 == 1 {
            query.push('=');
            query.push_str(&word(c, &VALUE, 6));
        }
        query.push('&');
    }
    let method = METHODS[c.below(METHODS.len())];
    let headers = (0..c.below(3))
        .map(|_| (HEADERS[c.below(HEADERS.len())], word(c, &VALUE, 6)))
        .collect();
    let source = SOURCES[c.below(SOURCES.len())]
        .parse()
        .unwrap_or(IpAddr::from([10, 1, 2, 3]));
    Req {
        host,
        path,
        query,
        method,
        headers,
        source,
    }
}
