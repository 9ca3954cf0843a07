//! Listener admission (SPEC §2 `allow`, `runtime.max_connections`; §9 rejected
//! connections): refused clients are closed at accept, before any response, and
//! counted by reason.

mod common;

use std::time::Duration;

use common::*;

/// A 127.0.0.1 client of a listener that allows only 10.0.0.0/8 is closed at once
/// and counted `not_allowed`; a listener without `allow` serves the same client.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn allow_list_closes_other_sources_at_accept() {
    bounded(60, async {
        let a = Backend::start("allow").await;
        let (admin, guarded, open) = (free_port(), free_port(), free_port());
        let yaml = format!(
            "runtime: {{worker_threads: 2}}\n\
             admin: {{bind: \"127.0.0.1:{admin}\"}}\n\
             listeners:\n\
             \x20 - name: guarded\n\
             \x20   bind: \"127.0.0.1:{guarded}\"\n\
             \x20   allow: [10.0.0.0/8]\n\
             \x20   default_action: {{forward: web}}\n\
             \x20 - name: open\n\
             \x20   bind: \"127.0.0.1:{open}\"\n\
             \x20   default_action: {{forward: web}}\n\
             target_groups:\n\
             \x20 - name: web\n\
             \x20   health_check: {{path: /hc, interval: 30s, timeout: 2s}}\n\
             \x20   targets: [\"{}\"]\n",
            a.addr
        );
        let f = Fulcrum::start(&yaml).await;

        assert!(
            closed_at_accept(local(guarded)).await,
            "a client outside the allow-list got bytes or was left open"
        );
        assert_eq!(a.requests(), 0);

        let series = [("listener", "guarded"), ("reason", "not_allowed")];
        let n = f
            .wait_metric(
                "fulcrum_rejected_connections_total",
                &series,
                Duration::from_secs(3),
            )
            .await;
        assert_eq!(
            n, 1.0,
            "fulcrum_rejected_connections_total{{listener=\"guarded\",reason=\"not_allowed\"}}"
        );

        let r = get(local(open), "/").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "allow");
        let m = f.metrics().await;
        assert_eq!(
            metric(
                &m,
                "fulcrum_rejected_connections_total",
                &[("listener", "open")]
            )
            .unwrap_or(0.0),
            0.0,
            "nothing rejected on the open listener"
        );
    })
    .await;
}

/// With `max_connections: 2` and two idle keep-alive clients, a third client is
/// closed at once and counted `max_connections`; once one client leaves, a new one
/// is served, and the admin API is never counted against the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_connections_closes_the_excess_at_accept() {
    bounded(60, async {
        let a = Backend::start("maxconn").await;
        let (admin, web) = (free_port(), free_port());
        let yaml = simple_config(admin, web, &[a.addr]).replace(
            "runtime: {worker_threads: 2}",
            "runtime: {worker_threads: 2, max_connections: 2}",
        );
        assert!(yaml.contains("max_connections: 2"));
        let f = Fulcrum::start(&yaml).await;

        let mut c1 = Conn::connect(local(web)).await.unwrap();
        assert_eq!(c1.get("/1").await.unwrap().status, 200);
        let mut c2 = Conn::connect(local(web)).await.unwrap();
        assert_eq!(c2.get("/2").await.unwrap().status, 200);

        // The admin API still answers with both slots taken.
        let (st, _) = f.admin_get("/healthz").await;
        assert_eq!(st, 200);

        assert!(
            closed_at_accept(local(web)).await,
            "a third connection past max_connections got bytes or was left open"
        );
        assert_eq!(
            a.requests(),
            2,
            "the third client's request reached the target"
        );
        let series = [("listener", "web"), ("reason", "max_connections")];
        let n = f
            .wait_metric(
                "fulcrum_rejected_connections_total",
                &series,
                Duration::from_secs(3),
            )
            .await;
        assert_eq!(n, 1.0);

        drop(c1);
        let served = eventually(Duration::from_secs(5), "a slot frees up", || async move {
            let mut c = Conn::connect(local(web)).await.ok()?;
            let r = c.get("/4").await.ok()?;
            Some((r, c))
        })
        .await;
        assert_eq!(served.0.status, 200);
        // The connection that stayed open is still served.
        assert_eq!(c2.get("/5").await.unwrap().status, 200);
    })
    .await;
}
