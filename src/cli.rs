//! The command line (SPEC §1). Exit codes: 0 success, 1 invalid config or failed
//! command, 2 usage error.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Default config file when neither `-c` nor `$FULCRUM_CONFIG` is given.
pub const DEFAULT_CONFIG: &str = "/etc/fulcrum/fulcrum.yaml";

#[derive(Debug, Parser)]
#[command(
    name = "fulcrum",
    version,
    about = "A high-performance L4/L7 load balancer appliance",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The config file [default: $FULCRUM_CONFIG, else /etc/fulcrum/fulcrum.yaml]
    // $FULCRUM_CONFIG is read by config_path, not by clap, so that an empty value
    // counts as unset (as for status and reload).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    pub fn path(&self) -> PathBuf {
        config_path(self.config.clone())
    }
}

/// `-c FILE`, else a non-empty `$FULCRUM_CONFIG`, else the default path.
fn config_path(given: Option<PathBuf>) -> PathBuf {
    given
        .or_else(|| {
            std::env::var_os("FULCRUM_CONFIG")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
}

/// How `status` and `reload` find the admin API.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Read the admin address and token from this config [default: $FULCRUM_CONFIG, else /etc/fulcrum/fulcrum.yaml]
    // $FULCRUM_CONFIG is read by admin_target, not by clap, so that it never
    // conflicts with --admin; giving both -c and --admin is a usage error.
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        conflicts_with = "admin"
    )]
    pub config: Option<PathBuf>,
    /// The admin API's address, IP:PORT or HOST:PORT (the config is then not read)
    #[arg(long = "admin", value_name = "ADDR", value_parser = admin_addr)]
    pub admin: Option<AdminAddr>,
    /// A file holding the admin API's bearer token (with --admin)
    #[arg(long = "token-file", value_name = "FILE", requires = "admin")]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the load balancer.
    Run(ConfigArg),
    /// Validate a config file: print a one-line summary (exit 0) or every error (exit 1).
    Check(ConfigArg),
    /// A self-contained quick start: the load balancer on config/demo.yaml plus three demo targets.
    Demo,
    /// Show every target group and target with its health state, read from the admin API.
    Status(AdminArgs),
    /// Ask a running instance to reload its config through the admin API.
    Reload(AdminArgs),
    /// Send one test email through the configured SMTP relay and print its answer.
    AlertTest(ConfigArg),
}

/// Parses the arguments and runs the command; returns the exit code.
pub fn main() -> i32 {
    crate::server::huge_pages_off();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version print to stdout and succeed; usage errors exit 2.
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => 2,
            };
        }
    };
    crate::install_crypto_provider();
    match cli.command {
        Command::Check(c) => check(&c.path()),
        Command::Run(c) => {
            init_logging();
            crate::server::run(&c.path())
        }
        Command::Demo => {
            init_logging();
            crate::demo::run()
        }
        Command::Status(a) => status(&a),
        Command::Reload(a) => reload(&a),
        Command::AlertTest(c) => alert_test(&c.path()),
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // lettre logs the raw AUTH exchange at debug level: never let secrets through.
    let filter = match "lettre=warn".parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// `fulcrum check`: everything `run` validates, binding nothing.
pub fn check(path: &Path) -> i32 {
    match crate::config::load(path) {
        Ok(snapshot) => {
            println!("{}: ok: {}", path.display(), snapshot.summary());
            0
        }
        Err(errors) => {
            let stderr = std::io::stderr();
            let mut out = stderr.lock();
            for e in &errors {
                let _ = writeln!(out, "{e}");
            }
            1
        }
    }
}

/// `fulcrum alert-test`: one test email through the configured relay.
fn alert_test(path: &Path) -> i32 {
    let snapshot = match crate::config::load(path) {
        Ok(s) => s,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            return 1;
        }
    };
    let Some(settings) = snapshot.alerts.clone() else {
        eprintln!(
            "fulcrum alert-test: {} has no alerts section",
            path.display()
        );
        return 1;
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fulcrum alert-test: {e}");
            return 1;
        }
    };
    match rt.block_on(crate::alerts::send_test(&settings, &snapshot.node.name)) {
        Ok(report) => {
            println!("{report}");
            0
        }
        Err(report) => {
            eprintln!("{report}");
            1
        }
    }
}

/// `--admin`: IP:PORT or HOST:PORT. Only the shape is checked here (a usage error,
/// exit 2); the host is resolved when the command runs (a failure exits 1), and
/// every address it resolves to is tried in order (`localhost` may name ::1 before
/// 127.0.0.1).
#[derive(Clone, Debug)]
pub struct AdminAddr(String);

fn admin_addr(v: &str) -> Result<AdminAddr, String> {
    if v.parse::<SocketAddr>().is_ok() {
        return Ok(AdminAddr(v.to_owned()));
    }
    match v.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(AdminAddr(v.to_owned()))
        }
        _ => Err("not an address: IP:PORT or HOST:PORT".to_owned()),
    }
}

impl AdminAddr {
    fn resolve(&self) -> Result<Vec<SocketAddr>, String> {
        use std::net::ToSocketAddrs;
        let all: Vec<SocketAddr> = self
            .0
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve the admin address {}: {e}", self.0))?
            .collect();
        if all.is_empty() {
            return Err(format!("the admin address {} resolves to nothing", self.0));
        }
        Ok(all)
    }
}

/// Where the admin API is and which token to send.
fn admin_target(a: &AdminArgs) -> Result<(Vec<SocketAddr>, Option<String>), String> {
    let (addr, token_file) = match &a.admin {
        Some(addr) => (Some(addr.resolve()?), a.token_file.clone()),
        None => {
            let path = config_path(a.config.clone());
            let (addr, token_file) = crate::config::admin_settings(&path)?;
            (addr.map(|a| vec![a]), token_file)
        }
    };
    let addr = addr.ok_or("the admin API is off in this config (admin.bind: off)")?;
    let token = match token_file {
        Some(p) => Some(
            crate::util::trim_ascii(
                &std::fs::read_to_string(&p)
                    .map_err(|e| format!("cannot read token file {}: {e}", p.display()))?,
            )
            .to_owned(),
        ),
        None => None,
    };
    Ok((addr, token))
}

/// One request to the admin API at the first of `addrs` that accepts a
/// connection: (status, body).
pub fn admin_request(
    addrs: &[SocketAddr],
    method: &str,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut connected = Err(std::io::Error::other("no address"));
    for addr in addrs {
        connected = std::net::TcpStream::connect_timeout(addr, Duration::from_secs(5));
        if connected.is_ok() {
            break;
        }
    }
    let mut s = connected?;
    let addr = s.peer_addr()?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("malformed answer from the admin API"))?;
    Ok((status, body.to_owned()))
}

fn call(a: &AdminArgs, method: &str, path: &str) -> Result<(u16, serde_json::Value), String> {
    let (addrs, token) = admin_target(a)?;
    let addr = addrs
        .first()
        .map_or_else(|| "-".to_owned(), SocketAddr::to_string);
    let (code, body) = admin_request(&addrs, method, path, token.as_deref())
        .map_err(|e| format!("cannot reach the admin API at {addr}: {e}"))?;
    if code == 401 {
        return Err(format!(
            "the admin API at {addr} refused the token (401): give --token-file or admin.token_file"
        ));
    }
    let json = serde_json::from_str(&body)
        .map_err(|_| format!("unexpected answer from {addr} ({code}): {}", body.trim()))?;
    Ok((code, json))
}

fn reload(a: &AdminArgs) -> i32 {
    match call(a, "POST", "/api/v1/reload") {
        Ok((200, v)) => {
            println!("reloaded: {}", v["summary"].as_str().unwrap_or(""));
            0
        }
        Ok((_, v)) => {
            eprintln!("reload refused; the running config is unchanged:");
            for e in v["errors"].as_array().into_iter().flatten() {
                eprintln!("{}", e.as_str().unwrap_or(""));
            }
            1
        }
        Err(e) => {
            eprintln!("fulcrum reload: {e}");
            1
        }
    }
}

fn status(a: &AdminArgs) -> i32 {
    match call(a, "GET", "/api/v1/status") {
        Ok((200, v)) => {
            print!("{}", status_table(&v));
            0
        }
        Ok((code, v)) => {
            eprintln!("fulcrum status: the admin API answered {code}: {v}");
            1
        }
        Err(e) => {
            eprintln!("fulcrum status: {e}");
            1
        }
    }
}

/// The status document as a table.
pub fn status_table(v: &serde_json::Value) -> String {
    let s = |x: &serde_json::Value| match x {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut rows = vec![[
        "TARGET GROUP".to_owned(),
        "TARGET".to_owned(),
        "ZONE".to_owned(),
        "STATE".to_owned(),
        "REASON".to_owned(),
        "IN-FLIGHT".to_owned(),
        "CONNECTIONS".to_owned(),
        "SINCE".to_owned(),
        "DESCRIPTION".to_owned(),
    ]];
    for g in v["target_groups"].as_array().into_iter().flatten() {
        let targets = g["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            rows.push([
                s(&g["name"]),
                "(no targets)".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        for t in targets {
            rows.push([
                s(&g["name"]),
                s(&t["address"]),
                s(&t["zone"]),
                s(&t["state"]),
                s(&t["reason"]),
                s(&t["in_flight"]),
                s(&t["active_connections"]),
                s(&t["since"]),
                s(&t["description"]),
            ]);
        }
    }
    let widths: Vec<usize> = (0..9)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = format!(
        "node {} ({}), config {}\n",
        s(&v["node"]["name"]),
        s(&v["node"]["zone"]),
        s(&v["config"]["path"])
    );
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
