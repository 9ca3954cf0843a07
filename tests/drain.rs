//! Draining (SPEC §4, §5): a target removed by a reload gets no new work, its
//! in-flight requests finish within `deregistration_delay` (502 after it), tcp
//! connections are closed when it ends, idle pooled connections close at once, and
//! a target re-added while draining returns to service.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;

const NODE: &str = "name: lb-test, zone: zone-a";
const SLOW_HC: &str = "path: /hc, interval: 30s, timeout: 2s";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Listener `web` (http, or tcp with `tcp`) on group `web` with the given delay.
fn drain_config(
    admin: u16,
    web: u16,
    tcp: bool,
    delay: &str,
    hc: &str,
    t: &[SocketAddr],
) -> String {
    let proto = if tcp { "tcp" } else { "http" };
    let hc = if tcp {
        "interval: 30s, timeout: 2s"
    } else {
        hc
    };
    let delay = format!("deregistration_delay: {delay}");
    let t: Vec<String> = t.iter().map(|a| tgt(*a)).collect();
    let g = group("web", proto, &[&delay], hc, &t);
    lb_config(NODE, admin, &[("web", proto, web, "web")], &[g])
}

/// Starts `GET path` in the background and waits until one of `bs` received it;
/// returns the pending request, its start, and the index of that backend.
async fn start_on_some(
    web: u16,
    path: &'static str,
    bs: &[&Backend],
) -> (tokio::task::JoinHandle<Response>, Instant, usize) {
    let started = Instant::now();
    let req = tokio::spawn(get(local(web), path));
    let i = eventually(ms(2000), "the request reached a backend", || async {
        bs.iter().position(|b| b.requests() == 1)
    })
    .await;
    (req, started, i)
}

/// `deregistration_delay: 5s`: a `/slow?ms=2000` request in flight on the removed
/// target completes 200 while new requests go to the other target; the status shows
/// the removed target `draining` (`Target.DeregistrationInProgress`, in_flight 1)
/// while the request runs, its connection closes with the answer (not pooled
/// again), and the target leaves the status after the delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_flight_request_finishes_while_new_ones_move() {
    bounded(60, async {
        let a = Backend::start("dr-a").await;
        let b = Backend::start("dr-b").await;
        let (admin, web) = (free_port(), free_port());
        let both = [a.addr, b.addr];
        let f = Fulcrum::start(&drain_config(admin, web, false, "5s", SLOW_HC, &both)).await;
        let (req, started, i) = start_on_some(web, "/slow?ms=2000", &[&a, &b]).await;
        let (gone, stays) = if i == 0 { (&a, &b) } else { (&b, &a) };

        f.reload_yaml(&drain_config(
            admin,
            web,
            false,
            "5s",
            SLOW_HC,
            &[stays.addr],
        ))
        .await;
        let reloaded = Instant::now();
        let got = tally(local(web), "/", 6).await;
        assert_eq!(count(&got, &stays.name), 6, "new requests: {got:?}");
        let mut looked = 0;
        while started.elapsed() < ms(1700) || looked == 0 {
            looked += 1;
            let t = f
                .target("web", gone.addr)
                .await
                .expect("draining target listed");
            assert_eq!(t["state"], "draining", "{t}");
            assert_eq!(t["reason"], "Target.DeregistrationInProgress", "{t}");
            assert_eq!(t["in_flight"], 1, "{t}");
            tokio::time::sleep(ms(200)).await;
        }
        let r = req.await.unwrap();
        assert_eq!((r.status, r.text()), (200, gone.name.clone()), "{r:?}");
        assert!(started.elapsed() >= ms(2000));
        // Its target connection is not pooled again: closed with the answer, long
        // before the delay ends (not kept until keep_alive_timeout).
        eventually(
            ms(1500),
            "the drained target's last connection closed",
            || async { (gone.data_closed() == gone.data_connections()).then_some(()) },
        )
        .await;
        assert!(reloaded.elapsed() < ms(4500), "{:?}", reloaded.elapsed());
        let left = reloaded + ms(5000) + ms(2000) - Instant::now();
        f.wait_state("web", gone.addr, "absent", left).await;
        assert_eq!(f.state_of("web", stays.addr).await, "healthy");
    })
    .await;
}

/// `deregistration_delay: 1s`: a `/slow?ms=4000` request still running when the
/// delay ends is answered 502 then (not before, not at the end of the request).
/// The reload that removes the target also lowers the delay from 300 s: the new
/// value is the one that applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_outliving_the_delay_gets_502() {
    bounded(60, async {
        let a = Backend::start("dl-a").await;
        let b = Backend::start("dl-b").await;
        let (admin, web) = (free_port(), free_port());
        let both = [a.addr, b.addr];
        let f = Fulcrum::start(&drain_config(admin, web, false, "300s", SLOW_HC, &both)).await;
        let (req, _, i) = start_on_some(web, "/slow?ms=4000", &[&a, &b]).await;
        let stays = if i == 0 { b.addr } else { a.addr };
        f.reload_yaml(&drain_config(admin, web, false, "1s", SLOW_HC, &[stays]))
            .await;
        let reloaded = Instant::now();
        let r = req.await.unwrap();
        let took = reloaded.elapsed();
        assert_eq!(r.status, 502, "{r:?}");
        assert!(
            took >= ms(700) && took <= ms(2500),
            "502 came {took:?} after the reload; the delay is 1 s"
        );
    })
    .await;
}

/// A tcp connection to a target removed from a tcp group keeps working during the
/// delay (2 s) and is closed when it ends; new connections go to the other target.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tcp_connection_closed_when_the_delay_ends() {
    bounded(60, async {
        let a = Backend::start("tp-a").await;
        let b = Backend::start("tp-b").await;
        let (admin, web) = (free_port(), free_port());
        let both = [a.addr, b.addr];
        let f = Fulcrum::start(&drain_config(admin, web, true, "2s", "", &both)).await;
        let mut c = Conn::connect(local(web)).await.unwrap();
        let who = served_by(&c.get("/one").await.unwrap());
        let (gone, stays) = if who == a.name { (&a, &b) } else { (&b, &a) };
        assert_eq!(who, gone.name);

        f.reload_yaml(&drain_config(admin, web, true, "2s", "", &[stays.addr]))
            .await;
        let reloaded = Instant::now();
        let t = f
            .target("web", gone.addr)
            .await
            .expect("listed while draining");
        assert_eq!(t["state"], "draining", "{t}");
        assert_eq!(t["active_connections"], 1, "{t}");
        let got = tally(local(web), "/", 4).await;
        assert_eq!(count(&got, &stays.name), 4, "new connections: {got:?}");
        tokio::time::sleep(ms(500)).await;
        let r = c
            .get("/two")
            .await
            .expect("the connection works while draining");
        assert_eq!(served_by(&r), gone.name);

        assert!(
            c.closed_without_bytes(ms(5000)).await,
            "the connection was not closed after the delay"
        );
        let took = reloaded.elapsed();
        assert!(
            took >= ms(1500) && took <= ms(3500),
            "closed {took:?} after the reload; the delay is 2 s"
        );
    })
    .await;
}

/// A target re-added while draining returns to its previous state and gets traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn target_readded_while_draining_returns_to_service() {
    bounded(60, async {
        let a = Backend::start("ra-a").await;
        let b = Backend::start("ra-b").await;
        let (admin, web) = (free_port(), free_port());
        let both = [a.addr, b.addr];
        let f = Fulcrum::start(&drain_config(admin, web, false, "30s", FAST_HC, &both)).await;
        // Hold a request on `a` so the drain cannot end early.
        let (req, _, i) = start_on_some(web, "/slow?ms=3000", &[&a, &b]).await;
        let (gone, stays) = if i == 0 { (&a, &b) } else { (&b, &a) };
        f.reload_yaml(&drain_config(
            admin,
            web,
            false,
            "30s",
            FAST_HC,
            &[stays.addr],
        ))
        .await;
        f.wait_state("web", gone.addr, "draining", ms(1000)).await;
        let got = tally(local(web), "/", 4).await;
        assert_eq!(count(&got, &stays.name), 4, "{got:?}");

        f.reload_yaml(&drain_config(admin, web, false, "30s", FAST_HC, &both))
            .await;
        let (t, _) = f.wait_state("web", gone.addr, "healthy", ms(2000)).await;
        assert!(t["reason"].is_null(), "{t}");
        let got = tally(local(web), "/", 10).await;
        assert!(count(&got, &gone.name) >= 3, "back in service: {got:?}");
        assert_eq!(req.await.unwrap().status, 200);
    })
    .await;
}

/// Regression: a target re-added by a reload after its deregistration delay had
/// ended (it had left the status) is a new target, not the finished drain coming
/// back: it is checked, becomes healthy and serves. Its old state, still held
/// until the next reload, once came back with the drain's end still fired, so
/// every request sent to it was answered 502 (found by tests/soak.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn target_readded_after_its_drain_ended_serves_again() {
    bounded(60, async {
        let a = Backend::start("rd-a").await;
        let b = Backend::start("rd-b").await;
        let (admin, web) = (free_port(), free_port());
        let both = [a.addr, b.addr];
        let f = Fulcrum::start(&drain_config(admin, web, false, "1s", SLOW_HC, &both)).await;
        f.reload_yaml(&drain_config(admin, web, false, "1s", SLOW_HC, &[b.addr]))
            .await;
        f.wait_state("web", a.addr, "absent", ms(4000)).await;

        f.reload_yaml(&drain_config(admin, web, false, "1s", SLOW_HC, &both))
            .await;
        f.wait_state("web", a.addr, "healthy", ms(3000)).await;
        let got = tally(local(web), "/", 10).await;
        assert_eq!(count(&got, "rd-a") + count(&got, "rd-b"), 10, "{got:?}");
        assert!(count(&got, "rd-a") >= 3, "back in service: {got:?}");
    })
    .await;
}

/// Idle pooled connections to a removed target are closed at once (the backend sees
/// them closed within a second of the reload), before any delay ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_pooled_connections_to_a_removed_target_close_at_once() {
    bounded(60, async {
        let a = Backend::start("ip-a").await;
        let b = Backend::start("ip-b").await;
        let (admin, web) = (free_port(), free_port());
        let both = [a.addr, b.addr];
        let f = Fulcrum::start(&drain_config(admin, web, false, "30s", SLOW_HC, &both)).await;
        tally(local(web), "/", 10).await;
        tokio::time::sleep(ms(200)).await;
        assert!(a.data_connections() >= 1, "no pooled connection to a");
        assert_eq!(
            a.data_closed(),
            0,
            "the pool closed its connections already"
        );

        f.reload_yaml(&drain_config(admin, web, false, "30s", SLOW_HC, &[b.addr]))
            .await;
        let reloaded = Instant::now();
        eventually(ms(1500), "a's idle pooled connections closed", || async {
            (a.data_closed() == a.data_connections()).then_some(())
        })
        .await;
        assert!(reloaded.elapsed() < ms(1500));
        let got = tally(local(web), "/", 4).await;
        assert_eq!(count(&got, "ip-b"), 4, "{got:?}");
    })
    .await;
}

/// A removed target with nothing open is still listed `draining` until its delay
/// ends, then leaves the status (aws-reference §4.1: deregistration completes at
/// once, "but the state is still shown as draining until the timeout expires").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_removed_target_listed_draining_until_the_delay_ends() {
    bounded(60, async {
        let a = Backend::start("il-a").await;
        let b = Backend::start("il-b").await;
        let (admin, web) = (free_port(), free_port());
        let both = [a.addr, b.addr];
        let f = Fulcrum::start(&drain_config(admin, web, false, "3s", SLOW_HC, &both)).await;
        f.reload_yaml(&drain_config(admin, web, false, "3s", SLOW_HC, &[b.addr]))
            .await;
        let reloaded = Instant::now();
        while reloaded.elapsed() < ms(2000) {
            let t = f.target("web", a.addr).await;
            let t = t.unwrap_or_else(|| panic!("gone {:?} after the reload", reloaded.elapsed()));
            assert_eq!(t["state"], "draining", "{t}");
            assert_eq!(t["reason"], "Target.DeregistrationInProgress", "{t}");
            tokio::time::sleep(ms(250)).await;
        }
        f.wait_state("web", a.addr, "absent", ms(3000)).await;
    })
    .await;
}

/// While a removed target drains, `fulcrum_target_state` says `draining` (1) and no
/// longer `healthy`; once it left, it is not counted healthy anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn draining_target_in_metrics() {
    bounded(60, async {
        let a = Backend::start("dm-a").await;
        let b = Backend::start("dm-b").await;
        let (admin, web) = (free_port(), free_port());
        let both = [a.addr, b.addr];
        let f = Fulcrum::start(&drain_config(admin, web, false, "2s", SLOW_HC, &both)).await;
        let (req, _, i) = start_on_some(web, "/slow?ms=1500", &[&a, &b]).await;
        let (gone, stays) = if i == 0 { (&a, &b) } else { (&b, &a) };
        f.reload_yaml(&drain_config(
            admin,
            web,
            false,
            "2s",
            SLOW_HC,
            &[stays.addr],
        ))
        .await;
        let target = gone.addr.to_string();
        let state = |m: &str, s: &str| {
            let l = [("target_group", "web"), ("target", &*target), ("state", s)];
            metric(m, "fulcrum_target_state", &l)
        };
        let m = f.metrics().await;
        assert_eq!(state(&m, "draining"), Some(1.0), "{m}");
        assert_eq!(state(&m, "healthy"), Some(0.0), "{m}");
        let zone = [("target_group", "web"), ("zone", "zone-a")];
        assert_eq!(
            metric(&m, "fulcrum_healthy_targets", &zone),
            Some(1.0),
            "{m}"
        );
        assert_eq!(req.await.unwrap().status, 200);
        f.wait_state("web", gone.addr, "absent", ms(5000)).await;
        let m = f.metrics().await;
        assert_ne!(
            state(&m, "healthy"),
            Some(1.0),
            "a removed target still healthy: {m}"
        );
    })
    .await;
}

/// A whole group removed by a reload: its targets drain like removed targets, so
/// the status keeps listing the group with them `draining` until the delay ends,
/// and its healthy-target count drops to 0 at once instead of keeping its last
/// value.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_group_drains_and_counts_no_healthy_targets() {
    bounded(60, async {
        let a = Backend::start("rg-a").await;
        let c = Backend::start("rg-c").await;
        let (admin, web) = (free_port(), free_port());
        let web_group = group("web", "http", &[], SLOW_HC, &[tgt(a.addr)]);
        let extra = group(
            "extra",
            "http",
            &["deregistration_delay: 3s"],
            SLOW_HC,
            &[tgt(c.addr)],
        );
        let listener = [("web", "http", web, "web")];
        let f = Fulcrum::start(&lb_config(
            NODE,
            admin,
            &listener,
            &[web_group.clone(), extra],
        ))
        .await;
        let zone = [("target_group", "extra"), ("zone", "zone-a")];
        let m = f.metrics().await;
        assert_eq!(
            metric(&m, "fulcrum_healthy_targets", &zone),
            Some(1.0),
            "{m}"
        );

        f.reload_yaml(&lb_config(NODE, admin, &listener, &[web_group]))
            .await;
        let reloaded = Instant::now();
        let t = f
            .target("extra", c.addr)
            .await
            .expect("the removed group's target is listed while it drains");
        assert_eq!(t["state"], "draining", "{t}");
        assert_eq!(t["reason"], "Target.DeregistrationInProgress", "{t}");
        let m = f.metrics().await;
        assert_eq!(
            metric(&m, "fulcrum_healthy_targets", &zone),
            Some(0.0),
            "{m}"
        );
        f.wait_state("extra", c.addr, "absent", ms(6000)).await;
        let left = reloaded.elapsed();
        assert!(
            left >= ms(2500),
            "left the status {left:?} after the reload, delay 3 s"
        );
    })
    .await;
}
