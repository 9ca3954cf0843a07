//! The SMTP relay through lettre over tokio and rustls (the process's aws-lc-rs
//! provider): `starttls` (required, never opportunistic), `tls` (implicit) or
//! `none` (loopback relays only, never with credentials). Credentials are read
//! from their `SecretSource` each time a transport is built and are never logged.
//! lettre's own timeout covers only the connect, so every send is wrapped in
//! `smtp.timeout` as a whole.
//!
//! Also what an answer means: which failures are retried (4xx, refused or
//! dropped connections, timeouts, TLS and local problems) and which end the
//! message (5xx), and a hint for SES's common rejections.

use std::net::IpAddr;
use std::time::Duration;

use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::transport::smtp::{AsyncSmtpTransport, Error as SmtpError, PoolConfig};
use lettre::{AsyncTransport, Tokio1Executor};

use crate::snapshot::{AlertSettings, SecretSource, SmtpSettings, SmtpTls};

/// Pooled connections are closed after this long idle, under SES's ~10 s cut-off
/// (the pool sweeps every idle timeout, so a connection idles at most twice this).
const POOL_IDLE: Duration = Duration::from_secs(4);

/// Why a send failed; the label of `fulcrum_alerts_failed_total{kind}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FailKind {
    /// A 4xx answer. Retried.
    Transient,
    /// A 5xx answer. Not retried: the message is dropped.
    Permanent,
    /// Refused, reset or dropped connection. Retried.
    Connection,
    /// No answer within `smtp.timeout`. Retried.
    Timeout,
    /// TLS handshake or certificate failure. Retried (a fix and a reload help).
    Tls,
    /// The relay spoke in a way we cannot go on with (no STARTTLS, no AUTH
    /// mechanism, garbled reply). Retried.
    Protocol,
    /// A local problem: unreadable secret or `ca_file`, bad address. Retried.
    Config,
}

impl FailKind {
    pub const ALL: [FailKind; 7] = [
        FailKind::Transient,
        FailKind::Permanent,
        FailKind::Connection,
        FailKind::Timeout,
        FailKind::Tls,
        FailKind::Protocol,
        FailKind::Config,
    ];

    pub fn label(self) -> &'static str {
        match self {
            FailKind::Transient => "4xx",
            FailKind::Permanent => "5xx",
            FailKind::Connection => "connection",
            FailKind::Timeout => "timeout",
            FailKind::Tls => "tls",
            FailKind::Protocol => "protocol",
            FailKind::Config => "config",
        }
    }

    /// Only a 5xx answer ends a message without delivery.
    pub fn retried(self) -> bool {
        self != FailKind::Permanent
    }
}

/// A failed send: its kind and the relay's answer (`454 Throttling failure: ...`)
/// or the local error.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Failure {
    pub kind: FailKind,
    pub reply: String,
}

impl Failure {
    fn config(reply: impl Into<String>) -> Failure {
        Failure {
            kind: FailKind::Config,
            reply: reply.into(),
        }
    }

    /// The reply code, when the relay answered.
    pub fn code(&self) -> Option<u16> {
        match self.kind {
            FailKind::Transient | FailKind::Permanent => {
                self.reply.get(..3).and_then(|c| c.parse().ok())
            }
            _ => None,
        }
    }
}

/// A transport to the configured relay. Not `Debug`: it holds credentials.
pub(crate) struct Relay {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    timeout: Duration,
    name: String,
}

impl Relay {
    /// Builds the transport (reads the secrets and `ca_file`). Needs a tokio runtime.
    pub fn new(s: &SmtpSettings) -> Result<Relay, Failure> {
        let name = describe(s);
        let loopback = is_loopback(&s.host);
        let credentials = match (&s.username, &s.password) {
            (Some(u), Some(p)) => Some(Credentials::new(read_secret(u)?, read_secret(p)?)),
            (None, None) => None,
            _ => {
                return Err(Failure::config(
                    "smtp: username and password go together; one is missing",
                ));
            }
        };
        let tls = match s.tls {
            SmtpTls::None if !loopback => {
                return Err(Failure::config(format!(
                    "smtp: tls: none is allowed only for a relay on this host (127.0.0.1, ::1, localhost), not {}",
                    s.host
                )));
            }
            SmtpTls::None if credentials.is_some() => {
                return Err(Failure::config(
                    "smtp: refusing to send credentials with tls: none (AUTH would go in plaintext)",
                ));
            }
            SmtpTls::None => Tls::None,
            SmtpTls::StartTls => Tls::Required(tls_parameters(s)?),
            SmtpTls::Tls => Tls::Wrapper(tls_parameters(s)?),
        };
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(s.host.clone())
            .port(s.port)
            .tls(tls)
            .timeout(Some(s.timeout))
            .pool_config(
                PoolConfig::new()
                    .min_idle(0)
                    .max_size(1)
                    .idle_timeout(POOL_IDLE),
            );
        if let Some(c) = credentials {
            b = b.credentials(c);
        }
        Ok(Relay {
            transport: b.build(),
            timeout: s.timeout,
            name,
        })
    }

    /// `email-smtp.us-east-1.amazonaws.com:587 (starttls)`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends one message within `smtp.timeout`; `Ok` is the relay's 250 line.
    pub async fn send(&self, message: Message) -> Result<String, Failure> {
        match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
            Err(_) => Err(Failure {
                kind: FailKind::Timeout,
                reply: format!("no answer within {:?} (smtp.timeout)", self.timeout),
            }),
            Ok(Ok(r)) => {
                let text: Vec<&str> = r.message().collect();
                Ok(format!("{} {}", r.code(), text.join(" "))
                    .trim_end()
                    .to_owned())
            }
            Ok(Err(e)) => Err(classify(&e)),
        }
    }
}

fn tls_parameters(s: &SmtpSettings) -> Result<TlsParameters, Failure> {
    let mut b = TlsParameters::builder(s.host.clone());
    match &s.ca_file {
        Some(path) => {
            let pem = crate::util::read_capped(path, crate::util::MAX_PEM_BYTES)
                .map_err(|e| Failure::config(format!("smtp.ca_file {}: {e}", path.display())))?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(Failure::config(format!(
                    "smtp.ca_file {}: no PEM certificate in it",
                    path.display()
                )));
            }
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| Failure::config(format!("smtp.ca_file {}: {e}", path.display())))?;
            b = b
                .certificate_store(CertificateStore::None)
                .add_root_certificate(cert);
        }
        None => {
            // The system's trust store (SPEC §2), as for target TLS.
            let bundle = std::path::Path::new(crate::tls::client::SYSTEM_CA_BUNDLE);
            let anchors = crate::tls::client::system_trust_anchors(bundle).map_err(|e| {
                Failure::config(format!(
                    "smtp: {e} (install ca-certificates or set smtp.ca_file)"
                ))
            })?;
            b = b.certificate_store(CertificateStore::None);
            for der in anchors {
                let cert = Certificate::from_der(der.to_vec())
                    .map_err(|e| Failure::config(format!("smtp: system trust store: {e}")))?;
                b = b.add_root_certificate(cert);
            }
        }
    }
    b.build_rustls()
        .map_err(|e| Failure::config(format!("smtp: TLS settings: {}", chain(&e))))
}

/// Reads a secret: a file (one trailing newline trimmed) or an environment
/// variable. Errors name the source, never the value.
pub(super) fn read_secret(src: &SecretSource) -> Result<String, Failure> {
    match src {
        SecretSource::File(p) => std::fs::read_to_string(p)
            .map(|s| {
                let s = s.strip_suffix('\n').unwrap_or(&s);
                s.strip_suffix('\r').unwrap_or(s).to_owned()
            })
            .map_err(|e| Failure::config(format!("cannot read secret file {}: {e}", p.display()))),
        SecretSource::Env(var) => std::env::var(var)
            .map_err(|_| Failure::config(format!("environment variable {var} is not set"))),
    }
}

pub(super) fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn describe(s: &SmtpSettings) -> String {
    let mode = match s.tls {
        SmtpTls::StartTls => "starttls",
        SmtpTls::Tls => "tls",
        SmtpTls::None => "no tls",
    };
    format!("{}:{} ({mode})", s.host, s.port)
}

/// Sorts a lettre error into a [`FailKind`]; a reply keeps its code and text.
pub(crate) fn classify(e: &SmtpError) -> Failure {
    if let Some(code) = e.status() {
        let text = std::error::Error::source(e)
            .map(|s| s.to_string())
            .unwrap_or_default();
        let kind = if e.is_permanent() {
            FailKind::Permanent
        } else {
            FailKind::Transient
        };
        return Failure {
            kind,
            reply: format!("{code} {text}").trim_end().to_owned(),
        };
    }
    let kind = if e.is_timeout() {
        FailKind::Timeout
    } else if e.is_tls() || has_tls_cause(e) {
        FailKind::Tls
    } else if e.is_client() || e.is_response() {
        FailKind::Protocol
    } else {
        FailKind::Connection
    };
    Failure {
        kind,
        reply: chain(e),
    }
}

/// Whether a rustls error is somewhere in the chain (lettre reports a refused
/// certificate as a connection error around an `io::Error` around it).
fn has_tls_cause(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
            {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

/// An error and its sources, `: `-separated, without repeats.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        src = s.source();
    }
    out
}

/// What to do about a failure, for the log and `fulcrum alert-test`.
pub(crate) fn hint(f: &Failure, settings: &AlertSettings) -> Option<String> {
    let text = f.reply.to_ascii_lowercase();
    let s = match (f.kind, f.code()) {
        (_, Some(554)) if text.contains("not verified") => return Some(unverified(f, settings)),
        (_, Some(554)) if text.contains("access denied") => {
            "the IAM user behind these SMTP credentials may not send as this identity: allow \
             ses:SendRawEmail on it in the user's policy"
        }
        (_, Some(535)) if text.contains("not subscribed") => {
            "the AWS account is not signed up for SES in this region"
        }
        (_, Some(535)) => {
            "the relay refused the credentials. SES SMTP credentials are not IAM access keys: \
             create SMTP credentials in the SES console (or derive the SMTP password from the \
             secret key) for the region of the endpoint, and check that the username and \
             password sources hold them without stray spaces"
        }
        (_, Some(530)) => {
            "the relay wants AUTH: set alerts.smtp.username_file/password_file (or *_env)"
        }
        (_, Some(454)) if text.contains("sending rate") => {
            "the account's sending rate is exceeded: set alerts.max_send_rate at or below it \
             (the SES sandbox allows 1 per second); retried with backoff"
        }
        (_, Some(454)) if text.contains("daily message quota") => {
            "the account's 24-hour quota is used up (the SES sandbox allows 200): lower \
             alerts.max_per_day or ask AWS for more; retried with backoff"
        }
        (_, Some(454)) if text.contains("authentication") => {
            "SES could not check the credentials just now; retried with backoff"
        }
        (_, Some(421)) => "the relay has too many connections open; retried with backoff",
        (_, Some(552)) => "the relay says the message is too long",
        (_, Some(553)) => "the relay refused an address: check alerts.from and alerts.to",
        (FailKind::Transient, _) => "a temporary failure at the relay; retried with backoff",
        (FailKind::Permanent, _) => {
            "a permanent rejection: these events are dropped; fix the cause and the next alert goes out"
        }
        (FailKind::Connection, _) => {
            "cannot reach the relay: check alerts.smtp.host and port, DNS and firewalls (EC2 \
             throttles port 25: use 587 or 2587 with starttls, 465 or 2465 with tls)"
        }
        (FailKind::Timeout, _) => {
            "the relay did not answer in time: check the network path, and that tls matches the \
             port (tls: tls on 465/2465, starttls on 587/25/2587)"
        }
        (FailKind::Tls, _) => {
            "the TLS handshake failed: tls: tls needs an implicit-TLS port (465/2465) and \
             starttls a plain one (587/25/2587); a relay with a private CA needs alerts.smtp.ca_file"
        }
        (FailKind::Protocol, _) if text.contains("starttls") => {
            "the relay does not offer STARTTLS: use tls: tls on an implicit-TLS port, or tls: \
             none for a relay on this host"
        }
        (FailKind::Protocol, _) if text.contains("authentication mechanism") => {
            "the relay offers no AUTH mechanism fulcrum speaks (PLAIN, LOGIN), or none at all \
             before TLS"
        }
        (FailKind::Protocol, _) => "the relay's answer made no sense; retried with backoff",
        (FailKind::Config, _) => return None,
    };
    Some(s.to_owned())
}

/// SES's `554 Message rejected: Email address is not verified. The following
/// identities failed the check in region R: a, b`: says whether it is the sender
/// or a sandbox recipient.
fn unverified(f: &Failure, settings: &AlertSettings) -> String {
    let lower = f.reply.to_ascii_lowercase();
    let listed: Vec<String> = lower
        .find("failed the check")
        .and_then(|i| lower[i..].split_once(':'))
        .map(|(_, ids)| {
            ids.split(',')
                .map(|s| s.trim().trim_end_matches("...").trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let email = |m: &str| {
        m.parse::<Mailbox>()
            .map(|m| m.email.to_string().to_ascii_lowercase())
            .unwrap_or_else(|_| m.to_ascii_lowercase())
    };
    let from = email(&settings.from);
    let sender_msg = format!(
        "the sender {from} (alerts.from) is not a verified identity in this SES region: verify \
         the address or its domain in the SES console (Identities)"
    );
    let recipient_msg = |who: &str| {
        format!(
            "the recipient {who} is not verified: an SES account in the sandbox may send only to \
             verified addresses (and the mailbox simulator); verify it, or request production access"
        )
    };
    if listed.is_empty() {
        return format!("{sender_msg}; or {}", recipient_msg("(one of alerts.to)"));
    }
    let sender = listed
        .iter()
        .any(|l| *l == from || from.ends_with(&format!("@{l}")));
    let others: Vec<&String> = listed
        .iter()
        .filter(|l| **l != from && !from.ends_with(&format!("@{l}")))
        .collect();
    let mut parts = Vec::new();
    if sender {
        parts.push(sender_msg);
    }
    if !others.is_empty() {
        let who: Vec<&str> = others.iter().map(|s| s.as_str()).collect();
        parts.push(recipient_msg(&who.join(", ")));
    }
    parts.join("; ")
}

/// `X-Fulcrum-Alert-Id`.
#[derive(Clone)]
struct AlertIdHeader(String);

impl Header for AlertIdHeader {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Fulcrum-Alert-Id")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AlertIdHeader(s.to_owned()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// `Auto-Submitted: auto-generated` (RFC 3834): no vacation replies to alerts.
#[derive(Clone)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".to_owned())
    }
}

/// One plain-text message to every `alerts.to`, carrying `alert_id` as
/// `X-Fulcrum-Alert-Id` and in a stable `Message-ID` (SES replaces the latter;
/// other relays let mail systems fold repeats).
pub(crate) fn message(
    settings: &AlertSettings,
    alert_id: &str,
    subject: String,
    body: String,
) -> Result<Message, Failure> {
    let from: Mailbox = settings
        .from
        .parse()
        .map_err(|e| Failure::config(format!("alerts.from {:?}: {e}", settings.from)))?;
    let mut b = Message::builder()
        .from(from.clone())
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .header(AutoSubmitted);
    for to in &settings.to {
        let m: Mailbox = to
            .parse()
            .map_err(|e| Failure::config(format!("alerts.to {to:?}: {e}")))?;
        b = b.to(m);
    }
    b.header(AlertIdHeader(alert_id.to_owned()))
        .message_id(Some(format!("<{alert_id}@{}>", from.email.domain())))
        .body(body)
        .map_err(|e| Failure::config(format!("cannot build the message: {e}")))
}

/// `fulcrum alert-test`: sends one test message now and returns a report of the
/// relay's answer (`Ok` on 250), with a hint for SES's common rejections:
/// unverified sender, sandbox recipient, throttling, bad credentials.
pub async fn send_test(settings: &AlertSettings, node_name: &str) -> Result<String, String> {
    crate::install_crypto_provider();
    let to = settings.to.join(", ");
    let report = |verb: &str, relay: &str, f: &Failure| {
        let mut r = format!("{relay} {verb}: {}", f.reply);
        if let Some(h) = hint(f, settings) {
            r.push_str("\nhint: ");
            r.push_str(&h);
        }
        r
    };
    let relay = Relay::new(&settings.smtp)
        .map_err(|f| report("not tried", &describe(&settings.smtp), &f))?;
    let (subject, body) = super::digest::test_message(node_name);
    // Every message carries an id (SPEC §6); a test message's is its own.
    let id = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    let msg =
        message(settings, &id, subject, body).map_err(|f| report("not tried", relay.name(), &f))?;
    match relay.send(msg).await {
        Ok(reply) => Ok(format!(
            "{} accepted the test message from {} to {to}: {reply}",
            relay.name(),
            settings.from
        )),
        Err(f) => {
            let verb = match f.kind {
                FailKind::Transient | FailKind::Permanent => "refused the test message",
                _ => "could not take the test message",
            };
            Err(report(verb, relay.name(), &f))
        }
    }
}
