//! TLS certificate loading: PEM chain and key, key/leaf match, leaf DNS names for SNI.

use std::io::Read;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, DnsName, PrivateKeyDer};

/// Largest certificate or key file read (a long chain is a few tens of KiB).
const MAX_PEM_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// A certificate chain and private key loaded from PEM files, checked to match.
#[derive(Clone)]
pub struct LoadedCert {
    pub certified_key: Arc<CertifiedKey>,
    /// DNS names from the leaf certificate's subjectAltName (lower-cased; may include
    /// "*.example.com" wildcards); if no SAN DNS names, the subject CN when it looks like
    /// a host name.
    pub dns_names: Vec<String>,
}

impl std::fmt::Debug for LoadedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedCert")
            .field("chain_len", &self.certified_key.cert.len())
            .field("dns_names", &self.dns_names)
            .finish_non_exhaustive()
    }
}

/// Loads `cert_path` (PEM chain, leaf first) and `key_path` (PEM PKCS#8, PKCS#1 or SEC1
/// key) with the process default crypto provider (aws-lc-rs when none is installed) and
/// checks that the key matches the leaf certificate.
///
/// Errors are one human-readable line naming the file and what was expected.
pub fn load_cert(cert_path: &Path, key_path: &Path) -> Result<LoadedCert, String> {
    let cert_pem = read_pem_file(cert_path)?;
    let chain = parse_chain(&cert_pem, cert_path)?;
    let key_pem = read_pem_file(key_path)?;
    let key_der = parse_key(&key_pem, key_path)?;

    let leaf = chain.first().map_or(&[][..], |c| c.as_ref());
    let dns_names = leaf_dns_names(leaf).map_err(|e| {
        let why = match e {
            webpki::Error::UnsupportedCertVersion => "it is X.509 v1; re-issue it as v3".into(),
            other => other.to_string(),
        };
        format!(
            "the first certificate in {} is not a valid X.509 v3 certificate ({why})",
            cert_path.display()
        )
    })?;

    let fallback;
    let provider: &CryptoProvider = match CryptoProvider::get_default() {
        Some(installed) => installed,
        None => {
            fallback = rustls::crypto::aws_lc_rs::default_provider();
            &fallback
        }
    };
    let signing_key = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|_| {
            format!(
                "unsupported private key type in {} (expected an RSA, ECDSA P-256/P-384/P-521 \
                 or Ed25519 key)",
                key_path.display()
            )
        })?;

    let certified_key = CertifiedKey::new(chain, signing_key);
    match certified_key.keys_match() {
        Ok(()) => {}
        // The key cannot report its public half; rustls' own `from_der` accepts this.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(mismatch_message(&certified_key, cert_path, key_path));
        }
        Err(e) => {
            return Err(format!(
                "cannot check private key {} against certificate {}: {e}",
                key_path.display(),
                cert_path.display()
            ));
        }
    }

    Ok(LoadedCert {
        certified_key: Arc::new(certified_key),
        dns_names,
    })
}

/// SNI matching used by the listener resolver: true when `sni` (already lower-cased)
/// matches `pattern` exactly or as a single-label wildcard ("*.example.com" matches
/// "a.example.com" but not "example.com" nor "a.b.example.com"). ASCII case is ignored
/// and one trailing dot on `sni` is allowed.
pub fn dns_name_matches(pattern: &str, sni: &str) -> bool {
    let sni = sni.strip_suffix('.').unwrap_or(sni);
    if sni.is_empty() || sni.contains('*') || pattern.is_empty() {
        return false;
    }
    match pattern.strip_prefix("*.") {
        Some(suffix) => match sni.split_once('.') {
            Some((label, rest)) => {
                !suffix.is_empty() && !label.is_empty() && rest.eq_ignore_ascii_case(suffix)
            }
            None => false,
        },
        None => pattern.eq_ignore_ascii_case(sni),
    }
}

/// Reads a whole file of at most [`MAX_PEM_FILE_BYTES`].
fn read_pem_file(path: &Path) -> Result<Vec<u8>, String> {
    let read_err = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_PEM_FILE_BYTES {
        return Err(format!(
            "{} is larger than {} MiB; expected a PEM file",
            path.display(),
            MAX_PEM_FILE_BYTES / (1024 * 1024)
        ));
    }
    Ok(bytes)
}

fn parse_chain(pem_bytes: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut chain = Vec::new();
    for item in CertificateDer::pem_slice_iter(pem_bytes) {
        chain.push(item.map_err(|e| pem_message(&e, path))?);
    }
    if chain.is_empty() {
        return Err(no_cert_message(pem_bytes, path));
    }
    Ok(chain)
}

fn no_cert_message(pem_bytes: &[u8], path: &Path) -> String {
    let hint = if PrivateKeyDer::from_pem_slice(pem_bytes).is_ok() {
        " (it holds a private key: are the cert and key paths swapped?)"
    } else if pem_bytes.first() == Some(&0x30) {
        " (it looks like binary DER: convert it with `openssl x509 -inform der -in FILE -out FILE.pem`)"
    } else {
        ""
    };
    format!("{} holds no PEM CERTIFICATE block{hint}", path.display())
}

fn parse_key(pem_bytes: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    match PrivateKeyDer::from_pem_slice(pem_bytes) {
        Ok(key) => Ok(key),
        Err(_) if is_encrypted_key(pem_bytes) => Err(format!(
            "private key {} is encrypted; an unencrypted key is needed (decrypt it with \
             `openssl pkey -in FILE -out NEW_FILE`)",
            path.display()
        )),
        Err(pem::Error::NoItemsFound) => {
            let hint = if CertificateDer::from_pem_slice(pem_bytes).is_ok() {
                " (it holds a certificate: are the cert and key paths swapped?)"
            } else {
                " (expected a PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block)"
            };
            Err(format!("{} holds no PEM private key{hint}", path.display()))
        }
        Err(e) => Err(pem_message(&e, path)),
    }
}

fn is_encrypted_key(pem_bytes: &[u8]) -> bool {
    let contains = |needle: &[u8]| pem_bytes.windows(needle.len()).any(|w| w == needle);
    contains(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") || contains(b"Proc-Type: 4,ENCRYPTED")
}

fn pem_message(err: &pem::Error, path: &Path) -> String {
    let detail = match err {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "a PEM block is not closed (expected {:?})",
            String::from_utf8_lossy(end_marker)
        ),
        pem::Error::IllegalSectionStart { line } => format!(
            "malformed PEM BEGIN line {:?}",
            String::from_utf8_lossy(line)
        ),
        pem::Error::Base64Decode(e) => format!("bad base64 inside a PEM block ({e})"),
        other => other.to_string(),
    };
    format!("{} is not valid PEM: {detail}", path.display())
}

fn mismatch_message(certified_key: &CertifiedKey, cert_path: &Path, key_path: &Path) -> String {
    let key_spki = certified_key.key.public_key();
    let later = certified_key.cert.iter().skip(1).position(|cert| {
        let Ok(parsed) = webpki::EndEntityCert::try_from(cert) else {
            return false;
        };
        key_spki
            .as_ref()
            .is_some_and(|spki| spki.as_ref() == parsed.subject_public_key_info().as_ref())
    });
    let hint = match later {
        Some(i) => format!(
            " (it matches certificate #{} of the chain; the leaf certificate must come first)",
            i + 2
        ),
        None => String::new(),
    };
    format!(
        "private key {} does not match certificate {}{hint}",
        key_path.display(),
        cert_path.display()
    )
}

/// DNS names of a DER leaf certificate: SAN dNSNames (validated by webpki, wildcards
/// kept), else the last subject CN when it looks like a host name. Lower-cased, deduped.
fn leaf_dns_names(cert_der: &[u8]) -> Result<Vec<String>, webpki::Error> {
    let cert_der = CertificateDer::from(cert_der);
    let cert = webpki::EndEntityCert::try_from(&cert_der)?;
    let mut names = Vec::new();
    for name in cert.valid_dns_names() {
        push_name(&mut names, name);
    }
    if names.is_empty() {
        let cn = subject_common_name(cert.subject()).filter(|cn| looks_like_host_name(cn));
        if let Some(cn) = cn {
            push_name(&mut names, &cn);
        }
    }
    Ok(names)
}

fn push_name(names: &mut Vec<String>, name: &str) {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if !name.is_empty() && !names.contains(&name) {
        names.push(name);
    }
}

/// True for "host.example.com", "localhost" or "*.example.com"; false for IP addresses
/// and free text such as "My Company Ltd".
fn looks_like_host_name(name: &str) -> bool {
    let base = name.strip_prefix("*.").unwrap_or(name);
    let base = base.strip_suffix('.').unwrap_or(base);
    !base.contains('*') && base.parse::<IpAddr>().is_err() && DnsName::try_from(base).is_ok()
}

const TAG_OID: u8 = 0x06;
const TAG_UTF8_STRING: u8 = 0x0c;
const TAG_PRINTABLE_STRING: u8 = 0x13;
const TAG_T61_STRING: u8 = 0x14;
const TAG_IA5_STRING: u8 = 0x16;
const TAG_BMP_STRING: u8 = 0x1e;
const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
/// DER contents of OID 2.5.4.3 (id-at-commonName).
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// A minimal, bounds-checked DER reader: single-byte tags and definite lengths only.
/// Every read returns `None` on malformed or truncated input; nothing can panic.
struct Der<'a> {
    rest: &'a [u8],
}

impl<'a> Der<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// Reads one TLV, returning its tag and contents.
    fn read(&mut self) -> Option<(u8, &'a [u8])> {
        let (&tag, rest) = self.rest.split_first()?;
        if tag & 0x1f == 0x1f {
            return None; // high-tag-number form: not used by anything we read
        }
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 {
                return None; // indefinite length, or longer than any certificate
            }
            let (len_bytes, after) = rest.split_at_checked(count)?;
            rest = after;
            let len = len_bytes
                .iter()
                .fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
            usize::try_from(len).ok()?
        };
        let (value, after) = rest.split_at_checked(len)?;
        self.rest = after;
        Some((tag, value))
    }
}

/// The last commonName in a DER Name's contents (the RDNSequence without its outer
/// SEQUENCE header, as `webpki::Cert::subject` returns it). `None` when absent,
/// malformed or not decodable as text.
fn subject_common_name(rdn_sequence: &[u8]) -> Option<String> {
    let mut found = None;
    let mut rdns = Der::new(rdn_sequence);
    while !rdns.is_empty() {
        let (TAG_SET, set) = rdns.read()? else {
            return None;
        };
        let mut attributes = Der::new(set);
        while !attributes.is_empty() {
            let (TAG_SEQUENCE, attribute) = attributes.read()? else {
                return None;
            };
            let mut fields = Der::new(attribute);
            let (oid_tag, oid) = fields.read()?;
            let (value_tag, value) = fields.read()?;
            if oid_tag == TAG_OID && oid == OID_COMMON_NAME {
                found = directory_string(value_tag, value).or(found);
            }
        }
    }
    found
}

fn directory_string(tag: u8, value: &[u8]) -> Option<String> {
    match tag {
        TAG_UTF8_STRING | TAG_PRINTABLE_STRING | TAG_IA5_STRING => {
            std::str::from_utf8(value).ok().map(str::to_owned)
        }
        TAG_T61_STRING if value.is_ascii() => std::str::from_utf8(value).ok().map(str::to_owned),
        TAG_BMP_STRING if value.len() % 2 == 0 => {
            let units = value
                .chunks_exact(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair, SignatureAlgorithm};

    const P256: &SignatureAlgorithm = &rcgen::PKCS_ECDSA_P256_SHA256;

    fn params(sans: &[&str], cn: &str) -> CertificateParams {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
    }

    /// A self-signed certificate: [cert PEM, PKCS#8 key PEM].
    fn self_signed(sans: &[&str], cn: &str, alg: &'static SignatureAlgorithm) -> [String; 2] {
        let key = KeyPair::generate_for(alg).unwrap();
        let cert = params(sans, cn).self_signed(&key).unwrap();
        [cert.pem(), key.serialize_pem()]
    }

    fn der_of(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    fn pem_block(label: &str, der: &[u8]) -> String {
        const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = format!("-----BEGIN {label}-----");
        for (index, chunk) in der.chunks(3).enumerate() {
            if index % 16 == 0 {
                out.push('\n');
            }
            let n =
                (chunk.iter().enumerate()).fold(0, |n, (i, &b)| n | usize::from(b) << (16 - 8 * i));
            let sextets = (0..4).map(|i| char::from(B64[(n >> (18 - 6 * i)) & 63]));
            out.extend(sextets.take(chunk.len() + 1).chain("==".chars()).take(4));
        }
        out + &format!("\n-----END {label}-----\n")
    }

    /// PKCS#8 PrivateKeyInfo -> its inner privateKey (PKCS#1 for RSA, SEC1 for ECDSA).
    fn unwrap_pkcs8(key_pem: &str, label: &str) -> String {
        let der = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let mut fields = Der::new(Der::new(der.secret_der()).read().unwrap().1);
        fields.read().unwrap(); // version
        fields.read().unwrap(); // algorithm
        pem_block(label, fields.read().unwrap().1)
    }

    struct Dir(tempfile::TempDir);

    impl Dir {
        fn new() -> Self {
            Self(tempfile::tempdir().unwrap())
        }
        fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> std::path::PathBuf {
            let path = self.0.path().join(name);
            std::fs::write(&path, contents).unwrap();
            path
        }
        fn load(&self, cert: &str, key: &str) -> Result<LoadedCert, String> {
            load_cert(&self.write("site.crt", cert), &self.write("site.key", key))
        }
        fn names(&self, [cert, key]: [String; 2]) -> Vec<String> {
            self.load(&cert, &key).unwrap().dns_names
        }
    }

    #[test]
    fn good_pair_loads_with_exact_and_wildcard_names() {
        let sans = ["Example.COM", "*.example.com", "example.com", "192.0.2.1"];
        let [cert, key] = self_signed(&sans, "cn.example.net", P256);
        let loaded = Dir::new().load(&cert, &key).unwrap();
        assert_eq!(loaded.dns_names, ["example.com", "*.example.com"]);
        assert_eq!(loaded.certified_key.cert.len(), 1);
        assert!(format!("{loaded:?}").contains("*.example.com"));
    }

    #[test]
    fn key_types_rsa_ecdsa_ed25519_in_pkcs8_pkcs1_and_sec1() {
        let d = Dir::new();
        let (rsa, p384) = (&rcgen::PKCS_RSA_SHA256, &rcgen::PKCS_ECDSA_P384_SHA384);
        for alg in [rsa, P256, p384, &rcgen::PKCS_ED25519] {
            assert_eq!(d.names(self_signed(&["a.test"], "a", alg)), ["a.test"]);
        }
        for (alg, label) in [(rsa, "RSA PRIVATE KEY"), (P256, "EC PRIVATE KEY")] {
            let [cert, pkcs8] = self_signed(&["b.test"], "b", alg);
            let key = unwrap_pkcs8(&pkcs8, label);
            assert_eq!(d.names([cert, key]), ["b.test"], "{label}");
        }
    }

    #[test]
    fn chain_loads_leaf_first_and_wrong_order_is_explained() {
        let (ca_key, key) = (KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
        let mut ca_params = params(&[], "Example Test CA");
        ca_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = params(&["leaf.test"], "leaf")
            .signed_by(&key, &issuer)
            .unwrap();
        let (d, leaf, key) = (Dir::new(), leaf.pem(), key.serialize_pem());
        let loaded = d.load(&format!("{leaf}{ca}"), &key).unwrap();
        assert_eq!(loaded.certified_key.cert.len(), 2);
        assert_eq!(loaded.dns_names, ["leaf.test"]);
        let err = d.load(&format!("{ca}{leaf}"), &key).unwrap_err();
        let want = "does not match certificate";
        assert!(
            err.contains(want) && err.contains("(it matches certificate #2 of"),
            "{err}"
        );
    }

    #[test]
    fn common_name_fallback_only_for_host_names() {
        let d = Dir::new();
        for (cn, want) in [
            ("Legacy.Example.org", &["legacy.example.org"][..]),
            ("*.Wild.example.org", &["*.wild.example.org"]),
            ("localhost", &["localhost"]),
            ("My Company Ltd", &[]),
            ("10.1.2.3", &[]),
            ("", &[]),
        ] {
            assert_eq!(d.names(self_signed(&[], cn, P256)), want, "CN {cn:?}");
        }
        let san_and_cn = self_signed(&["san.example.org"], "cn.example.org", P256);
        assert_eq!(d.names(san_and_cn), ["san.example.org"]);
    }

    /// (cert file, key file, expected part of the error); `D/` is the test directory.
    #[rustfmt::skip]
    const ERROR_CASES: &[(&str, &str, &str)] = &[
        ("missing", "site.key", "cannot read D/missing: No such file or directory (os error 2)"),
        ("site.crt", "missing", "cannot read D/missing: No such file or directory (os error 2)"),
        ("", "site.key", "cannot read D/: Is a directory (os error 21)"),
        ("text", "site.key", "D/text holds no PEM CERTIFICATE block"),
        ("site.key", "site.crt", "D/site.key holds no PEM CERTIFICATE block (it holds a private key: are"),
        ("der.crt", "site.key", "D/der.crt holds no PEM CERTIFICATE block (it looks like binary DER"),
        ("site.crt", "site.crt", "D/site.crt holds no PEM private key (it holds a certificate: are"),
        ("site.crt", "text", "D/text holds no PEM private key (expected a PRIVATE KEY, RSA PRIVATE"),
        ("b64.crt", "site.key", "D/b64.crt is not valid PEM: bad base64 inside a PEM block"),
        ("open.crt", "site.key", "D/open.crt is not valid PEM: a PEM block is not closed"),
        ("x509.crt", "site.key", "the first certificate in D/x509.crt is not a valid X.509 v3 cert"),
        ("big.crt", "site.key", "D/big.crt is larger than 4 MiB; expected a PEM file"),
        ("site.crt", "other.key", "private key D/other.key does not match certificate D/site.crt"),
        ("site.crt", "junk.key", "unsupported private key type in D/junk.key (expected an RSA, ECDSA"),
        ("site.crt", "enc.key", "private key D/enc.key is encrypted; an unencrypted key is needed"),
    ];

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let d = Dir::new();
        let [cert, key] = self_signed(&["a.test"], "a", P256);
        let bad_b64 = "-----BEGIN CERTIFICATE-----\n@@@@\n-----END CERTIFICATE-----\n";
        #[rustfmt::skip]
        let files: [(&str, Vec<u8>); 11] = [
            ("site.crt", cert.clone().into()),
            ("site.key", key.into()),
            ("other.key", self_signed(&["b.test"], "b", P256)[1].clone().into()),
            ("text", "hello\n".into()),
            ("der.crt", der_of(&cert)),
            ("b64.crt", bad_b64.into()),
            ("open.crt", "-----BEGIN CERTIFICATE-----\nMIIB\n".into()),
            ("x509.crt", pem_block("CERTIFICATE", &[0x30, 3, 2, 1, 0]).into()),
            ("big.crt", vec![b'a'; 5 << 20]),
            ("junk.key", pem_block("PRIVATE KEY", &[0x30, 1, 0]).into()),
            ("enc.key", pem_block("ENCRYPTED PRIVATE KEY", &[0x30, 0]).into()),
        ];
        for (name, contents) in files {
            d.write(name, contents);
        }
        let dir_prefix = format!("{}/", d.0.path().display());
        for (cert, key, want) in ERROR_CASES {
            let err = load_cert(&d.0.path().join(cert), &d.0.path().join(key)).unwrap_err();
            let want = want.replace("D/", &dir_prefix);
            assert!(err.contains(&want), "{err:?} vs {want:?}");
            assert!(!err.contains('\n'), "{err:?}");
        }
    }

    #[rustfmt::skip]
    const MATCH_CASES: &[(&str, &str, bool)] = &[
        ("example.com", "example.com", true), ("example.com", "EXAMPLE.com", true),
        ("example.com", "example.com.", true), ("example.com", "www.example.com", false),
        ("www.example.com", "example.com", false), ("*.example.com", "a.example.com", true),
        ("*.example.com", "A.Example.COM", true), ("*.example.com", "example.com", false),
        ("*.example.com", "a.b.example.com", false), ("*.example.com", ".example.com", false),
        ("*.example.com", "aexample.com", false), ("*.example.com", "a.example.org", false),
        ("*.example.com", "*.example.com", false), ("*.", "a.", false), ("*", "a", false),
        ("", "", false), ("example.com", "", false), ("a*.example.com", "ab.example.com", false),
    ];

    #[test]
    fn dns_name_matching() {
        for &(pattern, sni, want) in MATCH_CASES {
            let got = dns_name_matches(pattern, sni);
            assert_eq!(got, want, "{pattern:?} vs {sni:?}");
        }
    }

    #[test]
    fn truncated_or_corrupted_certificates_never_panic() {
        let der = der_of(&self_signed(&["example.com", "*.example.com"], "x", P256)[0]);
        let names = leaf_dns_names(&der).unwrap();
        assert_eq!(names, ["example.com", "*.example.com"]);
        for len in 0..der.len() {
            assert!(leaf_dns_names(&der[..len]).is_err(), "truncated to {len}");
        }
        for i in 0..der.len() {
            for byte in [0x00, 0x7f, 0x80, 0x84, 0xff, der[i] ^ 0x01] {
                let mut bad = der.clone();
                bad[i] = byte;
                let _ = leaf_dns_names(&bad);
            }
        }
        let der = CertificateDer::from(der_of(&self_signed(&[], "cn.example.com", P256)[0]));
        let parsed = webpki::EndEntityCert::try_from(&der).unwrap();
        let subject = parsed.subject();
        let cn = subject_common_name(subject);
        assert_eq!(cn.as_deref(), Some("cn.example.com"));
        for len in 0..subject.len() {
            assert!(subject_common_name(&subject[..len]).is_none(), "{len}");
        }
    }

    #[rustfmt::skip]
    const STRING_CASES: &[(u8, &[u8], Option<&str>)] = &[
        (TAG_BMP_STRING, &[0, b'h', 0, b'i'], Some("hi")), (TAG_BMP_STRING, &[0, 1, 2], None),
        (TAG_BMP_STRING, &[0xd8, 0], None), (TAG_T61_STRING, b"abc", Some("abc")),
        (TAG_T61_STRING, &[0xe9], None), (TAG_UTF8_STRING, &[0xff], None), (4, b"a", None),
    ];
    /// Refused: indefinite length, 5 length bytes, length past the end, high tag number.
    #[rustfmt::skip]
    const REFUSED_DER: &[&[u8]] = &[
        &[4, 0x80, 0, 0], &[4, 0x85, 0, 0, 0, 0, 1, 0], &[4, 0x84, 255, 255, 255, 255, 0],
        &[4, 3, 0, 0], &[0x1f, 1, 0], &[4], &[],
    ];

    #[test]
    fn der_reader_and_directory_strings() {
        for &(tag, bytes, want) in STRING_CASES {
            assert_eq!(directory_string(tag, bytes).as_deref(), want, "{bytes:?}");
        }
        for bytes in REFUSED_DER {
            assert_eq!(Der::new(bytes).read(), None, "{bytes:?}");
        }
        let long_form = Der::new(&[4, 0x81, 2, b'a', b'b']).read();
        assert_eq!(long_form, Some((4, &b"ab"[..])));
    }

    proptest! {
        #[test]
        fn arbitrary_der_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = leaf_dns_names(&bytes);
            let _ = subject_common_name(&bytes);
            let mut der = Der::new(&bytes);
            while der.read().is_some() {}
        }
    }
}
