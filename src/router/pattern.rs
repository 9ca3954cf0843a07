//! Compiled ALB-style wildcard patterns (`*`, `?`, optional `\*`/`\?` escapes) used by rule conditions: parsing, fast-path classification and allocation-free matching.
//!
//! Semantics (AWS reference §1.3, SPEC §2 rules):
//! - `*` matches any run of characters, possibly empty, including `.` and `/`.
//! - `?` matches exactly one character, i.e. one Unicode scalar value (`é`, `🦀` are one).
//! - Everything else matches itself. With `case_insensitive`, ASCII letters compare
//!   without regard to case (ASCII folding only: `É` and `é` stay different; ALB
//!   patterns are visible ASCII anyway).
//! - With `backslash_escapes` (query-string conditions), `\*` is a literal `*` and `\?`
//!   a literal `?`. A backslash anywhere else is an ordinary literal backslash and
//!   escapes nothing: `\a` is `\` then `a`, a trailing `\` is `\`, and `\\*` is a literal
//!   `\` followed by a literal `*` (the second backslash escapes the star). Hence a
//!   star is literal exactly when the character right before it is a backslash; a
//!   literal backslash directly followed by a wildcard cannot be written (use `?`
//!   in place of the backslash). [`wildcard_count`] uses the same rule.
//!
//! The text is matched as the caller gives it (raw path, lower-cased Host without its
//! port, percent-decoded query parts). [`Pattern::is_match`] never allocates and never
//! panics; general patterns use an iterative two-pointer matcher that backtracks only
//! to the most recent `*`, so it runs in O(text × pattern) at worst, never exponential.

/// How a pattern compares text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PatternOptions {
    /// Compare ASCII letters without regard to case.
    pub case_insensitive: bool,
    /// `\*` and `\?` stand for literal `*` and `?` (see the module docs).
    pub backslash_escapes: bool,
}

impl PatternOptions {
    /// `host` conditions: case-insensitive, no escapes.
    pub const HOST: Self = Self::new(true, false);
    /// `path` conditions: case-sensitive, no escapes.
    pub const PATH: Self = Self::new(false, false);
    /// `headers` condition values: case-insensitive, no escapes.
    pub const HEADER_VALUE: Self = Self::new(true, false);
    /// `query` keys and values: case-insensitive, `\*` and `\?` escapes.
    pub const QUERY: Self = Self::new(true, true);

    /// Options from their two flags.
    pub const fn new(case_insensitive: bool, backslash_escapes: bool) -> Self {
        Self {
            case_insensitive,
            backslash_escapes,
        }
    }
}

/// Which matching strategy a compiled [`Pattern`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PatternKind {
    /// No wildcards: `abc` (also the empty pattern, which matches only empty text).
    Exact,
    /// `abc*`
    Prefix,
    /// `*abc`
    Suffix,
    /// `*abc*`
    Contains,
    /// `*` (or `**`, ...): matches everything.
    Any,
    /// Anything else (`?` anywhere, or literals between stars).
    General,
}

/// One element of a compiled pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    /// Literal bytes `lit[start..end]` (never empty).
    Lit { start: usize, end: usize },
    /// `n` consecutive `?` (n ≥ 1): exactly n characters.
    One(usize),
    /// `*` (consecutive stars are merged).
    Star,
}

/// A lexed pattern character.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lexeme {
    Char(char),
    One,
    Star,
}

/// Splits a pattern source into lexemes, applying the escape rule of the module docs.
struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    escapes: bool,
}

impl<'a> Lexer<'a> {
    fn new(src: &'a str, opts: PatternOptions) -> Self {
        Self {
            chars: src.chars().peekable(),
            escapes: opts.backslash_escapes,
        }
    }
}

impl Iterator for Lexer<'_> {
    type Item = Lexeme;

    fn next(&mut self) -> Option<Lexeme> {
        let c = self.chars.next()?;
        Some(match c {
            '*' => Lexeme::Star,
            '?' => Lexeme::One,
            '\\' if self.escapes => match self.chars.peek() {
                Some(&e @ ('*' | '?')) => {
                    self.chars.next();
                    Lexeme::Char(e)
                }
                _ => Lexeme::Char('\\'),
            },
            c => Lexeme::Char(c),
        })
    }
}

/// Number of unescaped wildcard characters (`*`, `?`) in `src`, counted as written
/// (`**` counts two); escaped ones don't count when `backslash_escapes` is on.
pub fn wildcard_count(src: &str, opts: PatternOptions) -> usize {
    Lexer::new(src, opts)
        .filter(|l| matches!(l, Lexeme::Star | Lexeme::One))
        .count()
}

/// A compiled pattern: `*` matches any run of characters (including '.' and '/',
/// possibly empty), `?` exactly one character (one Unicode scalar value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    src: Box<str>,
    opts: PatternOptions,
    kind: PatternKind,
    /// All literal text, unescaped and (when case-insensitive) ASCII lower-cased. For
    /// every kind but `General` this is exactly the one literal of the pattern.
    lit: Box<str>,
    tokens: Box<[Token]>,
    /// Fewest bytes a matching text can have.
    min_len: usize,
}

impl Pattern {
    /// Compiles `src`. Every string is a valid pattern, so this cannot fail.
    pub fn compile(src: &str, opts: PatternOptions) -> Pattern {
        let mut lit = String::with_capacity(src.len());
        let mut tokens: Vec<Token> = Vec::new();
        let mut lit_start = 0;
        for lexeme in Lexer::new(src, opts) {
            if let Lexeme::Char(c) = lexeme {
                lit.push(if opts.case_insensitive {
                    c.to_ascii_lowercase()
                } else {
                    c
                });
                continue;
            }
            if lit.len() > lit_start {
                tokens.push(Token::Lit {
                    start: lit_start,
                    end: lit.len(),
                });
                lit_start = lit.len();
            }
            match (lexeme, tokens.last_mut()) {
                (Lexeme::Star, Some(Token::Star)) => {}
                (Lexeme::One, Some(Token::One(n))) => *n += 1,
                (Lexeme::One, _) => tokens.push(Token::One(1)),
                _ => tokens.push(Token::Star),
            }
        }
        if lit.len() > lit_start {
            tokens.push(Token::Lit {
                start: lit_start,
                end: lit.len(),
            });
        }
        let kind = classify(&tokens);
        let min_len = lit.len()
            + tokens
                .iter()
                .map(|t| if let Token::One(n) = t { *n } else { 0 })
                .sum::<usize>();
        Pattern {
            src: src.into(),
            opts,
            kind,
            lit: lit.into_boxed_str(),
            tokens: tokens.into_boxed_slice(),
            min_len,
        }
    }

    /// The source text as written.
    pub fn as_str(&self) -> &str {
        &self.src
    }

    /// The options the pattern was compiled with.
    pub fn options(&self) -> PatternOptions {
        self.opts
    }

    /// Which fast path was chosen (for tests and for the rule index).
    pub fn kind(&self) -> PatternKind {
        self.kind
    }

    /// The single literal of an `Exact`, `Prefix`, `Suffix` or `Contains` pattern
    /// (unescaped, ASCII lower-cased when case-insensitive); `""` for `Any`; `None`
    /// for `General`.
    pub fn literal(&self) -> Option<&str> {
        match self.kind {
            PatternKind::General => None,
            _ => Some(&self.lit),
        }
    }

    /// Whether the whole of `text` matches. Never allocates.
    pub fn is_match(&self, text: &str) -> bool {
        let t = text.as_bytes();
        if t.len() < self.min_len {
            return false;
        }
        let lit = self.lit.as_bytes();
        match self.kind {
            PatternKind::Exact => self.eq(t, lit),
            PatternKind::Prefix => t.get(..lit.len()).is_some_and(|h| self.eq(h, lit)),
            PatternKind::Suffix => t
                .len()
                .checked_sub(lit.len())
                .and_then(|start| t.get(start..))
                .is_some_and(|h| self.eq(h, lit)),
            PatternKind::Contains => self.contains(text),
            PatternKind::Any => true,
            PatternKind::General => self.match_general(t),
        }
    }

    #[inline]
    fn eq(&self, text: &[u8], lit: &[u8]) -> bool {
        if self.opts.case_insensitive {
            text.eq_ignore_ascii_case(lit)
        } else {
            text == lit
        }
    }

    fn contains(&self, text: &str) -> bool {
        if !self.opts.case_insensitive {
            return text.contains(&*self.lit);
        }
        let lit = self.lit.as_bytes();
        let Some(&first) = lit.first() else {
            return true;
        };
        let t = text.as_bytes();
        let Some(last_start) = t.len().checked_sub(lit.len()) else {
            return false;
        };
        (0..=last_start).any(|i| {
            t.get(i).is_some_and(|b| b.eq_ignore_ascii_case(&first))
                && t.get(i..i + lit.len())
                    .is_some_and(|w| w.eq_ignore_ascii_case(lit))
        })
    }

    /// Two-pointer wildcard matching over tokens. A literal compared byte-wise can
    /// only match at a character boundary (it starts with a UTF-8 lead byte), so the
    /// text position always stays on a boundary.
    fn match_general(&self, text: &[u8]) -> bool {
        let tokens = &*self.tokens;
        let lit = self.lit.as_bytes();
        let trailing_star = matches!(tokens.last(), Some(Token::Star));
        let mut ti = 0; // next token
        let mut pos = 0; // next text byte
        // After the latest star: (token after it, text position its match ends at).
        let mut star: Option<(usize, usize)> = None;
        loop {
            let advanced = match tokens.get(ti) {
                None if pos == text.len() || trailing_star => return true,
                None => None,
                Some(Token::Star) => {
                    star = Some((ti + 1, pos));
                    Some(pos)
                }
                Some(&Token::Lit { start, end }) => {
                    let want = lit.get(start..end).unwrap_or_default();
                    pos.checked_add(want.len())
                        .and_then(|e| text.get(pos..e))
                        .filter(|got| self.eq(got, want))
                        .map(|got| pos + got.len())
                }
                Some(&Token::One(n)) => skip_chars(text, pos, n),
            };
            if let Some(next) = advanced {
                ti += 1;
                pos = next;
                continue;
            }
            // Mismatch: let the latest star swallow one more character and retry.
            let Some((after_star, star_end)) = star else {
                return false;
            };
            let Some(mut next) = skip_chars(text, star_end, 1) else {
                return false;
            };
            // A literal after the star can only start where its first byte occurs.
            if let Some(&Token::Lit { start, .. }) = tokens.get(after_star) {
                let first = lit.get(start).copied().unwrap_or_default();
                let found = text
                    .get(next..)
                    .and_then(|rest| rest.iter().position(|&b| self.eq(&[b], &[first])));
                match found {
                    Some(offset) => next += offset,
                    None => return false,
                }
            }
            star = Some((after_star, next));
            ti = after_star;
            pos = next;
        }
    }
}

/// The byte position `n` characters after `pos` (on a boundary), if the text has them.
#[inline]
fn skip_chars(text: &[u8], mut pos: usize, n: usize) -> Option<usize> {
    for _ in 0..n {
        let lead = *text.get(pos)?;
        pos += match lead {
            0x00..=0x7f => 1,
            0x80..=0xdf => 2,
            0xe0..=0xef => 3,
            _ => 4,
        };
    }
    (pos <= text.len()).then_some(pos)
}

fn classify(tokens: &[Token]) -> PatternKind {
    use Token::{Lit, Star};
    match tokens {
        [] | [Lit { .. }] => PatternKind::Exact,
        [Star] => PatternKind::Any,
        [Lit { .. }, Star] => PatternKind::Prefix,
        [Star, Lit { .. }] => PatternKind::Suffix,
        [Star, Lit { .. }, Star] => PatternKind::Contains,
        _ => PatternKind::General,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use wildmatch::WildMatch;

    const ALL_OPTS: [PatternOptions; 4] = [
        PatternOptions::new(false, false),
        PatternOptions::new(true, false),
        PatternOptions::new(false, true),
        PatternOptions::new(true, true),
    ];

    fn m(p: &str, opts: PatternOptions, t: &str) -> bool {
        let got = Pattern::compile(p, opts).is_match(t);
        assert_eq!(got, general(p, opts).is_match(t), "fast path {p:?} / {t:?}");
        got
    }

    /// The same pattern, forced through the general matcher.
    fn general(p: &str, opts: PatternOptions) -> Pattern {
        let mut pat = Pattern::compile(p, opts);
        pat.kind = PatternKind::General;
        pat
    }

    /// (pattern, options, text, expected): ALB examples, `*`/`?` basics, Unicode, case, escapes.
    #[test]
    fn explicit_cases() {
        const H: PatternOptions = PatternOptions::HOST;
        const P: PatternOptions = PatternOptions::PATH;
        const V: PatternOptions = PatternOptions::HEADER_VALUE;
        const Q: PatternOptions = PatternOptions::QUERY;
        #[rustfmt::skip]
        let cases: &[(&str, PatternOptions, &str, bool)] = &[
            // host-header
            ("*.example.com", H, "test.example.com", true), ("*.example.com", H, "a.b.example.com", true),
            ("*.example.com", H, "example.com", false), ("*.example.com", H, "test.example.com.evil", false),
            ("*.example.com", H, ".example.com", true), ("*.Example.COM", H, "TEST.example.com", true),
            ("api.example.com", H, "API.Example.Com", true), ("api.example.com", H, "api.example.co", false),
            ("api.example.com", H, "", false), ("?.example.com", H, "a.example.com", true),
            ("?.example.com", H, "ab.example.com", false), ("?.example.com", H, ".example.com", false),
            ("www.*.example.???", H, "www.shop.example.com", true), ("www.*.example.???", H, "www.shop.example.co", false),
            // path-pattern: case-sensitive, * crosses '/'
            ("/api/*", P, "/api/", true), ("/api/*", P, "/api/v1/users", true), ("/api/*", P, "/api", false),
            ("/api/*", P, "/apix/1", false), ("/api/*", P, "/API/v1", false), ("/API/*", P, "/api/v1", false),
            ("/checkout*", P, "/checkout", true), ("/checkout*", P, "/checkout/cart", true),
            ("/checkout*", P, "/checkoutfoo", true), ("*.jpg", P, "/img/a/b.jpg", true), ("*.jpg", P, "/b.JPG", false),
            ("*/admin/*", P, "/x/admin/y", true), ("*/admin/*", P, "/x/administrator", false),
            ("/v?/*/items/*.json", P, "/v2/shop/items/3.json", true), ("/v?/*/items/*.json", P, "/v10/s/items/3.json", false),
            ("/a*b*c", P, "/abc", true), ("/a*b*c", P, "/aXbYbZc", true), ("/a*b*c", P, "/aXbYbZcd", false),
            ("/a*b?c*d", P, "/aabbxccdd", true), ("/a*b?c*d", P, "/aabbccx", false),
            // * and ? basics
            ("*", P, "", true), ("*", P, "any/thing.at all", true), ("**", P, "", true), ("", P, "", true),
            ("", P, "a", false), ("?", P, "", false), ("?", P, "a", true), ("?", P, "ab", false), ("??", P, "ab", true),
            ("*?", P, "a", true), ("*?", P, "", false), ("?*?", P, "ab", true), ("a*", P, "a", true), ("*a", P, "a", true),
            ("*a*", P, "a", true), ("*a*", P, "bab", true), ("*a*", P, "bbb", false), ("a**b", P, "ab", true), ("*.*", P, ".", true),
            // ? is one Unicode scalar value
            ("caf?", P, "café", true), ("a?c", P, "a🦀c", true), ("a?c", P, "a🦀🦀c", false), ("a??c", P, "a🦀日c", true),
            ("??", P, "é", false), ("?", P, "日", true), ("*日*", P, "今日は", true), ("*🦀?", P, "🦀🦀é", true), ("é*", H, "éA", true),
            // case rules: ASCII folding only
            ("Beta*", V, "bEtA-1", true), ("Beta*", P, "beta-1", false), ("*ABC*", H, "xxabcxx", true),
            ("*abc*", H, "xxABCxx", true), ("*abc*", P, "xxABCxx", false), ("*ab?", H, "xAB🦀", true),
            ("É*", H, "é", false), ("É*", H, "É", true),
            // query escapes: \* and \? literal, any other backslash literal and escaping nothing
            (r"a\*b", Q, "a*b", true), (r"a\*b", Q, "axb", false), (r"a\?b", Q, "a?b", true), (r"a\?b", Q, "axb", false),
            (r"\**", Q, "*tail", true), (r"\**", Q, "tail", false), (r"a\b", Q, r"a\b", true), (r"a\", Q, r"a\", true),
            (r"\\*", Q, r"\*", true), (r"\\*", Q, r"\\x", false), (r"2\*?", Q, "2*x", true), (r"*\?*", Q, "what?now", true),
            (r"*\?*", Q, "what.now", false), (r"A\*", Q, "a*", true),
            // without escapes a backslash is just a character
            (r"a\*b", P, r"a\xyzb", true), (r"a\*b", P, "a*b", false), (r"a\?", P, r"a\x", true),
        ];
        for &(src, opts, text, expected) in cases {
            let pat = Pattern::compile(src, opts);
            assert_eq!(pat.is_match(text), expected, "{src:?} {opts:?} {text:?}");
            assert_eq!(
                general(src, opts).is_match(text),
                expected,
                "general {src:?} {text:?}"
            );
        }
    }

    #[test]
    fn kinds() {
        use PatternKind::*;
        const P: PatternOptions = PatternOptions::PATH;
        const Q: PatternOptions = PatternOptions::QUERY;
        #[rustfmt::skip]
        let cases = [
            ("abc", P, Exact, Some("abc")), ("", P, Exact, Some("")), ("abc*", P, Prefix, Some("abc")),
            ("Api.Example.COM", PatternOptions::HOST, Exact, Some("api.example.com")),
            ("/API/*", P, Prefix, Some("/API/")), ("*abc", P, Suffix, Some("abc")),
            ("*abc*", P, Contains, Some("abc")), ("**abc***", P, Contains, Some("abc")),
            ("*", P, Any, Some("")), ("***", P, Any, Some("")), ("a*b", P, General, None),
            ("?", P, General, None), ("*a?", P, General, None), ("*a*b*", P, General, None),
            (r"a\*", Q, Exact, Some("a*")), (r"A\?*", Q, Prefix, Some("a?")), (r"a\*", P, Prefix, Some(r"a\")),
        ];
        for (src, opts, kind, lit) in cases {
            let p = Pattern::compile(src, opts);
            assert_eq!((p.kind(), p.literal()), (kind, lit), "{src:?}");
            assert_eq!((p.as_str(), p.options()), (src, opts));
        }
    }

    #[test]
    fn wildcard_counts() {
        let q = PatternOptions::QUERY;
        let p = PatternOptions::PATH;
        assert_eq!(wildcard_count("abc", p), 0);
        assert_eq!(wildcard_count("*.example.???", p), 4);
        assert_eq!(wildcard_count("**", p), 2);
        assert_eq!(wildcard_count(r"a\*b\?", q), 0);
        assert_eq!(wildcard_count(r"a\*b\?", p), 2);
        assert_eq!(wildcard_count(r"\**", q), 1);
        assert_eq!(wildcard_count(r"\\*", q), 0);
        assert_eq!(wildcard_count(r"\a*", q), 1);
        assert_eq!(wildcard_count(r"*\", q), 1);
    }

    #[test]
    fn pathological_patterns_finish() {
        let p = PatternOptions::PATH;
        let a10k = "a".repeat(10_000);
        assert!(!m("*a*a*a*a*a*b", p, &a10k));
        assert!(m("*a*a*a*a*a*b", p, &format!("{a10k}b")));
        assert!(!m("*a*a*a*a*a*a*a*a*a*a*b*", p, &a10k));
        assert!(!m("a*a*a*a*a*a*a*a*a*ab", p, &a10k));
        assert!(!m("*?a?a?a?a?b*", p, &a10k));
        let h = PatternOptions::HOST;
        assert!(!m("*A*A*A*A*A*B", h, &a10k));
        assert!(!m("*aaaaaaaaab*", h, &a10k));
        assert!(!m("*aaaaaaaaab*", p, &a10k));
    }

    /// Our escaped literal `*`/`?` become these when handed to the oracle, which has
    /// no escapes; the text's `*`/`?` are mapped the same way.
    const LIT_STAR: char = '§';
    const LIT_QUESTION: char = '¤';

    fn to_oracle_text(t: &str) -> String {
        t.chars()
            .map(|c| match c {
                '*' => LIT_STAR,
                '?' => LIT_QUESTION,
                c => c,
            })
            .collect()
    }

    /// wildmatch compares `?` per `char` like us, but its case-insensitive mode folds
    /// Unicode (`É` = `é`), so for ours the oracle is its case-sensitive matcher on
    /// ASCII-lower-cased pattern and text.
    fn oracle(pattern: &str, text: &str, case_insensitive: bool) -> bool {
        if case_insensitive {
            WildMatch::new(&pattern.to_ascii_lowercase()).matches(&text.to_ascii_lowercase())
        } else {
            WildMatch::new(pattern).matches(text)
        }
    }

    fn small_string(max: usize) -> impl Strategy<Value = String> {
        let chars = prop::sample::select(vec![
            '*', '?', '.', '/', 'a', 'b', 'A', 'B', '\\', 'é', 'É', '日', '🦀',
        ]);
        prop::collection::vec(chars, 0..max).prop_map(|v| v.into_iter().collect())
    }

    #[derive(Clone, Debug)]
    enum Piece {
        Char(char),
        Star,
        One,
        EscStar,
        EscQuestion,
    }

    fn pieces() -> impl Strategy<Value = Vec<Piece>> {
        let piece = prop_oneof![
            5 => prop::sample::select(vec!['a', 'b', 'A', '.', '/', '\\', 'é', '🦀']).prop_map(Piece::Char),
            2 => Just(Piece::Star),
            2 => Just(Piece::One),
            1 => Just(Piece::EscStar),
            1 => Just(Piece::EscQuestion),
        ];
        prop::collection::vec(piece, 0..10)
    }

    /// A text that `pieces` must match: stars and `?` replaced by random characters.
    fn fill(pieces: &[Piece], seed: &[char]) -> String {
        let mut seed = seed.iter().copied().cycle();
        let mut out = String::new();
        for (i, p) in pieces.iter().enumerate() {
            match p {
                Piece::Char(c) => out.push(*c),
                Piece::EscStar => out.push('*'),
                Piece::EscQuestion => out.push('?'),
                Piece::One => out.push(seed.next().unwrap_or('x')),
                Piece::Star => out.extend(seed.by_ref().take(i % 4)),
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn agrees_with_wildmatch(pat in small_string(10), text in small_string(14)) {
            for ci in [false, true] {
                let opts = PatternOptions::new(ci, false);
                let expected = oracle(&pat, &text, ci);
                prop_assert_eq!(Pattern::compile(&pat, opts).is_match(&text), expected);
                prop_assert_eq!(general(&pat, opts).is_match(&text), expected);
            }
        }

        #[test]
        fn escaped_patterns_agree_with_wildmatch(
            ps in pieces(),
            text in small_string(14),
            seed in prop::collection::vec(prop::sample::select(vec!['a', 'B', '*', '?', '🦀']), 1..6),
        ) {
            // A written backslash right before a wildcard would become an escape.
            prop_assume!(!ps.windows(2).any(|w| matches!(
                w,
                [Piece::Char('\\'), Piece::Star | Piece::One | Piece::EscStar | Piece::EscQuestion]
            )));
            let mut src = String::new();
            let mut oracle_pat = String::new();
            for p in &ps {
                let (ours, theirs) = match p {
                    Piece::Char(c) => (c.to_string(), *c),
                    Piece::Star => ("*".into(), '*'),
                    Piece::One => ("?".into(), '?'),
                    Piece::EscStar => (r"\*".into(), LIT_STAR),
                    Piece::EscQuestion => (r"\?".into(), LIT_QUESTION),
                };
                src.push_str(&ours);
                oracle_pat.push(theirs);
            }
            let wild = ps.iter().filter(|p| matches!(p, Piece::Star | Piece::One)).count();
            let filled = fill(&ps, &seed);
            for ci in [false, true] {
                let opts = PatternOptions::new(ci, true);
                prop_assert_eq!(wildcard_count(&src, opts), wild);
                let pat = Pattern::compile(&src, opts);
                prop_assert!(pat.is_match(&filled), "{:?} vs {:?}", src, filled);
                for t in [&text, &filled] {
                    let expected = oracle(&oracle_pat, &to_oracle_text(t), ci);
                    prop_assert_eq!(pat.is_match(t), expected, "{:?} vs {:?}", src, t);
                    prop_assert_eq!(general(&src, opts).is_match(t), expected);
                }
            }
        }

        #[test]
        fn fast_paths_agree_with_general(
            lit in small_string(5),
            shape in 0usize..4,
            text in small_string(12),
        ) {
            let lit = lit.replace(['*', '?', '\\'], "");
            let src = match shape {
                0 => lit.clone(),
                1 => format!("{lit}*"),
                2 => format!("*{lit}"),
                _ => format!("*{lit}*"),
            };
            let text = if shape == 3 { format!("{text}{lit}{text}") } else { text };
            for opts in ALL_OPTS {
                let pat = Pattern::compile(&src, opts);
                prop_assert_ne!(pat.kind(), PatternKind::General);
                prop_assert_eq!(pat.is_match(&text), general(&src, opts).is_match(&text));
            }
        }

        #[test]
        fn never_panics(pat in any::<String>(), text in any::<String>()) {
            for opts in ALL_OPTS {
                let p = Pattern::compile(&pat, opts);
                let _ = p.is_match(&text);
                prop_assert_eq!(p.is_match(&text), general(&pat, opts).is_match(&text));
                prop_assert!(wildcard_count(&pat, opts) <= pat.chars().count());
                prop_assert_eq!(p.as_str(), pat.as_str());
            }
            if wildcard_count(&pat, PatternOptions::PATH) == 0 {
                prop_assert!(Pattern::compile(&pat, PatternOptions::PATH).is_match(&pat));
            }
        }
    }
}
