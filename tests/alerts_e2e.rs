//! Alerts through the real `fulcrum` binary (SPEC §6, §2 `alerts`, §1 `alert-test`):
//! health transitions of real backends become digests delivered to a real SMTP
//! relay (aiosmtpd, `tests/smtp/relay.py`); one message per batch window; the
//! spool survives a SIGKILL while the relay is down; `fulcrum alert-test` reports
//! the relay's answer; a failed reload is alerted.

mod common;
#[path = "smtp/fixture.rs"]
mod fixture;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Backend, FAST_HC, Fulcrum, bounded, fulcrum_cli, group, lb_config, local, text, tgt};
use fixture::{Opts, Relay, header};
use serde_json::Value;

/// Long enough for an unhealthy transition (2 failed checks at 1 s) plus a
/// 2 s batch window plus a send, with a generous margin.
const DELIVERY: Duration = Duration::from_secs(15);
/// How long to watch for a second message after the first: a few windows.
const QUIET: Duration = Duration::from_secs(6);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A config with one http listener and group `web` (fast health checks) holding
/// `targets`, and an `alerts` section pointing at the relay on `smtp_port`.
fn config(admin: u16, web: u16, targets: &[SocketAddr], smtp_port: u16, spool: &Path) -> String {
    let tg: Vec<String> = targets.iter().map(|a| tgt(*a)).collect();
    let mut y = lb_config(
        "name: lb-test, zone: zone-a",
        admin,
        &[("web", "http", web, "web")],
        &[group("web", "http", &[], FAST_HC, &tg)],
    );
    y += &format!(
        "alerts:\n\
         \x20 smtp: {{host: 127.0.0.1, port: {smtp_port}, tls: none, timeout: 5s}}\n\
         \x20 from: \"fulcrum <alerts@example.com>\"\n\
         \x20 to: [oncall@example.com]\n\
         \x20 events: [target_unhealthy, target_healthy, all_targets_unhealthy, config_reload_failed]\n\
         \x20 batch_window: 2s\n\
         \x20 max_send_rate: 100\n\
         \x20 spool_dir: \"{}\"\n",
        spool.display()
    );
    y
}

/// Starts `fulcrum run -c config` with its logs in a fresh temp dir (the config
/// and spool live elsewhere, so a restart can reuse them).
async fn run(config: &Path, admin: u16) -> Fulcrum {
    let logs = tempfile::tempdir().unwrap();
    let args = ["run".to_string(), "-c".into(), config.display().to_string()];
    Fulcrum::spawn(logs, config.to_owned(), local(admin), &args, None).await
}

fn body(m: &Value) -> &str {
    m["body"].as_str().unwrap_or("")
}

fn subject(m: &Value) -> &str {
    m["subject"].as_str().unwrap_or("")
}

/// Asserts that the relay accepted exactly `n` messages and keeps at that for
/// `QUIET` (no second digest for the same events).
async fn exactly(relay: &Relay, n: usize) -> Vec<Value> {
    let until = Instant::now() + QUIET;
    while Instant::now() < until {
        let m = relay.messages();
        assert!(
            m.len() <= n,
            "expected {n} message(s), got {}: {:#?}",
            m.len(),
            m.iter().map(subject).collect::<Vec<_>>()
        );
        tokio::time::sleep(ms(100)).await;
    }
    let m = relay.messages();
    assert_eq!(m.len(), n, "{m:#?}");
    m
}

/// Event and message files in the spool.
fn spooled(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| (n.starts_with("ev-") || n.starts_with("msg-")) && n.ends_with(".json"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Both backends healthy (a first pass from `initial` is not an event).
async fn all_healthy(f: &Fulcrum, backends: &[&Backend]) {
    for b in backends {
        f.wait_state("web", b.addr, "healthy", ms(6000)).await;
    }
}

#[tokio::test]
async fn unhealthy_target_yields_one_digest_naming_node_group_target_and_reason() {
    bounded(60, async {
        let relay = Relay::start(Opts::default());
        let (a, b) = (Backend::start("a").await, Backend::start("b").await);
        let work = tempfile::tempdir().unwrap();
        let spool = work.path().join("spool");
        let admin = common::free_port();
        let cfg = work.path().join("fulcrum.yaml");
        std::fs::write(
            &cfg,
            config(
                admin,
                common::free_port(),
                &[a.addr, b.addr],
                relay.port,
                &spool,
            ),
        )
        .unwrap();
        let f = run(&cfg, admin).await;
        all_healthy(&f, &[&a, &b]).await;
        assert!(relay.messages().is_empty(), "{:?}", relay.messages());

        a.set_health(500);
        f.wait_state("web", a.addr, "unhealthy", ms(8000)).await;
        relay.wait_messages(1, DELIVERY).await;
        let m = exactly(&relay, 1).await;
        let m = &m[0];
        let s = subject(m);
        assert!(s.contains("lb-test"), "subject lacks the node: {s}");
        assert!(s.contains("web"), "subject lacks the group: {s}");
        assert!(s.contains("unhealthy"), "{s}");
        let body = body(m);
        assert!(body.contains(&a.addr.to_string()), "{body}");
        assert!(!body.contains(&b.addr.to_string()), "{body}");
        assert!(
            body.contains("Target.ResponseCodeMismatch")
                || body.contains("Target.FailedHealthChecks"),
            "no reason code: {body}"
        );
        let id = header(m, "X-Fulcrum-Alert-Id").unwrap_or_default();
        assert!(!id.is_empty(), "no X-Fulcrum-Alert-Id: {m}");
        assert_eq!(m["rcpt_tos"], serde_json::json!(["oncall@example.com"]));
        assert_eq!(m["mail_from"], "alerts@example.com");
    })
    .await;
}

#[tokio::test]
async fn three_targets_failing_in_one_window_are_one_message() {
    bounded(60, async {
        let relay = Relay::start(Opts::default());
        let mut bs = Vec::new();
        for n in ["a", "b", "c", "d"] {
            bs.push(Backend::start(n).await);
        }
        let addrs: Vec<SocketAddr> = bs.iter().map(|b| b.addr).collect();
        let work = tempfile::tempdir().unwrap();
        let spool = work.path().join("spool");
        let admin = common::free_port();
        let cfg = work.path().join("fulcrum.yaml");
        std::fs::write(
            &cfg,
            config(admin, common::free_port(), &addrs, relay.port, &spool),
        )
        .unwrap();
        let f = run(&cfg, admin).await;
        all_healthy(&f, &bs.iter().collect::<Vec<_>>()).await;

        // d stays healthy, so the group does not fail open.
        for b in &bs[..3] {
            b.set_health(500);
        }
        for b in &bs[..3] {
            f.wait_state("web", b.addr, "unhealthy", ms(8000)).await;
        }
        relay.wait_messages(1, DELIVERY).await;
        let m = exactly(&relay, 1).await;
        let body = body(&m[0]);
        for b in &bs[..3] {
            assert!(
                body.contains(&b.addr.to_string()),
                "{b:?} missing: {body}",
                b = b.addr
            );
        }
        assert!(!body.contains(&bs[3].addr.to_string()), "{body}");
        let s = subject(&m[0]);
        assert!(s.contains("lb-test") && s.contains("web"), "{s}");
        assert!(s.contains('3'), "subject does not count 3 targets: {s}");
        assert_eq!(relay.attempts().len(), 1, "{:?}", relay.attempts());
    })
    .await;
}

#[tokio::test]
async fn sigkill_while_the_relay_is_down_then_restart_delivers_once() {
    bounded(90, async {
        let smtp_port = fixture::free_port(); // reserved: nothing listens yet
        let a = Backend::start("a").await;
        let b = Backend::start("b").await;
        let work = tempfile::tempdir().unwrap();
        let spool = work.path().join("spool");
        let admin = common::free_port();
        let cfg = work.path().join("fulcrum.yaml");
        std::fs::write(
            &cfg,
            config(
                admin,
                common::free_port(),
                &[a.addr, b.addr],
                smtp_port,
                &spool,
            ),
        )
        .unwrap();

        let mut f = run(&cfg, admin).await;
        all_healthy(&f, &[&a, &b]).await;
        a.set_health(500);
        f.wait_state("web", a.addr, "unhealthy", ms(8000)).await;
        // The event is spooled when it happens; give the window time to close
        // and a send to fail against the closed port, too.
        let deadline = Instant::now() + Duration::from_secs(5);
        while spooled(&spool).is_empty() {
            assert!(
                Instant::now() < deadline,
                "nothing spooled in {}",
                spool.display()
            );
            tokio::time::sleep(ms(25)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let before = spooled(&spool);
        assert!(!before.is_empty());

        let st = Command::new("kill")
            .args(["-KILL", &f.pid().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        assert!(
            f.wait_exit(Duration::from_secs(5)).await.is_some(),
            "fulcrum survived SIGKILL"
        );
        let first_logs = f.logs();
        drop(f);

        // The target is fine again before the restart, so the restarted process
        // has nothing new to report (`initial` → `healthy` is not an event): the
        // only message can be the spooled one.
        a.set_health(200);
        let relay = Relay::start(Opts {
            port: Some(smtp_port),
            ..Opts::default()
        });
        let f = run(&cfg, admin).await;
        let m = relay.wait_messages(1, DELIVERY).await;
        let m0 = m[0].clone();
        let m = exactly(&relay, 1).await;
        assert_eq!(m[0], m0);
        let body = body(&m[0]);
        assert!(
            body.contains(&a.addr.to_string()),
            "{body}\nfirst run:\n{first_logs}"
        );
        assert!(!body.contains(&b.addr.to_string()), "{body}");
        assert!(
            body.contains("Target.ResponseCodeMismatch")
                || body.contains("Target.FailedHealthChecks"),
            "{body}"
        );
        let s = subject(&m[0]);
        assert!(s.contains("lb-test") && s.contains("web"), "{s}");
        assert!(header(&m[0], "X-Fulcrum-Alert-Id").is_some_and(|v| !v.is_empty()));
        // Delivered, so the spool empties.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !spooled(&spool).is_empty() {
            assert!(
                Instant::now() < deadline,
                "spool not emptied after the 250: {:?}",
                spooled(&spool)
            );
            tokio::time::sleep(ms(50)).await;
        }
        drop(f);
    })
    .await;
}

fn write_alert_config(dir: &Path, smtp_port: u16) -> PathBuf {
    let cfg = dir.join("fulcrum.yaml");
    let y = config(
        common::free_port(),
        common::free_port(),
        &[local(1)],
        smtp_port,
        &dir.join("spool"),
    );
    std::fs::write(&cfg, y).unwrap();
    cfg
}

#[tokio::test]
async fn alert_test_prints_the_relay_answer_and_exits_0() {
    bounded(60, async {
        let relay = Relay::start(Opts::default());
        let work = tempfile::tempdir().unwrap();
        let cfg = write_alert_config(work.path(), relay.port);
        let out = fulcrum_cli(&["alert-test", "-c", &cfg.display().to_string()]).await;
        let (so, se) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "stdout: {so}\nstderr: {se}");
        assert!(
            so.contains("250 Ok 0100018c-test-000001"),
            "the relay's answer is not printed: stdout: {so}\nstderr: {se}"
        );
        let m = relay.wait_messages(1, Duration::from_secs(5)).await;
        assert_eq!(m.len(), 1);
        assert!(subject(&m[0]).contains("lb-test"), "{}", subject(&m[0]));
    })
    .await;
}

#[tokio::test]
async fn alert_test_against_a_554_relay_exits_1_with_the_hint() {
    bounded(60, async {
        let reply = "554 Message rejected: Email address is not verified. The following \
                     identities failed the check in region US-EAST-1: alerts@example.com";
        let relay = Relay::start(Opts {
            replies: vec![reply.into()],
            ..Opts::default()
        });
        let work = tempfile::tempdir().unwrap();
        let cfg = write_alert_config(work.path(), relay.port);
        let out = fulcrum_cli(&["alert-test", "-c", &cfg.display().to_string()]).await;
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(1), "{all}");
        assert!(all.contains("554 Message rejected"), "{all}");
        assert!(all.contains("hint:"), "no hint: {all}");
        assert!(
            all.to_ascii_lowercase().contains("verif"),
            "the hint does not point at verifying the identity: {all}"
        );
        assert!(relay.messages().is_empty());
        assert_eq!(relay.attempts().len(), 1, "{:?}", relay.attempts());
    })
    .await;
}

#[tokio::test]
async fn failed_reload_yields_a_config_reload_failed_digest() {
    bounded(60, async {
        let relay = Relay::start(Opts::default());
        let a = Backend::start("a").await;
        let work = tempfile::tempdir().unwrap();
        let spool = work.path().join("spool");
        let admin = common::free_port();
        let cfg = work.path().join("fulcrum.yaml");
        let good = config(admin, common::free_port(), &[a.addr], relay.port, &spool);
        std::fs::write(&cfg, &good).unwrap();
        let f = run(&cfg, admin).await;
        all_healthy(&f, &[&a]).await;

        f.reload_config(&format!("{good}frobnicate_key: 1\n"));
        f.sighup();
        common::eventually(
            Duration::from_secs(5),
            "a failed reload counted",
            || async {
                let v = f
                    .metric("fulcrum_config_reloads_total", &[("result", "failure")])
                    .await;
                v.filter(|v| *v >= 1.0)
            },
        )
        .await;
        relay.wait_messages(1, DELIVERY).await;
        let m = exactly(&relay, 1).await;
        let s = subject(&m[0]);
        assert!(s.contains("lb-test"), "{s}");
        assert!(s.to_ascii_lowercase().contains("reload"), "{s}");
        let body = body(&m[0]);
        assert!(
            body.contains("frobnicate_key"),
            "the digest does not name the error: {body}"
        );
        assert!(header(&m[0], "X-Fulcrum-Alert-Id").is_some_and(|v| !v.is_empty()));
        // The running config is untouched: the target is still served as healthy.
        assert_eq!(f.state_of("web", a.addr).await, "healthy");
    })
    .await;
}
