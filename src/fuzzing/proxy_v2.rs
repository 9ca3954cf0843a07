//! PROXY protocol v2 headers: what fulcrum writes is read back, by a decoder written
//! from the protocol's text, as the addresses it was given.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::Cursor;
use crate::health::probe::PROXY_V2_LOCAL;
use crate::l4::proxy_v2::{SIGNATURE, header};

/// What a target reads from a v2 header.
#[derive(Debug, PartialEq, Eq)]
enum Proxied {
    Local,
    Tcp { src: SocketAddr, dst: SocketAddr },
}

/// Reads two socket addresses from `data` (IPv4, IPv6, or IPv4-mapped IPv6 each),
/// writes their header, and reads it back.
pub fn proxy_v2(data: &[u8]) {
    let mut c = Cursor::new(data);
    let src = address(&mut c);
    let dst = address(&mut c);
    let h = header(src, dst);
    let (got, len) = decode(&h).unwrap_or_else(|| panic!("undecodable header {h:02x?}"));
    assert_eq!(len, h.len(), "bytes after the header: {h:02x?}");
    let Proxied::Tcp { src: s, dst: d } = got else {
        panic!("PROXY expected: {h:02x?}");
    };
    // A mixed pair travels as IPv6; either way the canonical addresses come back.
    assert_eq!(s.ip().to_canonical(), src.ip().to_canonical());
    assert_eq!(d.ip().to_canonical(), dst.ip().to_canonical());
    assert_eq!((s.port(), d.port()), (src.port(), dst.port()));
    let both_v4 = src.ip().to_canonical().is_ipv4() && dst.ip().to_canonical().is_ipv4();
    assert_eq!(s.is_ipv4(), both_v4, "{src} {dst} {h:02x?}");
    assert_eq!(decode(&PROXY_V2_LOCAL), Some((Proxied::Local, 16)));
}

fn address(c: &mut Cursor<'_>) -> SocketAddr {
    let ip = match c.byte() % 3 {
        0 => IpAddr::V4(Ipv4Addr::from(u32::from_be_bytes(four(c)))),
        1 => {
            let mut b = [0u8; 16];
            for chunk in b.chunks_mut(4) {
                chunk.copy_from_slice(&four(c));
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => IpAddr::V6(Ipv4Addr::from(four(c)).to_ipv6_mapped()),
    };
    SocketAddr::new(ip, c.u16())
}

fn four(c: &mut Cursor<'_>) -> [u8; 4] {
    [c.byte(), c.byte(), c.byte(), c.byte()]
}

/// A v2 header at the start of `b` and its length, as a target reads it: signature,
/// version 2, command LOCAL or PROXY, family TCP over IPv4 or IPv6 (or UNSPEC for
/// LOCAL), a big-endian length that covers at least the addresses.
fn decode(b: &[u8]) -> Option<(Proxied, usize)> {
    if b.get(..12)? != SIGNATURE {
        return None;
    }
    let (ver_cmd, fam) = (*b.get(12)?, *b.get(13)?);
    let len = usize::from(u16::from_be_bytes([*b.get(14)?, *b.get(15)?]));
    let body = b.get(16..16 + len)?;
    let got = match (ver_cmd, fam) {
        (0x20, _) => Proxied::Local,
        (0x21, 0x11) if len >= 12 => {
            let ip = |at: usize| {
                IpAddr::V4(Ipv4Addr::new(
                    body[at],
                    body[at + 1],
                    body[at + 2],
                    body[at + 3],
                ))
            };
            let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
            Proxied::Tcp {
                src: SocketAddr::new(ip(0), port(8)),
                dst: SocketAddr::new(ip(4), port(10)),
            }
        }
        (0x21, 0x21) if len >= 36 => {
            let ip = |at: usize| {
                let mut o = [0u8; 16];
                o.copy_from_slice(&body[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(o))
            };
            let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
            Proxied::Tcp {
                src: SocketAddr::new(ip(0), port(32)),
                dst: SocketAddr::new(ip(16), port(34)),
            }
        }
        _ => return None,
    };
    Some((got, 16 + len))
}
