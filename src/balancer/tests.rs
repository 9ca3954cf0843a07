use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::*;
use crate::live::Live;
use crate::snapshot::Snapshot;
use crate::targets::{HEALTHY, Registry, UNHEALTHY};

fn snapshot(group_yaml: &str) -> Arc<Snapshot> {
    let dir = std::env::temp_dir();
    let source = crate::snapshot::ConfigSource {
        path: dir.join("b.yaml"),
        sha256: String::new(),
        loaded_at: std::time::SystemTime::now(),
    };
    let yaml = format!("node: {{zone: a}}\ntarget_groups:\n  - {group_yaml}\n");
    Arc::new(
        crate::config::load_text(
            &yaml,
            "b.yaml",
            dir,
            source,
            crate::config::LoadOptions {
                env: Box::new(|_| None),
            },
        )
        .unwrap_or_else(|e| panic!("{e:?}")),
    )
}

fn live(group_yaml: &str) -> Live {
    Live::build(snapshot(group_yaml), &mut Registry::default())
}

fn set(l: &Live, i: usize, state: u8) {
    l.groups[0].targets[i]
        .health
        .store(state, Ordering::Relaxed);
}

fn all_healthy(l: &Live) {
    for i in 0..l.groups[0].targets.len() {
        set(l, i, HEALTHY);
    }
}

const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));

fn pick_n(l: &Live, n: usize) -> Vec<Result<usize, NoTarget>> {
    let g = &l.groups[0];
    let cfg = &l.snapshot.target_groups[0];
    (0..n).map(|_| pick(g, cfg, "a", IP, None)).collect()
}

const THREE: &str = "{name: g, targets: [{address: \"127.0.0.1:1\"}, {address: \"127.0.0.1:2\"}, {address: \"127.0.0.1:3\"}]}";

#[test]
fn round_robin_over_healthy_targets_only() {
    let l = live(THREE);
    all_healthy(&l);
    assert_eq!(
        pick_n(&l, 6),
        vec![Ok(0), Ok(1), Ok(2), Ok(0), Ok(1), Ok(2)]
    );
    set(&l, 1, UNHEALTHY);
    assert!(pick_n(&l, 20).iter().all(|p| *p == Ok(0) || *p == Ok(2)));
    // The unhealthy target's turn does not go to its neighbour: equal shares.
    for (skipped, others) in [(0, [1, 2]), (1, [0, 2]), (2, [0, 1])] {
        all_healthy(&l);
        set(&l, skipped, UNHEALTHY);
        let picks = pick_n(&l, 12);
        for i in others {
            assert_eq!(
                picks.iter().filter(|p| **p == Ok(i)).count(),
                6,
                "{picks:?}"
            );
        }
    }
}

#[test]
fn fail_open_and_fail_closed() {
    let l = live(THREE);
    // every target unhealthy (or initial): fail-open routes to all of them
    set(&l, 0, UNHEALTHY);
    let mut seen: Vec<usize> = pick_n(&l, 30).into_iter().map(|p| p.unwrap()).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, vec![0, 1, 2]);
    let closed = live(&THREE.replace("{name: g,", "{name: g, fail_open: false,"));
    assert_eq!(pick_n(&closed, 1), vec![Err(NoTarget::Unavailable)]);
    let empty = live("{name: g}");
    assert_eq!(pick_n(&empty, 1), vec![Err(NoTarget::Unavailable)]);
}

#[test]
fn draining_targets_get_nothing() {
    let l = live(THREE);
    all_healthy(&l);
    l.groups[0].targets[0]
        .draining
        .store(true, Ordering::Relaxed);
    assert!(pick_n(&l, 20).iter().all(|p| *p != Ok(0)));
}

#[test]
fn cross_zone_off_prefers_the_node_zone_and_falls_back() {
    let y = "{name: g, cross_zone: false, targets: [{address: \"127.0.0.1:1\", zone: a}, {address: \"127.0.0.1:2\", zone: b}, {address: \"127.0.0.1:3\", zone: b}]}";
    let l = live(y);
    all_healthy(&l);
    assert!(pick_n(&l, 20).iter().all(|p| *p == Ok(0)));
    set(&l, 0, UNHEALTHY);
    let picks = pick_n(&l, 20);
    assert!(picks.contains(&Ok(1)) && picks.contains(&Ok(2)) && !picks.contains(&Ok(0)));
    // cross_zone on: all zones
    let on = live(&y.replace("cross_zone: false", "cross_zone: true"));
    all_healthy(&on);
    let picks = pick_n(&on, 30);
    assert!(picks.contains(&Ok(0)) && picks.contains(&Ok(1)) && picks.contains(&Ok(2)));
}

#[test]
fn least_outstanding_requests_avoids_busy_targets_and_rotates_ties() {
    let l = live(&THREE.replace(
        "{name: g,",
        "{name: g, algorithm: least_outstanding_requests,",
    ));
    all_healthy(&l);
    l.groups[0].targets[0].in_flight.store(5, Ordering::Relaxed);
    l.groups[0].targets[2].in_flight.store(1, Ordering::Relaxed);
    assert!(pick_n(&l, 10).iter().all(|p| *p == Ok(1)));
    // An HTTP group weighs requests in flight, not open connections (a WebSocket
    // tunnel is one request in flight already).
    l.groups[0].targets[1]
        .active_connections
        .store(3, Ordering::Relaxed);
    assert!(pick_n(&l, 10).iter().all(|p| *p == Ok(1)));
    l.groups[0].targets[1]
        .active_connections
        .store(0, Ordering::Relaxed);
    // A tcp group weighs its open connections.
    let tcp = live(&THREE.replace(
        "{name: g,",
        "{name: g, protocol: tcp, algorithm: least_outstanding_requests,",
    ));
    all_healthy(&tcp);
    tcp.groups[0].targets[0]
        .active_connections
        .store(2, Ordering::Relaxed);
    tcp.groups[0].targets[1]
        .active_connections
        .store(1, Ordering::Relaxed);
    assert!(pick_n(&tcp, 10).iter().all(|p| *p == Ok(2)));
    l.groups[0].targets[0].in_flight.store(0, Ordering::Relaxed);
    l.groups[0].targets[2].in_flight.store(0, Ordering::Relaxed);
    let picks = pick_n(&l, 9);
    for i in 0..3 {
        assert_eq!(
            picks.iter().filter(|p| **p == Ok(i)).count(),
            3,
            "{picks:?}"
        );
    }
    // A tie between the two targets left after one is taken out: equal shares.
    set(&l, 0, UNHEALTHY);
    let picks = pick_n(&l, 12);
    for i in [1, 2] {
        assert_eq!(
            picks.iter().filter(|p| **p == Ok(i)).count(),
            6,
            "{picks:?}"
        );
    }
}

#[test]
fn weighted_random_follows_the_weights() {
    let y = "{name: g, algorithm: weighted_random, targets: [{address: \"127.0.0.1:1\", weight: 3}, {address: \"127.0.0.1:2\", weight: 1}, {address: \"127.0.0.1:3\", weight: 0}]}";
    let l = live(y);
    all_healthy(&l);
    let picks = pick_n(&l, 20_000);
    let a = picks.iter().filter(|p| **p == Ok(0)).count() as f64 / 20_000.0;
    assert!((0.72..0.78).contains(&a), "{a}");
    assert!(!picks.contains(&Ok(2)));
    // Every target at weight 0: they share the traffic evenly.
    let zero = live(
        &y.replace("weight: 3", "weight: 0")
            .replace("weight: 1}", "weight: 0}"),
    );
    all_healthy(&zero);
    let picks = pick_n(&zero, 3_000);
    for i in 0..3 {
        let share = picks.iter().filter(|p| **p == Ok(i)).count() as f64 / 3_000.0;
        assert!((0.25..0.42).contains(&share), "target {i}: {share}");
    }
}

#[test]
fn source_hash_is_stable_and_moves_few_clients() {
    let five = "{name: g, protocol: tcp, algorithm: source_hash, targets: [{address: \"127.0.0.1:1\"}, {address: \"127.0.0.1:2\"}, {address: \"127.0.0.1:3\"}, {address: \"127.0.0.1:4\"}, {address: \"127.0.0.1:5\"}]}";
    let l = live(five);
    all_healthy(&l);
    let g = &l.groups[0];
    let cfg = &l.snapshot.target_groups[0];
    let clients: Vec<IpAddr> = (0..5000u32)
        .map(|i| IpAddr::V4((0x0a00_0000 + i * 7919).into()))
        .collect();
    let before: Vec<usize> = clients
        .iter()
        .map(|c| pick(g, cfg, "a", *c, None).unwrap())
        .collect();
    let again: Vec<usize> = clients
        .iter()
        .map(|c| pick(g, cfg, "a", *c, None).unwrap())
        .collect();
    assert_eq!(before, again);
    // every target gets a fair share
    for t in 0..5 {
        let share = before.iter().filter(|x| **x == t).count() as f64 / 5000.0;
        assert!((0.15..0.25).contains(&share), "target {t}: {share}");
    }
    // target 2 leaves: only its clients move
    set(&l, 2, UNHEALTHY);
    let after: Vec<usize> = clients
        .iter()
        .map(|c| pick(g, cfg, "a", *c, None).unwrap())
        .collect();
    let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
    let had = before.iter().filter(|b| **b == 2).count();
    assert_eq!(moved, had);
    assert!(after.iter().all(|a| *a != 2));
}

/// source_hash follows the weights: weight 3 takes about three times the clients
/// of weight 1, weight 0 none; when only weight-0 targets are left they serve.
#[test]
fn source_hash_follows_the_weights() {
    let y = "{name: g, protocol: tcp, algorithm: source_hash, targets: [{address: \"127.0.0.1:1\", weight: 3}, {address: \"127.0.0.1:2\", weight: 1}, {address: \"127.0.0.1:3\", weight: 0}]}";
    let l = live(y);
    all_healthy(&l);
    let (g, cfg) = (&l.groups[0], &l.snapshot.target_groups[0]);
    let clients: Vec<IpAddr> = (0..8000u32)
        .map(|i| IpAddr::V4((0x0a00_0000 + i * 7919).into()))
        .collect();
    let picks: Vec<usize> = clients
        .iter()
        .map(|c| pick(g, cfg, "a", *c, None).unwrap())
        .collect();
    let a = picks.iter().filter(|p| **p == 0).count() as f64 / 8000.0;
    assert!((0.70..0.80).contains(&a), "weight 3 of 4: {a}");
    assert!(!picks.contains(&2), "a weight-0 target got clients");
    set(&l, 0, UNHEALTHY);
    set(&l, 1, UNHEALTHY);
    assert_eq!(pick(g, cfg, "a", clients[0], None), Ok(2));
}

/// source_hash with slow start: a target halfway through its ramp wins about half
/// the clients a full target wins, and every client it won at 25% it keeps at 75%.
#[test]
fn source_hash_ramps_a_newly_healthy_target() {
    let y = "{name: g, protocol: tcp, algorithm: source_hash, slow_start: 100s, targets: [{address: \"127.0.0.1:1\"}, {address: \"127.0.0.1:2\"}]}";
    let l = live(y);
    all_healthy(&l);
    let (g, cfg) = (&l.groups[0], &l.snapshot.target_groups[0]);
    let since = 1_000_000_000;
    g.targets[1]
        .healthy_since_ms
        .store(since, Ordering::Relaxed);
    let clients: Vec<IpAddr> = (0..8000u32)
        .map(|i| IpAddr::V4((0x0a00_0000 + i * 7919).into()))
        .collect();
    let share = |at: u64| {
        let won: Vec<bool> = clients
            .iter()
            .map(|c| pick_at(g, cfg, "a", *c, None, since + at).unwrap() == 1)
            .collect();
        let n = won.iter().filter(|w| **w).count() as f64 / 8000.0;
        (won, n)
    };
    let (early, quarter) = share(25_000);
    let (_, half) = share(50_000);
    let (late, _) = share(75_000);
    // Weights 1 and r: the ramping target wins r / (1 + r) of the clients.
    assert!((0.15..0.25).contains(&quarter), "at 25%: {quarter}");
    assert!((0.28..0.38).contains(&half), "at 50%: {half}");
    assert!(
        early.iter().zip(&late).all(|(e, l)| !*e || *l),
        "a client the ramping target won moved away again"
    );
    let (_, full) = share(100_000);
    assert!((0.45..0.55).contains(&full), "after the ramp: {full}");
}

/// A retry's pick does not take a turn: with one target refusing, the next
/// request starts at the next target instead of the refusing one again.
#[test]
fn a_retry_does_not_take_a_turn_of_the_rotation() {
    let l = live(&THREE.replace(", {address: \"127.0.0.1:3\"}", ""));
    all_healthy(&l);
    let (g, cfg) = (&l.groups[0], &l.snapshot.target_groups[0]);
    let mut first_picks = Vec::new();
    for _ in 0..4 {
        let first = pick(g, cfg, "a", IP, None).unwrap();
        first_picks.push(first);
        if first == 0 {
            // target 0 refuses: the retry goes to 1
            assert_eq!(pick(g, cfg, "a", IP, Some(0)), Ok(1));
        }
    }
    assert_eq!(first_picks, [0, 1, 0, 1]);
}

#[test]
fn retries_skip_the_failed_target() {
    let l = live(&THREE.replace(", {address: \"127.0.0.1:3\"}", ""));
    all_healthy(&l);
    let g = &l.groups[0];
    let cfg = &l.snapshot.target_groups[0];
    for _ in 0..10 {
        assert_eq!(pick(g, cfg, "a", IP, Some(1)), Ok(0));
    }
    let one = live("{name: g, targets: [{address: \"127.0.0.1:1\"}]}");
    all_healthy(&one);
    assert_eq!(
        pick(
            &one.groups[0],
            &one.snapshot.target_groups[0],
            "a",
            IP,
            Some(0)
        ),
        Err(NoTarget::Exhausted)
    );
}

#[test]
fn slow_start_ramps_linearly() {
    let l = live(&THREE.replace("{name: g,", "{name: g, slow_start: 100s,"));
    let t = &l.groups[0].targets[0];
    let cfg = &l.snapshot.target_groups[0];
    let now = 1_000_000_000;
    t.healthy_since_ms.store(now, Ordering::Relaxed);
    assert_eq!(ramp(t, cfg, now), 0.0);
    assert!((ramp(t, cfg, now + 25_000) - 0.25).abs() < 1e-9);
    assert!((ramp(t, cfg, now + 50_000) - 0.5).abs() < 1e-9);
    assert_eq!(ramp(t, cfg, now + 100_000), 1.0);
    // off
    let off = live(THREE);
    assert_eq!(
        ramp(
            &off.groups[0].targets[0],
            &off.snapshot.target_groups[0],
            now
        ),
        1.0
    );
}

#[test]
fn a_request_on_a_view_from_before_a_reload_finishes_on_its_draining_targets() {
    // A reload removed every target of the group; a request that loaded the old
    // view still gets one of them until its deregistration delay ends.
    let l = live(THREE);
    all_healthy(&l);
    for t in &l.groups[0].targets {
        t.draining.store(true, Ordering::Relaxed);
    }
    assert!(pick_n(&l, 3).iter().all(|p| p.is_ok()));
    for t in &l.groups[0].targets {
        t.killed.store(true, Ordering::Relaxed);
    }
    assert_eq!(pick_n(&l, 1), vec![Err(NoTarget::Exhausted)]);
}
