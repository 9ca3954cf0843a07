//! Request routing: condition matchers (wildcard patterns, CIDRs) and rule
//! evaluation in ascending priority, first match wins, `default_action`
//! otherwise. [`route`] walks the sorted rules; [`route_with`] asks the listener's
//! [`table::RuleTable`] and gives the same answer without visiting every rule.

pub mod pattern;
#[doc(hidden)]
#[path = "gen.rs"]
pub mod rulegen;
pub mod table;

use std::net::IpAddr;

use crate::snapshot::{Action, Conditions, Listener};

/// Calls the given function with each (name, value) header of a request until it
/// returns true; returns whether it did.
pub type HeaderVisit<'a> = dyn Fn(&mut dyn FnMut(&str, &str) -> bool) -> bool + 'a;

/// What a rule can look at in a request.
pub struct RequestView<'a> {
    /// Host header, lower-cased, port removed ("" when absent).
    pub host: &'a str,
    /// The raw path, without the query.
    pub path: &'a str,
    /// The raw query string (without '?'), not yet decoded.
    pub query: &'a str,
    pub method: &'a str,
    /// Header (name, value) pairs as received.
    pub headers: &'a HeaderVisit<'a>,
    /// The TCP peer.
    pub source: IpAddr,
}

/// The matched action and its priority (0 for the default action).
pub fn route<'l>(listener: &'l Listener, req: &RequestView) -> (&'l Action, u32) {
    for rule in &listener.rules {
        if matches(&rule.conditions, req) {
            return (&rule.action, rule.priority);
        }
    }
    (&listener.default_action, 0)
}

/// [`route`] through `table`, which must have been built from `listener.rules`.
pub fn route_with<'l>(
    listener: &'l Listener,
    table: &table::RuleTable,
    req: &RequestView,
) -> (&'l Action, u32) {
    match table
        .first_match(&listener.rules, req)
        .and_then(|i| listener.rules.get(i))
    {
        Some(rule) => (&rule.action, rule.priority),
        None => (&listener.default_action, 0),
    }
}

/// Whether every present condition of `c` matches `req`.
pub(crate) fn matches(c: &Conditions, req: &RequestView) -> bool {
    // No host condition matches an empty host (an HTTP/1.0 request without Host),
    // not even `*` (SPEC §3).
    if !c.host.is_empty() && (req.host.is_empty() || !c.host.iter().any(|p| p.is_match(req.host))) {
        return false;
    }
    if !c.path.is_empty() && !c.path.iter().any(|p| p.is_match(req.path)) {
        return false;
    }
    if !c.method.is_empty() && !c.method.iter().any(|m| m == req.method) {
        return false;
    }
    if !c.source_ip.is_empty() && !c.source_ip.iter().any(|n| n.contains(&req.source)) {
        return false;
    }
    for (name, values) in &c.headers {
        // Any instance of a repeated header may match.
        let found = (req.headers)(&mut |n, v| {
            n.eq_ignore_ascii_case(name) && values.iter().any(|p| p.is_match(v))
        });
        if !found {
            return false;
        }
    }
    if !c.query.is_empty() && !query_matches(c, req.query) {
        return false;
    }
    true
}

/// Any query condition matching any (percent-decoded) key/value pair. A bare
/// token (`?debug`) is a key with an empty value, and also a value for the
/// conditions without a key (SPEC §2's `{ value: debug }`). Allocates only for a
/// pair with `%` escapes.
fn query_matches(c: &Conditions, query: &str) -> bool {
    query.split('&').filter(|p| !p.is_empty()).any(|pair| {
        let (k, v, bare) = match pair.split_once('=') {
            Some((k, v)) => (k, v, false),
            None => (pair, "", true),
        };
        let (key, value) = (decode(k), decode(v));
        c.query.iter().any(|q| match &q.key {
            Some(kp) => kp.is_match(&key) && q.value.is_match(&value),
            None => q.value.is_match(&value) || (bare && q.value.is_match(&key)),
        })
    })
}

/// Percent-decodes `s`, invalid UTF-8 replaced; borrows when nothing is escaped.
fn decode(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('%') {
        percent_encoding::percent_decode_str(s).decode_utf8_lossy()
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(yaml: &str) -> crate::snapshot::Snapshot {
        let dir = std::env::temp_dir();
        let source = crate::snapshot::ConfigSource {
            path: dir.join("r.yaml"),
            sha256: String::new(),
            loaded_at: std::time::SystemTime::now(),
        };
        crate::config::load_text(
            yaml,
            "r.yaml",
            dir,
            source,
            crate::config::LoadOptions {
                env: Box::new(|_| None),
            },
        )
        .unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn view<'a>(
        host: &'a str,
        path: &'a str,
        query: &'a str,
        headers: &'a HeaderVisit<'a>,
    ) -> RequestView<'a> {
        RequestView {
            host,
            path,
            query,
            method: "GET",
            headers,
            source: "10.1.2.3".parse().unwrap(),
        }
    }

    #[test]
    fn first_match_by_priority_then_default() {
        let s = snapshot(
            "target_groups: [{name: a}, {name: b}, {name: c}]\nlisteners:\n  - name: l\n    bind: 127.0.0.1:1\n    rules:\n      - {priority: 20, conditions: {path: [\"/api/*\"]}, action: {forward: b}}\n      - {priority: 10, conditions: {host: [\"*.example.com\"], path: [\"/api/v2*\"]}, action: {forward: c}}\n      - {priority: 30, conditions: {query: [{key: debug, value: \"t*\"}], headers: {x-env: [beta]}}, action: {fixed_response: {status: 200}}}\n    default_action: {forward: a}\n",
        );
        let l = &s.listeners[0];
        let none = |_: &mut dyn FnMut(&str, &str) -> bool| false;
        let beta = |f: &mut dyn FnMut(&str, &str) -> bool| f("x-other", "1") || f("X-Env", "BETA");
        assert_eq!(
            route(l, &view("a.example.com", "/api/v2/x", "", &none)).1,
            10
        );
        assert_eq!(route(l, &view("example.com", "/api/v2/x", "", &none)).1, 20);
        assert_eq!(route(l, &view("x", "/API/", "", &none)).1, 0);
        assert_eq!(route(l, &view("x", "/", "a=1&debug=%74rue", &beta)).1, 30);
        assert_eq!(route(l, &view("x", "/", "debug=true", &none)).1, 0);
        assert_eq!(route(l, &view("x", "/", "debug=false", &beta)).1, 0);
    }

    /// `{ value: debug }` (no key) matches a bare `?debug` as well as `?x=debug`;
    /// a keyed condition does not take a bare token's name as its value. No host
    /// condition, not even `*`, matches an empty host. The rule table and the
    /// linear scan agree on both.
    #[test]
    fn bare_query_tokens_and_empty_hosts() {
        let s = snapshot(
            "target_groups: [{name: a}]\nlisteners:\n  - name: l\n    bind: 127.0.0.1:1\n    rules:\n      - {priority: 1, conditions: {query: [{value: debug}]}, action: {forward: a}}\n      - {priority: 2, conditions: {query: [{key: trace, value: on}]}, action: {forward: a}}\n      - {priority: 3, conditions: {host: [\"*\"]}, action: {forward: a}}\n    default_action: {forward: a}\n",
        );
        let l = &s.listeners[0];
        let none = |_: &mut dyn FnMut(&str, &str) -> bool| false;
        let table = crate::router::table::RuleTable::build(&l.rules);
        let both = |host: &str, query: &str| {
            let v = view(host, "/", query, &none);
            let linear = l
                .rules
                .iter()
                .find(|r| matches(&r.conditions, &v))
                .map(|r| r.priority);
            let fast = table.first_match(&l.rules, &v).map(|i| l.rules[i].priority);
            assert_eq!(fast, linear, "table vs scan for {host:?} ?{query}");
            fast.unwrap_or(0)
        };
        assert_eq!(both("", "debug"), 1);
        assert_eq!(both("", "a=1&debug&b=2"), 1);
        assert_eq!(both("", "x=debug"), 1);
        assert_eq!(both("", "trace"), 0);
        assert_eq!(both("", "on"), 0);
        assert_eq!(both("", "trace=on"), 2);
        assert_eq!(both("h", "trace"), 3);
        assert_eq!(both("", "q=1"), 0);
    }
}
