//! tcp and tls listeners: bytes pass unchanged both ways to a target of the
//! listener's group (`default_action.forward`); a failed connect tries one other
//! target; a PROXY v2 header goes first when the group asks for it. Plain tcp
//! uses splice(2) ([`splice`]); a stream that is not a plain socket (TLS) is
//! copied in user space. `idle_timeout` closes silent connections; a draining
//! target's connections close when its deregistration delay ends.

pub mod proxy_v2;
pub mod splice;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::listener::ConnGuard;
use crate::live::Live;
use crate::server::Shared;
use crate::snapshot::Action;
use crate::targets::TargetState;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A target whose connect (one round trip) completed within this is near: on
/// the same host or LAN.
const NEAR_RTT: Duration = Duration::from_millis(1);

/// The send buffer asked for on a spliced connection to a near target (the
/// kernel doubles it for its bookkeeping). Kernel autotuning would let it grow
/// to `net.ipv4.tcp_wmem`'s maximum (4 MiB), keeping that much spliced payload
/// pinned until the target acknowledges it; at under 1 ms round trip 512 KiB
/// still carries over 4 Gbit/s per connection, and measured on loopback the
/// cap cut fulcrum's CPU per GiB by about a quarter (docs/operations.md). A
/// farther target keeps autotuning, which its bandwidth-delay product needs.
const NEAR_SEND_BUFFER: usize = 256 * 1024;

/// The congestion control of a spliced connection to a near target, unless
/// `FULCRUM_NEAR_TARGET_CC` names another (empty: keep the system's default).
/// At under 1 ms round trip the window any algorithm settles on fills the path;
/// what differs is the cost per byte. Measured on loopback with the system's
/// default `bbr` (docs/operations.md): BBR's small window leaves spliced data
/// queued until ACKs come in, so segments leave both from fulcrum's system
/// calls and from ACK processing on the target's CPU, arrive out of order and
/// are retransmitted for nothing (2.9-6 MB per 2.5 s); `reno` moved 19.2-20.2
/// Gbit/s at 0.20-0.26 CPU s/GiB (6 runs of 7) where `bbr` moved 16.7-18.4 at
/// 0.27-0.38 (14 of 15) and `cubic` 17.7-19.0 at 0.36-0.42. `reno` is always
/// built in and allowed without privileges.
const NEAR_CONGESTION_CONTROL: &str = "reno";

fn near_congestion_control() -> Option<&'static str> {
    static CC: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    CC.get_or_init(|| match std::env::var("FULCRUM_NEAR_TARGET_CC") {
        Ok(v) if v.trim().is_empty() => None,
        Ok(v) => Some(v.trim().to_string()),
        Err(_) => Some(NEAR_CONGESTION_CONTROL.to_string()),
    })
    .as_deref()
}

/// A connected target of the listener's group, with the PROXY header sent.
struct Upstream {
    stream: crate::http::pool::Conn,
    state: Arc<TargetState>,
    idle: Duration,
    addr: SocketAddr,
    group: Arc<str>,
    /// How long the connect took (about one round trip for plain tcp).
    connect_took: Duration,
}

async fn connect(
    live: &Live,
    listener: &str,
    peer: SocketAddr,
    local: SocketAddr,
) -> Option<Upstream> {
    let li = live.listener_index(listener)?;
    let lcfg = &live.snapshot.listeners[li];
    let Action::Forward(f) = &lcfg.default_action else {
        return None;
    };
    let &(gid, _) = f.groups.first()?;
    let group = &live.groups[gid.0 as usize];
    let cfg = &live.snapshot.target_groups[gid.0 as usize];
    let client_ip = crate::net::canonical_ip(peer.ip());
    let mut skip = None;
    for _attempt in 0..2 {
        let Ok(i) = crate::balancer::pick(group, cfg, &live.snapshot.node.zone, client_ip, skip)
        else {
            return None;
        };
        // A retry counts once another target was found for it; the connection
        // counts as a request once a target was chosen for it (as for HTTP), even
        // if no connect succeeds.
        if skip.is_some() {
            group.state.metrics.retry();
        } else {
            live.listeners[li].requests(gid, &cfg.name).increment(1);
        }
        let header = cfg.proxy_protocol_v2.then(|| proxy_v2::header(peer, local));
        let began = std::time::Instant::now();
        let connect = crate::http::pool::connect(
            cfg.targets[i].addr,
            live.target_tls(gid, i),
            header.as_deref(),
            CONNECT_TIMEOUT,
        );
        // A connect still pending when the target's deregistration delay (or the
        // shutdown's) ends gives up: the connection is closed and logged.
        let connected = tokio::select! {
            r = connect => r,
            _ = group.targets[i].killed() => return None,
        };
        match connected {
            Ok(s) => {
                return Some(Upstream {
                    stream: s,
                    state: group.targets[i].clone(),
                    idle: lcfg.idle_timeout,
                    addr: cfg.targets[i].addr,
                    group: Arc::from(cfg.name.as_str()),
                    connect_took: began.elapsed(),
                });
            }
            _ => {
                group.state.metrics.connection_error();
                skip = Some(i);
            }
        }
    }
    None
}

/// Tunes a spliced connection to a near target: its send buffer capped (see
/// [`NEAR_SEND_BUFFER`]) and its congestion control (see
/// [`NEAR_CONGESTION_CONTROL`]). Best effort: what the kernel refuses stays as
/// the system set it (a refused algorithm is logged once).
fn tune_near_target(target: &TcpStream, connect_took: Duration) {
    if connect_took >= NEAR_RTT {
        return;
    }
    let sock = socket2::SockRef::from(target);
    let _ = sock.set_send_buffer_size(NEAR_SEND_BUFFER);
    if let Some(cc) = near_congestion_control() {
        if let Err(e) = sock.set_tcp_congestion(cc.as_bytes()) {
            static WARNED: std::sync::atomic::AtomicBool =
                std::sync::atomic::AtomicBool::new(false);
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(algorithm = cc, error = %e, "cannot set the congestion control of connections to near targets; they keep the system's");
            }
        }
    }
}

/// A plain tcp listener's connection: zero-copy with splice(2).
pub async fn serve_tcp(
    client: TcpStream,
    peer: SocketAddr,
    listener: Arc<str>,
    guard: ConnGuard,
    shared: Arc<Shared>,
) {
    let local = client.local_addr().unwrap_or(peer);
    let started = std::time::SystemTime::now();
    let live = shared.live.load_full();
    let Some(up) = connect(&live, &listener, peer, local).await else {
        log_connection(&shared, "tcp", &listener, peer, started, None, (0, 0), None);
        return;
    };
    drop(live);
    let t = up.state.clone();
    t.active_connections.fetch_add(1, Ordering::Relaxed);
    let metrics = &guard.listener().metrics;
    let (target_addr, group) = (up.addr, up.group.clone());
    let mut client = client;
    let mut stream = up.stream;
    // Counted as bytes move, however the copy ends (idle timeout, reset,
    // deregistration).
    let moved = Moved::counting(metrics);
    let copy = async {
        match &mut stream {
            // Plain to plain: zero copy.
            crate::http::pool::Conn::Plain(target) => {
                metrics::counter!(crate::metrics::L4_SPLICE, "listener" => listener.to_string())
                    .increment(1);
                tune_near_target(target, up.connect_took);
                splice::proxy(&client, target, up.idle, &moved).await
            }
            // Re-encrypted to a tls group: through user space.
            tls => copy_with_idle(&mut client, tls, up.idle, &moved).await,
        }
    };
    tokio::select! {
        _ = copy => {}
        _ = t.killed() => {}
    }
    let bytes = moved.get();
    t.active_connections.fetch_sub(1, Ordering::Relaxed);
    log_connection(
        &shared,
        "tcp",
        &listener,
        peer,
        started,
        Some((target_addr, group)),
        bytes,
        None,
    );
}

/// Any other client stream (TLS terminated by the balancer): copied in user space.
pub async fn serve<C: crate::http::conn::Stream>(
    mut client: C,
    peer: SocketAddr,
    local: SocketAddr,
    listener: Arc<str>,
    guard: ConnGuard,
    shared: Arc<Shared>,
    tls: Option<crate::tls::server::TlsInfo>,
) {
    let started = std::time::SystemTime::now();
    let live = shared.live.load_full();
    let Some(mut up) = connect(&live, &listener, peer, local).await else {
        log_connection(
            &shared,
            "tls",
            &listener,
            peer,
            started,
            None,
            (0, 0),
            tls.as_ref(),
        );
        return;
    };
    let (target_addr, group) = (up.addr, up.group.clone());
    drop(live);
    let t = up.state.clone();
    t.active_connections.fetch_add(1, Ordering::Relaxed);
    let metrics = &guard.listener().metrics;
    // Counted as bytes move, however the copy ends (idle timeout, reset,
    // deregistration).
    let moved = Moved::counting(metrics);
    tokio::select! {
        _ = copy_with_idle(&mut client, &mut up.stream, up.idle, &moved) => {}
        _ = t.killed() => {}
    }
    let bytes = moved.get();
    t.active_connections.fetch_sub(1, Ordering::Relaxed);
    log_connection(
        &shared,
        "tls",
        &listener,
        peer,
        started,
        Some((target_addr, group)),
        bytes,
        tls.as_ref(),
    );
}

/// One access-log record per tcp/tls connection (SPEC §10), when a log is on.
#[allow(clippy::too_many_arguments)]
fn log_connection(
    shared: &Shared,
    kind: &'static str,
    listener: &Arc<str>,
    peer: SocketAddr,
    started: std::time::SystemTime,
    target: Option<(SocketAddr, Arc<str>)>,
    (received, sent): (u64, u64),
    tls: Option<&crate::tls::server::TlsInfo>,
) {
    let live = shared.live.load();
    let Some(log) = live.access_log.as_ref() else {
        return;
    };
    let mut r = crate::record::Record::new(kind, listener.clone(), peer, started);
    r.time = std::time::SystemTime::now();
    r.received_bytes = received;
    r.sent_bytes = sent;
    match target {
        Some((addr, group)) => {
            r.target = Some(addr);
            r.target_group = Some(group);
        }
        None => {
            r.error_reason = Some("TargetConnectionError");
            // The group it could not reach.
            r.target_group = live.listener_index(listener).and_then(|li| {
                match &live.snapshot.listeners[li].default_action {
                    Action::Forward(f) => f.groups.first().map(|&(gid, _)| {
                        Arc::from(live.snapshot.target_groups[gid.0 as usize].name.as_str())
                    }),
                    _ => None,
                }
            });
        }
    }
    if let Some(t) = tls {
        r.ssl_cipher = Some(t.cipher);
        r.ssl_protocol = Some(t.protocol);
        r.domain_name = t.sni.clone().filter(|_| t.sni_matched);
        r.chosen_cert = t.cert_name.clone();
    }
    log.submit(r);
}

/// Bytes moved through the client side of a copy: read from the client (`in`) and
/// written to it (`out`), kept up to date while the copy runs, and added as they
/// move to the listener's processed-bytes counters when given.
#[derive(Default)]
pub struct Moved<'a> {
    read: std::sync::atomic::AtomicU64,
    written: std::sync::atomic::AtomicU64,
    counters: Option<(&'a metrics::Counter, &'a metrics::Counter)>,
}

impl<'a> Moved<'a> {
    /// Also counts into `m`'s processed bytes (in, out) as bytes move.
    pub fn counting(m: &'a crate::metrics::ListenerMetrics) -> Moved<'a> {
        Moved {
            counters: Some((&m.bytes_in, &m.bytes_out)),
            ..Moved::default()
        }
    }

    pub(crate) fn add_read(&self, n: u64) {
        self.read.fetch_add(n, Ordering::Relaxed);
        if let Some((c, _)) = self.counters {
            c.increment(n);
        }
    }

    pub(crate) fn add_written(&self, n: u64) {
        self.written.fetch_add(n, Ordering::Relaxed);
        if let Some((_, c)) = self.counters {
            c.increment(n);
        }
    }

    /// (from the client, to the client) so far.
    pub fn get(&self) -> (u64, u64) {
        (
            self.read.load(Ordering::Relaxed),
            self.written.load(Ordering::Relaxed),
        )
    }
}

/// When either direction of a copy last moved a byte.
pub(crate) struct Activity {
    start: tokio::time::Instant,
    last_ms: std::sync::atomic::AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Activity {
        Activity {
            start: tokio::time::Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub(crate) fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Resolves once `idle` passed without a byte either way.
    pub(crate) async fn idle(&self, idle: Duration) {
        loop {
            let deadline =
                self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle;
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// Copies both ways in user space until both sides closed, or `idle` passes with
/// no byte either way (an error: `TimedOut`). `a` is the client side; what passes
/// through it is counted in `moved`.
pub(crate) async fn copy_with_idle<A, B>(
    a: &mut A,
    b: &mut B,
    idle: Duration,
    moved: &Moved<'_>,
) -> std::io::Result<()>
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let activity = Activity::new();
    let mut a = Watched {
        inner: a,
        moved,
        activity: &activity,
    };
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut a, b) => r.map(|_| ()),
        _ = activity.idle(idle) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Counts the bytes read from and written to the client side (both directions
/// pass through it), for the byte counts and the idle timeout.
struct Watched<'a, 'm, S> {
    inner: &'a mut S,
    moved: &'a Moved<'m>,
    activity: &'a Activity,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<'_, '_, S> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let me = self.get_mut();
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut *me.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        if n > 0 {
            me.moved.add_read(n as u64);
            me.activity.touch();
        }
        r
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<'_, '_, S> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let me = self.get_mut();
        let r = std::pin::Pin::new(&mut *me.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &r {
            if *n > 0 {
                me.moved.add_written(*n as u64);
                me.activity.touch();
            }
        }
        r
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn connected() -> TcpStream {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let s = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let _ = l.accept().await.unwrap();
        s
    }

    #[tokio::test]
    async fn near_targets_get_a_capped_send_buffer_and_reno_far_ones_keep_the_defaults() {
        // The kernel doubles what it is asked for, up to net.core.wmem_max.
        let wmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/wmem_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let near = connected().await;
        tune_near_target(&near, Duration::from_micros(80));
        assert_eq!(
            socket2::SockRef::from(&near).send_buffer_size().unwrap(),
            2 * NEAR_SEND_BUFFER.min(wmem_max)
        );
        let cc = |s: &TcpStream| {
            let mut name = socket2::SockRef::from(s).tcp_congestion().unwrap();
            name.retain(|&b| b != 0);
            String::from_utf8(name).unwrap()
        };
        assert_eq!(cc(&near), "reno");
        let far = connected().await;
        let before = socket2::SockRef::from(&far).send_buffer_size().unwrap();
        let cc_before = cc(&far);
        tune_near_target(&far, Duration::from_millis(20));
        assert_eq!(
            socket2::SockRef::from(&far).send_buffer_size().unwrap(),
            before
        );
        assert_ne!(before, 2 * NEAR_SEND_BUFFER.min(wmem_max));
        assert_eq!(cc(&far), cc_before);
    }
}
