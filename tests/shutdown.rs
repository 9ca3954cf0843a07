//! Graceful shutdown (SPEC §7): SIGTERM turns `/readyz` to 503, closes the listening
//! sockets after `shutdown_delay`, closes idle keep-alive connections, lets in-flight
//! requests finish and exits 0.

mod common;

use std::time::{Duration, Instant};

use common::*;

async fn refused(port: u16) -> bool {
    tokio::net::TcpStream::connect(local(port)).await.is_err()
}

/// Sends `GET path` (to a `/slow?ms=N` target) in the background and waits until
/// `backend` has it; returns the pending answer.
async fn slow_request_reaching(
    web: u16,
    path: &'static str,
    backend: &Backend,
) -> tokio::task::JoinHandle<std::io::Result<Response>> {
    let slow = tokio::spawn(async move {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: test.local\r\n\r\n");
        http_request(local(web), raw.as_bytes()).await
    });
    eventually(
        Duration::from_secs(5),
        "the slow request reaches the target",
        || async move {
            backend
                .seen()
                .iter()
                .any(|s| s.target.starts_with("/slow"))
                .then_some(())
        },
    )
    .await;
    slow
}

/// A request in flight at SIGTERM completes with 200; the listening socket closes
/// meanwhile, an idle keep-alive client is closed, and the process exits 0 well
/// before `shutdown_timeout` (30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_the_request_in_flight_finish_then_exits_0() {
    bounded(60, async {
        let a = Backend::start("slowpoke").await;
        let web = free_port();
        let mut f = Fulcrum::start(&simple_config(free_port(), web, &[a.addr])).await;
        let mut idle = Conn::connect(local(web)).await.unwrap();
        assert_eq!(idle.get("/warm").await.unwrap().status, 200);

        let slow = slow_request_reaching(web, "/slow?ms=1500", &a).await;

        f.sigterm();
        let t0 = Instant::now();
        while !refused(web).await {
            assert!(
                t0.elapsed() < Duration::from_secs(1),
                "the listener still accepts after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            !slow.is_finished(),
            "the listener closed only after the request finished"
        );
        assert!(
            idle.closed_without_bytes(Duration::from_secs(5)).await,
            "the idle keep-alive connection was not closed"
        );

        let r = slow
            .await
            .unwrap()
            .expect("the request in flight is answered");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.text(), "slowpoke");
        let status = f
            .wait_exit(Duration::from_secs(10))
            .await
            .expect("exits after shutdown");
        assert_eq!(status.code(), Some(0), "exit status {status}");
    })
    .await;
}

/// With `shutdown_delay: 1s`: `/readyz` answers 503 at once while the listener still
/// accepts and serves new connections for about that second; then the port refuses,
/// idle keep-alive connections are closed and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_delay_keeps_serving_while_readyz_fails() {
    bounded(60, async {
        let a = Backend::start("delay").await;
        let (admin, web) = (free_port(), free_port());
        let yaml = simple_config(admin, web, &[a.addr]).replace(
            "runtime: {worker_threads: 2}",
            "runtime: {worker_threads: 2, shutdown_delay: 1s, shutdown_timeout: 5s}",
        );
        assert!(yaml.contains("shutdown_delay: 1s"));
        let mut f = Fulcrum::start(&yaml).await;
        let mut idle = Conn::connect(local(web)).await.unwrap();
        assert_eq!(idle.get("/warm").await.unwrap().status, 200);
        // A client that connected and has not sent a byte is idle too.
        let mut fresh = Conn::connect(local(web)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;

        f.sigterm();
        let t0 = Instant::now();
        loop {
            if let Ok(r) = admin_request(f.admin, "GET", "/readyz", None).await {
                if r.status == 503 {
                    break;
                }
            }
            assert!(
                t0.elapsed() < Duration::from_millis(700),
                "/readyz did not turn 503 at once"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Still inside the delay: a new client is served.
        let started = t0.elapsed();
        assert!(started < Duration::from_millis(800));
        let r = get(local(web), "/during-delay").await;
        assert_eq!(r.status, 200, "a request during shutdown_delay");
        assert_eq!(
            f.admin_get("/healthz").await.0,
            200,
            "/healthz while shutting down"
        );

        while !refused(web).await {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "the listener never closed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let closed_after = t0.elapsed();
        assert!(
            closed_after >= Duration::from_millis(800),
            "the listener closed {closed_after:?} after SIGTERM, before shutdown_delay (1s)"
        );
        assert!(
            idle.closed_without_bytes(Duration::from_secs(5)).await,
            "the idle keep-alive connection was not closed"
        );
        assert!(
            fresh.closed_without_bytes(Duration::from_secs(5)).await,
            "the connection that never sent a request was not closed"
        );
        let status = f
            .wait_exit(Duration::from_secs(10))
            .await
            .expect("exits after shutdown");
        assert_eq!(status.code(), Some(0), "exit status {status}");
        // Nothing was in flight, so nothing waited for shutdown_timeout (5 s).
        let exited = t0.elapsed();
        assert!(
            exited < Duration::from_secs(4),
            "exited {exited:?} after SIGTERM: idle connections held it up"
        );
    })
    .await;
}

/// `yaml` with `shutdown_timeout: 1s` and a JSON access log at `log`.
fn with_cut_and_log(yaml: &str, log: &std::path::Path) -> String {
    yaml.replace(
        "runtime: {worker_threads: 2}",
        &format!(
            "runtime: {{worker_threads: 2, shutdown_timeout: 1s}}\n\
             access_log: {{path: \"{}\", format: json}}",
            log.display()
        ),
    )
}

/// SIGTERM with `req` in flight: about a second later (shutdown_timeout) it is
/// answered 502, the process exits 0, and the access-log line of the request to
/// `path` is returned (written before the exit).
async fn cut_by_shutdown(
    f: &mut Fulcrum,
    req: tokio::task::JoinHandle<std::io::Result<Response>>,
    log: &std::path::Path,
    path: &str,
) -> serde_json::Value {
    f.sigterm();
    let sent = Instant::now();
    let r = req.await.unwrap().expect("the request cut off is answered");
    let took = sent.elapsed();
    assert_eq!(r.status, 502, "{r:?}");
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(4),
        "answered {took:?} after SIGTERM; shutdown_timeout is 1 s"
    );
    let status = f.wait_exit(Duration::from_secs(10)).await.expect("exits");
    assert_eq!(status.code(), Some(0), "exit status {status}");
    let lines = std::fs::read_to_string(log).unwrap_or_default();
    let line = lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["request"].as_str().is_some_and(|r| r.contains(path)))
        .unwrap_or_else(|| panic!("no access-log line for the request cut off: {lines}"));
    assert_eq!(line["elb_status_code"], 502, "{line}");
    line
}

/// `shutdown_timeout: 1s` with a request still running on the target (it would take
/// 6 s): about a second after SIGTERM the request is answered 502, and its
/// access-log line is written before the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn work_cut_by_shutdown_timeout_is_answered_and_logged() {
    bounded(60, async {
        let a = Backend::start("sloth").await;
        let (admin, web) = (free_port(), free_port());
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        let yaml = with_cut_and_log(&simple_config(admin, web, &[a.addr]), &log);
        let mut f = Fulcrum::start(&yaml).await;
        let slow = slow_request_reaching(web, "/slow?ms=6000", &a).await;
        let line = cut_by_shutdown(&mut f, slow, &log, "/slow").await;
        assert_eq!(line["target_group"], "web", "{line}");
    })
    .await;
}

/// A request still waiting for its target's connect (a target that never completes
/// one) when `shutdown_timeout` (1 s) ends is answered 502 and logged, like the
/// work already running on a target.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connect_pending_at_the_shutdown_cut_is_answered_and_logged() {
    bounded(60, async {
        let hole = Blackhole::start();
        let hc = Backend::start("hc-only").await;
        let (admin, web) = (free_port(), free_port());
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        let cfg = checked_elsewhere(admin, web, &[hole.addr], hc.addr.port());
        let mut f = Fulcrum::start(&with_cut_and_log(&cfg, &log)).await;
        let req = tokio::spawn(async move {
            let raw = b"GET /pending HTTP/1.1\r\nHost: test.local\r\n\r\n";
            http_request(local(web), raw).await
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!req.is_finished(), "the connect should still be pending");
        cut_by_shutdown(&mut f, req, &log, "/pending").await;
    })
    .await;
}
