//! The per-listener rule index: built once per snapshot from the listener's rules
//! (sorted by ascending priority), it answers "which rule matches first" by looking
//! at a few candidate lists instead of every rule.
//!
//! Invariant: every candidate list holds rule indices in ascending order, and for
//! every request the union of the lists a lookup gathers holds every rule that can
//! match it (indexes only ever narrow by a condition the rule requires). Candidates
//! are then checked in ascending index order with the full [`matches`], so the
//! answer is exactly the linear scan's.
//!
//! - Host index: rules whose every host pattern is an exact name (hash map) or ends
//!   in a literal with a dot (`*.example.com`, `*shop.example.com`, `?.cdn.example.org`):
//!   keyed by that literal from its first dot, found by looking up the request
//!   host's last few dot-suffixes (`*` spans dots, so `a.b.example.com` finds
//!   `.example.com`).
//! - Path index: other rules whose every path pattern starts with a literal
//!   (`/api/v3/*`, `/img/*/thumb?.png` under `/img/`) or is exact: a byte trie walked
//!   along the request path.
//! - Residual: the rest (no host and no path, `*`-led paths, `www.*` hosts,
//!   header/query/method/source-ip-only rules), candidates for every request.
//!
//! A lookup allocates nothing and takes no lock: the lists it merges sit in a small
//! array on the stack, and the rare request that would need more (or an over-long
//! host with upper-case letters) is answered by the linear scan.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::pattern::{Pattern, PatternKind};
use super::{RequestView, matches};
use crate::snapshot::{Conditions, Rule};

/// Candidate lists one lookup merges at most; beyond, it scans linearly.
const MAX_SOURCES: usize = 24;
/// Longest host that is lower-cased on the stack (DNS names have at most 253).
const HOST_BUF: usize = 256;

/// The rule index of one listener; see the module docs.
pub struct RuleTable {
    /// `rules.len()` at build time; a lookup with other rules scans linearly.
    len: usize,
    /// Exact host (ASCII lower-case) to rule indices.
    exact: KeyMap,
    /// Host suffix starting at a dot (ASCII lower-case) to rule indices.
    dot_suffix: KeyMap,
    /// Most dots in a `dot_suffix` key: deeper suffixes of a host cannot be keys.
    suffix_dots: usize,
    paths: PathTrie,
    residual: Box<[u32]>,
    /// Cheap necessary conditions, by rule index.
    guards: Box<[Guard]>,
}

/// How the rules were spread over the indexes (for tests and benches).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    pub rules: usize,
    pub by_host: usize,
    pub by_path: usize,
    pub residual: usize,
}

impl RuleTable {
    /// Indexes `rules` (a listener's, sorted by ascending priority); lookups then
    /// return indices into the same slice.
    pub fn build(rules: &[Rule]) -> RuleTable {
        let mut exact = Lists::default();
        let mut dot_suffix = Lists::default();
        let mut suffix_dots = 0;
        let mut paths = TrieBuilder::new();
        let mut residual = Vec::new();
        // Indices are u32; a listener never has that many rules, but stay correct.
        let len = if u32::try_from(rules.len()).is_ok_and(|n| n < u32::MAX) {
            rules.len()
        } else {
            usize::MAX
        };
        for (i, rule) in rules.iter().enumerate().take(len) {
            let i = i as u32;
            let c = &rule.conditions;
            if let Some(keys) = host_keys(&c.host) {
                for key in keys {
                    match key {
                        HostKey::Exact(k) => exact.add(k, i),
                        HostKey::DotSuffix(k) => {
                            suffix_dots = suffix_dots.max(k.iter().filter(|&&b| b == b'.').count());
                            dot_suffix.add(k, i);
                        }
                    }
                }
            } else if let Some(keys) = path_keys(&c.path) {
                for (key, exact_only) in keys {
                    paths.add(key, exact_only, i);
                }
            } else {
                residual.push(i);
            }
        }
        RuleTable {
            len,
            exact: exact.freeze(),
            dot_suffix: dot_suffix.freeze(),
            suffix_dots,
            paths: paths.freeze(),
            residual: residual.into_boxed_slice(),
            guards: rules.iter().map(|r| Guard::of(&r.conditions)).collect(),
        }
    }

    /// How many rules each index holds (a rule in both host maps counts once).
    pub fn stats(&self) -> TableStats {
        let mut host = vec![false; self.guards.len()];
        for list in self.exact.values().chain(self.dot_suffix.values()) {
            for &i in list.iter() {
                if let Some(h) = host.get_mut(i as usize) {
                    *h = true;
                }
            }
        }
        let by_host = host.iter().filter(|h| **h).count();
        TableStats {
            rules: self.guards.len(),
            by_host,
            by_path: self.guards.len() - by_host - self.residual.len(),
            residual: self.residual.len(),
        }
    }

    /// The index in `rules` of the first rule whose conditions all match `req`: the
    /// same answer as `rules.iter().position(|r| matches(&r.conditions, req))`.
    /// `rules` must be the slice the table was built from (otherwise this falls
    /// back to that linear scan).
    pub fn first_match(&self, rules: &[Rule], req: &RequestView) -> Option<usize> {
        if rules.len() != self.len {
            return linear(rules, req);
        }
        let mut lower = [0u8; HOST_BUF];
        let host = if req.host.bytes().any(|b| b.is_ascii_uppercase()) {
            let Some(buf) = lower.get_mut(..req.host.len()) else {
                return linear(rules, req);
            };
            buf.copy_from_slice(req.host.as_bytes());
            buf.make_ascii_lowercase();
            &*buf
        } else {
            req.host.as_bytes()
        };
        let mut src = Sources::default();
        if let Some(list) = self.exact.get(host) {
            src.push(list);
        }
        let mut end = host.len();
        for _ in 0..self.suffix_dots {
            let Some(dot) = host
                .get(..end)
                .and_then(|h| h.iter().rposition(|&b| b == b'.'))
            else {
                break;
            };
            if let Some(list) = host.get(dot..).and_then(|k| self.dot_suffix.get(k)) {
                src.push(list);
            }
            end = dot;
        }
        self.paths.collect(req.path.as_bytes(), &mut src);
        src.push(&self.residual);
        if src.overflow {
            return linear(rules, req);
        }
        let method = method_bit(req.method);
        src.first(|i| {
            let i = i as usize;
            self.guards.get(i).is_some_and(|g| g.admits(method, req))
                && rules.get(i).is_some_and(|r| matches(&r.conditions, req))
        })
        .map(|i| i as usize)
    }
}

fn linear(rules: &[Rule], req: &RequestView) -> Option<usize> {
    rules.iter().position(|r| matches(&r.conditions, req))
}

/// Up to [`MAX_SOURCES`] sorted candidate lists, merged on the fly.
#[derive(Default)]
struct Sources<'a> {
    lists: [&'a [u32]; MAX_SOURCES],
    n: usize,
    overflow: bool,
}

impl<'a> Sources<'a> {
    fn push(&mut self, list: &'a [u32]) {
        if list.is_empty() {
            return;
        }
        match self.lists.get_mut(self.n) {
            Some(slot) => {
                *slot = list;
                self.n += 1;
            }
            None => self.overflow = true,
        }
    }

    /// The smallest candidate, over all lists, that `accept` takes; each candidate
    /// is offered once, in ascending order.
    fn first(mut self, mut accept: impl FnMut(u32) -> bool) -> Option<u32> {
        let lists = self.lists.get_mut(..self.n).unwrap_or_default();
        loop {
            let live = lists.iter().filter(|l| !l.is_empty()).count();
            if live <= 1 {
                let rest = lists
                    .iter()
                    .find(|l| !l.is_empty())
                    .copied()
                    .unwrap_or_default();
                return rest.iter().copied().find(|&i| accept(i));
            }
            let min = lists.iter().filter_map(|l| l.first()).copied().min()?;
            for l in lists.iter_mut() {
                if let [first, rest @ ..] = *l {
                    if *first == min {
                        *l = rest;
                    }
                }
            }
            if accept(min) {
                return Some(min);
            }
        }
    }
}

/// Per-rule necessary conditions checked before the full match: cheaper than it,
/// and they reject most residual rules for most requests.
#[derive(Clone, Copy, Debug, Default)]
struct Guard {
    /// Bits of the methods the rule allows (see [`method_bit`]); 0: any method.
    methods: u16,
    /// The rule has query conditions, so an empty query cannot match.
    query: bool,
}

impl Guard {
    fn of(c: &Conditions) -> Guard {
        Guard {
            methods: c.method.iter().fold(0, |m, name| m | method_bit(name)),
            query: !c.query.is_empty(),
        }
    }

    #[inline]
    fn admits(self, method: u16, req: &RequestView) -> bool {
        (self.methods == 0 || self.methods & method != 0) && !(self.query && req.query.is_empty())
    }
}

/// One bit per common method, one shared by all others (exact, case-sensitive,
/// as the method condition compares).
fn method_bit(m: &str) -> u16 {
    match m {
        "GET" => 1,
        "HEAD" => 1 << 1,
        "POST" => 1 << 2,
        "PUT" => 1 << 3,
        "DELETE" => 1 << 4,
        "PATCH" => 1 << 5,
        "OPTIONS" => 1 << 6,
        "CONNECT" => 1 << 7,
        "TRACE" => 1 << 8,
        _ => 1 << 9,
    }
}

enum HostKey {
    Exact(Vec<u8>),
    DotSuffix(Vec<u8>),
}

/// The host index keys of a host condition, or `None` when it has none or any of
/// its patterns cannot be indexed.
fn host_keys(host: &[Pattern]) -> Option<Vec<HostKey>> {
    if host.is_empty() {
        return None;
    }
    host.iter()
        .map(|p| {
            if p.options().backslash_escapes {
                return None;
            }
            if p.kind() == PatternKind::Exact {
                return Some(HostKey::Exact(
                    p.literal()?.to_ascii_lowercase().into_bytes(),
                ));
            }
            // The literal after the last wildcard must end the host; from its first
            // dot on, it is a suffix of the host that starts at one of its dots.
            let src = p.as_str();
            let tail = src.rfind(['*', '?']).map_or(src, |w| &src[w + 1..]);
            let dot = tail.find('.')?;
            Some(HostKey::DotSuffix(
                tail[dot..].to_ascii_lowercase().into_bytes(),
            ))
        })
        .collect()
}

/// The path trie keys (literal, whether the pattern is exact) of a path
/// condition, or `None` when it has none or any pattern starts with a wildcard.
fn path_keys(path: &[Pattern]) -> Option<Vec<(&[u8], bool)>> {
    if path.is_empty() {
        return None;
    }
    path.iter()
        .map(|p| {
            if p.options().backslash_escapes || p.options().case_insensitive {
                return None;
            }
            if p.kind() == PatternKind::Exact {
                return Some((p.literal()?.as_bytes(), true));
            }
            let src = p.as_str();
            let lead = &src[..src.find(['*', '?']).unwrap_or(src.len())];
            (!lead.is_empty()).then_some((lead.as_bytes(), false))
        })
        .collect()
}

/// Multiply-rotate hashing for the host maps. Their keys come from the config;
/// clients only choose what is looked up, which cannot lengthen a probe.
#[derive(Default)]
struct KeyHasher(u64);

const K: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(<[u8; 8]>::try_from(c).unwrap_or_default());
            h = (h.rotate_left(26) ^ w).wrapping_mul(K);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            if let Some(dst) = w.get_mut(..rest.len()) {
                dst.copy_from_slice(rest);
            }
            h = (h.rotate_left(26) ^ u64::from_le_bytes(w) ^ rest.len() as u64).wrapping_mul(K);
        }
        self.0 = h;
    }

    fn finish(&self) -> u64 {
        let h = self.0;
        (h ^ (h >> 29)).wrapping_mul(K) ^ (h >> 32)
    }
}

type KeyMap = HashMap<Box<[u8]>, Box<[u32]>, BuildHasherDefault<KeyHasher>>;

/// Rule lists by key while building; each list ascending and without repeats.
#[derive(Default)]
struct Lists(HashMap<Vec<u8>, Vec<u32>>);

impl Lists {
    fn add(&mut self, key: Vec<u8>, rule: u32) {
        let list = self.0.entry(key).or_default();
        if list.last() != Some(&rule) {
            list.push(rule);
        }
    }

    fn freeze(self) -> KeyMap {
        self.0
            .into_iter()
            .map(|(k, v)| (k.into_boxed_slice(), v.into_boxed_slice()))
            .collect()
    }
}

/// Byte trie over path-pattern literals. A node's `prefix` rules match paths that
/// start with the node's bytes, its `exact` rules paths equal to them.
struct PathTrie {
    nodes: Box<[TrieNode]>,
    /// Children of all nodes, each node's run sorted by byte.
    edges: Box<[(u8, u32)]>,
    rules: Box<[u32]>,
}

#[derive(Clone, Copy, Default)]
struct TrieNode {
    edges: (u32, u32),
    prefix: (u32, u32),
    exact: (u32, u32),
}

fn run<T>(all: &[T], (start, end): (u32, u32)) -> &[T] {
    all.get(start as usize..end as usize).unwrap_or_default()
}

impl PathTrie {
    fn collect<'a>(&'a self, path: &[u8], src: &mut Sources<'a>) {
        let Some(mut node) = self.nodes.first() else {
            return;
        };
        let mut bytes = path.iter();
        loop {
            src.push(run(&self.rules, node.prefix));
            let Some(&b) = bytes.next() else {
                src.push(run(&self.rules, node.exact));
                return;
            };
            let next = run(&self.edges, node.edges).iter().find(|e| e.0 == b);
            match next.and_then(|&(_, n)| self.nodes.get(n as usize)) {
                Some(n) => node = n,
                None => return,
            }
        }
    }
}

#[derive(Default)]
struct BuildNode {
    children: std::collections::BTreeMap<u8, u32>,
    prefix: Vec<u32>,
    exact: Vec<u32>,
}

struct TrieBuilder(Vec<BuildNode>);

impl TrieBuilder {
    fn new() -> Self {
        TrieBuilder(vec![BuildNode::default()])
    }

    fn add(&mut self, key: &[u8], exact: bool, rule: u32) {
        let mut at = 0usize;
        for &b in key {
            let fresh = self.0.len() as u32;
            let Some(node) = self.0.get_mut(at) else {
                return;
            };
            let next = *node.children.entry(b).or_insert(fresh);
            if next == fresh {
                self.0.push(BuildNode::default());
            }
            at = next as usize;
        }
        if let Some(node) = self.0.get_mut(at) {
            let list = if exact {
                &mut node.exact
            } else {
                &mut node.prefix
            };
            if list.last() != Some(&rule) {
                list.push(rule);
            }
        }
    }

    fn freeze(self) -> PathTrie {
        let mut nodes = Vec::with_capacity(self.0.len());
        let mut edges = Vec::new();
        let mut rules = Vec::new();
        let span = |v: &mut Vec<u32>, items: &[u32]| {
            let start = v.len() as u32;
            v.extend_from_slice(items);
            (start, v.len() as u32)
        };
        for b in &self.0 {
            let start = edges.len() as u32;
            edges.extend(b.children.iter().map(|(&k, &v)| (k, v)));
            nodes.push(TrieNode {
                edges: (start, edges.len() as u32),
                prefix: span(&mut rules, &b.prefix),
                exact: span(&mut rules, &b.exact),
            });
        }
        PathTrie {
            nodes: nodes.into_boxed_slice(),
            edges: edges.into_boxed_slice(),
            rules: rules.into_boxed_slice(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use proptest::prelude::*;

    use super::*;
    use crate::router::pattern::PatternOptions;
    use crate::router::rulegen::{self, LookupKind};
    use crate::snapshot::{Action, FixedResponse, QueryCondition};

    /// An owned request; `host` is used as given (not lower-cased).
    #[derive(Clone, Debug)]
    struct Req {
        host: String,
        path: String,
        query: String,
        method: String,
        headers: Vec<(String, String)>,
        source: IpAddr,
    }

    fn req(host: &str, path: &str) -> Req {
        Req {
            host: host.into(),
            path: path.into(),
            query: String::new(),
            method: "GET".into(),
            headers: Vec::new(),
            source: "10.1.2.3".parse().unwrap(),
        }
    }

    impl Req {
        fn view<R>(&self, f: impl FnOnce(&RequestView) -> R) -> R {
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
    }

    fn rule(c: Conditions) -> Rule {
        Rule {
            priority: 0,
            conditions: c,
            action: Action::FixedResponse(FixedResponse {
                status: 200,
                content_type: String::new(),
                body: String::new(),
            }),
        }
    }

    fn host(ps: &[&str]) -> Conditions {
        Conditions {
            host: pats(ps, PatternOptions::HOST),
            ..Conditions::default()
        }
    }

    fn path(ps: &[&str]) -> Conditions {
        Conditions {
            path: pats(ps, PatternOptions::PATH),
            ..Conditions::default()
        }
    }

    fn pats(ps: &[&str], opts: PatternOptions) -> Vec<Pattern> {
        ps.iter().map(|p| Pattern::compile(p, opts)).collect()
    }

    /// The table's answer, checked against the linear scan.
    fn first(table: &RuleTable, rules: &[Rule], r: &Req) -> Option<usize> {
        r.view(|v| {
            let got = table.first_match(rules, v);
            assert_eq!(got, linear(rules, v), "{r:?}");
            got
        })
    }

    /// `(host, path, expected)` against `rules`.
    fn expect(rules: &[Rule], cases: &[(&str, &str, Option<usize>)]) {
        let table = RuleTable::build(rules);
        for &(h, p, want) in cases {
            assert_eq!(first(&table, rules, &req(h, p)), want, "{h:?} {p:?}");
        }
    }

    #[test]
    fn exact_hosts() {
        let rules = [
            rule(host(&["a.example.com"])),
            rule(host(&["b.example.com"])),
        ];
        assert_eq!(RuleTable::build(&rules).stats().by_host, 2);
        expect(
            &rules,
            &[
                ("a.example.com", "/", Some(0)),
                ("b.example.com", "/x", Some(1)),
                ("c.example.com", "/", None),
                ("example.com", "/", None),
                ("a.example.com.", "/", None),
            ],
        );
    }

    #[test]
    fn suffix_wildcards_span_labels() {
        let rules = [
            rule(host(&["*.example.com"])),
            rule(host(&["*shop.example.org"])),
            rule(host(&["*.b.example.net"])),
        ];
        assert_eq!(RuleTable::build(&rules).stats().residual, 0);
        expect(
            &rules,
            &[
                ("test.example.com", "/", Some(0)),
                ("a.b.example.com", "/", Some(0)),
                ("x.y.z.example.com", "/", Some(0)),
                (".example.com", "/", Some(0)),
                ("example.com", "/", None),
                ("test.example.com.evil", "/", None),
                ("shop.example.org", "/", Some(1)),
                ("myshop.example.org", "/", Some(1)),
                ("a.myshop.example.org", "/", Some(1)),
                ("hop.example.org", "/", None),
                ("a.b.example.net", "/", Some(2)),
                ("b.example.net", "/", None),
                ("ab.example.net", "/", None),
            ],
        );
    }

    #[test]
    fn question_marks() {
        let rules = [
            rule(host(&["?.cdn.example.com"])),
            rule(host(&["www.*.example.???"])),
            rule(path(&["/v?/items/*"])),
            rule(path(&["*/thumb?.png"])),
        ];
        let s = RuleTable::build(&rules).stats();
        assert_eq!((s.by_host, s.by_path, s.residual), (1, 1, 2));
        expect(
            &rules,
            &[
                ("a.cdn.example.com", "/", Some(0)),
                ("ab.cdn.example.com", "/", None),
                (".cdn.example.com", "/", None),
                ("www.shop.example.com", "/", Some(1)),
                ("www.shop.example.co", "/", None),
                ("x", "/v2/items/9", Some(2)),
                ("x", "/v10/items/9", None),
                ("x", "/img/a/thumb1.png", Some(3)),
                ("x", "/img/a/thumb.png", None),
            ],
        );
    }

    #[test]
    fn mixed_host_values() {
        let rules = [
            rule(host(&[
                "api.example.com",
                "*.api.example.com",
                "api-?.example.net",
            ])),
            // One value no index serves puts the whole rule in the residual list.
            rule(host(&["admin.example.com", "admin.*"])),
            rule(host(&["*.example.com", "example.com"])),
        ];
        let s = RuleTable::build(&rules).stats();
        assert_eq!((s.by_host, s.residual), (2, 1));
        expect(
            &rules,
            &[
                ("api.example.com", "/", Some(0)),
                ("v1.api.example.com", "/", Some(0)),
                ("api-7.example.net", "/", Some(0)),
                ("api-77.example.net", "/", None),
                ("admin.example.com", "/", Some(1)),
                ("admin.internal", "/", Some(1)),
                ("example.com", "/", Some(2)),
                ("x.example.com", "/", Some(2)),
            ],
        );
    }

    #[test]
    fn host_and_path() {
        let both = |h: &str, p: &str| Conditions {
            host: pats(&[h], PatternOptions::HOST),
            path: pats(&[p], PatternOptions::PATH),
            ..Conditions::default()
        };
        let rules = [
            rule(both("a.example.com", "/api/*")),
            rule(both("*.example.com", "/static/*")),
            rule(path(&["/api/*", "/v2"])),
            rule(both("a.example.com", "*")),
            rule(path(&["/"])),
        ];
        expect(
            &rules,
            &[
                ("a.example.com", "/api/x", Some(0)),
                ("b.example.com", "/api/x", Some(2)),
                ("a.example.com", "/static/x", Some(1)),
                ("a.example.com", "/other", Some(3)),
                ("b.example.com", "/v2", Some(2)),
                ("b.example.com", "/v2/", None),
                ("b.example.com", "/", Some(4)),
                ("a.example.com", "/", Some(3)),
                ("", "/api", None),
            ],
        );
    }

    #[test]
    fn residual_rules_interleave_with_indexed() {
        let header = Conditions {
            headers: vec![(
                "x-env".into(),
                pats(&["beta*"], PatternOptions::HEADER_VALUE),
            )],
            ..Conditions::default()
        };
        let query = Conditions {
            query: vec![QueryCondition {
                key: Some(Pattern::compile("debug", PatternOptions::QUERY)),
                value: Pattern::compile("t*", PatternOptions::QUERY),
            }],
            ..Conditions::default()
        };
        let source = Conditions {
            source_ip: vec!["10.0.0.0/8".parse().unwrap()],
            method: vec!["POST".into()],
            ..Conditions::default()
        };
        let rules = [
            rule(path(&["/api/*"])),
            rule(header),
            rule(host(&["a.example.com"])),
            rule(query),
            rule(host(&["*.example.com"])),
            rule(source),
            rule(path(&["/*"])),
        ];
        let s = RuleTable::build(&rules).stats();
        assert_eq!((s.by_host, s.by_path, s.residual), (2, 2, 3));
        let table = RuleTable::build(&rules);
        let mut r = req("a.example.com", "/api/1");
        assert_eq!(first(&table, &rules, &r), Some(0));
        r.path = "/x".into();
        assert_eq!(first(&table, &rules, &r), Some(2));
        r.headers.push(("X-Env".into(), "BETA-1".into()));
        assert_eq!(first(&table, &rules, &r), Some(1));
        r.headers.clear();
        r.host = "b.example.com".into();
        r.query = "debug=%74rue".into();
        assert_eq!(first(&table, &rules, &r), Some(3));
        r.query.clear();
        assert_eq!(first(&table, &rules, &r), Some(4));
        r.host = "other".into();
        assert_eq!(first(&table, &rules, &r), Some(6));
        r.method = "POST".into();
        assert_eq!(first(&table, &rules, &r), Some(5));
        r.source = "192.0.2.1".parse().unwrap();
        assert_eq!(first(&table, &rules, &r), Some(6));
        r.path = "x".into();
        assert_eq!(first(&table, &rules, &r), None);
    }

    #[test]
    fn empty_host_of_http_1_0() {
        let rules = [
            rule(host(&["*.example.com"])),
            rule(host(&["example.com"])),
            rule(host(&["*"])),
            rule(path(&["/a*"])),
        ];
        expect(&rules, &[("", "/a", Some(2)), ("", "/b", Some(2))]);
        let rules = [rule(host(&["*.example.com"])), rule(path(&["/a*"]))];
        expect(&rules, &[("", "/a", Some(1)), ("", "/b", None)]);
    }

    #[test]
    fn host_case_is_ignored_path_case_is_not() {
        // The loader lower-cases host patterns; Pattern folds them too.
        let rules = [
            rule(host(&["API.Example.COM"])),
            rule(host(&["*.Example.ORG"])),
            rule(host(&["Api-?.EXAMPLE.net"])),
            rule(path(&["/API/*"])),
        ];
        expect(
            &rules,
            &[
                ("api.example.com", "/", Some(0)),
                ("Api.EXAMPLE.com", "/", Some(0)),
                ("A.B.EXAMPLE.ORG", "/", Some(1)),
                ("API-X.example.NET", "/", Some(2)),
                ("x", "/API/a", Some(3)),
                ("x", "/api/a", None),
                ("É.example.org", "/", Some(1)),
            ],
        );
        let long = format!("{}.EXAMPLE.org", "A".repeat(HOST_BUF));
        expect(&rules, &[(&long, "/", Some(1))]);
    }

    #[test]
    fn too_many_lists_fall_back_to_the_scan() {
        let labels: Vec<String> = (0..40).map(|i| format!("l{i}")).collect();
        let suffix = |k: usize| labels.get(k..).unwrap_or_default().join(".");
        let patterns: Vec<String> = (0..40).map(|k| format!("*.{}", suffix(k))).collect();
        let mut rules: Vec<Rule> = patterns.iter().rev().map(|p| rule(host(&[p]))).collect();
        rules.push(rule(path(&["/a/*"])));
        let deep = format!("x.{}", suffix(0));
        expect(
            &rules,
            &[
                (&deep, "/", Some(0)),
                ("x.l39", "/", Some(0)),
                ("x.l0", "/a/", Some(40)),
            ],
        );
        // Built from other rules: still the linear answer.
        let table = RuleTable::build(&rules[..3]);
        assert_eq!(first(&table, &rules, &req("x.l39", "/")), Some(0));
    }

    #[test]
    fn generated_workloads_load_and_agree() {
        for n in [10, 100, 1000] {
            let w = rulegen::workload(n, 300, 7);
            assert_eq!(w.yaml, rulegen::workload(n, 300, 7).yaml, "deterministic");
            let s = rulegen::load(&w.yaml).unwrap_or_else(|e| panic!("{e}"));
            let rules = &s.listeners[0].rules;
            assert_eq!(rules.len(), n);
            let table = RuleTable::build(rules);
            let stats = table.stats();
            assert!(stats.residual * 5 <= n, "{stats:?}");
            for l in &w.lookups {
                let got = l.with_view(|v| {
                    let got = table.first_match(rules, v);
                    assert_eq!(got, linear(rules, v), "{l:?}");
                    got
                });
                match l.kind {
                    LookupKind::Miss => assert_eq!(got, None, "{l:?}"),
                    _ => assert!(got.is_some(), "{l:?}"),
                }
            }
        }
    }

    fn text(chars: &'static [char], max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(chars), 0..max)
            .prop_map(|v| v.into_iter().collect())
    }

    /// Conditions as text (`Conditions` has no `Debug` for proptest to print).
    #[derive(Clone, Debug)]
    struct Spec {
        host: Vec<String>,
        path: Vec<String>,
        method: Vec<&'static str>,
        headers: Vec<(&'static str, String)>,
        query: Vec<(Option<&'static str>, String)>,
        source_ip: Vec<&'static str>,
    }

    impl Spec {
        fn rule(&self) -> Rule {
            rule(Conditions {
                host: pats_of(&self.host, PatternOptions::HOST),
                path: pats_of(&self.path, PatternOptions::PATH),
                method: self.method.iter().map(|m| (*m).to_owned()).collect(),
                headers: self
                    .headers
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), pats(&[v], PatternOptions::HEADER_VALUE)))
                    .collect(),
                query: self
                    .query
                    .iter()
                    .map(|(k, v)| QueryCondition {
                        key: k.map(|k| Pattern::compile(k, PatternOptions::QUERY)),
                        value: Pattern::compile(v, PatternOptions::QUERY),
                    })
                    .collect(),
                source_ip: self.source_ip.iter().map(|c| c.parse().unwrap()).collect(),
            })
        }
    }

    fn pats_of(ps: &[String], opts: PatternOptions) -> Vec<Pattern> {
        ps.iter().map(|p| Pattern::compile(p, opts)).collect()
    }

    fn spec() -> impl Strategy<Value = Spec> {
        let host_pat = text(&['a', 'b', 'A', '.', '*', '?', 'é'], 6);
        let path_pat = text(&['/', 'a', 'b', '*', '?'], 6);
        let value = || text(&['a', 'B', '1', '*', '?'], 4);
        (
            prop::collection::vec(host_pat, 0..3),
            prop::collection::vec(path_pat, 0..3),
            prop::collection::vec(prop::sample::select(&["GET", "POST", "BREW"][..]), 0..2),
            prop::collection::vec((prop::sample::select(&["x-a", "x-b"][..]), value()), 0..2),
            prop::collection::vec(
                (
                    prop::option::of(prop::sample::select(&["k", "K*"][..])),
                    value(),
                ),
                0..2,
            ),
            prop::collection::vec(
                prop::sample::select(&["10.0.0.0/8", "192.168.1.0/24", "::/0"][..]),
                0..2,
            ),
        )
            .prop_map(|(host, path, method, headers, query, source_ip)| Spec {
                host,
                path,
                method,
                headers,
                query,
                source_ip,
            })
    }

    fn request() -> impl Strategy<Value = Req> {
        (
            text(&['a', 'b', 'A', '.', 'é'], 8),
            text(&['/', 'a', 'b', '*'], 8),
            prop::sample::select(&["", "k=a", "K%2a=1", "x=aa&k=", "&&", "z=B1"][..]),
            prop::sample::select(&["GET", "POST", "BREW", "get"][..]),
            prop::collection::vec(
                (
                    prop::sample::select(&["x-a", "X-B", "y"][..]),
                    text(&['a', 'b', '1'], 3),
                ),
                0..3,
            ),
            prop::sample::select(&["10.1.2.3", "192.168.1.9", "8.8.8.8", "::1"][..]),
        )
            .prop_map(|(host, path, query, method, headers, source)| Req {
                host,
                path,
                query: query.into(),
                method: method.into(),
                headers: headers.into_iter().map(|(n, v)| (n.into(), v)).collect(),
                source: source.parse().unwrap(),
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn agrees_with_linear_scan(
            specs in prop::collection::vec(spec(), 0..24),
            reqs in prop::collection::vec(request(), 1..12),
        ) {
            let rules: Vec<Rule> = specs.iter().map(Spec::rule).collect();
            let table = RuleTable::build(&rules);
            for r in &reqs {
                r.view(|v| {
                    prop_assert_eq!(table.first_match(&rules, v), linear(&rules, v), "{:?}", r);
                    Ok(())
                })?;
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn agrees_on_generated_rule_sets(
            seed in any::<u64>(),
            n in 1usize..120,
            mix in prop::collection::vec((0usize..64, 0usize..64, 0usize..64), 40),
        ) {
            let w = rulegen::workload(n, 64, seed);
            let s = rulegen::load(&w.yaml).map_err(TestCaseError::fail)?;
            let rules = &s.listeners[0].rules;
            let table = RuleTable::build(rules);
            // The lookups as made, and crossed: one's host, another's path, a third's rest.
            let crossed = mix.iter().filter_map(|&(a, b, c)| {
                let (a, b, c) = (w.lookups.get(a)?, w.lookups.get(b)?, w.lookups.get(c)?);
                Some(rulegen::Lookup { host: a.host.clone(), path: b.path.clone(), ..c.clone() })
            });
            for l in w.lookups.iter().cloned().chain(crossed) {
                l.with_view(|v| {
                    prop_assert_eq!(table.first_match(rules, v), linear(rules, v), "{:?}", l);
                    Ok(())
                })?;
            }
        }
    }
}
