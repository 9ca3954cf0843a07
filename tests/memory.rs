//! The process's memory policy: transparent huge pages are off for fulcrum (so
//! its resident memory follows parked connections in 4 KiB pages, not 2 MiB
//! steps) unless `FULCRUM_ALLOW_THP=1` leaves the setting alone.

mod common;

use common::*;

/// `THP_enabled:` of `/proc/PID/status` (None: a kernel that does not say).
fn thp_enabled(pid: &str) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .map(|v| v.trim().to_string())
}

fn config(admin: u16, web: u16, target: std::net::SocketAddr) -> String {
    format!(
        "runtime: {{worker_threads: 1}}\n\
         admin: {{bind: \"127.0.0.1:{admin}\"}}\n\
         listeners:\n\
         \x20 - {{name: web, bind: \"127.0.0.1:{web}\", default_action: {{forward: app}}}}\n\
         target_groups:\n\
         \x20 - {{name: app, targets: [\"{target}\"]}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn huge_pages_are_off_unless_allowed() {
    // Only where the tests themselves run with huge pages allowed can the
    // difference show.
    if thp_enabled("self").as_deref() != Some("1") {
        eprintln!("skipped: the test process has no THP_enabled: 1 in /proc/self/status");
        return;
    }
    bounded(60, async {
        let app = Backend::start("app").await;
        let (admin, web) = (free_port(), free_port());
        let f = Fulcrum::start(&config(admin, web, app.addr)).await;
        assert_eq!(thp_enabled(&f.pid().to_string()).as_deref(), Some("0"));
        let r = get(local(web), "/").await;
        assert_eq!(r.status, 200, "{r:?}");
        drop(f);

        let (admin, web) = (free_port(), free_port());
        let f =
            Fulcrum::start_env(&config(admin, web, app.addr), &[("FULCRUM_ALLOW_THP", "1")]).await;
        assert_eq!(thp_enabled(&f.pid().to_string()).as_deref(), Some("1"));
    })
    .await;
}
