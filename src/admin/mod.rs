//! The admin API (SPEC §8): `/healthz`, `/readyz`, `/metrics`, and under `/api/`
//! (bearer token when `admin.token_file` is set) `GET /api/v1/status` and
//! `POST /api/v1/reload`. One small HTTP/1.1 exchange per connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::server::{ReloadHandle, ReloadOutcome, Shared};

const MAX_HEAD: usize = 16 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long, and for how many bytes, a connection is read after its answer.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_MAX_BYTES: usize = 1 << 20;

/// Binds the admin API and serves it on the current (control) runtime.
pub async fn start(
    addr: SocketAddr,
    shared: Arc<Shared>,
    reload: ReloadHandle,
    prometheus: PrometheusHandle,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let ctx = Arc::new(Ctx {
        shared,
        reload,
        prometheus,
    });
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(handle(stream, ctx.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(local)
}

struct Ctx {
    shared: Arc<Shared>,
    reload: ReloadHandle,
    prometheus: PrometheusHandle,
}

struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
    extra: &'static str,
}

impl Response {
    fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.to_owned(),
            extra: "",
        }
    }
    fn json(status: u16, v: serde_json::Value) -> Response {
        Response {
            status,
            content_type: "application/json",
            body: format!("{v}\n"),
            extra: "",
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

async fn handle(mut stream: TcpStream, ctx: Arc<Ctx>) {
    let mut buf = Vec::with_capacity(1024);
    let parsed = tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream, &mut buf)).await;
    let is_head = matches!(&parsed, Ok(Ok(Some((m, _, _)))) if m == "HEAD");
    let resp = match parsed {
        Ok(Ok(Some((method, path, auth)))) => route(&ctx, &method, &path, auth.as_deref()).await,
        Ok(Ok(None)) => Response::text(400, "bad request"),
        Ok(Err(_)) | Err(_) => return,
    };
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len(),
        resp.extra
    );
    let _ = stream.write_all(head.as_bytes()).await;
    if !is_head {
        let _ = stream.write_all(resp.body.as_bytes()).await;
    }
    let _ = stream.shutdown().await;
    // Lingering close: a request body (or anything else) still unread when the
    // socket closes would make the kernel reset the connection, which can destroy
    // the answer before the client reads it. Read until the client closes, briefly.
    let _ = tokio::time::timeout(LINGER, async {
        let mut sink = [0u8; 4096];
        let mut left = LINGER_MAX_BYTES;
        while let Ok(n @ 1..) = stream.read(&mut sink).await {
            left = left.saturating_sub(n);
            if left == 0 {
                break;
            }
        }
    })
    .await;
}

/// Reads one request head: (method, path, Authorization value). `None`: malformed.
async fn read_head(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<(String, String, Option<String>)>> {
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(_)) => {
                let auth = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("authorization"))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
                    .map(str::to_owned);
                let method = req.method.unwrap_or("").to_owned();
                let path = req.path.unwrap_or("").to_owned();
                return Ok(Some((method, path, auth)));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            _ => return Ok(None),
        }
    }
}

/// Constant-time comparison of the presented token with the expected one.
fn token_ok(expected: &str, auth: Option<&str>) -> bool {
    // The scheme name is case-insensitive (RFC 9110 §11.1).
    let given = auth.and_then(|a| {
        let (scheme, token) = a.trim_start().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then_some(token)
    });
    let Some(given) = given else {
        return false;
    };
    let (a, b) = (
        expected.as_bytes(),
        crate::util::trim_ascii(given).as_bytes(),
    );
    if a.is_empty() {
        return false;
    }
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn route(ctx: &Ctx, method: &str, target: &str, auth: Option<&str>) -> Response {
    let path = target.split('?').next().unwrap_or("");
    // HEAD is GET without the body (`handle` leaves it out).
    let get = matches!(method, "GET" | "HEAD");
    if !get && matches!(path, "/healthz" | "/readyz" | "/metrics") {
        return Response {
            extra: "Allow: GET, HEAD\r\n",
            ..Response::text(405, "method not allowed")
        };
    }
    match path {
        "/healthz" => return Response::text(200, "ok"),
        "/readyz" => {
            return if ctx.shared.ready.load(Ordering::Acquire) {
                Response::text(200, "ready")
            } else {
                Response::text(503, "not ready")
            };
        }
        "/metrics" => {
            return Response {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: ctx.prometheus.render(),
                extra: "",
            };
        }
        _ => {}
    }
    if !path.starts_with("/api/") {
        return Response::text(404, "not found");
    }
    if let Some(token) = ctx.shared.admin_token.load().as_ref() {
        if !token_ok(token, auth) {
            return Response {
                extra: "WWW-Authenticate: Bearer\r\n",
                ..Response::json(
                    401,
                    json!({"error": "a valid Authorization: Bearer <token> header is required"}),
                )
            };
        }
    }
    match (method, path) {
        ("GET" | "HEAD", "/api/v1/status") => Response::json(200, status(&ctx.shared)),
        (_, "/api/v1/status") => Response {
            extra: "Allow: GET, HEAD\r\n",
            ..Response::text(405, "method not allowed")
        },
        ("POST", "/api/v1/reload") => match ctx.reload.reload().await {
            ReloadOutcome::Ok { summary } => {
                Response::json(200, json!({"result": "ok", "summary": summary}))
            }
            ReloadOutcome::Failed { errors } => {
                Response::json(400, json!({"result": "error", "errors": errors}))
            }
        },
        (_, "/api/v1/reload") => Response {
            extra: "Allow: POST\r\n",
            ..Response::text(405, "method not allowed")
        },
        _ => Response::text(404, "not found"),
    }
}

fn target_json(address: &str, zone: &str, st: &crate::targets::TargetState) -> serde_json::Value {
    let h = st.health_detail();
    let mut v = json!({
        "address": address,
        "zone": zone,
        "state": h.state.as_str(),
        "reason": h.reason,
        "description": h.description,
        "since": crate::util::rfc3339(h.since),
        "in_flight": st.in_flight(),
        "active_connections": st.active_connections.load(Ordering::Relaxed),
    });
    let deadline = st.drain_deadline_ms.load(Ordering::Relaxed);
    if st.is_draining() && deadline > 0 {
        v["draining_until"] = json!(crate::util::rfc3339(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(deadline)
        ));
    }
    v
}

/// The `GET /api/v1/status` document (SPEC §8).
pub fn status(shared: &Shared) -> serde_json::Value {
    let live = shared.live.load_full();
    let s = &live.snapshot;
    let listeners: Vec<_> = s
        .listeners
        .iter()
        .zip(&live.listeners)
        .map(|(l, ll)| {
            json!({
                "name": l.name,
                "protocol": l.protocol.as_str(),
                "bind": l.bind.to_string(),
                "active_connections": ll.state.active.load(Ordering::Relaxed),
            })
        })
        .collect();
    let mut groups: Vec<_> = s
        .target_groups
        .iter()
        .zip(&live.groups)
        .map(|(g, lg)| {
            let mut targets: Vec<_> = g
                .targets
                .iter()
                .zip(&lg.targets)
                .map(|(t, st)| target_json(&t.address, &t.zone, st))
                .collect();
            if let Ok(list) = shared.draining_targets.lock() {
                for d in list.iter().filter(|d| d.group == g.name) {
                    if !g.targets.iter().any(|t| t.address == d.address) {
                        targets.push(target_json(&d.address, &d.zone, &d.state));
                    }
                }
            }
            json!({
                "name": g.name,
                "protocol": g.protocol.as_str(),
                "algorithm": g.algorithm.as_str(),
                "targets": targets,
            })
        })
        .collect();
    // A group a reload removed stays listed while its targets drain.
    if let Ok(list) = shared.draining_targets.lock() {
        let mut gone: Vec<(&str, &'static str, &'static str, Vec<serde_json::Value>)> = Vec::new();
        for d in list.iter().filter(|d| s.group_by_name(&d.group).is_none()) {
            let t = target_json(&d.address, &d.zone, &d.state);
            match gone.iter_mut().find(|g| g.0 == d.group) {
                Some(g) => g.3.push(t),
                None => gone.push((&d.group, d.group_protocol, d.group_algorithm, vec![t])),
            }
        }
        for (name, protocol, algorithm, targets) in gone {
            groups.push(json!({
                "name": name,
                "protocol": protocol,
                "algorithm": algorithm,
                "targets": targets,
            }));
        }
    }
    json!({
        "node": { "name": s.node.name, "zone": s.node.zone },
        "config": {
            "path": s.source.path.display().to_string(),
            "sha256": s.source.sha256,
            "loaded_at": crate::util::rfc3339(s.source.loaded_at),
        },
        "listeners": listeners,
        "target_groups": groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        assert!(token_ok("abc", Some("Bearer abc")));
        assert!(!token_ok("abc", Some("Bearer abd")));
        assert!(!token_ok("abc", Some("Bearer ab")));
        assert!(!token_ok("abc", Some("Basic abc")));
        assert!(
            token_ok("abc", Some("bearer abc")),
            "the scheme in any case"
        );
        assert!(token_ok("abc", Some("BEARER  abc")));
        assert!(!token_ok("abc", Some("Bearerabc")));
        assert!(!token_ok("abc", None));
    }
}
