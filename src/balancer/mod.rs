//! Target selection (SPEC §4), lock-free on the request path: eligibility
//! (healthy, not draining, the node's zone unless `cross_zone`, fail-open when
//! none is healthy), then the group's algorithm over the eligible targets.

pub mod cookie;

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use crate::live::LiveGroup;
use crate::snapshot::{Algorithm, GroupProtocol, TargetGroup};
use crate::targets::TargetState;

/// Which targets may take new work, decided once per pick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    /// Healthy targets in the node's zone.
    HealthyInZone,
    /// Healthy targets anywhere.
    Healthy,
    /// Fail-open: every registered target that is not draining.
    All,
    /// A request that loaded its view just before a reload removed every target
    /// of the group: it finishes on the tables it started with.
    Draining,
}

fn in_scope(scope: Scope, t: &TargetState, zone: &str, node_zone: &str) -> bool {
    if scope == Scope::Draining {
        return !t.killed.load(Ordering::Acquire);
    }
    if t.is_draining() {
        return false;
    }
    match scope {
        Scope::HealthyInZone => t.is_healthy() && zone == node_zone,
        Scope::Healthy => t.is_healthy(),
        Scope::All | Scope::Draining => true,
    }
}

/// The scope for this group now, or `None` when nothing may be picked (no
/// registered target, or none healthy without fail-open).
fn scope(group: &LiveGroup, cfg: &TargetGroup, node_zone: &str) -> Option<Scope> {
    let mut healthy = false;
    let mut healthy_here = false;
    let mut any = false;
    let mut draining = false;
    for (t, tc) in group.targets.iter().zip(&cfg.targets) {
        if t.is_draining() {
            draining = true;
            continue;
        }
        any = true;
        if t.is_healthy() {
            healthy = true;
            if tc.zone == node_zone {
                healthy_here = true;
                break;
            }
        }
    }
    if !cfg.cross_zone && healthy_here {
        Some(Scope::HealthyInZone)
    } else if healthy {
        Some(Scope::Healthy)
    } else if any && cfg.fail_open {
        Some(Scope::All)
    } else if !any && draining {
        Some(Scope::Draining)
    } else {
        None
    }
}

/// Slow start: the share (0..=1) a newly healthy target gets now.
fn ramp(t: &TargetState, cfg: &TargetGroup, now_ms: u64) -> f64 {
    let ss = cfg.slow_start.as_millis() as u64;
    if ss == 0 {
        return 1.0;
    }
    let since = t.healthy_since_ms.load(Ordering::Relaxed);
    if since == 0 || now_ms >= since + ss {
        return 1.0;
    }
    // Linear from 0 to 100% over the duration (ALB's ramp). A target whose share
    // is still 0 is only picked when nothing else is eligible.
    // (A request that started before the target became healthy sees 0.)
    now_ms.saturating_sub(since) as f64 / ss as f64
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Whether target `i` may take new work now (for sticky cookies).
pub fn eligible(group: &LiveGroup, cfg: &TargetGroup, node_zone: &str, i: usize) -> bool {
    match (
        scope(group, cfg, node_zone),
        group.targets.get(i),
        cfg.targets.get(i),
    ) {
        (Some(sc), Some(t), Some(tc)) => in_scope(sc, t, &tc.zone, node_zone),
        _ => false,
    }
}

/// Why nothing could be picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoTarget {
    /// The group has no registered targets, or none is healthy and fail-open is off (503).
    Unavailable,
    /// Every eligible target was excluded (a retry found no other target).
    Exhausted,
}

/// Picks a target index for a new request or connection. `skip` excludes one
/// target (the one a retry moves away from); `client` feeds source_hash.
pub fn pick(
    group: &LiveGroup,
    cfg: &TargetGroup,
    node_zone: &str,
    client: IpAddr,
    skip: Option<usize>,
) -> Result<usize, NoTarget> {
    pick_at(group, cfg, node_zone, client, skip, now_ms())
}

/// [`pick`] at wall-clock time `now` (ms since the epoch, for slow start), for
/// a caller that already knows the time.
pub fn pick_at(
    group: &LiveGroup,
    cfg: &TargetGroup,
    node_zone: &str,
    client: IpAddr,
    skip: Option<usize>,
    now: u64,
) -> Result<usize, NoTarget> {
    let n = group.targets.len();
    let scope = scope(group, cfg, node_zone).ok_or(NoTarget::Unavailable)?;
    let ok = |i: usize| {
        Some(i) != skip && in_scope(scope, &group.targets[i], &cfg.targets[i].zone, node_zone)
    };
    // A retry (a target to skip) does not take a turn of the rotation: the next
    // request still gets the target after the one this request was given.
    let turn = skip.is_none();
    let picked = match cfg.algorithm {
        Algorithm::RoundRobin => round_robin(group, cfg, n, &ok, now, turn),
        Algorithm::LeastOutstandingRequests => {
            // Open connections are the outstanding work of a tcp/tls group.
            let l4 = matches!(cfg.protocol, GroupProtocol::Tcp | GroupProtocol::Tls);
            least_outstanding(group, n, &ok, turn, l4)
        }
        Algorithm::WeightedRandom => weighted_random(group, cfg, n, &ok, now),
        Algorithm::SourceHash => source_hash(group, cfg, n, &ok, client, now),
    };
    // Eligibility read twice can change in between (a reload starts a drain): an
    // eligible target left over is still a pick.
    picked
        .or_else(|| (0..n).find(|&i| ok(i)))
        .ok_or(NoTarget::Exhausted)
}

fn round_robin(
    group: &LiveGroup,
    cfg: &TargetGroup,
    n: usize,
    ok: &dyn Fn(usize) -> bool,
    now: u64,
    turn: bool,
) -> Option<usize> {
    let mut fallback = None;
    for i in rotation(group, n, ok, turn) {
        let f = ramp(&group.targets[i], cfg, now);
        if f >= 1.0 || fastrand::f64() < f {
            return Some(i);
        }
        fallback.get_or_insert(i);
    }
    fallback
}

/// The eligible targets in list order, starting at the next one in the group's
/// rotation. The rotation counts eligible targets only, so a skipped target
/// (unhealthy, draining, out of zone, already tried) does not hand its turn to
/// its neighbour in the list: each eligible target gets an equal share.
fn rotation<'a>(
    group: &LiveGroup,
    n: usize,
    ok: &'a dyn Fn(usize) -> bool,
    turn: bool,
) -> impl Iterator<Item = usize> + 'a {
    let eligible = (0..n).filter(|&i| ok(i)).count();
    let counter = &group.state.rotation;
    let at = if turn {
        counter.fetch_add(1, Ordering::Relaxed)
    } else {
        counter.load(Ordering::Relaxed)
    };
    let start = match eligible {
        0 => 0,
        m => at % m,
    };
    (0..n)
        .chain(0..n)
        .filter(move |&i| ok(i))
        .skip(start)
        .take(eligible)
}

/// Fewest outstanding requests: HTTP requests in flight (a WebSocket tunnel stays
/// one), or open connections for a tcp/tls group (`l4`); ties broken by the
/// group's rotation.
fn least_outstanding(
    group: &LiveGroup,
    n: usize,
    ok: &dyn Fn(usize) -> bool,
    turn: bool,
    l4: bool,
) -> Option<usize> {
    let mut best: Option<(u32, usize)> = None;
    for i in rotation(group, n, ok, turn) {
        let t = &group.targets[i];
        let load = if l4 {
            t.active_connections.load(Ordering::Relaxed)
        } else {
            t.in_flight.load(Ordering::Relaxed)
        };
        if best.is_none_or(|(b, _)| load < b) {
            best = Some((load, i));
        }
    }
    best.map(|(_, i)| i)
}

fn weighted_random(
    group: &LiveGroup,
    cfg: &TargetGroup,
    n: usize,
    ok: &dyn Fn(usize) -> bool,
    now: u64,
) -> Option<usize> {
    let weight = |i: usize| f64::from(cfg.targets[i].weight) * ramp(&group.targets[i], cfg, now);
    let total: f64 = (0..n).filter(|i| ok(*i)).map(weight).sum();
    if total <= 0.0 {
        // Every eligible target has weight 0: spread evenly rather than fail.
        let eligible = (0..n).filter(|i| ok(*i)).count();
        if eligible == 0 {
            return None;
        }
        return (0..n).filter(|i| ok(*i)).nth(fastrand::usize(..eligible));
    }
    let mut x = fastrand::f64() * total;
    let mut last = None;
    for i in (0..n).filter(|i| ok(*i)) {
        let w = weight(i);
        if w <= 0.0 {
            continue;
        }
        last = Some(i);
        if x < w {
            return Some(i);
        }
        x -= w;
    }
    last
}

/// Consistent (rendezvous) hashing of the client IP: each target scores
/// `hash(ip, target)`, weighted; the best score wins. When a target leaves only
/// the clients it had move; when one joins only about 1/N move to it.
fn source_hash(
    group: &LiveGroup,
    cfg: &TargetGroup,
    n: usize,
    ok: &dyn Fn(usize) -> bool,
    client: IpAddr,
    now: u64,
) -> Option<usize> {
    let ip = match client {
        IpAddr::V4(v4) => u128::from(v4.to_bits()),
        IpAddr::V6(v6) => v6.to_bits(),
    };
    // A weight of 0 takes no clients, as with weighted_random; when every eligible
    // target has weight 0 they share the clients evenly rather than fail.
    let weighted = (0..n).any(|i| ok(i) && cfg.targets[i].weight > 0);
    let mut best: Option<(f64, usize)> = None;
    for i in (0..n).filter(|i| ok(*i)) {
        let weight = cfg.targets[i].weight;
        if weighted && weight == 0 {
            continue;
        }
        // Slow start scales the weight: a ramping target wins a growing share of
        // clients, and a client it won stays (its score only grows). The floor
        // keeps scores apart when every target has just become healthy.
        let w = f64::from(weight.max(1)) * ramp(&group.targets[i], cfg, now).max(1e-3);
        let h = xxhash_rust::xxh3::xxh3_64_with_seed(&ip.to_le_bytes(), group.targets[i].cookie_id);
        // Map to (0, 1], then the weighted rendezvous score -w / ln(u).
        let u = ((h >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let score = -w / u.ln();
        if best.is_none_or(|(b, _)| score > b) {
            best = Some((score, i));
        }
    }
    best.map(|(_, i)| i)
}

#[cfg(test)]
mod tests;
