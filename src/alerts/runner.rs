//! The alert task on the control runtime: takes emitted events into the open
//! window, closes windows into spooled messages, and sends the outbox in order,
//! one message at a time, under pacing, the daily quota and the backoff.
//!
//! A closed message is written to the spool as one file before its first send
//! and removed only after the relay's 250 (or a drop), so a resend after a crash
//! carries the same events and the same `X-Fulcrum-Alert-Id`. The next window
//! closes only once the outbox is empty: while the relay is down, one message is
//! retried and one collects.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::mpsc;

use super::digest::{self, Batcher, Entry};
use super::quota::{Backoff, DailyQuota, Pacer};
use super::relay::{self, Failure, Relay};
use super::spool::{Batch, Loaded, Spool, SpooledEvent};
use super::{Queued, Tuning};
use crate::metrics::{ALERTS_DROPPED, ALERTS_FAILED, ALERTS_SENT};
use crate::snapshot::AlertSettings;
use crate::util::rfc3339;

/// What the handle tells the task.
pub(crate) enum Cmd {
    Event(Entry),
    Update(Box<AlertSettings>, String),
}

/// A closed message waiting for the relay.
struct Outgoing {
    batch: Batch,
    /// Whether its message file is in the spool (else its events' own files are).
    persisted: bool,
    /// How many of its events `queued` counts (those in the spool).
    counted: usize,
}

pub(crate) struct Runner {
    settings: AlertSettings,
    node: String,
    spool: Spool,
    queued: Arc<Queued>,
    rx: mpsc::UnboundedReceiver<Cmd>,
    batcher: Batcher,
    outbox: VecDeque<Outgoing>,
    pacer: Pacer,
    quota: DailyQuota,
    backoff: Backoff,
    retry_at: Option<Instant>,
    relay: Option<Relay>,
}

impl Runner {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: AlertSettings,
        node: String,
        tuning: Tuning,
        spool: Spool,
        queued: Arc<Queued>,
        rx: mpsc::UnboundedReceiver<Cmd>,
        loaded: Loaded,
        ledger: Vec<(SystemTime, u32)>,
    ) -> Runner {
        let now = Instant::now();
        let mut batcher = Batcher::new(settings.batch_window, tuning.max_events_per_message);
        for ev in loaded.events {
            batcher.push(now, Entry { ev, durable: true });
        }
        // Found at start: they have waited long enough.
        batcher.expedite(now);
        let outbox = loaded
            .batches
            .into_iter()
            .map(|batch| Outgoing {
                counted: batch.events.len(),
                batch,
                persisted: true,
            })
            .collect();
        let pacer = Pacer::resume(&ledger, settings.max_send_rate, now, SystemTime::now());
        Runner {
            quota: DailyQuota::from_ledger(ledger, SystemTime::now()),
            settings,
            node,
            spool,
            queued,
            rx,
            batcher,
            outbox,
            pacer,
            backoff: Backoff::new(tuning.backoff),
            retry_at: None,
            relay: None,
        }
    }

    pub async fn run(mut self) {
        loop {
            let now = Instant::now();
            if self.outbox.is_empty() {
                if let Some(entries) = self.batcher.take_due(now) {
                    self.close(entries);
                }
            }
            let ready = self.send_ready_at(now);
            if ready.is_some_and(|r| r <= now) {
                self.attempt().await;
                continue;
            }
            let wake = match (ready, self.outbox.is_empty()) {
                (Some(r), _) => Some(r),
                (None, true) => self.batcher.due_at(),
                (None, false) => None,
            };
            tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => self.handle(cmd),
                    None => return,
                },
                _ = sleep_until(wake), if wake.is_some() => {}
            }
        }
    }

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Event(e) => self.batcher.push(Instant::now(), e),
            Cmd::Update(settings, node) => {
                if settings.spool_dir != self.settings.spool_dir {
                    tracing::warn!(
                        spool_dir = %self.settings.spool_dir.display(),
                        new = %settings.spool_dir.display(),
                        "alerts: spool_dir changes at the next start; the current one stays in use"
                    );
                }
                let relay_changed = settings.smtp != self.settings.smtp
                    || settings.from != self.settings.from
                    || settings.to != self.settings.to;
                if relay_changed {
                    // New relay or credentials: try the waiting message now.
                    self.relay = None;
                    self.backoff.reset();
                    self.retry_at = None;
                }
                self.batcher.set_window(settings.batch_window);
                let spool_dir = self.settings.spool_dir.clone();
                self.settings = *settings;
                self.settings.spool_dir = spool_dir;
                self.node = node;
            }
        }
    }

    /// When the head of the outbox may go (`now` when nothing holds it back);
    /// `None` when the outbox is empty.
    fn send_ready_at(&self, now: Instant) -> Option<Instant> {
        self.outbox.front()?;
        let at = [self.pacer.ready_at(), self.retry_at]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(now);
        Some(at)
    }

    /// Turns the window's events into one spooled message.
    fn close(&mut self, entries: Vec<Entry>) {
        let durable = entries.iter().filter(|e| e.durable).count();
        let events: Vec<SpooledEvent> = entries.into_iter().map(|e| e.ev).collect();
        let batch = Batch {
            id: digest::alert_id(&events),
            created: SystemTime::now(),
            events,
        };
        let n = batch.events.len();
        let (persisted, counted) = match self.spool.write_batch(&batch) {
            Ok(()) => {
                self.queued.add(n - durable);
                (true, n)
            }
            Err(e) => {
                super::spool_error();
                tracing::error!(error = %e, alert_id = %batch.id, "alerts: cannot write the message to the spool; sending it from memory");
                (false, durable)
            }
        };
        tracing::debug!(alert_id = %batch.id, events = n, "alerts: batch window closed");
        self.outbox.push_back(Outgoing {
            batch,
            persisted,
            counted,
        });
    }

    /// One try at the head of the outbox.
    async fn attempt(&mut self) {
        let Some(head) = self.outbox.front() else {
            return;
        };
        let recipients = u32::try_from(self.settings.to.len()).unwrap_or(u32::MAX);
        let now = SystemTime::now();
        let max = self.settings.max_per_day;
        if !self.quota.allows(now, recipients, max) {
            let subject = digest::subject(&self.node, &head.batch.events);
            let frees = self.quota.fits_at(now, recipients, max).map_or_else(
                || "never (more recipients than max_per_day)".into(),
                rfc3339,
            );
            tracing::warn!(
                alert_id = %head.batch.id,
                events = head.batch.events.len(),
                subject = %subject,
                max_per_day = max,
                quota_frees_at = %frees,
                "alerts: daily quota reached (max_per_day recipients in 24 h); dropping the message"
            );
            self.finish("daily_quota");
            return;
        }
        if self.relay.is_none() {
            match Relay::new(&self.settings.smtp) {
                Ok(r) => self.relay = Some(r),
                Err(f) => return self.failed(f),
            }
        }
        let Some(relay) = self.relay.as_ref() else {
            return;
        };
        let head = &self.outbox[0];
        let subject = digest::subject(&self.node, &head.batch.events);
        let body = digest::body(&self.node, &head.batch.id, &head.batch.events);
        let msg = match relay::message(&self.settings, &head.batch.id, subject, body) {
            Ok(m) => m,
            Err(f) => return self.failed(f),
        };
        match relay.send(msg).await {
            Ok(reply) => {
                let head = &self.outbox[0];
                tracing::info!(
                    alert_id = %head.batch.id,
                    events = head.batch.events.len(),
                    relay = %relay.name(),
                    reply = %reply,
                    "alerts: message accepted by the relay"
                );
                self.quota.record(SystemTime::now(), recipients);
                if let Err(e) = self.spool.save_ledger(&self.quota.ledger()) {
                    super::spool_error();
                    tracing::warn!(error = %e, "alerts: cannot save the daily quota ledger");
                }
                self.pacer
                    .sent(Instant::now(), recipients, self.settings.max_send_rate);
                metrics::counter!(ALERTS_SENT).increment(1);
                self.finish("");
            }
            Err(f) => self.failed(f),
        }
    }

    fn failed(&mut self, f: Failure) {
        metrics::counter!(ALERTS_FAILED, "kind" => f.kind.label()).increment(1);
        let hint = relay::hint(&f, &self.settings).unwrap_or_default();
        let Some(head) = self.outbox.front() else {
            return;
        };
        let relay_name = self
            .relay
            .as_ref()
            .map_or_else(|| self.settings.smtp.host.clone(), |r| r.name().to_owned());
        // The next try builds a fresh transport: re-read secrets, new connection.
        self.relay = None;
        if f.kind.retried() {
            let wait = self.backoff.failed();
            self.retry_at = Some(Instant::now() + wait);
            tracing::warn!(
                alert_id = %head.batch.id,
                relay = %relay_name,
                kind = f.kind.label(),
                reply = %f.reply,
                hint = %hint,
                attempt = self.backoff.failures(),
                retry_in = ?wait,
                "alerts: send failed; will retry"
            );
        } else {
            let subject = digest::subject(&self.node, &head.batch.events);
            tracing::error!(
                alert_id = %head.batch.id,
                relay = %relay_name,
                kind = f.kind.label(),
                reply = %f.reply,
                hint = %hint,
                subject = %subject,
                events = head.batch.events.len(),
                "alerts: the relay rejected the message; not retried, its events are dropped"
            );
            self.finish("rejected");
        }
    }

    /// Removes the head of the outbox from the spool: delivered (`reason` empty)
    /// or dropped for `reason`.
    fn finish(&mut self, reason: &'static str) {
        let Some(out) = self.outbox.pop_front() else {
            return;
        };
        self.backoff.reset();
        self.retry_at = None;
        let removed = if out.persisted {
            self.spool.remove_batch(&out.batch.id)
        } else {
            out.batch
                .events
                .iter()
                .try_for_each(|e| self.spool.remove_event(&e.id))
        };
        if let Err(e) = removed {
            super::spool_error();
            tracing::error!(error = %e, alert_id = %out.batch.id, "alerts: cannot remove a finished message from the spool; it may be sent again at the next start");
        }
        self.queued.sub(out.counted);
        if !reason.is_empty() {
            metrics::counter!(ALERTS_DROPPED, "reason" => reason)
                .increment(out.batch.events.len() as u64);
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
    }
}
