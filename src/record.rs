//! One record per HTTP request (http/https listeners) or per connection (tcp/tls
//! listeners), filled along the way by the data path and handed to the access
//! log, which only formats it (SPEC §10). Built only while an access log is on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[derive(Clone, Debug)]
pub struct Record {
    /// `http`, `https`, `ws`, `wss`, `tcp` or `tls`.
    pub kind: &'static str,
    /// When the response (or connection) ended.
    pub time: SystemTime,
    /// The listener's name (ALB's `elb` field).
    pub listener: Arc<str>,
    pub client: SocketAddr,
    pub target: Option<SocketAddr>,
    /// From the request's first byte to sending it to the target (`None`: -1).
    pub request_processing: Option<Duration>,
    /// From sending to the target to its response head (`None`: -1).
    pub target_processing: Option<Duration>,
    /// From the response head to the last byte sent to the client (`None`: -1).
    pub response_processing: Option<Duration>,
    pub elb_status: Option<u16>,
    pub target_status: Option<u16>,
    pub received_bytes: u64,
    pub sent_bytes: u64,
    /// `METHOD scheme://host:port/path?query HTTP/1.1` (empty for tcp/tls).
    pub request: String,
    pub user_agent: Option<String>,
    pub ssl_cipher: Option<&'static str>,
    pub ssl_protocol: Option<&'static str>,
    pub target_group: Option<Arc<str>>,
    pub trace_id: Option<String>,
    /// The SNI name the client sent.
    pub domain_name: Option<String>,
    /// The name of the certificate chosen.
    pub chosen_cert: Option<String>,
    /// The matched rule's priority, 0 for the default action, `None` when
    /// routing did not happen.
    pub matched_rule_priority: Option<u32>,
    /// When the request's first byte arrived (connection start for tcp/tls).
    pub request_creation_time: SystemTime,
    /// `forward`, `redirect`, `fixed-response` (comma separated when several).
    pub actions_executed: &'static str,
    pub redirect_url: Option<String>,
    /// Why the balancer answered itself or the exchange failed (ALB names where
    /// they exist, such as `TargetConnectionErrorCode`).
    pub error_reason: Option<&'static str>,
    /// Desync classification when not compliant (`Acceptable`, `Ambiguous`, `Severe`).
    pub classification: Option<&'static str>,
    pub classification_reason: Option<&'static str>,
}

impl Record {
    /// An empty record for a request or connection that started `at`.
    pub fn new(
        kind: &'static str,
        listener: Arc<str>,
        client: SocketAddr,
        at: SystemTime,
    ) -> Record {
        Record {
            kind,
            time: at,
            listener,
            client,
            target: None,
            request_processing: None,
            target_processing: None,
            response_processing: None,
            elb_status: None,
            target_status: None,
            received_bytes: 0,
            sent_bytes: 0,
            request: String::new(),
            user_agent: None,
            ssl_cipher: None,
            ssl_protocol: None,
            target_group: None,
            trace_id: None,
            domain_name: None,
            chosen_cert: None,
            matched_rule_priority: None,
            request_creation_time: at,
            actions_executed: "",
            redirect_url: None,
            error_reason: None,
            classification: None,
            classification_reason: None,
        }
    }
}
