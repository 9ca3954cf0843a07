//! The config's key tree: which keys each section accepts. The decoder rejects
//! every other key with this list, and a test checks that the configuration
//! reference (docs/configuration.md) and config/fulcrum.yaml mention every key.

/// A mapping section and the keys it accepts.
#[derive(Debug)]
pub struct Section {
    pub keys: &'static [Key],
    /// Keys that are refused with a specific message (inline secrets).
    pub refused: &'static [(&'static str, &'static str)],
}

#[derive(Debug)]
pub struct Key {
    pub name: &'static str,
    pub child: Child,
}

#[derive(Debug, Clone, Copy)]
pub enum Child {
    /// A scalar, a list of scalars, or a free-form mapping (`headers`).
    Leaf,
    /// A nested section.
    Map(&'static Section),
    /// A list of sections.
    List(&'static Section),
}

const fn leaf(name: &'static str) -> Key {
    Key {
        name,
        child: Child::Leaf,
    }
}
const fn map(name: &'static str, s: &'static Section) -> Key {
    Key {
        name,
        child: Child::Map(s),
    }
}
const fn list(name: &'static str, s: &'static Section) -> Key {
    Key {
        name,
        child: Child::List(s),
    }
}
const fn section(keys: &'static [Key]) -> Section {
    Section { keys, refused: &[] }
}

pub static ROOT: Section = section(&[
    map("node", &NODE),
    map("runtime", &RUNTIME),
    map("admin", &ADMIN),
    map("access_log", &ACCESS_LOG),
    list("certificates", &CERTIFICATE),
    list("listeners", &LISTENER),
    list("target_groups", &TARGET_GROUP),
    map("alerts", &ALERTS),
    map("limits", &LIMITS),
]);

pub static NODE: Section = section(&[leaf("name"), leaf("zone"), leaf("secret_file")]);

pub static RUNTIME: Section = section(&[
    leaf("worker_threads"),
    leaf("max_connections"),
    leaf("shutdown_delay"),
    leaf("shutdown_timeout"),
]);

pub static ADMIN: Section = section(&[leaf("bind"), leaf("token_file")]);

pub static ACCESS_LOG: Section = section(&[leaf("path"), leaf("format")]);

pub static CERTIFICATE: Section = section(&[leaf("name"), leaf("cert"), leaf("key")]);

pub static LISTENER: Section = section(&[
    leaf("name"),
    leaf("protocol"),
    leaf("bind"),
    leaf("allow"),
    leaf("certificates"),
    leaf("tls_policy"),
    leaf("idle_timeout"),
    leaf("client_keep_alive"),
    leaf("header_timeout"),
    leaf("xff"),
    leaf("desync_mitigation"),
    list("rules", &RULE),
    map("default_action", &ACTION),
]);

pub static RULE: Section = section(&[
    leaf("priority"),
    map("conditions", &CONDITIONS),
    map("action", &ACTION),
]);

pub static CONDITIONS: Section = section(&[
    leaf("host"),
    leaf("path"),
    leaf("method"),
    leaf("headers"),
    list("query", &QUERY),
    leaf("source_ip"),
]);

pub static QUERY: Section = section(&[leaf("key"), leaf("value")]);

pub static ACTION: Section = section(&[
    map("forward", &FORWARD),
    map("redirect", &REDIRECT),
    map("fixed_response", &FIXED_RESPONSE),
]);

/// `forward` is either a target group name or this mapping.
pub static FORWARD: Section =
    section(&[list("target_groups", &WEIGHTED_GROUP), leaf("stickiness")]);

pub static WEIGHTED_GROUP: Section = section(&[leaf("name"), leaf("weight")]);

pub static REDIRECT: Section = section(&[
    leaf("protocol"),
    leaf("host"),
    leaf("port"),
    leaf("path"),
    leaf("query"),
    leaf("status"),
]);

pub static FIXED_RESPONSE: Section = section(&[leaf("status"), leaf("content_type"), leaf("body")]);

pub static TARGET_GROUP: Section = section(&[
    leaf("name"),
    leaf("protocol"),
    leaf("algorithm"),
    leaf("slow_start"),
    leaf("deregistration_delay"),
    leaf("cross_zone"),
    leaf("fail_open"),
    leaf("keep_alive_timeout"),
    map("stickiness", &STICKINESS),
    leaf("proxy_protocol_v2"),
    leaf("verify_tls"),
    leaf("ca_file"),
    map("health_check", &HEALTH_CHECK),
    list("targets", &TARGET),
]);

pub static STICKINESS: Section = section(&[leaf("type"), leaf("duration"), leaf("cookie_name")]);

pub static HEALTH_CHECK: Section = section(&[
    leaf("protocol"),
    leaf("port"),
    leaf("path"),
    leaf("host"),
    leaf("interval"),
    leaf("timeout"),
    leaf("healthy_threshold"),
    leaf("unhealthy_threshold"),
    leaf("matcher"),
]);

pub static TARGET: Section = section(&[leaf("address"), leaf("zone"), leaf("weight")]);

pub static ALERTS: Section = section(&[
    map("smtp", &SMTP),
    leaf("from"),
    leaf("to"),
    leaf("events"),
    leaf("batch_window"),
    leaf("max_send_rate"),
    leaf("max_per_day"),
    leaf("spool_dir"),
]);

pub static SMTP: Section = Section {
    keys: &[
        leaf("host"),
        leaf("port"),
        leaf("tls"),
        leaf("username_file"),
        leaf("username_env"),
        leaf("password_file"),
        leaf("password_env"),
        leaf("ca_file"),
        leaf("timeout"),
    ],
    refused: &[
        ("password", INLINE_PASSWORD),
        (
            "username",
            "credentials are never given inline: use username_file or username_env",
        ),
    ],
};

/// A `password:` key is refused with this message wherever it appears (SPEC §2:
/// secrets are never given inline), not only under `alerts.smtp`.
pub const INLINE_PASSWORD: &str = "secrets are never given inline: put the password in a file and name it with password_file, or name an environment variable with password_env";

pub static LIMITS: Section = section(&[leaf("aws_compat")]);

/// Every key path of the schema, such as `listeners[].rules[].priority`.
pub fn all_key_paths() -> Vec<String> {
    fn walk(s: &Section, prefix: &str, out: &mut Vec<String>) {
        for k in s.keys {
            let p = if prefix.is_empty() {
                k.name.to_owned()
            } else {
                format!("{prefix}.{}", k.name)
            };
            out.push(p.clone());
            match k.child {
                Child::Leaf => {}
                Child::Map(c) => walk(c, &p, out),
                Child::List(c) => walk(c, &format!("{p}[]"), out),
            }
        }
    }
    let mut out = Vec::new();
    walk(&ROOT, "", &mut out);
    out
}
