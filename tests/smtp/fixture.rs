//! The real SMTP relay of the alert tests: `tests/smtp/relay.py` (aiosmtpd) in a
//! child process on a free port, killed on drop; what it received is read back
//! from its directory. Also a private CA and a relay certificate for the TLS
//! tests, and a log capture.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const PYTHON: &str = "/usr/bin/python3";

/// Panics (fails the test, never skips it) when aiosmtpd is missing.
pub fn require_aiosmtpd() {
    let ok = Command::new(PYTHON)
        .args(["-c", "import aiosmtpd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the alert tests need a real SMTP server: aiosmtpd is not installed for {PYTHON}. \
         Run `sudo scripts/install-test-deps.sh` (it installs Debian's python3-aiosmtpd)."
    );
}

/// A port on 127.0.0.1 that was free a moment ago.
// Also loaded by `common` in test binaries that use both: two copies of a
// stateless-but-for-bookkeeping helper, harmless.
#[allow(clippy::duplicate_mod)]
#[path = "../common/ports.rs"]
mod ports;
pub use ports::free_port;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Plain,
    StartTls,
    Implicit,
}

/// How the relay behaves.
#[derive(Clone, Debug)]
pub struct Opts {
    pub port: Option<u16>,
    pub mode: Mode,
    /// Certificate and key for STARTTLS or implicit TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub auth: Option<(String, String)>,
    /// Replies to the end of DATA, in order; 250 after them.
    pub replies: Vec<String>,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            port: None,
            mode: Mode::Plain,
            tls: None,
            auth: None,
            replies: Vec::new(),
        }
    }
}

pub struct Relay {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Relay {
    pub fn start(opts: Opts) -> Relay {
        require_aiosmtpd();
        let port = opts.port.unwrap_or_else(free_port);
        let dir = tempfile::tempdir().unwrap();
        // A port picked earlier (the "relay comes back" tests) can be taken for a
        // moment as some connection's ephemeral port: retry that bind briefly.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match spawn(&opts, port, dir.path()) {
                Ok(child) => return Relay { child, port, dir },
                Err(e) if e.contains("Address already in use") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("the SMTP relay did not start on port {port}: {e}"),
            }
        }
    }

    /// Messages accepted (250), in order.
    pub fn messages(&self) -> Vec<Value> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                n.starts_with("msg-") && n.ends_with(".json")
            })
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }

    /// Every DATA answered: `{time, code, alert_id}`.
    pub fn attempts(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("attempts.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits until at least `n` messages were accepted.
    pub async fn wait_messages(&self, n: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let m = self.messages();
            if m.len() >= n {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "waited {within:?} for {n} messages, got {}; attempts: {:?}",
                m.len(),
                self.attempts()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn wait_attempts(&self, n: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let a = self.attempts();
            if a.len() >= n {
                return a;
            }
            assert!(
                Instant::now() < deadline,
                "waited {within:?} for {n} attempts, got {a:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Starts `relay.py`; `Err` is its stderr when it did not say READY.
fn spawn(opts: &Opts, port: u16, dir: &Path) -> Result<Child, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp/relay.py");
    let mut cmd = Command::new(PYTHON);
    cmd.arg(script)
        .args(["--port", &port.to_string()])
        .arg("--dir")
        .arg(dir)
        .args([
            "--mode",
            match opts.mode {
                Mode::Plain => "plain",
                Mode::StartTls => "starttls",
                Mode::Implicit => "implicit",
            },
        ])
        .args(["--replies", &opts.replies.join(";")]);
    if let Some((cert, key)) = &opts.tls {
        cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
    }
    if let Some((u, p)) = &opts.auth {
        cmd.args(["--auth", &format!("{u}:{p}")]);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tests/smtp/relay.py");
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let _ = out.read_line(&mut line);
    if line.trim() == "READY" {
        return Ok(child);
    }
    let _ = child.kill();
    let _ = child.wait();
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    Err(format!("{line}{err}"))
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A header of a received message.
pub fn header<'a>(msg: &'a Value, name: &str) -> Option<&'a str> {
    msg["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .and_then(|h| h[1].as_str())
}

/// A private CA and a relay certificate for 127.0.0.1 and localhost signed by it.
pub struct Certs {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn certs() -> Certs {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "fulcrum test relay CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "relay.test");
    let cert = params.signed_by(&key, &issuer).unwrap();
    let c = Certs {
        ca: dir.path().join("ca.pem"),
        cert: dir.path().join("relay.pem"),
        key: dir.path().join("relay.key"),
        dir,
    };
    std::fs::write(&c.ca, ca_pem).unwrap();
    std::fs::write(&c.cert, cert.pem()).unwrap();
    std::fs::write(&c.key, key.serialize_pem()).unwrap();
    c
}

/// Captures this thread's log lines (the alert task runs on the test's
/// current-thread runtime, so its logs are captured too).
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    pub fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let w = logs.clone();
        let sub = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || w.clone())
            .finish();
        (logs, tracing::subscriber::set_default(sub))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}
