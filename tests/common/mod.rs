//! Helpers for the end-to-end tests: the real `fulcrum` binary in a child process
//! (config in a temp dir, logs captured and printed on failure, killed on drop),
//! hyper backends that count what reaches them, and a raw HTTP/1.1 client over
//! `TcpStream` that can send what a well-behaved client never would.

#![allow(dead_code)]

mod backend;
mod client;
mod groups;
mod lab;
mod ports;
mod raw;

// Each test file uses part of these.
#[allow(unused_imports)]
pub use backend::*;
#[allow(unused_imports)]
pub use client::*;
#[allow(unused_imports)]
pub use groups::*;
#[allow(unused_imports)]
pub use lab::*;
#[allow(unused_imports)]
pub use raw::*;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fulcrum"))
}

/// The crate root, where `config/` lives (the working directory of `fulcrum demo`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A port on 127.0.0.1 that was free a moment ago.
#[allow(unused_imports)]
pub use ports::{Blackhole, free_port};

pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Runs a test body with a deadline. On expiry it panics while the body (and the
/// processes and servers it owns) is still alive, so their drop sees the panic and
/// prints the load balancer's logs.
pub async fn bounded<F: Future>(secs: u64, body: F) -> F::Output {
    // Boxed: test futures are large, and a test thread's stack is not.
    let mut body = Box::pin(body);
    tokio::select! {
        out = &mut body => out,
        _ = tokio::time::sleep(Duration::from_secs(secs)) => {
            panic!("test did not finish within {secs} s")
        }
    }
}

/// Polls `check` every 25 ms until it returns `Some`, at most `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Runs the binary to completion with `args` (a blocking call moved off the runtime).
pub async fn fulcrum_cli(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(bin())
            .args(&args)
            .env_remove("FULCRUM_CONFIG")
            .env_remove("FULCRUM_NODE_NAME")
            .env_remove("FULCRUM_NODE_ZONE")
            .env_remove("NOTIFY_SOCKET")
            .output()
            .expect("run fulcrum")
    })
    .await
    .unwrap()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One target group `web` behind one http listener `web`; health checks `GET /hc`
/// on the traffic port (the backends leave `/hc` out of their request counts).
pub fn simple_config(admin: u16, web: u16, targets: &[SocketAddr]) -> String {
    format!(
        "node: {{name: lb-test, zone: zone-a}}\n\
         runtime: {{worker_threads: 2}}\n\
         admin: {{bind: \"127.0.0.1:{admin}\"}}\n\
         listeners:\n\
         \x20 - name: web\n\
         \x20   protocol: http\n\
         \x20   bind: \"127.0.0.1:{web}\"\n\
         \x20   default_action: {{forward: web}}\n\
         target_groups:\n\
         \x20 - name: web\n\
         \x20   protocol: http\n\
         \x20   health_check: {{path: /hc, interval: 30s, timeout: 2s}}\n\
         \x20   targets: [{}]\n",
        target_list(targets)
    )
}

pub fn target_list(targets: &[SocketAddr]) -> String {
    targets
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------
// The load balancer under test

/// A running `fulcrum` child process. Dropping it kills the process.
pub struct Fulcrum {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub admin: SocketAddr,
    child: Child,
    exited: Option<ExitStatus>,
}

impl Fulcrum {
    /// Writes `yaml` as `fulcrum.yaml` in a temp dir, runs `fulcrum run -c` on it and
    /// waits (at most 10 s) until `/readyz` on the yaml's `admin.bind` answers 200.
    pub async fn start(yaml: &str) -> Fulcrum {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("fulcrum.yaml");
        std::fs::write(&config, yaml).unwrap();
        let admin = admin_bind(yaml);
        let args = ["run".to_string(), "-c".into(), config.display().to_string()];
        Fulcrum::spawn(dir, config, admin, &args, None).await
    }

    /// Like [`Fulcrum::start`], with extra environment variables for the process
    /// (for example `FULCRUM_NODE_ZONE`).
    pub async fn start_env(yaml: &str, env: &[(&str, &str)]) -> Fulcrum {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("fulcrum.yaml");
        std::fs::write(&config, yaml).unwrap();
        let admin = admin_bind(yaml);
        let args = ["run".to_string(), "-c".into(), config.display().to_string()];
        Fulcrum::spawn_env(dir, config, admin, &args, None, env).await
    }

    /// Spawns the binary with `args` and waits for `/readyz` on `admin`.
    pub async fn spawn(
        dir: tempfile::TempDir,
        config: PathBuf,
        admin: SocketAddr,
        args: &[String],
        cwd: Option<&Path>,
    ) -> Fulcrum {
        Fulcrum::spawn_env(dir, config, admin, args, cwd, &[]).await
    }

    /// [`Fulcrum::spawn`] with extra environment variables.
    pub async fn spawn_env(
        dir: tempfile::TempDir,
        config: PathBuf,
        admin: SocketAddr,
        args: &[String],
        cwd: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Fulcrum {
        let out = std::fs::File::create(dir.path().join("stdout.log")).unwrap();
        let err = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .env_remove("FULCRUM_CONFIG")
            .env_remove("FULCRUM_NODE_NAME")
            .env_remove("FULCRUM_NODE_ZONE")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin().display()));
        let mut f = Fulcrum {
            dir,
            config,
            admin,
            child,
            exited: None,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = f.child.try_wait().unwrap() {
                f.exited = Some(status);
                panic!("fulcrum exited before it was ready: {status}");
            }
            if let Ok(r) = admin_request(f.admin, "GET", "/readyz", None).await {
                if r.status == 200 {
                    return f;
                }
            }
            assert!(
                Instant::now() < deadline,
                "fulcrum not ready within 10 s (GET /readyz on {})",
                f.admin
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn config_path(&self) -> String {
        self.config.display().to_string()
    }

    /// Rewrites the config file (no reload is triggered).
    pub fn reload_config(&self, yaml: &str) {
        std::fs::write(&self.config, yaml).unwrap();
    }

    pub fn sighup(&self) {
        self.signal("HUP");
    }

    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    pub fn sigint(&self) {
        self.signal("INT");
    }

    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -{sig} {} failed", self.pid());
    }

    /// Waits for the process to exit, at most `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exited {
                return Some(s);
            }
            if let Some(s) = self.child.try_wait().unwrap() {
                self.exited = Some(s);
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The captured stdout and stderr.
    pub fn logs(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        format!(
            "--- fulcrum stdout ---\n{}--- fulcrum stderr ---\n{}",
            read("stdout.log"),
            read("stderr.log")
        )
    }

    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let r = self.admin_full("GET", path, None).await;
        (r.status, r.text())
    }

    pub async fn admin_get_auth(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let r = self.admin_full("GET", path, token).await;
        (r.status, r.text())
    }

    pub async fn admin_post(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let r = self.admin_full("POST", path, token).await;
        (r.status, r.text())
    }

    pub async fn admin_full(&self, method: &str, path: &str, token: Option<&str>) -> Response {
        admin_request(self.admin, method, path, token)
            .await
            .unwrap_or_else(|e| panic!("{method} {path} on admin {}: {e}", self.admin))
    }

    pub async fn metrics(&self) -> String {
        let (status, body) = self.admin_get("/metrics").await;
        assert_eq!(status, 200, "GET /metrics");
        body
    }

    /// The value of one series (summed over the series that carry `labels`).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        metric(&self.metrics().await, name, labels)
    }

    /// Polls `/metrics` until the series exists (at most `within`) and returns it.
    pub async fn wait_metric(&self, name: &str, labels: &[(&str, &str)], within: Duration) -> f64 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = self.metric(name, labels).await {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no series {name} with {labels:?} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `GET /api/v1/status` as JSON.
    pub async fn status_json(&self, token: Option<&str>) -> serde_json::Value {
        let (status, body) = self.admin_get_auth("/api/v1/status", token).await;
        assert_eq!(status, 200, "GET /api/v1/status: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("status is not JSON ({e}): {body}"))
    }
}

impl Drop for Fulcrum {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// The `admin.bind` address of a config (block or flow style).
pub fn admin_bind(yaml: &str) -> SocketAddr {
    let at = yaml.find("admin:").expect("config has an admin section");
    let rest = &yaml[at..];
    let b = rest.find("bind:").expect("admin.bind is set") + "bind:".len();
    let v: String = rest[b..]
        .trim_start()
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != ',' && *c != '}')
        .filter(|c| *c != '"' && *c != '\'')
        .collect();
    v.parse()
        .unwrap_or_else(|e| panic!("admin.bind {v:?} is not IP:PORT: {e}"))
}

/// One request to the admin API with `Connection: close`.
pub async fn admin_request(
    admin: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> io::Result<Response> {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let len = if method == "POST" {
        "Content-Length: 0\r\n"
    } else {
        ""
    };
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\n{auth}{len}Connection: close\r\n\r\n"
    );
    tokio::time::timeout(Duration::from_secs(10), http_request(admin, raw.as_bytes()))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "admin request timed out"))?
}

// ---------------------------------------------------------------------------------
// Prometheus text

/// Sums the samples of `name` whose labels include every pair of `labels` (label
/// order does not matter); `None` when no series matches.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((series_name, series_labels, value)) = parse_sample(line) else {
            continue;
        };
        if series_name != name {
            continue;
        }
        if labels
            .iter()
            .all(|(k, v)| series_labels.iter().any(|(sk, sv)| sk == k && sv == v))
        {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

/// One sample line: metric name, labels, value.
type Sample<'a> = (&'a str, Vec<(String, String)>, f64);

fn parse_sample(line: &str) -> Option<Sample<'_>> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        let mut key = String::new();
        let close;
        loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => {
                    close = i;
                    break;
                }
                ',' | ' ' => {}
                '=' => {
                    let (_, q) = chars.next()?;
                    if q != '"' {
                        return None;
                    }
                    let mut val = String::new();
                    loop {
                        let (_, c) = chars.next()?;
                        match c {
                            '\\' => match chars.next()?.1 {
                                'n' => val.push('\n'),
                                other => val.push(other),
                            },
                            '"' => break,
                            c => val.push(c),
                        }
                    }
                    labels.push((std::mem::take(&mut key), val));
                }
                c => key.push(c),
            }
        }
        rest = &body[close + 1..];
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some((name, labels, value))
}
