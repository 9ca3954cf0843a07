//! The per-listener rule index: built once per snapshot from the listener's rules
//! (sorted by ascending priority), it answers "which rule matches first" by looking
//! at a few candidate lists instead of every rule.
//!
//! Invariant: every candidate list holds rule indices in ascending order, and for
//! every request the lists a lookup gathers hold, together, every rule that can
//! match it (an index only ever narrows by a condition the rule requires).
//! Candidates are then checked in ascending index order with the full `matches`,
//! so the answer is exactly the linear scan's.
//!
//! - Host index: rules whose every host pattern is an exact name (hash map), ends
//!   in a literal with a dot (`*.example.com`, `*shop.example.com`, `?.cdn.example.org`:
//!   keyed by that literal from its first dot, found by looking up the request
//!   host's dot-suffixes; `*` spans dots, so `a.b.example.com` finds `.example.com`),
//!   or else starts with one (`www.example.*`: keyed by the literal up to its last
//!   dot, found among the host's dot-prefixes).
//! - Path index: other rules whose every path pattern starts with a literal
//!   (`/api/v3/*`, `/img/*/thumb?.png` under `/img/`) or is exact: a path-compressed
//!   byte trie walked along the request path.
//! - Residual: the rest (no host and no path, `*`-led paths, `*admin*` hosts,
//!   header/query/method/source-ip-only rules), candidates for every request.
//!
//! Before the full match, each candidate passes a guard: a few bit tests of
//! necessary conditions (method, source network, first and last bytes and byte
//! classes of host and path, header names and value bytes, query keys or values)
//! that turn most residual rules away in a few nanoseconds.
//!
//! Residual rules are candidates for every request, so their guards are also kept
//! transposed (the [`Sieve`]): per guard bit, the set of residual rules it turns
//! away. A lookup ORs the sets of the bits its request has and merges only the
//! residual rules left, which costs a few word operations per request bit instead
//! of a guard check per residual rule.
//!
//! A lookup allocates nothing and takes no lock: the lists it merges sit in a small
//! array on the stack, and the rare request that would need more (or an over-long
//! host with upper-case letters) is answered by the linear scan.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::pattern::{Pattern, PatternKind};
use super::{RequestView, matches};
use crate::snapshot::{Conditions, QueryCondition, Rule};

/// Candidate lists one lookup merges at most; beyond, it scans linearly.
const MAX_SOURCES: usize = 16;
/// Residual rules from which on a table sifts them: below, checking each guard
/// costs about what the sieve does (measured with `cargo bench --bench rules`).
const SIEVE_MIN: usize = 32;
/// Residual rules a lookup's sieve may leave on the stack; more, and the lookup
/// merges the whole residual list (every candidate still passes its guard).
const SIEVE_KEPT: usize = 32;
/// Longest host that is lower-cased on the stack (DNS names have at most 253).
const HOST_BUF: usize = 256;

/// The rule index of one listener; see the module docs.
pub struct RuleTable {
    /// `rules.len()` at build time; a lookup with other rules scans linearly.
    len: usize,
    /// Exact host (ASCII lower-case) to rule indices.
    exact: KeyMap,
    /// Host suffix starting at a dot (ASCII lower-case) to rule indices.
    dot_suffix: KeyMap,
    /// Host prefix ending at a dot (ASCII lower-case) to rule indices.
    dot_prefix: KeyMap,
    paths: PathTrie,
    residual: Box<[u32]>,
    /// The guards of `residual`'s rules, transposed.
    sieve: Sieve,
    /// Cheap necessary conditions, by rule index.
    guards: Box<[Guard]>,
}

/// How the rules were spread over the indexes (for tests and benches).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    pub rules: usize,
    pub by_host: usize,
    pub by_path: usize,
    pub residual: usize,
}

impl RuleTable {
    /// Indexes `rules` (a listener's, sorted by ascending priority); lookups then
    /// return indices into the same slice.
    pub fn build(rules: &[Rule]) -> RuleTable {
        RuleTable::sifting_from(rules, SIEVE_MIN)
    }

    /// [`RuleTable::build`], with the residual rules sifted (see [`Sieve`]) when
    /// there are at least `min` of them; tests and the fuzz oracle pass 1 to try
    /// the sieve on small rule sets.
    pub fn sifting_from(rules: &[Rule], min: usize) -> RuleTable {
        let mut exact = Lists::default();
        let mut dot_suffix = Lists::default();
        let mut dot_prefix = Lists::default();
        let mut paths = TrieBuilder::new();
        let mut residual = Vec::new();
        // Indices are u32; a listener never has that many rules, but stay correct.
        let len = if u32::try_from(rules.len()).is_ok_and(|n| n < u32::MAX) {
            rules.len()
        } else {
            usize::MAX
        };
        for (i, rule) in rules.iter().enumerate().take(len) {
            let i = i as u32;
            let c = &rule.conditions;
            if let Some(keys) = host_keys(&c.host) {
                for key in keys {
                    match key {
                        HostKey::Exact(k) => exact.add(k, i),
                        HostKey::DotSuffix(k) => dot_suffix.add(k, i),
                        HostKey::DotPrefix(k) => dot_prefix.add(k, i),
                    }
                }
            } else if let Some(keys) = path_keys(&c.path) {
                for (key, exact_only) in keys {
                    paths.add(key, exact_only, i);
                }
            } else {
                residual.push(i);
            }
        }
        let guards: Box<[Guard]> = rules.iter().map(|r| Guard::of(&r.conditions)).collect();
        // (A missing guard cannot happen; the default one turns nothing away.)
        let residual_guards: Vec<Guard> = residual
            .iter()
            .map(|&i| guards.get(i as usize).copied().unwrap_or_default())
            .collect();
        let sieve = if residual_guards.len() >= min {
            Sieve::build(&residual_guards)
        } else {
            Sieve::default()
        };
        RuleTable {
            len,
            exact: exact.freeze(),
            dot_suffix: dot_suffix.freeze(),
            dot_prefix: dot_prefix.freeze(),
            paths: paths.freeze(),
            residual: residual.into_boxed_slice(),
            sieve,
            guards,
        }
    }

    /// How many rules each index holds (a rule in both host maps counts once).
    pub fn stats(&self) -> TableStats {
        let mut host = vec![false; self.guards.len()];
        let maps = [&self.exact, &self.dot_suffix, &self.dot_prefix];
        for list in maps.iter().flat_map(|m| m.map.values()) {
            for &i in list.iter() {
                if let Some(h) = host.get_mut(i as usize) {
                    *h = true;
                }
            }
        }
        let by_host = host.iter().filter(|h| **h).count();
        TableStats {
            rules: self.guards.len(),
            by_host,
            by_path: self.guards.len() - by_host - self.residual.len(),
            residual: self.residual.len(),
        }
    }

    /// The index in `rules` of the first rule whose conditions all match `req`: the
    /// same answer as `rules.iter().position(|r| matches(&r.conditions, req))`.
    /// `rules` must be the slice the table was built from (otherwise this falls
    /// back to that linear scan).
    pub fn first_match(&self, rules: &[Rule], req: &RequestView) -> Option<usize> {
        if rules.len() != self.len {
            return linear(rules, req);
        }
        let mut lower;
        let host = if req
            .host
            .bytes()
            .fold(false, |u, b| u | b.is_ascii_uppercase())
        {
            lower = [0u8; HOST_BUF];
            let Some(buf) = lower.get_mut(..req.host.len()) else {
                return linear(rules, req);
            };
            buf.copy_from_slice(req.host.as_bytes());
            buf.make_ascii_lowercase();
            &*buf
        } else {
            req.host.as_bytes()
        };
        // Before `src`, which may borrow it.
        let mut kept = [0u32; SIEVE_KEPT];
        let mut src = Sources::new();
        if let Some(list) = self.exact.get(host) {
            src.push(list);
        }
        // A key with d dots can only be the part of the host from (or up to) its
        // d-th dot from the end (or the start).
        let mut end = host.len();
        for depth in 1..=self.dot_suffix.max_dots {
            let Some(dot) = host
                .get(..end)
                .and_then(|h| h.iter().rposition(|&b| b == b'.'))
            else {
                break;
            };
            if let Some(list) = host
                .get(dot..)
                .and_then(|k| self.dot_suffix.get_at(depth, k))
            {
                src.push(list);
            }
            end = dot;
        }
        let mut start = 0;
        for depth in 1..=self.dot_prefix.max_dots {
            let Some(dot) = host
                .get(start..)
                .and_then(|h| h.iter().position(|&b| b == b'.'))
            else {
                break;
            };
            let dot = start + dot;
            if let Some(list) = host
                .get(..=dot)
                .and_then(|k| self.dot_prefix.get_at(depth, k))
            {
                src.push(list);
            }
            start = dot + 1;
        }
        self.paths.collect(req.path.as_bytes(), &mut src);
        let mut probe = Probe::new(req, host);
        match self.sieve.sift(&mut probe, &self.residual, &mut kept) {
            Some(left) => src.push(left),
            None => src.push(&self.residual),
        }
        if src.overflow {
            return linear(rules, req);
        }
        while let Some(i) = src.next() {
            let i = i as usize;
            if let (Some(g), Some(r)) = (self.guards.get(i), rules.get(i)) {
                if probe.admits(g) && matches(&r.conditions, req) {
                    return Some(i);
                }
            }
        }
        None
    }
}

fn linear(rules: &[Rule], req: &RequestView) -> Option<usize> {
    rules.iter().position(|r| matches(&r.conditions, req))
}

/// Up to [`MAX_SOURCES`] non-empty sorted candidate lists, merged on the fly.
struct Sources<'a> {
    lists: [&'a [u32]; MAX_SOURCES],
    n: usize,
    overflow: bool,
    /// The list now being drained, while its head is below `bound` (the least
    /// head of the others): most steps take one element without comparing lists.
    run: usize,
    bound: u32,
}

impl<'a> Sources<'a> {
    fn new() -> Self {
        Sources {
            lists: [&[]; MAX_SOURCES],
            n: 0,
            overflow: false,
            run: 0,
            bound: 0,
        }
    }

    fn push(&mut self, list: &'a [u32]) {
        if list.is_empty() {
            return;
        }
        match self.lists.get_mut(self.n) {
            Some(slot) => {
                *slot = list;
                self.n += 1;
            }
            None => self.overflow = true,
        }
    }

    /// Takes the smallest candidate left over all lists; each comes once, in
    /// ascending order.
    #[inline]
    fn next(&mut self) -> Option<u32> {
        if let Some(list) = self.lists.get_mut(self.run) {
            if let Some((&head, rest)) = list.split_first() {
                if head < self.bound {
                    *list = rest;
                    return Some(head);
                }
            }
        }
        self.step()
    }

    /// Takes the least head (from every list it heads), drops lists that run out,
    /// and picks the next run.
    fn step(&mut self) -> Option<u32> {
        let live = self.lists.get_mut(..self.n).unwrap_or_default();
        let min = live.iter().filter_map(|l| l.first()).copied().min()?;
        let mut n = 0;
        let (mut least, mut second) = ((u32::MAX, 0), u32::MAX);
        for j in 0..live.len() {
            let list = live.get(j).copied().unwrap_or_default();
            let rest = match list {
                [first, rest @ ..] if *first == min => rest,
                _ => list,
            };
            if let (Some(&head), Some(slot)) = (rest.first(), live.get_mut(n)) {
                *slot = rest;
                if head < least.0 {
                    (least, second) = ((head, n), least.0);
                } else {
                    second = second.min(head);
                }
                n += 1;
            }
        }
        self.n = n;
        // With no list left, `run` points past them all.
        (self.run, self.bound) = if n == 0 {
            (usize::MAX, 0)
        } else {
            (least.1, second)
        };
        Some(min)
    }
}

/// Per-rule necessary conditions, checked before the full match, that turn most
/// candidates away in a few instructions.
///
/// A request is described by the states it is in (its method, the class of its
/// host's first byte, the byte classes missing from its path, ...), one bit each
/// in [`WORDS`] words; a rule lists the states it cannot match in. The rule is
/// turned away when the two share a bit. States fold many requests together, so
/// a guard may let a rule through that then fails, never the reverse.
#[derive(Clone, Copy, Debug, Default)]
struct Guard {
    forbid: [u64; WORDS],
    /// Exact query keys, and exact values of keyless conditions ([`sample_bit`]):
    /// the request has one of them when every condition is such (0s: no test).
    query_any: [u64; 2],
    /// Header names the rule requires, [`sample_bit`]: all present (0: no test).
    headers_all: u64,
    /// For one header of the rule (slot: its name's [`sample_bit`] index), the
    /// byte classes all its value patterns have (0: no test).
    header_value: u64,
    header_slot: u8,
}

/// Word 0: method, source address buckets, emptiness. Then, by [`byte_class`]:
/// first and last host byte, last path byte, classes absent from host and path.
const WORDS: usize = 6;
const METHOD_BITS: u64 = 0x3ff;
/// 16 buckets by first octet (the last one: IPv6).
const SRC8_SHIFT: u32 = 10;
/// 32 buckets by first two octets (the last one: IPv6).
const SRC16_SHIFT: u32 = 26;
const HOST_EMPTY: u64 = 1 << 58;
const PATH_EMPTY: u64 = 1 << 59;
const QUERY_EMPTY: u64 = 1 << 60;

const KEY_SEED: u64 = 0x4b45_5900;
const VALUE_SEED: u64 = 0x5641_4c00;
const HEADER_SEED: u64 = 0x4844_5200;

impl Guard {
    fn of(c: &Conditions) -> Guard {
        let mut f = [0u64; WORDS];
        if !c.method.is_empty() {
            f[0] |= METHOD_BITS & !c.method.iter().fold(0, |m, name| m | method_bit(name));
        }
        if !c.query.is_empty() {
            f[0] |= QUERY_EMPTY;
        }
        // No host condition matches an empty host, `*` included (see `matches`).
        if !c.host.is_empty() {
            f[0] |= HOST_EMPTY;
        }
        f[0] |= source_forbid(&c.source_ip);
        let plain_host = c.host.iter().all(|p| !p.options().backslash_escapes);
        let plain_path = c
            .path
            .iter()
            .all(|p| !p.options().case_insensitive && !p.options().backslash_escapes);
        let first = |p: &Pattern| p.as_str().bytes().next();
        let last = |p: &Pattern| p.as_str().bytes().next_back();
        if plain_host && !c.host.is_empty() {
            let lower = |b: u8| b.to_ascii_lowercase();
            if let Some(ok) = end_classes(&c.host, |p| first(p).map(lower)) {
                (f[0], f[1]) = (f[0] | HOST_EMPTY, !ok);
            }
            if let Some(ok) = end_classes(&c.host, |p| last(p).map(lower)) {
                (f[0], f[2]) = (f[0] | HOST_EMPTY, !ok);
            }
            f[4] = c
                .host
                .iter()
                .fold(u64::MAX, |m, p| m & literal_classes(p, true));
        }
        if plain_path && !c.path.is_empty() {
            if let Some(ok) = end_classes(&c.path, last) {
                (f[0], f[3]) = (f[0] | PATH_EMPTY, !ok);
            }
            f[5] = c
                .path
                .iter()
                .fold(u64::MAX, |m, p| m & literal_classes(p, false));
        }
        // The header whose values need the most byte classes.
        let (header_slot, header_value) = c
            .headers
            .iter()
            .filter(|(_, values)| !values.is_empty())
            .filter(|(_, values)| values.iter().all(|p| !p.options().backslash_escapes))
            .map(|(name, values)| {
                let need = values
                    .iter()
                    .fold(u64::MAX, |m, p| m & literal_classes(p, true));
                (sample_index(name.as_bytes(), HEADER_SEED), need)
            })
            .max_by_key(|(_, need)| need.count_ones())
            .unwrap_or_default();
        Guard {
            forbid: f,
            query_any: query_guard(&c.query).unwrap_or_default(),
            headers_all: c.headers.iter().fold(0, |m, (name, _)| {
                m | sample_bit(name.as_bytes(), HEADER_SEED)
            }),
            header_value,
            header_slot,
        }
    }
}

/// The guards of a table's residual rules, transposed: for each guard bit, the set
/// of residual rules (bit `k` of a set: the `k`-th residual rule) whose guard
/// holds it. [`Sieve::sift`] turns away exactly the rules [`Probe::admits`] would,
/// but for the header-value test, which the merged candidates still pass.
///
/// A set is `stride` blocks of 256 rules; the stride is fixed per table (1, 2, 4
/// or 8) so that a lookup ORs whole sets held in registers.
#[derive(Default)]
struct Sieve {
    /// Residual rules (0: none, or too many to sift).
    rules: usize,
    stride: usize,
    /// Set of (forbid word `w`, bit `b`) at `(w * 64 + b) * stride`.
    forbid: Box<[Block]>,
    /// Per forbid word, the bits some rule forbids.
    forbid_any: [u64; WORDS],
    /// Set of header-name bit `b` (rules requiring it) at `b * stride`.
    headers: Box<[Block]>,
    headers_any: u64,
    /// Rules with a query test (at 0), then the rules each request key bit and
    /// each value bit lets through (at `(1 + b) * stride`, `(65 + b) * stride`).
    query: Box<[Block]>,
    query_any: bool,
}

/// 256 rules of a [`Sieve`] set.
type Block = [u64; 4];

/// Sets of the sieve, `stride` blocks each.
const SIEVE_MAX_STRIDE: usize = 8;

impl Sieve {
    fn build(guards: &[Guard]) -> Sieve {
        let n = guards.len();
        let stride = match n.div_ceil(256) {
            0 => return Sieve::default(),
            1 => 1,
            2 => 2,
            3 | 4 => 4,
            s if s <= SIEVE_MAX_STRIDE => SIEVE_MAX_STRIDE,
            _ => return Sieve::default(),
        };
        let mut s = Sieve {
            rules: n,
            stride,
            forbid: vec![Block::default(); WORDS * 64 * stride].into(),
            forbid_any: [0; WORDS],
            headers: vec![Block::default(); 64 * stride].into(),
            headers_any: 0,
            query: vec![Block::default(); 129 * stride].into(),
            query_any: false,
        };
        let add = |sets: &mut [Block], set: usize, k: usize| {
            if let Some(w) = sets
                .get_mut(set * stride + k / 256)
                .and_then(|b| b.get_mut(k % 256 / 64))
            {
                *w |= 1 << (k % 64);
            }
        };
        for (k, g) in guards.iter().enumerate() {
            for (w, &f) in g.forbid.iter().enumerate() {
                s.forbid_any[w] |= f;
                for b in bits(f) {
                    add(&mut s.forbid, w * 64 + b, k);
                }
            }
            s.headers_any |= g.headers_all;
            for b in bits(g.headers_all) {
                add(&mut s.headers, b, k);
            }
            if g.query_any != [0, 0] {
                s.query_any = true;
                add(&mut s.query, 0, k);
                for b in bits(g.query_any[0]) {
                    add(&mut s.query, 1 + b, k);
                }
                for b in bits(g.query_any[1]) {
                    add(&mut s.query, 65 + b, k);
                }
            }
        }
        s
    }

    /// The residual rules (from `residual`, in its order) that the request's guard
    /// bits do not turn away, written to `kept`; `None` when more are left than
    /// `kept` holds or there is no sieve (merge the whole list).
    fn sift<'k>(
        &self,
        probe: &mut Probe,
        residual: &[u32],
        kept: &'k mut [u32; SIEVE_KEPT],
    ) -> Option<&'k [u32]> {
        match self.stride {
            1 => self.sift_with::<1>(probe, residual, kept),
            2 => self.sift_with::<2>(probe, residual, kept),
            4 => self.sift_with::<4>(probe, residual, kept),
            SIEVE_MAX_STRIDE => self.sift_with::<SIEVE_MAX_STRIDE>(probe, residual, kept),
            _ => None,
        }
    }

    #[inline(always)]
    fn sift_with<'k, const S: usize>(
        &self,
        probe: &mut Probe,
        residual: &[u32],
        kept: &'k mut [u32; SIEVE_KEPT],
    ) -> Option<&'k [u32]> {
        fn or<const S: usize>(out: &mut [Block; S], sets: &[Block], set: usize) {
            if let Some(from) = sets.get(set * S..set * S + S) {
                for (o, x) in out.iter_mut().zip(from) {
                    for (o, x) in o.iter_mut().zip(x) {
                        *o |= x;
                    }
                }
            }
        }
        let mut away = [Block::default(); S];
        for (w, (&state, &any)) in probe.state.iter().zip(&self.forbid_any).enumerate() {
            for b in bits(state & any) {
                or(&mut away, &self.forbid, w * 64 + b);
            }
        }
        if self.headers_any != 0 {
            for b in bits(self.headers_any & !probe.header_bits()) {
                or(&mut away, &self.headers, b);
            }
        }
        if self.query_any {
            let [keys, values] = probe.query_bits();
            let mut pass = [Block::default(); S];
            for b in bits(keys) {
                or(&mut pass, &self.query, 1 + b);
            }
            for b in bits(values) {
                or(&mut pass, &self.query, 65 + b);
            }
            let tested = self.query.get(..S).unwrap_or_default();
            for ((o, t), p) in away.iter_mut().zip(tested).zip(&pass) {
                for ((o, t), p) in o.iter_mut().zip(t).zip(p) {
                    *o |= t & !p;
                }
            }
        }
        let mut n = 0;
        for (w, &gone) in away.iter().flatten().enumerate() {
            for b in bits(!gone) {
                let k = w * 64 + b;
                if k >= self.rules {
                    return kept.get(..n);
                }
                let slot = kept.get_mut(n)?;
                *slot = *residual.get(k)?;
                n += 1;
            }
        }
        kept.get(..n)
    }
}

/// The positions of the set bits of `m`, lowest first.
fn bits(mut m: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if m == 0 {
            return None;
        }
        let b = m.trailing_zeros() as usize;
        m &= m - 1;
        Some(b)
    })
}

/// The classes of the byte every pattern starts (or ends) with, when each has a
/// literal one there.
fn end_classes(patterns: &[Pattern], end: impl Fn(&Pattern) -> Option<u8>) -> Option<u64> {
    patterns.iter().try_fold(0, |m, p| {
        let b = end(p).filter(|b| !matches!(b, b'*' | b'?'))?;
        Some(m | class_bit(b))
    })
}

/// The classes of a pattern's literal bytes, ASCII lower-cased if `fold`.
fn literal_classes(p: &Pattern, fold: bool) -> u64 {
    p.as_str()
        .bytes()
        .filter(|b| !matches!(b, b'*' | b'?'))
        .fold(0, |m, b| {
            m | class_bit(if fold { b.to_ascii_lowercase() } else { b })
        })
}

/// The classes present in `text`; all of them for a text too long to scan here
/// (so that none counts as absent).
fn text_classes(text: &[u8]) -> u64 {
    if text.len() > HOST_BUF {
        return u64::MAX;
    }
    text.iter().fold(0, |m, &b| m | class_bit(b))
}

/// `[keys, values]` bits of a rule's query conditions, when each has an exact key
/// or no key and an exact value.
fn query_guard(query: &[QueryCondition]) -> Option<[u64; 2]> {
    query
        .iter()
        .try_fold([0, 0], |[keys, values], q| match &q.key {
            Some(k) if k.kind() == PatternKind::Exact => {
                Some([keys | sample_bit(k.literal()?.as_bytes(), KEY_SEED), values])
            }
            None if q.value.kind() == PatternKind::Exact => Some([
                keys,
                values | sample_bit(q.value.literal()?.as_bytes(), VALUE_SEED),
            ]),
            _ => None,
        })
}

/// One class of 64 per byte: its own for each lower-case letter, digit, `/`, `.`
/// and `-`; upper-case letters share 24; all other bytes share one.
const fn byte_class(b: u8) -> u8 {
    match b {
        b'a'..=b'z' => b - b'a',
        b'0'..=b'9' => 26 + b - b'0',
        b'A'..=b'Z' => 36 + (b - b'A') % 24,
        b'/' => 60,
        b'.' => 61,
        b'-' => 62,
        _ => 63,
    }
}

const CLASS_BITS: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = 1 << byte_class(b as u8);
        b += 1;
    }
    t
};

#[inline]
fn class_bit(b: u8) -> u64 {
    CLASS_BITS[usize::from(b)]
}

/// One of 64 for a name or value, from its length and three of its bytes, ASCII
/// lower-cased: equal texts (ignoring ASCII case) get the same index.
fn sample_index(text: &[u8], seed: u64) -> u8 {
    let at = |i: usize| u64::from(text.get(i).map_or(0, u8::to_ascii_lowercase));
    let n = text.len();
    let h = (n as u64) ^ at(0) << 8 ^ at(n / 2) << 16 ^ at(n.wrapping_sub(1)) << 24 ^ seed;
    (h.wrapping_mul(K) >> 58) as u8
}

fn sample_bit(text: &[u8], seed: u64) -> u64 {
    1 << sample_index(text, seed)
}

/// Source buckets `(src8, src16)` of an address: by first octet, by the first two,
/// the last bucket of each for IPv6.
fn source_buckets(ip: std::net::IpAddr) -> (u32, u32) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            (u32::from(a) % 15, (u32::from(a) << 8 | u32::from(b)) % 31)
        }
        std::net::IpAddr::V6(_) => (15, 31),
    }
}

/// The source buckets no address of `nets` is in (0 when there are no nets or
/// one is too wide to say).
fn source_forbid(nets: &[ipnet::IpNet]) -> u64 {
    if nets.is_empty() {
        return 0;
    }
    let (mut ok8, mut ok16, mut fine8, mut fine16) = (0u64, 0u64, true, true);
    for net in nets {
        let (b8, b16) = source_buckets(net.network());
        ok8 |= 1 << b8;
        ok16 |= 1 << b16;
        if let ipnet::IpNet::V4(n) = net {
            fine8 &= n.prefix_len() >= 8;
            fine16 &= n.prefix_len() >= 16;
        }
    }
    let mut forbid = 0;
    if fine8 {
        forbid |= (0xffff & !ok8) << SRC8_SHIFT;
    }
    if fine16 {
        forbid |= (0xffff_ffff & !ok16) << SRC16_SHIFT;
    }
    forbid
}

/// One request's side of the guards; header and query bits are gathered on first
/// need.
struct Probe<'r, 'a> {
    req: &'r RequestView<'a>,
    state: [u64; WORDS],
    query: Option<[u64; 2]>,
    headers: Option<u64>,
    /// By header-name slot (its low four bits), the byte classes of the values
    /// (ASCII lower-cased), for the slots in `values_done`.
    values: [u64; 16],
    values_done: u16,
}

impl<'r, 'a> Probe<'r, 'a> {
    /// `host` is the request's, ASCII lower-cased.
    fn new(req: &'r RequestView<'a>, host: &[u8]) -> Self {
        let path = req.path.as_bytes();
        let end = |b: Option<&u8>| b.map_or(0, |b| class_bit(*b));
        let (b8, b16) = source_buckets(req.source);
        let empty = |is: bool, bit: u64| if is { bit } else { 0 };
        Probe {
            req,
            state: [
                method_bit(req.method)
                    | 1 << (SRC8_SHIFT + b8)
                    | 1 << (SRC16_SHIFT + b16)
                    | empty(host.is_empty(), HOST_EMPTY)
                    | empty(path.is_empty(), PATH_EMPTY)
                    | empty(req.query.is_empty(), QUERY_EMPTY),
                end(host.first()),
                end(host.last()),
                end(path.last()),
                !text_classes(host),
                !text_classes(path),
            ],
            query: None,
            headers: None,
            values: [0; 16],
            values_done: 0,
        }
    }

    fn query_bits(&mut self) -> [u64; 2] {
        let req = self.req;
        *self.query.get_or_insert_with(|| query_bits(req.query))
    }

    fn header_bits(&mut self) -> u64 {
        let req = self.req;
        *self.headers.get_or_insert_with(|| header_bits(req))
    }

    #[inline]
    fn admits(&mut self, g: &Guard) -> bool {
        let hit = self
            .state
            .iter()
            .zip(&g.forbid)
            .fold(0, |m, (s, f)| m | (s & f));
        if hit != 0 {
            return false;
        }
        if g.query_any != [0, 0] {
            let [keys, values] = self.query_bits();
            if g.query_any[0] & keys | g.query_any[1] & values == 0 {
                return false;
            }
        }
        if g.headers_all != 0 && g.headers_all & !self.header_bits() != 0 {
            return false;
        }
        if g.header_value == 0 {
            return true;
        }
        let req = self.req;
        let slot = g.header_slot & 15;
        if self.values_done & 1 << slot == 0 {
            self.values_done |= 1 << slot;
            if let Some(v) = self.values.get_mut(usize::from(slot)) {
                *v = header_values(req, slot);
            }
        }
        self.values
            .get(usize::from(slot))
            .is_none_or(|have| g.header_value & !have == 0)
    }
}

/// The byte classes (ASCII lower-cased) of the values of the headers whose
/// name's slot has the low four bits `slot`.
fn header_values(req: &RequestView, slot: u8) -> u64 {
    let mut classes = 0;
    (req.headers)(&mut |name, value| {
        if sample_index(name.as_bytes(), HEADER_SEED) & 15 == slot {
            classes |= if value.len() > HOST_BUF {
                u64::MAX
            } else {
                value
                    .bytes()
                    .fold(0, |m, b| m | class_bit(b.to_ascii_lowercase()))
            };
        }
        false
    });
    classes
}

fn header_bits(req: &RequestView) -> u64 {
    let mut bits = 0;
    (req.headers)(&mut |name, _| {
        bits |= sample_bit(name.as_bytes(), HEADER_SEED);
        false
    });
    bits
}

/// `[keys, values]` bits of the percent-decoded keys and values, as the query
/// condition sees them; all bits for a part whose decoding is not plain ASCII
/// (lossy UTF-8 decoding could change it) or too long to sample on the stack.
fn query_bits(query: &str) -> [u64; 2] {
    query
        .as_bytes()
        .split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .fold([0, 0], |[keys, values], pair| {
            match pair.iter().position(|&b| b == b'=') {
                Some(eq) => {
                    let (k, v) = pair.split_at(eq);
                    [
                        keys | decoded_bit(k, KEY_SEED),
                        values | decoded_bit(v.get(1..).unwrap_or_default(), VALUE_SEED),
                    ]
                }
                // A bare token is a key with an empty value and also a value
                // (see `query_matches`).
                None => [
                    keys | decoded_bit(pair, KEY_SEED),
                    values | decoded_bit(&[], VALUE_SEED) | decoded_bit(pair, VALUE_SEED),
                ],
            }
        })
}

fn decoded_bit(part: &[u8], seed: u64) -> u64 {
    if !part.contains(&b'%') {
        return sample_bit(part, seed);
    }
    let mut buf = [0u8; 128];
    let mut n = 0;
    for b in percent_encoding::percent_decode(part) {
        match buf.get_mut(n) {
            Some(slot) if b.is_ascii() => *slot = b,
            _ => return u64::MAX,
        }
        n += 1;
    }
    sample_bit(buf.get(..n).unwrap_or_default(), seed)
}

/// One bit per common method, one shared by all others (exact, case-sensitive,
/// as the method condition compares).
fn method_bit(m: &str) -> u64 {
    match m {
        "GET" => 1,
        "HEAD" => 1 << 1,
        "POST" => 1 << 2,
        "PUT" => 1 << 3,
        "DELETE" => 1 << 4,
        "PATCH" => 1 << 5,
        "OPTIONS" => 1 << 6,
        "CONNECT" => 1 << 7,
        "TRACE" => 1 << 8,
        _ => 1 << 9,
    }
}

enum HostKey {
    Exact(Vec<u8>),
    DotSuffix(Vec<u8>),
    DotPrefix(Vec<u8>),
}

/// The host index keys of a host condition, or `None` when it has none or any of
/// its patterns cannot be indexed.
fn host_keys(host: &[Pattern]) -> Option<Vec<HostKey>> {
    if host.is_empty() {
        return None;
    }
    host.iter()
        .map(|p| {
            if p.options().backslash_escapes {
                return None;
            }
            if p.kind() == PatternKind::Exact {
                return Some(HostKey::Exact(
                    p.literal()?.to_ascii_lowercase().into_bytes(),
                ));
            }
            // The literal after the last wildcard must end the host; from its first
            // dot on, it is a suffix of the host that starts at one of its dots.
            // Failing that, the literal before the first wildcard must start it;
            // up to its last dot, it is a prefix of the host that ends at a dot.
            let src = p.as_str().to_ascii_lowercase();
            let tail = src.rfind(['*', '?']).map_or(&*src, |w| &src[w + 1..]);
            if let Some(dot) = tail.find('.') {
                return Some(HostKey::DotSuffix(tail.as_bytes()[dot..].to_vec()));
            }
            let lead = &src[..src.find(['*', '?']).unwrap_or(src.len())];
            let dot = lead.rfind('.')?;
            Some(HostKey::DotPrefix(lead.as_bytes()[..=dot].to_vec()))
        })
        .collect()
}

/// The path trie keys (literal, whether the pattern is exact) of a path
/// condition, or `None` when it has none or any pattern starts with a wildcard.
fn path_keys(path: &[Pattern]) -> Option<Vec<(&[u8], bool)>> {
    if path.is_empty() {
        return None;
    }
    path.iter()
        .map(|p| {
            if p.options().backslash_escapes || p.options().case_insensitive {
                return None;
            }
            if p.kind() == PatternKind::Exact {
                return Some((p.literal()?.as_bytes(), true));
            }
            let src = p.as_str();
            let lead = &src[..src.find(['*', '?']).unwrap_or(src.len())];
            (!lead.is_empty()).then_some((lead.as_bytes(), false))
        })
        .collect()
}

/// Multiply-rotate hashing for the host maps. Their keys come from the config;
/// clients only choose what is looked up, which cannot lengthen a probe.
#[derive(Default)]
struct KeyHasher(u64);

const K: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(<[u8; 8]>::try_from(c).unwrap_or_default());
            h = (h.rotate_left(26) ^ w).wrapping_mul(K);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            if let Some(dst) = w.get_mut(..rest.len()) {
                dst.copy_from_slice(rest);
            }
            h = (h.rotate_left(26) ^ u64::from_le_bytes(w) ^ rest.len() as u64).wrapping_mul(K);
        }
        self.0 = h;
    }

    fn write_usize(&mut self, n: usize) {
        // Only slice lengths come here; `write` already folds in the tail length.
        self.0 ^= n as u64;
    }

    fn finish(&self) -> u64 {
        let h = self.0;
        (h ^ (h >> 29)).wrapping_mul(K) ^ (h >> 32)
    }
}

/// Host keys to rule lists, with the key lengths and dot counts present, to skip
/// most misses without hashing.
struct KeyMap {
    map: HashMap<Box<[u8]>, Box<[u32]>, BuildHasherDefault<KeyHasher>>,
    /// Bit `min(len, 127)` for each key length.
    lengths: u128,
    /// Bit `min(dots, 63)` for each key's number of dots.
    depths: u64,
    /// Most dots in a key.
    max_dots: usize,
}

impl KeyMap {
    #[inline]
    fn get(&self, key: &[u8]) -> Option<&[u32]> {
        if self.lengths & (1 << key.len().min(127)) == 0 {
            return None;
        }
        self.map.get(key).map(|l| &**l)
    }

    /// [`KeyMap::get`] for a key known to hold `dots` dots.
    #[inline]
    fn get_at(&self, dots: usize, key: &[u8]) -> Option<&[u32]> {
        if self.depths & (1 << dots.min(63)) == 0 {
            return None;
        }
        self.get(key)
    }
}

/// Rule lists by key while building; each list ascending and without repeats.
#[derive(Default)]
struct Lists(HashMap<Vec<u8>, Vec<u32>>);

impl Lists {
    fn add(&mut self, key: Vec<u8>, rule: u32) {
        let list = self.0.entry(key).or_default();
        if list.last() != Some(&rule) {
            list.push(rule);
        }
    }

    fn freeze(self) -> KeyMap {
        let dots = |k: &[u8]| k.iter().filter(|&&b| b == b'.').count();
        KeyMap {
            lengths: self.0.keys().fold(0, |m, k| m | 1 << k.len().min(127)),
            depths: self.0.keys().fold(0, |m, k| m | 1 << dots(k).min(63)),
            max_dots: self.0.keys().map(|k| dots(k)).max().unwrap_or(0),
            map: self
                .0
                .into_iter()
                .map(|(k, v)| (k.into_boxed_slice(), v.into_boxed_slice()))
                .collect(),
        }
    }
}

/// Path-compressed byte trie over path-pattern literals. A node stands for the
/// bytes on the way to it: its `prefix` rules match paths that start with them,
/// its `exact` rules paths equal to them. A node without rules and with one child
/// is merged into that child, so a walk visits few nodes.
struct PathTrie {
    nodes: Box<[TrieNode]>,
    /// Children of all nodes, as (first byte of the child's label, child); each
    /// node's run sorted by byte.
    edges: Box<[(u8, u32)]>,
    /// The bytes of all node labels.
    labels: Box<[u8]>,
    rules: Box<[u32]>,
}

#[derive(Clone, Copy, Default)]
struct TrieNode {
    /// The bytes from the parent to this node.
    label: (u32, u32),
    edges: (u32, u32),
    prefix: (u32, u32),
    exact: (u32, u32),
}

fn run<T>(all: &[T], (start, end): (u32, u32)) -> &[T] {
    all.get(start as usize..end as usize).unwrap_or_default()
}

impl PathTrie {
    fn collect<'a>(&'a self, path: &[u8], src: &mut Sources<'a>) {
        let Some(mut node) = self.nodes.first() else {
            return;
        };
        let mut rest = path;
        loop {
            src.push(run(&self.rules, node.prefix));
            let Some(&b) = rest.first() else {
                src.push(run(&self.rules, node.exact));
                return;
            };
            let edges = run(&self.edges, node.edges);
            let next = if edges.len() <= 8 {
                edges.iter().find(|e| e.0 == b)
            } else {
                edges
                    .binary_search_by_key(&b, |e| e.0)
                    .ok()
                    .and_then(|i| edges.get(i))
            };
            let Some(child) = next.and_then(|&(_, n)| self.nodes.get(n as usize)) else {
                return;
            };
            match rest.strip_prefix(run(&self.labels, child.label)) {
                Some(r) => (rest, node) = (r, child),
                None => return,
            }
        }
    }
}

#[derive(Default)]
struct BuildNode {
    children: std::collections::BTreeMap<u8, u32>,
    prefix: Vec<u32>,
    exact: Vec<u32>,
}

struct TrieBuilder(Vec<BuildNode>);

impl TrieBuilder {
    fn new() -> Self {
        TrieBuilder(vec![BuildNode::default()])
    }

    fn add(&mut self, key: &[u8], exact: bool, rule: u32) {
        let mut at = 0usize;
        for &b in key {
            let fresh = self.0.len() as u32;
            let Some(node) = self.0.get_mut(at) else {
                return;
            };
            let next = *node.children.entry(b).or_insert(fresh);
            if next == fresh {
                self.0.push(BuildNode::default());
            }
            at = next as usize;
        }
        if let Some(node) = self.0.get_mut(at) {
            let list = if exact {
                &mut node.exact
            } else {
                &mut node.prefix
            };
            if list.last() != Some(&rule) {
                list.push(rule);
            }
        }
    }

    fn freeze(self) -> PathTrie {
        let mut parts = Parts::default();
        self.emit(0, &[], &mut parts);
        PathTrie {
            nodes: parts.nodes.into_boxed_slice(),
            edges: parts.edges.into_boxed_slice(),
            labels: parts.labels.into_boxed_slice(),
            rules: parts.rules.into_boxed_slice(),
        }
    }

    /// Appends the node for build node `at` (reached through `label`) and, before
    /// its own edges, its subtree; returns its index.
    fn emit(&self, at: usize, label: &[u8], out: &mut Parts) -> u32 {
        let index = out.nodes.len();
        out.nodes.push(TrieNode::default());
        let Some(b) = self.0.get(at) else {
            return index as u32;
        };
        let mut children = Vec::with_capacity(b.children.len());
        for (&byte, &child) in &b.children {
            // Follow the chain of rule-less single-child nodes.
            let mut chain = vec![byte];
            let mut c = child as usize;
            while let Some(n) = self.0.get(c) {
                match n.children.first_key_value() {
                    Some((&next_byte, &next))
                        if n.children.len() == 1 && n.prefix.is_empty() && n.exact.is_empty() =>
                    {
                        chain.push(next_byte);
                        c = next as usize;
                    }
                    _ => break,
                }
            }
            children.push((byte, self.emit(c, &chain, out)));
        }
        let node = TrieNode {
            label: Parts::span(&mut out.labels, label),
            edges: Parts::span(&mut out.edges, &children),
            prefix: Parts::span(&mut out.rules, &b.prefix),
            exact: Parts::span(&mut out.rules, &b.exact),
        };
        if let Some(slot) = out.nodes.get_mut(index) {
            *slot = node;
        }
        index as u32
    }
}

/// A [`PathTrie`]'s arrays while it is built.
#[derive(Default)]
struct Parts {
    nodes: Vec<TrieNode>,
    edges: Vec<(u8, u32)>,
    labels: Vec<u8>,
    rules: Vec<u32>,
}

impl Parts {
    fn span<T: Copy>(v: &mut Vec<T>, items: &[T]) -> (u32, u32) {
        let start = v.len() as u32;
        v.extend_from_slice(items);
        (start, v.len() as u32)
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use proptest::prelude::*;

    use super::*;
    use crate::router::pattern::PatternOptions;
    use crate::router::rulegen::{self, LookupKind};
    use crate::snapshot::{Action, FixedResponse, QueryCondition};

    /// An owned request; `host` is used as given (not lower-cased).
    #[derive(Clone, Debug)]
    struct Req {
        host: String,
        path: String,
        query: String,
        method: String,
        headers: Vec<(String, String)>,
        source: IpAddr,
    }

    fn req(host: &str, path: &str) -> Req {
        Req {
            host: host.into(),
            path: path.into(),
            query: String::new(),
            method: "GET".into(),
            headers: Vec::new(),
            source: "10.1.2.3".parse().unwrap(),
        }
    }

    impl Req {
        fn view<R>(&self, f: impl FnOnce(&RequestView) -> R) -> R {
            let headers = |visit: &mut dyn FnMut(&str, &str) -> bool| {
                self.headers.iter().any(|(n, v)| visit(n, v))
            };
            f(&RequestView {
                host: &self.host,
                path: &self.path,
                query: &self.query,
                method: &self.method,
                headers: &headers,
                source: self.source,
            })
        }
    }

    fn rule(c: Conditions) -> Rule {
        Rule {
            priority: 0,
            conditions: c,
            action: Action::FixedResponse(FixedResponse {
                status: 200,
                content_type: String::new(),
                body: String::new(),
            }),
        }
    }

    fn host(ps: &[&str]) -> Conditions {
        Conditions {
            host: pats(ps, PatternOptions::HOST),
            ..Conditions::default()
        }
    }

    fn path(ps: &[&str]) -> Conditions {
        Conditions {
            path: pats(ps, PatternOptions::PATH),
            ..Conditions::default()
        }
    }

    fn pats(ps: &[&str], opts: PatternOptions) -> Vec<Pattern> {
        ps.iter().map(|p| Pattern::compile(p, opts)).collect()
    }

    /// `table`'s answer, checked against the scan and a table that sifts every
    /// residual list.
    fn first(table: &RuleTable, rules: &[Rule], r: &Req) -> Option<usize> {
        let sifting = RuleTable::sifting_from(rules, 1);
        r.view(|v| {
            let got = table.first_match(rules, v);
            assert_eq!(got, linear(rules, v), "{r:?}");
            assert_eq!(sifting.first_match(rules, v), got, "sieve: {r:?}");
            got
        })
    }

    /// `(host, path, expected)` against `rules`.
    fn expect(rules: &[Rule], cases: &[(&str, &str, Option<usize>)]) {
        let table = RuleTable::build(rules);
        for &(h, p, want) in cases {
            assert_eq!(first(&table, rules, &req(h, p)), want, "{h:?} {p:?}");
        }
    }

    #[test]
    fn exact_hosts() {
        let rules = [
            rule(host(&["a.example.com"])),
            rule(host(&["b.example.com"])),
        ];
        assert_eq!(RuleTable::build(&rules).stats().by_host, 2);
        expect(
            &rules,
            &[
                ("a.example.com", "/", Some(0)),
                ("b.example.com", "/x", Some(1)),
                ("c.example.com", "/", None),
                ("example.com", "/", None),
                ("a.example.com.", "/", None),
            ],
        );
    }

    #[test]
    fn suffix_wildcards_span_labels() {
        let rules = [
            rule(host(&["*.example.com"])),
            rule(host(&["*shop.example.org"])),
            rule(host(&["*.b.example.net"])),
        ];
        assert_eq!(RuleTable::build(&rules).stats().residual, 0);
        expect(
            &rules,
            &[
                ("test.example.com", "/", Some(0)),
                ("a.b.example.com", "/", Some(0)),
                ("x.y.z.example.com", "/", Some(0)),
                (".example.com", "/", Some(0)),
                ("example.com", "/", None),
                ("test.example.com.evil", "/", None),
                ("shop.example.org", "/", Some(1)),
                ("myshop.example.org", "/", Some(1)),
                ("a.myshop.example.org", "/", Some(1)),
                ("hop.example.org", "/", None),
                ("a.b.example.net", "/", Some(2)),
                ("b.example.net", "/", None),
                ("ab.example.net", "/", None),
            ],
        );
    }

    #[test]
    fn question_marks() {
        let rules = [
            rule(host(&["?.cdn.example.com"])),
            rule(host(&["www.*.example.???"])),
            rule(path(&["/v?/items/*"])),
            rule(path(&["*/thumb?.png"])),
        ];
        let s = RuleTable::build(&rules).stats();
        assert_eq!((s.by_host, s.by_path, s.residual), (2, 1, 1));
        expect(
            &rules,
            &[
                ("a.cdn.example.com", "/", Some(0)),
                ("ab.cdn.example.com", "/", None),
                (".cdn.example.com", "/", None),
                ("www.shop.example.com", "/", Some(1)),
                ("www.shop.example.co", "/", None),
                ("x", "/v2/items/9", Some(2)),
                ("x", "/v10/items/9", None),
                ("x", "/img/a/thumb1.png", Some(3)),
                ("x", "/img/a/thumb.png", None),
            ],
        );
    }

    #[test]
    fn mixed_host_values() {
        let rules = [
            rule(host(&[
                "api.example.com",
                "*.api.example.com",
                "api-?.example.net",
            ])),
            // One value no index serves puts the whole rule in the residual list.
            rule(host(&["admin.example.com", "*admin*"])),
            rule(host(&["*.example.com", "example.com"])),
            rule(host(&[
                "www.example.*",
                "*.cdn.example.org",
                "static.example.org",
            ])),
        ];
        let s = RuleTable::build(&rules).stats();
        assert_eq!((s.by_host, s.residual), (3, 1));
        expect(
            &rules,
            &[
                ("api.example.com", "/", Some(0)),
                ("v1.api.example.com", "/", Some(0)),
                ("api-7.example.net", "/", Some(0)),
                ("api-77.example.net", "/", None),
                ("admin.example.com", "/", Some(1)),
                ("myadmin.internal", "/", Some(1)),
                ("example.com", "/", Some(2)),
                ("x.example.com", "/", Some(2)),
                ("www.example.co.uk", "/", Some(3)),
                ("www.example.", "/", Some(3)),
                ("www.example", "/", None),
                ("wwwexample.com", "/", None),
                ("a.www.example.net", "/", None),
                ("a.b.cdn.example.org", "/", Some(3)),
                ("static.example.org", "/", Some(3)),
            ],
        );
    }

    #[test]
    fn host_and_path() {
        let both = |h: &str, p: &str| Conditions {
            host: pats(&[h], PatternOptions::HOST),
            path: pats(&[p], PatternOptions::PATH),
            ..Conditions::default()
        };
        let rules = [
            rule(both("a.example.com", "/api/*")),
            rule(both("*.example.com", "/static/*")),
            rule(path(&["/api/*", "/v2"])),
            rule(both("a.example.com", "*")),
            rule(path(&["/"])),
        ];
        expect(
            &rules,
            &[
                ("a.example.com", "/api/x", Some(0)),
                ("b.example.com", "/api/x", Some(2)),
                ("a.example.com", "/static/x", Some(1)),
                ("a.example.com", "/other", Some(3)),
                ("b.example.com", "/v2", Some(2)),
                ("b.example.com", "/v2/", None),
                ("b.example.com", "/", Some(4)),
                ("a.example.com", "/", Some(3)),
                ("", "/api", None),
            ],
        );
    }

    #[test]
    fn residual_rules_interleave_with_indexed() {
        let header = Conditions {
            headers: vec![(
                "x-env".into(),
                pats(&["beta*"], PatternOptions::HEADER_VALUE),
            )],
            ..Conditions::default()
        };
        let query = Conditions {
            query: vec![QueryCondition {
                key: Some(Pattern::compile("debug", PatternOptions::QUERY)),
                value: Pattern::compile("t*", PatternOptions::QUERY),
            }],
            ..Conditions::default()
        };
        let source = Conditions {
            source_ip: vec!["10.0.0.0/8".parse().unwrap()],
            method: vec!["POST".into()],
            ..Conditions::default()
        };
        let rules = [
            rule(path(&["/api/*"])),
            rule(header),
            rule(host(&["a.example.com"])),
            rule(query),
            rule(host(&["*.example.com"])),
            rule(source),
            rule(path(&["/*"])),
        ];
        let s = RuleTable::build(&rules).stats();
        assert_eq!((s.by_host, s.by_path, s.residual), (2, 2, 3));
        let table = RuleTable::build(&rules);
        let mut r = req("a.example.com", "/api/1");
        assert_eq!(first(&table, &rules, &r), Some(0));
        r.path = "/x".into();
        assert_eq!(first(&table, &rules, &r), Some(2));
        r.headers.push(("X-Env".into(), "BETA-1".into()));
        assert_eq!(first(&table, &rules, &r), Some(1));
        r.headers.clear();
        r.host = "b.example.com".into();
        r.query = "debug=%74rue".into();
        assert_eq!(first(&table, &rules, &r), Some(3));
        r.query.clear();
        assert_eq!(first(&table, &rules, &r), Some(4));
        r.host = "other".into();
        assert_eq!(first(&table, &rules, &r), Some(6));
        r.method = "POST".into();
        assert_eq!(first(&table, &rules, &r), Some(5));
        r.source = "192.0.2.1".parse().unwrap();
        assert_eq!(first(&table, &rules, &r), Some(6));
        r.path = "x".into();
        assert_eq!(first(&table, &rules, &r), None);
    }

    /// Residual lists of every sieve stride (and one too long to sift), with
    /// requests that leave none, a few, and more than `SIEVE_KEPT` rules.
    #[test]
    fn sieve_strides_and_overflow_agree_with_the_scan() {
        let residual_rule = |i: usize| match i % 4 {
            0 => Conditions {
                headers: vec![(
                    format!("x-h{}", i % 50),
                    pats(&[&format!("v{i}")], PatternOptions::HEADER_VALUE),
                )],
                ..Conditions::default()
            },
            1 => Conditions {
                query: vec![QueryCondition {
                    key: Some(Pattern::compile(
                        &format!("k{}", i % 30),
                        PatternOptions::QUERY,
                    )),
                    value: Pattern::compile(&format!("{i}*"), PatternOptions::QUERY),
                }],
                ..Conditions::default()
            },
            2 => Conditions {
                source_ip: vec![format!("10.{}.0.0/16", i % 200).parse().unwrap()],
                method: vec!["POST".into()],
                ..Conditions::default()
            },
            _ => Conditions {
                method: vec!["PUT".into()],
                headers: if i % 8 == 3 {
                    vec![("x-put".into(), pats(&["*"], PatternOptions::HEADER_VALUE))]
                } else {
                    Vec::new()
                },
                ..Conditions::default()
            },
        };
        for n in [40, 300, 700, 1500, 2100] {
            let rules: Vec<Rule> = (0..n).map(|i| rule(residual_rule(i))).collect();
            assert_eq!(RuleTable::build(&rules).stats().residual, n);
            let table = RuleTable::build(&rules);
            let last = n - 1 - (n - 1) % 4;
            let mut cases = vec![(req("a.test", "/"), None)];
            let mut r = req("a.test", "/");
            r.headers.push(("X-H8".into(), "v108".into()));
            cases.push((r, (n > 108).then_some(108)));
            let mut r = req("a.test", "/");
            r.headers
                .push((format!("x-h{}", last % 50), format!("v{last}")));
            cases.push((r, Some(last)));
            let mut r = req("a.test", "/");
            r.query = "k29=299".into();
            cases.push((r, Some(29)));
            let mut r = req("a.test", "/");
            r.method = "POST".into();
            r.source = "10.6.0.1".parse().unwrap();
            cases.push((r, Some(6)));
            let mut r = req("a.test", "/");
            r.method = "PUT".into();
            cases.push((r.clone(), Some(7)));
            r.headers.push(("x-put".into(), "1".into()));
            cases.push((r, Some(3)));
            for (r, want) in &cases {
                assert_eq!(first(&table, &rules, r), *want, "{n} rules: {r:?}");
            }
        }
        // More survivors than the sieve keeps, with the answer past the last one
        // it could keep: the whole list is merged, not the first survivors only.
        let rules: Vec<Rule> = (0..40)
            .map(|i| {
                rule(Conditions {
                    method: vec!["PUT".into()],
                    headers: vec![(
                        "x-put".into(),
                        pats(&[&format!("v{i}")], PatternOptions::HEADER_VALUE),
                    )],
                    ..Conditions::default()
                })
            })
            .collect();
        let table = RuleTable::sifting_from(&rules, 1);
        let mut r = req("a.test", "/");
        r.method = "PUT".into();
        r.headers.push(("x-put".into(), "v39".into()));
        assert_eq!(first(&table, &rules, &r), Some(39));
    }

    #[test]
    fn query_guards_see_decoded_text() {
        let keyless = |v: &str| Conditions {
            query: vec![QueryCondition {
                key: None,
                value: Pattern::compile(v, PatternOptions::QUERY),
            }],
            ..Conditions::default()
        };
        let keyed = Conditions {
            query: vec![QueryCondition {
                key: Some(Pattern::compile("Version", PatternOptions::QUERY)),
                value: Pattern::compile("2*", PatternOptions::QUERY),
            }],
            ..Conditions::default()
        };
        let rules = [
            rule(keyed),
            rule(keyless("é")),
            rule(keyless("\u{fffd}")),
            rule(keyless("a*b")),
        ];
        let table = RuleTable::build(&rules);
        let mut r = req("x", "/");
        for (query, want) in [
            ("VERSION=2", Some(0)),
            ("%56ersion=2.1", Some(0)),
            ("version", None),
            ("x=%C3%A9", Some(1)),
            ("x=%C3%89", None),
            ("x=%E9", Some(2)),
            // A bare token is also a value for the keyless conditions.
            ("%FF", Some(2)),
            ("%FF=%FF", Some(2)),
            ("x&%C3%A9", Some(1)),
            ("x=a%2Ab", Some(3)),
            ("x=ab&", Some(3)),
        ] {
            r.query = query.into();
            assert_eq!(first(&table, &rules, &r), want, "{query}");
        }
    }

    #[test]
    fn source_and_method_guards() {
        let src = |nets: &[&str], methods: &[&str]| Conditions {
            source_ip: nets.iter().map(|n| n.parse().unwrap()).collect(),
            method: methods.iter().map(|m| (*m).to_owned()).collect(),
            ..Conditions::default()
        };
        let rules = [
            rule(src(&["10.1.2.3/16"], &["POST"])),
            rule(src(&["10.9.0.0/8", "2001:db8::/32"], &[])),
            rule(src(&["0.0.0.0/0"], &["BREW"])),
            rule(src(&["172.16.0.0/12"], &[])),
        ];
        let table = RuleTable::build(&rules);
        let mut r = req("x", "/");
        for (ip, method, want) in [
            ("10.1.200.1", "POST", Some(0)),
            ("10.1.200.1", "GET", Some(1)),
            ("10.2.0.1", "POST", Some(1)),
            ("2001:db8::1", "POST", Some(1)),
            ("::ffff:10.1.2.3", "POST", None),
            ("11.1.2.3", "BREW", Some(2)),
            ("11.1.2.3", "brew", None),
            ("172.31.9.9", "GET", Some(3)),
            ("172.32.0.1", "GET", None),
        ] {
            r.source = ip.parse().unwrap();
            r.method = method.into();
            assert_eq!(first(&table, &rules, &r), want, "{ip} {method}");
        }
    }

    #[test]
    fn empty_host_of_http_1_0() {
        let rules = [
            rule(host(&["*.example.com"])),
            rule(host(&["example.com"])),
            rule(host(&["*"])),
            rule(path(&["/a*"])),
        ];
        // No host condition matches the empty host, `*` included (SPEC §3).
        expect(&rules, &[("", "/a", Some(3)), ("", "/b", None)]);
        let rules = [rule(host(&["*.example.com"])), rule(path(&["/a*"]))];
        expect(&rules, &[("", "/a", Some(1)), ("", "/b", None)]);
    }

    #[test]
    fn host_case_is_ignored_path_case_is_not() {
        // The loader lower-cases host patterns; Pattern folds them too.
        let rules = [
            rule(host(&["API.Example.COM"])),
            rule(host(&["*.Example.ORG"])),
            rule(host(&["Api-?.EXAMPLE.net"])),
            rule(path(&["/API/*"])),
        ];
        expect(
            &rules,
            &[
                ("api.example.com", "/", Some(0)),
                ("Api.EXAMPLE.com", "/", Some(0)),
                ("A.B.EXAMPLE.ORG", "/", Some(1)),
                ("API-X.example.NET", "/", Some(2)),
                ("x", "/API/a", Some(3)),
                ("x", "/api/a", None),
                ("É.example.org", "/", Some(1)),
            ],
        );
        let long = format!("{}.EXAMPLE.org", "A".repeat(HOST_BUF));
        expect(&rules, &[(&long, "/", Some(1))]);
    }

    #[test]
    fn too_many_lists_fall_back_to_the_scan() {
        let labels: Vec<String> = (0..40).map(|i| format!("l{i}")).collect();
        let suffix = |k: usize| labels.get(k..).unwrap_or_default().join(".");
        let patterns: Vec<String> = (0..40).map(|k| format!("*.{}", suffix(k))).collect();
        let mut rules: Vec<Rule> = patterns.iter().rev().map(|p| rule(host(&[p]))).collect();
        rules.push(rule(path(&["/a/*"])));
        let deep = format!("x.{}", suffix(0));
        expect(
            &rules,
            &[
                (&deep, "/", Some(0)),
                ("x.l39", "/", Some(0)),
                ("x.l0", "/a/", Some(40)),
            ],
        );
        // Built from other rules: still the linear answer.
        let table = RuleTable::build(&rules[..3]);
        assert_eq!(first(&table, &rules, &req("x.l39", "/")), Some(0));
    }

    #[test]
    fn generated_workloads_load_and_agree() {
        for n in [10, 100, 1000] {
            let w = rulegen::workload(n, 300, 7);
            assert_eq!(w.yaml, rulegen::workload(n, 300, 7).yaml, "deterministic");
            let s = rulegen::load(&w.yaml).unwrap_or_else(|e| panic!("{e}"));
            let rules = &s.listeners[0].rules;
            assert_eq!(rules.len(), n);
            let table = RuleTable::build(rules);
            let stats = table.stats();
            assert!(stats.residual * 5 <= n, "{stats:?}");
            let sifting = RuleTable::sifting_from(rules, 1);
            for l in &w.lookups {
                let got = l.with_view(|v| {
                    let got = table.first_match(rules, v);
                    assert_eq!(got, linear(rules, v), "{l:?}");
                    assert_eq!(sifting.first_match(rules, v), got, "sieve: {l:?}");
                    got
                });
                match l.kind {
                    LookupKind::Miss => assert_eq!(got, None, "{l:?}"),
                    _ => assert!(got.is_some(), "{l:?}"),
                }
            }
        }
    }

    fn text(chars: &'static [char], max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(chars), 0..max)
            .prop_map(|v| v.into_iter().collect())
    }

    /// Conditions as text (`Conditions` has no `Debug` for proptest to print).
    #[derive(Clone, Debug)]
    struct Spec {
        host: Vec<String>,
        path: Vec<String>,
        method: Vec<&'static str>,
        headers: Vec<(&'static str, String)>,
        query: Vec<(Option<&'static str>, String)>,
        source_ip: Vec<&'static str>,
    }

    impl Spec {
        fn rule(&self) -> Rule {
            rule(Conditions {
                host: pats_of(&self.host, PatternOptions::HOST),
                path: pats_of(&self.path, PatternOptions::PATH),
                method: self.method.iter().map(|m| (*m).to_owned()).collect(),
                headers: self
                    .headers
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), pats(&[v], PatternOptions::HEADER_VALUE)))
                    .collect(),
                query: self
                    .query
                    .iter()
                    .map(|(k, v)| QueryCondition {
                        key: k.map(|k| Pattern::compile(k, PatternOptions::QUERY)),
                        value: Pattern::compile(v, PatternOptions::QUERY),
                    })
                    .collect(),
                source_ip: self.source_ip.iter().map(|c| c.parse().unwrap()).collect(),
            })
        }
    }

    fn pats_of(ps: &[String], opts: PatternOptions) -> Vec<Pattern> {
        ps.iter().map(|p| Pattern::compile(p, opts)).collect()
    }

    fn spec() -> impl Strategy<Value = Spec> {
        let host_pat = text(&['a', 'b', 'A', '.', '*', '?', 'é'], 6);
        let path_pat = text(&['/', 'a', 'b', '*', '?'], 6);
        let value = || text(&['a', 'B', '1', '*', '?'], 4);
        (
            prop::collection::vec(host_pat, 0..3),
            prop::collection::vec(path_pat, 0..3),
            prop::collection::vec(prop::sample::select(&["GET", "POST", "BREW"][..]), 0..2),
            prop::collection::vec((prop::sample::select(&["x-a", "x-b"][..]), value()), 0..2),
            prop::collection::vec(
                (
                    prop::option::of(prop::sample::select(&["k", "K*"][..])),
                    value(),
                ),
                0..2,
            ),
            prop::collection::vec(
                prop::sample::select(
                    &[
                        "10.0.0.0/8",
                        "10.0.0.0/12",
                        "10.1.0.0/16",
                        "192.168.1.0/24",
                        "10.1.2.3/32",
                        "0.0.0.0/1",
                        "::/0",
                    ][..],
                ),
                0..2,
            ),
        )
            .prop_map(|(host, path, method, headers, query, source_ip)| Spec {
                host,
                path,
                method,
                headers,
                query,
                source_ip,
            })
    }

    fn request() -> impl Strategy<Value = Req> {
        (
            text(&['a', 'b', 'A', '.', 'é'], 8),
            text(&['/', 'a', 'b', '*'], 8),
            prop::sample::select(
                &[
                    "",
                    "k=a",
                    "K%2a=1",
                    "x=aa&k=",
                    "&&",
                    "z=B1",
                    "%6B=%61",
                    "b=%E9",
                    "a",
                    "k=a%C3%A9",
                ][..],
            ),
            prop::sample::select(&["GET", "POST", "BREW", "get"][..]),
            prop::collection::vec(
                (
                    prop::sample::select(&["x-a", "X-B", "y"][..]),
                    text(&['a', 'b', '1'], 3),
                ),
                0..3,
            ),
            prop::sample::select(
                &[
                    "10.1.2.3",
                    "10.1.9.9",
                    "192.168.1.9",
                    "8.8.8.8",
                    "::1",
                    "::ffff:10.1.2.3",
                ][..],
            ),
        )
            .prop_map(|(host, path, query, method, headers, source)| Req {
                host,
                path,
                query: query.into(),
                method: method.into(),
                headers: headers.into_iter().map(|(n, v)| (n.into(), v)).collect(),
                source: source.parse().unwrap(),
            })
    }

    proptest! {
        #[test]
        fn sources_merge_into_the_sorted_union(
            sets in prop::collection::vec(prop::collection::btree_set(0u32..300, 0..40), 0..MAX_SOURCES + 3),
        ) {
            let lists: Vec<Vec<u32>> = sets.into_iter().map(|s| s.into_iter().collect()).collect();
            let mut src = Sources::new();
            for l in &lists {
                src.push(l);
            }
            let mut want: Vec<u32> = lists.iter().flatten().copied().collect();
            want.sort_unstable();
            want.dedup();
            prop_assert_eq!(src.overflow, lists.iter().filter(|l| !l.is_empty()).count() > MAX_SOURCES);
            if !src.overflow {
                let got: Vec<u32> = std::iter::from_fn(|| src.next()).collect();
                prop_assert_eq!(got, want);
                prop_assert_eq!(src.next(), None);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn agrees_with_linear_scan(
            specs in prop::collection::vec(spec(), 0..24),
            reqs in prop::collection::vec(request(), 1..12),
        ) {
            let rules: Vec<Rule> = specs.iter().map(Spec::rule).collect();
            let table = RuleTable::build(&rules);
            let sifting = RuleTable::sifting_from(&rules, 1);
            for r in &reqs {
                r.view(|v| {
                    let want = linear(&rules, v);
                    prop_assert_eq!(table.first_match(&rules, v), want, "{:?}", r);
                    prop_assert_eq!(sifting.first_match(&rules, v), want, "sieve: {:?}", r);
                    Ok(())
                })?;
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn agrees_on_generated_rule_sets(
            seed in any::<u64>(),
            n in 1usize..120,
            mix in prop::collection::vec((0usize..64, 0usize..64, 0usize..64), 40),
        ) {
            let w = rulegen::workload(n, 64, seed);
            let s = rulegen::load(&w.yaml).map_err(TestCaseError::fail)?;
            let rules = &s.listeners[0].rules;
            let table = RuleTable::build(rules);
            // The lookups as made, and crossed: one's host, another's path, a third's rest.
            let crossed = mix.iter().filter_map(|&(a, b, c)| {
                let (a, b, c) = (w.lookups.get(a)?, w.lookups.get(b)?, w.lookups.get(c)?);
                Some(rulegen::Lookup { host: a.host.clone(), path: b.path.clone(), ..c.clone() })
            });
            let sifting = RuleTable::sifting_from(rules, 1);
            for l in w.lookups.iter().cloned().chain(crossed) {
                l.with_view(|v| {
                    let want = linear(rules, v);
                    prop_assert_eq!(table.first_match(rules, v), want, "{:?}", l);
                    prop_assert_eq!(sifting.first_match(rules, v), want, "sieve: {:?}", l);
                    Ok(())
                })?;
            }
        }
    }
}
