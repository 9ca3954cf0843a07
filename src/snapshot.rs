//! The one immutable value a reload publishes: every setting of the config file,
//! validated, with names resolved to ids, patterns and CIDRs compiled and
//! certificates loaded. The runtime keeps it behind one `ArcSwap`; a request loads
//! it once and uses that view to the end.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;

use crate::router::pattern::Pattern;
use crate::tls::certs::LoadedCert;

/// Index of a target group in [`Snapshot::target_groups`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(pub u32);

/// Index of a certificate in [`Snapshot::certificates`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CertId(pub u32);

/// Index of a listener in [`Snapshot::listeners`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId(pub u32);

pub struct Snapshot {
    pub source: ConfigSource,
    pub node: NodeSettings,
    pub runtime: RuntimeSettings,
    pub admin: AdminSettings,
    pub access_log: AccessLogSettings,
    pub certificates: Vec<Certificate>,
    pub listeners: Vec<Listener>,
    pub target_groups: Vec<TargetGroup>,
    pub alerts: Option<AlertSettings>,
    /// `limits.aws_compat` (default true): ALB's rule-size limits are enforced.
    pub aws_compat: bool,
}

impl Snapshot {
    /// Rules over all listeners (default actions not counted).
    pub fn rule_count(&self) -> usize {
        self.listeners.iter().map(|l| l.rules.len()).sum()
    }

    /// The one-line summary `fulcrum check` prints and a reload answers with.
    pub fn summary(&self) -> String {
        fn plural(n: usize, one: &str, many: &str) -> String {
            format!("{n} {}", if n == 1 { one } else { many })
        }
        format!(
            "{}, {}, {}",
            plural(self.listeners.len(), "listener", "listeners"),
            plural(self.target_groups.len(), "target group", "target groups"),
            plural(self.rule_count(), "rule", "rules"),
        )
    }

    pub fn group(&self, id: GroupId) -> &TargetGroup {
        &self.target_groups[id.0 as usize]
    }

    pub fn group_by_name(&self, name: &str) -> Option<&TargetGroup> {
        self.target_groups.iter().find(|g| g.name == name)
    }
}

/// Where this snapshot came from.
#[derive(Clone, Debug)]
pub struct ConfigSource {
    /// The config file as given (absolute when it was given relative).
    pub path: PathBuf,
    /// SHA-256 of the file's bytes, lower-case hex.
    pub sha256: String,
    pub loaded_at: SystemTime,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NodeSettings {
    /// `node.name`, overridden by `FULCRUM_NODE_NAME`; default the host name.
    pub name: String,
    /// `node.zone`, overridden by `FULCRUM_NODE_ZONE`; default `default`.
    pub zone: String,
    /// Key that signs sticky cookies; `None`: a random key per process start.
    pub secret_file: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RuntimeSettings {
    /// 0 = one per CPU. Restart needed to change.
    pub worker_threads: usize,
    /// Client connections over all listeners (default 100000).
    pub max_connections: usize,
    /// Default 0s.
    pub shutdown_delay: Duration,
    /// Default 30s.
    pub shutdown_timeout: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AdminSettings {
    /// `None` when `admin.bind` is `off`. Default 127.0.0.1:9900.
    pub bind: Option<SocketAddr>,
    pub token_file: Option<PathBuf>,
    /// Where the `admin` section starts in the file (line 1, column 1 without one),
    /// for errors about it found at reload.
    pub at: crate::config::Pos,
}

#[derive(Clone, Debug, PartialEq)]
pub enum AccessLogDest {
    Off,
    Stdout,
    File(PathBuf),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessLogFormat {
    Alb,
    Json,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AccessLogSettings {
    pub dest: AccessLogDest,
    pub format: AccessLogFormat,
    /// Where `access_log.path` is written (line 1, column 1 without one), for
    /// an error opening it found at start or reload.
    pub path_at: crate::config::Pos,
}

impl AccessLogSettings {
    /// Whether `other` writes the same lines to the same place (its position in
    /// the file aside).
    pub fn same_output(&self, other: &AccessLogSettings) -> bool {
        self.dest == other.dest && self.format == other.format
    }
}

pub struct Certificate {
    pub name: String,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub loaded: LoadedCert,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerProtocol {
    Http,
    Https,
    Tcp,
    Tls,
}

impl ListenerProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerProtocol::Http => "http",
            ListenerProtocol::Https => "https",
            ListenerProtocol::Tcp => "tcp",
            ListenerProtocol::Tls => "tls",
        }
    }

    /// http and https listeners run the HTTP engine and rules.
    pub fn is_l7(self) -> bool {
        matches!(self, ListenerProtocol::Http | ListenerProtocol::Https)
    }

    pub fn terminates_tls(self) -> bool {
        matches!(self, ListenerProtocol::Https | ListenerProtocol::Tls)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsPolicy {
    /// TLS 1.2 and 1.3 (default).
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XffMode {
    Append,
    Preserve,
    Remove,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DesyncMode {
    Monitor,
    Defensive,
    Strictest,
}

pub struct Listener {
    pub id: ListenerId,
    pub name: String,
    pub protocol: ListenerProtocol,
    pub bind: SocketAddr,
    /// Where `bind` stands in the file and its field path, for a bind that fails
    /// at start or reload (`FILE:LINE:COL: listeners[0].bind: …`).
    pub bind_at: (crate::config::Pos, String),
    /// Source CIDRs allowed in (default: all of IPv4 and IPv6).
    pub allow: Vec<IpNet>,
    /// https/tls: the first is the default certificate.
    pub certificates: Vec<CertId>,
    pub tls_policy: TlsPolicy,
    /// Default 60s (http/https) or 350s (tcp/tls).
    pub idle_timeout: Duration,
    /// Default 1h.
    pub client_keep_alive: Duration,
    /// Default 10s.
    pub header_timeout: Duration,
    pub xff: XffMode,
    pub desync_mitigation: DesyncMode,
    /// Sorted by ascending priority.
    pub rules: Vec<Rule>,
    /// Index over `rules` for lookups that do not visit every rule.
    pub table: crate::router::table::RuleTable,
    pub default_action: Action,
}

pub struct Rule {
    pub priority: u32,
    pub conditions: Conditions,
    pub action: Action,
}

/// All present conditions must match; values within one condition are alternatives.
#[derive(Default)]
pub struct Conditions {
    pub host: Vec<Pattern>,
    pub path: Vec<Pattern>,
    pub method: Vec<String>,
    /// Header name (lower-case) and its value patterns.
    pub headers: Vec<(String, Vec<Pattern>)>,
    /// Query conditions; any one of them matching satisfies the condition.
    pub query: Vec<QueryCondition>,
    pub source_ip: Vec<IpNet>,
}

pub struct QueryCondition {
    pub key: Option<Pattern>,
    pub value: Pattern,
}

pub enum Action {
    Forward(Forward),
    Redirect(Redirect),
    FixedResponse(FixedResponse),
}

pub struct Forward {
    /// One or more groups with weights 0..999 (a single group has weight 1).
    pub groups: Vec<(GroupId, u32)>,
    /// Group stickiness duration (`FULCRUMLBTG` cookie), weighted forwards only.
    pub stickiness: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedirectProtocol {
    /// `#{protocol}`: the request's own.
    Keep,
    Http,
    Https,
}

/// A redirect; text fields are templates that may hold `#{protocol}`, `#{host}`,
/// `#{port}`, `#{path}` and `#{query}`.
#[derive(Clone, Debug, PartialEq)]
pub struct Redirect {
    pub protocol: RedirectProtocol,
    /// Default `#{host}`.
    pub host: String,
    /// Default `#{port}`.
    pub port: String,
    /// Whether the config gave `port` (even as `#{port}`): without it a protocol
    /// change moves to the new scheme's default port.
    pub port_given: bool,
    /// Default `/#{path}`.
    pub path: String,
    /// Default `#{query}`.
    pub query: String,
    /// 301 or 302.
    pub status: u16,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FixedResponse {
    pub status: u16,
    /// Default `text/plain`.
    pub content_type: String,
    pub body: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupProtocol {
    Http,
    Https,
    Tcp,
    Tls,
}

impl GroupProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupProtocol::Http => "http",
            GroupProtocol::Https => "https",
            GroupProtocol::Tcp => "tcp",
            GroupProtocol::Tls => "tls",
        }
    }

    pub fn is_l7(self) -> bool {
        matches!(self, GroupProtocol::Http | GroupProtocol::Https)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
    LeastOutstandingRequests,
    WeightedRandom,
    SourceHash,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::LeastOutstandingRequests => "least_outstanding_requests",
            Algorithm::WeightedRandom => "weighted_random",
            Algorithm::SourceHash => "source_hash",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stickiness {
    /// `FULCRUMLB` cookie set by the balancer.
    LbCookie { duration: Duration },
    /// Follow the application's cookie; the balancer sets `FULCRUMLBAPP`.
    AppCookie {
        duration: Duration,
        cookie_name: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthProtocol {
    Http,
    Https,
    Tcp,
    Tls,
}

#[derive(Clone, Debug, PartialEq)]
pub struct HealthCheck {
    pub protocol: HealthProtocol,
    /// `None`: the traffic port (each target's own port).
    pub port: Option<u16>,
    /// Default `/`.
    pub path: String,
    /// Host header; `None`: the target address.
    pub host: Option<String>,
    /// 1s..300s, default 30s.
    pub interval: Duration,
    /// 100ms..120s and less than interval, default 5s.
    pub timeout: Duration,
    /// 1..10, default 5.
    pub healthy_threshold: u32,
    /// 1..10, default 2.
    pub unhealthy_threshold: u32,
    /// Inclusive status ranges; default `200`.
    pub matcher: Vec<(u16, u16)>,
}

impl HealthCheck {
    pub fn matches(&self, status: u16) -> bool {
        self.matcher
            .iter()
            .any(|(lo, hi)| (*lo..=*hi).contains(&status))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// As configured (`10.0.1.10:8080` or `host:8080`): the target's identity.
    pub address: String,
    /// Resolved at load and reload.
    pub addr: SocketAddr,
    /// Default `node.zone`.
    pub zone: String,
    /// 0..999, default 1.
    pub weight: u32,
}

pub struct TargetGroup {
    pub id: GroupId,
    pub name: String,
    pub protocol: GroupProtocol,
    pub algorithm: Algorithm,
    /// Zero: off.
    pub slow_start: Duration,
    /// Default 300s.
    pub deregistration_delay: Duration,
    pub cross_zone: bool,
    pub fail_open: bool,
    /// Default 50s.
    pub keep_alive_timeout: Duration,
    pub stickiness: Option<Stickiness>,
    pub proxy_protocol_v2: bool,
    pub verify_tls: bool,
    pub ca_file: Option<PathBuf>,
    pub health_check: HealthCheck,
    pub targets: Vec<Target>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpTls {
    StartTls,
    Tls,
    None,
}

/// Where a secret comes from; it is read when needed, never logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct SmtpSettings {
    pub host: String,
    /// Default 587 (starttls), 465 (tls) or 25 (none).
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<SecretSource>,
    pub password: Option<SecretSource>,
    pub ca_file: Option<PathBuf>,
    /// Default 10s.
    pub timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AlertEvent {
    TargetUnhealthy,
    TargetHealthy,
    AllTargetsUnhealthy,
    ConfigReloadFailed,
}

impl AlertEvent {
    pub const ALL: [AlertEvent; 4] = [
        AlertEvent::TargetUnhealthy,
        AlertEvent::TargetHealthy,
        AlertEvent::AllTargetsUnhealthy,
        AlertEvent::ConfigReloadFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertEvent::TargetUnhealthy => "target_unhealthy",
            AlertEvent::TargetHealthy => "target_healthy",
            AlertEvent::AllTargetsUnhealthy => "all_targets_unhealthy",
            AlertEvent::ConfigReloadFailed => "config_reload_failed",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct AlertSettings {
    pub smtp: SmtpSettings,
    pub from: String,
    pub to: Vec<String>,
    /// Default: all four events.
    pub events: Vec<AlertEvent>,
    /// Default 30s.
    pub batch_window: Duration,
    /// Recipients per second, may be fractional; default 1.
    pub max_send_rate: f64,
    /// Recipients per rolling 24 hours; default 200.
    pub max_per_day: u32,
    /// Default /var/lib/fulcrum/alerts.
    pub spool_dir: PathBuf,
}

/// The snapshot shared by the runtime.
pub type SharedSnapshot = Arc<Snapshot>;
