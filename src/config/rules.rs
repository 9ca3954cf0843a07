//! Listener rules: priorities, conditions (compiled into patterns and CIDRs),
//! ALB's size limits, and the three actions with their checks.

use std::collections::HashMap;
use std::time::Duration;

use super::decode::{Fields, Sp, fields, index, integer, items, string, strings};
use super::groups::GroupNames;
use super::listeners::cidr;
use super::node::{Node, Value};
use super::{Ctx, schema};
use crate::router::pattern::{Pattern, PatternOptions, wildcard_count};
use crate::snapshot::*;

const HOST_OPTS: PatternOptions = PatternOptions {
    case_insensitive: true,
    backslash_escapes: false,
};
const PATH_OPTS: PatternOptions = PatternOptions {
    case_insensitive: false,
    backslash_escapes: false,
};
const HEADER_OPTS: PatternOptions = PatternOptions {
    case_insensitive: true,
    backslash_escapes: false,
};
const QUERY_OPTS: PatternOptions = PatternOptions {
    case_insensitive: true,
    backslash_escapes: true,
};

/// ALB's limits, enforced while `limits.aws_compat` is true.
const MAX_WILDCARDS_PER_RULE: usize = 5;
const MAX_WILDCARDS_PER_VALUE: usize = 3;
const MAX_VALUES_PER_RULE: usize = 5;
const MAX_VALUE_LEN: usize = 128;

pub(super) fn decode_rules(
    cx: &mut Ctx,
    n: &Node,
    path: &str,
    protocol: ListenerProtocol,
    groups: &GroupNames,
) -> Vec<Rule> {
    let mut out = Vec::new();
    let mut priorities: HashMap<u32, u32> = HashMap::new();
    for (p, item) in items(&mut cx.errs, n, path) {
        let Some(f) = fields(&mut cx.errs, item, &p, &schema::RULE) else {
            continue;
        };
        let priority = match f.get("priority") {
            Some(n) => integer(&mut cx.errs, n, &f.at("priority"), 1, 50_000)
                .map(|v| Sp::new(v.v as u32, v.pos)),
            None => {
                cx.errs.push(
                    f.pos,
                    f.at("priority"),
                    "required: a priority from 1 to 50000, unique within the listener",
                );
                None
            }
        };
        let mut unique = true;
        if let Some(pr) = &priority {
            if let Some(line) = priorities.get(&pr.v) {
                cx.errs.push(pr.pos, f.at("priority"), format!("duplicate priority {} (also used at line {line}); priorities must be unique within a listener", pr.v));
                unique = false;
            } else {
                priorities.insert(pr.v, pr.pos.line);
            }
        }
        let conditions = match f.get("conditions") {
            Some(n) => decode_conditions(cx, n, &f.at("conditions")),
            None => {
                cx.errs.push(f.pos, f.at("conditions"), "required: at least one condition (a rule without conditions is the default_action)");
                None
            }
        };
        let action = match f.get("action") {
            Some(n) => decode_action(cx, n, &f.at("action"), protocol, groups),
            None => {
                cx.errs.push(
                    f.pos,
                    f.at("action"),
                    "required: one of forward, redirect or fixed_response",
                );
                None
            }
        };
        if let (Some(pr), Some(c), Some(a), true) = (priority, conditions, action, unique) {
            out.push(Rule {
                priority: pr.v,
                conditions: c,
                action: a,
            });
        }
    }
    out.sort_by_key(|r| r.priority);
    out
}

/// Per-rule tallies for ALB's limits.
#[derive(Default)]
struct Tally {
    values: usize,
    wildcards: usize,
}

/// One pattern value: non-empty, at most 128 characters, printable, at most three
/// wildcards; counted towards the rule's limits.
fn pattern(
    cx: &mut Ctx,
    s: &Sp<String>,
    path: &str,
    opts: PatternOptions,
    visible_only: bool,
    tally: &mut Tally,
) -> Option<Pattern> {
    let v = &s.v;
    if v.is_empty() {
        cx.errs
            .push(s.pos, path, "condition values must not be empty");
        return None;
    }
    if v.chars().count() > MAX_VALUE_LEN {
        cx.errs.push(
            s.pos,
            path,
            format!(
                "condition values are at most {MAX_VALUE_LEN} characters, this one has {}",
                v.chars().count()
            ),
        );
        return None;
    }
    if visible_only && v.chars().any(|c| !c.is_ascii_graphic()) {
        cx.errs.push(s.pos, path, format!("\"{v}\" has a character that is not visible ASCII (spaces and control characters never match)"));
        return None;
    }
    if v.chars().any(|c| c.is_control()) {
        cx.errs.push(
            s.pos,
            path,
            format!("\"{}\" has a control character", v.escape_debug()),
        );
        return None;
    }
    let w = wildcard_count(v, opts);
    tally.wildcards += w;
    if cx.aws_compat && w > MAX_WILDCARDS_PER_VALUE {
        cx.errs.push(
            s.pos,
            path,
            format!("\"{v}\" has {w} wildcard characters; at most {MAX_WILDCARDS_PER_VALUE} per condition value (ALB's limit; set limits.aws_compat: false to lift it)"),
        );
    }
    Some(Pattern::compile(v, opts))
}

/// A condition's list of values; `[]` is an error.
fn values(cx: &mut Ctx, n: &Node, path: &str) -> Vec<Sp<String>> {
    let list = strings(&mut cx.errs, n, path);
    // `null` or a list whose items are all bad already have their error.
    if matches!(&n.value, Value::Seq(items) if items.is_empty()) {
        cx.errs.push(n.pos, path, "must list at least one value");
    }
    list
}

fn valid_method(m: &str) -> bool {
    (1..=40).contains(&m.len())
        && m.bytes()
            .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
}

fn valid_header_name(h: &str) -> bool {
    (1..=40).contains(&h.len())
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn decode_conditions(cx: &mut Ctx, n: &Node, path: &str) -> Option<Conditions> {
    let f = fields(&mut cx.errs, n, path, &schema::CONDITIONS)?;
    let mut c = Conditions::default();
    let mut tally = Tally::default();
    let mut any = false;
    if let Some(n) = f.get("host") {
        any = true;
        for (i, s) in values(cx, n, &f.at("host")).iter().enumerate() {
            tally.values += 1;
            let lower = Sp::new(s.v.to_ascii_lowercase(), s.pos);
            if let Some(p) = pattern(
                cx,
                &lower,
                &index(&f.at("host"), i),
                HOST_OPTS,
                true,
                &mut tally,
            ) {
                c.host.push(p);
            }
        }
    }
    if let Some(n) = f.get("path") {
        any = true;
        for (i, s) in values(cx, n, &f.at("path")).iter().enumerate() {
            tally.values += 1;
            let p = index(&f.at("path"), i);
            if !s.v.starts_with('/') && !s.v.starts_with('*') && !s.v.is_empty() {
                cx.errs.push(s.pos, &p, format!("path patterns match the request path and start with '/' (or a wildcard), got \"{}\"", s.v));
                continue;
            }
            if let Some(pat) = pattern(cx, s, &p, PATH_OPTS, true, &mut tally) {
                c.path.push(pat);
            }
        }
    }
    if let Some(n) = f.get("method") {
        any = true;
        for (i, s) in values(cx, n, &f.at("method")).iter().enumerate() {
            tally.values += 1;
            if valid_method(&s.v) {
                c.method.push(s.v.clone());
            } else {
                cx.errs.push(s.pos, index(&f.at("method"), i), format!("expected an HTTP method in capitals such as GET (A-Z, '-', '_', at most 40; matched exactly), got \"{}\"", s.v));
            }
        }
    }
    if let Some(n) = f.get("headers") {
        any = true;
        let hp = f.at("headers");
        match &n.value {
            Value::Map(entries) if !entries.is_empty() => {
                let mut seen: Vec<String> = Vec::new();
                for (k, v) in entries {
                    let kp = format!("{hp}.{}", k.name);
                    let name = k.name.to_ascii_lowercase();
                    if !valid_header_name(&k.name) {
                        cx.errs.push(k.pos, &kp, format!("\"{}\" is not a valid header name (a token of at most 40 characters)", k.name));
                        continue;
                    }
                    if name == "host" {
                        cx.errs.push(
                            k.pos,
                            &kp,
                            "use the host condition to match the Host header",
                        );
                        continue;
                    }
                    if seen.contains(&name) {
                        cx.errs.push(
                            k.pos,
                            &kp,
                            format!(
                                "header {} is listed twice (names are case-insensitive)",
                                k.name
                            ),
                        );
                        continue;
                    }
                    seen.push(name.clone());
                    let mut pats = Vec::new();
                    for (i, s) in values(cx, v, &kp).iter().enumerate() {
                        tally.values += 1;
                        if let Some(p) =
                            pattern(cx, s, &index(&kp, i), HEADER_OPTS, false, &mut tally)
                        {
                            pats.push(p);
                        }
                    }
                    c.headers.push((name, pats));
                }
            }
            Value::Map(_) | Value::Null => cx.errs.push(
                n.pos,
                &hp,
                "must name at least one header with its values, such as { x-env: [\"beta*\"] }",
            ),
            other => cx.errs.push(
                n.pos,
                &hp,
                format!(
                    "expected a mapping of header names to values, got {}",
                    other.kind()
                ),
            ),
        }
    }
    if let Some(n) = f.get("query") {
        any = true;
        let qp = f.at("query");
        let list = items(&mut cx.errs, n, &qp);
        if list.is_empty() {
            cx.errs
                .push(n.pos, &qp, "must list at least one { key, value } pair");
        }
        for (p, item) in list {
            let Some(qf) = fields(&mut cx.errs, item, &p, &schema::QUERY) else {
                continue;
            };
            tally.values += 1;
            let key = qf
                .get("key")
                .and_then(|n| string(&mut cx.errs, n, &qf.at("key")));
            // A bad key does not keep the value from being checked: every error in
            // one run; the condition is dropped below.
            let (key, key_ok) = match key {
                Some(k) => match pattern(cx, &k, &qf.at("key"), QUERY_OPTS, false, &mut tally) {
                    Some(p) => (Some(p), true),
                    None => (None, false),
                },
                None => (None, true),
            };
            let value = match qf.get("value") {
                Some(n) => string(&mut cx.errs, n, &qf.at("value")),
                None => {
                    cx.errs.push(
                        qf.pos,
                        qf.at("value"),
                        "required: the value to match (key is optional)",
                    );
                    None
                }
            };
            if let Some(v) =
                value.and_then(|v| pattern(cx, &v, &qf.at("value"), QUERY_OPTS, false, &mut tally))
            {
                if key_ok {
                    c.query.push(QueryCondition { key, value: v });
                }
            }
        }
    }
    if let Some(n) = f.get("source_ip") {
        any = true;
        for (i, s) in values(cx, n, &f.at("source_ip")).iter().enumerate() {
            tally.values += 1;
            if let Some(net) = cidr(cx, s, &index(&f.at("source_ip"), i)) {
                c.source_ip.push(net);
            }
        }
    }
    if !any {
        cx.errs.push(f.pos, path, "a rule needs at least one condition (host, path, method, headers, query or source_ip); without conditions use default_action");
        return None;
    }
    if cx.aws_compat {
        if tally.values > MAX_VALUES_PER_RULE {
            cx.errs.push(f.pos, path, format!("this rule has {} condition values; at most {MAX_VALUES_PER_RULE} per rule (ALB's limit; set limits.aws_compat: false to lift it)", tally.values));
        }
        if tally.wildcards > MAX_WILDCARDS_PER_RULE {
            cx.errs.push(f.pos, path, format!("this rule has {} wildcard characters; at most {MAX_WILDCARDS_PER_RULE} per rule (ALB's limit; set limits.aws_compat: false to lift it)", tally.wildcards));
        }
    }
    Some(c)
}

/// `default_action`: like a rule's action; tcp/tls listeners may only forward.
pub(super) fn decode_default_action(
    cx: &mut Ctx,
    n: &Node,
    path: &str,
    protocol: ListenerProtocol,
    groups: &GroupNames,
) -> Option<Action> {
    decode_action(cx, n, path, protocol, groups)
}

fn decode_action(
    cx: &mut Ctx,
    n: &Node,
    path: &str,
    protocol: ListenerProtocol,
    groups: &GroupNames,
) -> Option<Action> {
    let f = fields(&mut cx.errs, n, path, &schema::ACTION)?;
    let present: Vec<&str> = ["forward", "redirect", "fixed_response"]
        .into_iter()
        .filter(|k| f.has(k))
        .collect();
    match present.as_slice() {
        [] => {
            cx.errs.push(
                f.pos,
                path,
                "expected exactly one of forward, redirect or fixed_response",
            );
            None
        }
        [one] => {
            let node = f.get(one)?;
            let p = f.at(one);
            if !protocol.is_l7() && *one != "forward" {
                cx.errs.push(
                    node.pos,
                    &p,
                    format!(
                        "{} listeners can only forward to a tcp or tls target group",
                        protocol.as_str()
                    ),
                );
                return None;
            }
            match *one {
                "forward" => decode_forward(cx, node, &p, protocol, groups).map(Action::Forward),
                "redirect" => decode_redirect(cx, node, &p, protocol).map(Action::Redirect),
                _ => decode_fixed(cx, node, &p).map(Action::FixedResponse),
            }
        }
        [_, second, ..] => {
            cx.errs.push(f.pos_of(second), f.at(second), format!("an action is exactly one of forward, redirect or fixed_response; this one has {}", present.join(" and ")));
            None
        }
    }
}

/// Resolves a target group name and checks that this listener can use it.
fn group_ref(
    cx: &mut Ctx,
    s: &Sp<String>,
    path: &str,
    protocol: ListenerProtocol,
    groups: &GroupNames,
) -> Option<GroupId> {
    let Some((id, gp)) = groups.get(&s.v) else {
        let mut known: Vec<&str> = groups.keys().map(String::as_str).collect();
        known.sort_unstable();
        cx.errs.push(
            s.pos,
            path,
            format!(
                "no target group named \"{}\" (known: {})",
                s.v,
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        );
        return None;
    };
    let fits = if protocol.is_l7() {
        gp.is_l7()
    } else {
        !gp.is_l7()
    };
    if !fits {
        let want = if protocol.is_l7() {
            "http or https"
        } else {
            "tcp or tls"
        };
        cx.errs.push(s.pos, path, format!("target group \"{}\" has protocol {}; a {} listener forwards only to {want} target groups", s.v, gp.as_str(), protocol.as_str()));
        return None;
    }
    Some(*id)
}

fn decode_forward(
    cx: &mut Ctx,
    n: &Node,
    path: &str,
    protocol: ListenerProtocol,
    groups: &GroupNames,
) -> Option<Forward> {
    // A group name, also one YAML reads as a number (`forward: 123`).
    if let Value::Str(_) | Value::Int(_) = &n.value {
        let s = string(&mut cx.errs, n, path)?;
        let id = group_ref(cx, &s, path, protocol, groups)?;
        return Some(Forward {
            groups: vec![(id, 1)],
            stickiness: None,
        });
    }
    let f: Fields = fields(&mut cx.errs, n, path, &schema::FORWARD)?;
    let Some(list_node) = f.get("target_groups") else {
        cx.errs.push(
            f.pos,
            f.at("target_groups"),
            "required: a target group name, or target_groups: [{ name, weight }, ...]",
        );
        return None;
    };
    let tp = f.at("target_groups");
    let list = items(&mut cx.errs, list_node, &tp);
    let mut out = Vec::new();
    let mut ok = true;
    let mut names: Vec<String> = Vec::new();
    if list.is_empty() || list.len() > 5 {
        cx.errs.push(
            list_node.pos,
            &tp,
            format!(
                "a forward names 1 to 5 target groups, this one {}",
                list.len()
            ),
        );
        ok = false;
    }
    for (p, item) in &list {
        let Some(g) = fields(&mut cx.errs, item, p, &schema::WEIGHTED_GROUP) else {
            ok = false;
            continue;
        };
        let name = match g.get("name") {
            Some(n) => string(&mut cx.errs, n, &g.at("name")),
            None => {
                cx.errs
                    .push(g.pos, g.at("name"), "required: the target group's name");
                None
            }
        };
        let weight = match g.get("weight") {
            Some(n) => integer(&mut cx.errs, n, &g.at("weight"), 0, 999).map(|w| w.v as u32),
            None => Some(1),
        };
        let Some(name) = name else {
            ok = false;
            continue;
        };
        if names.contains(&name.v) {
            cx.errs.push(
                name.pos,
                g.at("name"),
                format!("target group \"{}\" appears twice in this forward", name.v),
            );
            ok = false;
            continue;
        }
        names.push(name.v.clone());
        match (
            group_ref(cx, &name, &g.at("name"), protocol, groups),
            weight,
        ) {
            (Some(id), Some(w)) => out.push((id, w)),
            _ => ok = false,
        }
    }
    if ok && !out.is_empty() && out.iter().all(|(_, w)| *w == 0) {
        cx.errs.push(
            list_node.pos,
            &tp,
            "at least one target group needs a weight above 0",
        );
        ok = false;
    }
    if !protocol.is_l7() && out.len() > 1 {
        cx.errs.push(
            list_node.pos,
            &tp,
            format!(
                "{} listeners forward to exactly one target group",
                protocol.as_str()
            ),
        );
        ok = false;
    }
    let stickiness = match f.get("stickiness") {
        Some(n) => {
            if !protocol.is_l7() {
                cx.errs.push(
                    n.pos,
                    f.at("stickiness"),
                    "group stickiness is for http and https listeners",
                );
                None
            } else {
                super::decode::duration(
                    &mut cx.errs,
                    n,
                    &f.at("stickiness"),
                    Duration::from_secs(1),
                    Duration::from_secs(7 * 86_400),
                )
                .map(|d| d.v)
            }
        }
        None => None,
    };
    ok.then_some(Forward {
        groups: out,
        stickiness,
    })
}

const PLACEHOLDERS: [&str; 5] = ["#{protocol}", "#{host}", "#{port}", "#{path}", "#{query}"];

/// Checks that `text` uses only the placeholders `allowed` (ALB's placement rules).
fn placeholders(cx: &mut Ctx, s: &Sp<String>, path: &str, allowed: &[&str]) -> bool {
    let mut rest = s.v.as_str();
    while let Some(i) = rest.find("#{") {
        let tail = &rest[i..];
        let Some(end) = tail.find('}') else {
            cx.errs
                .push(s.pos, path, format!("unclosed placeholder in \"{}\"", s.v));
            return false;
        };
        let ph = &tail[..=end];
        if !PLACEHOLDERS.contains(&ph) {
            cx.errs.push(
                s.pos,
                path,
                format!(
                    "unknown placeholder {ph}; known: {}",
                    PLACEHOLDERS.join(", ")
                ),
            );
            return false;
        }
        if !allowed.contains(&ph) {
            cx.errs.push(
                s.pos,
                path,
                format!("{ph} cannot be used here; allowed: {}", allowed.join(", ")),
            );
            return false;
        }
        rest = &tail[end + 1..];
    }
    true
}

fn decode_redirect(
    cx: &mut Ctx,
    n: &Node,
    path: &str,
    listener: ListenerProtocol,
) -> Option<Redirect> {
    let f = fields(&mut cx.errs, n, path, &schema::REDIRECT)?;
    let mut ok = true;
    let mut r = Redirect {
        protocol: RedirectProtocol::Keep,
        host: "#{host}".to_owned(),
        port: "#{port}".to_owned(),
        port_given: false,
        path: "/#{path}".to_owned(),
        query: "#{query}".to_owned(),
        status: 301,
    };
    let text = |cx: &mut Ctx, key: &str| -> Option<Sp<String>> {
        f.get(key).and_then(|n| string(&mut cx.errs, n, &f.at(key)))
    };
    if let Some(s) = text(cx, "protocol") {
        match s.v.as_str() {
            "#{protocol}" => r.protocol = RedirectProtocol::Keep,
            p if p.eq_ignore_ascii_case("http") => r.protocol = RedirectProtocol::Http,
            p if p.eq_ignore_ascii_case("https") => r.protocol = RedirectProtocol::Https,
            other => {
                cx.errs.push(
                    s.pos,
                    f.at("protocol"),
                    format!("expected HTTP, HTTPS or #{{protocol}}, got \"{other}\""),
                );
                ok = false;
            }
        }
        if r.protocol == RedirectProtocol::Http && listener == ListenerProtocol::Https {
            cx.errs.push(
                s.pos,
                f.at("protocol"),
                "a redirect may not go from HTTPS to HTTP",
            );
            ok = false;
        }
    }
    if let Some(s) = text(cx, "host") {
        if s.v.is_empty() || s.v.len() > 128 || s.v.chars().any(|c| !c.is_ascii_graphic()) {
            cx.errs.push(s.pos, f.at("host"), format!("expected a host name of 1 to 128 visible characters (may use #{{host}}), got \"{}\"", s.v));
            ok = false;
        } else if placeholders(cx, &s, &f.at("host"), &["#{host}"]) {
            r.host = s.v;
        } else {
            ok = false;
        }
    }
    if let Some(n) = f.get("port") {
        r.port_given = true;
        match &n.value {
            Value::Str(s) if s == "#{port}" => {}
            _ => match integer(&mut cx.errs, n, &f.at("port"), 1, 65535) {
                Some(p) => r.port = p.v.to_string(),
                None => ok = false,
            },
        }
    }
    if let Some(s) = text(cx, "path") {
        if !s.v.starts_with('/') || s.v.len() > 128 || s.v.chars().any(|c| !c.is_ascii_graphic()) {
            cx.errs.push(s.pos, f.at("path"), format!("expected an absolute path of 1 to 128 visible characters starting with '/' (may use #{{path}}, #{{host}}, #{{port}}), got \"{}\"", s.v));
            ok = false;
        } else if placeholders(cx, &s, &f.at("path"), &["#{host}", "#{path}", "#{port}"]) {
            r.path = s.v;
        } else {
            ok = false;
        }
    }
    if let Some(s) = text(cx, "query") {
        if s.v.starts_with('?')
            || s.v.len() > 128
            || s.v.chars().any(|c| c.is_control() || c == ' ')
        {
            cx.errs.push(s.pos, f.at("query"), format!("expected a query of at most 128 characters without the leading '?', got \"{}\"", s.v));
            ok = false;
        } else if placeholders(cx, &s, &f.at("query"), &PLACEHOLDERS) {
            r.query = s.v;
        } else {
            ok = false;
        }
    }
    if let Some(n) = f.get("status") {
        match integer(&mut cx.errs, n, &f.at("status"), 301, 302) {
            Some(s) => r.status = s.v as u16,
            None => ok = false,
        }
    }
    if !ok {
        return None;
    }
    // A part "changes" only when it differs from what the request has: naming
    // the listener's own protocol or port changes nothing.
    let own_protocol = if listener == ListenerProtocol::Https {
        RedirectProtocol::Https
    } else {
        RedirectProtocol::Http
    };
    let own_port = cx.listener_port.map(|p| p.to_string());
    let changes = (r.protocol != RedirectProtocol::Keep && r.protocol != own_protocol)
        || r.host != "#{host}"
        || (r.port != "#{port}" && Some(&r.port) != own_port.as_ref())
        || r.path != "/#{path}";
    if !changes {
        cx.errs.push(
            f.pos,
            path,
            "a redirect must change at least one of protocol, host, port or path, or it would loop",
        );
        return None;
    }
    Some(r)
}

fn decode_fixed(cx: &mut Ctx, n: &Node, path: &str) -> Option<FixedResponse> {
    let f = fields(&mut cx.errs, n, path, &schema::FIXED_RESPONSE)?;
    let status = match f.get("status") {
        Some(n) => match integer(&mut cx.errs, n, &f.at("status"), 200, 599) {
            Some(s) if matches!(s.v / 100, 2 | 4 | 5) => Some(s.v as u16),
            Some(s) => {
                cx.errs.push(
                    s.pos,
                    f.at("status"),
                    format!("a fixed response status is 2xx, 4xx or 5xx, got {}", s.v),
                );
                None
            }
            None => None,
        },
        None => {
            cx.errs.push(
                f.pos,
                f.at("status"),
                "required: a 2xx, 4xx or 5xx status code",
            );
            None
        }
    };
    let mut content_type = "text/plain".to_owned();
    if let Some(s) = f
        .get("content_type")
        .and_then(|n| string(&mut cx.errs, n, &f.at("content_type")))
    {
        if s.v.is_empty()
            || s.v.len() > 128
            || s.v.chars().any(|c| c.is_control())
            || !s.v.contains('/')
        {
            cx.errs.push(
                s.pos,
                f.at("content_type"),
                format!(
                    "expected a media type such as text/plain or application/json, got \"{}\"",
                    s.v
                ),
            );
        } else {
            content_type = s.v;
        }
    }
    let mut body = String::new();
    if let Some(s) = f
        .get("body")
        .and_then(|n| string(&mut cx.errs, n, &f.at("body")))
    {
        if s.v.len() > 1024 {
            cx.errs.push(
                s.pos,
                f.at("body"),
                format!(
                    "a fixed response body is at most 1024 bytes, this one has {}",
                    s.v.len()
                ),
            );
        } else {
            body = s.v;
        }
    }
    Some(FixedResponse {
        status: status?,
        content_type,
        body,
    })
}
