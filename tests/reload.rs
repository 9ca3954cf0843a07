//! Reload (SPEC §7, §1 `fulcrum reload`, §8 `POST /api/v1/reload`): all three ways
//! swap the tables with no failed request; invalid configs and failed binds change
//! nothing; listeners are opened and closed by the diff; reloads are counted.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use tokio::task::JoinHandle;

/// One request of the background traffic: when it started and its answer's body or
/// what went wrong.
struct Sample {
    started: Instant,
    keep_alive: bool,
    outcome: Result<String, String>,
}

/// Two client tasks sending `GET /` back to back: one over a keep-alive connection,
/// one on a new connection per request.
struct Traffic {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<Vec<Sample>>>,
}

impl Traffic {
    fn start(addr: SocketAddr) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let tasks = [true, false]
            .into_iter()
            .map(|keep_alive| tokio::spawn(client(addr, keep_alive, stop.clone(), done.clone())))
            .collect();
        Traffic { stop, done, tasks }
    }

    fn done(&self) -> usize {
        self.done.load(Ordering::SeqCst)
    }

    async fn wait_done(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.done() < n {
            assert!(
                Instant::now() < deadline,
                "traffic stalled at {} requests",
                self.done()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Vec::new();
        for t in self.tasks {
            all.extend(t.await.expect("traffic task"));
        }
        all
    }
}

async fn client(
    addr: SocketAddr,
    keep_alive: bool,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut conn: Option<Conn> = None;
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let attempt = async {
            if !keep_alive {
                conn = None;
            }
            if conn.is_none() {
                conn = Some(
                    Conn::connect(addr)
                        .await
                        .map_err(|e| format!("connect: {e}"))?,
                );
            }
            let c = conn.as_mut().unwrap();
            let close = if keep_alive {
                ""
            } else {
                "Connection: close\r\n"
            };
            c.send(format!("GET / HTTP/1.1\r\nHost: test.local\r\n{close}\r\n").as_bytes())
                .await
                .map_err(|e| format!("send: {e}"))?;
            let r = c.read_response().await.map_err(|e| format!("read: {e}"))?;
            if r.header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"))
            {
                // A graceful close announced in the response is not a failure.
                conn = None;
            }
            if r.status != 200 {
                return Err(format!("status {}: {}", r.status, r.text()));
            }
            Ok(r.text())
        };
        let outcome = match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(o) => o,
            Err(_) => Err("no answer within 5 s".into()),
        };
        if outcome.is_err() {
            conn = None;
        }
        samples.push(Sample {
            started,
            keep_alive,
            outcome,
        });
        done.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    samples
}

#[derive(Clone, Copy, Debug)]
enum How {
    Sighup,
    Api,
    Cli,
}

async fn success_count(f: &Fulcrum) -> f64 {
    f.metric("fulcrum_config_reloads_total", &[("result", "success")])
        .await
        .unwrap_or(0.0)
}

async fn failure_count(f: &Fulcrum) -> f64 {
    f.metric("fulcrum_config_reloads_total", &[("result", "failure")])
        .await
        .unwrap_or(0.0)
}

/// The reload counters when a test began: whether the initial load counts as a
/// reload is not fixed by SPEC, so tests compare differences.
struct Reloads {
    success: f64,
    failure: f64,
}

impl Reloads {
    async fn baseline(f: &Fulcrum) -> Reloads {
        Reloads {
            success: success_count(f).await,
            failure: failure_count(f).await,
        }
    }

    /// (successes, failures) counted since the baseline.
    async fn since(&self, f: &Fulcrum) -> (f64, f64) {
        (
            success_count(f).await - self.success,
            failure_count(f).await - self.failure,
        )
    }
}

/// Reloads the file in place the given way and returns once the reload is known done.
async fn reload(f: &Fulcrum, how: How) {
    match how {
        How::Sighup => {
            let before = success_count(f).await;
            f.sighup();
            let deadline = Instant::now() + Duration::from_secs(10);
            while success_count(f).await <= before {
                assert!(
                    Instant::now() < deadline,
                    "SIGHUP reload not counted as a success"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        How::Api => {
            let (status, body) = f.admin_post("/api/v1/reload", None).await;
            assert_eq!(status, 200, "POST /api/v1/reload: {body}");
            let v: serde_json::Value = serde_json::from_str(&body).expect("JSON answer");
            assert_eq!(v["result"], "ok", "{body}");
            assert!(v["summary"].is_string(), "summary: {body}");
        }
        How::Cli => {
            let out = fulcrum_cli(&["reload", "-c", &f.config_path()]).await;
            assert_eq!(
                out.status.code(),
                Some(0),
                "fulcrum reload: stdout {} stderr {}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
    }
}

/// Moves the group from target alpha to beta while traffic flows: no request fails,
/// and every request started after the reload is answered by beta.
async fn reload_moves_traffic_without_failures(how: How) {
    let alpha = Backend::start("alpha").await;
    let beta = Backend::start("beta").await;
    let (admin, web) = (free_port(), free_port());
    let f = Fulcrum::start(&simple_config(admin, web, &[alpha.addr])).await;
    let base = Reloads::baseline(&f).await;
    let traffic = Traffic::start(local(web));
    traffic.wait_done(60).await;

    f.reload_config(&simple_config(admin, web, &[beta.addr]));
    reload(&f, how).await;
    let reloaded = Instant::now();
    let after = traffic.done();
    traffic.wait_done(200.max(after + 60)).await;
    let samples = traffic.finish().await;

    let failures: Vec<_> = samples
        .iter()
        .filter_map(|s| s.outcome.as_ref().err())
        .collect();
    assert!(
        failures.is_empty(),
        "{how:?}: {} of {} requests failed, first: {:?}",
        failures.len(),
        samples.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(samples.len() >= 200);
    assert!(samples.iter().any(|s| s.outcome.as_deref() == Ok("alpha")));
    let late: Vec<_> = samples.iter().filter(|s| s.started > reloaded).collect();
    assert!(late.len() >= 50);
    let stale: Vec<_> = late
        .iter()
        .filter(|s| s.outcome.as_deref() != Ok("beta"))
        .map(|s| {
            let conn = if s.keep_alive {
                "keep-alive"
            } else {
                "new connection"
            };
            format!(
                "{conn}, started {:?} after the reload: {:?}",
                s.started - reloaded,
                s.outcome
            )
        })
        .collect();
    assert!(
        stale.is_empty(),
        "{how:?}: {} of {} requests started after the reload were not answered by beta: {:?}",
        stale.len(),
        late.len(),
        &stale[..stale.len().min(5)]
    );
    assert_eq!(
        base.since(&f).await,
        (1.0, 0.0),
        "(success, failure) reloads counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_reload_moves_traffic_without_failures() {
    bounded(90, reload_moves_traffic_without_failures(How::Sighup)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_reload_moves_traffic_without_failures() {
    bounded(90, reload_moves_traffic_without_failures(How::Api)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cli_reload_moves_traffic_without_failures() {
    bounded(90, reload_moves_traffic_without_failures(How::Cli)).await;
}

/// A keep-alive client connection that sat idle across a reload: its next request
/// is a new request and uses the new tables (the target group now names beta).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_keep_alive_connection_uses_the_new_tables_after_a_reload() {
    bounded(60, async {
        let alpha = Backend::start("alpha").await;
        let beta = Backend::start("beta").await;
        let (admin, web) = (free_port(), free_port());
        let f = Fulcrum::start(&simple_config(admin, web, &[alpha.addr])).await;
        let mut c = Conn::connect(local(web)).await.unwrap();
        assert_eq!(c.get("/before").await.unwrap().text(), "alpha");

        f.reload_config(&simple_config(admin, web, &[beta.addr]));
        reload(&f, How::Api).await;
        let r = c
            .get("/after")
            .await
            .expect("the connection survives the reload");
        assert_eq!(r.status, 200);
        assert_eq!(
            r.text(),
            "beta",
            "a request sent after the reload used the old tables"
        );
        assert_eq!(get(local(web), "/").await.text(), "beta");
    })
    .await;
}

/// `LINE:COL: path: message` of each `FILE:LINE:COL: ...` error line.
fn after_file(errors: &[String]) -> Vec<String> {
    let mut v: Vec<String> = errors
        .iter()
        .map(|e| {
            let at = e
                .find("fulcrum.yaml:")
                .unwrap_or_else(|| panic!("no FILE: in {e:?}"));
            e[at + "fulcrum.yaml:".len()..].trim().to_string()
        })
        .collect();
    v.sort();
    v
}

/// A config with a bare-number duration: the API answers 400 with the same errors
/// `fulcrum check` prints, `fulcrum reload` exits 1 printing them, SIGHUP is
/// refused too, each counted as a failure, and traffic stays on the old target.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_config_is_refused_and_changes_nothing() {
    bounded(60, async {
        let alpha = Backend::start("alpha").await;
        let beta = Backend::start("beta").await;
        let (admin, web) = (free_port(), free_port());
        let f = Fulcrum::start(&simple_config(admin, web, &[alpha.addr])).await;
        let base = Reloads::baseline(&f).await;
        let bind = format!("bind: \"127.0.0.1:{web}\"\n");
        let bad = simple_config(admin, web, &[beta.addr])
            .replace(&bind, &format!("{bind}    idle_timeout: 60\n"));
        assert!(bad.contains("idle_timeout: 60"));
        f.reload_config(&bad);

        let check = fulcrum_cli(&["check", "-c", &f.config_path()]).await;
        assert_eq!(check.status.code(), Some(1));
        let check_errors: Vec<String> = text(&check.stderr).lines().map(str::to_string).collect();
        let expected = after_file(&check_errors);
        assert!(
            expected
                .iter()
                .any(|e| e.contains("listeners[0].idle_timeout")),
            "{expected:?}"
        );

        let (status, body) = f.admin_post("/api/v1/reload", None).await;
        assert_eq!(status, 400, "POST /api/v1/reload: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON answer");
        assert_eq!(v["result"], "error", "{body}");
        let errors: Vec<String> = v["errors"]
            .as_array()
            .expect("errors is a list")
            .iter()
            .map(|e| e.as_str().expect("each error is a string").to_string())
            .collect();
        assert_eq!(after_file(&errors), expected, "reload and check disagree");
        for e in &errors {
            let (pos, _) = e
                .split_once("fulcrum.yaml:")
                .unwrap()
                .1
                .split_once(": ")
                .unwrap();
            let (l, c) = pos.split_once(':').expect("LINE:COL");
            assert!(l.parse::<u32>().is_ok() && c.parse::<u32>().is_ok(), "{e}");
        }
        assert_eq!(get(local(web), "/").await.text(), "alpha");

        let out = fulcrum_cli(&["reload", "-c", &f.config_path()]).await;
        assert_eq!(
            out.status.code(),
            Some(1),
            "fulcrum reload of an invalid config"
        );
        let printed = format!("{}{}", text(&out.stdout), text(&out.stderr));
        for e in &expected {
            assert!(
                printed.contains(e.as_str()),
                "fulcrum reload did not print {e:?}: {printed}"
            );
        }

        f.sighup();
        let deadline = Instant::now() + Duration::from_secs(10);
        while base.since(&f).await.1 < 3.0 {
            assert!(
                Instant::now() < deadline,
                "the SIGHUP failure is not counted"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            base.since(&f).await,
            (0.0, 3.0),
            "(success, failure) reloads counted"
        );
        for _ in 0..5 {
            assert_eq!(get(local(web), "/").await.text(), "alpha");
        }
        assert_eq!(beta.requests(), 0);
    })
    .await;
}

fn listeners_config(admin: u16, listeners: &[(&str, u16)], target: SocketAddr) -> String {
    let mut y = format!(
        "runtime: {{worker_threads: 2}}\nadmin: {{bind: \"127.0.0.1:{admin}\"}}\nlisteners:\n"
    );
    for (name, port) in listeners {
        y += &format!(
            "  - {{name: {name}, bind: \"127.0.0.1:{port}\", default_action: {{forward: web}}}}\n"
        );
    }
    y += &format!(
        "target_groups:\n  - name: web\n    health_check: {{path: /hc, interval: 30s, timeout: 2s}}\n    targets: [\"{target}\"]\n"
    );
    y
}

async fn refused(port: u16) -> bool {
    tokio::net::TcpStream::connect(local(port)).await.is_err()
}

/// No fulcrum listener answers on `port`: the connection is refused, or whatever
/// holds the port now (a port picked free can be taken by a parallel test, or be
/// the connection's own source port) does not answer as the balancer would.
async fn no_balancer_on(port: u16) -> bool {
    let ask = http_request(
        local(port),
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    match tokio::time::timeout(Duration::from_secs(3), ask).await {
        Err(_) | Ok(Err(_)) => true,
        Ok(Ok(r)) => !matches!(r.text().as_str(), "alpha" | "beta"),
    }
}

async fn wait_refused(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !refused(port).await {
        assert!(
            Instant::now() < deadline,
            "{what}: port {port} still accepts"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A reload opens a new listener and closes a removed one, while a client of an
/// unchanged listener keeps its connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_opens_and_closes_listeners() {
    bounded(60, async {
        let a = Backend::start("alpha").await;
        let (admin, keep, old, new) = (free_port(), free_port(), free_port(), free_port());
        let f = Fulcrum::start(&listeners_config(
            admin,
            &[("keep", keep), ("old", old)],
            a.addr,
        ))
        .await;
        let base = Reloads::baseline(&f).await;
        let mut c = Conn::connect(local(keep)).await.unwrap();
        assert_eq!(c.get("/before").await.unwrap().status, 200);
        assert_eq!(get(local(old), "/").await.status, 200);
        assert!(refused(new).await);

        f.reload_config(&listeners_config(
            admin,
            &[("keep", keep), ("new", new)],
            a.addr,
        ));
        reload(&f, How::Api).await;

        let r = eventually(
            Duration::from_secs(3),
            "the new listener answers",
            || async move {
                let raw = b"GET /new HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n";
                http_request(local(new), raw).await.ok()
            },
        )
        .await;
        assert_eq!(r.status, 200);
        wait_refused(old, "the removed listener").await;
        let r = c
            .get("/after")
            .await
            .expect("the kept listener's connection survives");
        assert_eq!(r.status, 200);
        assert_eq!(get(local(keep), "/").await.status, 200);

        let st = f.status_json(None).await;
        let mut names: Vec<_> = st["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["keep", "new"]);
        assert_eq!(
            base.since(&f).await,
            (1.0, 0.0),
            "(success, failure) reloads counted"
        );
    })
    .await;
}

/// A reload whose new listener cannot bind (another process holds the port) is
/// rolled back whole and reported: the other new listener is not left open, the
/// target change is not applied, the old listeners serve. Once the port is free the
/// same file reloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_bind_rolls_the_whole_reload_back() {
    bounded(60, async {
        let alpha = Backend::start("alpha").await;
        let beta = Backend::start("beta").await;
        let (admin, web, extra, taken) = (free_port(), free_port(), free_port(), free_port());
        let f = Fulcrum::start(&listeners_config(admin, &[("web", web)], alpha.addr)).await;
        let base = Reloads::baseline(&f).await;
        let blocker = std::net::TcpListener::bind(("127.0.0.1", taken)).unwrap();

        let cfg = listeners_config(
            admin,
            &[("web", web), ("extra", extra), ("taken", taken)],
            beta.addr,
        );
        f.reload_config(&cfg);
        let (status, body) = f.admin_post("/api/v1/reload", None).await;
        assert_ne!(status, 200, "a reload with a failed bind: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON answer");
        assert_eq!(v["result"], "error", "{body}");
        let errors = v["errors"].as_array().expect("errors is a list");
        assert!(
            errors
                .iter()
                .any(|e| e.as_str().unwrap_or("").contains(&taken.to_string())),
            "no error names the port {taken}: {body}"
        );
        // FILE:LINE:COL: field.path: …, pointing at the bind that failed.
        let e = errors[0].as_str().unwrap_or("");
        let at = e
            .strip_prefix(&format!("{}:", f.config_path()))
            .unwrap_or_else(|| panic!("the error does not start with the file: {e}"));
        let mut parts = at.splitn(3, ':');
        let line: usize = parts.next().and_then(|l| l.parse().ok()).expect("LINE");
        let col: usize = parts.next().and_then(|c| c.parse().ok()).expect("COL");
        assert!(
            parts
                .next()
                .unwrap_or("")
                .starts_with(" listeners[2].bind: "),
            "{e}"
        );
        let text = cfg.lines().nth(line - 1).unwrap_or("");
        assert!(
            text.get(col - 1..)
                .unwrap_or("")
                .contains(&taken.to_string()),
            "{line}:{col} is not the bind of port {taken}: {text:?}"
        );
        assert_eq!(
            base.since(&f).await,
            (0.0, 1.0),
            "(success, failure) reloads counted"
        );

        assert!(
            no_balancer_on(extra).await,
            "the rolled-back listener is open"
        );
        for _ in 0..3 {
            assert_eq!(get(local(web), "/").await.text(), "alpha");
        }
        assert_eq!(beta.requests(), 0);

        drop(blocker);
        reload(&f, How::Api).await;
        assert_eq!(get(local(web), "/").await.text(), "beta");
        assert_eq!(get(local(extra), "/").await.status, 200);
        assert_eq!(get(local(taken), "/").await.status, 200);
        assert_eq!(
            base.since(&f).await,
            (1.0, 1.0),
            "(success, failure) reloads counted"
        );
    })
    .await;
}

/// A reload that drops `admin.token_file` while the running admin API listens on a
/// non-loopback address (0.0.0.0 here; every request of the test goes to
/// 127.0.0.1) is refused with a `FILE:LINE:COL: …` error like every reload error,
/// and the token keeps being required.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropping_the_token_of_a_public_admin_api_is_refused_with_a_position() {
    bounded(60, async {
        let alpha = Backend::start("alpha").await;
        let (admin, web) = (free_port(), free_port());
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let public = simple_config(admin, web, &[alpha.addr]).replace(
            &format!("bind: \"127.0.0.1:{admin}\""),
            &format!(
                "bind: \"0.0.0.0:{admin}\", token_file: \"{}\"",
                token.display()
            ),
        );
        let config = dir.path().join("fulcrum.yaml");
        std::fs::write(&config, &public).unwrap();
        let args = ["run".to_string(), "-c".into(), config.display().to_string()];
        let f = Fulcrum::spawn(dir, config, local(admin), &args, None).await;
        // admin.bind needs a restart, so 0.0.0.0 stays and the token with it.
        f.reload_config(&simple_config(admin, web, &[alpha.addr]));
        let (status, body) = f.admin_post("/api/v1/reload", Some("s3cret")).await;
        assert_eq!(status, 400, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON answer");
        assert_eq!(v["result"], "error", "{body}");
        let first = v["errors"][0].as_str().expect("an error");
        let (file, rest) = first.split_once(".yaml:").expect("FILE:LINE:COL");
        assert!(file.ends_with("fulcrum"), "{first}");
        let mut parts = rest.splitn(3, ':');
        let line = parts.next().unwrap_or_default();
        let col = parts.next().unwrap_or_default();
        assert!(
            line.parse::<u32>().is_ok() && col.parse::<u32>().is_ok(),
            "{first}"
        );
        assert!(first.contains("admin.token_file"), "{first}");
        let (status, _) = f.admin_post("/api/v1/reload", None).await;
        assert_eq!(status, 401, "the token is still required");
    })
    .await;
}

/// A reload asked for once shutdown has begun is answered at once (400, "shutting
/// down") instead of waiting through the shutdown for an answer that never comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_during_shutdown_is_refused_at_once() {
    bounded(60, async {
        let alpha = Backend::start("alpha").await;
        let (admin, web) = (free_port(), free_port());
        let yaml = simple_config(admin, web, &[alpha.addr]).replace(
            "runtime: {worker_threads: 2}",
            "runtime: {worker_threads: 2, shutdown_delay: 4s}",
        );
        assert!(yaml.contains("shutdown_delay"));
        let f = Fulcrum::start(&yaml).await;
        f.sigterm();
        eventually(Duration::from_secs(5), "/readyz answers 503", || async {
            let (status, _) = f.admin_get("/readyz").await;
            (status == 503).then_some(())
        })
        .await;
        let t0 = Instant::now();
        let (status, body) = f.admin_post("/api/v1/reload", None).await;
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("shutting down"), "{body}");
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "answered after {:?}",
            t0.elapsed()
        );
    })
    .await;
}

/// An access log path that cannot be opened is a config error: a reload to it is
/// refused with `FILE:LINE:COL: access_log.path: …` and changes nothing (the
/// running log keeps being written), and `run` and `check` with it exit 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_access_log_that_cannot_be_opened_is_refused() {
    bounded(60, async {
        let a = Backend::start("log-a").await;
        let (admin, web) = (free_port(), free_port());
        let logdir = tempfile::tempdir().unwrap();
        let good = logdir.path().join("access.log");
        let bad = logdir.path().join("no-such-dir").join("access.log");
        let with_log_on = |admin: u16, web: u16, p: &std::path::Path| {
            let mut y = simple_config(admin, web, &[a.addr]);
            y.push_str(&format!(
                "access_log: {{path: \"{}\", format: json}}\n",
                p.display()
            ));
            y
        };
        let with_log = |p: &std::path::Path| with_log_on(admin, web, p);
        let f = Fulcrum::start(&with_log(&good)).await;
        assert_eq!(get(local(web), "/one").await.status, 200);

        f.reload_config(&with_log(&bad));
        let (status, body) = f.admin_post("/api/v1/reload", None).await;
        assert_eq!(status, 400, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON answer");
        let first = v["errors"][0].as_str().expect("an error");
        // The path's value: on the line after simple_config's, column 20.
        let line = simple_config(admin, web, &[a.addr]).lines().count() + 1;
        assert!(
            first.contains(&format!(".yaml:{line}:20: access_log.path: ")),
            "{first}"
        );
        assert!(first.contains("no-such-dir"), "{first}");

        // Still logging where it did.
        assert_eq!(get(local(web), "/two").await.status, 200);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(&good).unwrap_or_default();
            if text.contains("/two") {
                break;
            }
            assert!(Instant::now() < deadline, "the old log stopped: {text}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("bad-log.yaml");
        std::fs::write(&cfg, with_log_on(free_port(), free_port(), &bad)).unwrap();
        let out = fulcrum_cli(&["run", "-c", cfg.to_str().unwrap()]).await;
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("access_log.path: "), "{err}");
        assert!(err.contains("no-such-dir"), "{err}");
        // `check` finds it too.
        let out = fulcrum_cli(&["check", "-c", cfg.to_str().unwrap()]).await;
        assert_eq!(out.status.code(), Some(1));
    })
    .await;
}

/// A reload that renames a listener and keeps its bind: a keep-alive connection
/// accepted under the old name goes on serving requests under the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_renamed_listener_keeps_its_connections() {
    bounded(60, async {
        let a = Backend::start("rn-a").await;
        let (admin, web) = (free_port(), free_port());
        let yaml = simple_config(admin, web, &[a.addr]);
        let f = Fulcrum::start(&yaml).await;
        let req = b"GET /one HTTP/1.1\r\nHost: test.local\r\n\r\n";
        let mut c = Conn::connect(local(web)).await.unwrap();
        c.send(req).await.unwrap();
        assert_eq!(c.read_response().await.unwrap().status, 200);

        f.reload_yaml(&yaml.replace(
            "  - name: web\n    protocol: http\n    bind",
            "  - name: front\n    protocol: http\n    bind",
        ))
        .await;
        for i in 0..3 {
            c.send(req).await.unwrap();
            let r = c.read_response().await;
            assert!(
                matches!(&r, Ok(r) if r.status == 200),
                "request {i} on the old connection after the rename: {r:?}"
            );
        }
        // New connections are served too.
        assert_eq!(get(local(web), "/two").await.status, 200);
    })
    .await;
}
