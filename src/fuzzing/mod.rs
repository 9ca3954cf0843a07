//! Check functions for the cargo-fuzz targets in `fuzz/` and for the replay of their
//! corpora and crash inputs in `tests/fuzz_regressions.rs` (not part of the product).
//!
//! Each check takes arbitrary bytes, feeds them to the code that reads untrusted input,
//! and panics when an invariant breaks: a panic inside the code under test, work that
//! is not bounded by the input, or a differential check that disagrees (a forwarded
//! head that re-parses differently, a rule index that answers differently from the
//! linear scan, a chunked body that does not decode back to itself). Inputs are read
//! as they would arrive wherever possible, so seeds stay readable; the few checks that
//! need choices take them from a [`Cursor`] over the leading bytes.

use std::ops::Range;

mod chunked;
mod config;
mod pattern;
mod proxy_v2;
mod request;
mod response;
mod rules;

pub use chunked::chunked;
pub use config::config;
pub use pattern::pattern;
pub use proxy_v2::proxy_v2;
pub use request::request_head;
pub use response::response_head;
pub use rules::rule_table;

/// A check: panics when an invariant breaks on this input.
pub type Check = fn(&[u8]);

/// Every check by the name of its fuzz target (`fuzz/fuzz_targets/<name>.rs`) and its
/// corpus and regression directories (`fuzz/corpus/<name>/`, `fuzz/regressions/<name>/`).
pub const TARGETS: [(&str, Check); 7] = [
    ("request_head", request_head),
    ("response_head", response_head),
    ("chunked", chunked),
    ("proxy_v2", proxy_v2),
    ("pattern", pattern),
    ("rule_table", rule_table),
    ("config", config),
];

/// Reads choices from fuzz input; past the end every read gives zeros, so any input,
/// the empty one included, is a valid program.
pub(crate) struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Cursor { data }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub(crate) fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    pub(crate) fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    /// Uniform enough in `0..n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { self.byte() as usize % n }
    }

    /// Up to `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// Everything left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        self.take(self.data.len())
    }
}

/// Lossy text, for messages.
pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Header (name, value) pairs as bytes.
/// Parses `buf` whole and again one byte at a time with `parse` (a resumable head
/// parser must give the same answer either way); returns the answer and both heads.
pub(crate) fn whole_and_stepped<H: Default, E: PartialEq + std::fmt::Debug>(
    buf: &[u8],
    mut parse: impl FnMut(&[u8], &mut H) -> Result<Option<()>, E>,
) -> (Result<Option<()>, E>, H, H) {
    let mut whole = H::default();
    let got = parse(buf, &mut whole);
    let mut step = H::default();
    let mut stepped = Ok(None);
    for end in 0..=buf.len() {
        stepped = parse(&buf[..end], &mut step);
        if stepped != Ok(None) {
            break;
        }
    }
    assert_eq!(
        got,
        stepped,
        "byte-at-a-time parse differs: {:?}",
        text(buf)
    );
    (got, whole, step)
}

pub(crate) type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// The header lines of a parsed head, as bytes.
pub(crate) fn pairs(buf: &[u8], headers: &[(Range<usize>, Range<usize>)]) -> Pairs {
    headers
        .iter()
        .map(|(n, v)| (buf[n.clone()].to_vec(), buf[v.clone()].to_vec()))
        .collect()
}

/// Header pairs as text, for messages.
pub(crate) fn lossy(p: &Pairs) -> Vec<(String, String)> {
    p.iter().map(|(n, v)| (text(n), text(v))).collect()
}

/// The header names the `Connection` headers list (their own options left out).
pub(crate) fn connection_listed(headers: &Pairs) -> Vec<&[u8]> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"connection"))
        .flat_map(|(_, v)| v.split(|&b| b == b','))
        .map(trim)
        .filter(|t| {
            !t.is_empty()
                && !["close", "keep-alive", "upgrade"]
                    .iter()
                    .any(|o| t.eq_ignore_ascii_case(o.as_bytes()))
        })
        .collect()
}

/// A name some servers read as Transfer-Encoding or Content-Length (`_` for `-`).
pub(crate) fn framing_like(n: &[u8]) -> bool {
    ["transfer-encoding", "content-length"].iter().any(|lit| {
        n.len() == lit.len()
            && n.iter()
                .zip(lit.bytes())
                .all(|(a, b)| a.eq_ignore_ascii_case(&b) || (*a == b'_' && b == b'-'))
    })
}

fn trim(v: &[u8]) -> &[u8] {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = v.iter().position(|b| !ows(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !ows(b)).map_or(start, |e| e + 1);
    &v[start..end]
}
