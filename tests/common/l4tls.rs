//! Helpers for the L4 and TLS tests (SPEC §2, §5): generated certificates (rcgen),
//! raw tcp targets (echo, echo behind a PROXY v2 header, TLS echo, HTTP over TLS,
//! garbage), and a rustls client that accepts any certificate so the test can look
//! at the one it received. Included with `#[path]` by `tests/l4.rs` and `tests/tls.rs`.

#![allow(dead_code)]

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

// ---------------------------------------------------------------------------------
// Certificates

/// A leaf certificate and its key.
pub struct TestCert {
    pub der: CertificateDer<'static>,
    pub cert_pem: String,
    pub key_pem: String,
    key_der: Vec<u8>,
}

impl TestCert {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    /// Writes `NAME.crt` and `NAME.key` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let c = dir.join(format!("{name}.crt"));
        let k = dir.join(format!("{name}.key"));
        std::fs::write(&c, &self.cert_pem).unwrap();
        std::fs::write(&k, &self.key_pem).unwrap();
        (c, k)
    }
}

fn leaf_params(names: &[&str]) -> rcgen::CertificateParams {
    let mut p =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    p.distinguished_name.push(
        rcgen::DnType::CommonName,
        names.first().copied().unwrap_or("x"),
    );
    p
}

fn finish(cert: rcgen::Certificate, key: rcgen::KeyPair) -> TestCert {
    TestCert {
        der: cert.der().clone(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        key_der: key.serialize_der(),
    }
}

/// A self-signed certificate for `names` (DNS names or IP addresses).
pub fn self_signed(names: &[&str]) -> TestCert {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = leaf_params(names).self_signed(&key).unwrap();
    finish(cert, key)
}

/// A private CA that signs leaf certificates.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub pem: String,
}

impl TestCa {
    pub fn new(cn: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let pem = p.self_signed(&key).unwrap().pem();
        TestCa {
            issuer: rcgen::Issuer::new(p, key),
            pem,
        }
    }

    pub fn sign(&self, names: &[&str]) -> TestCert {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = leaf_params(names).signed_by(&key, &self.issuer).unwrap();
        finish(cert, key)
    }
}

// ---------------------------------------------------------------------------------
// Targets

/// How a [`TcpTarget`] treats each connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Echoes every byte; at EOF writes `<EOF>` and closes.
    Echo,
    /// Reads a PROXY v2 header (recorded), then behaves as `Echo`.
    ProxyEcho,
    /// TLS server (the target's certificate), then `Echo` on the plaintext.
    TlsEcho,
    /// TLS server answering each connection's first request head with
    /// `200 tls-ok` and closing.
    TlsHttp,
    /// As `TlsHttp`, but keeps the connection open and answers every request on it
    /// (a connection a proxy can pool).
    TlsHttpKeepAlive,
    /// Writes bytes that are neither TLS nor HTTP at once, then closes.
    Garbage,
}

/// A parsed PROXY v2 header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyHeader {
    /// Version and command byte: 0x21 PROXY, 0x20 LOCAL.
    pub cmd: u8,
    /// Family and transport byte: 0x11 TCP over IPv4, 0x21 TCP over IPv6.
    pub fam: u8,
    pub src: Option<SocketAddr>,
    pub dst: Option<SocketAddr>,
}

#[derive(Default)]
pub struct TargetStats {
    /// Data connections: ones that sent at least one byte of payload (a request
    /// head for `TlsHttp`; every connection for `Garbage`), so health checks that
    /// only connect or handshake are left out.
    pub conns: AtomicUsize,
    /// Connections being served now.
    pub open: AtomicUsize,
    /// PROXY v2 headers received (ProxyEcho).
    pub proxy: Mutex<Vec<ProxyHeader>>,
    /// The first 64 KiB of plaintext received over all connections.
    pub received: Mutex<Vec<u8>>,
}

/// A raw tcp target on 127.0.0.1; its accept loop stops on drop.
pub struct TcpTarget {
    pub addr: SocketAddr,
    pub stats: Arc<TargetStats>,
    accept: JoinHandle<()>,
}

impl Drop for TcpTarget {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl TcpTarget {
    pub async fn start(kind: Kind) -> TcpTarget {
        Self::start_tls(kind, None).await
    }

    /// `cert` is the server certificate of the TLS kinds (default: self-signed for
    /// 127.0.0.1).
    pub async fn start_tls(kind: Kind, cert: Option<&TestCert>) -> TcpTarget {
        fulcrum::install_crypto_provider();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(TargetStats::default());
        let acceptor = match kind {
            Kind::TlsEcho | Kind::TlsHttp | Kind::TlsHttpKeepAlive => {
                let own;
                let cert = match cert {
                    Some(c) => c,
                    None => {
                        own = self_signed(&["127.0.0.1"]);
                        &own
                    }
                };
                let cfg = ServerConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_no_client_auth()
                    .with_single_cert(vec![cert.der.clone()], cert.key())
                    .unwrap();
                Some(TlsAcceptor::from(Arc::new(cfg)))
            }
            _ => None,
        };
        let st = Arc::clone(&stats);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let st = Arc::clone(&st);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    st.open.fetch_add(1, Ordering::SeqCst);
                    let _ = serve(kind, sock, acceptor, &st).await;
                    st.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        TcpTarget {
            addr,
            stats,
            accept,
        }
    }

    pub fn conns(&self) -> usize {
        self.stats.conns.load(Ordering::SeqCst)
    }

    pub fn open(&self) -> usize {
        self.stats.open.load(Ordering::SeqCst)
    }

    pub fn proxy_headers(&self) -> Vec<ProxyHeader> {
        self.stats.proxy.lock().unwrap().clone()
    }

    pub fn received(&self) -> Vec<u8> {
        self.stats.received.lock().unwrap().clone()
    }
}

async fn serve(
    kind: Kind,
    mut sock: TcpStream,
    acceptor: Option<TlsAcceptor>,
    st: &TargetStats,
) -> io::Result<()> {
    match kind {
        Kind::Echo => echo(sock, st).await,
        Kind::ProxyEcho => {
            let h = read_proxy_v2(&mut sock).await?;
            st.proxy.lock().unwrap().push(h);
            echo(sock, st).await
        }
        Kind::TlsEcho => {
            let tls = acceptor.unwrap().accept(sock).await?;
            echo(tls, st).await
        }
        Kind::TlsHttp => {
            let mut tls = acceptor.unwrap().accept(sock).await?;
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = tls.read(&mut buf).await?;
                if n == 0 {
                    return Ok(());
                }
                head.extend_from_slice(&buf[..n]);
            }
            st.conns.fetch_add(1, Ordering::SeqCst);
            record(st, &head);
            tls.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\ntls-ok",
            )
            .await?;
            tls.shutdown().await
        }
        Kind::TlsHttpKeepAlive => {
            let mut tls = acceptor.unwrap().accept(sock).await?;
            let mut pending = Vec::new();
            let mut buf = [0u8; 4096];
            let mut first = true;
            loop {
                let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                    let n = tls.read(&mut buf).await?;
                    if n == 0 {
                        return Ok(());
                    }
                    pending.extend_from_slice(&buf[..n]);
                    continue;
                };
                if std::mem::take(&mut first) {
                    st.conns.fetch_add(1, Ordering::SeqCst);
                }
                record(st, &pending[..end + 4]);
                pending.drain(..end + 4);
                tls.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nContent-Type: text/plain\r\n\r\ntls-ok",
                )
                .await?;
            }
        }
        Kind::Garbage => {
            st.conns.fetch_add(1, Ordering::SeqCst);
            sock.write_all(b"this is not a TLS server\r\n\r\n\x00\xff\x00\xff")
                .await?;
            sock.shutdown().await
        }
    }
}

fn record(st: &TargetStats, b: &[u8]) {
    let mut r = st.received.lock().unwrap();
    let room = (64 * 1024usize).saturating_sub(r.len()).min(b.len());
    r.extend_from_slice(&b[..room]);
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, st: &TargetStats) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut first = true;
    loop {
        let n = s.read(&mut buf).await?;
        if n > 0 && first {
            first = false;
            st.conns.fetch_add(1, Ordering::SeqCst);
        }
        if n == 0 {
            s.write_all(b"<EOF>").await?;
            return s.shutdown().await;
        }
        record(st, &buf[..n]);
        s.write_all(&buf[..n]).await?;
    }
}

const PROXY_SIG: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Reads and parses one PROXY v2 header (the signature must match).
pub async fn read_proxy_v2<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<ProxyHeader> {
    let mut fixed = [0u8; 16];
    r.read_exact(&mut fixed).await?;
    if fixed[..12] != PROXY_SIG {
        return Err(io::Error::other(format!(
            "no PROXY v2 signature: {:02x?}",
            &fixed
        )));
    }
    let len = u16::from_be_bytes([fixed[14], fixed[15]]) as usize;
    let mut rest = vec![0u8; len];
    r.read_exact(&mut rest).await?;
    let (cmd, fam) = (fixed[12], fixed[13]);
    let (mut src, mut dst) = (None, None);
    if fam == 0x11 && len >= 12 {
        let ip = |o: usize| {
            IpAddr::V4(Ipv4Addr::new(
                rest[o],
                rest[o + 1],
                rest[o + 2],
                rest[o + 3],
            ))
        };
        let port = |o: usize| u16::from_be_bytes([rest[o], rest[o + 1]]);
        src = Some(SocketAddr::new(ip(0), port(8)));
        dst = Some(SocketAddr::new(ip(4), port(10)));
    } else if fam == 0x21 && len >= 36 {
        let ip = |o: usize| {
            let mut a = [0u8; 16];
            a.copy_from_slice(&rest[o..o + 16]);
            IpAddr::from(a)
        };
        let port = |o: usize| u16::from_be_bytes([rest[o], rest[o + 1]]);
        src = Some(SocketAddr::new(ip(0), port(32)));
        dst = Some(SocketAddr::new(ip(16), port(34)));
    }
    Ok(ProxyHeader { cmd, fam, src, dst })
}

// ---------------------------------------------------------------------------------
// TLS client

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Accepts any certificate (the test compares the one received), but checks the
/// handshake signatures.
#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Which protocol versions the test client offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Versions {
    Both,
    Tls12Only,
    Tls13Only,
}

pub fn client_config(v: Versions) -> Arc<ClientConfig> {
    let p = provider();
    let versions: &[&'static rustls::SupportedProtocolVersion] = match v {
        Versions::Both => &[&rustls::version::TLS13, &rustls::version::TLS12],
        Versions::Tls12Only => &[&rustls::version::TLS12],
        Versions::Tls13Only => &[&rustls::version::TLS13],
    };
    let cfg = ClientConfig::builder_with_provider(Arc::clone(&p))
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(p)))
        .with_no_client_auth();
    Arc::new(cfg)
}

/// A TLS connection to `addr`, sending `sni` (none for `None`: the name is an IP).
pub async fn tls_connect(
    addr: SocketAddr,
    sni: Option<&str>,
    v: Versions,
) -> io::Result<TlsStream<TcpStream>> {
    let name = match sni {
        Some(s) => ServerName::try_from(s.to_string()).map_err(io::Error::other)?,
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let tcp = TcpStream::connect(addr).await?;
    let fut = TlsConnector::from(client_config(v)).connect(name, tcp);
    tokio::time::timeout(std::time::Duration::from_secs(5), fut)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

/// [`tls_connect`] offering `alpn` (no SNI, both TLS versions).
pub async fn tls_connect_alpn(
    addr: SocketAddr,
    alpn: &[&[u8]],
) -> io::Result<TlsStream<TcpStream>> {
    let mut cfg = (*client_config(Versions::Both)).clone();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::IpAddress(addr.ip().into());
    let fut = TlsConnector::from(Arc::new(cfg)).connect(name, tcp);
    tokio::time::timeout(std::time::Duration::from_secs(5), fut)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

/// The leaf certificate the server presented.
pub fn peer_leaf(s: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    s.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("the server sent a certificate")
        .clone()
        .into_owned()
}
