//! `target_groups`: protocol, algorithm, draining, stickiness, health checks and
//! targets (addresses resolved at load).

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use super::decode::{
    Fields, Sp, boolean, duration, fields, integer, items, nonempty, string, word,
};
use super::node::{Node, Value};
use super::sections::unique_name;
use super::{Ctx, schema};
use crate::snapshot::*;

/// Group name -> id and protocol, for resolving actions.
pub(crate) type GroupNames = HashMap<String, (GroupId, GroupProtocol)>;

const SEC: Duration = Duration::from_secs(1);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A PEM CA bundle that must load (at least one certificate).
pub(super) fn ca_file(cx: &mut Ctx, n: &Node, path: &str) -> Option<PathBuf> {
    let s = string(&mut cx.errs, n, path)?;
    if s.v.trim().is_empty() {
        return None; // "" means: no private CA
    }
    let p = cx.path(s.v.trim());
    use rustls_pki_types::pem::PemObject;
    let pem = crate::util::read_capped(&p, crate::util::MAX_PEM_BYTES);
    let count = match pem {
        Ok(pem) => {
            let it = rustls_pki_types::CertificateDer::pem_slice_iter(&pem);
            let mut count = 0usize;
            for c in it {
                match c {
                    Ok(_) => count += 1,
                    Err(e) => {
                        cx.errs.push(
                            n.pos,
                            path,
                            format!("{} is not a valid PEM CA bundle: {e}", p.display()),
                        );
                        return None;
                    }
                }
            }
            count
        }
        Err(e) => {
            cx.errs
                .push(n.pos, path, format!("cannot read {}: {e}", p.display()));
            return None;
        }
    };
    if count == 0 {
        cx.errs.push(
            n.pos,
            path,
            format!("{} holds no PEM CERTIFICATE block", p.display()),
        );
        return None;
    }
    Some(p)
}

/// SPEC §2: 1..32 of `[A-Za-z0-9-]` (AWS also refuses a leading or trailing `-`;
/// the spec does not, and it is the contract).
fn valid_group_name(s: &str) -> bool {
    (1..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

pub(super) fn decode_groups(cx: &mut Ctx, n: Option<&Node>) -> (Vec<TargetGroup>, GroupNames) {
    let mut out = Vec::new();
    let mut names = GroupNames::new();
    let mut seen = HashMap::new();
    let Some(n) = n else {
        return (out, names);
    };
    for (path, item) in items(&mut cx.errs, n, "target_groups") {
        let Some(f) = fields(&mut cx.errs, item, &path, &schema::TARGET_GROUP) else {
            continue;
        };
        let name = match f.get("name") {
            Some(n) => nonempty(&mut cx.errs, n, &f.at("name")).and_then(|s| {
                if valid_group_name(&s.v) {
                    Some(s)
                } else {
                    cx.errs.push(
                        s.pos,
                        f.at("name"),
                        format!("\"{}\" is not a valid target group name: 1 to 32 of A-Z a-z 0-9 and '-'", s.v),
                    );
                    None
                }
            }),
            None => {
                cx.errs.push(f.pos, f.at("name"), "required: a name for actions to refer to");
                None
            }
        };
        let unique = name
            .as_ref()
            .is_some_and(|nm| unique_name(cx, &mut seen, nm, &f.at("name"), "target group"));
        let group = decode_group(
            cx,
            &f,
            GroupId(out.len() as u32),
            name.as_ref().map(|s| s.v.clone()).unwrap_or_default(),
        );
        if let (Some(name), true) = (name, unique) {
            names.insert(name.v, (group.id, group.protocol));
            out.push(group);
        }
    }
    (out, names)
}

fn decode_group(cx: &mut Ctx, f: &Fields, id: GroupId, name: String) -> TargetGroup {
    let e = &mut cx.errs;
    let protocol = f
        .get("protocol")
        .and_then(|n| word(e, n, &f.at("protocol"), &["http", "https", "tcp", "tls"]))
        .map_or(GroupProtocol::Http, |w| match w.v {
            "https" => GroupProtocol::Https,
            "tcp" => GroupProtocol::Tcp,
            "tls" => GroupProtocol::Tls,
            _ => GroupProtocol::Http,
        });
    let algorithm_sp = f.get("algorithm").and_then(|n| {
        word(
            e,
            n,
            &f.at("algorithm"),
            &[
                "round_robin",
                "least_outstanding_requests",
                "weighted_random",
                "source_hash",
            ],
        )
    });
    let algorithm = algorithm_sp
        .as_ref()
        .map_or(Algorithm::RoundRobin, |w| match w.v {
            "least_outstanding_requests" => Algorithm::LeastOutstandingRequests,
            "weighted_random" => Algorithm::WeightedRandom,
            "source_hash" => Algorithm::SourceHash,
            _ => Algorithm::RoundRobin,
        });
    if let Some(a) = &algorithm_sp {
        if algorithm == Algorithm::SourceHash && protocol.is_l7() {
            e.push(
                a.pos,
                f.at("algorithm"),
                format!(
                    "source_hash is for tcp and tls target groups; this group's protocol is {}",
                    protocol.as_str()
                ),
            );
        }
    }
    let slow_start = f
        .get("slow_start")
        .and_then(|n| duration(e, n, &f.at("slow_start"), Duration::ZERO, secs(900)))
        .map_or(Duration::ZERO, |d| {
            if !d.v.is_zero() && d.v < secs(30) {
                e.push(
                    d.pos,
                    f.at("slow_start"),
                    "must be 0s (off) or from 30s to 900s",
                );
            }
            d.v
        });
    if !slow_start.is_zero() && algorithm == Algorithm::LeastOutstandingRequests {
        e.push(
            f.pos_of("slow_start"),
            f.at("slow_start"),
            "slow_start cannot be combined with algorithm least_outstanding_requests (as in AWS): set slow_start: 0s or choose another algorithm",
        );
    }
    let deregistration_delay = f
        .get("deregistration_delay")
        .and_then(|n| {
            duration(
                e,
                n,
                &f.at("deregistration_delay"),
                Duration::ZERO,
                secs(3600),
            )
        })
        .map_or(secs(300), |d| d.v);
    let cross_zone = f
        .get("cross_zone")
        .and_then(|n| boolean(e, n, &f.at("cross_zone")))
        .is_none_or(|b| b.v);
    let fail_open = f
        .get("fail_open")
        .and_then(|n| boolean(e, n, &f.at("fail_open")))
        .is_none_or(|b| b.v);
    let keep_alive_timeout = f
        .get("keep_alive_timeout")
        .and_then(|n| {
            let min = Duration::from_millis(100);
            duration(e, n, &f.at("keep_alive_timeout"), min, secs(3600))
        })
        .map_or(secs(50), |d| d.v);
    let stickiness = f
        .get("stickiness")
        .and_then(|n| decode_stickiness(cx, n, &f.at("stickiness"), protocol));
    let e = &mut cx.errs;
    let proxy_protocol_v2 = match f
        .get("proxy_protocol_v2")
        .and_then(|n| boolean(e, n, &f.at("proxy_protocol_v2")))
    {
        Some(b) if b.v && protocol.is_l7() => {
            e.push(b.pos, f.at("proxy_protocol_v2"), format!("PROXY protocol v2 is for tcp and tls target groups; this group's protocol is {}", protocol.as_str()));
            false
        }
        Some(b) => b.v,
        None => false,
    };
    let verify_tls = f
        .get("verify_tls")
        .and_then(|n| boolean(e, n, &f.at("verify_tls")))
        .is_some_and(|b| b.v);
    let ca_file = f
        .get("ca_file")
        .and_then(|n| ca_file(cx, n, &f.at("ca_file")));
    let health_check = decode_health_check(
        cx,
        f.get("health_check"),
        &f.at("health_check"),
        protocol,
        f.pos,
    );
    let targets = match f.get("targets") {
        Some(n) => decode_targets(cx, n, &f.at("targets")),
        None => Vec::new(),
    };
    TargetGroup {
        id,
        name,
        protocol,
        algorithm,
        slow_start,
        deregistration_delay,
        cross_zone,
        fail_open,
        keep_alive_timeout,
        stickiness,
        proxy_protocol_v2,
        verify_tls,
        ca_file,
        health_check,
        targets,
    }
}

/// A cookie name: an RFC 6265 token.
pub(super) fn valid_cookie_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

fn decode_stickiness(
    cx: &mut Ctx,
    n: &Node,
    path: &str,
    protocol: GroupProtocol,
) -> Option<Stickiness> {
    let f = fields(&mut cx.errs, n, path, &schema::STICKINESS)?;
    let l4 = !protocol.is_l7();
    if l4 {
        cx.errs.push(
            n.pos,
            path,
            format!(
                "stickiness is for http and https target groups; this group's protocol is {}",
                protocol.as_str()
            ),
        );
        // The keys inside are still checked: every error in one run.
    }
    let e = &mut cx.errs;
    let kind = match f.get("type") {
        Some(n) => word(e, n, &f.at("type"), &["lb_cookie", "app_cookie"]),
        None => {
            e.push(f.pos, f.at("type"), "required: lb_cookie or app_cookie");
            None
        }
    };
    // Checked whatever the type says: every error in one run.
    let duration = f
        .get("duration")
        .and_then(|n| duration(e, n, &f.at("duration"), SEC, secs(7 * 86_400)))
        .map_or(secs(86_400), |d| d.v);
    let cookie = f
        .get("cookie_name")
        .and_then(|n| nonempty(e, n, &f.at("cookie_name")));
    let kind = kind?;
    let sticky = match kind.v {
        "app_cookie" => {
            let Some(c) = cookie else {
                if !f.has("cookie_name") {
                    e.push(
                        f.pos,
                        f.at("cookie_name"),
                        "required with type app_cookie: the application's cookie to follow",
                    );
                }
                return None;
            };
            if !valid_cookie_name(&c.v) {
                e.push(
                    c.pos,
                    f.at("cookie_name"),
                    format!("\"{}\" is not a valid cookie name", c.v),
                );
                return None;
            }
            if c.v.starts_with("FULCRUMLB") {
                e.push(
                    c.pos,
                    f.at("cookie_name"),
                    "names starting with FULCRUMLB are reserved for the balancer's own cookies",
                );
                return None;
            }
            Some(Stickiness::AppCookie {
                duration,
                cookie_name: c.v,
            })
        }
        _ => {
            if let Some(c) = cookie {
                e.push(c.pos, f.at("cookie_name"), "cookie_name applies only to type app_cookie (lb_cookie uses the balancer's FULCRUMLB cookie)");
            }
            Some(Stickiness::LbCookie { duration })
        }
    };
    // On a tcp/tls group (already an error) the checked keys are not used.
    sticky.filter(|_| !l4)
}

/// `"200"`, `"200,202"`, `"200-299"` (and combinations) -> inclusive ranges.
pub(crate) fn parse_matcher(s: &str) -> Result<Vec<(u16, u16)>, String> {
    let bad = || {
        format!(
            "expected HTTP codes such as \"200\", \"200,202\" or \"200-299\" (100 to 599), got \"{s}\""
        )
    };
    let code = |t: &str| -> Result<u16, String> {
        let t = t.trim();
        match t.parse::<u16>() {
            Ok(c) if (100..=599).contains(&c) && t.len() == 3 => Ok(c),
            _ => Err(bad()),
        }
    };
    let mut out = Vec::new();
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (code(a)?, code(b)?);
                if a > b {
                    return Err(bad());
                }
                out.push((a, b));
            }
            None => {
                let c = code(part)?;
                out.push((c, c));
            }
        }
    }
    Ok(out)
}

fn decode_health_check(
    cx: &mut Ctx,
    n: Option<&Node>,
    path: &str,
    group: GroupProtocol,
    group_pos: super::Pos,
) -> HealthCheck {
    let mut hc = HealthCheck {
        protocol: match group {
            GroupProtocol::Http => HealthProtocol::Http,
            GroupProtocol::Https => HealthProtocol::Https,
            GroupProtocol::Tcp | GroupProtocol::Tls => HealthProtocol::Tcp,
        },
        port: None,
        path: "/".to_owned(),
        host: None,
        interval: secs(30),
        timeout: secs(5),
        healthy_threshold: 5,
        unhealthy_threshold: 2,
        matcher: vec![(200, 200)],
    };
    let _ = group_pos;
    let Some(f) = n.and_then(|n| fields(&mut cx.errs, n, path, &schema::HEALTH_CHECK)) else {
        return hc;
    };
    let e = &mut cx.errs;
    if let Some(w) = f
        .get("protocol")
        .and_then(|n| word(e, n, &f.at("protocol"), &["http", "https", "tcp", "tls"]))
    {
        hc.protocol = match w.v {
            "https" => HealthProtocol::Https,
            "tcp" => HealthProtocol::Tcp,
            "tls" => HealthProtocol::Tls,
            _ => HealthProtocol::Http,
        };
    }
    if let Some(n) = f.get("port") {
        if !matches!(&n.value, Value::Str(s) if s == "traffic-port") {
            match &n.value {
                Value::Int(_) => {
                    hc.port = integer(e, n, &f.at("port"), 1, 65535).map(|p| p.v as u16)
                }
                Value::Str(s) if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() => {
                    hc.port = integer(e, n, &f.at("port"), 1, 65535).map(|p| p.v as u16)
                }
                other => e.push(
                    n.pos,
                    f.at("port"),
                    format!(
                        "expected traffic-port or a port number from 1 to 65535, got {}",
                        describe(other)
                    ),
                ),
            }
        }
    }
    if let Some(s) = f.get("path").and_then(|n| nonempty(e, n, &f.at("path"))) {
        if !s.v.starts_with('/') || s.v.len() > 1024 || s.v.bytes().any(|b| !b.is_ascii_graphic()) {
            e.push(s.pos, f.at("path"), format!("expected an absolute path such as /health (visible ASCII, at most 1024 characters), got \"{}\"", s.v));
        } else {
            hc.path = s.v;
        }
    }
    if let Some(s) = f.get("host").and_then(|n| string(e, n, &f.at("host"))) {
        let h = s.v.trim();
        if h.bytes().any(|b| !b.is_ascii_graphic()) || h.len() > 255 {
            e.push(
                s.pos,
                f.at("host"),
                format!("expected a host name for the Host header, got \"{}\"", s.v),
            );
        } else if !h.is_empty() {
            hc.host = Some(h.to_owned());
        }
    }
    let interval = f
        .get("interval")
        .map(|n| duration(e, n, &f.at("interval"), SEC, secs(300)));
    if let Some(Some(d)) = &interval {
        hc.interval = d.v;
    }
    let timeout = f.get("timeout").and_then(|n| {
        duration(
            e,
            n,
            &f.at("timeout"),
            Duration::from_millis(100),
            secs(120),
        )
    });
    if let Some(d) = &timeout {
        hc.timeout = d.v;
    }
    // An interval or timeout already refused is not compared (its error says enough).
    let refused = matches!(interval, Some(None)) || (f.has("timeout") && timeout.is_none());
    if !refused && hc.timeout >= hc.interval {
        // Point at whichever of the two was written (the timeout when both).
        let key = if f.has("timeout") || !f.has("interval") {
            "timeout"
        } else {
            "interval"
        };
        e.push(
            f.pos_of(key),
            f.at(key),
            format!(
                "timeout ({}) must be less than interval ({})",
                super::units::format_duration(hc.timeout),
                super::units::format_duration(hc.interval)
            ),
        );
    }
    if let Some(v) = f
        .get("healthy_threshold")
        .and_then(|n| integer(e, n, &f.at("healthy_threshold"), 1, 10))
    {
        hc.healthy_threshold = v.v as u32;
    }
    if let Some(v) = f
        .get("unhealthy_threshold")
        .and_then(|n| integer(e, n, &f.at("unhealthy_threshold"), 1, 10))
    {
        hc.unhealthy_threshold = v.v as u32;
    }
    if let Some(n) = f.get("matcher") {
        let text = match &n.value {
            Value::Int(i) => Some(i.to_string()),
            Value::Str(s) => Some(s.clone()),
            other => {
                e.push(
                    n.pos,
                    f.at("matcher"),
                    format!(
                        "expected HTTP codes such as \"200\", \"200,202\" or \"200-299\", got {}",
                        other.kind()
                    ),
                );
                None
            }
        };
        if let Some(t) = text {
            match parse_matcher(&t) {
                Ok(m) => hc.matcher = m,
                Err(msg) => e.push(n.pos, f.at("matcher"), msg),
            }
        }
    }
    hc
}

fn describe(v: &Value) -> String {
    match v {
        Value::Str(s) => format!("\"{s}\""),
        other => other.kind().to_owned(),
    }
}

/// `IP:PORT` or `HOST:PORT`, resolved now.
fn resolve(address: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = address.parse::<SocketAddr>() {
        if a.port() == 0 {
            return Err("port must be from 1 to 65535, got 0".into());
        }
        return Ok(a);
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(format!(
            "expected IP:PORT or HOST:PORT (such as 10.0.1.10:8080), got \"{address}\""
        ));
    };
    let port: u16 = match port.parse() {
        Ok(p) if p > 0 => p,
        _ => {
            return Err(format!(
                "expected IP:PORT or HOST:PORT with a port from 1 to 65535, got \"{address}\""
            ));
        }
    };
    if host.is_empty()
        || host.contains(':')
        || host
            .bytes()
            .any(|b| !(b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_'))
    {
        return Err(format!(
            "expected IP:PORT, [IPv6]:PORT or HOST:PORT, got \"{address}\""
        ));
    }
    match (host, port).to_socket_addrs() {
        Ok(mut it) => it
            .next()
            .ok_or_else(|| format!("host name {host} resolved to no address")),
        Err(e) => Err(format!("cannot resolve host name {host}: {e}")),
    }
}

fn decode_targets(cx: &mut Ctx, n: &Node, path: &str) -> Vec<Target> {
    let mut out = Vec::new();
    let mut seen: HashMap<String, u32> = HashMap::new();
    for (p, item) in items(&mut cx.errs, n, path) {
        // A bare "IP:PORT" string is accepted as a target with defaults.
        let (addr_sp, f): (Option<Sp<String>>, Option<Fields>) = match &item.value {
            Value::Str(_) => (nonempty(&mut cx.errs, item, &p), None),
            _ => {
                let Some(f) = fields(&mut cx.errs, item, &p, &schema::TARGET) else {
                    continue;
                };
                let a = match f.get("address") {
                    Some(n) => nonempty(&mut cx.errs, n, &f.at("address")),
                    None => {
                        cx.errs
                            .push(f.pos, f.at("address"), "required: IP:PORT or HOST:PORT");
                        None
                    }
                };
                (a, Some(f))
            }
        };
        let addr_path = if f.is_some() {
            format!("{p}.address")
        } else {
            p.clone()
        };
        let mut zone = cx.node_zone.clone();
        let mut weight = 1;
        if let Some(f) = &f {
            if let Some(z) = f
                .get("zone")
                .and_then(|n| nonempty(&mut cx.errs, n, &f.at("zone")))
            {
                zone = z.v;
            }
            if let Some(w) = f
                .get("weight")
                .and_then(|n| integer(&mut cx.errs, n, &f.at("weight"), 0, 999))
            {
                weight = w.v as u32;
            }
        }
        let Some(a) = addr_sp else { continue };
        let address = a.v.trim().to_owned();
        if let Some(line) = seen.get(&address) {
            cx.errs.push(
                a.pos,
                addr_path,
                format!("duplicate target {address} in this group (first at line {line})"),
            );
            continue;
        }
        seen.insert(address.clone(), a.pos.line);
        match resolve(&address) {
            Ok(addr) => out.push(Target {
                address,
                addr,
                zone,
                weight,
            }),
            Err(msg) => cx.errs.push(a.pos, addr_path, msg),
        }
    }
    out
}
