//! Balancing (SPEC §4): algorithms, fail-open, empty groups, zones across two nodes
//! (aws-reference §9's worked example), source_hash, `lb_cookie` and `app_cookie`
//! stickiness, slow start.

mod common;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime};

use common::*;

const NODE: &str = "name: lb-test, zone: zone-a";
/// Checks every 30 s: the first round makes live targets healthy, nothing changes.
const SLOW_HC: &str = "path: /hc, interval: 30s, timeout: 2s";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

async fn backends(prefix: &str, n: usize) -> Vec<Backend> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(Backend::start(&format!("{prefix}{i}")).await);
    }
    out
}

fn targets(bs: &[Backend]) -> Vec<String> {
    bs.iter().map(|b| tgt(b.addr)).collect()
}

/// One http listener `web` on group `web`.
fn one_group(admin: u16, web: u16, settings: &[&str], hc: &str, t: &[String]) -> String {
    let g = group("web", "http", settings, hc, t);
    lb_config(NODE, admin, &[("web", "http", web, "web")], &[g])
}

/// Two `/slow?ms=3000` requests hold two of three targets; the fast requests sent
/// meanwhile all go to the third.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn least_outstanding_requests_avoids_busy_targets() {
    bounded(60, async {
        let bs = backends("lor-", 3).await;
        let web = free_port();
        let settings = ["algorithm: least_outstanding_requests"];
        let f = Fulcrum::start(&one_group(
            free_port(),
            web,
            &settings,
            SLOW_HC,
            &targets(&bs),
        ))
        .await;
        let total = || bs.iter().map(|b| b.requests()).sum::<usize>();
        let mut slow = Vec::new();
        for n in 1..=2 {
            slow.push(tokio::spawn(get(local(web), "/slow?ms=3000")));
            eventually(ms(1500), "the slow request reached a target", || async {
                (total() == n).then_some(())
            })
            .await;
        }
        let busy: Vec<&Backend> = bs.iter().filter(|b| b.requests() == 1).collect();
        assert_eq!(
            busy.len(),
            2,
            "one slow request per target (LOR), not both on one"
        );
        let free = bs.iter().find(|b| b.requests() == 0).unwrap();
        let st = f.status_json(None).await;
        for b in &busy {
            let t = find_target(&st, "web", b.addr).unwrap();
            assert_eq!(t["in_flight"], 1, "{t}");
            // The connection carrying it is an active connection to the target.
            assert_eq!(t["active_connections"], 1, "{t}");
        }
        let t = find_target(&st, "web", free.addr).unwrap();
        assert_eq!(t["active_connections"], 0, "{t}");
        // A short pause between the fast requests: the balancer counts a request in
        // flight until it has finished with it, a moment after the client has the
        // whole response (the guard drops after the body is relayed and the
        // connection pooled), and a tie would go by rotation.
        let mut got = std::collections::BTreeMap::new();
        for _ in 0..9 {
            *got.entry(served_by(&get(local(web), "/").await))
                .or_insert(0) += 1;
            tokio::time::sleep(ms(50)).await;
        }
        assert_eq!(count(&got, &free.name), 9, "fast requests: {got:?}");
        for s in slow {
            assert_eq!(s.await.unwrap().status, 200);
        }
    })
    .await;
}

/// Weights 3:1 over 400 requests: about 300:100.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn weighted_random_follows_weights() {
    bounded(60, async {
        let bs = backends("wr-", 2).await;
        let web = free_port();
        let t = [tgt_weight(bs[0].addr, 3), tgt_weight(bs[1].addr, 1)];
        let settings = ["algorithm: weighted_random"];
        let _f = Fulcrum::start(&one_group(free_port(), web, &settings, SLOW_HC, &t)).await;
        let got = tally(local(web), "/", 400).await;
        let (heavy, light) = (count(&got, "wr-0"), count(&got, "wr-1"));
        assert_eq!(heavy + light, 400, "{got:?}");
        // 300 expected, standard deviation about 8.7.
        assert!((250..=350).contains(&heavy), "3:1 weights gave {got:?}");
    })
    .await;
}

/// Every target unhealthy: `fail_open` (the default) still routes to them;
/// `fail_open: false` answers 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fail_open_routes_to_unhealthy_targets_and_fail_closed_answers_503() {
    bounded(60, async {
        let open = backends("fo-", 2).await;
        let closed = backends("fc-", 2).await;
        for b in open.iter().chain(&closed) {
            b.set_health(500);
        }
        let (p_open, p_closed) = (free_port(), free_port());
        let cfg = lb_config(
            NODE,
            free_port(),
            &[
                ("open", "http", p_open, "open"),
                ("closed", "http", p_closed, "closed"),
            ],
            &[
                group("open", "http", &[], FAST_HC, &targets(&open)),
                group(
                    "closed",
                    "http",
                    &["fail_open: false"],
                    FAST_HC,
                    &targets(&closed),
                ),
            ],
        );
        let f = Fulcrum::start(&cfg).await;
        for (g, bs) in [("open", &open), ("closed", &closed)] {
            for b in bs.iter() {
                f.wait_state(g, b.addr, "unhealthy", ms(6000)).await;
            }
        }
        let got = tally(local(p_open), "/", 10).await;
        assert_eq!(count(&got, "fo-0") + count(&got, "fo-1"), 10, "{got:?}");
        assert!(
            count(&got, "fo-0") > 0 && count(&got, "fo-1") > 0,
            "{got:?}"
        );
        let got = tally(local(p_closed), "/", 4).await;
        assert_eq!(count(&got, "status 503"), 4, "fail_open: false: {got:?}");
        assert_eq!(closed[0].requests() + closed[1].requests(), 0);
    })
    .await;
}

/// A group with no registered targets answers 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_without_targets_answers_503() {
    bounded(60, async {
        let web = free_port();
        let _f = Fulcrum::start(&one_group(free_port(), web, &[], SLOW_HC, &[])).await;
        assert_eq!(get(local(web), "/").await.status, 503);
    })
    .await;
}

/// Node in zone `zone` (written in the file unless overridden by the environment):
/// one target in zone a, three in zone b.
fn zoned(zone: &str, admin: u16, web: u16, cross_zone: bool, bs: &[Backend]) -> String {
    let t: Vec<String> = bs
        .iter()
        .enumerate()
        .map(|(i, b)| tgt_zone(b.addr, if i == 0 { "a" } else { "b" }))
        .collect();
    let cz = format!("cross_zone: {cross_zone}");
    let g = group("web", "http", &[&cz], FAST_HC, &t);
    lb_config(
        &format!("name: lb-{zone}, zone: {zone}"),
        admin,
        &[("web", "http", web, "web")],
        &[g],
    )
}

/// Node a from its file, node b with `zone: a` in its file overridden by
/// `FULCRUM_NODE_ZONE=b`.
async fn two_nodes(cross_zone: bool, bs: &[Backend]) -> (Fulcrum, u16, Fulcrum, u16) {
    let (wa, wb) = (free_port(), free_port());
    let na = Fulcrum::start(&zoned("a", free_port(), wa, cross_zone, bs)).await;
    let cfg_b = zoned("a", free_port(), wb, cross_zone, bs);
    let nb = Fulcrum::start_env(&cfg_b, &[("FULCRUM_NODE_ZONE", "b")]).await;
    assert_eq!(na.status_json(None).await["node"]["zone"], "a");
    assert_eq!(
        nb.status_json(None).await["node"]["zone"],
        "b",
        "FULCRUM_NODE_ZONE"
    );
    for n in [&na, &nb] {
        for b in bs {
            n.wait_state("web", b.addr, "healthy", ms(5000)).await;
        }
    }
    (na, wa, nb, wb)
}

/// `cross_zone: false`: node a sends everything to its one zone-a target, node b
/// spreads over its three (with clients split evenly between the nodes: 50 % vs
/// 16.7 % each, as in aws-reference §9); when zone a has no healthy target, node a
/// falls back to zone b.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cross_zone_off_keeps_each_node_in_its_zone_and_falls_back() {
    bounded(60, async {
        let bs = backends("cz-", 4).await;
        let (na, wa, _nb, wb) = two_nodes(false, &bs).await;
        let got = tally(local(wa), "/", 30).await;
        assert_eq!(count(&got, "cz-0"), 30, "node a: {got:?}");
        let got = tally(local(wb), "/", 30).await;
        assert_eq!(count(&got, "cz-0"), 0, "node b: {got:?}");
        for b in &bs[1..] {
            assert!(
                count(&got, &b.name) >= 7,
                "node b spreads over zone b: {got:?}"
            );
        }

        bs[0].set_health(500);
        na.wait_state("web", bs[0].addr, "unhealthy", ms(6000))
            .await;
        let got = tally(local(wa), "/", 30).await;
        assert_eq!(
            count(&got, "cz-0"),
            0,
            "node a after zone a failed: {got:?}"
        );
        for b in &bs[1..] {
            assert!(
                count(&got, &b.name) >= 5,
                "node a falls back to zone b: {got:?}"
            );
        }
    })
    .await;
}

/// `cross_zone: true`: each node spreads evenly over all four targets (25 % each).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cross_zone_on_spreads_each_node_over_all_targets() {
    bounded(60, async {
        let bs = backends("co-", 4).await;
        let (_na, wa, _nb, wb) = two_nodes(true, &bs).await;
        for (node, port) in [("a", wa), ("b", wb)] {
            let got = tally(local(port), "/", 40).await;
            for b in &bs {
                let n = count(&got, &b.name);
                assert!((7..=13).contains(&n), "node {node}: {got:?}");
            }
        }
    })
    .await;
}

/// One HTTP request over a new connection from source address `ip`.
async fn get_from(ip: Ipv4Addr, addr: SocketAddr) -> String {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::from((ip, 0))).unwrap();
    let mut s = sock.connect(addr).await.unwrap();
    use tokio::io::AsyncWriteExt;
    s.write_all(b"GET / HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let r = Reader::new(s).read_response().await.unwrap();
    served_by(&r)
}

/// `source_hash` on a tcp group: every connection from one client IP lands on the
/// same target; different IPs spread.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn source_hash_keeps_a_client_ip_on_one_target() {
    bounded(60, async {
        let bs = backends("sh-", 3).await;
        let raw = free_port();
        let g = group(
            "tg",
            "tcp",
            &["algorithm: source_hash"],
            "interval: 30s, timeout: 2s",
            &targets(&bs),
        );
        let _f = Fulcrum::start(&lb_config(
            NODE,
            free_port(),
            &[("raw", "tcp", raw, "tg")],
            &[g],
        ))
        .await;
        let mut seen = BTreeSet::new();
        for _ in 0..12 {
            seen.insert(get_from(Ipv4Addr::LOCALHOST, local(raw)).await);
        }
        assert_eq!(seen.len(), 1, "127.0.0.1 went to {seen:?}");
        assert!(seen.iter().all(|w| w.starts_with("sh-")), "{seen:?}");

        let mut used = BTreeSet::new();
        for last in 10..26u8 {
            let ip = Ipv4Addr::new(127, 0, 0, last);
            let mut per_ip = BTreeSet::new();
            for _ in 0..3 {
                per_ip.insert(get_from(ip, local(raw)).await);
            }
            assert_eq!(per_ip.len(), 1, "{ip} went to {per_ip:?}");
            used.extend(per_ip);
        }
        assert!(used.len() >= 2, "16 client IPs all on {used:?}");
    })
    .await;
}

fn backend<'a>(bs: &'a [Backend], name: &str) -> &'a Backend {
    bs.iter()
        .find(|b| b.name == name)
        .unwrap_or_else(|| panic!("no backend {name}"))
}

/// `Expires=`, `Path=/`, `HttpOnly`, no `Secure` on http; expiry `secs` from now.
fn check_cookie_attributes(sc: &str, secs: u64) {
    let attrs: Vec<&str> = sc.split(';').map(str::trim).collect();
    assert!(attrs.contains(&"Path=/"), "{sc}");
    assert!(attrs.contains(&"HttpOnly"), "{sc}");
    assert!(
        !attrs.iter().any(|a| a.eq_ignore_ascii_case("secure")),
        "{sc}"
    );
    let exp = attrs
        .iter()
        .find_map(|a| a.strip_prefix("Expires="))
        .unwrap_or_else(|| panic!("no Expires in {sc}"));
    let exp = httpdate::parse_http_date(exp).unwrap_or_else(|e| panic!("{sc}: {e}"));
    let want = SystemTime::now() + Duration::from_secs(secs);
    let off = exp.duration_since(want).unwrap_or_else(|e| e.duration());
    assert!(
        off <= Duration::from_secs(120),
        "{sc}: Expires is not now + {secs} s"
    );
}

/// `lb_cookie`: `FULCRUMLB` set with its attributes, opaque; sent back it keeps the
/// target for 30 requests (refreshed on each); a tampered value is ignored and
/// replaced; a cookie naming a target that became unhealthy is ignored and replaced,
/// also while the group fails open.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lb_cookie_sticks_and_resists_tampering() {
    bounded(60, async {
        let bs = backends("lb-", 3).await;
        let web = free_port();
        let settings = ["stickiness: {type: lb_cookie, duration: 1h}"];
        let f = Fulcrum::start(&one_group(
            free_port(),
            web,
            &settings,
            FAST_HC,
            &targets(&bs),
        ))
        .await;
        let r = get(local(web), "/").await;
        let sc = set_cookie(&r, "FULCRUMLB").unwrap_or_else(|| panic!("no FULCRUMLB: {r:?}"));
        check_cookie_attributes(&sc, 3600);
        let v = cookie_value(&sc);
        let first = served_by(&r);
        let b0 = backend(&bs, &first);
        assert!(!v.is_empty());
        assert!(
            !v.contains("127.0.0.1") && !v.contains(&b0.port().to_string()),
            "the cookie must not carry the target's address: {v}"
        );

        let cookie = |v: &str| vec![format!("Cookie: FULCRUMLB={v}")];
        for i in 0..30 {
            let r = get_with(local(web), "/", &cookie(&v)).await;
            assert_eq!(served_by(&r), first, "request {i} with the cookie");
            assert!(
                set_cookie(&r, "FULCRUMLB").is_some(),
                "refreshed on every response"
            );
        }

        let mut forged = v.clone().into_bytes();
        let last = forged.len() - 1;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        for bad in [forged.as_str(), "not-a-real-cookie"] {
            let r = get_with(local(web), "/", &cookie(bad)).await;
            assert_eq!(r.status, 200, "{bad}");
            let sc = set_cookie(&r, "FULCRUMLB").unwrap_or_else(|| panic!("{bad}: not replaced"));
            assert_ne!(cookie_value(&sc), bad, "a tampered cookie was kept");
        }

        b0.set_health(500);
        f.wait_state("web", b0.addr, "unhealthy", ms(6000)).await;
        let r = get_with(local(web), "/", &cookie(&v)).await;
        let moved = served_by(&r);
        assert!(
            moved != first && moved.starts_with("lb-"),
            "served by {moved}"
        );
        let sc = set_cookie(&r, "FULCRUMLB").expect("replaced");
        let v2 = cookie_value(&sc);
        assert_ne!(v2, v);
        for _ in 0..5 {
            let r = get_with(local(web), "/", &cookie(&v2)).await;
            assert_eq!(served_by(&r), moved, "sticks to the new target");
        }

        // All unhealthy: the group fails open, but a cookie naming an unhealthy
        // target is still ignored, so the requests spread over all three.
        for b in &bs {
            b.set_health(500);
        }
        for b in &bs {
            f.wait_state("web", b.addr, "unhealthy", ms(6000)).await;
        }
        let mut seen = BTreeSet::new();
        for _ in 0..9 {
            let r = get_with(local(web), "/", &cookie(&v2)).await;
            assert_eq!(r.status, 200);
            assert!(set_cookie(&r, "FULCRUMLB").is_some(), "replaced");
            seen.insert(served_by(&r));
        }
        assert!(
            seen.len() >= 2,
            "the cookie held while failing open: {seen:?}"
        );
    })
    .await;
}

/// `app_cookie`: nothing before the target sets `SESSIONID`; then the balancer sets
/// `FULCRUMLBAPP` and the client sticks to that target.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn app_cookie_binds_after_the_target_sets_it() {
    bounded(60, async {
        let bs = backends("ap-", 3).await;
        let web = free_port();
        let settings = ["stickiness: {type: app_cookie, cookie_name: SESSIONID, duration: 1h}"];
        let _f = Fulcrum::start(&one_group(
            free_port(),
            web,
            &settings,
            SLOW_HC,
            &targets(&bs),
        ))
        .await;
        let r = get(local(web), "/").await;
        assert!(
            set_cookie(&r, "FULCRUMLBAPP").is_none(),
            "no binding yet: {r:?}"
        );

        let r = get(local(web), "/setcookie").await;
        let who = served_by(&r);
        let app = set_cookie(&r, "SESSIONID").unwrap_or_else(|| panic!("app cookie: {r:?}"));
        assert_eq!(cookie_value(&app), format!("sess-{who}"));
        let lb = set_cookie(&r, "FULCRUMLBAPP").unwrap_or_else(|| panic!("no FULCRUMLBAPP: {r:?}"));
        check_cookie_attributes(&lb, 3600);
        let h = vec![format!(
            "Cookie: SESSIONID=sess-{who}; FULCRUMLBAPP={}",
            cookie_value(&lb)
        )];
        for i in 0..20 {
            let r = get_with(local(web), "/", &h).await;
            assert_eq!(served_by(&r), who, "request {i} with the cookies");
        }

        // A binding that fails its check is replaced by one naming the target that
        // answered, although that target does not set SESSIONID again.
        let forged = vec![format!("Cookie: SESSIONID=sess-{who}; FULCRUMLBAPP=forged")];
        let r = get_with(local(web), "/", &forged).await;
        let now = served_by(&r);
        let lb = set_cookie(&r, "FULCRUMLBAPP")
            .unwrap_or_else(|| panic!("the forged binding was not replaced: {r:?}"));
        assert!(set_cookie(&r, "SESSIONID").is_none(), "{r:?}");
        let h = vec![format!(
            "Cookie: SESSIONID=sess-{who}; FULCRUMLBAPP={}",
            cookie_value(&lb)
        )];
        for i in 0..10 {
            let r = get_with(local(web), "/", &h).await;
            assert_eq!(served_by(&r), now, "request {i} with the new binding");
        }
    })
    .await;
}

/// Targets healthy from the first round at start all take full shares at once:
/// slow start is for a target joining a group already serving (aws-reference §2.3:
/// targets registered into an empty group do not enter it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_start_spares_targets_healthy_from_the_start() {
    bounded(60, async {
        let bs = backends("s0-", 3).await;
        let web = free_port();
        let t = targets(&bs);
        let _f = Fulcrum::start(&one_group(
            free_port(),
            web,
            &["slow_start: 30s"],
            FAST_HC,
            &t,
        ))
        .await;
        let got = tally(local(web), "/", 300).await;
        for b in &bs {
            let n = count(&got, &b.name);
            assert!(n >= 70, "an even share is 100 each: {got:?}");
        }
    })
    .await;
}

/// A target added by a reload with `slow_start: 30s`, next to one that has served
/// since the start, gets far less than an even share in its first seconds. (A target
/// healthy from the start does not enter slow start: aws-reference §2.3, targets
/// registered into an empty group do not.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_start_ramps_a_target_added_by_reload() {
    bounded(60, async {
        let a = Backend::start("ss-a").await;
        let b = Backend::start("ss-b").await;
        let (admin, web) = (free_port(), free_port());
        let settings = ["slow_start: 30s"];
        let f = Fulcrum::start(&one_group(admin, web, &settings, FAST_HC, &[tgt(a.addr)])).await;
        tokio::time::sleep(ms(1000)).await;
        f.reload_yaml(&one_group(
            admin,
            web,
            &settings,
            FAST_HC,
            &[tgt(a.addr), tgt(b.addr)],
        ))
        .await;
        f.wait_state("web", b.addr, "healthy", ms(3000)).await;
        let got = tally(local(web), "/", 200).await;
        assert_eq!(count(&got, "ss-a") + count(&got, "ss-b"), 200, "{got:?}");
        assert!(
            count(&got, "ss-b") < 60,
            "an even share is 100; in its first seconds of a 30 s ramp: {got:?}"
        );
    })
    .await;
}

/// A reload that turns slow start on does not ramp a target that became healthy
/// before it (aws-reference §2.3: only targets that become healthy after slow start
/// is enabled enter it): `b`, added without slow start, keeps an even share.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_start_turned_on_spares_targets_already_healthy() {
    bounded(60, async {
        let a = Backend::start("so-a").await;
        let b = Backend::start("so-b").await;
        let (admin, web) = (free_port(), free_port());
        let f = Fulcrum::start(&one_group(admin, web, &[], FAST_HC, &[tgt(a.addr)])).await;
        tokio::time::sleep(ms(1000)).await;
        let both = [tgt(a.addr), tgt(b.addr)];
        f.reload_yaml(&one_group(admin, web, &[], FAST_HC, &both))
            .await;
        f.wait_state("web", b.addr, "healthy", ms(3000)).await;
        f.reload_yaml(&one_group(admin, web, &["slow_start: 30s"], FAST_HC, &both))
            .await;
        let got = tally(local(web), "/", 200).await;
        assert_eq!(count(&got, "so-a") + count(&got, "so-b"), 200, "{got:?}");
        assert!(
            count(&got, "so-b") >= 70,
            "an even share is 100; b was healthy before slow start was on: {got:?}"
        );
    })
    .await;
}

/// The same for a target that recovers next to one whose own ramp is over (31 s
/// after the start), whatever is decided for targets healthy from the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_start_ramps_a_recovered_target() {
    bounded(90, async {
        let a = Backend::start("sr-a").await;
        let b = Backend::start("sr-b").await;
        b.set_health(500);
        let web = free_port();
        let t = [tgt(a.addr), tgt(b.addr)];
        let f = Fulcrum::start(&one_group(
            free_port(),
            web,
            &["slow_start: 30s"],
            FAST_HC,
            &t,
        ))
        .await;
        f.wait_state("web", b.addr, "unhealthy", ms(6000)).await;
        tokio::time::sleep(Duration::from_secs(31)).await;
        b.set_health(200);
        f.wait_state("web", b.addr, "healthy", ms(6000)).await;
        let got = tally(local(web), "/", 200).await;
        assert_eq!(count(&got, "sr-a") + count(&got, "sr-b"), 200, "{got:?}");
        assert!(
            count(&got, "sr-b") < 60,
            "an even share is 100; in its first seconds of a 30 s ramp: {got:?}"
        );
    })
    .await;
}
