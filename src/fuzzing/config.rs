//! The config loader: YAML text to a validated snapshot, or errors that say where;
//! never a panic. A snapshot that loads routes the same through each listener's rule
//! table as through the linear scan.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::SystemTime;

use crate::config::node::Value;
use crate::config::{LoadOptions, load_text};
use crate::router::{RequestView, route, route_with};
use crate::snapshot::ConfigSource;

/// Text that could name a device or a kernel file (directly, or built by a YAML
/// escape or an escaped line break) is skipped: the loader reads the files a config
/// names, and reading `/dev/zero` or `/dev/stdin` never ends. Those are files the
/// operator chose; the fuzzer should not go looking for them. Host names are skipped
/// too (see [`names_a_host`]).
const SKIPPED: [&str; 9] = [
    "/dev", "/proc", "/sys", "/run", "\\x", "\\u", "\\U", "\\\n", "\\\r",
];

/// Whether any string in the tree is a `HOST:PORT` that target decoding would look
/// up in the DNS (a network round trip per input, and not ours to make).
fn names_a_host(v: &Value) -> bool {
    match v {
        Value::Str(s) => {
            let s = s.trim();
            s.parse::<SocketAddr>().is_err()
                && s.rsplit_once(':').is_some_and(|(host, port)| {
                    port.parse::<u16>().is_ok_and(|p| p > 0)
                        && !host.is_empty()
                        && host
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                })
        }
        Value::Seq(items) => items.iter().any(|n| names_a_host(&n.value)),
        Value::Map(entries) => entries.iter().any(|(_, n)| names_a_host(&n.value)),
        _ => false,
    }
}

/// Loads `data` (lossy UTF-8) as a config file in a directory that does not exist,
/// with an empty environment.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if SKIPPED.iter().any(|s| text.contains(s)) {
        return;
    }
    if let Ok(root) = crate::config::node::parse(&text) {
        if names_a_host(&root.value) {
            return;
        }
    }
    let dir = PathBuf::from("/nonexistent/fulcrum-fuzz");
    let source = ConfigSource {
        path: dir.join("fuzz.yaml"),
        sha256: String::new(),
        loaded_at: SystemTime::UNIX_EPOCH,
    };
    let opts = LoadOptions {
        env: Box::new(|_| None),
    };
    match load_text(&text, "fuzz.yaml", dir, source, opts) {
        Ok(snapshot) => {
            let _ = snapshot.summary();
            for l in &snapshot.listeners {
                assert!(l.rules.windows(2).all(|w| w[0].priority < w[1].priority));
                for rule in &l.rules {
                    let c = &rule.conditions;
                    let host = c.host.first().map_or("", |p| p.as_str());
                    let path = c.path.first().map_or("/", |p| p.as_str());
                    for (host, path) in [(host, path), (&host.replace('*', "x"), "/")] {
                        let req = RequestView {
                            host,
                            path,
                            query: "",
                            method: "GET",
                            headers: &|_| false,
                            source: IpAddr::V4(Ipv4Addr::LOCALHOST),
                        };
                        let (a, pa) = route(l, &req);
                        let (b, pb) = route_with(l, &l.table, &req);
                        assert_eq!(pa, pb, "{host:?} {path:?}");
                        assert!(std::ptr::eq(a, b));
                    }
                }
            }
        }
        Err(errs) => {
            assert!(!errs.is_empty(), "refused without a reason");
            // Lines as YAML counts them (CR, LF and CRLF each end one).
            let lines = text
                .replace("\r\n", "\n")
                .replace('\r', "\n")
                .lines()
                .count() as u32;
            for e in &errs {
                assert_eq!(e.file, "fuzz.yaml");
                assert!(!e.message.trim().is_empty(), "{e:?}");
                assert!(e.pos.line >= 1 && e.pos.col >= 1, "{e:?}");
                assert!(
                    e.pos.line <= lines + 1,
                    "{e:?} past the end ({lines} lines)"
                );
                let _ = e.to_string();
            }
            assert!(errs.windows(2).all(|w| w[0].pos <= w[1].pos));
        }
    }
}
