//! Backends for the tests: a hyper HTTP/1.1 server that answers with its name,
//! echoes, streams large bodies, answers slowly, and records what reached it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{Request, Response as HyperResponse};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type RespBody = BoxBody<Bytes, BoxError>;

/// A request as a backend saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.header_all(name).into_iter().next()
    }
}

#[derive(Default)]
pub struct BackendStats {
    /// Every accepted TCP connection (health checks included).
    pub connections: Arc<AtomicUsize>,
    /// Connections that carried at least one request other than a health check.
    pub data_connections: AtomicUsize,
    /// Requests other than health checks (`/hc`).
    pub requests: AtomicUsize,
    pub health_checks: AtomicUsize,
    /// Requests other than health checks, in arrival order.
    pub seen: Mutex<Vec<Seen>>,
    /// Health checks (`/hc`), in arrival order.
    pub hc_seen: Mutex<Vec<Seen>>,
    /// The status `/hc` answers; 0 means 200. Switch it with [`Backend::set_health`].
    pub hc_status: Arc<AtomicU16>,
    /// Connections that carried a request other than a health check and have ended
    /// (closed by the peer; not counted when [`Backend::stop`] aborts them).
    pub data_closed: AtomicUsize,
}

/// A hyper HTTP/1.1 server on 127.0.0.1 that answers every request with its name
/// (and `X-Backend: name`, `X-Path: path?query`), except `POST /echo` (streams the
/// request body back), `GET /big?n=BYTES` (streams `pattern(n)`), `/slow?ms=N`
/// (answers after N ms), `/setcookie` (answers with `Set-Cookie: SESSIONID=sess-NAME;
/// Path=/`). `/hc` is the health-check path: answered with the status set by
/// [`Backend::set_health`] (200 by default), recorded apart, not counted as a request.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub stats: Arc<BackendStats>,
    accept: JoinHandle<()>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stats = Arc::new(BackendStats::default());
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (addr, accept) = Self::serve(listener, name, &stats, &conns);
        Backend {
            name: name.to_string(),
            addr,
            stats,
            accept,
            conns,
        }
    }

    /// Starts accepting again on the same port after [`Backend::stop`], keeping the
    /// counters (retries the bind for up to 5 s while the old socket goes away).
    pub async fn restart(&mut self) {
        self.stop();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "rebind {}: {e}",
                        self.addr
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let (_, accept) = Self::serve(listener, &self.name, &self.stats, &self.conns);
        self.accept = accept;
    }

    fn serve(
        listener: TcpListener,
        name: &str,
        stats: &Arc<BackendStats>,
        conns: &Arc<Mutex<Vec<AbortHandle>>>,
    ) -> (SocketAddr, JoinHandle<()>) {
        let addr = listener.local_addr().unwrap();
        let name_arc: Arc<str> = Arc::from(name);
        let accept = tokio::spawn({
            let stats = stats.clone();
            let conns = conns.clone();
            async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    stats.connections.fetch_add(1, Ordering::SeqCst);
                    let h = tokio::spawn(serve_conn(stream, name_arc.clone(), stats.clone()));
                    conns.lock().unwrap().push(h.abort_handle());
                }
            }
        });
        (addr, accept)
    }

    /// The status the health-check path `/hc` answers from now on.
    pub fn set_health(&self, status: u16) {
        self.stats.hc_status.store(status, Ordering::SeqCst);
    }

    /// Health checks received so far.
    pub fn health_checks(&self) -> usize {
        self.stats.health_checks.load(Ordering::SeqCst)
    }

    /// The health checks received so far, in order.
    pub fn hc_seen(&self) -> Vec<Seen> {
        self.stats.hc_seen.lock().unwrap().clone()
    }

    /// Connections that carried traffic and were closed by the peer.
    pub fn data_closed(&self) -> usize {
        self.stats.data_closed.load(Ordering::SeqCst)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn connections(&self) -> usize {
        self.stats.connections.load(Ordering::SeqCst)
    }

    pub fn data_connections(&self) -> usize {
        self.stats.data_connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> usize {
        self.stats.requests.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.stats.seen.lock().unwrap().clone()
    }

    /// The last request other than a health check.
    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the backend saw a request")
    }

    /// Stops accepting and closes every connection.
    pub fn stop(&self) {
        self.accept.abort();
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve_conn(stream: TcpStream, name: Arc<str>, stats: Arc<BackendStats>) {
    let carried = Arc::new(AtomicBool::new(false));
    let svc = hyper::service::service_fn({
        let (stats, carried) = (stats.clone(), carried.clone());
        move |req| {
            let (name, stats, carried) = (name.clone(), stats.clone(), carried.clone());
            async move { Ok::<_, Infallible>(handle(req, &name, &stats, &carried).await) }
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), svc)
        .await;
    if carried.load(Ordering::SeqCst) {
        stats.data_closed.fetch_add(1, Ordering::SeqCst);
    }
}

fn seen_of(req: &Request<Incoming>, target: &str) -> Seen {
    Seen {
        method: req.method().to_string(),
        target: target.to_string(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect(),
    }
}

fn full(b: impl Into<Bytes>) -> RespBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

fn query_num(req: &Request<Incoming>, key: &str) -> u64 {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

async fn handle(
    req: Request<Incoming>,
    name: &str,
    stats: &BackendStats,
    carried: &AtomicBool,
) -> HyperResponse<RespBody> {
    let path = req.uri().path().to_string();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| path.clone());
    if path == "/hc" {
        stats.hc_seen.lock().unwrap().push(seen_of(&req, &target));
        stats.health_checks.fetch_add(1, Ordering::SeqCst);
        let code = match stats.hc_status.load(Ordering::SeqCst) {
            0 => 200,
            c => c,
        };
        let body = if code == 200 { full("ok") } else { full("") };
        let mut r = HyperResponse::new(body);
        *r.status_mut() = hyper::StatusCode::from_u16(code).unwrap();
        return r;
    }
    if !carried.swap(true, Ordering::SeqCst) {
        stats.data_connections.fetch_add(1, Ordering::SeqCst);
    }
    stats.seen.lock().unwrap().push(seen_of(&req, &target));
    stats.requests.fetch_add(1, Ordering::SeqCst);

    let mut resp = match (req.method().as_str(), path.as_str()) {
        ("POST", "/echo") => {
            let len = req.headers().get(hyper::header::CONTENT_LENGTH).cloned();
            let mut r = HyperResponse::new(req.into_body().map_err(BoxError::from).boxed());
            if let Some(len) = len {
                r.headers_mut().insert(hyper::header::CONTENT_LENGTH, len);
            }
            r
        }
        ("GET", "/big") => {
            let n = query_num(&req, "n") as usize;
            let mut r = HyperResponse::new(BigBody { n, pos: 0 }.boxed());
            r.headers_mut().insert(
                hyper::header::CONTENT_LENGTH,
                n.to_string().parse().unwrap(),
            );
            r
        }
        (_, "/slow") => {
            tokio::time::sleep(Duration::from_millis(query_num(&req, "ms"))).await;
            HyperResponse::new(full(name.to_string()))
        }
        (_, "/setcookie") => {
            let mut r = HyperResponse::new(full(name.to_string()));
            let c = format!("SESSIONID=sess-{name}; Path=/");
            r.headers_mut()
                .insert(hyper::header::SET_COOKIE, c.parse().unwrap());
            r
        }
        _ => HyperResponse::new(full(name.to_string())),
    };
    let h = resp.headers_mut();
    h.insert("x-backend", name.parse().unwrap());
    if let Ok(v) = target.parse() {
        h.insert("x-path", v);
    }
    resp
}

/// A target that accepts connections and reads what is sent but never answers
/// (for health-check timeouts).
pub struct HangBackend {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
}

impl HangBackend {
    pub async fn start() -> HangBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let accept = tokio::spawn({
            let (connections, conns) = (connections.clone(), conns.clone());
            async move {
                loop {
                    let Ok((mut s, _)) = listener.accept().await else {
                        continue;
                    };
                    connections.fetch_add(1, Ordering::SeqCst);
                    let h = tokio::spawn(async move {
                        use tokio::io::AsyncReadExt;
                        let mut b = [0u8; 4096];
                        while matches!(s.read(&mut b).await, Ok(n) if n > 0) {}
                    });
                    conns.lock().unwrap().push(h.abort_handle());
                }
            }
        });
        HangBackend {
            addr,
            connections,
            accept,
            conns,
        }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for HangBackend {
    fn drop(&mut self) {
        self.accept.abort();
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

/// The deterministic payload `/big` serves: byte i is `i % 251`.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

struct BigBody {
    n: usize,
    pos: usize,
}

impl Body for BigBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.pos >= this.n {
            return Poll::Ready(None);
        }
        let end = (this.pos + 64 * 1024).min(this.n);
        let chunk: Vec<u8> = (this.pos..end).map(|i| (i % 251) as u8).collect();
        this.pos = end;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.pos >= self.n
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact((self.n - self.pos) as u64)
    }
}
