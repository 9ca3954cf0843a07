//! Socket odds and ends shared by the data path.

use std::net::IpAddr;

use tokio::net::TcpStream;

/// An IPv4-mapped IPv6 address as the IPv4 address it carries.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Closes a connection at once with a reset (SO_LINGER 0), for rejected clients.
pub fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(std::time::Duration::ZERO));
    drop(stream);
}

/// The socket buffer an http connection's sides on this host ask for (the kernel
/// doubles it for its bookkeeping): the send buffer toward a client on this host
/// and the receive buffer from a target on this host, unless
/// `FULCRUM_NEAR_HTTP_BUFFER` gives another size (`0`: leave both to the kernel's
/// autotuning). Autotuning grows each buffer to megabytes; a body then crosses
/// the proxy through buffers far larger than the CPU's caches and is copied in
/// and out of memory, not cache. Measured on the 2-core benchmark machine, 1 MiB
/// responses through one worker over 16 connections: 1.35-1.5 GB/s autotuned,
/// 1.7-2.0 GB/s with 64 KiB on both sides, about 1.6 with 96 or 128 KiB, 1.3 with
/// 256 KiB, and either side alone gained little (docs/operations.md).
pub const NEAR_HTTP_BUFFER: usize = 64 * 1024;

fn near_http_buffer() -> Option<usize> {
    static SIZE: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *SIZE.get_or_init(|| {
        parse_near_http_buffer(std::env::var("FULCRUM_NEAR_HTTP_BUFFER").ok().as_deref())
    })
}

/// The largest size taken from `FULCRUM_NEAR_HTTP_BUFFER` (the kernel doubles
/// it into an `int`).
const NEAR_HTTP_BUFFER_MAX: usize = 1 << 30;

/// `FULCRUM_NEAR_HTTP_BUFFER`'s value: unset → the default, `0` or empty → off,
/// a byte count up to 1 GiB → that (anything else keeps the default, logged).
fn parse_near_http_buffer(v: Option<&str>) -> Option<usize> {
    let Some(v) = v.map(str::trim) else {
        return Some(NEAR_HTTP_BUFFER);
    };
    match v.parse::<usize>() {
        _ if v.is_empty() => None,
        Ok(0) => None,
        Ok(n) if n <= NEAR_HTTP_BUFFER_MAX => Some(n),
        _ => {
            tracing::warn!(
                value = v,
                "FULCRUM_NEAR_HTTP_BUFFER is not a byte count up to 1 GiB; using the default"
            );
            Some(NEAR_HTTP_BUFFER)
        }
    }
}

/// Whether the other end of a connection is on this host: a loopback address,
/// or the very address of this end (a host connecting to one of its own
/// addresses uses that address as the source).
pub fn same_host(peer: IpAddr, local: IpAddr) -> bool {
    let (peer, local) = (canonical_ip(peer), canonical_ip(local));
    peer.is_loopback() || peer == local
}

/// Caps the send buffer of an http client connection from this host (see
/// [`NEAR_HTTP_BUFFER`]); clients elsewhere keep autotuning, which a long path's
/// bandwidth-delay product needs. Best effort.
pub fn tune_http_client(stream: &TcpStream, peer: IpAddr, local: IpAddr) {
    if let Some(n) = near_http_buffer() {
        cap_client_send(stream, peer, local, n);
    }
}

fn cap_client_send(stream: &TcpStream, peer: IpAddr, local: IpAddr, n: usize) {
    if same_host(peer, local) {
        let _ = socket2::SockRef::from(stream).set_send_buffer_size(n);
    }
}

/// Caps the receive buffer of a connection to an http target on this host (see
/// [`NEAR_HTTP_BUFFER`]); targets elsewhere keep autotuning. Best effort.
pub fn tune_http_target(stream: &TcpStream) {
    if let Some(n) = near_http_buffer() {
        cap_target_receive(stream, n);
    }
}

fn cap_target_receive(stream: &TcpStream, n: usize) {
    if let (Ok(peer), Ok(local)) = (stream.peer_addr(), stream.local_addr()) {
        if same_host(peer.ip(), local.ip()) {
            let _ = socket2::SockRef::from(stream).set_recv_buffer_size(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_host_is_loopback_or_the_address_reached() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(same_host(ip("127.0.0.1"), ip("127.0.0.1")));
        assert!(same_host(ip("127.0.0.9"), ip("127.0.0.1")));
        assert!(same_host(ip("::1"), ip("::1")));
        assert!(same_host(ip("::ffff:127.0.0.1"), ip("::1")));
        assert!(same_host(ip("10.0.0.5"), ip("10.0.0.5")));
        assert!(same_host(ip("::ffff:10.0.0.5"), ip("10.0.0.5")));
        assert!(!same_host(ip("10.0.0.6"), ip("10.0.0.5")));
        assert!(!same_host(ip("192.0.2.1"), ip("127.0.0.1")));
        assert!(!same_host(ip("2001:db8::2"), ip("2001:db8::1")));
    }

    #[test]
    fn the_near_buffer_size_comes_from_the_environment_value() {
        assert_eq!(parse_near_http_buffer(None), Some(NEAR_HTTP_BUFFER));
        assert_eq!(parse_near_http_buffer(Some("")), None);
        assert_eq!(parse_near_http_buffer(Some(" 0 ")), None);
        assert_eq!(parse_near_http_buffer(Some("131072")), Some(131072));
        assert_eq!(parse_near_http_buffer(Some("lots")), Some(NEAR_HTTP_BUFFER));
        assert_eq!(parse_near_http_buffer(Some("-1")), Some(NEAR_HTTP_BUFFER));
        assert_eq!(parse_near_http_buffer(Some("1073741824")), Some(1 << 30));
        assert_eq!(
            parse_near_http_buffer(Some("4294967296")),
            Some(NEAR_HTTP_BUFFER)
        );
    }

    fn proc_max(name: &str) -> usize {
        std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(usize::MAX)
    }

    async fn pair() -> (TcpStream, TcpStream, IpAddr, IpAddr) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let out = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (inn, peer) = l.accept().await.unwrap();
        (out, inn, peer.ip(), l.local_addr().unwrap().ip())
    }

    /// Sends 16 MiB from `from` to `to` (enough for autotuning to grow buffers).
    async fn pump(from: &mut TcpStream, to: &mut TcpStream) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        const TOTAL: usize = 16 << 20;
        let chunk = vec![7u8; 256 * 1024];
        let write = async {
            for _ in 0..TOTAL / chunk.len() {
                from.write_all(&chunk).await.unwrap();
            }
        };
        let read = async {
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = 0;
            while got < TOTAL {
                let n = to.read(&mut buf).await.unwrap();
                assert!(n > 0);
                got += n;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(20), async {
            tokio::join!(write, read)
        })
        .await
        .expect("16 MiB over loopback within 20 s");
    }

    #[tokio::test]
    async fn sides_on_this_host_get_capped_buffers_and_others_keep_autotuning() {
        // A size unlike the kernel's initial buffers, so a cap shows at once.
        const N: usize = 96 * 1024;
        let snd = |s: &TcpStream| socket2::SockRef::from(s).send_buffer_size().unwrap();
        let rcv = |s: &TcpStream| socket2::SockRef::from(s).recv_buffer_size().unwrap();
        let want_snd = 2 * N.min(proc_max("wmem_max"));
        let want_rcv = 2 * N.min(proc_max("rmem_max"));

        // A client elsewhere (another address than the one reached) is left to
        // autotuning.
        let (_out, inn, _, local) = pair().await;
        let before = snd(&inn);
        assert_ne!(before, want_snd);
        cap_client_send(&inn, "192.0.2.1".parse().unwrap(), local, N);
        assert_eq!(snd(&inn), before);

        // A client and a target on this host: both buffers take the cap and
        // keep it while 16 MiB flow (autotuning would grow them).
        let (mut out, mut inn, peer, local) = pair().await;
        assert_ne!(rcv(&out), want_rcv);
        cap_client_send(&inn, peer, local, N);
        cap_target_receive(&out, N);
        assert_eq!((snd(&inn), rcv(&out)), (want_snd, want_rcv));
        pump(&mut inn, &mut out).await;
        assert_eq!((snd(&inn), rcv(&out)), (want_snd, want_rcv));
    }
}
