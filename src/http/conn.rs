//! The client-side connection loop of http listeners: read a request head (within
//! `header_timeout` once its first byte arrived; `idle_timeout` between
//! requests), refuse what cannot be framed safely, route, and proxy to a target
//! over a pooled keep-alive connection with both bodies streamed.
//!
//! Invariants: a request body is always read to its end or the connection is
//! closed before reuse, on both sides; bytes after a head without a body are the
//! next request; answers go out in request order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::chunked::ChunkedDecoder;
use super::head::{self, BodyFraming, ForwardInfo, Limits, RequestHead, ResponseHead, Version};
use super::{desync, park, pool};
use crate::balancer::cookie;
use crate::listener::ConnGuard;
use crate::live::Live;
use crate::record::Record;
use crate::router::{self, RequestView};
use crate::server::Shared;
use crate::snapshot::{Action, Listener, ListenerProtocol, Stickiness};
use crate::targets::InFlight;

/// Connecting to a target longer than this is a 504.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Read size for bodies: 256 KiB moved 2.5 GB/s of 1 MiB responses through one
/// worker where 64 KiB moved 2.0 (fewer system calls per byte).
const IO_CHUNK: usize = 256 * 1024;
/// With `FULCRUM_HTTP_SPLICE=1`, a body of known length with at least this much
/// left after what came with its head is spliced from a plain target connection
/// to a plain client. Off by default: it halves the CPU per byte but moved 1 MiB
/// responses 20% slower than 256 KiB copies on the benchmark machine
/// (benches/README.md).
const SPLICE_MIN: u64 = 64 * 1024;

/// Whether splice(2) works here (checked once).
fn splice_ok() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| {
        std::env::var("FULCRUM_HTTP_SPLICE").is_ok_and(|v| v == "1")
            && crate::l4::splice::available()
    })
}

/// A response body up to this size that arrived with its head is copied behind
/// the head and sent in one write (one system call instead of two).
const COALESCE_MAX: usize = 16 * 1024;

/// A client connection: plain TCP or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {
    /// Whether [`Stream::poll_idle_ready`] tells when the next request's bytes
    /// arrive, so an idle connection can wait without holding a buffer. A TLS
    /// stream cannot: it may hold decrypted bytes its socket no longer shows.
    const READY_WITHOUT_BUFFER: bool;
    /// The plain socket, when bytes written to it reach the client as they are
    /// (so a body can be spliced to it).
    fn as_tcp(&self) -> Option<&tokio::net::TcpStream>;
    /// Ready once the connection has bytes (or its end) to read.
    fn poll_idle_ready(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>>;
    /// The plain socket, for parking an idle connection (`None`: cannot be
    /// parked; the stream is dropped).
    fn into_plain(self) -> Option<tokio::net::TcpStream>;
}

impl Stream for tokio::net::TcpStream {
    const READY_WITHOUT_BUFFER: bool = true;
    fn as_tcp(&self) -> Option<&tokio::net::TcpStream> {
        Some(self)
    }
    fn poll_idle_ready(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.poll_read_ready(cx)
    }
    fn into_plain(self) -> Option<tokio::net::TcpStream> {
        Some(self)
    }
}

impl Stream for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    const READY_WITHOUT_BUFFER: bool = false;
    fn as_tcp(&self) -> Option<&tokio::net::TcpStream> {
        None
    }
    fn poll_idle_ready(
        &self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn into_plain(self) -> Option<tokio::net::TcpStream> {
        None
    }
}

/// Request buffers not in use, per worker thread: a connection holds a set only
/// while it has a request in flight (plain TCP) or for [`IDLE_TRIM`] after one
/// (TLS), so memory follows the requests in flight, not the open connections.
struct Spare;

/// At most this many spare buffer sets are kept per worker thread.
const MAX_SPARE: usize = 64;
/// A buffer grown beyond this (a large body) is not kept for reuse.
const SPARE_MAX_CAPACITY: usize = 16 * 1024;

thread_local! {
    // Boxes, not values: a set moves between a connection and this list without
    // being copied or re-allocated.
    #[allow(clippy::vec_box)]
    static SPARE: std::cell::RefCell<Vec<Box<Bufs>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Spare {
    fn take() -> Box<Bufs> {
        SPARE.with(|s| s.borrow_mut().pop()).unwrap_or_default()
    }

    fn give(mut b: Box<Bufs>) {
        for v in [&mut b.client, &mut b.upstream, &mut b.out] {
            v.clear();
            if v.capacity() > SPARE_MAX_CAPACITY {
                *v = Vec::new();
            }
        }
        b.rec = None;
        for t in [&mut b.host, &mut b.trace] {
            t.clear();
            if t.capacity() > SPARE_MAX_CAPACITY {
                *t = String::new();
            }
        }
        SPARE.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < MAX_SPARE {
                s.push(b);
            }
        });
    }
}

/// A connection's buffers, back to the spares when the connection ends.
struct Held(Option<Box<Bufs>>);

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(b) = self.0.take() {
            Spare::give(b);
        }
    }
}

/// Why a proxied exchange ended early.
enum Fail {
    /// The client went away or misbehaved: close quietly.
    Client,
    /// The client closed before its response was sent: counted as 460.
    ClientGone,
    /// Answer this status (if nothing was sent to the client yet) and close.
    Status(u16),
}

/// How long a keep-alive connection waits for its next request before it gives
/// its buffers back.
const IDLE_TRIM: Duration = Duration::from_millis(250);

/// Per-connection buffers, reused for every request on the connection.
struct Bufs {
    /// Bytes read from the client not consumed yet (pipelined requests stay here).
    client: Vec<u8>,
    /// Response bytes read from the target.
    upstream: Vec<u8>,
    /// Heads and re-encoded chunks being written.
    out: Vec<u8>,
    req: RequestHead,
    resp: ResponseHead,
    /// The access-log record of the current request (only while a log is on).
    rec: Option<Record>,
    /// When the current request's first byte arrived.
    t0: Instant,
    /// The lower-cased Host the rules see, and the X-Amzn-Trace-Id sent upstream:
    /// rewritten for every request, allocated once.
    host: String,
    trace: String,
}

impl Default for Bufs {
    fn default() -> Self {
        Bufs {
            client: Vec::with_capacity(4096),
            upstream: Vec::new(),
            out: Vec::new(),
            req: RequestHead::default(),
            resp: ResponseHead::default(),
            rec: None,
            t0: Instant::now(),
            host: String::new(),
            trace: String::new(),
        }
    }
}

pub fn serve<C: Stream>(
    client: C,
    peer: SocketAddr,
    local_port: u16,
    listener: Arc<str>,
    guard: ConnGuard,
    shared: Arc<Shared>,
    tls: Option<crate::tls::server::TlsInfo>,
) -> impl std::future::Future<Output = ()> {
    // Built before the connection's future, which captures `client` and `cx`
    // and uses them in place: an async fn would keep its arguments twice (as
    // arguments and as locals), and this state is what an idle connection costs.
    let cx = ConnCx {
        peer,
        client_ip: crate::net::canonical_ip(peer.ip()),
        local_port,
        born: Instant::now(),
        listener,
        guard,
        shared,
        tls: tls.map(Box::new),
    };
    run(client, cx, None)
}

/// A parked connection (see `park`) whose client sent bytes or closed: it goes
/// on reading at once, under its old idle deadline.
pub(super) fn resume(
    client: tokio::net::TcpStream,
    carried: park::Carried,
    deadline: tokio::time::Instant,
    shared: Arc<Shared>,
) -> impl std::future::Future<Output = ()> {
    let park::Carried {
        peer,
        local_port,
        born,
        listener,
        guard,
    } = carried;
    let cx = ConnCx {
        peer,
        client_ip: crate::net::canonical_ip(peer.ip()),
        local_port,
        born,
        listener,
        guard,
        shared,
        tls: None,
    };
    run(client, cx, Some(deadline))
}

/// The connection's loop. Written as a function returning an async block (not an
/// async fn) so that the future holds `client` and `cx` once, used in place.
#[allow(clippy::manual_async_fn)]
fn run<C: Stream>(
    mut client: C,
    cx: ConnCx,
    mut resumed: Option<tokio::time::Instant>,
) -> impl std::future::Future<Output = ()> {
    async move {
        let draining = cx.shared.draining.subscribe();
        // One wait for the drain signal lives as long as the connection (not one
        // per request): the idle waits below poll it.
        let mut drain_rx = draining.clone();
        let drain = drain_rx.changed();
        tokio::pin!(drain);
        // The buffers live on the heap while a request is in flight and go back to
        // the worker's spares while the connection idles; this loop's own state (the
        // task) stays small.
        let mut bufs = Held(Some(Spare::take()));
        let sleep = tokio::time::sleep(Duration::from_secs(365 * 86400));
        tokio::pin!(sleep);
        let mut timer = IdleTimer {
            deadline: sleep.deadline(),
            sleep,
        };
        loop {
            // Between requests only idle_timeout applies, and closing is silent.
            if bufs.0.as_ref().is_none_or(|b| b.client.is_empty()) {
                // A connection resumed from the parking lot has bytes waiting: they
                // are served even while draining, as they would have been had it
                // not been parked (the answer closes the connection).
                if *draining.borrow() && resumed.is_none() {
                    return;
                }
                let idle = {
                    let live = cx.shared.live.load();
                    match live.listener_index(&cx.listener) {
                        Some(li) => live.snapshot.listeners[li].idle_timeout,
                        None => return,
                    }
                };
                let now = tokio::time::Instant::now();
                let was_parked = resumed.take();
                timer.deadline = was_parked.unwrap_or(now + idle);
                if C::READY_WITHOUT_BUFFER {
                    // Wait for the next request's bytes holding no buffer at all.
                    if let Some(b) = bufs.0.take() {
                        Spare::give(b);
                    }
                    // A client that stays quiet for PARK_AFTER has its connection
                    // parked: the task ends, the socket waits in the worker's lot.
                    // A resumed connection was readable: it reads at once.
                    if was_parked.is_none() {
                        let full = timer.deadline;
                        let park_at = now + park::PARK_AFTER;
                        let mut may_park = park_at < full;
                        if may_park {
                            timer.deadline = park_at;
                        }
                        loop {
                            // Biased: a connection whose next request is there does
                            // not poll the timer and the drain wait at all.
                            tokio::select! {
                                biased;
                                r = std::future::poll_fn(|c| client.poll_idle_ready(c)) => {
                                    if r.is_err() {
                                        return;
                                    }
                                    break;
                                }
                                _ = timer.expired() => {
                                    if !may_park {
                                        return;
                                    }
                                    if park::available(&cx.shared) {
                                        // Only plain sockets get here
                                        // (READY_WITHOUT_BUFFER).
                                        if let Some(tcp) = client.into_plain() {
                                            let ConnCx { peer, local_port, born, listener, guard, .. } = cx;
                                            let carried = park::Carried { peer, local_port, born, listener, guard };
                                            park::park(tcp, carried, full);
                                        }
                                        return;
                                    }
                                    may_park = false;
                                    timer.deadline = full;
                                }
                                _ = &mut drain => return,
                            }
                        }
                        timer.deadline = full;
                    }
                    let b = bufs.0.insert(Spare::take());
                    // The readiness may be stale (a fresh connection's, or bytes
                    // already taken): the drain still ends this wait.
                    tokio::select! {
                        biased;
                        r = read_more(&mut client, &mut b.client) => match r {
                            Ok(n) if n > 0 => {}
                            _ => return,
                        },
                        _ = timer.expired() => return,
                        _ = &mut drain => return,
                    }
                } else if !Box::pin(idle_buffered(
                    &mut client,
                    &mut bufs,
                    timer.deadline,
                    idle,
                    drain.as_mut(),
                ))
                .await
                {
                    return;
                }
            }
            let Some(b) = bufs.0.as_mut() else { return };
            // Boxed: a request's large state lives on the heap only while it runs.
            if !Box::pin(request(&mut client, b, &cx, &draining, &mut timer)).await {
                return;
            }
        }
    }
}

/// The wait for the next request on a stream whose readiness does not show what
/// it holds (TLS can hold decrypted bytes its socket no longer shows). A busy
/// keep-alive connection sends its next request at once; one that stays quiet
/// gives its buffers back while it waits. Boxed by the caller, so a plain
/// connection's idle state does not carry this wait's larger one. `false`: the
/// connection ends.
async fn idle_buffered<C: Stream, D: std::future::Future>(
    client: &mut C,
    bufs: &mut Held,
    deadline: tokio::time::Instant,
    idle: Duration,
    mut drain: std::pin::Pin<&mut D>,
) -> bool {
    let quick = tokio::time::Instant::now() + IDLE_TRIM.min(idle);
    let got = match bufs.0.as_mut() {
        Some(b) => tokio::select! {
            r = tokio::time::timeout_at(quick, read_more(client, &mut b.client)) => match r {
                Ok(Ok(n)) if n > 0 => true,
                Ok(_) => return false,
                Err(_) => false,
            },
            _ = drain.as_mut() => return false,
        },
        None => false,
    };
    if !got {
        if let Some(b) = bufs.0.take() {
            Spare::give(b);
        }
        let mut small = [0u8; 128];
        let n = tokio::select! {
            r = tokio::time::timeout_at(deadline, client.read(&mut small)) => match r {
                Ok(Ok(n)) if n > 0 => n,
                _ => return false,
            },
            _ = drain.as_mut() => return false,
        };
        bufs.0
            .insert(Spare::take())
            .client
            .extend_from_slice(&small[..n]);
    }
    true
}

/// A connection's one timer for its idle waits (between requests, and for a
/// target's answer). Moving the deadline later costs no timer-wheel work: the
/// sleep registered for an earlier deadline fires, finds the deadline moved and
/// sleeps again, so a busy keep-alive connection registers about one timer per
/// idle period instead of two per request.
struct IdleTimer<'a> {
    sleep: std::pin::Pin<&'a mut tokio::time::Sleep>,
    deadline: tokio::time::Instant,
}

impl IdleTimer<'_> {
    /// Resolves once `self.deadline` has passed.
    async fn expired(&mut self) {
        loop {
            let at = self.sleep.deadline();
            // Earlier than registered: move it now. Later: only once the
            // registered time has come (the sleep fired early).
            if at > self.deadline || (at < self.deadline && self.sleep.is_elapsed()) {
                self.sleep.as_mut().reset(self.deadline);
            }
            self.sleep.as_mut().await;
            if self.sleep.deadline() >= self.deadline {
                return;
            }
        }
    }
}

/// What a connection's requests share.
struct ConnCx {
    peer: SocketAddr,
    client_ip: std::net::IpAddr,
    local_port: u16,
    born: Instant,
    listener: Arc<str>,
    guard: ConnGuard,
    shared: Arc<Shared>,
    tls: Option<Box<crate::tls::server::TlsInfo>>,
}

/// Reads, checks and answers one request whose first bytes are in `b.client`.
/// `false`: the connection ends.
async fn request<C: Stream>(
    client: &mut C,
    b: &mut Bufs,
    cx: &ConnCx,
    draining: &tokio::sync::watch::Receiver<bool>,
    timer: &mut IdleTimer<'_>,
) -> bool {
    let (peer, client_ip, local_port, born) = (cx.peer, cx.client_ip, cx.local_port, cx.born);
    let listener = &cx.listener;
    let tls = &cx.tls;
    let metrics = &cx.guard.listener().metrics;
    {
        // The request uses the tables current when its first byte arrived.
        let live = cx.shared.live.load_full();
        let Some(li) = live.listener_index(listener) else {
            return false;
        };
        let cfg = &live.snapshot.listeners[li];
        b.t0 = Instant::now();
        b.rec = live.access_log.as_ref().map(|_| {
            let kind = if cfg.protocol == ListenerProtocol::Https {
                "https"
            } else {
                "http"
            };
            let mut r = Record::new(kind, listener.clone(), peer, SystemTime::now());
            if let Some(t) = &tls {
                r.ssl_cipher = Some(t.cipher);
                r.ssl_protocol = Some(t.protocol);
                r.domain_name = t.sni.clone().filter(|_| t.sni_matched);
                r.chosen_cert = t.cert_name.clone();
            }
            r
        });
        let mut limits = Limits {
            // Both Transfer-Encoding and Content-Length: strictest refuses; the
            // other modes forward it chunked without the Content-Length and close
            // both connections after the exchange (SPEC §3).
            reject_te_with_cl: cfg.desync_mitigation == crate::snapshot::DesyncMode::Strictest,
            ..Limits::default()
        };
        // The head must arrive whole within header_timeout of its first byte.
        let deadline = tokio::time::Instant::from_std(b.t0) + cfg.header_timeout;
        b.req.clear();
        // Bytes added by encoding spaces or control characters in the target (not
        // received from the client), and which of the two it was.
        let mut grown = 0;
        let mut encoded: Option<&'static str> = None;
        // Control characters in header values replaced by spaces (NonCompliantHeader).
        let mut blanked = false;
        // HTTP/1.2..1.9 served as HTTP/1.1 (NonCompliantVersion).
        let mut downgraded = false;
        let parsed = loop {
            match head::parse_request(&b.client, &limits, &mut b.req) {
                Ok(Some(())) => break Ok(()),
                Ok(None) => {}
                // Acceptable (spaces) and Ambiguous (control characters) in ALB's
                // table: allowed unless strictest, percent-encoded so that no target
                // can split or read the line differently.
                Err(head::RequestError::BadRequest(r @ ("SpaceInUri" | "AmbiguousUri")))
                    if grown == 0
                        && cfg.desync_mitigation != crate::snapshot::DesyncMode::Strictest =>
                {
                    let before = b.client.len();
                    if !head::encode_target(&mut b.client) {
                        break Err(head::RequestError::BadRequest(r));
                    }
                    encoded = Some(r);
                    grown = b.client.len() - before;
                    // The limits apply to the line as the client sent it.
                    limits.max_line = limits.max_line.saturating_add(grown);
                    limits.max_head = limits.max_head.saturating_add(grown);
                    b.req.clear();
                    continue;
                }
                // Acceptable too: allowed unless strictest, the control characters
                // in header values replaced by spaces (none reaches the target).
                Err(head::RequestError::BadRequest("NonCompliantVersion"))
                    if !downgraded
                        && cfg.desync_mitigation != crate::snapshot::DesyncMode::Strictest =>
                {
                    if !head::downgrade_version(&mut b.client) {
                        break Err(head::RequestError::BadRequest("NonCompliantVersion"));
                    }
                    downgraded = true;
                    b.req.clear();
                    continue;
                }
                Err(head::RequestError::BadRequest("NonCompliantHeader"))
                    if !blanked
                        && cfg.desync_mitigation != crate::snapshot::DesyncMode::Strictest =>
                {
                    if !head::blank_controls_in_header_values(&mut b.client) {
                        break Err(head::RequestError::BadRequest("NonCompliantHeader"));
                    }
                    blanked = true;
                    b.req.clear();
                    continue;
                }
                Err(e) => break Err(e),
            }
            match tokio::time::timeout_at(deadline, read_more(client, &mut b.client)).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => {
                    head_bytes_in(b, metrics, grown);
                    return false;
                }
                Err(_) => {
                    head_bytes_in(b, metrics, grown);
                    refuse(
                        client,
                        &live,
                        b,
                        metrics,
                        408,
                        true,
                        false,
                        "RequestHeaderTimeout",
                    )
                    .await;
                    return false;
                }
            }
        };
        // 405 and 463 are found last, on a head parsed whole: the request goes
        // through desync classification first (its 400 comes before them, SPEC §3)
        // and is answered below, once it is known whether the connection goes on.
        // So is a 501: in strictest mode a request that is also not compliant is
        // blocked with the 400 that comes first.
        let (parsed, late) = match parsed {
            Err(
                e @ (head::RequestError::MethodNotAllowed
                | head::RequestError::TooManyForwardedFor
                | head::RequestError::NotImplemented(_)),
            ) => (Ok(()), Some(e)),
            p => (p, None),
        };
        if let Err(e) = parsed {
            head_bytes_in(b, metrics, grown);
            let status = e.status();
            if let Some(v) = desync::classify_error(e) {
                metrics.desync(v.class.as_str());
                if let Some(r) = b.rec.as_mut() {
                    r.classification = Some(class_word(v.class));
                    r.classification_reason = Some(v.reason);
                }
            }
            tracing::debug!(listener = %listener, client = %peer, reason = e.reason(), "request refused with {status}");
            refuse(client, &live, b, metrics, status, true, false, e.reason()).await;
            return false;
        }
        metrics.bytes_in.increment((b.req.head_len - grown) as u64);
        let is_head = b.req.method_kind == head::Method::Head;
        let mut verdict = desync::classify(&b.client, &b.req);
        if let Some(reason) = encoded {
            let class = if reason == "AmbiguousUri" {
                desync::Class::Ambiguous
            } else {
                desync::Class::Acceptable
            };
            if class > verdict.class {
                verdict = desync::Verdict { class, reason };
            }
        }
        if blanked && verdict.class == desync::Class::Compliant {
            verdict = desync::Verdict {
                class: desync::Class::Acceptable,
                reason: "NonCompliantHeader",
            };
        }
        if downgraded && verdict.class == desync::Class::Compliant {
            verdict = desync::Verdict {
                class: desync::Class::Acceptable,
                reason: "NonCompliantVersion",
            };
        }
        if b.rec.is_some() {
            start_record(b, cfg, local_port, verdict);
            if let Some(r) = b.rec.as_mut() {
                r.received_bytes -= grown as u64;
            }
        }
        let mut close_both = b.req.te_with_cl;
        if verdict.class != desync::Class::Compliant {
            metrics.desync(verdict.class.as_str());
            match desync::act(cfg.desync_mitigation, verdict.class) {
                desync::Act::Allow => {}
                desync::Act::AllowThenClose => close_both = true,
                desync::Act::Block => {
                    tracing::debug!(listener = %listener, client = %peer, reason = verdict.reason, "request blocked by desync mitigation");
                    refuse(
                        client,
                        &live,
                        b,
                        metrics,
                        400,
                        true,
                        is_head,
                        "DesyncMitigation",
                    )
                    .await;
                    return false;
                }
            }
        }
        let old_age = b.t0.saturating_duration_since(born) >= cfg.client_keep_alive;
        let keep = b.req.keep_alive && !old_age && !*draining.borrow() && !close_both;
        if let Some(e) = late {
            // After a 405 or 463 a bodiless keep-alive request leaves the
            // connection open for the next one; after a 501 the body's length is
            // unknown and the connection closes.
            let status = e.status();
            let not_implemented = matches!(e, head::RequestError::NotImplemented(_));
            if not_implemented {
                // The body bytes that came with the head were read too.
                let extra = b.client.len().saturating_sub(b.req.head_len) as u64;
                metrics.bytes_in.increment(extra);
                if let Some(r) = b.rec.as_mut() {
                    r.received_bytes += extra;
                }
            }
            let goes_on = keep && !not_implemented && can_go_on(b, cfg, born, draining);
            tracing::debug!(listener = %listener, client = %peer, reason = e.reason(), "request refused with {status}");
            if refuse(
                client,
                &live,
                b,
                metrics,
                status,
                !goes_on,
                is_head,
                e.reason(),
            )
            .await
                && goes_on
            {
                b.client.drain(..b.req.head_len);
                return true;
            }
            return false;
        }
        // Boxed: the exchange's large state lives on the heap only while a request
        // runs, so an idle connection's task stays small.
        let outcome = Box::pin(exchange(
            client, b, &live, cfg, client_ip, local_port, keep, close_both, listener, timer,
        ))
        .await;
        match outcome {
            Ok(keep) => {
                finish_record(&live, b, None, None);
                if !keep {
                    return false;
                }
            }
            Err(Fail::Client) => {
                finish_record(&live, b, None, Some("ClientClosed"));
                return false;
            }
            Err(Fail::ClientGone) => {
                // The client left before its response was delivered (ALB's 460).
                metrics.lb_response(460);
                finish_record(&live, b, Some(460), Some("ClientClosedBeforeResponse"));
                return false;
            }
            Err(Fail::Status(code)) => {
                // A bodiless request left nothing unread: after a 502, 503 or 504
                // the connection can carry the next one.
                let goes_on = keep && can_go_on(b, cfg, born, draining);
                let reason = match code {
                    502 => "TargetConnectionError",
                    503 => "NoHealthyTargets",
                    504 => "TargetTimeout",
                    _ => "BadRequest",
                };
                let sent = refuse(client, &live, b, metrics, code, !goes_on, is_head, reason).await;
                if !(sent && goes_on) {
                    return false;
                }
            }
        }
    }
    true
}

/// Answers an error the balancer gives itself (`close`: with `Connection: close`,
/// the connection ends) and completes the request's record. Whether the answer
/// went out.
#[allow(clippy::too_many_arguments)]
async fn refuse<C: Stream>(
    client: &mut C,
    live: &Live,
    b: &mut Bufs,
    metrics: &crate::metrics::ListenerMetrics,
    status: u16,
    close: bool,
    to_head: bool,
    reason: &'static str,
) -> bool {
    metrics.lb_response(status);
    let sent = send_error(client, &mut b.out, status, close, to_head)
        .await
        .is_ok();
    if sent {
        error_sent(b, metrics);
    }
    finish_record(live, b, Some(status), Some(reason));
    sent
}

/// Whether the connection can carry another request after an error the balancer
/// answers itself (SPEC §3: `Connection: close` only where it cannot): an HTTP/1.1
/// keep-alive request without a body (nothing of it is left unread), the
/// connection not past `client_keep_alive`, no shutdown under way.
fn can_go_on(
    b: &Bufs,
    cfg: &Listener,
    born: Instant,
    draining: &tokio::sync::watch::Receiver<bool>,
) -> bool {
    b.req.version == Version::Http11
        && b.req.keep_alive
        && matches!(
            b.req.framing,
            BodyFraming::None | BodyFraming::ContentLength(0)
        )
        && b.t0.saturating_duration_since(born) < cfg.client_keep_alive
        && !*draining.borrow()
}

fn class_word(c: desync::Class) -> &'static str {
    match c {
        desync::Class::Compliant => "Compliant",
        desync::Class::Acceptable => "Acceptable",
        desync::Class::Ambiguous => "Ambiguous",
        desync::Class::Severe => "Severe",
    }
}

/// Fills what the request head tells (request line, user agent, desync class).
fn start_record(b: &mut Bufs, cfg: &Listener, local_port: u16, verdict: desync::Verdict) {
    let buf = &b.client;
    let Some(r) = b.rec.as_mut() else { return };
    let scheme = if cfg.protocol == ListenerProtocol::Https {
        "https"
    } else {
        "http"
    };
    let host = b.req.host(buf).map_or("-".into(), String::from_utf8_lossy);
    // Without its port; an IPv6 literal keeps its brackets.
    let host = match host.strip_prefix('[').and_then(|h| h.split_once(']')) {
        Some((v6, _)) => &host[..v6.len() + 2],
        None => host.split(':').next().unwrap_or("-"),
    };
    let version = if b.req.version == Version::Http10 {
        "HTTP/1.0"
    } else {
        "HTTP/1.1"
    };
    r.request = format!(
        "{} {scheme}://{host}:{local_port}{} {version}",
        String::from_utf8_lossy(b.req.method(buf)),
        String::from_utf8_lossy(b.req.target(buf)),
    );
    r.user_agent = b
        .req
        .header(buf, "user-agent")
        .map(|v| String::from_utf8_lossy(v).into_owned());
    r.received_bytes = b.req.head_len as u64;
    if verdict.class != desync::Class::Compliant {
        r.classification = Some(class_word(verdict.class));
        r.classification_reason = Some(verdict.reason);
    }
}

/// Completes the request's record and hands it to the access log.
fn finish_record(live: &Live, b: &mut Bufs, elb_status: Option<u16>, error: Option<&'static str>) {
    let (Some(mut r), Some(log)) = (b.rec.take(), live.access_log.as_ref()) else {
        return;
    };
    r.time = SystemTime::now();
    if elb_status.is_some() {
        r.elb_status = elb_status;
    }
    if r.error_reason.is_none() {
        r.error_reason = error;
    }
    if r.response_processing.is_none() && r.target_processing.is_some() {
        let total = b.t0.elapsed();
        let used =
            r.request_processing.unwrap_or_default() + r.target_processing.unwrap_or_default();
        r.response_processing = Some(total.saturating_sub(used));
    }
    log.submit(r);
}

async fn read_more<R: AsyncRead + Unpin>(s: &mut R, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < 2048 {
        buf.reserve(8192);
    }
    s.read_buf(buf).await
}

/// Writes the balancer's own error answer; `to_head`: the request was a HEAD, so
/// the head announces the body's length but the body stays away.
async fn send_error<C: Stream>(
    client: &mut C,
    out: &mut Vec<u8>,
    status: u16,
    close: bool,
    to_head: bool,
) -> std::io::Result<()> {
    out.clear();
    if to_head {
        head::write_error_response_no_body(status, close, out);
    } else {
        head::write_error_response(status, close, out);
    }
    client.write_all(out).await?;
    if close {
        let _ = client.shutdown().await;
    }
    Ok(())
}

/// Strips the port from a Host value and lower-cases it into `out`.
fn host_for_routing<'a>(raw: Option<&[u8]>, out: &'a mut String) -> &'a str {
    out.clear();
    if let Some(h) = raw.and_then(|h| std::str::from_utf8(h).ok()) {
        let no_port = if h.starts_with('[') {
            h.split_once(']')
                .map_or(h, |(a, _)| a)
                .trim_start_matches('[')
        } else {
            h.rsplit_once(':').map_or(h, |(a, p)| {
                if p.bytes().all(|c| c.is_ascii_digit()) {
                    a
                } else {
                    h
                }
            })
        };
        out.push_str(no_port);
        out.make_ascii_lowercase();
    }
    out
}

/// One request: route it and carry out the action. `Ok(keep)`: whether the
/// client connection may carry another request.
#[allow(clippy::too_many_arguments)]
async fn exchange<C: Stream>(
    client: &mut C,
    b: &mut Bufs,
    live: &Arc<Live>,
    cfg: &Listener,
    client_ip: std::net::IpAddr,
    local_port: u16,
    keep: bool,
    close_both: bool,
    listener: &str,
    timer: &mut IdleTimer<'_>,
) -> Result<bool, Fail> {
    let li = live.listener_index(listener).unwrap_or(0);
    let lstate = &live.listeners[li];
    let (action, location, priority) = {
        let buf = &b.client;
        let target = std::str::from_utf8(b.req.target(buf)).unwrap_or("/");
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let host = host_for_routing(b.req.host(buf), &mut b.host);
        let method = std::str::from_utf8(b.req.method(buf)).unwrap_or("");
        let headers = |f: &mut dyn FnMut(&str, &str) -> bool| {
            b.req.headers.iter().any(|(n, v)| {
                let (Ok(n), Ok(v)) = (
                    std::str::from_utf8(&buf[n.clone()]),
                    std::str::from_utf8(&buf[v.clone()]),
                ) else {
                    return false;
                };
                f(n, v)
            })
        };
        let view = RequestView {
            host,
            path,
            query,
            method,
            headers: &headers,
            source: client_ip,
        };
        let (action, priority) = router::route_with(cfg, &cfg.table, &view);
        let location = match action {
            Action::Redirect(r) => {
                let proto = if cfg.protocol == ListenerProtocol::Https {
                    "https"
                } else {
                    "http"
                };
                super::redirect::location(r, proto, host, local_port, path, query)
            }
            _ => String::new(),
        };
        (action, location, priority)
    };
    match action {
        Action::Forward(f) => {
            if let Some(r) = b.rec.as_mut() {
                r.matched_rule_priority = Some(priority);
            }
            // Group stickiness: a valid FULCRUMLBTG cookie naming a group of this
            // forward (with a weight above 0) keeps the client on it.
            let now = unix_secs(b.t0);
            let sticky = f.stickiness.and_then(|_| {
                let id = cookie_values(&b.client, &b.req, cookie::GROUP_COOKIE)
                    .find_map(|v| live.cookie_key.verify(cookie::GROUP_COOKIE, v, now))?;
                f.groups
                    .iter()
                    .find(|(g, w)| *w > 0 && live.group_cookie_ids[g.0 as usize] == id)
                    .map(|(g, _)| *g)
            });
            let gid = match sticky {
                Some(g) => g,
                None if f.groups.len() == 1 => f.groups[0].0,
                None => weighted(&f.groups),
            };
            let set_cookie = f.stickiness.map(|d| {
                let expires = now + d.as_secs();
                let value = live.cookie_key.sign(
                    cookie::GROUP_COOKIE,
                    live.group_cookie_ids[gid.0 as usize],
                    expires,
                );
                cookie::set_cookie_line(
                    cookie::GROUP_COOKIE,
                    &value,
                    expires,
                    cfg.protocol == ListenerProtocol::Https,
                )
            });
            let opts = ProxyOpts {
                client_ip,
                local_port,
                keep,
                close_both,
                set_cookie,
            };
            proxy(client, b, live, cfg, gid, &opts, li, timer).await
        }
        Action::FixedResponse(fr) => {
            lstate.state.metrics.fixed_response();
            if let Some(r) = b.rec.as_mut() {
                r.matched_rule_priority = Some(priority);
                r.actions_executed = "fixed-response";
                r.elb_status = Some(fr.status);
            }
            let body_done =
                discard_body(client, b, &lstate.state.metrics, cfg.idle_timeout).await?;
            let close = !(keep && body_done);
            let status = fr.status;
            b.out.clear();
            let reason = head::canonical_reason(fr.status);
            b.out.extend_from_slice(
                format!(
                    "HTTP/1.1 {} {reason}\r\nServer: fulcrum\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}\r\n",
                    fr.status,
                    fr.content_type,
                    fr.body.len(),
                    connection_line(close, b.req.version)
                )
                .as_bytes(),
            );
            if b.req.method_kind != head::Method::Head {
                b.out.extend_from_slice(fr.body.as_bytes());
            }
            // Counted before the answer leaves, as the errors are: whoever reads
            // the answer and then the metrics sees it counted.
            lstate.state.metrics.lb_response(status);
            client.write_all(&b.out).await.map_err(|_| Fail::Client)?;
            answered_by_lb(b, &lstate.state.metrics);
            Ok(!close)
        }
        Action::Redirect(r) => {
            lstate.state.metrics.redirect();
            let redirect_status = r.status;
            if let Some(r) = b.rec.as_mut() {
                r.matched_rule_priority = Some(priority);
                r.actions_executed = "redirect";
                r.redirect_url = Some(location.clone());
                r.elb_status = Some(redirect_status);
            }
            let body_done =
                discard_body(client, b, &lstate.state.metrics, cfg.idle_timeout).await?;
            let close = !(keep && body_done);
            let status = redirect_status;
            b.out.clear();
            b.out.extend_from_slice(
                format!(
                    "HTTP/1.1 {} {}\r\nServer: fulcrum\r\nLocation: {location}\r\nContent-Length: 0\r\n{}\r\n",
                    r.status,
                    head::canonical_reason(r.status),
                    connection_line(close, b.req.version)
                )
                .as_bytes(),
            );
            // Counted before the answer leaves, as the errors are: whoever reads
            // the answer and then the metrics sees it counted.
            lstate.state.metrics.lb_response(status);
            client.write_all(&b.out).await.map_err(|_| Fail::Client)?;
            answered_by_lb(b, &lstate.state.metrics);
            Ok(!close)
        }
    }
}

/// A request that ends before its head parsed (refused, timed out, or the client
/// left): what it sent counts as processed bytes in and as the record's received
/// bytes (less `grown`, bytes the balancer added by encoding the target).
fn head_bytes_in(b: &mut Bufs, metrics: &crate::metrics::ListenerMetrics, grown: usize) {
    let n = b.client.len().saturating_sub(grown) as u64;
    metrics.bytes_in.increment(n);
    if let Some(r) = b.rec.as_mut() {
        r.received_bytes = n;
    }
}

/// An error answer went out: processed bytes, the access-log record's sent bytes
/// (what a target already sent, if anything, stays counted).
fn error_sent(b: &mut Bufs, metrics: &crate::metrics::ListenerMetrics) {
    metrics.bytes_out.increment(b.out.len() as u64);
    if let Some(r) = b.rec.as_mut() {
        r.sent_bytes += b.out.len() as u64;
    }
}

/// A redirect or fixed response went out: processed bytes, the access-log record's
/// sent bytes.
fn answered_by_lb(b: &mut Bufs, metrics: &crate::metrics::ListenerMetrics) {
    metrics.bytes_out.increment(b.out.len() as u64);
    if let Some(r) = b.rec.as_mut() {
        r.sent_bytes = b.out.len() as u64;
    }
}

/// What `proxy` needs to know about the request beyond its head.
struct ProxyOpts {
    client_ip: std::net::IpAddr,
    local_port: u16,
    /// The client connection may carry another request.
    keep: bool,
    /// Close both connections after this exchange (ambiguous framing).
    close_both: bool,
    /// A `Set-Cookie` line to add to the response.
    set_cookie: Option<String>,
}

/// Wall-clock seconds at `t` (a request's start), without reading the clock.
fn unix_secs(t: Instant) -> u64 {
    crate::util::unix_ms_at(t) / 1000
}

/// The values of cookie `name` over every `Cookie` header of the request.
fn cookie_values<'b>(
    buf: &'b [u8],
    req: &'b RequestHead,
    name: &'b str,
) -> impl Iterator<Item = &'b str> + 'b {
    req.headers.iter().filter_map(move |(n, v)| {
        let n = buf.get(n.clone())?;
        if !n.eq_ignore_ascii_case(b"cookie") {
            return None;
        }
        let v = std::str::from_utf8(buf.get(v.clone())?).ok()?;
        cookie::find(v, name)
    })
}

/// Picks a group of a weighted forward in proportion to the weights.
fn weighted(groups: &[(crate::snapshot::GroupId, u32)]) -> crate::snapshot::GroupId {
    let total: u32 = groups.iter().map(|(_, w)| w).sum();
    let mut x = fastrand::u32(0..total.max(1));
    for (g, w) in groups {
        if x < *w {
            return *g;
        }
        x -= w;
    }
    groups[0].0
}

/// Reads and drops the request body (for answers the balancer gives itself).
/// `Ok(false)` when the body is too long to drain and the connection must close.
async fn discard_body<C: Stream>(
    client: &mut C,
    b: &mut Bufs,
    metrics: &crate::metrics::ListenerMetrics,
    idle: Duration,
) -> Result<bool, Fail> {
    // A client that sent `Expect: 100-continue` and no body yet waits for a 100
    // that our own answer never sends: answer now and close (RFC 9110 §10.1.1).
    if b.req.expect_continue && b.client.len() <= b.req.head_len {
        return Ok(false);
    }
    let mut sink = Vec::new();
    match b.req.framing {
        BodyFraming::None | BodyFraming::CloseDelimited => {
            b.client.drain(..b.req.head_len);
            Ok(true)
        }
        BodyFraming::ContentLength(n) if n <= 1 << 20 => {
            b.client.drain(..b.req.head_len);
            let mut left = n as usize;
            loop {
                let take = left.min(b.client.len());
                body_in(b, metrics, take);
                b.client.drain(..take);
                left -= take;
                if left == 0 {
                    return Ok(true);
                }
                // The listener's idle_timeout bounds each wait for body bytes.
                match tokio::time::timeout(idle, read_more(client, &mut b.client)).await {
                    Ok(Ok(k)) if k > 0 => {}
                    // Closed or reset mid-body: gone before its response (460).
                    Ok(_) => return Err(Fail::ClientGone),
                    Err(_) => return Err(Fail::Client),
                }
            }
        }
        BodyFraming::Chunked => {
            b.client.drain(..b.req.head_len);
            let mut dec = ChunkedDecoder::default();
            loop {
                sink.clear();
                let (used, done) = dec
                    .feed(&b.client, &mut sink)
                    .map_err(|_| Fail::Status(400))?;
                body_in(b, metrics, used);
                b.client.drain(..used);
                if done {
                    return Ok(true);
                }
                if sink.len() > 1 << 20 && b.client.is_empty() {
                    return Ok(false);
                }
                // The listener's idle_timeout bounds each wait for body bytes.
                match tokio::time::timeout(idle, read_more(client, &mut b.client)).await {
                    Ok(Ok(k)) if k > 0 => {}
                    // Closed or reset mid-body: gone before its response (460).
                    Ok(_) => return Err(Fail::ClientGone),
                    Err(_) => return Err(Fail::Client),
                }
            }
        }
        BodyFraming::ContentLength(_) => Ok(false),
    }
}

/// The Connection line of an answer the balancer makes itself: `close` when the
/// connection ends with it, `keep-alive` to an HTTP/1.0 client it stays open for
/// (HTTP/1.0 closes by default), none otherwise.
fn connection_line(close: bool, version: Version) -> &'static str {
    match (close, version) {
        (true, _) => "Connection: close\r\n",
        (false, Version::Http10) => "Connection: keep-alive\r\n",
        (false, _) => "",
    }
}

/// Forwards the request to a target of `gid` and the answer back.
#[allow(clippy::too_many_arguments)]
async fn proxy<C: Stream>(
    client: &mut C,
    b: &mut Bufs,
    live: &Arc<Live>,
    cfg: &Listener,
    gid: crate::snapshot::GroupId,
    opts: &ProxyOpts,
    li: usize,
    timer: &mut IdleTimer<'_>,
) -> Result<bool, Fail> {
    let (client_ip, local_port, keep) = (opts.client_ip, opts.local_port, opts.keep);
    let group = &live.groups[gid.0 as usize];
    let gcfg = &live.snapshot.target_groups[gid.0 as usize];
    let lstate = &live.listeners[li];
    let gm = &group.state.metrics;
    // Write the head to send now: it does not depend on the target.
    let fwd = ForwardInfo {
        client_ip,
        proto: if cfg.protocol == ListenerProtocol::Https {
            "https"
        } else {
            "http"
        },
        port: local_port,
        xff: cfg.xff,
    };
    b.out.clear();
    let close_upstream = b.req.te_with_cl || opts.close_both;
    let trace_in = b
        .req
        .header(&b.client, "x-amzn-trace-id")
        .and_then(|v| std::str::from_utf8(v).ok());
    let now = unix_secs(b.t0);
    super::trace::write(trace_in, now, &mut b.trace);
    if let Some(r) = b.rec.as_mut() {
        r.trace_id = Some(b.trace.clone());
        r.actions_executed = "forward";
        // Logged with the request's answer, whatever it is (a 503 of an empty
        // group, a 502 or 504 of a failed connect included).
        r.target_group = Some(Arc::from(gcfg.name.as_str()));
    }
    let extra_all: [(&str, &str); 2] = [("X-Amzn-Trace-Id", &b.trace), ("Connection", "close")];
    // A WebSocket upgrade already carries `Connection: upgrade`; its target
    // connection is never pooled when it must close, so one Connection header.
    let extra: &[(&str, &str)] = if close_upstream && !b.req.upgrade_websocket {
        &extra_all[..]
    } else {
        &extra_all[..1]
    };
    head::write_upstream_request(&b.client, &b.req, &fwd, extra, &mut b.out);
    let head_bytes = std::mem::take(&mut b.out);
    let framing = b.req.framing;
    let method_head = b.req.method_kind == head::Method::Head;
    let idempotent = b.req.method_kind.is_idempotent();
    let req_version = b.req.version;
    let expect_continue = b.req.expect_continue;
    let upgrade_websocket = b.req.upgrade_websocket;
    let req_head_len = b.req.head_len;
    // Target stickiness (SPEC §4): a valid cookie naming an eligible target wins;
    // one naming an unhealthy target is ignored even while the group fails open.
    let sticky_name = match &gcfg.stickiness {
        Some(Stickiness::LbCookie { .. }) => Some(cookie::LB_COOKIE),
        Some(Stickiness::AppCookie { .. }) => Some(cookie::APP_COOKIE),
        None => None,
    };
    let sticky_target = sticky_name.and_then(|name| {
        let id = cookie_values(&b.client, &b.req, name)
            .find_map(|v| live.cookie_key.verify(name, v, now))?;
        let i = group.targets.iter().position(|t| t.cookie_id == id)?;
        (!group.targets[i].is_unhealthy()
            && crate::balancer::eligible(group, gcfg, &live.snapshot.node.zone, i))
        .then_some(i)
    });
    // An app_cookie session the client still carries: a stale or invalid binding
    // is replaced by one naming the target that answers now, even when that target
    // does not set the application's cookie again.
    let app_session = sticky_name == Some(cookie::APP_COOKIE)
        && cookie_values(&b.client, &b.req, cookie::APP_COOKIE)
            .next()
            .is_some();
    b.client.drain(..req_head_len);

    // Connect (pooled first); a failed connect moves to another target once.
    let mut skip = None;
    let mut retried = false;
    // The answer the failed first connect would have had (504 after a timeout),
    // when no other target is left to try.
    let mut first_failure = 502;
    let (ti, mut up, mut pooled) = loop {
        let sticky = sticky_target.filter(|i| skip != Some(*i));
        let ti = match sticky.map(Ok).unwrap_or_else(|| {
            crate::balancer::pick_at(
                group,
                gcfg,
                &live.snapshot.node.zone,
                client_ip,
                skip,
                crate::util::unix_ms_at(b.t0),
            )
        }) {
            Ok(ti) => {
                // A retry counts once another target was found for it; the
                // request counts once a target was chosen (RequestCount), even
                // if no connection to it can be made.
                if retried {
                    gm.retry();
                } else {
                    lstate.requests(gid, &gcfg.name).increment(1);
                }
                if let Some(r) = b.rec.as_mut() {
                    r.target = Some(gcfg.targets[ti].addr);
                }
                ti
            }
            Err(_) if retried => {
                b.out = head_bytes;
                return Err(Fail::Status(first_failure));
            }
            Err(e) => {
                b.out = head_bytes;
                return Err(Fail::Status(match e {
                    crate::balancer::NoTarget::Unavailable => 503,
                    crate::balancer::NoTarget::Exhausted => 502,
                }));
            }
        };
        let addr = gcfg.targets[ti].addr;
        if let Some(s) = pool::checkout(live.pool_key(gid, ti, addr), b.t0) {
            break (ti, s, true);
        }
        let tls = live.target_tls(gid, ti);
        // Boxed: a new connection (rare with pooling) carries a large TLS
        // handshake state that every pooled request would otherwise move along.
        // A connect still pending when the target's deregistration delay (or the
        // shutdown's) ends is cut off with a 502 like the rest of its work.
        let connected = tokio::select! {
            r = Box::pin(pool::connect(addr, tls, None, CONNECT_TIMEOUT)) => r,
            _ = group.targets[ti].killed() => {
                b.out = head_bytes;
                return Err(Fail::Status(502));
            }
        };
        match connected {
            Ok(s) => {
                crate::net::tune_http_target(s.tcp());
                break (ti, s, false);
            }
            Err(e) if !retried && group.targets.len() > 1 => {
                gm.connection_error();
                retried = true;
                skip = Some(ti);
                if e.kind() == std::io::ErrorKind::TimedOut {
                    first_failure = 504;
                }
            }
            Err(e) => {
                gm.connection_error();
                b.out = head_bytes;
                let timed_out = e.kind() == std::io::ErrorKind::TimedOut;
                return Err(Fail::Status(if timed_out { 504 } else { 502 }));
            }
        }
    };
    // The deregistration delay of a draining target ends the exchange: 502 when
    // nothing was answered yet, else the connection closes.
    let target_state = group.targets[ti].clone();
    let head_sent = std::sync::atomic::AtomicBool::new(false);
    let tunneled = crate::l4::Moved::counting(&lstate.state.metrics);
    let work = async {
        let tcfg = &gcfg.targets[ti];
        let _in_flight = InFlight::new(&group.targets[ti]);
        let _active = crate::targets::ActiveConnection::new(&group.targets[ti]);
        let mut sent_at = Instant::now();
        if let Some(r) = b.rec.as_mut() {
            r.request_processing = Some(b.t0.elapsed());
        }

        // Send the head; the keep-alive race (a pooled connection the target closed)
        // is retried once on a fresh connection for a bodiless idempotent request.
        let mut attempt_fresh = false;
        loop {
            let wrote = up.write_all(&head_bytes).await;
            let no_body = matches!(framing, BodyFraming::None);
            // Nothing of the body can have been streamed: none, or an empty one.
            let empty_body = no_body || matches!(framing, BodyFraming::ContentLength(0));
            if wrote.is_ok() {
                if !no_body {
                    if expect_continue {
                        client
                            .write_all(head::CONTINUE_100)
                            .await
                            .map_err(|_| Fail::Client)?;
                    }
                    let metrics = &lstate.state.metrics;
                    stream_request_body(client, &mut up, b, framing, cfg.idle_timeout, metrics)
                        .await?;
                }
                b.upstream.clear();
                b.resp.clear();
                // Without a body the request left at sent_at.
                let from = if no_body && !attempt_fresh {
                    tokio::time::Instant::from_std(sent_at)
                } else {
                    tokio::time::Instant::now()
                };
                let idle = cfg.idle_timeout;
                timer.deadline = from + idle;
                match read_response_head(client, &mut up, b, method_head, timer, idle).await {
                    Ok(()) => break,
                    Err(RespFail::ClosedBeforeAnyByte)
                        if pooled && !attempt_fresh && idempotent && empty_body => {}
                    Err(RespFail::ClosedBeforeAnyByte) | Err(RespFail::Io) => {
                        gm.connection_error();
                        b.out = head_bytes;
                        return Err(Fail::Status(502));
                    }
                    Err(RespFail::Malformed) => {
                        b.out = head_bytes;
                        return Err(Fail::Status(502));
                    }
                    Err(RespFail::Timeout) => {
                        b.out = head_bytes;
                        return Err(Fail::Status(504));
                    }
                    Err(RespFail::ClientGone) => {
                        b.out = head_bytes;
                        return Err(Fail::ClientGone);
                    }
                }
            } else if !(pooled && !attempt_fresh && idempotent) {
                // The head did not leave: the body, if any, is still unread.
                gm.connection_error();
                b.out = head_bytes;
                return Err(Fail::Status(502));
            }
            // Retry on a fresh connection to the same target.
            attempt_fresh = true;
            pooled = false;
            let fresh = pool::connect(tcfg.addr, live.target_tls(gid, ti), None, CONNECT_TIMEOUT);
            match Box::pin(fresh).await {
                Ok(s) => {
                    crate::net::tune_http_target(s.tcp());
                    up = s;
                    // The request leaves again now (TargetResponseTime).
                    sent_at = Instant::now();
                }
                _ => {
                    gm.connection_error();
                    b.out = head_bytes;
                    return Err(Fail::Status(502));
                }
            }
        }
        b.out = head_bytes;
        let answered = Instant::now();
        let waited = answered.saturating_duration_since(sent_at);
        gm.response_seconds.record(waited.as_secs_f64());
        let status = b.resp.status;
        gm.response(status);
        if let Some(r) = b.rec.as_mut() {
            r.target_status = Some(status);
            r.elb_status = Some(status);
            r.target_processing = Some(waited);
        }

        // Sticky cookies: the group's (weighted forwards) and the target's, on
        // every response (a 101 too).
        let secure = cfg.protocol == ListenerProtocol::Https;
        let target_cookie = match &gcfg.stickiness {
            Some(Stickiness::LbCookie { duration }) => Some((cookie::LB_COOKIE, *duration)),
            // app_cookie: bound once the target set its cookie, refreshed after.
            Some(Stickiness::AppCookie {
                duration,
                cookie_name,
            }) => {
                let sets_app = b.resp.headers.iter().any(|(n, v)| {
                    b.upstream[n.clone()].eq_ignore_ascii_case(b"set-cookie")
                        && b.upstream[v.clone()].starts_with(cookie_name.as_bytes())
                        && b.upstream.get(v.start + cookie_name.len()) == Some(&b'=')
                });
                (sets_app || app_session || sticky_target == Some(ti))
                    .then_some((cookie::APP_COOKIE, *duration))
            }
            None => None,
        };
        let target_cookie = target_cookie.map(|(name, d)| {
            let expires = now + d.as_secs();
            let value = live
                .cookie_key
                .sign(name, group.targets[ti].cookie_id, expires);
            cookie::set_cookie_line(name, &value, expires, secure)
        });

        // A 101 opens a byte tunnel only for a WebSocket upgrade the client asked for.
        if status == 101 {
            if !(upgrade_websocket && b.resp.upgrade_websocket) {
                return Err(Fail::Status(502));
            }
            b.out.clear();
            head::write_client_response(
                &b.upstream,
                &b.resp,
                BodyFraming::None,
                false,
                req_version,
                &mut b.out,
            );
            add_cookie_lines(
                &mut b.out,
                opts.set_cookie.as_deref(),
                target_cookie.as_deref(),
            );
            // Set before the write: once any byte of it may have left, a drain
            // that ends the exchange closes the connection instead of answering.
            head_sent.store(true, std::sync::atomic::Ordering::Relaxed);
            client.write_all(&b.out).await.map_err(|_| Fail::Client)?;
            let metrics = &lstate.state.metrics;
            metrics.bytes_out.increment(b.out.len() as u64);
            if let Some(r) = b.rec.as_mut() {
                r.sent_bytes = b.out.len() as u64;
                // ALB logs an upgraded connection as `ws` / `wss`.
                r.kind = if r.kind == "https" { "wss" } else { "ws" };
            }
            let resp_head_len = b.resp.head_len;
            b.upstream.drain(..resp_head_len);
            tunnel(client, &mut up, b, cfg.idle_timeout, &tunneled).await;
            return Ok(false);
        }

        // The answer to the client. A chunked body to an HTTP/1.0 client goes out
        // unframed and ends with the connection; one in another transfer coding
        // (`gzip, chunked`) cannot be passed to it at all (RFC 9112 §6.1).
        if req_version == Version::Http10 && b.resp.transfer_coded() {
            return Err(Fail::Status(502));
        }
        let resp_framing = b.resp.framing;
        let dechunk_for_10 = req_version == Version::Http10 && resp_framing == BodyFraming::Chunked;
        let framing_out = if dechunk_for_10 {
            BodyFraming::CloseDelimited
        } else {
            resp_framing
        };
        let close_delimited = matches!(framing_out, BodyFraming::CloseDelimited);
        let client_close = !keep || close_delimited;
        b.out.clear();
        head::write_client_response(
            &b.upstream,
            &b.resp,
            framing_out,
            client_close,
            req_version,
            &mut b.out,
        );
        add_cookie_lines(
            &mut b.out,
            opts.set_cookie.as_deref(),
            target_cookie.as_deref(),
        );
        // A small body that came in with the head leaves in the same write.
        let resp_head_len = b.resp.head_len;
        let mut body_framing = resp_framing;
        let mut consumed = resp_head_len;
        if let BodyFraming::ContentLength(n) = resp_framing {
            let take = (n as usize).min(b.upstream.len() - resp_head_len);
            if take <= COALESCE_MAX {
                b.out
                    .extend_from_slice(&b.upstream[resp_head_len..resp_head_len + take]);
                consumed += take;
                body_framing = BodyFraming::ContentLength(n - take as u64);
            }
        }
        // Set before the write (see the 101 above): a 502 cannot follow a head
        // that went out in part.
        head_sent.store(true, std::sync::atomic::Ordering::Relaxed);
        client
            .write_all(&b.out)
            .await
            .map_err(|_| Fail::ClientGone)?;
        let mut sent = b.out.len() as u64;
        b.upstream.drain(..consumed);
        let body = stream_response_body(
            client,
            &mut up,
            b,
            body_framing,
            dechunk_for_10,
            cfg.idle_timeout,
            &mut sent,
        )
        .await;
        // Counted also when the body was cut short.
        lstate.state.metrics.bytes_out.increment(sent);
        if let Some(r) = b.rec.as_mut() {
            r.sent_bytes = sent;
        }
        let upstream_clean = body?;
        // A draining target's connection is not pooled again: its idle pooled
        // connections closed when the drain began, and this one would outlive the
        // deregistration delay.
        if upstream_clean
            && b.resp.keep_alive
            && b.upstream.is_empty()
            && !close_upstream
            && !group.targets[ti].is_draining()
        {
            // Idle from now on: when the body came with the head, that was `answered`.
            let now = if matches!(
                body_framing,
                BodyFraming::None | BodyFraming::ContentLength(0)
            ) {
                answered
            } else {
                Instant::now()
            };
            let key = live.pool_key(gid, ti, tcfg.addr);
            pool::checkin(key, up, gcfg.keep_alive_timeout, now);
        }
        if client_close {
            let _ = client.shutdown().await;
        }
        Ok(!client_close)
    };
    let outcome = tokio::select! {
        r = work => r,
        _ = target_state.killed() => {
            if head_sent.load(std::sync::atomic::Ordering::Relaxed) { Err(Fail::Client) } else { Err(Fail::Status(502)) }
        }
    };
    // A WebSocket tunnel's bytes, however it ended.
    let (tin, tout) = tunneled.get();
    if let Some(r) = b.rec.as_mut() {
        r.received_bytes += tin;
        r.sent_bytes += tout;
    }
    outcome
}

/// Writes all of `buf`; `Err(true)` when the peer takes no byte of it for `idle`
/// (it stopped reading), `Err(false)` when the write fails.
async fn write_idle<W: AsyncWrite + Unpin>(
    w: &mut W,
    buf: &[u8],
    idle: Duration,
) -> Result<(), bool> {
    let mut pos = 0;
    while pos < buf.len() {
        match tokio::time::timeout(idle, w.write(&buf[pos..])).await {
            Ok(Ok(n)) if n > 0 => pos += n,
            Ok(_) => return Err(false),
            Err(_) => return Err(true),
        }
    }
    Ok(())
}

/// Writes `buf` to the target: 502 when the write fails, 504 when the target
/// stopped reading.
async fn write_upstream(up: &mut pool::Conn, buf: &[u8], idle: Duration) -> Result<(), Fail> {
    write_idle(up, buf, idle)
        .await
        .map_err(|stalled| Fail::Status(if stalled { 504 } else { 502 }))
}

/// Counts request body bytes taken from the client (processed bytes in, and the
/// access-log record's received bytes).
fn body_in(b: &mut Bufs, metrics: &crate::metrics::ListenerMetrics, n: usize) {
    metrics.bytes_in.increment(n as u64);
    if let Some(r) = b.rec.as_mut() {
        r.received_bytes += n as u64;
    }
}

/// Streams the request body from the client to the target.
async fn stream_request_body<C: Stream>(
    client: &mut C,
    up: &mut pool::Conn,
    b: &mut Bufs,
    framing: BodyFraming,
    idle: Duration,
    metrics: &crate::metrics::ListenerMetrics,
) -> Result<(), Fail> {
    match framing {
        BodyFraming::ContentLength(n) => {
            let mut left = n;
            loop {
                let take = (left as usize).min(b.client.len());
                if take > 0 {
                    body_in(b, metrics, take);
                    write_upstream(up, &b.client[..take], idle).await?;
                    b.client.drain(..take);
                    left -= take as u64;
                }
                if left == 0 {
                    return Ok(());
                }
                match tokio::time::timeout(idle, read_more(client, &mut b.client)).await {
                    Ok(Ok(k)) if k > 0 => {}
                    // Closed or reset mid-body: gone before its response (460).
                    Ok(_) => return Err(Fail::ClientGone),
                    Err(_) => return Err(Fail::Client),
                }
            }
        }
        BodyFraming::Chunked => {
            let mut dec = ChunkedDecoder::default();
            loop {
                b.out.clear();
                let (used, done) = dec
                    .feed(&b.client, &mut b.out)
                    .map_err(|_| Fail::Status(400))?;
                body_in(b, metrics, used);
                b.client.drain(..used);
                if !b.out.is_empty() {
                    write_upstream(up, &b.out, idle).await?;
                }
                if done {
                    return Ok(());
                }
                match tokio::time::timeout(idle, read_more(client, &mut b.client)).await {
                    Ok(Ok(k)) if k > 0 => {}
                    // Closed or reset mid-body: gone before its response (460).
                    Ok(_) => return Err(Fail::ClientGone),
                    Err(_) => return Err(Fail::Client),
                }
            }
        }
        BodyFraming::None | BodyFraming::CloseDelimited => Ok(()),
    }
}

/// Inserts `Set-Cookie` lines before the final empty line of the head in `out`.
fn add_cookie_lines(out: &mut Vec<u8>, group: Option<&str>, target: Option<&str>) {
    if group.is_none() && target.is_none() {
        return;
    }
    let end = out.len().saturating_sub(2);
    out.truncate(end);
    for line in [group, target].into_iter().flatten() {
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// After a 101: bytes flow both ways until either side closes or `idle` passes
/// with no byte either way; the connection stays on this target. What passes to
/// and from the client is counted in `moved` as it moves (processed bytes; the
/// caller adds it to the access-log record, also when a deregistration cuts the
/// tunnel off).
async fn tunnel<C: Stream>(
    client: &mut C,
    up: &mut pool::Conn,
    b: &mut Bufs,
    idle: Duration,
    moved: &crate::l4::Moved<'_>,
) {
    let result = async {
        // Bytes that came after the heads belong to the tunnel.
        if !b.client.is_empty() {
            moved.add_read(b.client.len() as u64);
            write_idle(up, &b.client, idle)
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?;
            b.client.clear();
        }
        if !b.upstream.is_empty() {
            write_idle(client, &b.upstream, idle)
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?;
            moved.add_written(b.upstream.len() as u64);
            b.upstream.clear();
        }
        crate::l4::copy_with_idle(client, up, idle, moved).await
    }
    .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "upgraded connection ended");
    }
}

enum RespFail {
    /// The client closed its connection before the response (460).
    ClientGone,
    ClosedBeforeAnyByte,
    Io,
    Malformed,
    Timeout,
}

/// Reads the target's response head into `b.upstream`/`b.resp`, skipping interim
/// 100 Continue answers (the balancer answered the client's Expect itself).
async fn read_response_head<C: Stream>(
    client: &mut C,
    up: &mut pool::Conn,
    b: &mut Bufs,
    method_head: bool,
    timer: &mut IdleTimer<'_>,
    idle: Duration,
) -> Result<(), RespFail> {
    // Idle means no byte from the target for `idle` (`timer` starts counting when
    // the request was sent): a head that trickles in is not idle.
    // While the target thinks, a client that closes its connection ends the
    // exchange (ALB's 460); bytes it sends meanwhile are pipelined requests.
    loop {
        match head::parse_response(&b.upstream, method_head, &mut b.resp) {
            Ok(Some(())) => {
                // Interim answers other than 101 are dropped: the balancer answered
                // the client's Expect itself and 1xx hints are optional.
                if (100..200).contains(&b.resp.status) && b.resp.status != 101 {
                    b.upstream.drain(..b.resp.head_len);
                    b.resp.clear();
                    continue;
                }
                return Ok(());
            }
            Ok(None) => {}
            Err(_) => return Err(RespFail::Malformed),
        }
        let got_any = !b.upstream.is_empty();
        let read = tokio::select! {
            biased;
            r = read_more(up, &mut b.upstream) => Ok(r),
            _ = timer.expired() => Err(()),
            c = read_more(client, &mut b.client), if b.client.len() < 64 * 1024 => {
                match c {
                    Ok(0) | Err(_) => return Err(RespFail::ClientGone),
                    Ok(_) => continue,
                }
            }
        };
        match read {
            Ok(Ok(0)) if !got_any => return Err(RespFail::ClosedBeforeAnyByte),
            Ok(Err(e)) if !got_any && matches!(e.kind(), std::io::ErrorKind::ConnectionReset) => {
                return Err(RespFail::ClosedBeforeAnyByte);
            }
            Ok(Ok(0)) | Ok(Err(_)) => return Err(RespFail::Io),
            Ok(Ok(_)) => timer.deadline = tokio::time::Instant::now() + idle,
            Err(_) => return Err(RespFail::Timeout),
        }
    }
}

/// Streams the response body to the client. `Ok(true)`: the body ended exactly
/// (the target connection can be reused).
async fn stream_response_body<C: Stream>(
    client: &mut C,
    up: &mut pool::Conn,
    b: &mut Bufs,
    framing: BodyFraming,
    dechunk: bool,
    idle: Duration,
    sent: &mut u64,
) -> Result<bool, Fail> {
    match framing {
        BodyFraming::None => Ok(true),
        BodyFraming::ContentLength(n) => {
            let mut left = n;
            loop {
                let take = (left as usize).min(b.upstream.len());
                if take > 0 {
                    write_idle(client, &b.upstream[..take], idle)
                        .await
                        .map_err(|_| Fail::Client)?;
                    b.upstream.drain(..take);
                    left -= take as u64;
                    *sent += take as u64;
                }
                if left == 0 {
                    return Ok(true);
                }
                // A large rest of the body between two plain sockets moves
                // through a pipe without entering user space.
                if left >= SPLICE_MIN && b.upstream.is_empty() && splice_ok() {
                    if let (Some(dst), pool::Conn::Plain(src)) = (client.as_tcp(), &*up) {
                        return match crate::l4::splice::copy_exact(src, dst, left, idle, sent).await
                        {
                            Ok(()) => Ok(true),
                            Err(_) => Err(Fail::Client),
                        };
                    }
                }
                if b.upstream.capacity() < IO_CHUNK {
                    b.upstream.reserve(IO_CHUNK);
                }
                match tokio::time::timeout(idle, read_more(up, &mut b.upstream)).await {
                    Ok(Ok(k)) if k > 0 => {}
                    _ => return Err(Fail::Client),
                }
            }
        }
        BodyFraming::Chunked => {
            let mut dec = if dechunk {
                ChunkedDecoder::data_only()
            } else {
                ChunkedDecoder::default()
            };
            loop {
                b.out.clear();
                let (used, done) = dec
                    .feed(&b.upstream, &mut b.out)
                    .map_err(|_| Fail::Client)?;
                b.upstream.drain(..used);
                if !b.out.is_empty() {
                    write_idle(client, &b.out, idle)
                        .await
                        .map_err(|_| Fail::Client)?;
                    *sent += b.out.len() as u64;
                }
                if done {
                    return Ok(true);
                }
                match tokio::time::timeout(idle, read_more(up, &mut b.upstream)).await {
                    Ok(Ok(k)) if k > 0 => {}
                    _ => return Err(Fail::Client),
                }
            }
        }
        BodyFraming::CloseDelimited => loop {
            if !b.upstream.is_empty() {
                write_idle(client, &b.upstream, idle)
                    .await
                    .map_err(|_| Fail::Client)?;
                *sent += b.upstream.len() as u64;
                b.upstream.clear();
            }
            match tokio::time::timeout(idle, read_more(up, &mut b.upstream)).await {
                Ok(Ok(0)) => return Ok(false),
                Ok(Ok(_)) => {}
                _ => return Err(Fail::Client),
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_timer_follows_its_deadline_both_ways() {
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        let mut timer = IdleTimer {
            deadline: sleep.deadline(),
            sleep,
        };
        let ms = Duration::from_millis;
        let start = tokio::time::Instant::now();
        // Registered for 40 ms, then moved to 200 ms: fires at the later time,
        // after sleeping through the early wake (no busy loop: it would hang here).
        timer.deadline = start + ms(40);
        let first = tokio::time::timeout(ms(10), timer.expired()).await;
        assert!(first.is_err(), "fired before its deadline");
        timer.deadline = start + ms(200);
        timer.expired().await;
        let t = start.elapsed();
        assert!(
            t >= ms(195) && t < ms(2000),
            "fired after {t:?}, want ~200 ms"
        );
        // Moved earlier than what is registered: fires at the earlier time.
        let start = tokio::time::Instant::now();
        timer.deadline = start + ms(3000);
        let _ = tokio::time::timeout(ms(10), timer.expired()).await;
        timer.deadline = start + ms(60);
        timer.expired().await;
        let t = start.elapsed();
        assert!(
            t >= ms(55) && t < ms(1500),
            "fired after {t:?}, want ~60 ms"
        );
        // A deadline already past resolves at once.
        timer.deadline = tokio::time::Instant::now() - ms(1);
        tokio::time::timeout(ms(500), timer.expired())
            .await
            .expect("a past deadline resolves");
    }

    #[test]
    fn routing_host_drops_port_and_case() {
        let mut s = String::new();
        assert_eq!(
            host_for_routing(Some(b"Api.Example.COM:8080"), &mut s),
            "api.example.com"
        );
        assert_eq!(host_for_routing(Some(b"[::1]:80"), &mut s), "::1");
        assert_eq!(host_for_routing(None, &mut s), "");
    }
}
