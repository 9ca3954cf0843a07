//! `fulcrum demo`: the real load balancer on config/demo.yaml plus three small
//! HTTP targets in the same process, each answering with its own name, so that
//! round robin is visible with curl.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The demo config, used when config/demo.yaml is not in the current directory.
const DEMO_YAML: &str = include_str!("../config/demo.yaml");

pub const TARGETS: [(&str, u16); 3] = [("demo-1", 8001), ("demo-2", 8002), ("demo-3", 8003)];

fn demo_config() -> Result<PathBuf, String> {
    let local = PathBuf::from("config/demo.yaml");
    if local.is_file() {
        return Ok(local);
    }
    let dir = std::env::temp_dir().join(format!("fulcrum-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join("demo.yaml");
    std::fs::write(&path, DEMO_YAML)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

pub fn run() -> i32 {
    let path = match demo_config() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("fulcrum demo: {e}");
            return 1;
        }
    };
    let snapshot = match crate::config::load(&path) {
        Ok(s) => Arc::new(s),
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            return 1;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fulcrum demo: {e}");
            return 1;
        }
    };
    rt.block_on(async move {
        let signals = match crate::server::Signals::install() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("fulcrum demo: cannot install signal handlers: {e}");
                return 1;
            }
        };
        for (name, port) in TARGETS {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            match TcpListener::bind(addr).await {
                Ok(l) => {
                    tokio::spawn(serve_target(l, name));
                }
                Err(e) => {
                    eprintln!("fulcrum demo: cannot start demo target {name} on {addr}: {e}");
                    return 1;
                }
            }
        }
        let server = match crate::server::start(&path, snapshot.clone(), None).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("fulcrum demo: {e}");
                return 1;
            }
        };
        let lb = snapshot
            .listeners
            .first()
            .map(|l| l.bind.to_string())
            .unwrap_or_default();
        let admin = server.admin_addr.map(|a| a.to_string()).unwrap_or_default();
        println!(
            "fulcrum demo is running: a load balancer on http://{lb}/ in front of three targets:"
        );
        for (name, port) in TARGETS {
            println!("  {name} on 127.0.0.1:{port}");
        }
        println!();
        println!("Try:");
        println!(
            "  curl http://{lb}/                 # repeat it: the answer rotates over the targets"
        );
        println!("  curl http://{admin}/api/v1/status");
        println!("  curl http://{admin}/metrics");
        println!("  fulcrum status -c {}", path.display());
        println!(
            "  curl -X POST http://127.0.0.1:8002/fail     # demo-2 fails its health checks: watch"
        );
        println!(
            "                                              # it go unhealthy and traffic move away;"
        );
        println!("  curl -X POST http://127.0.0.1:8002/recover  # and come back");
        println!();
        println!(
            "Edit {} and reload with `kill -HUP {}` or `fulcrum reload -c {}`. Ctrl-C stops.",
            path.display(),
            std::process::id(),
            path.display()
        );
        server.wait(signals).await
    })
}

/// A tiny keep-alive HTTP/1.1 server answering every request with its name.
/// `/health` answers 200 while the target is "up"; `POST /fail` makes it answer
/// 500 (the balancer then marks the target unhealthy) and `POST /recover` undoes
/// that.
async fn serve_target(listener: TcpListener, name: &'static str) {
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    loop {
        if let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(target_conn(stream, name, failing.clone()));
        }
    }
}

async fn target_conn(
    mut s: TcpStream,
    name: &'static str,
    failing: Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering;
    let port = s.local_addr().map(|a| a.port()).unwrap_or(0);
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        // Read one request head (bodies are skipped by Content-Length).
        let (head_len, body_len, path) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let cl = req
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| {
                            std::str::from_utf8(h.value)
                                .ok()?
                                .trim()
                                .parse::<usize>()
                                .ok()
                        })
                        .unwrap_or(0);
                    break (n, cl, req.path.unwrap_or("/").to_owned());
                }
                Ok(httparse::Status::Partial) if buf.len() < 65536 => {}
                _ => return,
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        while buf.len() < head_len + body_len {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_len + body_len);
        let (status, body) = match path.as_str() {
            "/fail" => {
                failing.store(true, Ordering::Relaxed);
                ("200 OK", format!("{name} now fails its health checks\n"))
            }
            "/recover" => {
                failing.store(false, Ordering::Relaxed);
                ("200 OK", format!("{name} passes its health checks again\n"))
            }
            "/health" if failing.load(Ordering::Relaxed) => {
                ("500 Internal Server Error", "failing\n".to_owned())
            }
            _ => ("200 OK", format!("Hello from {name} (127.0.0.1:{port})\n")),
        };
        let resp = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Demo-Target: {name}\r\n\r\n{body}",
            body.len()
        );
        if s.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}
