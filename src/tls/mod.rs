//! TLS: certificate loading, SNI resolution, policies.
pub mod certs;
