//! Wildcard patterns against an oracle written from the module docs of
//! [`crate::router::pattern`]: a dynamic program over characters, slow but plain.

use super::Cursor;
use crate::router::pattern::{Pattern, PatternKind, PatternOptions, wildcard_count};

/// Longest text matched, in characters (the oracle is quadratic).
const MAX_TEXT: usize = 300;
/// Characters a `?` or `*` is filled with: ASCII, two-byte and four-byte ones.
const FILL: [char; 8] = ['a', 'Z', '.', '/', '*', '\\', 'é', '🦀'];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok {
    Lit(char),
    One,
    Star,
}

/// `data`: a flags byte (case-insensitive, backslash escapes), a length byte, that
/// many bytes of pattern, then text; both read as lossy UTF-8.
pub fn pattern(data: &[u8]) {
    let mut c = Cursor::new(data);
    let flags = c.byte();
    let opts = PatternOptions::new(flags & 1 != 0, flags & 2 != 0);
    let n = usize::from(c.byte());
    let src = String::from_utf8_lossy(c.take(n)).into_owned();
    let rest = c.rest();
    let text: String = String::from_utf8_lossy(rest)
        .chars()
        .take(MAX_TEXT)
        .collect();

    let p = Pattern::compile(&src, opts);
    let toks = lex(&src, opts);
    assert_eq!(p.as_str(), src);
    assert_eq!(p.options(), opts);
    assert_eq!(
        wildcard_count(&src, opts),
        toks.iter()
            .filter(|t| matches!(t, Tok::Star | Tok::One))
            .count()
    );
    assert_eq!(p.literal().is_some(), p.kind() != PatternKind::General);
    if p.kind() == PatternKind::Any {
        assert_eq!(p.literal(), Some(""));
    }

    let filled = fill(&toks, rest, opts);
    assert!(
        p.is_match(&filled),
        "{src:?} {opts:?} must match its own filling {filled:?}"
    );
    let mut texts = vec![text.clone(), filled];
    if opts.case_insensitive {
        texts.push(text.to_ascii_uppercase());
        texts.push(text.to_ascii_lowercase());
    }
    for t in &texts {
        assert_eq!(
            p.is_match(t),
            oracle(&toks, t, opts.case_insensitive),
            "{src:?} {opts:?} on {t:?} ({:?})",
            p.kind()
        );
    }
}

/// Tokens as the docs define them: with escapes, a `*` or `?` right after a backslash
/// is literal and that backslash is dropped; every other character is itself.
fn lex(src: &str, opts: PatternOptions) -> Vec<Tok> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    for (i, &ch) in chars.iter().enumerate() {
        let escaped = opts.backslash_escapes && i > 0 && chars[i - 1] == '\\';
        let escapes_next =
            opts.backslash_escapes && ch == '\\' && matches!(chars.get(i + 1), Some('*' | '?'));
        out.push(match ch {
            '*' if !escaped => Tok::Star,
            '?' if !escaped => Tok::One,
            '\\' if escapes_next => continue,
            c => Tok::Lit(c),
        });
    }
    out
}

/// Whether the whole of `text` matches `toks`.
fn oracle(toks: &[Tok], text: &str, ci: bool) -> bool {
    let t: Vec<char> = text.chars().collect();
    // row[j]: the tokens so far match t[..j].
    let mut row = vec![false; t.len() + 1];
    row[0] = true;
    for tok in toks {
        let mut next = vec![false; t.len() + 1];
        for j in 0..=t.len() {
            next[j] = match tok {
                Tok::Star => row[j] || (j > 0 && next[j - 1]),
                Tok::One => j > 0 && row[j - 1],
                Tok::Lit(c) => {
                    j > 0
                        && row[j - 1]
                        && (t[j - 1] == *c || (ci && t[j - 1].eq_ignore_ascii_case(c)))
                }
            };
        }
        row = next;
    }
    row[t.len()]
}

/// A text the tokens match: literals as written (case flipped where allowed), and
/// wildcards filled from `seed`.
fn fill(toks: &[Tok], seed: &[u8], opts: PatternOptions) -> String {
    let mut c = Cursor::new(seed);
    let mut out = String::new();
    for tok in toks {
        match tok {
            Tok::Lit(ch) if opts.case_insensitive && c.byte() & 1 == 1 => {
                out.push(if ch.is_ascii_lowercase() {
                    ch.to_ascii_uppercase()
                } else {
                    ch.to_ascii_lowercase()
                });
            }
            Tok::Lit(ch) => out.push(*ch),
            Tok::One => out.push(FILL[c.below(FILL.len())]),
            Tok::Star => {
                for _ in 0..c.below(4) {
                    out.push(FILL[c.below(FILL.len())]);
                }
            }
        }
    }
    out
}
