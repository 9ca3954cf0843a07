//! Idle keep-alive connections of plain http listeners are parked (docs/
//! architecture.md, "Idle connections"): after 250 ms without a request the
//! connection's task ends and its socket waits in the worker's own epoll set.
//! Observed from outside: the socket shows up in an epoll set created for it (in
//! `/proc/PID/fdinfo`), a parked connection's next request is answered by a
//! target, a client that closes is let go (the active-connection gauge falls),
//! the others close silently at `idle_timeout` and at shutdown.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;

/// Registrations per epoll descriptor of process `pid` (fd number → count).
fn epoll_sets(pid: u32) -> BTreeMap<u32, usize> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return out;
    };
    for e in dir.flatten() {
        let is_epoll = std::fs::read_link(e.path())
            .is_ok_and(|l| l.to_string_lossy() == "anon_inode:[eventpoll]");
        let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if is_epoll {
            let info =
                std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
            out.insert(fd, info.lines().filter(|l| l.starts_with("tfd:")).count());
        }
    }
    out
}

/// Registrations in the epoll sets that did not exist in `before`.
fn in_new_sets(pid: u32, before: &BTreeMap<u32, usize>) -> usize {
    epoll_sets(pid)
        .iter()
        .filter(|(fd, _)| !before.contains_key(fd))
        .map(|(_, n)| n)
        .sum()
}

fn config(admin: u16, web: u16, target: std::net::SocketAddr, idle: &str) -> String {
    format!(
        "runtime: {{worker_threads: 1, shutdown_timeout: 30s}}\n\
         admin: {{bind: \"127.0.0.1:{admin}\"}}\n\
         listeners:\n\
         \x20 - name: web\n\
         \x20   bind: \"127.0.0.1:{web}\"\n\
         \x20   idle_timeout: {idle}\n\
         \x20   default_action: {{forward: app}}\n\
         target_groups:\n\
         \x20 - {{name: app, health_check: {{path: /hc, interval: 30s, timeout: 2s}}, targets: [\"{target}\"]}}\n"
    )
}

async fn active(f: &Fulcrum) -> f64 {
    f.metric("fulcrum_active_connections", &[("listener", "web")])
        .await
        .unwrap_or(-1.0)
}

/// Twenty keep-alive connections go quiet and are parked; each one's next
/// request is answered by the target; ten clients close and their connections
/// are let go at once; the other ten close silently at idle_timeout (4 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quiet_connections_are_parked_resumed_and_closed() {
    bounded(90, async {
        let app = Backend::start("app").await;
        let (admin, web) = (free_port(), free_port());
        let f = Fulcrum::start(&config(admin, web, app.addr, "4s")).await;
        let pid = f.pid();
        let before = epoll_sets(pid);
        let before = &before;

        let mut conns = Vec::new();
        for i in 0..20 {
            let mut c = Conn::connect(local(web)).await.unwrap();
            let r = c.get(&format!("/first/{i}")).await.unwrap();
            assert_eq!(r.status, 200, "{r:?}");
            conns.push(c);
        }
        eventually(
            Duration::from_secs(5),
            "the 20 quiet connections parked",
            || async move { (in_new_sets(pid, before) == 20).then_some(()) },
        )
        .await;
        assert_eq!(active(&f).await, 20.0, "parked connections stay counted");

        // Their next requests reach the target and are answered.
        let seen = app.requests();
        for (i, c) in conns.iter_mut().enumerate() {
            let r = c.get(&format!("/again/{i}")).await.unwrap();
            assert_eq!(r.status, 200, "{r:?}");
            assert_eq!(r.header("x-backend"), Some("app"), "{r:?}");
        }
        assert_eq!(
            app.requests(),
            seen + 20,
            "every resumed request reached the target"
        );
        let back = Instant::now();

        // Quiet again, parked again; ten clients leave.
        eventually(
            Duration::from_secs(5),
            "the 20 connections parked again",
            || async move { (in_new_sets(pid, before) == 20).then_some(()) },
        )
        .await;
        for c in conns.drain(..10) {
            drop(c);
        }
        eventually(
            Duration::from_secs(5),
            "the closed clients' connections let go",
            || async { (active(&f).await == 10.0 && in_new_sets(pid, before) == 10).then_some(()) },
        )
        .await;

        // The rest close at idle_timeout, counted from their last answer.
        for c in conns.iter_mut() {
            assert!(
                c.closed_without_bytes(Duration::from_secs(10)).await,
                "a parked connection got bytes or stayed open"
            );
        }
        let t = back.elapsed();
        assert!(
            t >= Duration::from_millis(3500) && t <= Duration::from_secs(9),
            "parked connections closed {t:?} after their last answer; idle_timeout is 4 s"
        );
        eventually(Duration::from_secs(5), "no active connection", || async {
            (active(&f).await == 0.0).then_some(())
        })
        .await;
        assert_eq!(in_new_sets(pid, before), 0);
    })
    .await;
}

/// Pipelined bytes or a request that arrives while the connection is being
/// parked are not lost: a client sending every 240–260 ms (around the parking
/// delay) gets every answer, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_around_the_parking_delay_are_all_answered() {
    bounded(60, async {
        let app = Backend::start("app").await;
        let (admin, web) = (free_port(), free_port());
        let f = Fulcrum::start(&config(admin, web, app.addr, "60s")).await;
        let mut c = Conn::connect(local(web)).await.unwrap();
        for i in 0..24u64 {
            let r = c.get(&format!("/tick/{i}")).await.unwrap();
            assert_eq!(r.status, 200, "{r:?}");
            assert_eq!(app.last().target, format!("/tick/{i}"));
            tokio::time::sleep(Duration::from_millis(240 + i % 3 * 10)).await;
        }
        // Two requests in one write to a parked connection: both answered.
        tokio::time::sleep(Duration::from_millis(600)).await;
        c.send(b"GET /p/1 HTTP/1.1\r\nHost: test.local\r\n\r\nGET /p/2 HTTP/1.1\r\nHost: test.local\r\n\r\n")
            .await
            .unwrap();
        for want in ["/p/1", "/p/2"] {
            let r = c.read_response().await.unwrap();
            assert_eq!(r.status, 200, "{r:?}");
            assert!(app.seen().iter().any(|s| s.target == want), "{want} not at the target");
        }
        assert_eq!(active(&f).await, 1.0);
    })
    .await;
}

/// SIGTERM closes parked connections at once: the process exits well before
/// shutdown_timeout (30 s) and every parked client sees its connection end; one
/// whose request was already sent gets its answer first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_closes_parked_connections() {
    bounded(60, async {
        let app = Backend::start("app").await;
        let (admin, web) = (free_port(), free_port());
        let mut f = Fulcrum::start(&config(admin, web, app.addr, "60s")).await;
        let pid = f.pid();
        let before = epoll_sets(pid);
        let before = &before;
        let mut conns = Vec::new();
        for _ in 0..5 {
            let mut c = Conn::connect(local(web)).await.unwrap();
            assert_eq!(c.get("/").await.unwrap().status, 200);
            conns.push(c);
        }
        eventually(
            Duration::from_secs(5),
            "the 5 connections parked",
            || async move { (in_new_sets(pid, before) == 5).then_some(()) },
        )
        .await;
        // A request already sent to a parked connection when SIGTERM comes is
        // answered (whether it was resumed before the drain began or by it), and
        // the connection closes after it, as on one not parked.
        let mut asking = conns.pop().unwrap();
        asking
            .send(b"GET /last HTTP/1.1\r\nHost: test.local\r\n\r\n")
            .await
            .unwrap();
        let t = Instant::now();
        f.sigterm();
        let r = asking.read_response().await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        assert!(asking.closed_without_bytes(Duration::from_secs(10)).await);
        for c in conns.iter_mut() {
            assert!(
                c.closed_without_bytes(Duration::from_secs(10)).await,
                "a parked connection stayed open after SIGTERM"
            );
        }
        let status = f
            .wait_exit(Duration::from_secs(15))
            .await
            .expect("fulcrum did not exit");
        assert!(status.success(), "{status}");
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "exit took {:?}: parked connections held the shutdown",
            t.elapsed()
        );
    })
    .await;
}
