//! Reading the YAML config: text -> node tree with positions (serde-saphyr) ->
//! typed decode with every local rule checked -> cross-section checks (names,
//! references, overlapping binds) -> the immutable [`Snapshot`].
//!
//! One pass collects every error; nothing stops at the first. `fulcrum check` and
//! a reload run exactly [`load`].

pub mod decode;
pub mod error;
mod groups;
mod listeners;
pub mod node;
mod rules;
pub mod schema;
mod sections;
pub mod units;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::snapshot::{ConfigSource, Snapshot};
pub use error::{ConfigError, Errors, Pos};

/// Reads an environment variable (injectable for tests).
pub type EnvLookup = Box<dyn Fn(&str) -> Option<String>>;

/// Shared state of one decode pass.
pub(crate) struct Ctx {
    pub errs: Errors,
    /// Directory of the config file; relative paths resolve against it.
    pub base_dir: PathBuf,
    /// `limits.aws_compat`.
    pub aws_compat: bool,
    /// `node.zone` after the environment override: targets' default zone.
    pub node_zone: String,
    /// The port of the listener being decoded (a redirect to it changes nothing).
    pub listener_port: Option<u16>,
    /// Environment lookups go through here so tests can inject values.
    pub env: EnvLookup,
}

impl Ctx {
    /// Resolves a config path against the config file's directory.
    pub fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }
}

/// Options of one load (the environment, for tests).
pub struct LoadOptions {
    pub env: EnvLookup,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            env: Box::new(|k| std::env::var(k).ok()),
        }
    }
}

/// Reads, validates and compiles the config file at `path`.
pub fn load(path: &Path) -> Result<Snapshot, Vec<ConfigError>> {
    load_with(path, LoadOptions::default())
}

/// [`load`] with explicit options.
pub fn load_with(path: &Path, opts: LoadOptions) -> Result<Snapshot, Vec<ConfigError>> {
    let shown = path.display().to_string();
    let bytes = match crate::util::read_capped(path, crate::util::MAX_CONFIG_BYTES) {
        Ok(b) => b,
        Err(e) => {
            let mut errs = Errors::new(shown);
            errs.push(
                Pos::START,
                "(file)",
                format!("cannot read the config file: {e}"),
            );
            return Err(errs.into_sorted());
        }
    };
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let base_dir = abs
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let source = ConfigSource {
        path: abs,
        sha256: sha256_hex(&bytes),
        loaded_at: SystemTime::now(),
    };
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let mut errs = Errors::new(shown);
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = valid.iter().filter(|b| **b == b'\n').count() as u32 + 1;
            errs.push(
                Pos::new(line, 1),
                "(file)",
                "the config file is not valid UTF-8",
            );
            return Err(errs.into_sorted());
        }
    };
    load_text(&text, &shown, base_dir, source, opts)
}

/// Decodes config text; `shown` names the file in errors.
pub fn load_text(
    text: &str,
    shown: &str,
    base_dir: PathBuf,
    source: ConfigSource,
    opts: LoadOptions,
) -> Result<Snapshot, Vec<ConfigError>> {
    let mut cx = Ctx {
        errs: Errors::new(shown),
        base_dir,
        aws_compat: true,
        node_zone: String::new(),
        listener_port: None,
        env: opts.env,
    };
    let root = match node::parse(text) {
        Ok(n) => n,
        Err(e) => {
            cx.errs.push(e.pos, "(yaml)", e.message);
            return Err(cx.errs.into_sorted());
        }
    };
    let snapshot = sections::decode_root(&mut cx, &root, source);
    match snapshot {
        Some(s) if cx.errs.is_empty() => Ok(s),
        _ => Err(cx.errs.into_sorted()),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The admin address and token file of a config, read leniently (the rest of the
/// file may be invalid: `fulcrum reload` must still reach the server to hear why).
/// Defaults as in the full loader: 127.0.0.1:9900, no token.
pub fn admin_settings(
    path: &Path,
) -> Result<(Option<std::net::SocketAddr>, Option<PathBuf>), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let root = node::parse(&text).map_err(|e| {
        format!(
            "{}:{}:{}: {}",
            path.display(),
            e.pos.line,
            e.pos.col,
            e.message
        )
    })?;
    let base = std::path::absolute(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let mut bind = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9900)));
    let mut token = None;
    if let node::Value::Map(entries) = &root.value {
        if let Some((_, admin)) = entries.iter().find(|(k, _)| k.name == "admin") {
            if let node::Value::Map(keys) = &admin.value {
                for (k, v) in keys {
                    match (k.name.as_str(), &v.value) {
                        ("bind", node::Value::Str(s)) if s.trim() == "off" => bind = None,
                        ("bind", node::Value::Str(s)) => {
                            bind = Some(s.trim().parse().map_err(|_| {
                                format!("admin.bind: cannot parse \"{s}\" as IP:PORT")
                            })?)
                        }
                        ("token_file", node::Value::Str(s)) if !s.is_empty() => {
                            let p = Path::new(s);
                            token = Some(if p.is_absolute() {
                                p.to_path_buf()
                            } else {
                                base.join(p)
                            });
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    Ok((bind, token))
}
