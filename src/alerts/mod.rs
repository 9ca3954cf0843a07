//! Alert email (SPEC §6). Health transitions and failed reloads become [`Event`]s;
//! each is written durably to the spool when emitted, events of one
//! `batch_window` go out as one plain-text digest, and sends go through an
//! SES-compatible SMTP relay under the account's pacing and rolling daily quota,
//! retried with backoff on 4xx answers, refused or dropped connections and
//! timeouts, and dropped (logged with a hint) on 5xx answers.
//!
//! Layout: `spool` owns the files, `digest` the batching and the text,
//! `quota` pacing, the rolling 24 h quota and the backoff schedule (all pure,
//! taking `now`), `relay` the lettre transport and what its answers mean, and
//! `runner` the one task that ties them together on the control runtime.
//!
//! Invariants: an event leaves the spool only after the relay's 250 for the
//! message that carried it, or when it is dropped (daily quota, a 5xx), so a
//! crash at any moment loses none; a message resent after a crash holds the same
//! events and carries the same `X-Fulcrum-Alert-Id`. Nothing here runs on, or
//! waits for, the data path.

mod digest;
mod quota;
mod relay;
mod runner;
mod spool;

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::snapshot::{AlertEvent, AlertSettings};

pub use relay::send_test;

/// An alert event (SPEC §6): what happened, when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A target failed `unhealthy_threshold` checks in a row. `reason` is the ALB
    /// reason code (`Target.Timeout`...), `description` its text.
    TargetUnhealthy {
        group: String,
        target: String,
        zone: String,
        reason: String,
        description: String,
        consecutive_failures: u32,
        at: SystemTime,
    },
    /// A target recovered from `unhealthy` (a first pass from `initial` is not an event).
    TargetHealthy {
        group: String,
        target: String,
        zone: String,
        at: SystemTime,
    },
    /// Every target of the group is unhealthy: the group fails open.
    AllTargetsUnhealthy { group: String, at: SystemTime },
    /// A reload was refused; the previous config keeps serving.
    ConfigReloadFailed { errors: Vec<String>, at: SystemTime },
}

impl Event {
    /// The `alerts.events` name this event is filtered by.
    pub fn kind(&self) -> AlertEvent {
        match self {
            Event::TargetUnhealthy { .. } => AlertEvent::TargetUnhealthy,
            Event::TargetHealthy { .. } => AlertEvent::TargetHealthy,
            Event::AllTargetsUnhealthy { .. } => AlertEvent::AllTargetsUnhealthy,
            Event::ConfigReloadFailed { .. } => AlertEvent::ConfigReloadFailed,
        }
    }

    /// When it happened.
    pub fn at(&self) -> SystemTime {
        match self {
            Event::TargetUnhealthy { at, .. }
            | Event::TargetHealthy { at, .. }
            | Event::AllTargetsUnhealthy { at, .. }
            | Event::ConfigReloadFailed { at, .. } => *at,
        }
    }

    /// The target group it concerns, if any.
    pub fn group(&self) -> Option<&str> {
        match self {
            Event::TargetUnhealthy { group, .. }
            | Event::TargetHealthy { group, .. }
            | Event::AllTargetsUnhealthy { group, .. } => Some(group),
            Event::ConfigReloadFailed { .. } => None,
        }
    }
}

/// Knobs that are not in the config file. [`Tuning::default`] is what `fulcrum
/// run` uses; tests shorten the backoff.
#[derive(Clone, Debug, PartialEq)]
pub struct Tuning {
    /// Waits before the 1st, 2nd... retry of a message; the last repeats.
    /// Default 5 s, 10 s, 30 s, then every 5 minutes (SPEC §6).
    pub backoff: Vec<Duration>,
    /// A digest holds at most this many events; more start the next message.
    /// Default 200.
    pub max_events_per_message: usize,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            backoff: quota::DEFAULT_BACKOFF.to_vec(),
            max_events_per_message: 200,
        }
    }
}

/// The alerter: a cheap `Clone` handle to the task that batches and sends.
#[derive(Clone)]
pub struct Alerts {
    inner: Arc<Inner>,
}

struct Inner {
    spool: spool::Spool,
    queued: Arc<Queued>,
    events: Mutex<Vec<AlertEvent>>,
    tx: mpsc::UnboundedSender<runner::Cmd>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// Events in the spool (`fulcrum_alerts_queued`), kept here and mirrored into the gauge.
pub(crate) struct Queued {
    n: AtomicUsize,
    gauge: metrics::Gauge,
}

impl Queued {
    fn new() -> Queued {
        Queued {
            n: AtomicUsize::new(0),
            gauge: metrics::gauge!(crate::metrics::ALERTS_QUEUED),
        }
    }

    pub(crate) fn set(&self, n: usize) {
        self.n.store(n, Ordering::Relaxed);
        self.gauge.set(n as f64);
    }

    pub(crate) fn add(&self, n: usize) {
        let v = self.n.fetch_add(n, Ordering::Relaxed) + n;
        self.gauge.set(v as f64);
    }

    pub(crate) fn sub(&self, n: usize) {
        let prev = self
            .n
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            })
            .unwrap_or(0);
        self.gauge.set(prev.saturating_sub(n) as f64);
    }

    pub(crate) fn get(&self) -> usize {
        self.n.load(Ordering::Relaxed)
    }
}

impl Alerts {
    /// Starts the alerter on the current tokio runtime (the control thread's
    /// current-thread runtime): creates `spool_dir` if needed, loads the events
    /// already spooled (they are sent first), sets the metrics to 0. `node_name`
    /// goes into subjects.
    pub async fn start(settings: AlertSettings, node_name: String) -> io::Result<Alerts> {
        Alerts::start_with(settings, node_name, Tuning::default()).await
    }

    /// [`Alerts::start`] with non-default [`Tuning`] (tests).
    pub async fn start_with(
        settings: AlertSettings,
        node_name: String,
        tuning: Tuning,
    ) -> io::Result<Alerts> {
        crate::install_crypto_provider();
        // The series exist even when the spool cannot be opened (SPEC §9), and
        // that failure counts as a spool error.
        zero_metrics();
        let queued = Arc::new(Queued::new());
        queued.set(0);
        let opened = spool::Spool::open(&settings.spool_dir).and_then(|s| {
            let loaded = s.load()?;
            Ok((s, loaded))
        });
        let (spool, loaded) = opened.inspect_err(|_| spool_error())?;
        let ledger = spool.load_ledger();
        queued.set(loaded.event_count());
        if loaded.event_count() > 0 {
            tracing::info!(
                spool_dir = %settings.spool_dir.display(),
                messages = loaded.batches.len(),
                events = loaded.event_count(),
                "alerts: undelivered alerts found in the spool; sending them first"
            );
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let events = settings.events.clone();
        let runner = runner::Runner::new(
            settings,
            node_name,
            tuning,
            spool.clone(),
            queued.clone(),
            rx,
            loaded,
            ledger,
        );
        let task = tokio::spawn(runner.run());
        Ok(Alerts {
            inner: Arc::new(Inner {
                spool,
                queued,
                events: Mutex::new(events),
                tx,
                task: Mutex::new(Some(task)),
            }),
        })
    }

    /// Records an event: filtered by `alerts.events`, then written durably to the
    /// spool (temp file, fsync, rename, fsync of the directory) before this
    /// returns, then handed to the sender. Callable from any thread; never waits
    /// for the relay. Events are rare, so the fsync is paid by the caller.
    pub fn emit(&self, event: Event) {
        let wanted = match self.inner.events.lock() {
            Ok(e) => e.contains(&event.kind()),
            Err(p) => p.into_inner().contains(&event.kind()),
        };
        if !wanted {
            return;
        }
        let ev = spool::SpooledEvent {
            id: new_event_id(SystemTime::now()),
            event,
        };
        let durable = match self.inner.spool.write_event(&ev) {
            Ok(()) => {
                self.inner.queued.add(1);
                true
            }
            Err(e) => {
                spool_error();
                tracing::error!(
                    spool_dir = %self.inner.spool.dir().display(),
                    error = %e,
                    "alerts: cannot write the event to the spool; it will be sent from memory but is lost if the process stops first"
                );
                false
            }
        };
        // After `stop` the receiver is gone: the spooled event goes at the next start.
        let _ = self
            .inner
            .tx
            .send(runner::Cmd::Event(digest::Entry { ev, durable }));
    }

    /// New settings after a reload (relay, recipients, quotas, window...). Spooled
    /// events are kept; a changed `spool_dir` takes effect at the next start.
    pub fn update(&self, settings: AlertSettings, node_name: String) {
        match self.inner.events.lock() {
            Ok(mut e) => *e = settings.events.clone(),
            Err(p) => *p.into_inner() = settings.events.clone(),
        }
        let _ = self
            .inner
            .tx
            .send(runner::Cmd::Update(Box::new(settings), node_name));
    }

    /// Stops sending. What is not delivered stays in the spool for the next start;
    /// a message cut off mid-send is sent again then, with the same id.
    pub async fn stop(self) {
        let task = match self.inner.task.lock() {
            Ok(mut t) => t.take(),
            Err(p) => p.into_inner().take(),
        };
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// Events in the spool now (what `fulcrum_alerts_queued` shows).
    pub fn queued(&self) -> usize {
        self.inner.queued.get()
    }
}

/// Makes the alert series exist at 0 once alerts are configured (SPEC §9).
fn zero_metrics() {
    use crate::metrics::{ALERTS_FAILED, ALERTS_SENT, ALERTS_SPOOL_ERRORS};
    metrics::counter!(ALERTS_SENT).increment(0);
    metrics::counter!(ALERTS_SPOOL_ERRORS).increment(0);
    for kind in relay::FailKind::ALL {
        metrics::counter!(ALERTS_FAILED, "kind" => kind.label()).increment(0);
    }
}

/// Counts a failed spool write or removal (`fulcrum_alerts_spool_errors_total`);
/// the caller logs it.
pub(crate) fn spool_error() {
    metrics::counter!(crate::metrics::ALERTS_SPOOL_ERRORS).increment(1);
}

/// A unique, time-ordered event id: `<unix nanos, 20 digits>-<64 random bits>`.
fn new_event_id(now: SystemTime) -> String {
    let nanos = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{nanos:020}-{:016x}", fastrand::u64(..))
}

#[cfg(test)]
mod relay_tests;
#[cfg(test)]
mod tests;
