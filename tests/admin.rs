//! The admin API (SPEC §8), its metrics (§9) and the `fulcrum status` command (§1).

mod common;

use std::net::SocketAddr;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_readiness_and_metrics() {
    bounded(60, async {
        let a = Backend::start("m-a").await;
        let web = free_port();
        let f = Fulcrum::start(&simple_config(free_port(), web, &[a.addr])).await;
        let (st, body) = f.admin_get("/healthz").await;
        assert_eq!((st, body.as_str()), (200, "ok"), "the body is exactly ok");
        let (st, _) = f.admin_get("/readyz").await;
        assert_eq!(st, 200);

        for i in 0..7 {
            assert_eq!(get(local(web), &format!("/m{i}")).await.status, 200);
        }
        let r = f.admin_full("GET", "/metrics", None).await;
        assert_eq!(r.status, 200);
        let ct = r.header("content-type").unwrap_or("");
        assert!(ct.starts_with("text/plain"), "Content-Type: {ct}");
        let m = r.text();
        let web_l = [("listener", "web")];
        assert_eq!(
            metric(&m, "fulcrum_connections_total", &web_l),
            Some(7.0),
            "{m}"
        );
        assert!(
            metric(&m, "fulcrum_active_connections", &web_l).is_some(),
            "{m}"
        );
        let routed = [("listener", "web"), ("target_group", "web")];
        assert_eq!(
            metric(&m, "fulcrum_requests_total", &routed),
            Some(7.0),
            "{m}"
        );
        for dir in ["in", "out"] {
            let bytes = metric(
                &m,
                "fulcrum_processed_bytes_total",
                &[("listener", "web"), ("direction", dir)],
            );
            assert!(
                bytes.unwrap_or(0.0) > 0.0,
                "processed bytes {dir}: {bytes:?}"
            );
        }
    })
    .await;
}

/// Group `web` (two healthy targets, the second in zone-b) and, with `dead`, group
/// `down` whose only target refuses connections.
fn status_config(
    admin: u16,
    web: u16,
    live: &[SocketAddr],
    dead: Option<SocketAddr>,
    token: Option<&str>,
) -> String {
    let token = token
        .map(|t| format!(", token_file: {t}"))
        .unwrap_or_default();
    let down = dead
        .map(|d| {
            format!(
                "  - name: down\n    health_check: {{path: /hc, interval: 30s, timeout: 2s, unhealthy_threshold: 1}}\n    targets: [\"{d}\"]\n"
            )
        })
        .unwrap_or_default();
    format!(
        "node: {{name: lb-test, zone: zone-a}}\n\
         runtime: {{worker_threads: 2}}\n\
         admin: {{bind: \"127.0.0.1:{admin}\"{token}}}\n\
         listeners:\n\
         \x20 - {{name: web, protocol: http, bind: \"127.0.0.1:{web}\", default_action: {{forward: web}}}}\n\
         target_groups:\n\
         \x20 - name: web\n\
         \x20   protocol: http\n\
         \x20   algorithm: round_robin\n\
         \x20   health_check: {{path: /hc, interval: 30s, timeout: 2s}}\n\
         \x20   targets:\n\
         \x20     - {{address: \"{}\"}}\n\
         \x20     - {{address: \"{}\", zone: zone-b}}\n\
         {down}",
        live[0], live[1]
    )
}

fn is_timestamp(v: &serde_json::Value) -> bool {
    let Some(s) = v.as_str() else { return false };
    let b = s.as_bytes();
    b.len() >= 20 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[13] == b':' && b[16] == b':'
}

/// `GET /api/v1/status` has the SPEC §8 shape and values.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_json_has_the_documented_shape() {
    bounded(60, async {
        let a = Backend::start("s-a").await;
        let b = Backend::start("s-b").await;
        let web = free_port();
        let f = Fulcrum::start(&status_config(
            free_port(),
            web,
            &[a.addr, b.addr],
            None,
            None,
        ))
        .await;
        let st = f.status_json(None).await;

        assert_eq!(st["node"]["name"], "lb-test", "{st:#}");
        assert_eq!(st["node"]["zone"], "zone-a");

        let cfg = &st["config"];
        assert!(
            cfg["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("fulcrum.yaml")),
            "{cfg}"
        );
        let sha = cfg["sha256"].as_str().expect("config.sha256");
        assert!(
            sha.len() == 64 && sha.bytes().all(|c| c.is_ascii_hexdigit()),
            "sha256 {sha:?}"
        );
        let sum = std::process::Command::new("sha256sum")
            .arg(&f.config)
            .output()
            .unwrap();
        let want = text(&sum.stdout);
        assert_eq!(
            sha.to_ascii_lowercase(),
            want.split_whitespace().next().unwrap(),
            "sha256 of the file"
        );
        assert!(
            is_timestamp(&cfg["loaded_at"]),
            "loaded_at {}",
            cfg["loaded_at"]
        );

        let listeners = st["listeners"].as_array().expect("listeners");
        assert_eq!(listeners.len(), 1);
        let l = &listeners[0];
        assert_eq!(l["name"], "web");
        assert_eq!(l["protocol"], "http");
        assert_eq!(l["bind"], format!("127.0.0.1:{web}"));
        assert!(l["active_connections"].is_u64(), "{l}");

        let groups = st["target_groups"].as_array().expect("target_groups");
        assert_eq!(groups.len(), 1);
        let g = &groups[0];
        assert_eq!(g["name"], "web");
        assert_eq!(g["protocol"], "http");
        assert_eq!(g["algorithm"], "round_robin");
        let targets = g["targets"].as_array().expect("targets");
        assert_eq!(targets.len(), 2);
        for (t, (addr, zone)) in targets.iter().zip([(a.addr, "zone-a"), (b.addr, "zone-b")]) {
            assert_eq!(t["address"], addr.to_string(), "{t}");
            assert_eq!(t["zone"], zone, "{t} (the default zone is node.zone)");
            assert_eq!(t["state"], "healthy", "{t}");
            assert!(t["reason"].is_null() && t["description"].is_null(), "{t}");
            assert!(is_timestamp(&t["since"]), "{t}");
            assert_eq!(t["in_flight"], 0, "{t}");
            assert!(t["active_connections"].is_u64(), "{t}");
        }
    })
    .await;
}

/// A target whose first health check is refused (unhealthy_threshold 1) is shown
/// `unhealthy` with ALB's reason code, by the API and by `fulcrum status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_shows_a_failed_health_check() {
    bounded(60, async {
        let a = Backend::start("u-a").await;
        let b = Backend::start("u-b").await;
        let dead = local(free_port());
        let cfg = status_config(
            free_port(),
            free_port(),
            &[a.addr, b.addr],
            Some(dead),
            None,
        );
        let f = Fulcrum::start(&cfg).await;
        let st = f.status_json(None).await;
        let down = st["target_groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == "down")
            .unwrap_or_else(|| panic!("group down in {st:#}"));
        let t = &down["targets"][0];
        assert_eq!(t["address"], dead.to_string());
        assert_eq!(t["state"], "unhealthy", "{t}");
        assert_eq!(t["reason"], "Target.FailedHealthChecks", "{t}");
        assert!(t["description"].is_string(), "{t}");
        assert!(is_timestamp(&t["since"]), "{t}");

        let out = fulcrum_cli(&["status", "-c", &f.config_path()]).await;
        assert_eq!(out.status.code(), Some(0));
        let stdout = text(&out.stdout);
        let row = |addr: SocketAddr| {
            stdout
                .lines()
                .find(|l| l.contains(&addr.to_string()))
                .unwrap_or_else(|| panic!("no row for {addr}:\n{stdout}"))
        };
        assert!(row(dead).contains("unhealthy"), "{stdout}");
        assert!(row(dead).contains("Target.FailedHealthChecks"), "{stdout}");
        assert!(
            !row(a.addr).contains("unhealthy") && row(a.addr).contains("healthy"),
            "{stdout}"
        );
    })
    .await;
}

/// With a token file, every `/api/` call needs the bearer token; `/metrics`,
/// `/healthz` and `/readyz` never do. `fulcrum status` reads address and token from
/// the config, or from `--admin` and `--token-file` without any config.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_guards_the_api_and_status_command_reads_it() {
    bounded(60, async {
        let a = Backend::start("t-a").await;
        let b = Backend::start("t-b").await;
        let (admin, web) = (free_port(), free_port());
        let token = "s3cret-admin-token";
        let tokdir = tempfile::tempdir().unwrap();
        let tokfile = tokdir.path().join("admin.token");
        std::fs::write(&tokfile, token).unwrap();
        let tok = tokfile.display().to_string();
        let f = Fulcrum::start(&status_config(
            admin,
            web,
            &[a.addr, b.addr],
            None,
            Some(&tok),
        ))
        .await;

        assert_eq!(f.admin_get_auth("/api/v1/status", None).await.0, 401);
        assert_eq!(
            f.admin_get_auth("/api/v1/status", Some("wrong")).await.0,
            401
        );
        assert_eq!(f.admin_post("/api/v1/reload", None).await.0, 401);
        let (st, body) = f.admin_get_auth("/api/v1/status", Some(token)).await;
        assert_eq!(st, 200, "{body}");
        assert!(
            serde_json::from_str::<serde_json::Value>(&body).is_ok(),
            "{body}"
        );
        for path in ["/metrics", "/healthz", "/readyz"] {
            assert_eq!(f.admin_get(path).await.0, 200, "{path} without a token");
        }
        let (st, body) = f.admin_post("/api/v1/reload", Some(token)).await;
        assert_eq!(st, 200, "{body}");

        // A table with a row per target naming its group, address and state.
        let check = |out: std::process::Output, how: &str| {
            let stdout = text(&out.stdout);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{how}: {stdout} {}",
                text(&out.stderr)
            );
            for t in [a.addr, b.addr] {
                let row = stdout
                    .lines()
                    .find(|l| l.contains(&t.to_string()))
                    .unwrap_or_else(|| panic!("{how}: no row for target {t}:\n{stdout}"));
                assert!(
                    row.contains("web") && row.contains("healthy"),
                    "{how}: {row}"
                );
            }
        };
        let cfg = f.config_path();
        check(fulcrum_cli(&["status", "-c", &cfg]).await, "status -c");
        let addr = format!("127.0.0.1:{admin}");
        check(
            fulcrum_cli(&["status", "--admin", &addr, "--token-file", &tok]).await,
            "status --admin --token-file",
        );
        let out = fulcrum_cli(&["status", "--admin", &addr]).await;
        assert_eq!(
            out.status.code(),
            Some(1),
            "status without the token must fail"
        );
        // ADDR may name a host; -c and --admin are alternatives (usage error: 2).
        let by_name = format!("localhost:{admin}");
        check(
            fulcrum_cli(&["status", "--admin", &by_name, "--token-file", &tok]).await,
            "status --admin localhost:PORT",
        );
        let both = fulcrum_cli(&["status", "-c", &cfg, "--admin", &addr]).await;
        assert_eq!(both.status.code(), Some(2), "-c together with --admin");
    })
    .await;
}

/// Methods: `/healthz`, `/readyz`, `/metrics` and `/api/v1/status` answer GET and
/// HEAD (HEAD without a body); another method gets 405 with `Allow`, as does GET on
/// `POST /api/v1/reload`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_endpoints_check_the_method() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    bounded(60, async {
        let a = Backend::start("meth-a").await;
        let f = Fulcrum::start(&simple_config(free_port(), free_port(), &[a.addr])).await;
        for path in ["/healthz", "/readyz", "/metrics", "/api/v1/status"] {
            for method in ["POST", "DELETE", "PUT"] {
                let r = f.admin_full(method, path, None).await;
                assert_eq!(r.status, 405, "{method} {path}");
                assert_eq!(r.header("allow"), Some("GET, HEAD"), "{method} {path}");
            }
            assert_eq!(f.admin_full("GET", path, None).await.status, 200, "{path}");
            // HEAD: the GET head (with its Content-Length), no body.
            let mut s = tokio::net::TcpStream::connect(f.admin).await.unwrap();
            let raw = format!("HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            s.write_all(raw.as_bytes()).await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            let got = String::from_utf8_lossy(&got).into_owned();
            assert!(got.starts_with("HTTP/1.1 200 "), "HEAD {path}: {got}");
            let (head, body) = got.split_once("\r\n\r\n").expect("a whole head");
            assert!(
                head.to_ascii_lowercase().contains("content-length: "),
                "{head}"
            );
            assert_eq!(body, "", "HEAD {path} has no body");
        }
        let r = f.admin_full("GET", "/api/v1/reload", None).await;
        assert_eq!(r.status, 405);
        assert_eq!(r.header("allow"), Some("POST"));
    })
    .await;
}

/// A reload request whose body arrives after its head (as from a client writing
/// them separately) gets its answer, and the API goes on reading what the client
/// sends until the client closes: closing with unread bytes would reset the
/// connection, which over a real network can destroy the answer before the client
/// reads it. Here the body is sent only after the whole answer was read, in three
/// writes 200 ms apart: a later one would fail (reset) had the API closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_with_a_late_body_gets_its_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    bounded(60, async {
        let a = Backend::start("late-body").await;
        let f = Fulcrum::start(&simple_config(free_port(), free_port(), &[a.addr])).await;
        let mut s = tokio::net::TcpStream::connect(f.admin).await.unwrap();
        let body = vec![b'x'; 64 * 1024];
        let head = format!(
            "POST /api/v1/reload HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            3 * body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        // The answer comes without waiting for the body, then the API's FIN.
        let mut got = Vec::new();
        s.read_to_end(&mut got)
            .await
            .expect("the answer, not a reset");
        let got = String::from_utf8_lossy(&got).into_owned();
        assert!(got.starts_with("HTTP/1.1 200 "), "{got}");
        assert!(got.contains("\"result\":\"ok\""), "{got}");
        // A write that reaches a closed socket is accepted locally and answered
        // with a reset, which fails the next write.
        for part in 0..3 {
            s.write_all(&body).await.unwrap_or_else(|e| {
                panic!("part {part} of the body: {e} (the API stopped reading)")
            });
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
    .await;
}
