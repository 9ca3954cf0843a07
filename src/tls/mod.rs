//! TLS: certificate loading, SNI resolution, policies.
pub mod certs;
pub mod client;
pub mod server;
