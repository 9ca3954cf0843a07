//! Stable target identity (group name + configured address) and the runtime state
//! that outlives reloads: in-flight requests, active connections, health.
//!
//! The control thread keeps the [`Registry`]; each reload builds the published
//! view from it, so a target that stays keeps its very same state object.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::SystemTime;

use crate::metrics::{GroupMetrics, ListenerMetrics};

/// Mutable state of one target, shared by the workers through `Arc`.
#[derive(Debug)]
pub struct TargetState {
    pub group: String,
    pub address: String,
    /// Requests sent and not yet answered.
    pub in_flight: AtomicU32,
    /// Open proxied connections (tcp/tls listeners, upgraded HTTP).
    pub active_connections: AtomicU32,
    /// When the target entered its current state.
    pub since: SystemTime,
    /// Opaque id for sticky cookies (never the address).
    pub cookie_id: u64,
    /// Health state as `health::state::State as u8` (0 initial, 1 healthy,
    /// 2 unhealthy, 3 draining); written by the health worker only.
    pub health: AtomicU8,
    /// Unix milliseconds when the target last became healthy (slow start).
    pub healthy_since_ms: AtomicU64,
    /// Removed by a reload and draining: no new requests or connections.
    pub draining: AtomicBool,
    /// Unix milliseconds when the drain ends (0 while not draining).
    pub drain_deadline_ms: AtomicU64,
    /// Fired when the deregistration delay ends: open work on this target stops.
    pub killed: AtomicBool,
    pub kill: tokio::sync::Notify,
    /// State, reason, description and since, for the status API. Written by the
    /// target's health worker (off the data path), read by the admin API.
    pub detail: std::sync::Mutex<crate::health::state::Health>,
}

/// Health states as stored in [`TargetState::health`].
pub const INITIAL: u8 = 0;
pub const HEALTHY: u8 = 1;
pub const UNHEALTHY: u8 = 2;
pub const DRAINING: u8 = 3;

impl TargetState {
    fn new(group: &str, address: &str) -> TargetState {
        TargetState {
            group: group.to_owned(),
            address: address.to_owned(),
            in_flight: AtomicU32::new(0),
            active_connections: AtomicU32::new(0),
            since: SystemTime::now(),
            cookie_id: crate::balancer::cookie::opaque_id(&[group, address]),
            health: AtomicU8::new(INITIAL),
            healthy_since_ms: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            drain_deadline_ms: AtomicU64::new(0),
            killed: AtomicBool::new(false),
            kill: tokio::sync::Notify::new(),
            detail: std::sync::Mutex::new(crate::health::state::Health::new(SystemTime::now())),
        }
    }

    /// A copy of the health detail (a poisoned lock still yields its value).
    pub fn health_detail(&self) -> crate::health::state::Health {
        match self.detail.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.health.load(Ordering::Relaxed) == HEALTHY
    }

    pub fn is_unhealthy(&self) -> bool {
        self.health.load(Ordering::Relaxed) == UNHEALTHY
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Waits until the deregistration delay of this (draining) target ends.
    ///
    /// Raced against every request and connection to the target, so it is
    /// polled on each wake of that work: the wait registers with `kill` (a
    /// lock inside [`tokio::sync::Notify`], shared by all workers) once, and
    /// later polls only read the flag while the task's waker stays the same.
    pub async fn killed(&self) {
        let notified = self.kill.notified();
        tokio::pin!(notified);
        let mut registered: Option<std::task::Waker> = None;
        std::future::poll_fn(|cx| {
            // `killed` is set before `kill` wakes the waiters.
            if self.killed.load(Ordering::Acquire) {
                return std::task::Poll::Ready(());
            }
            if registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                return std::task::Poll::Pending;
            }
            if notified.as_mut().poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
            registered = Some(cx.waker().clone());
            std::task::Poll::Pending
        })
        .await
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// Decrements an in-flight count when dropped (also on early return or error).
pub struct InFlight(Arc<TargetState>);

impl InFlight {
    pub fn new(t: &Arc<TargetState>) -> InFlight {
        t.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(t.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts a connection from the balancer to a target in the target's
/// `active_connections` while it carries a request or a tunnel (dropped: done).
pub struct ActiveConnection<'a>(&'a TargetState);

impl<'a> ActiveConnection<'a> {
    pub fn new(t: &'a TargetState) -> ActiveConnection<'a> {
        t.active_connections.fetch_add(1, Ordering::Relaxed);
        ActiveConnection(t)
    }
}

impl Drop for ActiveConnection<'_> {
    fn drop(&mut self) {
        self.0.active_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runtime state of a target group that survives reloads (by group name).
pub struct GroupState {
    /// The one round-robin rotation of this group, shared by all workers.
    pub rotation: std::sync::atomic::AtomicUsize,
    pub metrics: GroupMetrics,
}

/// Runtime state of a listener that survives reloads (by listener name).
pub struct ListenerState {
    pub active: std::sync::atomic::AtomicU64,
    pub metrics: ListenerMetrics,
}

/// Everything keyed by stable identity. Touched only by the control thread, at
/// start and at reload; the data path sees `Arc`s to the entries.
#[derive(Default)]
pub struct Registry {
    targets: HashMap<(String, String), Arc<TargetState>>,
    groups: HashMap<String, Arc<GroupState>>,
    listeners: HashMap<String, Arc<ListenerState>>,
    /// The per-process cookie key used while no `node.secret_file` is set.
    random_key: Option<Arc<crate::balancer::cookie::CookieKey>>,
    /// The running access log (restarted when its settings change).
    access_log: Option<crate::access_log::AccessLog>,
}

impl Registry {
    /// The state of a target: the same object while the target stays (or comes
    /// back while draining). A target whose deregistration delay has ended has
    /// left, even while its entry waits for the next [`Registry::prune`]: one
    /// re-added after that is new (`initial`, not killed).
    pub fn target(&mut self, group: &str, address: &str) -> Arc<TargetState> {
        let st = self
            .targets
            .entry((group.to_owned(), address.to_owned()))
            .or_insert_with(|| Arc::new(TargetState::new(group, address)));
        if st.killed.load(Ordering::Acquire) {
            *st = Arc::new(TargetState::new(group, address));
        }
        st.clone()
    }

    pub fn group(&mut self, name: &str) -> Arc<GroupState> {
        self.groups
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(GroupState {
                    rotation: Default::default(),
                    metrics: GroupMetrics::new(name),
                })
            })
            .clone()
    }

    pub fn listener(&mut self, name: &str) -> Arc<ListenerState> {
        self.listeners
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(ListenerState {
                    active: Default::default(),
                    metrics: ListenerMetrics::new(name),
                })
            })
            .clone()
    }

    /// The sticky-cookie key: from the node secret file, else one random key for
    /// the life of the process (so a reload does not invalidate cookies).
    pub fn cookie_key(
        &mut self,
        secret_file: Option<&std::path::Path>,
    ) -> Arc<crate::balancer::cookie::CookieKey> {
        use crate::balancer::cookie::CookieKey;
        if let Some(path) = secret_file {
            match crate::util::read_capped(path, crate::util::MAX_SECRET_FILE_BYTES) {
                Ok(bytes) => {
                    let trimmed = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
                    return Arc::new(CookieKey::new(trimmed));
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "cannot read node.secret_file; using a per-process key")
                }
            }
        }
        self.random_key
            .get_or_insert_with(|| Arc::new(CookieKey::random()))
            .clone()
    }

    /// The access log for these settings: the running one when they did not
    /// change, else a new one (the old one is flushed and closed).
    pub fn access_log(
        &mut self,
        settings: &crate::snapshot::AccessLogSettings,
    ) -> Option<crate::access_log::AccessLog> {
        if let Some(log) = &self.access_log {
            if log.settings().same_output(settings) {
                return Some(log.clone());
            }
        }
        if let Some(old) = self.access_log.take() {
            old.close();
        }
        match crate::access_log::AccessLog::start(settings) {
            Ok(log) => self.access_log = log,
            Err(e) => {
                tracing::error!(error = %e, "cannot open the access log; requests are not logged")
            }
        }
        self.access_log.clone()
    }

    /// Opens the access log `settings` asks for when it is not the running one, so
    /// a reload fails (and nothing changes) when the new file cannot be opened.
    /// `Ok(None)`: the running log stays; `Ok(Some(log))`: hand it to
    /// [`Registry::replace_access_log`] once the reload is certain (`None` inside:
    /// logging turned off).
    #[allow(clippy::option_option)]
    pub fn open_changed_access_log(
        &self,
        settings: &crate::snapshot::AccessLogSettings,
    ) -> std::io::Result<Option<Option<crate::access_log::AccessLog>>> {
        let running = self.access_log.as_ref().map(|l| l.settings());
        let off = matches!(settings.dest, crate::snapshot::AccessLogDest::Off);
        match running {
            Some(r) if r.same_output(settings) => Ok(None),
            None if off => Ok(None),
            _ => crate::access_log::AccessLog::start(settings).map(Some),
        }
    }

    /// Closes the running access log (flushing it) and puts `log` in its place.
    pub fn replace_access_log(&mut self, log: Option<crate::access_log::AccessLog>) {
        if let Some(old) = self.access_log.take() {
            old.close();
        }
        self.access_log = log;
    }

    /// Flushes and closes the access log (shutdown).
    pub fn close_access_log(&mut self) {
        if let Some(log) = self.access_log.take() {
            log.close();
        }
    }

    /// Reopens the access log file (SIGHUP, after logrotate).
    pub fn reopen_access_log(&self) {
        if let Some(log) = &self.access_log {
            log.reopen();
        }
    }

    /// Forgets entries no longer referenced by the published view (called after a
    /// reload; a draining target is still referenced by its connections).
    pub fn prune(&mut self) {
        self.targets.retain(|_, t| Arc::strong_count(t) > 1);
        self.groups.retain(|_, g| Arc::strong_count(g) > 1);
        self.listeners.retain(|_, l| Arc::strong_count(l) > 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_survives_and_unused_entries_are_pruned() {
        let mut r = Registry::default();
        let a = r.target("web", "127.0.0.1:1");
        let _g = r.group("web");
        a.in_flight.fetch_add(3, Ordering::Relaxed);
        let again = r.target("web", "127.0.0.1:1");
        assert!(Arc::ptr_eq(&a, &again));
        assert_eq!(again.in_flight(), 3);
        drop(again);
        let other = r.target("api", "127.0.0.1:1");
        assert!(!Arc::ptr_eq(&a, &other));
        drop(other);
        r.prune();
        // "api" was dropped by everyone: gone; "web" is still held by `a`.
        assert_eq!(r.targets.len(), 1);
        let _ = r.group("web");
    }

    #[test]
    fn a_target_whose_drain_ended_comes_back_new() {
        let mut r = Registry::default();
        let a = r.target("web", "127.0.0.1:1");
        a.health.store(HEALTHY, Ordering::Relaxed);
        a.draining.store(true, Ordering::Relaxed);
        // Re-added while draining: the same state.
        assert!(Arc::ptr_eq(&a, &r.target("web", "127.0.0.1:1")));
        a.killed.store(true, Ordering::Release);
        let back = r.target("web", "127.0.0.1:1");
        assert!(!Arc::ptr_eq(&a, &back));
        assert!(!back.killed.load(Ordering::Acquire) && !back.is_draining());
        assert_eq!(back.health.load(Ordering::Relaxed), INITIAL);
        assert!(Arc::ptr_eq(&back, &r.target("web", "127.0.0.1:1")));
    }

    #[test]
    fn in_flight_guard_counts_down_on_drop() {
        let mut r = Registry::default();
        let t = r.target("g", "a:1");
        {
            let _one = InFlight::new(&t);
            let _two = InFlight::new(&t);
            assert_eq!(t.in_flight(), 2);
        }
        assert_eq!(t.in_flight(), 0);
    }
}
