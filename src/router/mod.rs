//! Request routing: condition matchers (wildcard patterns, CIDRs) and, later, the
//! per-listener rule tables built from the snapshot.

pub mod pattern;
