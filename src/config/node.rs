//! YAML text -> a tree of nodes that each keep their line and column.
//!
//! serde-saphyr parses (YAML 1.2 booleans only, duplicate keys passed through so
//! that the decoder reports them with the rest); every node is wrapped in
//! `Spanned` so that semantic errors can point at the offending value.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, Spanned};
use std::fmt;

use super::error::Pos;

/// A YAML value with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

/// A mapping key: the key's text and where it is written.
#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    pub name: String,
    pub pos: Pos,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

impl Value {
    /// What this value is, for "expected X, got Y" messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "nothing (null)",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "a number",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

fn pos_of(l: &Location) -> Pos {
    Pos::new(l.line() as u32, l.column() as u32)
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Spanned::<Value>::deserialize(d)?;
        Ok(Node {
            pos: pos_of(&s.referenced),
            value: s.value,
        })
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(i128::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Int(i128::from(v)))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(n) = a.next_element::<Node>()? {
            items.push(n);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(k) = a.next_key::<Node>()? {
            let v = a.next_value::<Node>()?;
            let name = match k.value {
                Value::Str(s) => s,
                Value::Int(i) => i.to_string(),
                Value::Float(f) => f.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Null => String::new(),
                // A list or mapping as a key never names a field; it is reported
                // as an unknown key by the decoder.
                Value::Seq(_) | Value::Map(_) => "<complex key>".to_owned(),
            };
            entries.push((Key { name, pos: k.pos }, v));
        }
        Ok(Value::Map(entries))
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

/// A YAML syntax error: where and what.
#[derive(Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Parses YAML text into a node tree. An empty document is an empty mapping.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    options.duplicate_keys = serde_saphyr::options::DuplicateKeyPolicy::PassThrough;
    if text.trim().is_empty()
        || text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Ok(Node {
            pos: Pos::START,
            value: Value::Map(Vec::new()),
        });
    }
    match serde_saphyr::from_str_with_options::<Node>(text, options) {
        Ok(n) => Ok(n),
        Err(e) => {
            let pos = e.location().map(|l| pos_of(&l)).unwrap_or(Pos::START);
            let mut render = serde_saphyr::RenderOptions::default();
            render.snippets = serde_saphyr::SnippetMode::Off;
            let mut message = e.render_with_options(render);
            // The plain rendering ends with " at line L, column C"; we print the
            // position in front instead.
            if let Some(i) = message.rfind(" at line ") {
                message.truncate(i);
            }
            let message = message.trim().trim_start_matches("error: ").to_owned();
            let message = strip_line_prefix(&message);
            Err(SyntaxError { pos, message })
        }
    }
}

/// Drops a leading "line N column M: " that some parser messages carry.
fn strip_line_prefix(m: &str) -> String {
    if let Some(rest) = m.strip_prefix("line ") {
        if let Some(i) = rest.find(": ") {
            let head = &rest[..i];
            if head
                .split(' ')
                .all(|w| w == "column" || w.bytes().all(|b| b.is_ascii_digit()))
            {
                return rest[i + 2..].to_owned();
            }
        }
    }
    m.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_kept() {
        let n = parse("a: 1\nb:\n  - x: 30s\n    y: [no, true, 0.5, ~]\n").unwrap();
        let Value::Map(m) = &n.value else { panic!() };
        assert_eq!(m[0].0.name, "a");
        assert_eq!(m[0].1.pos, Pos::new(1, 4));
        let Value::Seq(items) = &m[1].1.value else {
            panic!()
        };
        let Value::Map(inner) = &items[0].value else {
            panic!()
        };
        assert_eq!(inner[0].1.value, Value::Str("30s".into()));
        assert_eq!(inner[0].1.pos, Pos::new(3, 8));
        let Value::Seq(ys) = &inner[1].1.value else {
            panic!()
        };
        // strict booleans: "no" stays a string
        assert_eq!(ys[0].value, Value::Str("no".into()));
        assert_eq!(ys[1].value, Value::Bool(true));
        assert_eq!(ys[2].value, Value::Float(0.5));
        assert_eq!(ys[3].value, Value::Null);
    }

    #[test]
    fn duplicate_keys_pass_through() {
        let n = parse("a: 1\na: 2\n").unwrap();
        let Value::Map(m) = &n.value else { panic!() };
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].0.pos, Pos::new(2, 1));
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let e = parse("a: [1,\nb: }\n").unwrap_err();
        assert_eq!(e.pos, Pos::new(1, 4));
        assert!(e.message.contains("bracket"), "{}", e.message);
        assert!(!e.message.contains("line 1"), "{}", e.message);
    }

    #[test]
    fn empty_document_is_an_empty_map() {
        assert_eq!(parse("").unwrap().value, Value::Map(vec![]));
        assert_eq!(
            parse("# only a comment\n").unwrap().value,
            Value::Map(vec![])
        );
    }
}
