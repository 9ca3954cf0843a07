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
