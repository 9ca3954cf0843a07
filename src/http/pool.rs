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
    stream: TcpStream,
    /// When the group's keep_alive_timeout runs out for this connection.
    expires: Instant,
}

thread_local! {
    static POOL: RefCell<HashMap<SocketAddr, Vec<Idle>>> = RefCell::new(HashMap::new());
}

/// The most recently used idle connection to `addr` that has not expired.
pub fn checkout(addr: SocketAddr) -> Option<TcpStream> {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let list = p.get_mut(&addr)?;
        let now = Instant::now();
        list.retain(|c| c.expires > now);
        list.pop().map(|c| c.stream)
    })
}

/// Returns a connection whose last exchange ended cleanly; it stays pooled for
/// at most `max_idle` (the group's keep_alive_timeout).
pub fn checkin(addr: SocketAddr, stream: TcpStream, max_idle: Duration) {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let list = p.entry(addr).or_default();
        if list.len() >= MAX_IDLE_PER_TARGET {
            list.remove(0);
        }
        list.push(Idle {
            stream,
            expires: Instant::now() + max_idle,
        });
    });
}

/// Closes idle connections to `addr` (a target that left the config).
pub fn forget(addr: SocketAddr) {
    POOL.with(|p| {
        p.borrow_mut().remove(&addr);
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
