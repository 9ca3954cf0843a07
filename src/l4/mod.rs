//! tcp listeners: bytes pass unchanged both ways to a target of the listener's
//! group; a failed connect tries one other target. This first version copies in
//! user space; the splice(2) path arrives with the L4/TLS issue.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::listener::ConnGuard;
use crate::server::Shared;
use crate::snapshot::Action;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve<C: crate::http::conn::Stream>(
    mut client: C,
    peer: SocketAddr,
    listener: Arc<str>,
    guard: ConnGuard,
    shared: Arc<Shared>,
) {
    let live = shared.live.load_full();
    let Some(idx) = live.listener_index(&listener) else {
        return;
    };
    let Action::Forward(f) = &live.snapshot.listeners[idx].default_action else {
        return;
    };
    let Some(&(gid, _)) = f.groups.first() else {
        return;
    };
    let group = &live.groups[gid.0 as usize];
    let cfg = &live.snapshot.target_groups[gid.0 as usize];
    let mut skip = None;
    let mut upstream = None;
    for _attempt in 0..2 {
        let Ok(i) = crate::balancer::pick(
            group,
            cfg,
            &live.snapshot.node.zone,
            crate::net::canonical_ip(peer.ip()),
            skip,
        ) else {
            break;
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(cfg.targets[i].addr)).await {
            Ok(Ok(s)) => {
                upstream = Some((i, s));
                break;
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
    let Some((i, mut target)) = upstream else {
        return;
    };
    let _ = target.set_nodelay(true);
    let t = group.targets[i].clone();
    t.active_connections.fetch_add(1, Ordering::Relaxed);
    drop(live);
    let metrics = &guard.listener().metrics;
    // A draining target's connections close when its deregistration delay ends.
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut client, &mut target) => {
            if let Ok((up, down)) = r {
                metrics.bytes_in.increment(up);
                metrics.bytes_out.increment(down);
            }
        }
        _ = t.killed() => {}
    }
    t.active_connections.fetch_sub(1, Ordering::Relaxed);
}
