//! Unit tests of the relay side: failure kinds, SES hints, secrets, loopback
//! checks, refused settings and the message's headers. Real SMTP exchanges are in
//! `tests/alerts.rs`.

use std::path::Path;

use super::relay::{self, FailKind, Failure};
use super::tests::settings;
use crate::snapshot::{SecretSource, SmtpTls};

fn fail(kind: FailKind, reply: &str) -> Failure {
    Failure {
        kind,
        reply: reply.into(),
    }
}

#[test]
fn fail_kinds_label_and_retry() {
    let labels: Vec<&str> = FailKind::ALL.iter().map(|k| k.label()).collect();
    assert_eq!(
        labels,
        [
            "4xx",
            "5xx",
            "connection",
            "timeout",
            "tls",
            "protocol",
            "config"
        ]
    );
    for k in FailKind::ALL {
        assert_eq!(k.retried(), k != FailKind::Permanent, "{k:?}");
    }
    assert_eq!(
        fail(FailKind::Transient, "454 Throttling failure").code(),
        Some(454)
    );
    assert_eq!(fail(FailKind::Connection, "500 bytes lost").code(), None);
}

#[test]
fn hints_for_ses_rejections() {
    let s = settings(Path::new("/nonexistent"), 25);
    let h = |k, r: &str| relay::hint(&fail(k, r), &s).unwrap_or_default();
    let sender = h(
        FailKind::Permanent,
        "554 Message rejected: Email address is not verified. The following identities failed the check in region US-EAST-1: alerts@example.com",
    );
    assert!(sender.contains("the sender alerts@example.com"), "{sender}");
    assert!(!sender.contains("sandbox"), "{sender}");
    let domain = h(
        FailKind::Permanent,
        "554 Message rejected: Email address is not verified. The following identities failed the check in region US-EAST-1: example.com",
    );
    assert!(domain.contains("the sender"), "{domain}");
    let rcpt = h(
        FailKind::Permanent,
        "554 Message rejected: Email address is not verified. The following identities failed the check in region EU-WEST-1: ops@example.org, oncall@example.com...",
    );
    assert!(
        rcpt.contains("ops@example.org, oncall@example.com") && rcpt.contains("sandbox"),
        "{rcpt}"
    );
    assert!(!rcpt.contains("the sender"), "{rcpt}");
    let unsure = h(
        FailKind::Permanent,
        "554 Message rejected: Email address is not verified",
    );
    assert!(
        unsure.contains("the sender") && unsure.contains("sandbox"),
        "{unsure}"
    );
    let creds = h(
        FailKind::Permanent,
        "535 Authentication Credentials Invalid",
    );
    assert!(creds.contains("not IAM access keys"), "{creds}");
    assert!(h(FailKind::Permanent, "535 Account not subscribed to SES").contains("not signed up"));
    assert!(
        h(
            FailKind::Transient,
            "454 Throttling failure: Maximum sending rate exceeded"
        )
        .contains("max_send_rate")
    );
    assert!(
        h(
            FailKind::Transient,
            "454 Throttling failure: Daily message quota exceeded"
        )
        .contains("max_per_day")
    );
    assert!(
        h(
            FailKind::Permanent,
            "554 Access denied: User arn:x is not authorized to perform ses:SendRawEmail"
        )
        .contains("ses:SendRawEmail")
    );
    assert!(h(FailKind::Transient, "451 Temporary service failure").contains("retried"));
    assert!(
        h(
            FailKind::Connection,
            "Connection error: Connection refused (os error 111)"
        )
        .contains("port 25")
    );
    assert!(h(FailKind::Timeout, "no answer").contains("in time"));
    assert!(h(FailKind::Tls, "tls error: invalid peer certificate").contains("ca_file"));
    assert!(
        h(
            FailKind::Protocol,
            "internal client error: STARTTLS is not supported"
        )
        .contains("STARTTLS")
    );
    assert!(relay::hint(&fail(FailKind::Config, "cannot read"), &s).is_none());
}

#[test]
fn secrets_from_files_and_environment() {
    let d = tempfile::tempdir().unwrap();
    let f = |name: &str, body: &str| {
        let p = d.path().join(name);
        std::fs::write(&p, body).unwrap();
        relay::read_secret(&SecretSource::File(p))
    };
    assert_eq!(f("a", "AKIAEXAMPLE\n").unwrap(), "AKIAEXAMPLE");
    assert_eq!(f("b", "pass word\r\n").unwrap(), "pass word");
    assert_eq!(f("c", "no-newline").unwrap(), "no-newline");
    assert_eq!(f("d", " keep spaces \n").unwrap(), " keep spaces ");
    let missing = relay::read_secret(&SecretSource::File(d.path().join("nope"))).unwrap_err();
    assert_eq!(missing.kind, FailKind::Config);
    assert!(missing.reply.contains("nope"), "{}", missing.reply);
    let var =
        relay::read_secret(&SecretSource::Env("FULCRUM_TEST_UNSET_VAR_ALERTS".into())).unwrap_err();
    assert!(
        var.reply
            .contains("FULCRUM_TEST_UNSET_VAR_ALERTS is not set")
    );
    let path = SecretSource::Env("PATH".into());
    assert_eq!(
        relay::read_secret(&path).unwrap(),
        std::env::var("PATH").unwrap()
    );
}

#[test]
fn loopback_hosts() {
    for h in [
        "127.0.0.1",
        "127.1.2.3",
        "::1",
        "[::1]",
        "localhost",
        "LOCALHOST",
    ] {
        assert!(relay::is_loopback(h), "{h}");
    }
    for h in [
        "10.0.0.1",
        "smtp.example.com",
        "localhost.example.com",
        "::",
    ] {
        assert!(!relay::is_loopback(h), "{h}");
    }
}

#[test]
fn relay_refuses_unsafe_or_broken_settings() {
    let d = tempfile::tempdir().unwrap();
    let mut s = settings(d.path(), 25).smtp;
    s.host = "smtp.example.com".into();
    let e = relay::Relay::new(&s).err().unwrap();
    assert!(e.reply.contains("tls: none is allowed only"), "{}", e.reply);
    s.host = "127.0.0.1".into();
    let user = d.path().join("user");
    std::fs::write(&user, "u\n").unwrap();
    s.username = Some(SecretSource::File(user.clone()));
    s.password = Some(SecretSource::File(user.clone()));
    let e = relay::Relay::new(&s).err().unwrap();
    assert!(e.reply.contains("plaintext"), "{}", e.reply);
    s.password = None;
    s.tls = SmtpTls::StartTls;
    let e = relay::Relay::new(&s).err().unwrap();
    assert!(e.reply.contains("go together"), "{}", e.reply);
    s.username = None;
    s.ca_file = Some(d.path().join("missing.pem"));
    let e = relay::Relay::new(&s).err().unwrap();
    assert_eq!(e.kind, FailKind::Config);
    assert!(e.reply.contains("missing.pem"), "{}", e.reply);
    s.ca_file = Some(user);
    let e = relay::Relay::new(&s).err().unwrap();
    assert!(e.reply.contains("no PEM certificate"), "{}", e.reply);
}

#[test]
fn message_carries_the_alert_id_and_every_recipient() {
    let s = settings(Path::new("/nonexistent"), 25);
    let m = relay::message(&s, "00ff", "[fulcrum lb-a] x".into(), "body\n".into()).unwrap();
    let text = String::from_utf8(m.formatted()).unwrap();
    for want in [
        "X-Fulcrum-Alert-Id: 00ff\r\n",
        "Message-ID: <00ff@example.com>\r\n",
        "Auto-Submitted: auto-generated\r\n",
        "Subject: [fulcrum lb-a] x\r\n",
        "From: fulcrum <alerts@example.com>\r\n",
        "Content-Type: text/plain; charset=utf-8\r\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(text.contains("oncall@example.com") && text.contains("ops@example.org"));
    let rcpt: Vec<String> = m.envelope().to().iter().map(|a| a.to_string()).collect();
    assert_eq!(rcpt, ["oncall@example.com", "ops@example.org"]);
}
