//! `fulcrum demo` (SPEC §1): the quick start serves on its fixed ports, rotates over
//! its three targets and stops cleanly on Ctrl-C.

mod common;

use std::time::Duration;

use common::*;

const DEMO_PORTS: [u16; 5] = [8000, 8001, 8002, 8003, 9900];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn demo_serves_round_robin_and_stops_on_sigint() {
    bounded(60, async {
        // The demo binds fixed ports (listener 8000, targets 8001-8003, admin 9900).
        for port in DEMO_PORTS {
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                eprintln!("skipping the demo test: 127.0.0.1:{port} is already taken");
                return;
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let root = repo_root();
        let mut f = Fulcrum::spawn(
            dir,
            root.join("config/demo.yaml"),
            local(9900),
            &["demo".to_string()],
            Some(&root),
        )
        .await;

        let mut bodies = Vec::new();
        for _ in 0..6 {
            let r = get(local(8000), "/").await;
            assert_eq!(r.status, 200, "{r:?}");
            bodies.push(r.text());
        }
        let distinct: std::collections::HashSet<_> = bodies.iter().collect();
        assert_eq!(
            distinct.len(),
            3,
            "three different targets answer: {bodies:?}"
        );
        for i in 0..3 {
            assert_eq!(bodies[i], bodies[i + 3], "answers rotate: {bodies:?}");
        }

        f.sigint();
        let status = f
            .wait_exit(Duration::from_secs(15))
            .await
            .expect("fulcrum demo exits after SIGINT");
        assert_eq!(status.code(), Some(0), "exit status {status}");
    })
    .await;
}
