//! `/metrics` passes `promtool check metrics` (Debian's `prometheus` package,
//! installed by scripts/install-test-deps.sh): names, HELP/TYPE lines, buckets.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_pass_promtool_check() {
    bounded(60, async {
        let a = Backend::start("p-a").await;
        let web = free_port();
        let f = Fulcrum::start(&simple_config(free_port(), web, &[a.addr])).await;
        for i in 0..5 {
            assert_eq!(get(local(web), &format!("/p{i}")).await.status, 200);
        }
        let text = f.metrics().await;
        assert!(
            text.contains("# TYPE fulcrum_target_response_seconds histogram"),
            "{text}"
        );
        assert!(text.contains("le=\"0.0025\""), "fixed buckets: {text}");
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect(
                "promtool is missing: run scripts/install-test-deps.sh (Debian package prometheus)",
            );
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    })
    .await;
}
