//! Typed reads from the node tree. Every read reports its own error (with the
//! value's position and field path) and returns `None`, so that one pass over the
//! file collects every problem.

use std::time::Duration;

use super::error::{Errors, Pos};
use super::node::{Key, Node, Value};
use super::schema::Section;
use super::units::{format_duration, parse_duration};

/// A value and where it was written (for a default: where it would have been).
#[derive(Clone, Debug, PartialEq)]
pub struct Sp<T> {
    pub v: T,
    pub pos: Pos,
}

impl<T> Sp<T> {
    pub fn new(v: T, pos: Pos) -> Sp<T> {
        Sp { v, pos }
    }
}

/// `a.b` from `a` and `b` (a top-level key has no leading dot).
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// `a[3]`.
pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// The entries of one mapping section, after unknown and repeated keys were reported.
pub struct Fields<'n> {
    pub pos: Pos,
    pub path: String,
    entries: Vec<(&'n Key, &'n Node)>,
}

impl<'n> Fields<'n> {
    /// The node under `name`, if the key is present.
    pub fn get(&self, name: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.name == name)
            .map(|(_, n)| *n)
    }

    /// The path of a child key.
    pub fn at(&self, name: &str) -> String {
        join(&self.path, name)
    }

    /// Position of a present key's value, else of the section itself.
    pub fn pos_of(&self, name: &str) -> Pos {
        self.get(name).map(|n| n.pos).unwrap_or(self.pos)
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Reads a mapping against its section: unknown keys (with a suggestion), refused
/// keys and repeated keys are reported; `null` reads as an empty mapping.
pub fn fields<'n>(
    errs: &mut Errors,
    node: &'n Node,
    path: &str,
    section: &Section,
) -> Option<Fields<'n>> {
    let entries = match &node.value {
        Value::Map(m) => m,
        Value::Null => {
            return Some(Fields {
                pos: node.pos,
                path: path.to_owned(),
                entries: Vec::new(),
            });
        }
        other => {
            errs.push(
                node.pos,
                path_or_root(path),
                format!("expected a mapping of keys, got {}", other.kind()),
            );
            return None;
        }
    };
    let mut kept: Vec<(&Key, &Node)> = Vec::with_capacity(entries.len());
    for (k, v) in entries {
        let kpath = join(path, &k.name);
        if let Some((_, msg)) = section.refused.iter().find(|(name, _)| *name == k.name) {
            errs.push(k.pos, kpath, *msg);
            continue;
        }
        if !section.keys.iter().any(|sk| sk.name == k.name) {
            if k.name == "password" {
                errs.push(k.pos, kpath, super::schema::INLINE_PASSWORD);
                continue;
            }
            let known: Vec<&str> = section.keys.iter().map(|sk| sk.name).collect();
            let hint = known
                .iter()
                .map(|c| (edit_distance(&k.name, c), *c))
                .filter(|(d, _)| *d <= 2)
                .min_by_key(|(d, _)| *d)
                .map(|(_, c)| format!("did you mean `{c}`? "))
                .unwrap_or_default();
            errs.push(
                k.pos,
                kpath,
                format!(
                    "unknown key `{}`; {hint}expected one of: {}",
                    k.name,
                    known.join(", ")
                ),
            );
            continue;
        }
        if let Some((first, _)) = kept.iter().find(|(fk, _)| fk.name == k.name) {
            errs.push(
                k.pos,
                kpath,
                format!(
                    "duplicate key `{}` (first given at line {})",
                    k.name, first.pos.line
                ),
            );
            continue;
        }
        kept.push((k, v));
    }
    Some(Fields {
        pos: node.pos,
        path: path.to_owned(),
        entries: kept,
    })
}

fn path_or_root(path: &str) -> String {
    if path.is_empty() {
        "(top level)".to_owned()
    } else {
        path.to_owned()
    }
}

/// A string. Numbers are taken as their text (so `zone: 1` works); booleans and
/// null are errors.
pub fn string(errs: &mut Errors, n: &Node, path: &str) -> Option<Sp<String>> {
    match &n.value {
        Value::Str(s) => Some(Sp::new(s.clone(), n.pos)),
        Value::Int(i) => Some(Sp::new(i.to_string(), n.pos)),
        Value::Float(f) => Some(Sp::new(f.to_string(), n.pos)),
        other => {
            errs.push(
                n.pos,
                path,
                format!("expected a string, got {}", other.kind()),
            );
            None
        }
    }
}

/// A non-empty string.
pub fn nonempty(errs: &mut Errors, n: &Node, path: &str) -> Option<Sp<String>> {
    let s = string(errs, n, path)?;
    if s.v.trim().is_empty() {
        errs.push(n.pos, path, "must not be empty");
        return None;
    }
    Some(s)
}

pub fn boolean(errs: &mut Errors, n: &Node, path: &str) -> Option<Sp<bool>> {
    match &n.value {
        Value::Bool(b) => Some(Sp::new(*b, n.pos)),
        other => {
            let extra = match other {
                Value::Str(s) => format!(" \"{s}\" (only true and false are booleans)"),
                _ => String::new(),
            };
            errs.push(
                n.pos,
                path,
                format!("expected true or false, got {}{extra}", other.kind()),
            );
            None
        }
    }
}

/// An integer in `min..=max`.
pub fn integer(errs: &mut Errors, n: &Node, path: &str, min: i128, max: i128) -> Option<Sp<i128>> {
    let v = match &n.value {
        Value::Int(i) => *i,
        Value::Str(s) if !s.is_empty() && s.trim().bytes().all(|b| b.is_ascii_digit()) => {
            match s.trim().parse::<i128>() {
                Ok(i) => i,
                Err(_) => {
                    errs.push(
                        n.pos,
                        path,
                        format!("expected a whole number from {min} to {max}"),
                    );
                    return None;
                }
            }
        }
        other => {
            errs.push(
                n.pos,
                path,
                format!(
                    "expected a whole number from {min} to {max}, got {}",
                    describe(other)
                ),
            );
            return None;
        }
    };
    if v < min || v > max {
        errs.push(n.pos, path, format!("must be from {min} to {max}, got {v}"));
        return None;
    }
    Some(Sp::new(v, n.pos))
}

/// A number (integer or decimal) in `min..=max`.
pub fn number(errs: &mut Errors, n: &Node, path: &str, min: f64, max: f64) -> Option<Sp<f64>> {
    let v = match &n.value {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        other => {
            errs.push(
                n.pos,
                path,
                format!("expected a number, got {}", describe(other)),
            );
            return None;
        }
    };
    if !v.is_finite() || v < min || v > max {
        errs.push(n.pos, path, format!("must be from {min} to {max}, got {v}"));
        return None;
    }
    Some(Sp::new(v, n.pos))
}

/// A duration string with a unit, in `min..=max`.
pub fn duration(
    errs: &mut Errors,
    n: &Node,
    path: &str,
    min: Duration,
    max: Duration,
) -> Option<Sp<Duration>> {
    let d = match &n.value {
        Value::Str(s) => match parse_duration(s) {
            Ok(d) => d,
            Err(msg) => {
                errs.push(n.pos, path, msg);
                return None;
            }
        },
        Value::Int(i) => {
            errs.push(
                n.pos,
                path,
                format!("a bare number ({i}) is not a duration: add a unit, such as \"{i}s\" (units: ms, s, m, h, d)"),
            );
            return None;
        }
        Value::Float(f) => {
            errs.push(
                n.pos,
                path,
                format!("a bare number ({f}) is not a duration: add a unit, such as \"{f}s\" (units: ms, s, m, h, d)"),
            );
            return None;
        }
        other => {
            errs.push(
                n.pos,
                path,
                format!("expected a duration such as \"30s\", got {}", other.kind()),
            );
            return None;
        }
    };
    if d < min || d > max {
        errs.push(
            n.pos,
            path,
            format!(
                "must be from {} to {}, got {}",
                format_duration(min),
                format_duration(max),
                format_duration(d)
            ),
        );
        return None;
    }
    Some(Sp::new(d, n.pos))
}

/// One of a fixed set of words (exact spelling).
pub fn word(
    errs: &mut Errors,
    n: &Node,
    path: &str,
    allowed: &[&'static str],
) -> Option<Sp<&'static str>> {
    let s = string(errs, n, path)?;
    match allowed.iter().find(|a| **a == s.v) {
        Some(a) => Some(Sp::new(*a, n.pos)),
        None => {
            errs.push(
                n.pos,
                path,
                format!("expected one of {}, got \"{}\"", allowed.join(", "), s.v),
            );
            None
        }
    }
}

/// A list of strings; a single string reads as a list of one.
pub fn strings(errs: &mut Errors, n: &Node, path: &str) -> Vec<Sp<String>> {
    match &n.value {
        Value::Seq(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| string(errs, item, &index(path, i)))
            .collect(),
        Value::Str(_) | Value::Int(_) | Value::Float(_) => {
            string(errs, n, path).into_iter().collect()
        }
        other => {
            errs.push(
                n.pos,
                path,
                format!("expected a list of strings, got {}", other.kind()),
            );
            Vec::new()
        }
    }
}

/// The items of a list of sections, each with its path. `null` is an empty list.
pub fn items<'n>(errs: &mut Errors, n: &'n Node, path: &str) -> Vec<(String, &'n Node)> {
    match &n.value {
        Value::Seq(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| (index(path, i), item))
            .collect(),
        Value::Null => Vec::new(),
        other => {
            errs.push(
                n.pos,
                path,
                format!("expected a list, got {}", other.kind()),
            );
            Vec::new()
        }
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Str(s) => format!("\"{s}\""),
        Value::Float(f) => f.to_string(),
        other => other.kind().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::node::parse;

    #[test]
    fn suggestions_for_typos() {
        assert_eq!(edit_distance("prioirty", "priority"), 2);
        assert_eq!(edit_distance("abc", "abc"), 0);
        let doc = parse("prioirty: 3\n").unwrap();
        let mut errs = Errors::new("f.yaml");
        let f = fields(&mut errs, &doc, "rules[0]", &crate::config::schema::RULE).unwrap();
        assert!(!f.has("prioirty"));
        let e = errs.into_sorted();
        assert_eq!(e.len(), 1);
        assert_eq!(
            e[0].to_string(),
            "f.yaml:1:1: rules[0].prioirty: unknown key `prioirty`; did you mean `priority`? expected one of: priority, conditions, action"
        );
    }
}
