//! fulcrum: a self-hosted L4/L7 load balancer appliance in the manner of AWS
//! Elastic Load Balancing. One YAML file ([`config`]) is validated and compiled
//! into one immutable [`snapshot::Snapshot`] that the runtime publishes; listeners,
//! rules, target groups, health checks and alerts all read from it.

#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod alerts;
pub mod balancer;
pub mod cli;
pub mod config;
pub mod demo;
/// Check functions for `fuzz/` and `tests/fuzz_regressions.rs` (not part of the product).
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod http;
pub mod l4;
pub mod listener;
pub mod live;
pub mod metrics;
pub mod net;
pub mod record;
pub mod router;
pub mod server;
pub mod snapshot;
pub mod systemd;
pub mod targets;
pub mod tls;
pub mod util;
pub mod worker;

/// The crate version, as `fulcrum --version` prints it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Installs aws-lc-rs as the process's rustls crypto provider (the only one in the
/// build). Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
