//! Batching and the digest text, pure. The first event opens a window of
//! `batch_window`; when it ends, the window's events become one message. A window
//! that ends while an earlier message still waits for the relay stays open and
//! keeps collecting, so a storm of events, or a relay outage, never becomes a
//! storm of emails: at most one message waits and one collects. A digest holds at
//! most `max_events` events; the rest are due at once as the next message.
//!
//! The message id (`X-Fulcrum-Alert-Id`) is a hash of the events' ids, so the
//! same events always make the same id.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::Event;
use super::spool::SpooledEvent;
use crate::health::state::{REASON_CODE_MISMATCH, REASON_FAILED, REASON_TIMEOUT};
use crate::util::rfc3339;

/// An event waiting in the open window; `durable` is false only when its spool
/// write failed.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Entry {
    pub ev: SpooledEvent,
    pub durable: bool,
}

/// The open window.
#[derive(Debug)]
pub(crate) struct Batcher {
    window: Duration,
    max_events: usize,
    due: Option<Instant>,
    entries: Vec<Entry>,
}

impl Batcher {
    pub fn new(window: Duration, max_events: usize) -> Batcher {
        Batcher {
            window,
            max_events: max_events.max(1),
            due: None,
            entries: Vec::new(),
        }
    }

    /// A new `batch_window` applies to windows opened from now on.
    pub fn set_window(&mut self, window: Duration) {
        self.window = window;
    }

    /// Adds an event; the first one opens the window.
    pub fn push(&mut self, now: Instant, e: Entry) {
        if self.entries.is_empty() {
            self.due = Some(now + self.window);
        }
        self.entries.push(e);
        if self.entries.len() >= self.max_events {
            self.expedite(now);
        }
    }

    /// Makes the open window due now (events found in the spool at start).
    pub fn expedite(&mut self, now: Instant) {
        if !self.entries.is_empty() {
            self.due = Some(self.due.map_or(now, |d| d.min(now)));
        }
    }

    /// When the open window ends; `None` when no window is open.
    pub fn due_at(&self) -> Option<Instant> {
        self.due
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The window's events once it has ended (at most `max_events`; the rest
    /// stay, due at once).
    pub fn take_due(&mut self, now: Instant) -> Option<Vec<Entry>> {
        if self.due? > now {
            return None;
        }
        let rest = if self.entries.len() > self.max_events {
            self.entries.split_off(self.max_events)
        } else {
            Vec::new()
        };
        let taken = std::mem::replace(&mut self.entries, rest);
        self.due = if self.entries.is_empty() {
            None
        } else {
            Some(now)
        };
        Some(taken)
    }
}

/// `X-Fulcrum-Alert-Id` of a message carrying these events: 32 hex digits.
pub(crate) fn alert_id(events: &[SpooledEvent]) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for e in events {
        h.update(e.id.as_bytes());
        h.update(b"\n");
    }
    format!("{:032x}", h.digest128())
}

/// `[fulcrum lb-a] 2 targets unhealthy in web`: the node, then per kind of event
/// the number of distinct targets and the group(s): targets gone unhealthy first
/// (so the subject always starts like SPEC §6's example), then groups with no
/// healthy target left (only when no target went unhealthy in the window), failed
/// reloads, recoveries.
pub(crate) fn subject(node: &str, events: &[SpooledEvent]) -> String {
    let mut all_down = Groups::default();
    let (mut down, mut down_groups) = (Targets::default(), Groups::default());
    let (mut up, mut up_groups) = (Targets::default(), Groups::default());
    let mut reloads = 0usize;
    for e in events {
        match &e.event {
            Event::AllTargetsUnhealthy { group, .. } => all_down.add(group),
            Event::TargetUnhealthy { group, target, .. } => {
                down.add(group, target);
                down_groups.add(group);
            }
            Event::TargetHealthy { group, target, .. } => {
                up.add(group, target);
                up_groups.add(group);
            }
            Event::ConfigReloadFailed { .. } => reloads += 1,
        }
    }
    let mut parts = Vec::new();
    if !down.0.is_empty() {
        parts.push(format!(
            "{} unhealthy in {}",
            plural(down.0.len(), "target", "targets"),
            down_groups.list()
        ));
    }
    // A group left with no healthy target is named only when no target went
    // unhealthy in the window: then the subject reads exactly like SPEC §6's
    // example, and the body lists the `all_targets_unhealthy` event.
    if down.0.is_empty() && !all_down.0.is_empty() {
        parts.push(format!(
            "all targets unhealthy in {}: {}",
            plural(all_down.0.len(), "group", "groups"),
            all_down.list()
        ));
    }
    if reloads > 0 {
        parts.push(format!(
            "{} failed",
            plural(reloads, "config reload", "config reloads")
        ));
    }
    if down.0.is_empty() && all_down.0.is_empty() && !up.0.is_empty() {
        parts.push(format!(
            "{} healthy again in {}",
            plural(up.0.len(), "target", "targets"),
            up_groups.list()
        ));
    } else if !up.0.is_empty() {
        parts.push(format!(
            "{} recovered in {}",
            plural(up.0.len(), "target", "targets"),
            up_groups.list()
        ));
    }
    if parts.is_empty() {
        parts.push("no events".into());
    }
    truncate(
        &format!("[fulcrum {}] {}", clean(node), parts.join("; ")),
        200,
    )
}

/// The plain-text digest: every event with its time, zone, reason, description,
/// consecutive failures and what to check.
pub(crate) fn body(node: &str, alert_id: &str, events: &[SpooledEvent]) -> String {
    let mut b = String::new();
    let first = events.iter().map(|e| e.event.at()).min();
    let last = events.iter().map(|e| e.event.at()).max();
    let _ = write!(
        b,
        "fulcrum node {} reports {}",
        clean(node),
        plural(events.len(), "event", "events")
    );
    match (first, last) {
        (Some(f), Some(l)) if f != l => {
            let _ = writeln!(b, " between {} and {}.", rfc3339(f), rfc3339(l));
        }
        (Some(f), _) => {
            let _ = writeln!(b, " at {}.", rfc3339(f));
        }
        _ => b.push_str(".\n"),
    }
    for (i, e) in events.iter().enumerate() {
        b.push('\n');
        event_text(&mut b, i + 1, &e.event);
    }
    let _ = write!(
        b,
        "\n-- \nX-Fulcrum-Alert-Id: {alert_id} (a repeat of this message carries the same id)\n\
         Sent by fulcrum {} on {}. `fulcrum status` shows the current state of every target.\n",
        crate::VERSION,
        clean(node)
    );
    b
}

fn event_text(b: &mut String, n: usize, e: &Event) {
    match e {
        Event::TargetUnhealthy {
            group,
            target,
            zone,
            reason,
            description,
            consecutive_failures,
            at,
        } => {
            let _ = writeln!(
                b,
                "{n}. TARGET UNHEALTHY: {} in group {} (zone {})",
                clean(target),
                clean(group),
                clean(zone)
            );
            let _ = writeln!(b, "   time:    {}", rfc3339(*at));
            let _ = writeln!(b, "   reason:  {} ({})", clean(reason), clean(description));
            let _ = writeln!(b, "   consecutive failed checks: {consecutive_failures}");
            let _ = writeln!(b, "   check:   {}", reason_hint(reason));
        }
        Event::TargetHealthy {
            group,
            target,
            zone,
            at,
        } => {
            let _ = writeln!(
                b,
                "{n}. TARGET HEALTHY AGAIN: {} in group {} (zone {})",
                clean(target),
                clean(group),
                clean(zone)
            );
            let _ = writeln!(b, "   time:    {}", rfc3339(*at));
            let _ = writeln!(
                b,
                "   it passed healthy_threshold checks in a row and receives traffic again"
            );
        }
        Event::AllTargetsUnhealthy { group, at } => {
            let _ = writeln!(b, "{n}. ALL TARGETS UNHEALTHY in group {}", clean(group));
            let _ = writeln!(b, "   time:    {}", rfc3339(*at));
            let _ = writeln!(
                b,
                "   check:   every target failed its checks, so the group fails open and requests\n            \
                 go to all of them; look for a shared cause: a dependency, a deploy, the health\n            \
                 check path or port itself"
            );
        }
        Event::ConfigReloadFailed { errors, at } => {
            let _ = writeln!(b, "{n}. CONFIG RELOAD FAILED");
            let _ = writeln!(b, "   time:    {}", rfc3339(*at));
            let _ = writeln!(b, "   errors:");
            for err in errors.iter().take(50) {
                let _ = writeln!(b, "     {}", clean(err));
            }
            if errors.len() > 50 {
                let _ = writeln!(b, "     ... and {} more", errors.len() - 50);
            }
            let _ = writeln!(
                b,
                "   check:   the previous config keeps serving; fix the file, run `fulcrum check -c FILE`,\n            \
                 then reload again"
            );
        }
    }
}

/// What to look at for an ALB reason code.
fn reason_hint(reason: &str) -> &'static str {
    match reason {
        REASON_TIMEOUT => {
            "no answer within the health check timeout: is the service up and not overloaded,\n            \
             and does a firewall or security group let the check through?"
        }
        REASON_CODE_MISMATCH => {
            "the target answered with a status the matcher refuses: check the health check path\n            \
             and the application's logs (a redirect or a 404 is the usual cause), or widen\n            \
             health_check.matcher"
        }
        REASON_FAILED => {
            "the connection failed or the answer was malformed: is the process listening on the\n            \
             checked port, is the address right, did the target reset the connection?"
        }
        _ => "the target's logs, and `fulcrum status` for its current state",
    }
}

/// Distinct (group, target) pairs.
#[derive(Default)]
struct Targets(HashSet<(String, String)>);

impl Targets {
    fn add(&mut self, g: &str, t: &str) {
        self.0.insert((g.to_owned(), t.to_owned()));
    }
}

/// Distinct groups in first-seen order.
#[derive(Default)]
struct Groups(Vec<String>);

impl Groups {
    fn add(&mut self, g: &str) {
        if !self.0.iter().any(|x| x == g) {
            self.0.push(g.to_owned());
        }
    }

    /// `web`, `web and api`, `web, api and db`, `web, api, db and 2 more groups`.
    fn list(&self) -> String {
        let g: Vec<String> = self.0.iter().map(|s| clean(s)).collect();
        match g.len() {
            0 => String::new(),
            1 => g[0].clone(),
            2 | 3 => format!("{} and {}", g[..g.len() - 1].join(", "), g[g.len() - 1]),
            n => format!("{} and {} more groups", g[..3].join(", "), n - 3),
        }
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Control characters (a newline in a header would be an injection) become spaces.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max - 3;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Subject and body of `fulcrum alert-test`.
pub(crate) fn test_message(node: &str) -> (String, String) {
    let subject = format!("[fulcrum {}] test alert", clean(node));
    let body = format!(
        "This is a test message from fulcrum {} on node {}, sent by `fulcrum alert-test`.\n\n\
         If you read this, the relay accepted alerts.from as a sender and delivered to\n\
         alerts.to: unhealthy-target alerts will reach you the same way.\n",
        crate::VERSION,
        clean(node)
    );
    (subject, body)
}
