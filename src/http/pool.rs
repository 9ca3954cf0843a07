//! The upstream keep-alive pool: idle connections to targets, per worker thread
//! (a connection is used by the worker that opened it, so no lock). Idle
//! connections older than the group's `keep_alive_timeout` are closed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

/// At most this many idle connections per target and worker.
const MAX_IDLE_PER_TARGET: usize = 256;

struct Idle {
    stream: Conn,
    /// When the group's keep_alive_timeout runs out for this connection.
    expires: Instant,
}

/// The pool's keys are target addresses from the config, not client input, so
/// a fast multiply-rotate hash is enough (SipHash showed as 2% of a request).
#[derive(Default)]
struct AddrHasher(u64);

impl std::hash::Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }

    fn write_u16(&mut self, v: u16) {
        self.write_u64(u64::from(v));
    }

    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
}

/// What a pooled connection may be reused for: its target's address and how it
/// was made. `tls` is 0 for plain TCP (interchangeable between groups); a TLS
/// connection carries the id of its group, verification settings and server
/// name ([`crate::live::Live::pool_key`]), so it is never reused under another
/// group's or another name's, nor after a reload changed them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub addr: SocketAddr,
    pub tls: u64,
}

type KeyMap<V> = HashMap<Key, V, std::hash::BuildHasherDefault<AddrHasher>>;

thread_local! {
    static POOL: RefCell<KeyMap<Vec<Idle>>> = RefCell::new(KeyMap::default());
}

/// The most recently used idle connection for `key` that has not expired and has
/// nothing to read. `now`: the caller's recent reading of the clock.
pub fn checkout(key: Key, now: Instant) -> Option<Conn> {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let list = p.get_mut(&key)?;
        // Newest first; older expired ones are left to the sweeper (no scan of
        // the whole list per request).
        while let Some(c) = list.pop() {
            if c.expires > now && quiet(&c.stream) {
                return Some(c.stream);
            }
        }
        None
    })
}

/// An idle connection must have nothing to read: bytes there answer no request (the
/// next request would take them for its response: response queue poisoning), and an
/// end of stream means the target closed it. Either way it is dropped.
///
/// The reactor's readiness decides first, without a system call: a pooled
/// connection stays registered, so bytes or an end of stream that arrived while it
/// sat idle have marked it readable (as HAProxy's and nginx's pollers see their idle
/// server connections). Only a connection marked readable is peeked at; a peek that
/// finds nothing clears the stale mark (the last response filled the buffer exactly).
/// A close the reactor has not polled yet passes as quiet: a bodiless idempotent
/// request is then retried on a fresh connection (the keep-alive race), any other
/// gets a 502, a window as wide as one reactor turn (as with HAProxy and nginx).
fn quiet(c: &Conn) -> bool {
    let tcp = c.tcp();
    let peeked = tcp.try_io(tokio::io::Interest::READABLE, || {
        let mut b = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        socket2::SockRef::from(tcp).peek(&mut b)
    });
    matches!(peeked, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// Returns a connection whose last exchange ended cleanly; it stays pooled for
/// at most `max_idle` (the group's keep_alive_timeout) after `now` (the
/// caller's recent reading of the clock).
pub fn checkin(key: Key, stream: Conn, max_idle: Duration, now: Instant) {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let list = p.entry(key).or_default();
        if list.len() >= MAX_IDLE_PER_TARGET {
            list.remove(0);
        }
        list.push(Idle {
            stream,
            expires: now + max_idle,
        });
    });
}

/// Closes idle connections to `addr` (a target that left the config), however
/// they were made.
pub fn forget(addr: SocketAddr) {
    POOL.with(|p| {
        p.borrow_mut().retain(|k, _| k.addr != addr);
    });
}

/// Closes every expired idle connection; run periodically on each worker.
pub fn sweep() {
    POOL.with(|p| {
        let now = Instant::now();
        p.borrow_mut().retain(|_, list| {
            list.retain(|c| c.expires > now);
            !list.is_empty()
        });
    });
}

/// Sweeps this worker's pool every `every` (spawn once per worker).
pub async fn sweeper(every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        sweep();
    }
}

/// Idle connections held by this thread (tests, metrics).
pub fn idle_count() -> usize {
    POOL.with(|p| p.borrow().values().map(Vec::len).sum())
}

/// A connection to a target: plain TCP, or TLS for https/tls target groups.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Conn {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(t) => t.get_ref().0,
        }
    }
}

impl tokio::io::AsyncRead for Conn {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Conn::Tls(t) => std::pin::Pin::new(t.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Conn {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Conn::Tls(t) => std::pin::Pin::new(t.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Conn::Tls(t) => std::pin::Pin::new(t.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Conn::Tls(t) => std::pin::Pin::new(t.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Connects to a target (TCP, then `preface` such as a PROXY v2 header) within
/// `timeout` (else `TimedOut`: 504 for a request), then, when `tls` is given, the TLS
/// handshake within `timeout` of its own (a target that stalls it failed the
/// handshake: an error of another kind, 502, as ALB's 10 s backend handshake limit).
pub async fn connect(
    addr: SocketAddr,
    tls: Option<(
        &std::sync::Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
    preface: Option<&[u8]>,
    timeout: Duration,
) -> std::io::Result<Conn> {
    let tcp = async {
        let mut s = TcpStream::connect(addr).await?;
        let _ = s.set_nodelay(true);
        if let Some(p) = preface {
            tokio::io::AsyncWriteExt::write_all(&mut s, p).await?;
        }
        Ok::<_, std::io::Error>(s)
    };
    let s = match tokio::time::timeout(timeout, tcp).await {
        Ok(r) => r?,
        Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
    };
    match tls {
        None => Ok(Conn::Plain(s)),
        Some((cfg, name)) => {
            let handshake = tokio_rustls::TlsConnector::from(cfg.clone()).connect(name, s);
            match tokio::time::timeout(timeout, handshake).await {
                Ok(t) => Ok(Conn::Tls(Box::new(t?))),
                Err(_) => Err(std::io::Error::other(format!(
                    "the TLS handshake with {addr} did not finish within {timeout:?}"
                ))),
            }
        }
    }
}
