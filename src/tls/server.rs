//! TLS termination on https and tls listeners: the rustls server config of a listener,
//! SNI certificate selection, and the TLS facts of an accepted connection.
//!
//! Build one config per listener per snapshot (not per connection): it holds the
//! listener's certificates and its session-ticket keys.

use std::sync::Arc;

use rustls::crypto::aws_lc_rs::Ticketer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CipherSuite, HandshakeKind, ProtocolVersion, ServerConfig, ServerConnection};

use crate::snapshot::{Certificate, Listener, ListenerProtocol, TlsPolicy};
use crate::tls::certs::dns_name_matches;
use crate::tls::client::crypto_provider;

/// The rustls server config of one https/tls listener.
///
/// SNI chooses among the listener's certificates by their DNS names (case-insensitive;
/// an exact name first, then a `*.` wildcard, each in the listener's order; no SNI or
/// no match: the first certificate). `tls_policy` tls12 allows TLS 1.2 and 1.3, tls13
/// only 1.3. https listeners offer ALPN `http/1.1` (a client that offers ALPN without
/// it is refused, as RFC 7301 asks); tls listeners negotiate no ALPN. Session
/// resumption uses stateless tickets (TLS 1.2 and 1.3) and a session-ID cache (TLS 1.2
/// clients without ticket support); the ticket keys belong to this config, so a
/// reload starts fresh sessions. No client authentication, no 0-RTT.
pub fn server_config(
    listener: &Listener,
    certificates: &[Certificate],
) -> Result<Arc<ServerConfig>, String> {
    let resolver = SniResolver::new(listener, certificates)?;
    let versions: &[&'static rustls::SupportedProtocolVersion] = match listener.tls_policy {
        TlsPolicy::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsPolicy::Tls13 => &[&rustls::version::TLS13],
    };
    let mut config = ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(versions)
        .map_err(|e| format!("listener {}: TLS settings rejected: {e}", listener.name))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.ticketer = Ticketer::new().map_err(|e| {
        format!(
            "listener {}: cannot create session-ticket keys: {e}",
            listener.name
        )
    })?;
    if listener.protocol == ListenerProtocol::Https {
        // HTTP/1.1 and 1.0 (curl --http1.0 offers only `http/1.0`); a client that
        // offers ALPN with neither fails the handshake (no h2 here).
        config.alpn_protocols = vec![b"http/1.1".to_vec(), b"http/1.0".to_vec()];
    }
    Ok(Arc::new(config))
}

/// Chooses a listener's certificate from the SNI name of a ClientHello (see
/// [`server_config`]). It records nothing: the choice depends only on the SNI name, so
/// [`tls_info`] repeats it to name the certificate a connection got.
#[derive(Debug)]
pub struct SniResolver {
    /// In the listener's order; never empty.
    certs: Vec<ResolverCert>,
}

#[derive(Debug)]
struct ResolverCert {
    name: String,
    key: Arc<CertifiedKey>,
    dns_names: Vec<String>,
}

impl SniResolver {
    /// The resolver for `listener`'s certificates, which index `certificates`. Errors
    /// when the listener names no certificate or an index is out of range.
    pub fn new(listener: &Listener, certificates: &[Certificate]) -> Result<Self, String> {
        let mut certs = Vec::with_capacity(listener.certificates.len());
        for id in &listener.certificates {
            let cert = certificates.get(id.0 as usize).ok_or_else(|| {
                format!(
                    "listener {}: certificate #{} does not exist",
                    listener.name, id.0
                )
            })?;
            certs.push(ResolverCert {
                name: cert.name.clone(),
                key: Arc::clone(&cert.loaded.certified_key),
                dns_names: cert.loaded.dns_names.clone(),
            });
        }
        if certs.is_empty() {
            return Err(format!(
                "listener {}: a {} listener needs at least one certificate",
                listener.name,
                listener.protocol.as_str()
            ));
        }
        Ok(Self { certs })
    }

    /// The name of the certificate chosen for `sni`, and whether `sni` matched one of
    /// its DNS names (false: the default, first, certificate).
    pub fn choose(&self, sni: Option<&str>) -> (&str, bool) {
        let certs = self.certs.iter().map(|c| (c, c.dns_names.as_slice()));
        let (cert, matched) = choose(certs, sni).expect("a resolver has a certificate");
        (&cert.name, matched)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let certs = self.certs.iter().map(|c| (c, c.dns_names.as_slice()));
        choose(certs, client_hello.server_name()).map(|(cert, _)| Arc::clone(&cert.key))
    }
}

/// The certificate for `sni` among `certs` (each with its DNS names, in the listener's
/// order): the first with an exact name, else the first with a matching `*.` wildcard,
/// else the first of all; and whether it matched. None only when `certs` is empty.
fn choose<'a, T>(
    mut certs: impl Iterator<Item = (T, &'a [String])> + Clone,
    sni: Option<&str>,
) -> Option<(T, bool)> {
    if let Some(sni) = sni {
        for wildcard in [false, true] {
            let found = certs.clone().find(|(_, names)| {
                names
                    .iter()
                    .any(|p| p.starts_with("*.") == wildcard && dns_name_matches(p, sni))
            });
            if let Some((cert, _)) = found {
                return Some((cert, true));
            }
        }
    }
    certs.next().map(|(cert, _)| (cert, false))
}

/// TLS facts of an accepted connection, for the access log and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsInfo {
    /// "TLSv1.2" or "TLSv1.3" ("-" before the handshake finished).
    pub protocol: &'static str,
    /// OpenSSL name as ALB logs it: "ECDHE-RSA-AES128-GCM-SHA256",
    /// "TLS_AES_128_GCM_SHA256" ("-" before the handshake finished).
    pub cipher: &'static str,
    /// The SNI host name the client sent (lower-cased), if any.
    pub sni: Option<String>,
    /// True when `sni` matched a DNS name of one of the listener's certificates (ALB
    /// logs `domain_name` as `-` otherwise).
    pub sni_matched: bool,
    /// Name of the certificate chosen for this connection; on a resumed session, the
    /// one the session was established with (resumption requires the same SNI name).
    pub cert_name: Option<String>,
    /// The session was resumed, so no certificate was sent (ALB logs `chosen_cert_arn`
    /// as `session-reused`).
    pub resumed: bool,
}

/// The TLS facts of `conn`, accepted with [`server_config`]`(listener, certificates)`.
/// The certificate is found again from the SNI name, as the resolver chose it.
pub fn tls_info(
    conn: &ServerConnection,
    listener: &Listener,
    certificates: &[Certificate],
) -> TlsInfo {
    let sni = conn.server_name();
    let certs = listener
        .certificates
        .iter()
        .filter_map(|id| certificates.get(id.0 as usize))
        .map(|c| (c, c.loaded.dns_names.as_slice()));
    let chosen = choose(certs, sni);
    TlsInfo {
        protocol: match conn.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "-",
        },
        cipher: conn
            .negotiated_cipher_suite()
            .map_or("-", |s| openssl_cipher_name(s.suite())),
        sni: sni.map(str::to_owned),
        sni_matched: chosen.is_some_and(|(_, matched)| matched),
        cert_name: chosen.map(|(cert, _)| cert.name.clone()),
        resumed: conn.handshake_kind() == Some(HandshakeKind::Resumed),
    }
}

/// The OpenSSL name of a cipher suite (what ALB logs); the IANA name for suites
/// rustls does not offer with aws-lc-rs.
pub fn openssl_cipher_name(suite: CipherSuite) -> &'static str {
    match suite {
        CipherSuite::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256",
        CipherSuite::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384",
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => {
            "ECDHE-ECDSA-CHACHA20-POLY1305"
        }
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305",
        other => other.as_str().unwrap_or("-"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Action, CertId, DesyncMode, Forward, GroupId, ListenerId, XffMode};
    use crate::tls::certs::load_cert;
    use rcgen::{CertificateParams, KeyPair, SignatureAlgorithm};
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    const P256: &SignatureAlgorithm = &rcgen::PKCS_ECDSA_P256_SHA256;

    /// Certificates generated into a temporary directory and loaded as the snapshot
    /// loads them; `ders[i]` is the leaf DER of `certs[i]`.
    struct Certs {
        certs: Vec<Certificate>,
        ders: Vec<Vec<u8>>,
        _dir: tempfile::TempDir,
    }

    fn make_certs(specs: &[(&str, &[&str], &'static SignatureAlgorithm)]) -> Certs {
        crate::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let (mut certs, mut ders) = (Vec::new(), Vec::new());
        for (name, sans, alg) in specs {
            let key = KeyPair::generate_for(alg).unwrap();
            let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
            let cert = CertificateParams::new(sans)
                .unwrap()
                .self_signed(&key)
                .unwrap();
            let cert_path = dir.path().join(format!("{name}.crt"));
            let key_path = dir.path().join(format!("{name}.key"));
            std::fs::write(&cert_path, cert.pem()).unwrap();
            std::fs::write(&key_path, key.serialize_pem()).unwrap();
            let loaded = load_cert(&cert_path, &key_path).unwrap();
            ders.push(cert.der().to_vec());
            certs.push(Certificate {
                name: name.to_string(),
                cert_path,
                key_path,
                loaded,
            });
        }
        Certs {
            certs,
            ders,
            _dir: dir,
        }
    }

    fn listener(protocol: ListenerProtocol, certs: &[u32], tls_policy: TlsPolicy) -> Listener {
        Listener {
            id: ListenerId(0),
            name: "test".into(),
            protocol,
            bind: "127.0.0.1:0".parse().unwrap(),
            bind_at: Default::default(),
            allow: Vec::new(),
            certificates: certs.iter().map(|&i| CertId(i)).collect(),
            tls_policy,
            idle_timeout: Duration::from_secs(60),
            client_keep_alive: Duration::from_secs(3600),
            header_timeout: Duration::from_secs(10),
            xff: XffMode::Append,
            desync_mitigation: DesyncMode::Defensive,
            rules: Vec::new(),
            table: crate::router::table::RuleTable::build(&[]),
            default_action: Action::Forward(Forward {
                groups: vec![(GroupId(0), 1)],
                stickiness: None,
            }),
        }
    }

    /// A test client that accepts any certificate (checking handshake signatures).
    #[derive(Debug)]
    struct AnyCert(rustls::crypto::WebPkiSupportedAlgorithms);

    impl ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_schemes()
        }
    }

    /// A client config limited to `versions` and (if not empty) `suites`, offering `alpn`.
    fn client(
        versions: &[&'static rustls::SupportedProtocolVersion],
        suites: &[CipherSuite],
        alpn: &[&str],
    ) -> Arc<ClientConfig> {
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        if !suites.is_empty() {
            provider
                .cipher_suites
                .retain(|s| suites.contains(&s.suite()));
        }
        let algorithms = provider.signature_verification_algorithms;
        let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(versions)
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(algorithms)))
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Arc::new(config)
    }

    fn any_client() -> Arc<ClientConfig> {
        client(rustls::DEFAULT_VERSIONS, &[], &[])
    }

    /// What the client saw of a completed handshake.
    #[derive(Debug)]
    struct ClientView {
        leaf: Vec<u8>,
        alpn: Option<Vec<u8>>,
    }

    /// One connection over loopback to a server using `server_config(listener, certs)`;
    /// `sni` None connects by IP (no SNI sent). The server answers "ok" so that the
    /// client also reads TLS 1.3 session tickets.
    async fn connect(
        listener: &Listener,
        certs: &Certs,
        client_config: Arc<ClientConfig>,
        sni: Option<&str>,
    ) -> Result<(ClientView, TlsInfo), String> {
        let config = server_config(listener, &certs.certs)?;
        let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = socket.accept().await.unwrap();
            let mut tls = tokio_rustls::TlsAcceptor::from(config)
                .accept(tcp)
                .await
                .map_err(|e| format!("server: {e}"))?;
            tls.write_all(b"ok").await.unwrap();
            tls.shutdown().await.unwrap();
            Ok::<_, String>(tls)
        });
        let name = match sni {
            Some(sni) => ServerName::try_from(sni.to_string()).unwrap(),
            None => ServerName::IpAddress(addr.ip().into()),
        };
        let client = async {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let mut tls = tokio_rustls::TlsConnector::from(client_config)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("client: {e}"))?;
            let mut reply = Vec::new();
            tls.read_to_end(&mut reply).await.unwrap();
            assert_eq!(reply, b"ok");
            let conn = tls.get_ref().1;
            Ok::<_, String>(ClientView {
                leaf: conn
                    .peer_certificates()
                    .map_or(Vec::new(), |c| c[0].to_vec()),
                alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            })
        };
        let timeout = Duration::from_secs(10);
        let client_result = tokio::time::timeout(timeout, client).await.unwrap();
        let server_result = tokio::time::timeout(timeout, server)
            .await
            .unwrap()
            .unwrap();
        let view = client_result?;
        let tls = server_result?;
        Ok((view, tls_info(tls.get_ref().1, listener, &certs.certs)))
    }

    /// default (listed first), wildcard *.example.com (second), exact api.example.com
    /// (third), each found by SNI, falling back to the first.
    #[tokio::test]
    async fn sni_chooses_exact_then_wildcard_then_first() {
        let certs = make_certs(&[
            ("default", &["default.example.net"], P256),
            ("wild", &["*.example.com"], P256),
            ("exact", &["api.example.com", "other.test"], P256),
        ]);
        let l = listener(ListenerProtocol::Https, &[0, 1, 2], TlsPolicy::Tls12);
        let cases: [(Option<&str>, usize, bool); 8] = [
            (Some("api.example.com"), 2, true),
            (Some("API.Example.COM"), 2, true),
            (Some("other.test"), 2, true),
            (Some("www.example.com"), 1, true),
            (Some("default.example.net"), 0, true),
            (Some("a.b.example.com"), 0, false),
            (Some("unknown.org"), 0, false),
            (None, 0, false),
        ];
        for (sni, want, matched) in cases {
            let (view, info) = connect(&l, &certs, any_client(), sni).await.unwrap();
            assert_eq!(view.leaf, certs.ders[want], "SNI {sni:?}");
            assert_eq!(
                info.cert_name.as_deref(),
                Some(certs.certs[want].name.as_str())
            );
            assert_eq!(info.sni, sni.map(|s| s.to_ascii_lowercase()));
            assert_eq!(info.sni_matched, matched, "SNI {sni:?}");
        }

        // The listener's order decides between two certificates with the same name.
        let l = listener(ListenerProtocol::Tls, &[1, 2, 0], TlsPolicy::Tls12);
        let (view, info) = connect(&l, &certs, any_client(), Some("unknown.org"))
            .await
            .unwrap();
        assert_eq!(view.leaf, certs.ders[1]);
        assert_eq!(info.cert_name.as_deref(), Some("wild"));
    }

    #[test]
    fn resolver_choice_without_a_handshake() {
        let certs = make_certs(&[
            ("a", &["*.example.com"], P256),
            ("b", &["*.example.com", "www.example.com"], P256),
            ("c", &["www.example.com"], P256),
        ]);
        let resolver = SniResolver::new(
            &listener(ListenerProtocol::Https, &[0, 1, 2], TlsPolicy::Tls12),
            &certs.certs,
        )
        .unwrap();
        assert_eq!(resolver.choose(Some("www.example.com")), ("b", true));
        assert_eq!(resolver.choose(Some("www.example.com.")), ("b", true));
        assert_eq!(resolver.choose(Some("mail.example.com")), ("a", true));
        assert_eq!(resolver.choose(Some("example.com")), ("a", false));
        assert_eq!(resolver.choose(None), ("a", false));
        assert!(format!("{resolver:?}").contains("www.example.com"));
    }

    #[test]
    fn listeners_without_usable_certificates_are_errors() {
        let certs = make_certs(&[("a", &["a.test"], P256)]);
        let none = listener(ListenerProtocol::Tls, &[], TlsPolicy::Tls12);
        let err = server_config(&none, &certs.certs).unwrap_err();
        assert!(err.contains("at least one certificate"), "{err}");
        let missing = listener(ListenerProtocol::Https, &[0, 7], TlsPolicy::Tls12);
        let err = server_config(&missing, &certs.certs).unwrap_err();
        assert!(err.contains("certificate #7"), "{err}");
    }

    #[tokio::test]
    async fn tls13_policy_refuses_tls12_and_tls12_policy_accepts_both() {
        let certs = make_certs(&[("site", &["site.test"], P256)]);
        let tls12_only = || client(&[&rustls::version::TLS12], &[], &[]);
        let tls13_only = || client(&[&rustls::version::TLS13], &[], &[]);
        let sni = Some("site.test");

        let strict = listener(ListenerProtocol::Https, &[0], TlsPolicy::Tls13);
        let err = connect(&strict, &certs, tls12_only(), sni)
            .await
            .unwrap_err();
        assert!(err.contains("client:"), "{err}");
        let (_, info) = connect(&strict, &certs, tls13_only(), sni).await.unwrap();
        assert_eq!(info.protocol, "TLSv1.3");

        let lenient = listener(ListenerProtocol::Https, &[0], TlsPolicy::Tls12);
        let (_, info) = connect(&lenient, &certs, tls12_only(), sni).await.unwrap();
        assert_eq!(info.protocol, "TLSv1.2");
        let (_, info) = connect(&lenient, &certs, tls13_only(), sni).await.unwrap();
        assert_eq!(info.protocol, "TLSv1.3");
        let (_, info) = connect(&lenient, &certs, any_client(), sni).await.unwrap();
        assert_eq!(info.protocol, "TLSv1.3");
    }

    #[tokio::test]
    async fn alpn_http11_on_https_listeners_only() {
        let certs = make_certs(&[("site", &["site.test"], P256)]);
        let offer = || client(rustls::DEFAULT_VERSIONS, &[], &["h2", "http/1.1"]);
        let sni = Some("site.test");

        let https = listener(ListenerProtocol::Https, &[0], TlsPolicy::Tls12);
        let (view, _) = connect(&https, &certs, offer(), sni).await.unwrap();
        assert_eq!(view.alpn.as_deref(), Some(&b"http/1.1"[..]));
        let (view, _) = connect(&https, &certs, any_client(), sni).await.unwrap();
        assert_eq!(view.alpn, None);
        // ALPN offered without http/1.1 (RFC 7301: refused).
        let h2_only = client(rustls::DEFAULT_VERSIONS, &[], &["h2"]);
        let err = connect(&https, &certs, h2_only, sni).await.unwrap_err();
        assert!(err.contains("NoApplicationProtocol"), "{err}");

        let tls = listener(ListenerProtocol::Tls, &[0], TlsPolicy::Tls12);
        let (view, _) = connect(&tls, &certs, offer(), sni).await.unwrap();
        assert_eq!(view.alpn, None);
        assert!(
            server_config(&tls, &certs.certs)
                .unwrap()
                .alpn_protocols
                .is_empty()
        );
    }

    #[tokio::test]
    async fn tls_info_reports_protocol_cipher_sni_and_certificate() {
        let rsa = &rcgen::PKCS_RSA_SHA256;
        let certs = make_certs(&[("ec", &["ec.test"], P256), ("rsa", &["rsa.test"], rsa)]);
        let l = listener(ListenerProtocol::Https, &[0, 1], TlsPolicy::Tls12);
        use CipherSuite as S;
        let cases = [
            (
                "ec.test",
                S::TLS13_AES_128_GCM_SHA256,
                "TLS_AES_128_GCM_SHA256",
            ),
            (
                "rsa.test",
                S::TLS13_AES_256_GCM_SHA384,
                "TLS_AES_256_GCM_SHA384",
            ),
            (
                "ec.test",
                S::TLS13_CHACHA20_POLY1305_SHA256,
                "TLS_CHACHA20_POLY1305_SHA256",
            ),
            (
                "rsa.test",
                S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                "ECDHE-RSA-AES128-GCM-SHA256",
            ),
            (
                "ec.test",
                S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                "ECDHE-ECDSA-AES256-GCM-SHA384",
            ),
            (
                "ec.test",
                S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                "ECDHE-ECDSA-CHACHA20-POLY1305",
            ),
        ];
        for (sni, suite, cipher) in cases {
            // A client offering one suite negotiates its protocol version.
            let config = client(rustls::DEFAULT_VERSIONS, &[suite], &[]);
            let (_, info) = connect(&l, &certs, config, Some(sni)).await.unwrap();
            let protocol = if cipher.starts_with("TLS_") {
                "TLSv1.3"
            } else {
                "TLSv1.2"
            };
            let cert = sni.strip_suffix(".test").unwrap();
            let want = TlsInfo {
                protocol,
                cipher,
                sni: Some(sni.to_string()),
                sni_matched: true,
                cert_name: Some(cert.to_string()),
                resumed: false,
            };
            assert_eq!(info, want);
        }
    }

    #[tokio::test]
    async fn sessions_resume_and_keep_their_certificate_name() {
        let certs = make_certs(&[("a", &["a.test"], P256), ("b", &["b.test"], P256)]);
        let l = listener(ListenerProtocol::Https, &[0, 1], TlsPolicy::Tls12);
        for versions in [&[&rustls::version::TLS13], &[&rustls::version::TLS12]] {
            // One server config for both connections, as a listener keeps it.
            let config = client(versions, &[], &[]);
            let shared = server_config(&l, &certs.certs).unwrap();
            let mut infos = Vec::new();
            for _ in 0..2 {
                let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = socket.local_addr().unwrap();
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&shared));
                let server = tokio::spawn(async move {
                    let (tcp, _) = socket.accept().await.unwrap();
                    let mut tls = acceptor.accept(tcp).await.unwrap();
                    tls.write_all(b"ok").await.unwrap();
                    tls.shutdown().await.unwrap();
                    tls
                });
                let tcp = TcpStream::connect(addr).await.unwrap();
                let name = ServerName::try_from("b.test").unwrap();
                let connector = tokio_rustls::TlsConnector::from(Arc::clone(&config));
                let mut tls = connector.connect(name, tcp).await.unwrap();
                tls.read_to_end(&mut Vec::new()).await.unwrap();
                let server_tls = server.await.unwrap();
                infos.push(tls_info(server_tls.get_ref().1, &l, &certs.certs));
            }
            assert!(!infos[0].resumed, "{versions:?}");
            assert!(infos[1].resumed, "{versions:?}");
            for info in &infos {
                assert_eq!(info.cert_name.as_deref(), Some("b"));
            }
        }
    }

    #[test]
    fn cipher_names_cover_every_provider_suite() {
        for suite in rustls::crypto::aws_lc_rs::ALL_CIPHER_SUITES {
            let name = openssl_cipher_name(suite.suite());
            assert!(
                name.starts_with("TLS_AES_")
                    || name.starts_with("TLS_CHACHA20_")
                    || name.starts_with("ECDHE-"),
                "{name}"
            );
        }
        assert_eq!(
            openssl_cipher_name(CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384),
            "ECDHE-RSA-AES256-GCM-SHA384"
        );
        assert_eq!(
            openssl_cipher_name(CipherSuite::TLS_RSA_WITH_AES_128_GCM_SHA256),
            "TLS_RSA_WITH_AES_128_GCM_SHA256"
        );
    }
}
