//! Unit tests of the alert module: batching and digest text, and the handle's
//! spool behaviour across a "crash". What relay answers mean is in `relay_tests.rs`. Pacing, the daily
//! quota and the backoff are tested in `quota.rs`, the spool files in `spool.rs`;
//! real SMTP exchanges are in `tests/alerts.rs`.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::digest::{self, Batcher, Entry};
use super::spool::{Spool, SpooledEvent};
use super::*;
use crate::snapshot::{SmtpSettings, SmtpTls};

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_538_400 + secs)
}

fn down(group: &str, target: &str, reason: &str) -> Event {
    Event::TargetUnhealthy {
        group: group.into(),
        target: target.into(),
        zone: "zone-a".into(),
        reason: reason.into(),
        description: "Request timed out".into(),
        consecutive_failures: 2,
        at: at(0),
    }
}

fn spooled(id: &str, event: Event) -> SpooledEvent {
    SpooledEvent {
        id: id.into(),
        event,
    }
}

fn entry(id: &str) -> Entry {
    Entry {
        ev: spooled(id, down("web", id, "Target.Timeout")),
        durable: true,
    }
}

fn ids(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.ev.id.as_str()).collect()
}

#[test]
fn first_event_opens_the_window_and_its_end_takes_all() {
    let t0 = Instant::now();
    let w = Duration::from_secs(30);
    let mut b = Batcher::new(w, 200);
    assert_eq!(b.due_at(), None);
    assert!(b.take_due(t0 + w * 10).is_none());
    b.push(t0, entry("1"));
    assert_eq!(b.due_at(), Some(t0 + w));
    b.push(t0 + Duration::from_secs(29), entry("2"));
    assert_eq!(
        b.due_at(),
        Some(t0 + w),
        "later events do not extend the window"
    );
    assert!(b.take_due(t0 + Duration::from_secs(29)).is_none());
    let taken = b.take_due(t0 + w).unwrap();
    assert_eq!(ids(&taken), ["1", "2"]);
    assert_eq!(b.due_at(), None);
    // The next event opens a new window from its own time.
    b.push(t0 + Duration::from_secs(100), entry("3"));
    assert_eq!(b.due_at(), Some(t0 + Duration::from_secs(130)));
}

#[test]
fn a_storm_in_one_window_is_one_message() {
    let t0 = Instant::now();
    let mut b = Batcher::new(Duration::from_secs(30), 200);
    for i in 0..150 {
        b.push(
            t0 + Duration::from_millis(i * 10),
            entry(&format!("{i:03}")),
        );
    }
    let taken = b.take_due(t0 + Duration::from_secs(30)).unwrap();
    assert_eq!(taken.len(), 150);
    assert!(b.take_due(t0 + Duration::from_secs(3600)).is_none());
}

#[test]
fn a_full_digest_closes_early_and_the_rest_follows() {
    let t0 = Instant::now();
    let mut b = Batcher::new(Duration::from_secs(30), 2);
    b.push(t0, entry("1"));
    b.push(t0, entry("2"));
    assert_eq!(b.due_at(), Some(t0), "full: due at once");
    b.push(t0, entry("3"));
    b.push(t0, entry("4"));
    b.push(t0, entry("5"));
    assert_eq!(ids(&b.take_due(t0).unwrap()), ["1", "2"]);
    assert_eq!(b.due_at(), Some(t0), "what waited is due at once");
    assert_eq!(ids(&b.take_due(t0).unwrap()), ["3", "4"]);
    assert_eq!(ids(&b.take_due(t0).unwrap()), ["5"]);
    assert_eq!(b.len(), 0);
}

#[test]
fn expedite_zero_window_and_new_window_length() {
    let t0 = Instant::now();
    let mut b = Batcher::new(Duration::from_secs(30), 200);
    b.expedite(t0);
    assert_eq!(b.due_at(), None, "nothing to expedite");
    b.push(t0, entry("1"));
    b.expedite(t0 + Duration::from_secs(1));
    assert_eq!(b.due_at(), Some(t0 + Duration::from_secs(1)));
    b.take_due(t0 + Duration::from_secs(1)).unwrap();
    b.set_window(Duration::ZERO);
    b.push(t0 + Duration::from_secs(2), entry("2"));
    assert!(b.take_due(t0 + Duration::from_secs(2)).is_some());
}

#[test]
fn alert_id_is_stable_and_names_the_events() {
    let a = [
        spooled("1-a", down("web", "t1", "x")),
        spooled("2-b", down("web", "t2", "x")),
    ];
    let id = digest::alert_id(&a);
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(id, digest::alert_id(&a.clone()));
    // Only the ids count: the same events after a restart give the same id.
    let mut b = a.clone();
    b[0].event = down("api", "other", "y");
    assert_eq!(id, digest::alert_id(&b));
    assert_ne!(id, digest::alert_id(&a[..1]));
    assert_ne!(id, digest::alert_id(&[a[1].clone(), a[0].clone()]));
    // No ambiguity from concatenation.
    let c = [spooled("1-a2-b", down("web", "t", "x"))];
    assert_ne!(id, digest::alert_id(&c));
}

fn subject(events: Vec<Event>) -> String {
    let evs: Vec<SpooledEvent> = events
        .into_iter()
        .enumerate()
        .map(|(i, e)| spooled(&i.to_string(), e))
        .collect();
    digest::subject("lb-a", &evs)
}

#[test]
fn subject_names_node_count_and_groups() {
    let t = "Target.Timeout";
    assert_eq!(
        subject(vec![
            down("web", "10.0.1.10:80", t),
            down("web", "10.0.1.11:80", t)
        ]),
        "[fulcrum lb-a] 2 targets unhealthy in web"
    );
    assert_eq!(
        subject(vec![down("web", "a:1", t)]),
        "[fulcrum lb-a] 1 target unhealthy in web"
    );
    // One target flapping counts once.
    assert_eq!(
        subject(vec![down("web", "a:1", t), down("web", "a:1", t)]),
        "[fulcrum lb-a] 1 target unhealthy in web"
    );
    assert_eq!(
        subject(vec![
            down("web", "a:1", t),
            down("api", "b:1", t),
            down("web", "c:1", t)
        ]),
        "[fulcrum lb-a] 3 targets unhealthy in web and api"
    );
    let many: Vec<Event> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|g| down(g, "t:1", t))
        .collect();
    assert_eq!(
        subject(many),
        "[fulcrum lb-a] 5 targets unhealthy in a, b, c and 2 more groups"
    );
}

#[test]
fn subject_orders_by_severity_and_mentions_recoveries() {
    let healthy = |g: &str, t: &str| Event::TargetHealthy {
        group: g.into(),
        target: t.into(),
        zone: "z".into(),
        at: at(5),
    };
    let all = Event::AllTargetsUnhealthy {
        group: "web".into(),
        at: at(1),
    };
    let reload = Event::ConfigReloadFailed {
        errors: vec!["f.yaml:1:1: x: bad".into()],
        at: at(2),
    };
    assert_eq!(
        subject(vec![
            down("web", "a:1", "x"),
            down("web", "b:1", "x"),
            all.clone()
        ]),
        "[fulcrum lb-a] 2 targets unhealthy in web"
    );
    assert_eq!(
        subject(vec![all.clone()]),
        "[fulcrum lb-a] all targets unhealthy in 1 group: web"
    );
    assert_eq!(
        subject(vec![healthy("web", "a:1")]),
        "[fulcrum lb-a] 1 target healthy again in web"
    );
    assert_eq!(
        subject(vec![down("web", "a:1", "x"), healthy("api", "b:1")]),
        "[fulcrum lb-a] 1 target unhealthy in web; 1 target recovered in api"
    );
    assert_eq!(
        subject(vec![reload.clone()]),
        "[fulcrum lb-a] 1 config reload failed"
    );
    assert_eq!(
        subject(vec![reload.clone(), reload]),
        "[fulcrum lb-a] 2 config reloads failed"
    );
}

#[test]
fn subject_cannot_inject_headers_and_stays_short() {
    let evs = vec![spooled("1", down("web\r\nBcc: x@evil", "a:1", "x"))];
    let s = digest::subject("lb\na", &evs);
    assert!(!s.contains('\n') && !s.contains('\r'), "{s}");
    let long = "g".repeat(500);
    let s = digest::subject("lb-a", &[spooled("1", down(&long, "a:1", "x"))]);
    assert!(s.len() <= 200 && s.ends_with("..."), "{s}");
}

#[test]
fn body_lists_every_event_with_what_to_check() {
    let evs = vec![
        spooled("1", down("web", "10.0.1.10:8080", "Target.Timeout")),
        spooled(
            "2",
            Event::TargetUnhealthy {
                group: "web".into(),
                target: "10.0.1.11:8080".into(),
                zone: "zone-b".into(),
                reason: "Target.ResponseCodeMismatch".into(),
                description: "Health checks failed with these codes: [503]".into(),
                consecutive_failures: 3,
                at: at(7),
            },
        ),
        spooled(
            "3",
            Event::ConfigReloadFailed {
                errors: vec!["fulcrum.yaml:4:3: listeners[0].bind: bad".into()],
                at: at(9),
            },
        ),
    ];
    let b = digest::body("lb-a", "0123abcd", &evs);
    for want in [
        "fulcrum node lb-a reports 3 events between 2026-11-24T16:40:00Z and 2026-11-24T16:40:09Z.",
        "1. TARGET UNHEALTHY: 10.0.1.10:8080 in group web (zone zone-a)",
        "reason:  Target.Timeout (Request timed out)",
        "consecutive failed checks: 2",
        "no answer within the health check timeout",
        "2. TARGET UNHEALTHY: 10.0.1.11:8080 in group web (zone zone-b)",
        "time:    2026-11-24T16:40:07Z",
        "Target.ResponseCodeMismatch (Health checks failed with these codes: [503])",
        "consecutive failed checks: 3",
        "the target answered with a status the matcher refuses",
        "3. CONFIG RELOAD FAILED",
        "fulcrum.yaml:4:3: listeners[0].bind: bad",
        "the previous config keeps serving",
        "X-Fulcrum-Alert-Id: 0123abcd",
    ] {
        assert!(b.contains(want), "missing {want:?} in:\n{b}");
    }
}

#[test]
fn body_for_recovery_and_fail_open() {
    let evs = vec![
        spooled(
            "1",
            Event::AllTargetsUnhealthy {
                group: "api".into(),
                at: at(0),
            },
        ),
        spooled(
            "2",
            Event::TargetHealthy {
                group: "api".into(),
                target: "h:1".into(),
                zone: "zone-c".into(),
                at: at(0),
            },
        ),
    ];
    let b = digest::body("lb-a", "x", &evs);
    assert!(
        b.contains("reports 2 events at 2026-11-24T16:40:00Z."),
        "{b}"
    );
    assert!(b.contains("1. ALL TARGETS UNHEALTHY in group api"), "{b}");
    assert!(b.contains("fails open"), "{b}");
    assert!(
        b.contains("2. TARGET HEALTHY AGAIN: h:1 in group api (zone zone-c)"),
        "{b}"
    );
}

pub(super) fn settings(dir: &Path, port: u16) -> AlertSettings {
    AlertSettings {
        smtp: SmtpSettings {
            host: "127.0.0.1".into(),
            port,
            tls: SmtpTls::None,
            username: None,
            password: None,
            ca_file: None,
            timeout: Duration::from_secs(2),
        },
        from: "fulcrum <alerts@example.com>".into(),
        to: vec!["oncall@example.com".into(), "Ops <ops@example.org>".into()],
        events: AlertEvent::ALL.to_vec(),
        batch_window: Duration::from_secs(30),
        max_send_rate: 1.0,
        max_per_day: 200,
        spool_dir: dir.to_owned(),
    }
}

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn emit_spools_filtered_events_before_returning() {
    let d = tempfile::tempdir().unwrap();
    let mut s = settings(d.path(), closed_port());
    s.events = vec![AlertEvent::TargetUnhealthy];
    let rt = runtime();
    let alerts = rt
        .block_on(Alerts::start(s.clone(), "lb-a".into()))
        .unwrap();
    alerts.emit(Event::TargetHealthy {
        group: "web".into(),
        target: "a:1".into(),
        zone: "z".into(),
        at: at(0),
    });
    assert_eq!(alerts.queued(), 0, "filtered out");
    alerts.emit(down("web", "a:1", "Target.Timeout"));
    // Durable before emit returned, without the task having run.
    assert_eq!(alerts.queued(), 1);
    let l = Spool::open(d.path()).unwrap().load().unwrap();
    assert_eq!(l.events.len(), 1);
    assert_eq!(l.events[0].event, down("web", "a:1", "Target.Timeout"));
    // A reload that widens the filter applies at once.
    s.events = AlertEvent::ALL.to_vec();
    alerts.update(s, "lb-a".into());
    alerts.emit(Event::AllTargetsUnhealthy {
        group: "web".into(),
        at: at(1),
    });
    assert_eq!(alerts.queued(), 2);
    rt.block_on(alerts.stop());
}

#[test]
fn a_crash_loses_nothing_and_a_restart_reads_the_spool_back() {
    let d = tempfile::tempdir().unwrap();
    let mut s = settings(d.path(), closed_port());
    s.batch_window = Duration::ZERO;
    {
        let rt = runtime();
        let alerts = rt
            .block_on(Alerts::start(s.clone(), "lb-a".into()))
            .unwrap();
        alerts.emit(down("web", "a:1", "Target.Timeout"));
        alerts.emit(down("web", "b:1", "Target.Timeout"));
        // Let the task close the window and fail against the closed port once.
        rt.block_on(async { tokio::time::sleep(Duration::from_millis(300)).await });
        assert_eq!(alerts.queued(), 2);
        // "crash": the runtime goes away without stop and without any removal.
        drop(rt);
    }
    let l = Spool::open(d.path()).unwrap().load().unwrap();
    assert_eq!(l.event_count(), 2, "{l:?}");
    let rt = runtime();
    let alerts = rt.block_on(Alerts::start(s, "lb-a".into())).unwrap();
    assert_eq!(alerts.queued(), 2);
    rt.block_on(alerts.stop());
    assert_eq!(
        Spool::open(d.path()).unwrap().load().unwrap().event_count(),
        2
    );
}

#[test]
fn emit_after_stop_is_kept_for_the_next_start() {
    let d = tempfile::tempdir().unwrap();
    let s = settings(d.path(), closed_port());
    let rt = runtime();
    let alerts = rt
        .block_on(Alerts::start(s.clone(), "lb-a".into()))
        .unwrap();
    let other = alerts.clone();
    rt.block_on(alerts.stop());
    other.emit(down("web", "a:1", "Target.Timeout"));
    let again = rt.block_on(Alerts::start(s, "lb-a".into())).unwrap();
    assert_eq!(again.queued(), 1);
    rt.block_on(again.stop());
}

#[test]
fn an_unwritable_spool_dir_fails_start() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("file");
    std::fs::write(&file, "").unwrap();
    let s = settings(&file.join("spool"), closed_port());
    let err = runtime()
        .block_on(Alerts::start(s, "lb-a".into()))
        .err()
        .unwrap();
    assert!(err.to_string().contains("spool"), "{err}");
}

#[test]
fn event_serializes_with_its_kind() {
    let e = down("web", "a:1", "Target.Timeout");
    let json = serde_json::to_string(&e).unwrap();
    assert!(json.starts_with("{\"kind\":\"target_unhealthy\""), "{json}");
    assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), e);
    assert_eq!(e.kind(), AlertEvent::TargetUnhealthy);
    assert_eq!(e.group(), Some("web"));
    assert_eq!(e.at(), at(0));
    let ids: Vec<String> = (0..1000).map(|_| new_event_id(at(0))).collect();
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 1000);
    assert!(new_event_id(at(1)) > new_event_id(at(0)));
}

/// Regression: the task compared "ready" against a `now` read earlier than the
/// one `send_ready_at` read, so a ready message was never sent (1 ms sleeps forever).
#[test]
fn a_ready_message_is_sent_at_once() {
    let rt = runtime();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let d = tempfile::tempdir().unwrap();
        let mut s = settings(d.path(), port);
        s.batch_window = Duration::ZERO;
        let alerts = Alerts::start(s, "lb-a".into()).await.unwrap();
        alerts.emit(down("web", "a:1", "Target.Timeout"));
        let accepted = tokio::time::timeout(Duration::from_secs(3), listener.accept()).await;
        assert!(accepted.is_ok(), "no connection to the relay within 3 s");
        alerts.stop().await;
    });
}
