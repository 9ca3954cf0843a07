//! SES's sending limits and the retry schedule, pure (they take `now`).
//!
//! - [`Pacer`]: `max_send_rate` as strict pacing: after a message to N recipients
//!   the next may go N / rate seconds later (SES counts recipients, not messages).
//! - [`DailyQuota`]: `max_per_day` recipients over a rolling 24 hours, as SES
//!   counts them; wall-clock times, because the ledger is persisted in the spool
//!   so that a restart does not reset it.
//! - [`Backoff`]: 5 s, 10 s, 30 s, then every 5 minutes, reset by an answer
//!   that ends the message (a 250 or a 5xx).

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

/// SES's rolling window.
pub(crate) const DAY: Duration = Duration::from_secs(24 * 3600);

/// SPEC §6: 5 s, 10 s, 30 s, then every 5 minutes.
pub(crate) const DEFAULT_BACKOFF: [Duration; 4] = [
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(30),
    Duration::from_secs(300),
];

/// Strict pacing of sends.
#[derive(Debug, Default)]
pub(crate) struct Pacer {
    next: Option<Instant>,
}

impl Pacer {
    /// The earliest time the next message may go; `None`: now.
    pub fn ready_at(&self) -> Option<Instant> {
        self.next
    }

    /// At start: the spacing after the last send the ledger remembers still holds
    /// (a restart does not reset the pacing).
    pub fn resume(
        sends: &[(SystemTime, u32)],
        rate: f64,
        now: Instant,
        now_sys: SystemTime,
    ) -> Pacer {
        // A send stamped in the future (the clock went back) waits no longer
        // than its own spacing.
        let next = sends.iter().max_by_key(|s| s.0).and_then(|&(at, n)| {
            let gap = spacing(n, rate);
            let free_at = at + gap;
            free_at
                .duration_since(now_sys)
                .ok()
                .map(|wait| now + wait.min(gap))
        });
        Pacer { next }
    }

    /// A message to `recipients` was accepted at `now`.
    pub fn sent(&mut self, now: Instant, recipients: u32, rate: f64) {
        self.next = Some(now + spacing(recipients, rate));
    }
}

/// `recipients / rate` seconds, at most a day (a rate of 0 or NaN would be a
/// config bug; it waits a day rather than panic).
pub(crate) fn spacing(recipients: u32, rate: f64) -> Duration {
    let secs = f64::from(recipients) / rate;
    if secs.is_finite() && secs >= 0.0 {
        Duration::try_from_secs_f64(secs).map_or(DAY, |d| d.min(DAY))
    } else {
        DAY
    }
}

/// Recipients of accepted messages over the last 24 hours.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct DailyQuota {
    sends: VecDeque<(SystemTime, u32)>,
}

impl DailyQuota {
    /// From the persisted ledger, dropping what is older than a day.
    pub fn from_ledger(sends: Vec<(SystemTime, u32)>, now: SystemTime) -> DailyQuota {
        let mut sends = sends;
        sends.sort_by_key(|s| s.0);
        let mut q = DailyQuota {
            sends: sends.into(),
        };
        q.prune(now);
        q
    }

    pub fn ledger(&self) -> Vec<(SystemTime, u32)> {
        self.sends.iter().copied().collect()
    }

    /// Recipients counted at `now`. Sends stamped in the future (the clock went
    /// back) still count: the quota errs on the side of SES.
    pub fn used(&self, now: SystemTime) -> u64 {
        self.sends
            .iter()
            .filter(|(t, _)| in_window(*t, now))
            .map(|(_, n)| u64::from(*n))
            .sum()
    }

    /// Whether a message to `recipients` fits under `max` at `now`.
    pub fn allows(&self, now: SystemTime, recipients: u32, max: u32) -> bool {
        self.used(now) + u64::from(recipients) <= u64::from(max)
    }

    /// When a message to `recipients` would fit again (`None`: never, more
    /// recipients than `max`).
    pub fn fits_at(&self, now: SystemTime, recipients: u32, max: u32) -> Option<SystemTime> {
        if recipients > max {
            return None;
        }
        let mut used = self.used(now);
        if used + u64::from(recipients) <= u64::from(max) {
            return Some(now);
        }
        for (t, n) in self.sends.iter().filter(|(t, _)| in_window(*t, now)) {
            used -= u64::from(*n);
            if used + u64::from(recipients) <= u64::from(max) {
                return Some(*t + DAY);
            }
        }
        None
    }

    /// A message to `recipients` was accepted at `now`.
    pub fn record(&mut self, now: SystemTime, recipients: u32) {
        self.prune(now);
        self.sends.push_back((now, recipients));
    }

    fn prune(&mut self, now: SystemTime) {
        self.sends.retain(|(t, _)| in_window(*t, now));
    }
}

/// Within (now - 24 h, ...]: a send exactly 24 h old no longer counts.
fn in_window(t: SystemTime, now: SystemTime) -> bool {
    match now.duration_since(t) {
        Ok(age) => age < DAY,
        Err(_) => true,
    }
}

/// Retries of the message at the head of the queue.
#[derive(Debug)]
pub(crate) struct Backoff {
    steps: Vec<Duration>,
    failures: u32,
}

impl Backoff {
    pub fn new(steps: Vec<Duration>) -> Backoff {
        let steps = if steps.is_empty() {
            DEFAULT_BACKOFF.to_vec()
        } else {
            steps
        };
        Backoff { steps, failures: 0 }
    }

    /// Counts a failure; returns how long to wait before the next try.
    pub fn failed(&mut self) -> Duration {
        let i = (self.failures as usize).min(self.steps.len() - 1);
        self.failures = self.failures.saturating_add(1);
        self.steps[i]
    }

    /// Failures since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    #[test]
    fn pacing_waits_recipients_over_rate() {
        let start = Instant::now();
        let mut p = Pacer::default();
        assert_eq!(p.ready_at(), None);
        p.sent(start, 1, 1.0);
        assert_eq!(p.ready_at(), Some(start + Duration::from_secs(1)));
        p.sent(start, 3, 2.0);
        assert_eq!(p.ready_at(), Some(start + Duration::from_millis(1500)));
        p.sent(start, 1, 0.5);
        assert_eq!(p.ready_at(), Some(start + Duration::from_secs(2)));
        p.sent(start, 50, 14.0);
        let d = p.ready_at().unwrap() - start;
        assert!((d.as_secs_f64() - 50.0 / 14.0).abs() < 1e-6, "{d:?}");
    }

    #[test]
    fn pacing_resumes_from_the_ledger_after_a_restart() {
        let now = Instant::now();
        let sys = SystemTime::now();
        // 4 recipients at 1/s, 1 s ago: 3 s still to wait; the older send is ignored.
        let sends = [
            (sys - Duration::from_secs(60), 10),
            (sys - Duration::from_secs(1), 4),
        ];
        let p = Pacer::resume(&sends, 1.0, now, sys);
        assert_eq!(p.ready_at(), Some(now + Duration::from_secs(3)));
        // Long over, or nothing sent: no wait.
        let old = [(sys - Duration::from_secs(10), 4)];
        assert_eq!(Pacer::resume(&old, 1.0, now, sys).ready_at(), None);
        assert_eq!(Pacer::resume(&[], 1.0, now, sys).ready_at(), None);
        // Stamped an hour ahead (the clock went back): still only its spacing.
        let ahead = [(sys + Duration::from_secs(3600), 4)];
        assert_eq!(
            Pacer::resume(&ahead, 1.0, now, sys).ready_at(),
            Some(now + Duration::from_secs(4))
        );
    }

    #[test]
    fn pacing_never_panics_on_odd_rates() {
        assert_eq!(spacing(1, 0.0), DAY);
        assert_eq!(spacing(1, f64::NAN), DAY);
        assert_eq!(spacing(1, -1.0), DAY);
        assert_eq!(spacing(1, 1e-12), DAY);
        assert_eq!(spacing(0, 1.0), Duration::ZERO);
        assert_eq!(spacing(1, f64::INFINITY), Duration::ZERO);
    }

    #[test]
    fn daily_quota_counts_recipients_over_a_rolling_day() {
        let mut q = DailyQuota::default();
        assert!(q.allows(t(0), 2, 3));
        q.record(t(0), 2);
        assert_eq!(q.used(t(0)), 2);
        assert!(q.allows(t(10), 1, 3));
        assert!(!q.allows(t(10), 2, 3));
        q.record(t(3600), 1);
        assert!(!q.allows(t(3601), 1, 3));
        // The first send leaves the window exactly 24 h later.
        assert!(!q.allows(t(86_399), 1, 3));
        assert!(q.allows(t(86_400), 2, 3));
        assert!(!q.allows(t(86_400), 3, 3));
        assert!(q.allows(t(86_400 + 3600), 3, 3));
        assert_eq!(q.used(t(86_400 + 3600)), 0);
    }

    #[test]
    fn daily_quota_tells_when_it_frees() {
        let mut q = DailyQuota::default();
        q.record(t(0), 1);
        q.record(t(100), 1);
        q.record(t(200), 1);
        assert_eq!(q.fits_at(t(300), 1, 4), Some(t(300)));
        assert_eq!(q.fits_at(t(300), 1, 3), Some(t(86_400)));
        assert_eq!(q.fits_at(t(300), 2, 3), Some(t(86_500)));
        assert_eq!(q.fits_at(t(300), 4, 3), None);
    }

    #[test]
    fn daily_quota_survives_a_restart_through_the_ledger() {
        let mut q = DailyQuota::default();
        q.record(t(0), 1);
        q.record(t(50_000), 2);
        let back = DailyQuota::from_ledger(q.ledger(), t(90_000));
        // The send at t(0) aged out while "down"; the other still counts.
        assert_eq!(back.ledger(), vec![(t(50_000), 2)]);
        assert_eq!(back.used(t(90_000)), 2);
        assert!(!back.allows(t(90_000), 1, 2));
    }

    #[test]
    fn daily_quota_counts_sends_from_the_future() {
        let mut q = DailyQuota::default();
        q.record(t(7200), 1);
        // The clock stepped back an hour.
        assert_eq!(q.used(t(3600)), 1);
        assert!(!q.allows(t(0), 1, 1));
    }

    #[test]
    fn daily_quota_ledger_is_pruned_on_record() {
        let mut q = DailyQuota::default();
        for i in 0..100 {
            q.record(t(i * 3600), 1);
        }
        assert_eq!(q.ledger().len(), 24);
        assert_eq!(q.used(t(99 * 3600)), 24);
    }

    #[test]
    fn backoff_is_5_10_30_then_every_5_minutes() {
        let mut b = Backoff::new(DEFAULT_BACKOFF.to_vec());
        let waits: Vec<u64> = (0..7).map(|_| b.failed().as_secs()).collect();
        assert_eq!(waits, [5, 10, 30, 300, 300, 300, 300]);
        assert_eq!(b.failures(), 7);
        b.reset();
        assert_eq!(b.failed(), Duration::from_secs(5));
    }

    #[test]
    fn backoff_custom_and_empty_schedules() {
        let mut b = Backoff::new(vec![Duration::from_millis(100)]);
        assert_eq!(b.failed(), Duration::from_millis(100));
        assert_eq!(b.failed(), Duration::from_millis(100));
        let mut b = Backoff::new(Vec::new());
        assert_eq!(b.failed(), Duration::from_secs(5));
    }
}
