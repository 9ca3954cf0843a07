//! The top level and the simple sections: node, runtime, admin, access_log,
//! certificates, alerts, limits. Listeners and target groups have their own files.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::decode::{
    self, Fields, Sp, boolean, duration, fields, integer, items, nonempty, number, strings, word,
};
use super::node::Node;
use super::{Ctx, groups, listeners, schema};
use crate::snapshot::*;

const DAY: Duration = Duration::from_secs(86_400);

/// Decodes the whole file. Returns `None` when a section could not be read at all
/// (the errors say why); the caller also checks that no error was recorded.
pub(super) fn decode_root(cx: &mut Ctx, root: &Node, source: ConfigSource) -> Option<Snapshot> {
    let f = fields(&mut cx.errs, root, "", &schema::ROOT)?;

    // limits first: it changes how rules are checked.
    if let Some(n) = f.get("limits") {
        if let Some(lf) = fields(&mut cx.errs, n, "limits", &schema::LIMITS) {
            if let Some(b) = lf
                .get("aws_compat")
                .and_then(|n| boolean(&mut cx.errs, n, &lf.at("aws_compat")))
            {
                cx.aws_compat = b.v;
            }
        }
    }
    let node = decode_node(cx, f.get("node"));
    cx.node_zone = node.zone.clone();
    let runtime = decode_runtime(cx, f.get("runtime"));
    let (admin, admin_bind) = decode_admin(cx, f.get("admin"));
    let access_log = decode_access_log(cx, f.get("access_log"));
    let (certificates, cert_names) = decode_certificates(cx, f.get("certificates"));
    let (target_groups, group_names) = groups::decode_groups(cx, f.get("target_groups"));
    let listeners = listeners::decode_listeners(
        cx,
        f.get("listeners"),
        &listeners::Refs {
            groups: &group_names,
            certs: &cert_names,
        },
        admin_bind,
    );
    let alerts = f.get("alerts").and_then(|n| decode_alerts(cx, n));

    Some(Snapshot {
        source,
        node,
        runtime,
        admin,
        access_log,
        certificates,
        listeners,
        target_groups,
        alerts,
        aws_compat: cx.aws_compat,
    })
}

/// Reads a section that may be absent (then every key takes its default).
fn section<'n>(
    cx: &mut Ctx,
    n: Option<&'n Node>,
    path: &str,
    s: &schema::Section,
) -> Option<Fields<'n>> {
    n.and_then(|n| fields(&mut cx.errs, n, path, s))
}

/// The kernel's host name (uname(2), which works where `/proc/sys` is hidden,
/// as under the shipped unit's `ProcSubset=pid`).
fn host_name() -> String {
    let name = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .trim()
        .to_owned();
    if name.is_empty() {
        "localhost".to_owned()
    } else {
        name
    }
}

/// A file that must exist and hold something (a secret, a token, a key).
pub(super) fn secret_file(cx: &mut Ctx, n: &Node, path: &str) -> Option<std::path::PathBuf> {
    let s = nonempty(&mut cx.errs, n, path)?;
    let p = cx.path(&s.v);
    match crate::util::read_capped(&p, crate::util::MAX_SECRET_FILE_BYTES) {
        Ok(b) if b.iter().all(|c| c.is_ascii_whitespace()) => {
            cx.errs
                .push(n.pos, path, format!("{} is empty", p.display()));
            None
        }
        Ok(_) => Some(p),
        Err(e) => {
            cx.errs
                .push(n.pos, path, format!("cannot read {}: {e}", p.display()));
            None
        }
    }
}

fn decode_node(cx: &mut Ctx, n: Option<&Node>) -> NodeSettings {
    let mut out = NodeSettings {
        name: host_name(),
        zone: "default".to_owned(),
        secret_file: None,
    };
    if let Some(f) = section(cx, n, "node", &schema::NODE) {
        if let Some(s) = f
            .get("name")
            .and_then(|n| nonempty(&mut cx.errs, n, &f.at("name")))
        {
            out.name = s.v;
        }
        if let Some(s) = f
            .get("zone")
            .and_then(|n| nonempty(&mut cx.errs, n, &f.at("zone")))
        {
            out.zone = s.v;
        }
        if let Some(n) = f.get("secret_file") {
            out.secret_file = secret_file(cx, n, &f.at("secret_file"));
        }
    }
    if let Some(v) = (cx.env)("FULCRUM_NODE_NAME").filter(|v| !v.trim().is_empty()) {
        out.name = v.trim().to_owned();
    }
    if let Some(v) = (cx.env)("FULCRUM_NODE_ZONE").filter(|v| !v.trim().is_empty()) {
        out.zone = v.trim().to_owned();
    }
    out
}

fn decode_runtime(cx: &mut Ctx, n: Option<&Node>) -> RuntimeSettings {
    let mut out = RuntimeSettings {
        worker_threads: 0,
        max_connections: 100_000,
        shutdown_delay: Duration::ZERO,
        shutdown_timeout: Duration::from_secs(30),
    };
    let Some(f) = section(cx, n, "runtime", &schema::RUNTIME) else {
        return out;
    };
    let e = &mut cx.errs;
    if let Some(v) = f
        .get("worker_threads")
        .and_then(|n| integer(e, n, &f.at("worker_threads"), 0, 1024))
    {
        out.worker_threads = v.v as usize;
    }
    if let Some(v) = f
        .get("max_connections")
        .and_then(|n| integer(e, n, &f.at("max_connections"), 1, 10_000_000))
    {
        out.max_connections = v.v as usize;
    }
    if let Some(v) = f.get("shutdown_delay").and_then(|n| {
        duration(
            e,
            n,
            &f.at("shutdown_delay"),
            Duration::ZERO,
            Duration::from_secs(3600),
        )
    }) {
        out.shutdown_delay = v.v;
    }
    if let Some(v) = f.get("shutdown_timeout").and_then(|n| {
        duration(
            e,
            n,
            &f.at("shutdown_timeout"),
            Duration::ZERO,
            Duration::from_secs(3600),
        )
    }) {
        out.shutdown_timeout = v.v;
    }
    out
}

/// Parses `IP:PORT` or `[IPv6]:PORT` with a port from 1 to 65535.
pub(super) fn socket_addr(cx: &mut Ctx, n: &Node, path: &str) -> Option<Sp<SocketAddr>> {
    let s = nonempty(&mut cx.errs, n, path)?;
    match s.v.trim().parse::<SocketAddr>() {
        Ok(a) if a.port() == 0 => {
            cx.errs
                .push(n.pos, path, "port must be from 1 to 65535, got 0");
            None
        }
        Ok(a) => Some(Sp::new(a, n.pos)),
        Err(_) => {
            cx.errs.push(
                n.pos,
                path,
                format!(
                    "expected \"IP:PORT\" or \"[IPv6]:PORT\" (such as 0.0.0.0:80), got \"{}\"",
                    s.v
                ),
            );
            None
        }
    }
}

fn decode_admin(cx: &mut Ctx, n: Option<&Node>) -> (AdminSettings, Option<Sp<SocketAddr>>) {
    let default_bind: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 9900));
    let mut out = AdminSettings {
        bind: Some(default_bind),
        token_file: None,
        at: super::Pos::START,
    };
    let Some(f) = section(cx, n, "admin", &schema::ADMIN) else {
        return (out, Some(Sp::new(default_bind, super::Pos::START)));
    };
    out.at = f.pos;
    let mut bind_sp = Some(Sp::new(default_bind, f.pos));
    if let Some(n) = f.get("bind") {
        if matches!(&n.value, super::node::Value::Str(s) if s.trim() == "off") {
            out.bind = None;
            bind_sp = None;
        } else {
            match socket_addr(cx, n, &f.at("bind")) {
                Some(a) => {
                    out.bind = Some(a.v);
                    bind_sp = Some(a);
                }
                None => {
                    out.bind = None;
                    bind_sp = None;
                }
            }
        }
    }
    if let Some(n) = f.get("token_file") {
        out.token_file = secret_file(cx, n, &f.at("token_file"));
    }
    if let Some(b) = &bind_sp {
        if !b.v.ip().is_loopback() && !f.has("token_file") {
            cx.errs.push(
                b.pos,
                f.at("bind"),
                format!(
                    "{} is not a loopback address, so admin.token_file is required (the admin API can reload the config)",
                    b.v
                ),
            );
        }
    }
    (out, bind_sp)
}

/// Whether the access log file can be opened for appending (created when missing),
/// checked without creating it, so `check` finds what `run` would refuse.
fn log_file_writable(p: &std::path::Path) -> Result<(), String> {
    use rustix::fs::{Access, access};
    match std::fs::metadata(p) {
        Ok(m) if m.is_dir() => Err(format!("{} is a directory", p.display())),
        Ok(_) => {
            access(p, Access::WRITE_OK).map_err(|e| format!("cannot write {}: {e}", p.display()))
        }
        Err(_) => {
            let dir = match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => std::path::Path::new("."),
            };
            if !dir.is_dir() {
                return Err(format!(
                    "cannot create {}: directory {} does not exist",
                    p.display(),
                    dir.display()
                ));
            }
            access(dir, Access::WRITE_OK)
                .map_err(|e| format!("cannot create {} in {}: {e}", p.display(), dir.display()))
        }
    }
}

fn decode_access_log(cx: &mut Ctx, n: Option<&Node>) -> AccessLogSettings {
    let mut out = AccessLogSettings {
        dest: AccessLogDest::Off,
        format: AccessLogFormat::Alb,
        path_at: crate::config::Pos::START,
    };
    let Some(f) = section(cx, n, "access_log", &schema::ACCESS_LOG) else {
        return out;
    };
    out.path_at = f.pos_of("path");
    if let Some(s) = f
        .get("path")
        .and_then(|n| nonempty(&mut cx.errs, n, &f.at("path")))
    {
        out.dest = match s.v.trim() {
            "off" => AccessLogDest::Off,
            "stdout" => AccessLogDest::Stdout,
            p => {
                let p = cx.path(p);
                if let Err(why) = log_file_writable(&p) {
                    cx.errs.push(s.pos, f.at("path"), why);
                }
                AccessLogDest::File(p)
            }
        };
    }
    if let Some(w) = f
        .get("format")
        .and_then(|n| word(&mut cx.errs, n, &f.at("format"), &["alb", "json"]))
    {
        out.format = if w.v == "json" {
            AccessLogFormat::Json
        } else {
            AccessLogFormat::Alb
        };
    }
    out
}

/// Reports a name seen before in the same list, at its repeat.
pub(super) fn unique_name(
    cx: &mut Ctx,
    seen: &mut HashMap<String, u32>,
    name: &Sp<String>,
    path: &str,
    what: &str,
) -> bool {
    if let Some(line) = seen.get(&name.v) {
        cx.errs.push(
            name.pos,
            path,
            format!(
                "duplicate {what} name \"{}\" (first defined at line {line})",
                name.v
            ),
        );
        false
    } else {
        seen.insert(name.v.clone(), name.pos.line);
        true
    }
}

fn decode_certificates(
    cx: &mut Ctx,
    n: Option<&Node>,
) -> (Vec<Certificate>, HashMap<String, CertId>) {
    let mut out = Vec::new();
    let mut names = HashMap::new();
    let mut seen = HashMap::new();
    let Some(n) = n else {
        return (out, names);
    };
    for (path, item) in items(&mut cx.errs, n, "certificates") {
        let Some(f) = fields(&mut cx.errs, item, &path, &schema::CERTIFICATE) else {
            continue;
        };
        let name = match f.get("name") {
            Some(n) => nonempty(&mut cx.errs, n, &f.at("name")),
            None => {
                cx.errs.push(
                    f.pos,
                    f.at("name"),
                    "required: a name for listeners to refer to",
                );
                None
            }
        };
        let mut file = |key: &str, what: &str| match f.get(key) {
            Some(n) => nonempty(&mut cx.errs, n, &f.at(key)).map(|s| Sp::new(cx.path(&s.v), n.pos)),
            None => {
                cx.errs.push(
                    f.pos,
                    f.at(key),
                    format!("required: the path of the PEM {what}"),
                );
                None
            }
        };
        let cert = file("cert", "certificate chain");
        let key = file("key", "private key");
        let unique = name
            .as_ref()
            .is_some_and(|nm| unique_name(cx, &mut seen, nm, &f.at("name"), "certificate"));
        // The files load (and their errors show) even when the name is missing
        // or wrong: every error in one run.
        let (Some(cert), Some(key)) = (cert, key) else {
            continue;
        };
        match crate::tls::certs::load_cert(&cert.v, &key.v) {
            Ok(loaded) => {
                if let (Some(name), true) = (name, unique) {
                    let id = CertId(out.len() as u32);
                    names.insert(name.v.clone(), id);
                    out.push(Certificate {
                        name: name.v,
                        cert_path: cert.v,
                        key_path: key.v,
                        loaded,
                    });
                }
            }
            Err(msg) => {
                // Point at the file the message is about.
                let key_shown = key.v.display().to_string();
                let about_key = msg.contains(&key_shown) && !msg.contains("does not match");
                let (pos, p) = if about_key || msg.contains("does not match") {
                    (key.pos, f.at("key"))
                } else {
                    (cert.pos, f.at("cert"))
                };
                cx.errs.push(pos, p, msg);
                // Keep the name known so listeners naming it get no second error.
                if let (Some(name), true) = (name, unique) {
                    names.insert(name.v, CertId(u32::MAX));
                }
            }
        }
    }
    (out, names)
}

fn is_loopback_host(h: &str) -> bool {
    let h = h.trim().trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A secret given as `X_file` or `X_env` (never both, never inline).
fn secret(cx: &mut Ctx, f: &Fields, what: &str) -> Option<Sp<SecretSource>> {
    let file_key = format!("{what}_file");
    let env_key = format!("{what}_env");
    match (f.get(&file_key), f.get(&env_key)) {
        (Some(_), Some(e)) => {
            cx.errs.push(
                e.pos,
                f.at(&env_key),
                format!("give either {file_key} or {env_key}, not both"),
            );
            None
        }
        (Some(n), None) => {
            secret_file(cx, n, &f.at(&file_key)).map(|p| Sp::new(SecretSource::File(p), n.pos))
        }
        (None, Some(n)) => {
            let var = nonempty(&mut cx.errs, n, &f.at(&env_key))?;
            match (cx.env)(&var.v) {
                Some(v) if !v.is_empty() => Some(Sp::new(SecretSource::Env(var.v), n.pos)),
                _ => {
                    cx.errs.push(
                        n.pos,
                        f.at(&env_key),
                        format!("environment variable {} is not set", var.v),
                    );
                    None
                }
            }
        }
        (None, None) => None,
    }
}

/// A mail address: `name <user@host>` or `user@host`.
fn mailbox(cx: &mut Ctx, n: &Node, path: &str) -> Option<String> {
    let s = nonempty(&mut cx.errs, n, path)?;
    match s.v.parse::<lettre::message::Mailbox>() {
        Ok(_) => Some(s.v),
        Err(e) => {
            cx.errs.push(
                n.pos,
                path,
                format!("expected a mail address such as \"alerts@example.com\" or \"fulcrum <alerts@example.com>\", got \"{}\" ({e})", s.v),
            );
            None
        }
    }
}

fn decode_alerts(cx: &mut Ctx, n: &Node) -> Option<AlertSettings> {
    let f = fields(&mut cx.errs, n, "alerts", &schema::ALERTS)?;
    let smtp = match f.get("smtp") {
        Some(n) => decode_smtp(cx, n),
        None => {
            cx.errs.push(
                f.pos,
                f.at("smtp"),
                "required: the SMTP relay (host, port, tls, credentials)",
            );
            None
        }
    };
    let from = match f.get("from") {
        Some(n) => mailbox(cx, n, &f.at("from")),
        None => {
            cx.errs.push(
                f.pos,
                f.at("from"),
                "required: the sender address (an identity verified in SES)",
            );
            None
        }
    };
    let mut to = Vec::new();
    match f.get("to") {
        Some(n) => {
            let list = strings(&mut cx.errs, n, &f.at("to"));
            if list.is_empty() && matches!(&n.value, super::node::Value::Seq(_)) {
                cx.errs
                    .push(n.pos, f.at("to"), "must list at least one recipient");
            }
            for (i, s) in list.iter().enumerate() {
                let node = Node {
                    pos: s.pos,
                    value: super::node::Value::Str(s.v.clone()),
                };
                if let Some(m) = mailbox(cx, &node, &decode::index(&f.at("to"), i)) {
                    to.push(m);
                }
            }
        }
        None => cx
            .errs
            .push(f.pos, f.at("to"), "required: a list of recipient addresses"),
    }
    let mut events = AlertEvent::ALL.to_vec();
    if let Some(n) = f.get("events") {
        events.clear();
        let names: Vec<&str> = AlertEvent::ALL.iter().map(|e| e.as_str()).collect();
        for (i, s) in strings(&mut cx.errs, n, &f.at("events")).iter().enumerate() {
            let p = decode::index(&f.at("events"), i);
            match AlertEvent::ALL.iter().find(|e| e.as_str() == s.v) {
                Some(e) if events.contains(e) => {
                    cx.errs
                        .push(s.pos, p, format!("event {} listed twice", s.v))
                }
                Some(e) => events.push(*e),
                None => cx.errs.push(
                    s.pos,
                    p,
                    format!("expected one of {}, got \"{}\"", names.join(", "), s.v),
                ),
            }
        }
    }
    let e = &mut cx.errs;
    let batch_window = f
        .get("batch_window")
        .and_then(|n| duration(e, n, &f.at("batch_window"), Duration::ZERO, DAY))
        .map_or(Duration::from_secs(30), |d| d.v);
    let max_send_rate = f
        .get("max_send_rate")
        .and_then(|n| number(e, n, &f.at("max_send_rate"), 0.0, 100_000.0))
        .map_or(1.0, |v| v.v);
    if max_send_rate <= 0.0 {
        e.push(
            f.pos_of("max_send_rate"),
            f.at("max_send_rate"),
            "must be above 0 (recipients per second, such as 1 or 0.5)",
        );
    }
    let max_per_day = f
        .get("max_per_day")
        .and_then(|n| integer(e, n, &f.at("max_per_day"), 1, 1_000_000_000))
        .map_or(200, |v| v.v as u32);
    let spool_dir = match f
        .get("spool_dir")
        .and_then(|n| nonempty(e, n, &f.at("spool_dir")))
    {
        Some(s) => cx.path(&s.v),
        None => "/var/lib/fulcrum/alerts".into(),
    };
    Some(AlertSettings {
        smtp: smtp?,
        from: from?,
        to,
        events,
        batch_window,
        max_send_rate,
        max_per_day,
        spool_dir,
    })
}

fn decode_smtp(cx: &mut Ctx, n: &Node) -> Option<SmtpSettings> {
    let f = fields(&mut cx.errs, n, "alerts.smtp", &schema::SMTP)?;
    let host = match f.get("host") {
        Some(n) => nonempty(&mut cx.errs, n, &f.at("host")),
        None => {
            cx.errs.push(
                f.pos,
                f.at("host"),
                "required: the relay's host name, such as email-smtp.us-east-1.amazonaws.com",
            );
            None
        }
    };
    let tls = f
        .get("tls")
        .and_then(|n| word(&mut cx.errs, n, &f.at("tls"), &["starttls", "tls", "none"]))
        .map_or(SmtpTls::StartTls, |w| match w.v {
            "tls" => SmtpTls::Tls,
            "none" => SmtpTls::None,
            _ => SmtpTls::StartTls,
        });
    let default_port = match tls {
        SmtpTls::StartTls => 587,
        SmtpTls::Tls => 465,
        SmtpTls::None => 25,
    };
    let port = f
        .get("port")
        .and_then(|n| integer(&mut cx.errs, n, &f.at("port"), 1, 65535))
        .map_or(default_port, |p| p.v as u16);
    let username = secret(cx, &f, "username");
    let password = secret(cx, &f, "password");
    let has_user = f.has("username_file") || f.has("username_env");
    let has_pass = f.has("password_file") || f.has("password_env");
    if has_user != has_pass {
        let (missing, pos) = if has_user {
            ("password", f.pos)
        } else {
            ("username", f.pos)
        };
        cx.errs.push(
            pos,
            f.at(&format!("{missing}_file")),
            format!(
                "AUTH needs both a username and a password: add {missing}_file or {missing}_env"
            ),
        );
    }
    if let Some(h) = &host {
        if tls == SmtpTls::None && !is_loopback_host(&h.v) {
            cx.errs.push(
                f.pos_of("tls"),
                f.at("tls"),
                format!("tls: none is allowed only for a relay on this host (localhost, 127.0.0.0/8, ::1), not {}; use starttls or tls", h.v),
            );
        }
    }
    if tls == SmtpTls::None && (has_user || has_pass) {
        let key = [
            "username_file",
            "username_env",
            "password_file",
            "password_env",
        ]
        .into_iter()
        .find(|k| f.has(k))
        .unwrap_or("username_file");
        cx.errs.push(
            f.pos_of(key),
            f.at(key),
            "credentials with tls: none would send AUTH in plaintext; use tls: starttls or tls, or remove the credentials",
        );
    }
    let ca_file = f
        .get("ca_file")
        .and_then(|n| groups::ca_file(cx, n, &f.at("ca_file")));
    let timeout = f
        .get("timeout")
        .and_then(|n| {
            duration(
                &mut cx.errs,
                n,
                &f.at("timeout"),
                Duration::from_secs(1),
                Duration::from_secs(300),
            )
        })
        .map_or(Duration::from_secs(10), |d| d.v);
    Some(SmtpSettings {
        host: host?.v,
        port,
        tls,
        username: username.map(|s| s.v),
        password: password.map(|s| s.v),
        ca_file,
        timeout,
    })
}
