//! `listeners`: protocol, bind, allow-list, certificates, timeouts, HTTP options,
//! and the check that no two binds (nor the admin API's) overlap.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;

use super::decode::{Fields, Sp, duration, fields, items, nonempty, strings, word};
use super::groups::GroupNames;
use super::node::Node;
use super::sections::{socket_addr, unique_name};
use super::{Ctx, rules, schema};
use crate::snapshot::*;

/// Names that listeners and actions refer to.
pub(super) struct Refs<'a> {
    pub groups: &'a GroupNames,
    pub certs: &'a HashMap<String, CertId>,
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn valid_listener_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// A CIDR such as `10.0.0.0/8` or `2001:db8::/32` (host bits must be zero).
pub(super) fn cidr(cx: &mut Ctx, s: &Sp<String>, path: &str) -> Option<IpNet> {
    match s.v.trim().parse::<IpNet>() {
        Ok(net) if net.trunc() == net => Some(net),
        Ok(net) => {
            cx.errs.push(
                s.pos,
                path,
                format!("{} has host bits set; did you mean {}?", s.v, net.trunc()),
            );
            None
        }
        Err(_) => {
            cx.errs.push(
                s.pos,
                path,
                format!(
                    "expected a CIDR such as 10.0.0.0/8 or 2001:db8::/32, got \"{}\"",
                    s.v
                ),
            );
            None
        }
    }
}

pub(super) fn decode_listeners(
    cx: &mut Ctx,
    n: Option<&Node>,
    refs: &Refs,
    admin_bind: Option<Sp<SocketAddr>>,
) -> Vec<Listener> {
    let mut out = Vec::new();
    let mut seen = HashMap::new();
    // Every bind with its position and what owns it, for the overlap check.
    let mut binds: Vec<(Sp<SocketAddr>, String, String)> = Vec::new();
    if let Some(a) = admin_bind {
        binds.push((a, "admin.bind".to_owned(), "the admin API".to_owned()));
    }
    let Some(n) = n else {
        return out;
    };
    for (path, item) in items(&mut cx.errs, n, "listeners") {
        let Some(f) = fields(&mut cx.errs, item, &path, &schema::LISTENER) else {
            continue;
        };
        let name = match f.get("name") {
            Some(n) => nonempty(&mut cx.errs, n, &f.at("name")).and_then(|s| {
                if valid_listener_name(&s.v) {
                    Some(s)
                } else {
                    cx.errs.push(s.pos, f.at("name"), format!("\"{}\" is not a valid listener name: 1 to 64 of A-Z a-z 0-9 '-' '_' '.'", s.v));
                    None
                }
            }),
            None => {
                cx.errs.push(f.pos, f.at("name"), "required: a unique listener name");
                None
            }
        };
        let unique = name
            .as_ref()
            .is_some_and(|nm| unique_name(cx, &mut seen, nm, &f.at("name"), "listener"));
        let bind = match f.get("bind") {
            Some(n) => socket_addr(cx, n, &f.at("bind")),
            None => {
                cx.errs.push(
                    f.pos,
                    f.at("bind"),
                    "required: \"IP:PORT\" or \"[IPv6]:PORT\" to listen on",
                );
                None
            }
        };
        // Checked with or without a valid name: every error in one run.
        if let Some(b) = &bind {
            let owner = match &name {
                Some(nm) => format!("listener {}", nm.v),
                None => path.clone(),
            };
            check_overlap(cx, &binds, b, &f.at("bind"), &owner);
            binds.push((b.clone(), f.at("bind"), owner));
        }
        cx.listener_port = bind.as_ref().map(|b| b.v.port());
        let listener = decode_listener(cx, &f, refs, ListenerId(out.len() as u32));
        if let (Some(mut l), Some(nm), Some(b), true) = (listener, name, bind, unique) {
            l.name = nm.v;
            l.bind = b.v;
            l.bind_at = (b.pos, f.at("bind"));
            out.push(l);
        }
    }
    out
}

fn overlaps(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.port() == b.port()
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn check_overlap(
    cx: &mut Ctx,
    earlier: &[(Sp<SocketAddr>, String, String)],
    b: &Sp<SocketAddr>,
    path: &str,
    b_owner: &str,
) {
    if let Some((other, other_path, owner)) = earlier.iter().find(|(o, _, _)| overlaps(&o.v, &b.v))
    {
        // The admin bind is checked first but may come later in the file: the
        // overlap is reported where it repeats (SPEC §1).
        let admin_later = owner == "the admin API"
            && other.pos != super::Pos::START
            && (other.pos.line, other.pos.col) > (b.pos.line, b.pos.col);
        if admin_later {
            cx.errs.push(
                other.pos,
                other_path,
                format!(
                    "{} overlaps {b_owner} (line {}) bound to {}: the same port on overlapping addresses",
                    other.v, b.pos.line, b.v
                ),
            );
            return;
        }
        let at = if other.pos == super::Pos::START && owner == "the admin API" {
            " (admin.bind's default)".to_owned()
        } else {
            format!(" (line {})", other.pos.line)
        };
        cx.errs.push(
            b.pos,
            path,
            format!(
                "{} overlaps {}{at} bound to {}: the same port on overlapping addresses",
                b.v, owner, other.v
            ),
        );
    }
}

fn decode_listener(cx: &mut Ctx, f: &Fields, refs: &Refs, id: ListenerId) -> Option<Listener> {
    let e = &mut cx.errs;
    let protocol = f
        .get("protocol")
        .and_then(|n| word(e, n, &f.at("protocol"), &["http", "https", "tcp", "tls"]))
        .map_or(ListenerProtocol::Http, |w| match w.v {
            "https" => ListenerProtocol::Https,
            "tcp" => ListenerProtocol::Tcp,
            "tls" => ListenerProtocol::Tls,
            _ => ListenerProtocol::Http,
        });
    let mut allow = Vec::new();
    if let Some(n) = f.get("allow") {
        let list = strings(e, n, &f.at("allow"));
        if list.is_empty() && matches!(n.value, super::node::Value::Seq(_)) {
            e.push(n.pos, f.at("allow"), "an empty allow list would refuse every client; list CIDRs, or leave allow out to admit all");
        }
        for (i, s) in list.iter().enumerate() {
            if let Some(net) = cidr(cx, s, &super::decode::index(&f.at("allow"), i)) {
                allow.push(net);
            }
        }
    } else {
        allow = vec![IpNet::V4(Default::default()), IpNet::V6(Default::default())];
    }
    let e = &mut cx.errs;
    let mut certificates = Vec::new();
    match f.get("certificates") {
        Some(n) if !protocol.terminates_tls() => {
            e.push(
                n.pos,
                f.at("certificates"),
                format!(
                    "only https and tls listeners use certificates; this listener's protocol is {}",
                    protocol.as_str()
                ),
            );
        }
        Some(n) => {
            let list = strings(e, n, &f.at("certificates"));
            // `null` or a list of bad items already has its error.
            let reported = !matches!(&n.value, super::node::Value::Seq(items) if items.is_empty())
                && list.is_empty();
            if list.is_empty() && !reported {
                e.push(
                    n.pos,
                    f.at("certificates"),
                    format!(
                        "{} listeners need at least one certificate",
                        protocol.as_str()
                    ),
                );
            }
            for (i, s) in list.iter().enumerate() {
                let p = super::decode::index(&f.at("certificates"), i);
                match refs.certs.get(&s.v) {
                    Some(id) if certificates.contains(id) && id.0 != u32::MAX => {
                        e.push(s.pos, p, format!("certificate \"{}\" listed twice", s.v))
                    }
                    Some(id) => certificates.push(*id),
                    None => {
                        let known: Vec<&str> = refs.certs.keys().map(String::as_str).collect();
                        e.push(
                            s.pos,
                            p,
                            format!(
                                "no certificate named \"{}\" in certificates (known: {})",
                                s.v,
                                if known.is_empty() {
                                    "none".to_owned()
                                } else {
                                    known.join(", ")
                                }
                            ),
                        );
                    }
                }
            }
            certificates.retain(|c| c.0 != u32::MAX);
        }
        None if protocol.terminates_tls() => {
            e.push(
                f.pos,
                f.at("certificates"),
                format!(
                    "{} listeners need at least one certificate: name one from certificates",
                    protocol.as_str()
                ),
            );
        }
        None => {}
    }
    let tls_policy = f
        .get("tls_policy")
        .and_then(|n| word(e, n, &f.at("tls_policy"), &["tls12", "tls13"]))
        .map_or(TlsPolicy::Tls12, |w| {
            if w.v == "tls13" {
                TlsPolicy::Tls13
            } else {
                TlsPolicy::Tls12
            }
        });
    let default_idle = if protocol.is_l7() {
        secs(60)
    } else {
        secs(350)
    };
    let idle_timeout = f
        .get("idle_timeout")
        .and_then(|n| duration(e, n, &f.at("idle_timeout"), secs(1), secs(4000)))
        .map_or(default_idle, |d| d.v);
    let client_keep_alive = f
        .get("client_keep_alive")
        .and_then(|n| duration(e, n, &f.at("client_keep_alive"), secs(60), secs(7 * 86_400)))
        .map_or(secs(3600), |d| d.v);
    let header_timeout = f
        .get("header_timeout")
        .and_then(|n| {
            let min = Duration::from_millis(100);
            duration(e, n, &f.at("header_timeout"), min, secs(3600))
        })
        .map_or(secs(10), |d| d.v);
    let xff = f
        .get("xff")
        .and_then(|n| word(e, n, &f.at("xff"), &["append", "preserve", "remove"]))
        .map_or(XffMode::Append, |w| match w.v {
            "preserve" => XffMode::Preserve,
            "remove" => XffMode::Remove,
            _ => XffMode::Append,
        });
    let desync_mitigation = f
        .get("desync_mitigation")
        .and_then(|n| {
            word(
                e,
                n,
                &f.at("desync_mitigation"),
                &["monitor", "defensive", "strictest"],
            )
        })
        .map_or(DesyncMode::Defensive, |w| match w.v {
            "monitor" => DesyncMode::Monitor,
            "strictest" => DesyncMode::Strictest,
            _ => DesyncMode::Defensive,
        });
    let rules = match f.get("rules") {
        Some(n) if !protocol.is_l7() => {
            if !matches!(&n.value, super::node::Value::Null)
                && !matches!(&n.value, super::node::Value::Seq(v) if v.is_empty())
            {
                e.push(n.pos, f.at("rules"), format!("{} listeners take no rules: they forward every connection with default_action.forward", protocol.as_str()));
            }
            Vec::new()
        }
        Some(n) => rules::decode_rules(cx, n, &f.at("rules"), protocol, refs.groups),
        None => Vec::new(),
    };
    let default_action = match f.get("default_action") {
        Some(n) => {
            rules::decode_default_action(cx, n, &f.at("default_action"), protocol, refs.groups)
        }
        None => {
            cx.errs.push(
                f.pos,
                f.at("default_action"),
                "required: the action when no rule matches (forward, redirect or fixed_response)",
            );
            None
        }
    };
    Some(Listener {
        id,
        name: String::new(),
        protocol,
        bind: SocketAddr::from(([0, 0, 0, 0], 0)),
        bind_at: Default::default(),
        allow,
        certificates,
        tls_policy,
        idle_timeout,
        client_keep_alive,
        header_timeout,
        xff,
        desync_mitigation,
        table: crate::router::table::RuleTable::build(&rules),
        rules,
        default_action: default_action?,
    })
}
