//! Alerts end to end against a real SMTP server (aiosmtpd, `tests/smtp/relay.py`):
//! one digest per window with its subject and `X-Fulcrum-Alert-Id`, 454 retried,
//! 554 not, STARTTLS with AUTH through a private CA, implicit TLS, pacing, the
//! daily quota across a restart, the spool across a relay outage, a restart and
//! a SIGKILL, and `fulcrum alert-test`'s reports.

#[path = "smtp/fixture.rs"]
mod fixture;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use fixture::{Logs, Mode, Opts, Relay, certs, free_port, header};
use fulcrum::alerts::{Alerts, Event, Tuning, send_test};
use fulcrum::snapshot::{AlertEvent, AlertSettings, SecretSource, SmtpSettings, SmtpTls};

const WAIT: Duration = Duration::from_secs(15);

fn settings(spool: &Path, port: u16) -> AlertSettings {
    AlertSettings {
        smtp: SmtpSettings {
            host: "127.0.0.1".into(),
            port,
            tls: SmtpTls::None,
            username: None,
            password: None,
            ca_file: None,
            timeout: Duration::from_secs(5),
        },
        from: "fulcrum <alerts@example.com>".into(),
        to: vec!["oncall@example.com".into()],
        events: AlertEvent::ALL.to_vec(),
        batch_window: Duration::from_millis(300),
        max_send_rate: 100.0,
        max_per_day: 200,
        spool_dir: spool.to_owned(),
    }
}

fn fast() -> Tuning {
    Tuning {
        backoff: vec![Duration::from_millis(200)],
        ..Tuning::default()
    }
}

fn down(group: &str, target: &str) -> Event {
    Event::TargetUnhealthy {
        group: group.into(),
        target: target.into(),
        zone: "zone-a".into(),
        reason: "Target.Timeout".into(),
        description: "Request timed out".into(),
        consecutive_failures: 2,
        at: SystemTime::now(),
    }
}

fn spool_files(dir: &Path, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(prefix) && n.ends_with(".json"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Waits until the spool is empty (the relay saves a message just before its
/// 250, so the removal can lag the arrival a little).
async fn drained(alerts: &Alerts, what: &str) {
    let deadline = Instant::now() + WAIT;
    while alerts.queued() > 0 {
        assert!(
            Instant::now() < deadline,
            "{what}: {} events still queued",
            alerts.queued()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn body(m: &serde_json::Value) -> &str {
    m["body"].as_str().unwrap()
}

#[tokio::test]
async fn a_digest_of_two_events_is_one_message() {
    fulcrum::metrics::install();
    let relay = Relay::start(Opts::default());
    let spool = tempfile::tempdir().unwrap();
    let alerts = Alerts::start(settings(spool.path(), relay.port), "lb-a".into())
        .await
        .unwrap();
    alerts.emit(down("web", "10.0.1.10:8080"));
    alerts.emit(down("web", "10.0.1.11:8080"));
    let m = relay.wait_messages(1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        relay.messages().len(),
        1,
        "one digest, not one email per event"
    );
    let m = &m[0];
    assert_eq!(m["subject"], "[fulcrum lb-a] 2 targets unhealthy in web");
    assert_eq!(m["rcpt_tos"], serde_json::json!(["oncall@example.com"]));
    assert_eq!(m["mail_from"], "alerts@example.com");
    let id = header(m, "X-Fulcrum-Alert-Id").unwrap();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    assert_eq!(header(m, "Auto-Submitted"), Some("auto-generated"));
    for want in [
        "10.0.1.10:8080",
        "10.0.1.11:8080",
        "Target.Timeout",
        "zone-a",
        id,
    ] {
        assert!(body(m).contains(want), "missing {want} in {}", body(m));
    }
    drained(&alerts, "delivered events leave the spool").await;
    assert!(spool_files(spool.path(), "msg-").is_empty());
    assert!(spool_files(spool.path(), "ev-").is_empty());
    alerts.stop().await;
}

#[tokio::test]
async fn a_storm_of_events_in_one_window_is_one_message() {
    let relay = Relay::start(Opts::default());
    let spool = tempfile::tempdir().unwrap();
    let mut s = settings(spool.path(), relay.port);
    s.batch_window = Duration::from_millis(500);
    let alerts = Alerts::start(s, "lb-a".into()).await.unwrap();
    for i in 0..3 {
        alerts.emit(down("web", &format!("10.0.1.{i}:80")));
    }
    alerts.emit(Event::AllTargetsUnhealthy {
        group: "web".into(),
        at: SystemTime::now(),
    });
    for i in 0..40 {
        alerts.emit(down("api", &format!("10.0.2.{i}:80")));
    }
    let m = relay.wait_messages(1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(relay.messages().len(), 1);
    assert_eq!(
        m[0]["subject"],
        "[fulcrum lb-a] 43 targets unhealthy in web and api"
    );
    alerts.stop().await;
}

#[tokio::test]
async fn throttling_454_is_retried_until_delivered() {
    let (logs, _guard) = Logs::capture();
    let relay = Relay::start(Opts {
        replies: vec!["454 Throttling failure: Maximum sending rate exceeded".into()],
        ..Opts::default()
    });
    let spool = tempfile::tempdir().unwrap();
    let alerts = Alerts::start_with(settings(spool.path(), relay.port), "lb-a".into(), fast())
        .await
        .unwrap();
    alerts.emit(down("web", "10.0.1.10:8080"));
    let m = relay.wait_messages(1, WAIT).await;
    let a = relay.attempts();
    assert_eq!(a.len(), 2, "{a:?}");
    assert_eq!(a[0]["code"], 454);
    // The retry is the same message.
    assert_eq!(a[0]["alert_id"], a[1]["alert_id"]);
    assert_eq!(
        header(&m[0], "X-Fulcrum-Alert-Id"),
        a[0]["alert_id"].as_str()
    );
    let log = logs.text();
    assert!(
        log.contains("454 Throttling failure: Maximum sending rate exceeded"),
        "{log}"
    );
    assert!(
        log.contains("max_send_rate") && log.contains("will retry"),
        "{log}"
    );
    alerts.stop().await;
}

#[tokio::test]
async fn rejection_554_is_not_retried_and_logged_with_a_hint() {
    fulcrum::metrics::install();
    let (logs, _guard) = Logs::capture();
    let reply = "554 Message rejected: Email address is not verified. The following identities failed the check in region US-EAST-1: alerts@example.com";
    let relay = Relay::start(Opts {
        replies: vec![reply.into()],
        ..Opts::default()
    });
    let spool = tempfile::tempdir().unwrap();
    let alerts = Alerts::start_with(settings(spool.path(), relay.port), "lb-a".into(), fast())
        .await
        .unwrap();
    alerts.emit(down("web", "10.0.1.10:8080"));
    relay.wait_attempts(1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(relay.attempts().len(), 1, "a 5xx is not retried");
    assert!(relay.messages().is_empty());
    drained(&alerts, "a rejected message leaves the spool").await;
    assert!(spool_files(spool.path(), "msg-").is_empty());
    let log = logs.text();
    assert!(log.contains(reply), "{log}");
    assert!(log.contains("is not a verified identity"), "{log}");
    let metrics = fulcrum::metrics::install().render();
    assert!(
        metrics.contains("fulcrum_alerts_failed_total{kind=\"5xx\"}"),
        "{metrics}"
    );
    // Present from the start, whether used or not (SPEC §9).
    for series in [
        "fulcrum_alerts_sent_total",
        "fulcrum_alerts_failed_total{kind=\"4xx\"}",
        "fulcrum_alerts_failed_total{kind=\"timeout\"}",
        "fulcrum_alerts_queued",
    ] {
        assert!(metrics.contains(series), "missing {series} in {metrics}");
    }
    alerts.stop().await;
}

#[tokio::test]
async fn events_spooled_while_the_relay_is_down_go_when_it_returns() {
    let port = free_port();
    let spool = tempfile::tempdir().unwrap();
    let alerts = Alerts::start_with(settings(spool.path(), port), "lb-a".into(), fast())
        .await
        .unwrap();
    alerts.emit(down("web", "10.0.1.10:8080"));
    tokio::time::sleep(Duration::from_millis(700)).await;
    alerts.emit(down("web", "10.0.1.11:8080"));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(alerts.queued(), 2);
    let relay = Relay::start(Opts {
        port: Some(port),
        ..Opts::default()
    });
    let m = relay.wait_messages(2, WAIT).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    // One message was retried through the outage, one collected behind it.
    assert_eq!(relay.messages().len(), 2);
    assert!(body(&m[0]).contains("10.0.1.10:8080"));
    assert!(body(&m[1]).contains("10.0.1.11:8080"));
    drained(&alerts, "delivered events leave the spool").await;
    alerts.stop().await;
}

#[tokio::test]
async fn a_restart_sends_what_the_spool_holds_with_the_same_alert_id() {
    let port = free_port();
    let spool = tempfile::tempdir().unwrap();
    let mut s = settings(spool.path(), port);
    s.batch_window = Duration::ZERO;
    let alerts = Alerts::start_with(s.clone(), "lb-a".into(), fast())
        .await
        .unwrap();
    alerts.emit(down("web", "10.0.1.10:8080"));
    // Closed into a message and tried against the dead relay.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let msg = spool_files(spool.path(), "msg-");
    assert_eq!(msg.len(), 1);
    // One more event, still in the window when the process stops.
    s.batch_window = Duration::from_secs(3600);
    alerts.update(s.clone(), "lb-a".into());
    alerts.emit(down("api", "10.0.2.10:8080"));
    alerts.stop().await;
    assert_eq!(spool_files(spool.path(), "ev-").len(), 1);

    let relay = Relay::start(Opts {
        port: Some(port),
        ..Opts::default()
    });
    let again = Alerts::start_with(s, "lb-a".into(), fast()).await.unwrap();
    assert_eq!(again.queued(), 2);
    // Sent at once, not after the hour-long window.
    let m = relay.wait_messages(2, WAIT).await;
    let id = msg[0].trim_start_matches("msg-").trim_end_matches(".json");
    assert_eq!(header(&m[0], "X-Fulcrum-Alert-Id"), Some(id));
    assert!(body(&m[1]).contains("10.0.2.10:8080"));
    drained(&again, "delivered events leave the spool").await;
    again.stop().await;
}

#[tokio::test]
async fn starttls_with_auth_through_a_private_ca() {
    let c = certs();
    let relay = Relay::start(Opts {
        mode: Mode::StartTls,
        tls: Some((c.cert.clone(), c.key.clone())),
        auth: Some(("AKIAEXAMPLE".into(), "s3cret/pass+word".into())),
        ..Opts::default()
    });
    let spool = tempfile::tempdir().unwrap();
    let (user, pass) = (c.dir.path().join("user"), c.dir.path().join("pass"));
    std::fs::write(&user, "AKIAEXAMPLE\n").unwrap();
    std::fs::write(&pass, "s3cret/pass+word\n").unwrap();
    let mut s = settings(spool.path(), relay.port);
    s.smtp.tls = SmtpTls::StartTls;
    s.smtp.username = Some(SecretSource::File(user));
    s.smtp.password = Some(SecretSource::File(pass));
    // Without the CA, the relay's certificate is not trusted.
    let err = send_test(&s, "lb-a").await.unwrap_err();
    assert!(err.contains("ca_file"), "{err}");
    s.smtp.ca_file = Some(c.ca.clone());
    let (logs, _guard) = Logs::capture();
    let alerts = Alerts::start(s, "lb-a".into()).await.unwrap();
    alerts.emit(down("web", "10.0.1.10:8080"));
    let m = relay.wait_messages(1, WAIT).await;
    assert_eq!(m[0]["tls"], true);
    assert_eq!(m[0]["auth_user"], "AKIAEXAMPLE");
    alerts.stop().await;
    assert!(!logs.text().contains("s3cret"), "a secret was logged");
}

#[tokio::test]
async fn implicit_tls_and_bad_credentials() {
    let c = certs();
    let relay = Relay::start(Opts {
        mode: Mode::Implicit,
        tls: Some((c.cert.clone(), c.key.clone())),
        auth: Some(("AKIAEXAMPLE".into(), "right".into())),
        ..Opts::default()
    });
    let spool = tempfile::tempdir().unwrap();
    let pass = c.dir.path().join("pass");
    std::fs::write(&pass, "wrong\n").unwrap();
    let mut s = settings(spool.path(), relay.port);
    s.smtp.tls = SmtpTls::Tls;
    s.smtp.ca_file = Some(c.ca.clone());
    s.smtp.username = Some(SecretSource::File(c.dir.path().join("user")));
    s.smtp.password = Some(SecretSource::File(pass.clone()));
    std::fs::write(c.dir.path().join("user"), "AKIAEXAMPLE").unwrap();
    let err = send_test(&s, "lb-a").await.unwrap_err();
    assert!(err.contains("535"), "{err}");
    assert!(
        err.contains("hint:") && err.contains("not IAM access keys"),
        "{err}"
    );
    assert!(
        !err.contains("wrong"),
        "the password leaked into the report: {err}"
    );
    std::fs::write(&pass, "right\n").unwrap();
    let ok = send_test(&s, "lb-a").await.unwrap();
    assert!(
        ok.contains("accepted the test message") && ok.contains("250 Ok"),
        "{ok}"
    );
    let m = relay.wait_messages(1, WAIT).await;
    assert_eq!(m[0]["tls"], true);
    assert_eq!(m[0]["subject"], "[fulcrum lb-a] test alert");
    let id = header(&m[0], "X-Fulcrum-Alert-Id").expect("the test message has an alert id");
    assert_eq!(id.len(), 32, "{id}");
}

#[tokio::test]
async fn alert_test_reports_the_relay_answer() {
    let relay = Relay::start(Opts {
        replies: vec!["554 Message rejected: Email address is not verified. The following identities failed the check in region US-EAST-1: oncall@example.com".into()],
        ..Opts::default()
    });
    let spool = tempfile::tempdir().unwrap();
    let s = settings(spool.path(), relay.port);
    let err = send_test(&s, "lb-a").await.unwrap_err();
    assert!(
        err.contains("refused the test message: 554 Message rejected"),
        "{err}"
    );
    assert!(
        err.contains("sandbox") && err.contains("oncall@example.com"),
        "{err}"
    );
    let ok = send_test(&s, "lb-a").await.unwrap();
    assert!(
        ok.contains(&format!("127.0.0.1:{} (no tls) accepted", relay.port)),
        "{ok}"
    );
    assert!(ok.contains("250 Ok 0100018c-test-000001"), "{ok}");
    // A relay that is not there.
    let gone = settings(spool.path(), free_port());
    let err = send_test(&gone, "lb-a").await.unwrap_err();
    assert!(
        err.contains("could not take the test message") && err.contains("hint:"),
        "{err}"
    );
}

#[tokio::test]
async fn max_send_rate_paces_messages() {
    let relay = Relay::start(Opts::default());
    let spool = tempfile::tempdir().unwrap();
    let mut s = settings(spool.path(), relay.port);
    s.batch_window = Duration::ZERO;
    s.max_send_rate = 2.0; // one recipient: a message every 0.5 s
    let tuning = Tuning {
        max_events_per_message: 1,
        ..fast()
    };
    let alerts = Alerts::start_with(s, "lb-a".into(), tuning).await.unwrap();
    for i in 0..3 {
        alerts.emit(down("web", &format!("10.0.1.{i}:80")));
    }
    let m = relay.wait_messages(3, WAIT).await;
    let t: Vec<f64> = m.iter().map(|m| m["received"].as_f64().unwrap()).collect();
    for gap in [t[1] - t[0], t[2] - t[1]] {
        assert!((0.45..5.0).contains(&gap), "gaps {t:?}");
    }
    alerts.stop().await;
}

#[tokio::test]
async fn max_per_day_drops_counts_and_survives_a_restart() {
    fulcrum::metrics::install();
    let (logs, _guard) = Logs::capture();
    let relay = Relay::start(Opts::default());
    let spool = tempfile::tempdir().unwrap();
    let mut s = settings(spool.path(), relay.port);
    s.batch_window = Duration::ZERO;
    s.max_per_day = 2;
    let tuning = Tuning {
        max_events_per_message: 1,
        ..fast()
    };
    let alerts = Alerts::start_with(s.clone(), "lb-a".into(), tuning.clone())
        .await
        .unwrap();
    for i in 0..3 {
        alerts.emit(down("web", &format!("10.0.1.{i}:80")));
    }
    relay.wait_messages(2, WAIT).await;
    drained(&alerts, "the third event is dropped").await;
    alerts.stop().await;
    let again = Alerts::start_with(s, "lb-a".into(), tuning).await.unwrap();
    again.emit(down("web", "10.0.1.9:80"));
    drained(&again, "the quota survives the restart").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(relay.messages().len(), 2);
    assert_eq!(logs.text().matches("daily quota reached").count(), 2);
    let metrics = fulcrum::metrics::install().render();
    assert!(
        metrics.contains("fulcrum_alerts_dropped_total{reason=\"daily_quota\"}"),
        "{metrics}"
    );
    again.stop().await;
}

/// Run by the SIGKILL tests in a child process: starts an alerter from the
/// environment, emits one event, says EMITTED, and waits to be killed.
#[test]
#[ignore = "helper: the SIGKILL tests run it in a child process"]
fn child_alerter() {
    let env = |k: &str| std::env::var(k).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut s = settings(
            Path::new(&env("ALERTS_CHILD_SPOOL")),
            env("ALERTS_CHILD_PORT").parse().unwrap(),
        );
        s.batch_window = Duration::from_millis(env("ALERTS_CHILD_WINDOW_MS").parse().unwrap());
        let alerts = Alerts::start(s, "lb-a".into()).await.unwrap();
        alerts.emit(down("web", "10.0.1.66:8080"));
        println!("EMITTED");
        std::future::pending::<()>().await;
    });
}

/// Runs [`child_alerter`], returns once it emitted, SIGKILLs it after `then`.
async fn kill_9_after_emit(spool: &Path, port: u16, window_ms: u64, then: impl AsyncFnOnce()) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_alerter",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("ALERTS_CHILD_SPOOL", spool)
        .env("ALERTS_CHILD_PORT", port.to_string())
        .env("ALERTS_CHILD_WINDOW_MS", window_ms.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let emitted = tokio::task::spawn_blocking(move || {
        BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains("EMITTED"))
    });
    let emitted = tokio::time::timeout(WAIT, emitted).await;
    if !matches!(emitted, Ok(Ok(true))) {
        let _ = child.kill();
        panic!("the child alerter did not emit");
    }
    then().await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

#[tokio::test]
async fn sigkill_while_the_relay_is_down_loses_nothing() {
    let (port, spool) = (free_port(), tempfile::tempdir().unwrap());
    kill_9_after_emit(spool.path(), port, 0, async || {
        // Killed after the window closed and a send failed.
        let deadline = Instant::now() + WAIT;
        while spool_files(spool.path(), "msg-").is_empty() {
            assert!(Instant::now() < deadline, "no message was spooled");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    })
    .await;
    let relay = Relay::start(Opts {
        port: Some(port),
        ..Opts::default()
    });
    let alerts = Alerts::start(settings(spool.path(), port), "lb-a".into())
        .await
        .unwrap();
    let m = relay.wait_messages(1, WAIT).await;
    assert!(body(&m[0]).contains("10.0.1.66:8080"));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(relay.attempts().len(), 1, "delivered once");
    alerts.stop().await;
}

#[tokio::test]
async fn sigkill_inside_the_batch_window_loses_nothing() {
    let relay = Relay::start(Opts::default());
    let spool = tempfile::tempdir().unwrap();
    kill_9_after_emit(spool.path(), relay.port, 60_000, async || {}).await;
    assert!(
        relay.attempts().is_empty(),
        "nothing was sent before the kill"
    );
    assert_eq!(spool_files(spool.path(), "ev-").len(), 1);
    let mut s = settings(spool.path(), relay.port);
    s.batch_window = Duration::from_secs(60);
    let alerts = Alerts::start(s, "lb-a".into()).await.unwrap();
    let m = relay.wait_messages(1, WAIT).await;
    assert_eq!(m[0]["subject"], "[fulcrum lb-a] 1 target unhealthy in web");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(relay.attempts().len(), 1);
    alerts.stop().await;
}
