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

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::listener::ConnGuard;
use crate::live::Live;
use crate::server::Shared;
use crate::snapshot::Action;
use crate::targets::TargetState;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connected target of the listener's group, with the PROXY header sent.
struct Upstream {
    stream: TcpStream,
    state: Arc<TargetState>,
    idle: Duration,
}

async fn connect(live: &Live, listener: &str, peer: SocketAddr, local: SocketAddr) -> Option<Upstream> {
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
        let Ok(i) = crate::balancer::pick(group, cfg, &live.snapshot.node.zone, client_ip, skip) else {
            return None;
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(cfg.targets[i].addr)).await {
            Ok(Ok(mut s)) => {
                let _ = s.set_nodelay(true);
                if cfg.proxy_protocol_v2 {
                    let header = proxy_v2::header(peer, local);
                    if s.write_all(&header).await.is_err() {
                        group.state.metrics.connection_error();
                        return None;
                    }
                }
                return Some(Upstream {
                    stream: s,
                    state: group.targets[i].clone(),
                    idle: lcfg.idle_timeout,
                });
            }
            _ => {
                group.state.metrics.connection_error();
                if skip.is_none() {
                    group.state.metrics.retry();
                }
                skip = Some(i);
            }
        }
    }
    None
}

/// A plain tcp listener's connection: zero-copy with splice(2).
pub async fn serve_tcp(client: TcpStream, peer: SocketAddr, listener: Arc<str>, guard: ConnGuard, shared: Arc<Shared>) {
    let local = client.local_addr().unwrap_or(peer);
    let live = shared.live.load_full();
    let Some(up) = connect(&live, &listener, peer, local).await else {
        return;
    };
    drop(live);
    let t = up.state.clone();
    t.active_connections.fetch_add(1, Ordering::Relaxed);
    let metrics = &guard.listener().metrics;
    tokio::select! {
        r = splice::proxy(&client, &up.stream, up.idle) => {
            if let Ok((a, b)) = r {
                metrics.bytes_in.increment(a);
                metrics.bytes_out.increment(b);
            }
        }
        _ = t.killed() => {}
    }
    t.active_connections.fetch_sub(1, Ordering::Relaxed);
}

/// Any other client stream (TLS terminated by the balancer): copied in user space.
pub async fn serve<C: crate::http::conn::Stream>(
    mut client: C,
    peer: SocketAddr,
    local: SocketAddr,
    listener: Arc<str>,
    guard: ConnGuard,
    shared: Arc<Shared>,
) {
    let live = shared.live.load_full();
    let Some(mut up) = connect(&live, &listener, peer, local).await else {
        return;
    };
    drop(live);
    let t = up.state.clone();
    t.active_connections.fetch_add(1, Ordering::Relaxed);
    let metrics = &guard.listener().metrics;
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut client, &mut up.stream) => {
            if let Ok((a, b)) = r {
                metrics.bytes_in.increment(a);
                metrics.bytes_out.increment(b);
            }
        }
        _ = t.killed() => {}
    }
    t.active_connections.fetch_sub(1, Ordering::Relaxed);
}
