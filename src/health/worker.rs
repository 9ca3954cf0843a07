//! The health-check workers: one task per target on the control runtime, off the
//! data path. Each target is checked every interval of its group, on a fixed
//! cadence; the first round at start runs at once for every target. Results drive the pure state machine,
//! whose state the data path reads from one atomic per target. Also: draining of
//! targets that a reload removed, and the health gauges.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;

use super::probe::probe_with_tls;
use super::state::{Outcome, State};
use crate::live::Live;
use crate::server::Shared;
use crate::snapshot::{HealthCheck, Target, TargetGroup};
use crate::targets::TargetState;

/// A target a reload removed, still draining.
#[derive(Clone)]
pub struct Draining {
    pub group: String,
    /// The group's protocol and algorithm, for the status of a group a reload
    /// removed while its targets drain.
    pub group_protocol: &'static str,
    pub group_algorithm: &'static str,
    pub address: String,
    pub zone: String,
    pub state: Arc<TargetState>,
    pub deadline: SystemTime,
}

/// The running checks, keyed by (group, address).
#[derive(Default)]
pub struct Checks {
    /// Each target's check task and the interval it was started with.
    tasks: HashMap<(String, String), (JoinHandle<()>, Duration)>,
    /// The (group, zone) pairs whose healthy/unhealthy counts were published.
    zones: std::collections::HashSet<(String, String)>,
}

fn key(g: &str, a: &str) -> (String, String) {
    (g.to_owned(), a.to_owned())
}

/// Where to send a target's check: its address with the check's port.
fn check_addr(t: &Target, hc: &HealthCheck) -> SocketAddr {
    let mut a = t.addr;
    if let Some(p) = hc.port {
        a.set_port(p);
    }
    a
}

/// Applies one outcome to a target and publishes what changed.
fn apply(
    state: &TargetState,
    group: &TargetGroup,
    target: &Target,
    outcome: &Outcome,
    shared: &Shared,
) {
    let hc = &group.health_check;
    let now = SystemTime::now();
    let result = if outcome.is_pass() { "pass" } else { "fail" };
    metrics::counter!(crate::metrics::HEALTH_CHECKS, "target_group" => group.name.clone(), "result" => result).increment(1);
    let (changed, before, health) = {
        let mut d = match state.detail.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        // A reload started draining the target while this check ran: its state
        // stays `draining` (set under the same lock by `drain`).
        if state.is_draining() {
            return;
        }
        let before = d.state;
        let changed = d.observe(outcome, hc.healthy_threshold, hc.unhealthy_threshold, now);
        if changed {
            state.health.store(d.state as u8, Ordering::Release);
        }
        (changed, before, d.clone())
    };
    if !changed {
        return;
    }
    if health.state == State::Healthy {
        // Slow start ramps a target that joins a group already serving; a group
        // with no healthy target takes its first ones at full share (as ALB).
        // Only while the group has slow start on: a reload that turns it on later
        // does not ramp targets already healthy then (AWS: only targets that
        // become healthy after slow start is enabled enter it).
        let others_healthy = {
            let live = shared.live.load();
            live.snapshot
                .target_groups
                .iter()
                .position(|g| g.name == group.name)
                .is_some_and(|gi| {
                    !live.snapshot.target_groups[gi].slow_start.is_zero()
                        && live.groups[gi].targets.iter().any(|t| {
                            !std::ptr::eq(&**t, state) && t.is_healthy() && !t.is_draining()
                        })
                })
        };
        // Targets of the start-up round are "registered into an empty group": no
        // slow start for them either.
        let since = if others_healthy && shared.ready.load(Ordering::Acquire) {
            crate::balancer::now_ms()
        } else {
            0
        };
        state.healthy_since_ms.store(since, Ordering::Relaxed);
    }
    match health.state {
        State::Unhealthy => tracing::warn!(
            target_group = %group.name,
            target = %target.address,
            reason = health.reason.unwrap_or(""),
            "target unhealthy: {}",
            health.description.as_deref().unwrap_or("")
        ),
        State::Healthy => {
            tracing::info!(target_group = %group.name, target = %target.address, "target healthy")
        }
        _ => {}
    }
    let live = shared.live.load();
    publish_gauges(&live, &group.name);
    // Alerts: a target going unhealthy, a recovery from unhealthy (a first pass
    // from initial is not an event), and a group left with no healthy target.
    match health.state {
        State::Unhealthy => {
            shared.forget_idle(target.addr);
            shared.alert(crate::alerts::Event::TargetUnhealthy {
                group: group.name.clone(),
                target: target.address.clone(),
                zone: target.zone.clone(),
                reason: health.reason.unwrap_or("").to_owned(),
                description: health.description.clone().unwrap_or_default(),
                consecutive_failures: health.consecutive_failures,
                at: now,
            });
            let gi = live
                .snapshot
                .target_groups
                .iter()
                .position(|g| g.name == group.name);
            // Once per episode: this transition left every (non-draining) target
            // of the group unhealthy, so the group now fails open.
            let all_unhealthy = gi.is_some_and(|gi| {
                live.groups[gi]
                    .targets
                    .iter()
                    .filter(|t| !t.is_draining())
                    .all(|t| t.health.load(Ordering::Acquire) == crate::targets::UNHEALTHY)
            });
            if all_unhealthy && group.fail_open {
                shared.alert(crate::alerts::Event::AllTargetsUnhealthy {
                    group: group.name.clone(),
                    at: now,
                });
            }
        }
        State::Healthy if before == State::Unhealthy => {
            shared.alert(crate::alerts::Event::TargetHealthy {
                group: group.name.clone(),
                target: target.address.clone(),
                zone: target.zone.clone(),
                at: now,
            })
        }
        _ => {}
    }
}

/// `fulcrum_healthy_targets` / `fulcrum_unhealthy_targets` per zone and
/// `fulcrum_target_state` of every target of a group.
pub fn publish_gauges(live: &Live, group_name: &str) {
    let Some(gi) = live
        .snapshot
        .target_groups
        .iter()
        .position(|g| g.name == group_name)
    else {
        return;
    };
    let g = &live.snapshot.target_groups[gi];
    let mut zones: HashMap<&str, (u32, u32)> = HashMap::new();
    for (t, st) in g.targets.iter().zip(&live.groups[gi].targets) {
        let s = st.health.load(Ordering::Relaxed);
        let e = zones.entry(t.zone.as_str()).or_default();
        match s {
            crate::targets::HEALTHY => e.0 += 1,
            crate::targets::UNHEALTHY => e.1 += 1,
            _ => {}
        }
        for (code, name) in [
            (0u8, "initial"),
            (1, "healthy"),
            (2, "unhealthy"),
            (3, "draining"),
        ] {
            metrics::gauge!(crate::metrics::TARGET_STATE, "target_group" => g.name.clone(), "target" => t.address.clone(), "state" => name)
                .set(if s == code { 1.0 } else { 0.0 });
        }
    }
    for (zone, (h, u)) in zones {
        metrics::gauge!(crate::metrics::HEALTHY_TARGETS, "target_group" => g.name.clone(), "zone" => zone.to_owned()).set(f64::from(h));
        metrics::gauge!(crate::metrics::UNHEALTHY_TARGETS, "target_group" => g.name.clone(), "zone" => zone.to_owned()).set(f64::from(u));
    }
}

/// One check of the target now, with the current config.
async fn check_once(shared: &Shared, group: &str, address: &str, state: &TargetState) -> bool {
    let live = shared.live.load_full();
    let Some(gi) = live
        .snapshot
        .target_groups
        .iter()
        .position(|g| g.name == group)
    else {
        return false;
    };
    let g = &live.snapshot.target_groups[gi];
    let Some(t) = g.targets.iter().find(|t| t.address == address) else {
        return false;
    };
    let hc = &g.health_check;
    let host = hc.host.as_deref().unwrap_or(&t.address);
    let tls = if matches!(
        hc.protocol,
        crate::snapshot::HealthProtocol::Https | crate::snapshot::HealthProtocol::Tls
    ) {
        let ti = g
            .targets
            .iter()
            .position(|x| x.address == address)
            .unwrap_or(0);
        match live.target_tls(crate::snapshot::GroupId(gi as u32), ti) {
            Some((cfg, name)) => Some((cfg.clone(), name)),
            // An http/tcp group checked over TLS: accept any certificate, as ALB does.
            None => crate::tls::client::client_config(false, None)
                .ok()
                .map(|cfg| (cfg, crate::tls::client::server_name(&t.address, t.addr))),
        }
    } else {
        None
    };
    let outcome = probe_with_tls(check_addr(t, hc), hc, host, g.proxy_protocol_v2, tls).await;
    apply(state, g, t, &outcome, shared);
    true
}

/// A target's check loop: a check every interval, the first after `first`.
/// Checks start on a fixed cadence (ALB: each check lasts the interval), so a
/// slow answer does not push the next one back.
async fn run(
    shared: Arc<Shared>,
    group: String,
    address: String,
    state: Arc<TargetState>,
    first: Duration,
) {
    tokio::time::sleep(first).await;
    loop {
        let began = tokio::time::Instant::now();
        if !check_once(&shared, &group, &address, &state).await {
            return;
        }
        let interval = {
            let live = shared.live.load();
            live.snapshot
                .group_by_name(&group)
                .map_or(Duration::from_secs(30), |g| g.health_check.interval)
        };
        tokio::time::sleep_until((began + interval).max(tokio::time::Instant::now())).await;
    }
}

impl Checks {
    /// Runs the first check of every target at once and waits for them all
    /// (bounded by the longest check timeout), then starts the periodic checks.
    pub async fn start(shared: &Arc<Shared>) -> Checks {
        let live = shared.live.load_full();
        let round = tokio::time::Instant::now();
        let mut first = Vec::new();
        for (g, lg) in live.snapshot.target_groups.iter().zip(&live.groups) {
            for (t, st) in g.targets.iter().zip(&lg.targets) {
                let (shared, group, address, st) = (
                    shared.clone(),
                    g.name.clone(),
                    t.address.clone(),
                    st.clone(),
                );
                first.push(tokio::spawn(async move {
                    check_once(&shared, &group, &address, &st).await;
                }));
            }
        }
        for f in first {
            let _ = f.await;
        }
        for g in &live.snapshot.target_groups {
            publish_gauges(&live, &g.name);
        }
        let mut checks = Checks::default();
        checks.sync(shared, &live, Some(round));
        checks
    }

    /// Matches the running check tasks to the published view: targets new to it
    /// are checked at once, removed ones stop being checked. `first_round`: when
    /// the first round (every target checked at start) began.
    pub fn sync(
        &mut self,
        shared: &Arc<Shared>,
        live: &Live,
        first_round: Option<tokio::time::Instant>,
    ) {
        let mut wanted = HashMap::new();
        for (g, lg) in live.snapshot.target_groups.iter().zip(&live.groups) {
            for (t, st) in g.targets.iter().zip(&lg.targets) {
                wanted.insert(
                    key(&g.name, &t.address),
                    (st.clone(), g.health_check.interval),
                );
            }
        }
        // A target that left stops being checked; one whose group's interval a
        // reload changed restarts on the new cadence (its health state lives in
        // its TargetState and carries over).
        let mut rescheduled = Vec::new();
        self.tasks.retain(|k, (task, interval)| {
            let keep = match wanted.get(k) {
                Some((_, want)) if want != interval => {
                    rescheduled.push(k.clone());
                    false
                }
                Some(_) => true,
                None => false,
            };
            if !keep {
                task.abort();
            }
            keep
        });
        for (k, (st, interval)) in wanted {
            if self.tasks.contains_key(&k) {
                continue;
            }
            // Every `interval` (SPEC §4): a target checked in the first round is
            // checked next one interval after that round began, one whose
            // interval a reload changed one new interval from now; a new one
            // (added by a reload) is checked at once.
            let first = match first_round {
                Some(began) => {
                    (began + interval).saturating_duration_since(tokio::time::Instant::now())
                }
                None if rescheduled.contains(&k) => interval,
                None => Duration::ZERO,
            };
            let task = tokio::spawn(run(shared.clone(), k.0.clone(), k.1.clone(), st, first));
            self.tasks.insert(k, (task, interval));
        }
        for g in &live.snapshot.target_groups {
            publish_gauges(live, &g.name);
        }
        // A zone (or group) a reload left without targets counts 0 from now on,
        // rather than keeping its last counts.
        let zones: std::collections::HashSet<(String, String)> = live
            .snapshot
            .target_groups
            .iter()
            .flat_map(|g| g.targets.iter().map(|t| (g.name.clone(), t.zone.clone())))
            .collect();
        for (group, zone) in self.zones.difference(&zones) {
            for name in [
                crate::metrics::HEALTHY_TARGETS,
                crate::metrics::UNHEALTHY_TARGETS,
            ] {
                metrics::gauge!(name, "target_group" => group.clone(), "zone" => zone.clone())
                    .set(0.0);
            }
        }
        self.zones = zones;
    }

    pub fn stop(&mut self) {
        for (_, (t, _)) in self.tasks.drain() {
            t.abort();
        }
    }
}

/// Starts draining a target a reload removed: no new work, idle pooled
/// connections already closed by the caller; open work gets until the deadline
/// (or the drain ends as soon as nothing is open). Then the target leaves.
pub fn drain(shared: &Arc<Shared>, d: Draining, delay: Duration) {
    let st = d.state.clone();
    {
        // Under the detail lock, so a health check finishing now cannot store
        // its outcome over `draining` (see `apply`).
        let mut h = match st.detail.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        st.draining.store(true, Ordering::Release);
        st.health.store(crate::targets::DRAINING, Ordering::Release);
        h.drain(SystemTime::now());
    }
    let deadline_ms = crate::balancer::now_ms() + delay.as_millis() as u64;
    st.drain_deadline_ms.store(deadline_ms, Ordering::Relaxed);
    st.killed.store(false, Ordering::Release);
    if let Ok(mut list) = shared.draining_targets.lock() {
        list.retain(|x| !(x.group == d.group && x.address == d.address));
        list.push(d.clone());
    }
    let shared = shared.clone();
    set_state_gauges(&d.group, &d.address, Some(crate::targets::DRAINING));
    tokio::spawn(async move {
        // As ALB: the target shows `draining` until the delay ends, even when
        // nothing is open on it any more; what is still open then is closed.
        let until = tokio::time::Instant::now() + delay;
        loop {
            // Re-added by a reload (back in service), or re-added and removed
            // again: the newer drain, with its own deadline, owns the target.
            if !st.is_draining() || st.drain_deadline_ms.load(Ordering::Relaxed) != deadline_ms {
                return;
            }
            if tokio::time::Instant::now() >= until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        {
            // The last look and the kill under the detail lock, as `undrain`
            // brings a target back under it: a reload re-adding the target now
            // either stops this drain or finds it killed (and un-kills it).
            let _h = match st.detail.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            if !st.is_draining() || st.drain_deadline_ms.load(Ordering::Relaxed) != deadline_ms {
                return;
            }
            st.killed.store(true, Ordering::Release);
        }
        st.kill.notify_waiters();
        if let Ok(mut list) = shared.draining_targets.lock() {
            list.retain(|x| !Arc::ptr_eq(&x.state, &st));
        }
        let _h = match st.detail.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if st.is_draining() {
            set_state_gauges(&d.group, &d.address, None);
        }
    });
}

/// `fulcrum_target_state` of one target: 1 for `state`, 0 for the others (all 0
/// when `None`: the target left).
fn set_state_gauges(group: &str, address: &str, state: Option<u8>) {
    for (code, name) in [
        (0u8, "initial"),
        (1, "healthy"),
        (2, "unhealthy"),
        (3, "draining"),
    ] {
        metrics::gauge!(crate::metrics::TARGET_STATE, "target_group" => group.to_owned(), "target" => address.to_owned(), "state" => name)
            .set(if state == Some(code) { 1.0 } else { 0.0 });
    }
}

/// A target a reload brought back while it was draining returns to service.
pub fn undrain(shared: &Shared, st: &Arc<TargetState>) {
    if !st.is_draining() {
        return;
    }
    {
        let mut h = match st.detail.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        st.draining.store(false, Ordering::Release);
        st.drain_deadline_ms.store(0, Ordering::Relaxed);
        // Its drain ended just as the reload kept this state: what was open on
        // the target has been told to close; new work may use it again.
        st.killed.store(false, Ordering::Release);
        h.undrain(SystemTime::now());
        st.health.store(h.state as u8, Ordering::Release);
    }
    if let Ok(mut list) = shared.draining_targets.lock() {
        list.retain(|x| !Arc::ptr_eq(&x.state, st));
    }
}
