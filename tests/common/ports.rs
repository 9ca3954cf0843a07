//! Free ports for tests (shared by `common` and the SMTP fixture).

/// A port free right now, never one this test binary was given before, and
/// outside Linux's ephemeral range (32768-60999 by default): a port from
/// `bind(0)` can be taken as the local port of any outgoing connection before the
/// balancer binds it (seen in CI as "Address already in use"), and the kernel may
/// hand the same port out twice in a row.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let (low, high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999));
    // Below the ephemeral range when it leaves room, else above it.
    let (from, to) = if low > 12_000 {
        (10_000, low - 1)
    } else {
        (high.saturating_add(1), u16::MAX)
    };
    for _ in 0..10_000 {
        let r = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let port = from + (r % u64::from(to - from + 1)) as u16;
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free port found in {from}-{to}");
}

/// A target whose connects never complete: a listener with a backlog of 0 whose one
/// queue slot is taken by a connection nobody accepts, so the kernel drops further
/// SYNs and a connect waits (SYN retransmits) until its caller gives up. Loopback
/// only; dropping it closes everything.
pub struct Blackhole {
    pub addr: std::net::SocketAddr,
    _listener: socket2::Socket,
    _filler: std::net::TcpStream,
}

impl Blackhole {
    pub fn start() -> Blackhole {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        s.bind(&any.into()).expect("bind");
        s.listen(0).expect("listen");
        let addr = s
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .expect("address");
        let filler = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2))
            .expect("the one queue slot");
        Blackhole {
            addr,
            _listener: s,
            _filler: filler,
        }
    }
}
