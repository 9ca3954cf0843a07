//! Health checking (SPEC §4): the pure per-target state machine ([`state`]) that
//! turns check outcomes into ALB states and reason codes, and the prober
//! ([`probe`]) that runs one check over a real socket. Decisions live in `state`;
//! `probe` only moves bytes and classifies what happened.

pub mod probe;
pub mod state;
pub mod worker;
