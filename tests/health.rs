//! Health checks (SPEC §4, §8, §9): ALB states and reason codes, timing against the
//! configured interval and thresholds (neither too late nor too early), the first
//! round before listeners accept, tcp checks, `port`, `matcher`, `host` and `path`,
//! metrics, `fulcrum status`, and health state across a reload.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;

const NODE: &str = "name: lb-test, zone: zone-a";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One http listener `web` forwarding to group `web` (round robin, [`FAST_HC`]).
fn web_config(admin: u16, web: u16, targets: &[SocketAddr]) -> String {
    let t: Vec<String> = targets.iter().map(|a| tgt(*a)).collect();
    lb_config(
        NODE,
        admin,
        &[("web", "http", web, "web")],
        &[group("web", "http", &[], FAST_HC, &t)],
    )
}

/// A transition observed `took` after the change that caused it: with checks every
/// 1 s and a threshold of 2, it needs at least one more check after the first one
/// (so not before ~1 s) and at most two intervals (plus a margin).
fn assert_two_checks(took: Duration, what: &str) {
    assert!(
        took >= ms(900),
        "{what} after {took:?}: earlier than (threshold - 1) x interval = 1 s"
    );
    assert!(
        took <= ms(3500),
        "{what} after {took:?}: later than threshold x interval = 2 s (+1.5 s margin)"
    );
}

/// Waits until `b` has seen two checks: the first round at start, then one interval
/// later the second; from then on they run every interval.
async fn settled(b: &Backend) {
    eventually(ms(5000), "two health checks", || async {
        (b.health_checks() >= 2).then_some(())
    })
    .await;
}

/// A backend whose `/hc` starts answering 500 goes unhealthy with
/// `Target.ResponseCodeMismatch` within 2 intervals (not before 1), traffic leaves it
/// at that moment, and it comes back after `healthy_threshold` passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn response_code_mismatch_goes_unhealthy_in_time_and_recovers() {
    bounded(60, async {
        let a = Backend::start("rc-a").await;
        let b = Backend::start("rc-b").await;
        let web = free_port();
        let f = Fulcrum::start(&web_config(free_port(), web, &[a.addr, b.addr])).await;
        f.wait_state("web", a.addr, "healthy", ms(5000)).await;
        f.wait_state("web", b.addr, "healthy", ms(5000)).await;
        settled(&a).await;

        let traffic = Sampler::start(local(web));
        tokio::time::sleep(ms(300)).await;
        let t0 = Instant::now();
        a.set_health(500);
        let (t, seen) = f.wait_state("web", a.addr, "unhealthy", ms(8000)).await;
        assert_two_checks(seen - t0, "unhealthy");
        assert_eq!(t["reason"], "Target.ResponseCodeMismatch", "{t}");
        assert_eq!(
            t["description"], "Health checks failed with these codes: [500]",
            "{t}"
        );
        tokio::time::sleep(ms(1000)).await;
        let samples = traffic.finish().await;
        let errors: Vec<_> = samples.iter().filter(|s| !s.1.starts_with("rc-")).collect();
        assert!(errors.is_empty(), "failed requests: {errors:?}");
        let a_after = |from: Instant| samples.iter().any(|(at, who)| who == "rc-a" && *at >= from);
        assert!(
            a_after(t0 + ms(800)),
            "rc-a stopped receiving traffic before (threshold - 1) x interval"
        );
        assert!(
            !a_after(seen + ms(300)),
            "rc-a still received traffic after it was shown unhealthy"
        );
        assert!(
            samples.iter().any(|(at, who)| who == "rc-b" && *at > seen),
            "rc-b took the traffic"
        );

        let t1 = Instant::now();
        a.set_health(200);
        let (t, seen) = f.wait_state("web", a.addr, "healthy", ms(8000)).await;
        assert_two_checks(seen - t1, "healthy again (healthy_threshold 2)");
        assert!(t["reason"].is_null() && t["description"].is_null(), "{t}");
        let got = tally(local(web), "/", 10).await;
        assert!(count(&got, "rc-a") >= 3, "traffic back on rc-a: {got:?}");
    })
    .await;
}

/// An unhealthy target in `fulcrum_target_state`, the healthy/unhealthy gauges,
/// `fulcrum_health_checks_total` and the `fulcrum status` table.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unhealthy_target_in_metrics_and_status_command() {
    bounded(60, async {
        let a = Backend::start("me-a").await;
        let b = Backend::start("me-b").await;
        a.set_health(500);
        let f = Fulcrum::start(&web_config(free_port(), free_port(), &[a.addr, b.addr])).await;
        f.wait_state("web", a.addr, "unhealthy", ms(6000)).await;

        let m = f.metrics().await;
        let (sa, sb) = (a.addr.to_string(), b.addr.to_string());
        let state = |target: &str, state: &str| {
            let l = [
                ("target_group", "web"),
                ("target", target),
                ("state", state),
            ];
            metric(&m, "fulcrum_target_state", &l)
        };
        assert_eq!(state(&sa, "unhealthy"), Some(1.0), "{m}");
        assert_eq!(state(&sa, "healthy"), Some(0.0), "{m}");
        assert_eq!(state(&sa, "initial"), Some(0.0), "{m}");
        assert_eq!(state(&sb, "healthy"), Some(1.0), "{m}");
        assert_eq!(state(&sb, "unhealthy"), Some(0.0), "{m}");
        let zone = [("target_group", "web"), ("zone", "zone-a")];
        assert_eq!(
            metric(&m, "fulcrum_healthy_targets", &zone),
            Some(1.0),
            "{m}"
        );
        assert_eq!(
            metric(&m, "fulcrum_unhealthy_targets", &zone),
            Some(1.0),
            "{m}"
        );
        for (result, least) in [("fail", 2.0), ("pass", 1.0)] {
            let l = [("target_group", "web"), ("result", result)];
            let v = metric(&m, "fulcrum_health_checks_total", &l).unwrap_or(0.0);
            assert!(v >= least, "health checks {result}: {v}\n{m}");
        }

        let out = fulcrum_cli(&["status", "-c", &f.config_path()]).await;
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
        let row = |addr: &str| {
            stdout
                .lines()
                .find(|l| l.contains(addr))
                .unwrap_or_else(|| panic!("no row for {addr}:\n{stdout}"))
                .to_string()
        };
        let ra = row(&sa);
        assert!(ra.contains("web") && ra.contains("unhealthy"), "{stdout}");
        assert!(ra.contains("Target.ResponseCodeMismatch"), "{stdout}");
        assert!(row(&sb).contains("healthy") && !row(&sb).contains("unhealthy"));
    })
    .await;
}

/// A stopped backend (connection refused) → `Target.FailedHealthChecks`; started
/// again on the same port it recovers and gets traffic back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopped_backend_fails_health_checks_and_recovers_on_restart() {
    bounded(60, async {
        let mut a = Backend::start("st-a").await;
        let b = Backend::start("st-b").await;
        let web = free_port();
        let f = Fulcrum::start(&web_config(free_port(), web, &[a.addr, b.addr])).await;
        f.wait_state("web", a.addr, "healthy", ms(5000)).await;
        settled(&a).await;

        let t0 = Instant::now();
        a.stop();
        let (t, seen) = f.wait_state("web", a.addr, "unhealthy", ms(8000)).await;
        assert_two_checks(seen - t0, "unhealthy after the stop");
        assert_eq!(t["reason"], "Target.FailedHealthChecks", "{t}");
        let got = tally(local(web), "/", 8).await;
        assert_eq!(count(&got, "st-b"), 8, "{got:?}");

        let t1 = Instant::now();
        a.restart().await;
        let (_, seen) = f.wait_state("web", a.addr, "healthy", ms(8000)).await;
        assert_two_checks(seen - t1, "healthy after the restart");
        let got = tally(local(web), "/", 10).await;
        assert!(count(&got, "st-a") >= 3, "{got:?}");
    })
    .await;
}

/// A target that accepts and never answers → `Target.Timeout`, and no client
/// request is sent to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hanging_backend_times_out() {
    bounded(60, async {
        let a = Backend::start("hg-a").await;
        let h = HangBackend::start().await;
        let web = free_port();
        let f = Fulcrum::start(&web_config(free_port(), web, &[a.addr, h.addr])).await;
        let (t, _) = f.wait_state("web", h.addr, "unhealthy", ms(6000)).await;
        assert_eq!(t["reason"], "Target.Timeout", "{t}");
        assert!(h.connections() >= 2, "the checks connected");
        let got = tokio::time::timeout(ms(10_000), tally(local(web), "/", 6))
            .await
            .expect("a request went to the hanging target");
        assert_eq!(count(&got, "hg-a"), 6, "{got:?}");
    })
    .await;
}

/// At start the first round runs before listeners accept: the hanging target's
/// timeout (1.5 s) delays readiness and the port refuses connections until then,
/// every request (even ones sent before `/readyz`) goes to the live target, the live target is `healthy` after one pass
/// although `healthy_threshold` is 5, the others are `initial`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn first_round_runs_before_listeners_accept() {
    bounded(60, async {
        let a = Backend::start("fr-a").await;
        let b = Backend::start("fr-b").await;
        b.set_health(500); // answers traffic, fails its check
        let dead = local(free_port());
        let h = HangBackend::start().await;
        let web = free_port();
        let hc = "path: /hc, interval: 30s, timeout: 1500ms, healthy_threshold: 5, unhealthy_threshold: 2";
        let targets = [tgt(a.addr), tgt(b.addr), tgt(dead), tgt(h.addr)];
        let cfg = lb_config(
            NODE,
            free_port(),
            &[("web", "http", web, "web")],
            &[group("web", "http", &[], hc, &targets)],
        );

        // A client hammering the listener from before the process starts.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spawned = Instant::now();
        let early = tokio::spawn({
            let stop = stop.clone();
            async move {
                let (mut out, mut connected) = (Vec::new(), Vec::new());
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    if let Ok(mut c) = Conn::connect(local(web)).await {
                        connected.push(spawned.elapsed());
                        let r = tokio::time::timeout(ms(10_000), c.get("/early")).await;
                        let who = match r {
                            Ok(Ok(r)) => served_by(&r),
                            Ok(Err(e)) => format!("error {e}"),
                            Err(_) => "error timeout".into(),
                        };
                        out.push((spawned.elapsed(), who));
                    }
                    tokio::time::sleep(ms(20)).await;
                }
                (out, connected)
            }
        });
        let f = Fulcrum::start(&cfg).await;
        let ready = spawned.elapsed();
        let got = tally(local(web), "/", 20).await;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let (early, connected) = early.await.unwrap();

        assert_eq!(count(&got, "fr-a"), 20, "right after /readyz: {got:?}");
        assert!(!early.is_empty(), "the early client got no answer");
        assert!(
            early.iter().all(|(_, who)| who == "fr-a"),
            "requests around start: {early:?}"
        );
        if let Some((first, _)) = early.first() {
            assert!(
                *first >= ms(1300),
                "a request was answered {first:?} after start, before the 1.5 s check timeout"
            );
        }
        assert!(
            ready >= ms(1300),
            "/readyz answered 200 after {ready:?}, before the first round (1.5 s timeout) ended"
        );
        // Until then the listener's port refuses connections (it is bound, not
        // listening), so none waits in a queue for the round to end.
        assert!(
            connected.first().is_some_and(|t| *t >= ms(1300)),
            "connections accepted by the kernel at {connected:?} after start, before the 1.5 s round ended"
        );
        let (t, _) = f.wait_state("web", a.addr, "healthy", ms(100)).await;
        assert!(t["reason"].is_null(), "{t}");
        for addr in [b.addr, dead, h.addr] {
            let t = f.target("web", addr).await.expect("listed");
            assert_eq!(t["state"], "initial", "one failure of 2: {t}");
            assert_eq!(t["reason"], "Elb.InitialHealthChecking", "{t}");
        }
        assert_eq!(b.requests(), 0, "the failing target got traffic");
    })
    .await;
}

/// tcp groups are checked by connecting (the default for tcp groups, and with
/// `protocol: tcp`): an HTTP /hc answering 500 does not matter, a refused connection
/// does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tcp_health_checks_on_a_tcp_group() {
    bounded(60, async {
        let a = Backend::start("tc-a").await;
        let b = Backend::start("tc-b").await;
        b.set_health(500);
        let c = Backend::start("tc-c").await;
        c.set_health(500);
        let dead = local(free_port());
        let raw = free_port();
        let hc = "interval: 1s, timeout: 500ms, healthy_threshold: 2, unhealthy_threshold: 2";
        let hc_tcp = format!("protocol: tcp, {hc}");
        let cfg = lb_config(
            NODE,
            free_port(),
            &[("raw", "tcp", raw, "tg")],
            &[
                group("tg", "tcp", &[], hc, &[tgt(a.addr), tgt(b.addr), tgt(dead)]),
                group("tg2", "tcp", &[], &hc_tcp, &[tgt(c.addr)]),
            ],
        );
        let f = Fulcrum::start(&cfg).await;
        let (t, _) = f.wait_state("tg", dead, "unhealthy", ms(6000)).await;
        assert_eq!(t["reason"], "Target.FailedHealthChecks", "{t}");
        for (g, addr) in [("tg", a.addr), ("tg", b.addr), ("tg2", c.addr)] {
            assert_eq!(f.state_of(g, addr).await, "healthy", "{g}/{addr}");
        }
        for be in [&a, &b, &c] {
            assert!(be.connections() >= 1, "{}: the checks connected", be.name);
            assert_eq!(be.health_checks(), 0, "{}: no HTTP check on tcp", be.name);
        }
        let got = tally(local(raw), "/", 6).await;
        assert_eq!(count(&got, "tc-a") + count(&got, "tc-b"), 6, "{got:?}");
        assert!(
            count(&got, "tc-a") > 0 && count(&got, "tc-b") > 0,
            "{got:?}"
        );
    })
    .await;
}

/// `port: N` checks another port than the traffic port, both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn check_port_overrides_the_traffic_port() {
    bounded(60, async {
        let a = Backend::start("pt-a").await;
        a.set_health(500); // its own /hc fails; its health port says ok
        let a_hc = Backend::start("pt-a-hc").await;
        let b = Backend::start("pt-b").await; // its own /hc is ok; its health port fails
        let b_hc = Backend::start("pt-b-hc").await;
        b_hc.set_health(500);
        let web = free_port();
        let hc = |port: u16| format!("{FAST_HC}, port: {port}");
        let cfg = lb_config(
            NODE,
            free_port(),
            &[("web", "http", web, "web")],
            &[
                group("web", "http", &[], &hc(a_hc.port()), &[tgt(a.addr)]),
                group("other", "http", &[], &hc(b_hc.port()), &[tgt(b.addr)]),
            ],
        );
        let f = Fulcrum::start(&cfg).await;
        let (t, _) = f.wait_state("other", b.addr, "unhealthy", ms(6000)).await;
        assert_eq!(t["reason"], "Target.ResponseCodeMismatch", "{t}");
        assert_eq!(f.state_of("web", a.addr).await, "healthy");
        assert_eq!(a.health_checks(), 0, "the traffic port was checked");
        assert_eq!(b.health_checks(), 0, "the traffic port was checked");
        assert!(a_hc.health_checks() >= 1 && b_hc.health_checks() >= 2);
        assert_eq!(a_hc.requests() + b_hc.requests(), 0);
        let got = tally(local(web), "/", 4).await;
        assert_eq!(
            count(&got, "pt-a"),
            4,
            "traffic on the traffic port: {got:?}"
        );
    })
    .await;
}

/// `matcher` as a range and as a list; the default `"200"` refuses a 204.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn matcher_range_and_list() {
    bounded(60, async {
        let mk = |name: &str, code: u16| {
            let name = name.to_string();
            async move {
                let b = Backend::start(&name).await;
                b.set_health(code);
                b
            }
        };
        let (range204, list202, list204, default204) = (
            mk("m-r204", 204).await,
            mk("m-l202", 202).await,
            mk("m-l204", 204).await,
            mk("m-d204", 204).await,
        );
        let m = |matcher: &str| format!("{FAST_HC}, matcher: \"{matcher}\"");
        let cfg = lb_config(
            NODE,
            free_port(),
            &[("web", "http", free_port(), "range")],
            &[
                group("range", "http", &[], &m("200-299"), &[tgt(range204.addr)]),
                group(
                    "list",
                    "http",
                    &[],
                    &m("200,202"),
                    &[tgt(list202.addr), tgt(list204.addr)],
                ),
                group("dflt", "http", &[], FAST_HC, &[tgt(default204.addr)]),
            ],
        );
        let f = Fulcrum::start(&cfg).await;
        for (g, addr) in [("list", list204.addr), ("dflt", default204.addr)] {
            let (t, _) = f.wait_state(g, addr, "unhealthy", ms(6000)).await;
            assert_eq!(t["reason"], "Target.ResponseCodeMismatch", "{t}");
            assert_eq!(
                t["description"], "Health checks failed with these codes: [204]",
                "{t}"
            );
        }
        assert_eq!(f.state_of("range", range204.addr).await, "healthy");
        assert_eq!(f.state_of("list", list202.addr).await, "healthy");
    })
    .await;
}

/// Checks are `GET path` with the configured `Host` (default: the target's
/// address).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn check_host_and_path_as_configured() {
    bounded(60, async {
        let a = Backend::start("hp-a").await;
        let b = Backend::start("hp-b").await;
        let cfg = lb_config(
            NODE,
            free_port(),
            &[("web", "http", free_port(), "named")],
            &[
                group(
                    "named",
                    "http",
                    &[],
                    &format!("{FAST_HC}, host: example.org"),
                    &[tgt(a.addr)],
                ),
                group("plain", "http", &[], FAST_HC, &[tgt(b.addr)]),
            ],
        );
        let _f = Fulcrum::start(&cfg).await;
        eventually(ms(5000), "two checks on each", || async {
            (a.health_checks() >= 2 && b.health_checks() >= 2).then_some(())
        })
        .await;
        for (be, host) in [(&a, "example.org".to_string()), (&b, b.addr.to_string())] {
            for s in be.hc_seen() {
                assert_eq!(s.method, "GET", "{s:?}");
                assert_eq!(s.target, "/hc", "{s:?}");
                assert_eq!(s.header_all("host"), vec![host.clone()], "{s:?}");
            }
        }
    })
    .await;
}

/// An unrelated reload (a new group) keeps every staying target's state and `since`
/// (healthy stays healthy, unhealthy stays unhealthy); the new group's target gets an
/// immediate check and is healthy after one pass (its interval is 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_state_survives_an_unrelated_reload() {
    bounded(60, async {
        let a = Backend::start("rl-a").await;
        let u = Backend::start("rl-u").await;
        u.set_health(500);
        let d = Backend::start("rl-d").await;
        let (admin, web) = (free_port(), free_port());
        let web_group = group("web", "http", &[], FAST_HC, &[tgt(a.addr), tgt(u.addr)]);
        let before = lb_config(
            NODE,
            admin,
            &[("web", "http", web, "web")],
            std::slice::from_ref(&web_group),
        );
        let f = Fulcrum::start(&before).await;
        f.wait_state("web", u.addr, "unhealthy", ms(6000)).await;
        let a0 = f.target("web", a.addr).await.unwrap();
        let u0 = f.target("web", u.addr).await.unwrap();
        assert_eq!(a0["state"], "healthy", "{a0}");
        tokio::time::sleep(ms(1200)).await; // a new `since` would differ

        let slow_hc = "path: /hc, interval: 30s, timeout: 2s, healthy_threshold: 5";
        let other = group("other", "http", &[], slow_hc, &[tgt(d.addr)]);
        let after = lb_config(
            NODE,
            admin,
            &[("web", "http", web, "web")],
            &[web_group, other],
        );
        f.reload_yaml(&after).await;
        for round in 0..2 {
            let a1 = f.target("web", a.addr).await.unwrap();
            let u1 = f.target("web", u.addr).await.unwrap();
            assert_eq!(a1["state"], "healthy", "round {round}: {a1}");
            assert_eq!(a1["since"], a0["since"], "round {round}: {a0} -> {a1}");
            assert_eq!(u1["state"], "unhealthy", "round {round}: {u1}");
            assert_eq!(u1["reason"], u0["reason"], "round {round}: {u1}");
            assert_eq!(u1["since"], u0["since"], "round {round}: {u0} -> {u1}");
            let got = tally(local(web), "/", 4).await;
            assert_eq!(count(&got, "rl-a"), 4, "{got:?}");
            tokio::time::sleep(ms(1000)).await;
        }
        f.wait_state("other", d.addr, "healthy", ms(3000)).await;
    })
    .await;
}

/// A reload that shortens a group's check interval takes effect at once (the next
/// check within the new interval, then one per interval), not after the wait the
/// old 60 s interval had started.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reloaded_interval_applies_at_once() {
    bounded(60, async {
        let a = Backend::start("iv-a").await;
        let (admin, web) = (free_port(), free_port());
        let cfg = |hc: &str| {
            lb_config(
                NODE,
                admin,
                &[("web", "http", web, "web")],
                &[group("web", "http", &[], hc, &[tgt(a.addr)])],
            )
        };
        let f = Fulcrum::start(&cfg("path: /hc, interval: 60s, timeout: 2s")).await;
        f.reload_yaml(&cfg("path: /hc, interval: 1s, timeout: 500ms"))
            .await;
        let before = a.health_checks();
        let t0 = Instant::now();
        eventually(ms(6000), "three checks at the new 1 s interval", || async {
            (a.health_checks() >= before + 3).then_some(())
        })
        .await;
        let took = t0.elapsed();
        assert!(
            took >= ms(1500),
            "three checks {took:?} after the reload: faster than every 1 s"
        );
        assert_eq!(f.state_of("web", a.addr).await, "healthy");
    })
    .await;
}

/// Checks run every `interval`: the second check of a target comes one interval
/// after the first round at start (not earlier), the third one interval later.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_check_after_the_first_round_comes_one_interval_later() {
    bounded(60, async {
        let a = Backend::start("cad-a").await;
        let (admin, web) = (free_port(), free_port());
        let cfg = lb_config(
            NODE,
            admin,
            &[("web", "http", web, "web")],
            &[group(
                "web",
                "http",
                &[],
                "path: /hc, interval: 4s, timeout: 1s",
                &[tgt(a.addr)],
            )],
        );
        let t0 = Instant::now();
        let f = Fulcrum::start(&cfg).await;
        assert_eq!(a.health_checks(), 1, "the first round");
        eventually(ms(8000), "a second check", || async {
            (a.health_checks() >= 2).then_some(())
        })
        .await;
        let second = t0.elapsed();
        assert!(
            second >= ms(3500) && second < ms(7000),
            "second check {second:?} after start; interval 4 s"
        );
        eventually(ms(8000), "a third check", || async {
            (a.health_checks() >= 3).then_some(())
        })
        .await;
        let gap = t0.elapsed() - second;
        assert!(
            gap >= ms(3000) && gap < ms(6000),
            "third check {gap:?} after the second"
        );
        assert_eq!(f.state_of("web", a.addr).await, "healthy");
    })
    .await;
}
