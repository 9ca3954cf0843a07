//! Listening sockets and accept loops: one SO_REUSEPORT socket per listener per
//! worker, the allow-list and `max_connections` checked at accept, accept errors
//! (EMFILE and friends) met with a back-off instead of a spin.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::metrics::RejectReason;
use crate::server::Shared;
use crate::snapshot::ListenerProtocol;
use crate::targets::ListenerState;
use crate::worker::Workers;

/// Listen backlog per socket.
const BACKLOG: i32 = 4096;

/// Binds `n` sockets to `addr` with SO_REUSEPORT (one per worker), not yet
/// listening: until [`listen`], a connection to the address is refused.
pub fn bind(addr: SocketAddr, n: usize) -> io::Result<Vec<Socket>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        let domain = if addr.is_ipv4() {
            Domain::IPV4
        } else {
            Domain::IPV6
        };
        let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        out.push(s);
    }
    Ok(out)
}

/// Puts sockets from [`bind`] into the listening state: from here the kernel
/// completes handshakes and queues connections for the accept loops.
pub fn listen(sockets: Vec<Socket>) -> io::Result<Vec<std::net::TcpListener>> {
    sockets
        .into_iter()
        .map(|s| {
            s.listen(BACKLOG)?;
            Ok(s.into())
        })
        .collect()
}

/// A listener's accept loops, running on every worker until stopped.
pub struct Running {
    pub bind: SocketAddr,
    stop: watch::Sender<bool>,
}

impl Running {
    /// Closes the listening sockets (connections already accepted go on).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

/// Starts one accept loop per socket, each on its own worker.
pub fn start(
    name: &str,
    bind: SocketAddr,
    sockets: Vec<std::net::TcpListener>,
    workers: &Workers,
    shared: &Arc<Shared>,
    state: Arc<ListenerState>,
) -> Running {
    let (stop, stop_rx) = watch::channel(false);
    let name: Arc<str> = Arc::from(name);
    for (i, sock) in sockets.into_iter().enumerate() {
        let handle = &workers.handles()[i % workers.len().max(1)];
        let (name, shared, state, stop_rx) =
            (name.clone(), shared.clone(), state.clone(), stop_rx.clone());
        handle.spawn(async move {
            match TcpListener::from_std(sock) {
                Ok(l) => accept_loop(l, name, shared, state, stop_rx).await,
                Err(e) => tracing::error!(listener = %name, error = %e, "cannot register listening socket"),
            }
        });
    }
    Running { bind, stop }
}

/// Holds one slot of `max_connections` and the listener's active count; both
/// are given back when the connection ends, however it ends.
pub struct ConnGuard {
    shared: Arc<Shared>,
    state: Arc<ListenerState>,
}

impl ConnGuard {
    pub fn listener(&self) -> &Arc<ListenerState> {
        &self.state
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.shared.connections.fetch_sub(1, Ordering::AcqRel);
        self.state.active.fetch_sub(1, Ordering::Relaxed);
        self.state.metrics.active.decrement(1.0);
    }
}

fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

async fn accept_loop(
    listener: TcpListener,
    name: Arc<str>,
    shared: Arc<Shared>,
    state: Arc<ListenerState>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.changed() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => {
                backoff = Duration::from_millis(5);
                x
            }
            Err(e) if transient(&e) => continue,
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS, ENOMEM: wait for resources instead of spinning.
                tracing::warn!(listener = %name, error = %e, "accept failed; backing off {backoff:?}");
                tokio::select! {
                    _ = stop.changed() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        admit(stream, peer, &name, &shared, &state);
    }
}

/// The checks at accept, then the connection's task.
fn admit(
    stream: TcpStream,
    peer: SocketAddr,
    name: &Arc<str>,
    shared: &Arc<Shared>,
    state: &Arc<ListenerState>,
) {
    let live = shared.live.load();
    let Some(idx) = live.listener_index(name) else {
        return; // removed by a reload a moment ago
    };
    let cfg = &live.snapshot.listeners[idx];
    let ip = crate::net::canonical_ip(peer.ip());
    if !cfg.allow.iter().any(|net| net.contains(&ip)) {
        state.metrics.rejected(RejectReason::NotAllowed);
        crate::net::reset(stream);
        return;
    }
    let max = live.snapshot.runtime.max_connections;
    if shared.connections.fetch_add(1, Ordering::AcqRel) >= max {
        shared.connections.fetch_sub(1, Ordering::AcqRel);
        state.metrics.rejected(RejectReason::MaxConnections);
        crate::net::reset(stream);
        return;
    }
    state.active.fetch_add(1, Ordering::Relaxed);
    state.metrics.active.increment(1.0);
    state.metrics.connections.increment(1);
    let guard = ConnGuard {
        shared: shared.clone(),
        state: state.clone(),
    };
    let _ = stream.set_nodelay(true);
    // The accept loop's name, shared (not copied) by its connections.
    let name = name.clone();
    match cfg.protocol {
        ListenerProtocol::Http => {
            let local = stream.local_addr().ok();
            if let Some(local) = local {
                crate::net::tune_http_client(&stream, peer.ip(), local.ip());
            }
            let port = local.map_or(0, |a| a.port());
            tokio::spawn(crate::http::conn::serve(
                stream,
                peer,
                port,
                name,
                guard,
                shared.clone(),
                None,
            ));
        }
        ListenerProtocol::Tcp => {
            tokio::spawn(crate::l4::serve_tcp(
                stream,
                peer,
                name,
                guard,
                shared.clone(),
            ));
        }
        ListenerProtocol::Https | ListenerProtocol::Tls => {
            let Some(Some(server_cfg)) = live.tls_servers.get(idx).cloned() else {
                return; // the listener's certificates could not be used (logged at load)
            };
            let protocol = cfg.protocol;
            // Before the first request only idle_timeout applies (SPEC §3): the
            // handshake gets that long.
            let handshake_timeout = cfg.idle_timeout;
            let shared = shared.clone();
            tokio::spawn(async move {
                let local = stream.local_addr().ok();
                if let (ListenerProtocol::Https, Some(local)) = (protocol, local) {
                    crate::net::tune_http_client(&stream, peer.ip(), local.ip());
                }
                let local = local.unwrap_or(peer);
                let acceptor = tokio_rustls::TlsAcceptor::from(server_cfg);
                // A handshake still running at shutdown is dropped, as an idle
                // connection is.
                let mut draining = shared.draining.subscribe();
                let handshake = tokio::time::timeout(handshake_timeout, acceptor.accept(stream));
                let tls = tokio::select! {
                    r = handshake => match r {
                        Ok(Ok(t)) => t,
                        Ok(Err(e)) => {
                            tracing::debug!(listener = %name, client = %peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    },
                    _ = draining.wait_for(|d| *d) => return,
                };
                let info: Option<crate::tls::server::TlsInfo> = {
                    let live = shared.live.load();
                    live.listener_index(&name).map(|i| {
                        crate::tls::server::tls_info(
                            tls.get_ref().1,
                            &live.snapshot.listeners[i],
                            &live.snapshot.certificates,
                        )
                    })
                };
                if protocol == ListenerProtocol::Https {
                    crate::http::conn::serve(tls, peer, local.port(), name, guard, shared, info)
                        .await;
                } else {
                    crate::l4::serve(tls, peer, local, name, guard, shared, info).await;
                }
            });
        }
    }
}
