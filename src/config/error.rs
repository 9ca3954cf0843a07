//! Config errors: `FILE:LINE:COL: field.path: message`, lines and columns from 1.

use std::fmt;

/// A position in the config file (1-based line and column, in characters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl Pos {
    pub const START: Pos = Pos { line: 1, col: 1 };

    pub fn new(line: u32, col: u32) -> Pos {
        Pos {
            line: line.max(1),
            col: col.max(1),
        }
    }
}

/// One problem found in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file as named on the command line.
    pub file: String,
    pub pos: Pos,
    /// Dotted field path, such as `listeners[0].rules[2].priority`.
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.pos.line, self.pos.col, self.path, self.message
        )
    }
}

/// Collects every error of one load, in file order.
#[derive(Debug)]
pub struct Errors {
    file: String,
    list: Vec<ConfigError>,
}

impl Errors {
    pub fn new(file: impl Into<String>) -> Errors {
        Errors {
            file: file.into(),
            list: Vec::new(),
        }
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    pub fn push(&mut self, pos: Pos, path: impl Into<String>, message: impl Into<String>) {
        self.list.push(ConfigError {
            file: self.file.clone(),
            pos,
            path: path.into(),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// The errors sorted by position (a stable sort keeps the order of errors found
    /// at the same place).
    pub fn into_sorted(mut self) -> Vec<ConfigError> {
        self.list.sort_by_key(|e| e.pos);
        self.list
    }
}
