//! TLS towards targets (https and tls target groups, and their health checks).
//!
//! Build one config per target group per snapshot (not per connection): it holds the
//! trust anchors and the client session cache, so connections to a target resume.

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The PEM bundle of the system trust store (Debian/Ubuntu `ca-certificates`).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Largest CA file read.
const MAX_CA_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// The process's rustls crypto provider: the installed default, else aws-lc-rs.
pub(crate) fn crypto_provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// The rustls client config for connections to a target group's targets (TLS 1.2 and
/// 1.3, no ALPN: HTTP/1.1 to targets, no client certificate).
///
/// `verify_tls` false (the ALB default) accepts any certificate chain and name, but
/// still checks the handshake signature against the certificate's key. `verify_tls`
/// true verifies the chain against `ca_file` when given (every certificate in it is a
/// trust anchor), else against the system trust store ([`SYSTEM_CA_BUNDLE`]), and the
/// name against [`server_name`]. `ca_file` is ignored when `verify_tls` is false.
/// Errors (an unreadable or empty CA file) are one line naming the file.
pub fn client_config(
    verify_tls: bool,
    ca_file: Option<&Path>,
) -> Result<Arc<ClientConfig>, String> {
    let provider = crypto_provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS client settings rejected: {e}"))?;
    let config = if verify_tls {
        let roots = match ca_file {
            Some(path) => ca_file_roots(path)?,
            None => system_roots(Path::new(SYSTEM_CA_BUNDLE))?,
        };
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| format!("cannot build the certificate verifier: {e}"))?;
        builder.with_webpki_verifier(verifier).with_no_client_auth()
    } else {
        let verifier = AnyServerCert {
            algorithms: provider.signature_verification_algorithms,
            refuse: None,
        };
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// The name to present to (SNI) and verify for a target: the host part of
/// `configured_address` when it is `HOST:PORT` with a DNS host name, else the
/// resolved IP of `addr` (no SNI is sent for an IP).
pub fn server_name(configured_address: &str, addr: SocketAddr) -> ServerName<'static> {
    let ip = ServerName::IpAddress(addr.ip().into());
    if configured_address.parse::<SocketAddr>().is_ok() {
        return ip;
    }
    let host = match configured_address.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => configured_address,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    match ServerName::try_from(host) {
        Ok(ServerName::DnsName(name)) => ServerName::DnsName(name.to_owned()),
        _ => ip,
    }
}

/// A client config whose every handshake fails with `reason`: what a group gets
/// when its real config cannot be built, so its targets are never spoken to in
/// plain text or without the verification asked for.
/// (`None` only if the provider offers no protocol version, which aws-lc-rs does.)
pub fn refusing_config(reason: &str) -> Option<Arc<ClientConfig>> {
    let provider = crypto_provider();
    let verifier = AnyServerCert {
        algorithms: provider.signature_verification_algorithms,
        refuse: Some(reason.to_owned()),
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?;
    Some(Arc::new(
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth(),
    ))
}

/// `verify_tls: false`: any chain and name, but a valid handshake signature. With
/// `refuse`, nothing at all (see [`refusing_config`]).
#[derive(Debug)]
struct AnyServerCert {
    algorithms: WebPkiSupportedAlgorithms,
    refuse: Option<String>,
}

impl AnyServerCert {
    fn refused(&self) -> Result<(), rustls::Error> {
        match &self.refuse {
            Some(reason) => Err(rustls::Error::General(reason.clone())),
            None => Ok(()),
        }
    }
}

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.refused()?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.refused()?;
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.refused()?;
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Every certificate in a configured CA file must be a usable trust anchor.
fn ca_file_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for (index, der) in read_pem_certs(path)?.into_iter().enumerate() {
        roots.add(der).map_err(|e| {
            format!(
                "CA file {}: certificate {} is not usable as a trust anchor: {e}",
                path.display(),
                index + 1
            )
        })?;
    }
    Ok(roots)
}

/// The system bundle: certificates webpki cannot use are skipped, as other TLS
/// stacks do; at least one must remain.
fn system_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(system_trust_anchors(path)?);
    Ok(roots)
}

/// The usable CA certificates of the system bundle at `path` (normally
/// [`SYSTEM_CA_BUNDLE`]), as DER: the trust store of target TLS and of the alert
/// relay when no `ca_file` is given. Certificates webpki cannot use as a trust
/// anchor are skipped; at least one must remain.
pub(crate) fn system_trust_anchors(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let usable: Vec<CertificateDer<'static>> = read_pem_certs(path)?
        .into_iter()
        .filter(|der| webpki::anchor_from_trusted_cert(der).is_ok())
        .collect();
    if usable.is_empty() {
        return Err(format!(
            "system trust store {} holds no usable CA certificate",
            path.display()
        ));
    }
    Ok(usable)
}

fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let read_err = |e: std::io::Error| format!("cannot read CA file {}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_CA_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_CA_FILE_BYTES {
        return Err(format!(
            "CA file {} is larger than {} MiB",
            path.display(),
            MAX_CA_FILE_BYTES / (1024 * 1024)
        ));
    }
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("CA file {} is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "CA file {} holds no PEM CERTIFICATE block",
            path.display()
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls::ServerConfig;
    use rustls::pki_types::PrivateKeyDer;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A certificate chain and key for a test server.
    struct Server {
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        /// PEM of the certificate a client should trust: the leaf itself when
        /// self-signed, else the issuing CA.
        trust_pem: String,
    }

    fn self_signed(sans: &[&str]) -> Server {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let cert = CertificateParams::new(sans)
            .unwrap()
            .self_signed(&key)
            .unwrap();
        Server {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            trust_pem: cert.pem(),
        }
    }

    fn ca_issued(ca_name: &str, sans: &[&str]) -> Server {
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        (ca_params.distinguished_name).push(rcgen::DnType::CommonName, ca_name);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let leaf = CertificateParams::new(sans)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        Server {
            chain: vec![leaf.der().clone(), ca.der().clone()],
            key: PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            trust_pem: ca.pem(),
        }
    }

    fn write_temp(contents: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), contents).unwrap();
        file
    }

    /// Connects with `config` to a loopback TLS server presenting `server`, by the name
    /// `server_name(configured, addr)`; the server echoes one line. Returns the ALPN
    /// protocol the server saw.
    async fn connect(
        server: &Server,
        config: Arc<ClientConfig>,
        configured: &str,
    ) -> Result<Option<Vec<u8>>, String> {
        crate::install_crypto_provider();
        let mut server_config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(server.chain.clone(), server.key.clone_key())
            .unwrap();
        server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
        let server_task = tokio::spawn(async move {
            let (tcp, _) = socket.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
            let mut line = [0; 5];
            tls.read_exact(&mut line).await.unwrap();
            tls.write_all(&line).await.unwrap();
            tls.shutdown().await.unwrap();
            Ok::<_, String>(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
        });
        let client = async {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = super::server_name(configured, addr);
            let mut tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            tls.write_all(b"ping\n").await.unwrap();
            let mut echo = Vec::new();
            tls.read_to_end(&mut echo).await.unwrap();
            assert_eq!(echo, b"ping\n");
            Ok::<_, String>(())
        };
        let timeout = Duration::from_secs(10);
        let client_result = tokio::time::timeout(timeout, client).await.unwrap();
        let server_result = tokio::time::timeout(timeout, server_task).await.unwrap();
        client_result?;
        server_result.unwrap()
    }

    #[tokio::test]
    async fn verify_off_accepts_any_certificate_and_name() {
        let server = self_signed(&["target.internal"]);
        let config = client_config(false, None).unwrap();
        for configured in ["127.0.0.1:8443", "target.internal:8443", "elsewhere.test:1"] {
            let alpn = connect(&server, Arc::clone(&config), configured).await;
            assert_eq!(alpn, Ok(None), "{configured}");
        }
        // ca_file is ignored without verify_tls.
        let config = client_config(false, Some(Path::new("/nonexistent/ca.pem"))).unwrap();
        assert!(connect(&server, config, "x.test:1").await.is_ok());
    }

    #[tokio::test]
    async fn verify_on_with_ca_file_checks_chain_and_name() {
        for server in [
            self_signed(&["target.internal", "127.0.0.1"]),
            ca_issued("Test CA", &["target.internal", "127.0.0.1"]),
        ] {
            let ca = write_temp(&server.trust_pem);
            let config = client_config(true, Some(ca.path())).unwrap();
            assert!(config.alpn_protocols.is_empty());

            let by_name = connect(&server, Arc::clone(&config), "target.internal:8443").await;
            assert_eq!(by_name, Ok(None));
            let by_ip = connect(&server, Arc::clone(&config), "127.0.0.1:8443").await;
            assert_eq!(by_ip, Ok(None));

            let err = connect(&server, Arc::clone(&config), "other.internal:8443")
                .await
                .unwrap_err();
            assert!(err.contains("not valid for name"), "{err}");
        }
    }

    #[tokio::test]
    async fn verify_on_refuses_another_ca_and_the_system_store() {
        let server = ca_issued("Test CA", &["target.internal"]);
        let other = write_temp(&ca_issued("Other CA", &["target.internal"]).trust_pem);
        let config = client_config(true, Some(other.path())).unwrap();
        let err = connect(&server, config, "target.internal:443")
            .await
            .unwrap_err();
        assert!(err.contains("UnknownIssuer"), "{err}");
        // Same CA name, different key: the signature does not verify.
        let impostor = write_temp(&ca_issued("Test CA", &["target.internal"]).trust_pem);
        let config = client_config(true, Some(impostor.path())).unwrap();
        let err = connect(&server, config, "target.internal:443")
            .await
            .unwrap_err();
        assert!(err.contains("BadSignature"), "{err}");

        if Path::new(SYSTEM_CA_BUNDLE).exists() {
            let config = client_config(true, None).unwrap();
            let err = connect(&server, config, "target.internal:443")
                .await
                .unwrap_err();
            assert!(err.contains("UnknownIssuer"), "{err}");
        }
    }

    #[test]
    fn ca_file_errors_name_the_file() {
        crate::install_crypto_provider();
        let err = client_config(true, Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        let empty = write_temp("no certificates here\n");
        let err = client_config(true, Some(empty.path())).unwrap_err();
        assert!(err.contains("no PEM CERTIFICATE"), "{err}");
        let broken = write_temp("-----BEGIN CERTIFICATE-----\nAAAA\n");
        let err = client_config(true, Some(broken.path())).unwrap_err();
        assert!(err.contains("not valid PEM"), "{err}");
        let garbage = write_temp("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        let err = client_config(true, Some(garbage.path())).unwrap_err();
        assert!(err.contains("certificate 1 is not usable"), "{err}");
        let err = system_roots(empty.path()).unwrap_err();
        assert!(err.contains("no PEM CERTIFICATE"), "{err}");
    }

    #[test]
    fn system_trust_anchors_skip_what_webpki_cannot_use() {
        let ca = ca_issued("Bundle CA", &["relay.internal"]).trust_pem;
        let mixed = write_temp(&format!(
            "{ca}-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        ));
        assert_eq!(system_trust_anchors(mixed.path()).unwrap().len(), 1);
        let garbage = write_temp("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        let err = system_trust_anchors(garbage.path()).unwrap_err();
        assert!(err.contains("no usable CA certificate"), "{err}");
    }

    #[test]
    fn server_names() {
        let v4: SocketAddr = "10.0.0.5:8443".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        let dns = |name: &str| ServerName::try_from(name.to_string()).unwrap();
        let ip = |addr: SocketAddr| ServerName::IpAddress(addr.ip().into());
        assert_eq!(server_name("10.0.0.5:8443", v4), ip(v4));
        assert_eq!(server_name("[2001:db8::1]:443", v6), ip(v6));
        assert_eq!(
            server_name("Backend.Internal:8443", v4),
            dns("Backend.Internal")
        );
        assert_eq!(
            server_name("backend.internal.:8443", v4),
            dns("backend.internal")
        );
        assert_eq!(server_name("localhost:80", v4), dns("localhost"));
        assert_eq!(server_name("bad_host!:80", v4), ip(v4));
        assert_eq!(server_name("", v6), ip(v6));
    }
}
