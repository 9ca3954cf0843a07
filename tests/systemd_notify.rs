//! The systemd protocol of `fulcrum run` (SPEC §1): `READY=1` once serving,
//! `WATCHDOG=1` every half `WATCHDOG_USEC` while the workers make progress,
//! `STOPPING=1` at SIGTERM, and signals that arrive during start-up.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn spawn(dir: &std::path::Path, yaml: &str, env: &[(&str, &str)]) -> Child {
    let config = dir.join("fulcrum.yaml");
    std::fs::write(&config, yaml).unwrap();
    let err = std::fs::File::create(dir.join("stderr.log")).unwrap();
    let mut cmd = Command::new(bin());
    cmd.arg("run")
        .arg("-c")
        .arg(&config)
        .env_remove("FULCRUM_CONFIG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn fulcrum")
}

fn kill(child: &Child, sig: &str) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -{sig}");
}

async fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next notification (one datagram, possibly several lines) within `within`.
async fn next(sock: &tokio::net::UnixDatagram, within: Duration) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(within, sock.recv(&mut buf)).await {
        Ok(Ok(n)) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_then_watchdog_pings_then_stopping() {
    // Pings every 0.5 s: about four in 2.2 s.
    ready_pings_stopping("1000000", 2..=8).await;
}

/// A short watchdog (a ping every 100 ms) still finds every worker's progress at
/// each ping: about 22 in 2.2 s, none withheld.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_watchdog_gets_every_ping() {
    ready_pings_stopping("200000", 12..=40).await;
}

async fn ready_pings_stopping(watchdog_usec: &str, want: std::ops::RangeInclusive<usize>) {
    bounded(60, async {
        let a = Backend::start("a").await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = tokio::net::UnixDatagram::bind(&path).unwrap();
        let yaml = simple_config(free_port(), free_port(), &[a.addr]);
        let mut child = spawn(
            dir.path(),
            &yaml,
            &[
                ("NOTIFY_SOCKET", path.to_str().unwrap()),
                ("WATCHDOG_USEC", watchdog_usec),
            ],
        );
        let stderr = || std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();

        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let msg = next(&sock, Duration::from_secs(1)).await;
            if msg
                .as_deref()
                .is_some_and(|m| m.lines().any(|l| l == "READY=1"))
            {
                break;
            }
            assert!(Instant::now() < deadline, "no READY=1: {}", stderr());
        }

        let t0 = Instant::now();
        let mut pings = 0;
        while t0.elapsed() < Duration::from_millis(2200) {
            if let Some(m) = next(&sock, Duration::from_millis(50)).await {
                pings += m.lines().filter(|l| *l == "WATCHDOG=1").count();
            }
        }
        assert!(
            want.contains(&pings),
            "{pings} WATCHDOG=1 in 2.2 s with WATCHDOG_USEC={watchdog_usec}"
        );
        assert!(
            !stderr().contains("withholding"),
            "a watchdog ping was withheld: {}",
            stderr()
        );

        kill(&child, "TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let msg = next(&sock, Duration::from_millis(200)).await;
            if msg
                .as_deref()
                .is_some_and(|m| m.lines().any(|l| l == "STOPPING=1"))
            {
                break;
            }
            assert!(Instant::now() < deadline, "no STOPPING=1 after SIGTERM");
        }
        let status = wait_exit(&mut child, Duration::from_secs(10)).await;
        assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", stderr());
    })
    .await;
}

/// Start-up waits for the first health-check round (here up to its 3 s timeout
/// against a target that never answers). A SIGHUP meanwhile does not kill the
/// process, and a SIGTERM meanwhile ends it gracefully with exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_during_start_up_are_not_fatal() {
    bounded(60, async {
        let silent = RawBackend::start(Mode::Silent).await;
        let dir = tempfile::tempdir().unwrap();
        let yaml = simple_config(free_port(), free_port(), &[silent.addr])
            .replace("interval: 30s, timeout: 2s", "interval: 10s, timeout: 3s");
        assert!(yaml.contains("timeout: 3s"));
        let mut child = spawn(dir.path(), &yaml, &[]);
        // Once the process catches SIGHUP and SIGTERM (signals 1 and 15 in SigCgt), it is
        // still starting up: the first health-check round takes up to 3 s.
        let caught = format!("/proc/{}/status", child.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = std::fs::read_to_string(&caught).unwrap_or_default();
            let mask = status
                .lines()
                .find_map(|l| l.strip_prefix("SigCgt:"))
                .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
                .unwrap_or(0);
            if mask & (1 << 0) != 0 && mask & (1 << 14) != 0 {
                break;
            }
            assert!(Instant::now() < deadline, "signal handlers never installed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        kill(&child, "HUP");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            child.try_wait().unwrap().is_none(),
            "SIGHUP during start-up ended the process"
        );
        kill(&child, "TERM");
        let status = wait_exit(&mut child, Duration::from_secs(15))
            .await
            .expect("exits after SIGTERM");
        let stderr = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
        assert_eq!(status.code(), Some(0), "exit status {status}: {stderr}");
    })
    .await;
}
