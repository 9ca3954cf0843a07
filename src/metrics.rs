//! Every metric name of SPEC §9 as a constant, described once at start-up, and the
//! handle sets the data path increments (registered once, never looked up by name
//! per request). A labelled series appears the first time it is used.

use std::sync::OnceLock;

use metrics::{
    Counter, Gauge, Histogram, Unit, describe_counter, describe_gauge, describe_histogram,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const REQUESTS: &str = "fulcrum_requests_total";
pub const LB_RESPONSES: &str = "fulcrum_lb_responses_total";
pub const TARGET_RESPONSES: &str = "fulcrum_target_responses_total";
pub const TARGET_RESPONSE_SECONDS: &str = "fulcrum_target_response_seconds";
pub const REDIRECTS: &str = "fulcrum_redirects_total";
pub const FIXED_RESPONSES: &str = "fulcrum_fixed_responses_total";
pub const RETRIES: &str = "fulcrum_retries_total";
pub const ACTIVE_CONNECTIONS: &str = "fulcrum_active_connections";
pub const CONNECTIONS: &str = "fulcrum_connections_total";
pub const REJECTED_CONNECTIONS: &str = "fulcrum_rejected_connections_total";
pub const PROCESSED_BYTES: &str = "fulcrum_processed_bytes_total";
pub const TARGET_CONNECTION_ERRORS: &str = "fulcrum_target_connection_errors_total";
pub const HEALTHY_TARGETS: &str = "fulcrum_healthy_targets";
pub const UNHEALTHY_TARGETS: &str = "fulcrum_unhealthy_targets";
pub const TARGET_STATE: &str = "fulcrum_target_state";
pub const HEALTH_CHECKS: &str = "fulcrum_health_checks_total";
pub const DESYNC_REQUESTS: &str = "fulcrum_desync_requests_total";
pub const CONFIG_RELOADS: &str = "fulcrum_config_reloads_total";
pub const CONFIG_LAST_RELOAD: &str = "fulcrum_config_last_reload_timestamp_seconds";
pub const ALERTS_SENT: &str = "fulcrum_alerts_sent_total";
pub const ALERTS_FAILED: &str = "fulcrum_alerts_failed_total";
pub const ALERTS_DROPPED: &str = "fulcrum_alerts_dropped_total";
pub const ALERTS_QUEUED: &str = "fulcrum_alerts_queued";
pub const ACCESS_LOG_DROPPED: &str = "fulcrum_access_log_dropped_total";
/// Not in SPEC §9: failed writes and removals in the alert spool.
pub const ALERTS_SPOOL_ERRORS: &str = "fulcrum_alerts_spool_errors_total";
/// Not an ELB twin: tcp connections that took the splice(2) path.
pub const L4_SPLICE: &str = "fulcrum_l4_splice_connections_total";

/// Histogram buckets (seconds) of SPEC §9.
pub const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder (once per process) and describes every metric.
/// Returns the handle `/metrics` renders from.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            let builder = match builder.set_buckets(BUCKETS) {
                Ok(b) => b,
                Err(_) => PrometheusBuilder::new(),
            };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // A second recorder in the same process (tests) keeps the first.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    describe_counter!(REQUESTS, "Requests routed to a target (RequestCount).");
    describe_counter!(
        LB_RESPONSES,
        "Responses the load balancer generated itself, by status code (HTTPCode_ELB_*)."
    );
    describe_counter!(
        TARGET_RESPONSES,
        "Target responses by class 2xx..5xx (HTTPCode_Target_*)."
    );
    describe_histogram!(
        TARGET_RESPONSE_SECONDS,
        Unit::Seconds,
        "From request sent to response head received (TargetResponseTime)."
    );
    describe_counter!(REDIRECTS, "Redirect actions executed.");
    describe_counter!(FIXED_RESPONSES, "Fixed-response actions executed.");
    describe_counter!(RETRIES, "Requests retried on another target.");
    describe_gauge!(
        ACTIVE_CONNECTIONS,
        "Open client connections (ActiveConnectionCount)."
    );
    describe_counter!(
        CONNECTIONS,
        "Accepted client connections (NewConnectionCount)."
    );
    describe_counter!(
        REJECTED_CONNECTIONS,
        "Client connections closed at accept: max_connections or not_allowed (RejectedConnectionCount)."
    );
    describe_counter!(
        PROCESSED_BYTES,
        Unit::Bytes,
        "Bytes in from clients and out to them (ProcessedBytes)."
    );
    describe_counter!(
        TARGET_CONNECTION_ERRORS,
        "Failed connections to targets (TargetConnectionErrorCount)."
    );
    describe_gauge!(
        HEALTHY_TARGETS,
        "Healthy targets per group and zone (HealthyHostCount)."
    );
    describe_gauge!(
        UNHEALTHY_TARGETS,
        "Unhealthy targets per group and zone (UnHealthyHostCount)."
    );
    describe_gauge!(
        TARGET_STATE,
        "1 for the target's current state, 0 for the others."
    );
    describe_counter!(HEALTH_CHECKS, "Health checks by result.");
    describe_counter!(
        DESYNC_REQUESTS,
        "Non-compliant requests seen, by desync classification."
    );
    describe_counter!(CONFIG_RELOADS, "Config reloads by result.");
    describe_gauge!(
        CONFIG_LAST_RELOAD,
        Unit::Seconds,
        "Unix time of the last successful config load."
    );
    describe_counter!(ALERTS_SENT, "Alert emails accepted by the relay.");
    describe_counter!(ALERTS_FAILED, "Alert sends that failed, by kind.");
    describe_counter!(ALERTS_DROPPED, "Alert events dropped, by reason.");
    describe_gauge!(ALERTS_QUEUED, "Alert events waiting in the spool.");
    describe_counter!(
        ALERTS_SPOOL_ERRORS,
        "Alert spool writes and removals that failed (a full disk, say)."
    );
    describe_counter!(
        ACCESS_LOG_DROPPED,
        "Access-log lines dropped because the writer fell behind or the file could not take them."
    );
}

/// A counter created on first use, then kept (so a series appears once used).
#[derive(Default)]
pub struct LazyCounter {
    cell: OnceLock<Counter>,
}

impl LazyCounter {
    pub fn get(&self, make: impl FnOnce() -> Counter) -> &Counter {
        self.cell.get_or_init(make)
    }
}

/// Per-listener handles.
pub struct ListenerMetrics {
    pub name: String,
    pub connections: Counter,
    pub active: Gauge,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    rejected_not_allowed: LazyCounter,
    rejected_max: LazyCounter,
    /// By status code, 100..=599 (index code - 100).
    lb_responses: Box<[LazyCounter]>,
    pub redirects: LazyCounter,
    pub fixed_responses: LazyCounter,
    desync: [LazyCounter; 3],
}

impl ListenerMetrics {
    pub fn new(name: &str) -> ListenerMetrics {
        let l = name.to_owned();
        ListenerMetrics {
            connections: metrics::counter!(CONNECTIONS, "listener" => l.clone()),
            active: metrics::gauge!(ACTIVE_CONNECTIONS, "listener" => l.clone()),
            bytes_in: metrics::counter!(PROCESSED_BYTES, "listener" => l.clone(), "direction" => "in"),
            bytes_out: metrics::counter!(PROCESSED_BYTES, "listener" => l.clone(), "direction" => "out"),
            rejected_not_allowed: LazyCounter::default(),
            rejected_max: LazyCounter::default(),
            lb_responses: (100..600).map(|_| LazyCounter::default()).collect(),
            redirects: LazyCounter::default(),
            fixed_responses: LazyCounter::default(),
            desync: Default::default(),
            name: l,
        }
    }

    pub fn rejected(&self, reason: RejectReason) {
        let (cell, label) = match reason {
            RejectReason::NotAllowed => (&self.rejected_not_allowed, "not_allowed"),
            RejectReason::MaxConnections => (&self.rejected_max, "max_connections"),
        };
        cell.get(|| metrics::counter!(REJECTED_CONNECTIONS, "listener" => self.name.clone(), "reason" => label))
            .increment(1);
    }

    /// Counts a response the balancer generated itself: an error, a redirect or a
    /// fixed response (HTTPCode_ELB_*).
    pub fn lb_response(&self, code: u16) {
        if let Some(cell) = usize::from(code)
            .checked_sub(100)
            .and_then(|i| self.lb_responses.get(i))
        {
            cell
                .get(|| metrics::counter!(LB_RESPONSES, "listener" => self.name.clone(), "code" => code.to_string()))
                .increment(1);
        }
    }

    /// Counts a non-compliant request (`acceptable`, `ambiguous` or `severe`).
    pub fn desync(&self, classification: &'static str) {
        let i = match classification {
            "acceptable" => 0,
            "ambiguous" => 1,
            "severe" => 2,
            _ => return,
        };
        self.desync[i]
            .get(|| metrics::counter!(DESYNC_REQUESTS, "listener" => self.name.clone(), "classification" => classification))
            .increment(1);
    }

    pub fn redirect(&self) {
        self.redirects
            .get(|| metrics::counter!(REDIRECTS, "listener" => self.name.clone()))
            .increment(1);
    }

    pub fn fixed_response(&self) {
        self.fixed_responses
            .get(|| metrics::counter!(FIXED_RESPONSES, "listener" => self.name.clone()))
            .increment(1);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    NotAllowed,
    MaxConnections,
}

/// Per-target-group handles.
pub struct GroupMetrics {
    pub name: String,
    responses: [LazyCounter; 4],
    pub response_seconds: Histogram,
    retries: LazyCounter,
    connection_errors: LazyCounter,
}

impl GroupMetrics {
    pub fn new(name: &str) -> GroupMetrics {
        GroupMetrics {
            name: name.to_owned(),
            responses: Default::default(),
            response_seconds: metrics::histogram!(TARGET_RESPONSE_SECONDS, "target_group" => name.to_owned()),
            retries: LazyCounter::default(),
            connection_errors: LazyCounter::default(),
        }
    }

    /// Counts a target response by class (2xx..5xx; 1xx is not counted).
    pub fn response(&self, status: u16) {
        let class = status / 100;
        if !(2..=5).contains(&class) {
            return;
        }
        let label = ["2xx", "3xx", "4xx", "5xx"][usize::from(class - 2)];
        self.responses[usize::from(class - 2)]
            .get(|| metrics::counter!(TARGET_RESPONSES, "target_group" => self.name.clone(), "code_class" => label))
            .increment(1);
    }

    pub fn retry(&self) {
        self.retries
            .get(|| metrics::counter!(RETRIES, "target_group" => self.name.clone()))
            .increment(1);
    }

    pub fn connection_error(&self) {
        self.connection_errors
            .get(
                || metrics::counter!(TARGET_CONNECTION_ERRORS, "target_group" => self.name.clone()),
            )
            .increment(1);
    }
}

/// `fulcrum_requests_total{listener,target_group}` for one pair.
pub fn requests(listener: &str, group: &str) -> Counter {
    metrics::counter!(REQUESTS, "listener" => listener.to_owned(), "target_group" => group.to_owned())
}

/// Counts a reload and, on success, stamps its time.
/// The config was loaded at start: the last-reload time is set; the start is not
/// counted as a reload.
pub fn loaded() {
    set_last_reload();
}

/// Counts a reload by its result; a success also sets the last-reload time.
pub fn reload(success: bool) {
    let result = if success { "success" } else { "failure" };
    metrics::counter!(CONFIG_RELOADS, "result" => result).increment(1);
    if success {
        set_last_reload();
    }
}

fn set_last_reload() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    metrics::gauge!(CONFIG_LAST_RELOAD).set(now);
}
