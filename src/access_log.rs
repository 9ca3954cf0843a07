//! The access log (SPEC §10): one line per request (http/https) or connection
//! (tcp/tls), formatted as ALB writes it (`alb`) or as one JSON object (`json`).
//!
//! The data path only queues a [`Record`] ([`AccessLog::submit`] never blocks; a
//! full queue drops the record and counts it in `fulcrum_access_log_dropped_total`).
//! A plain std thread formats the records, batches the lines in a buffer and
//! flushes whenever the queue runs empty and at least every 100 ms under load.
//! When the file cannot take them (a full disk), the buffer keeps what it holds
//! for the next flush and lines that no longer fit are dropped and counted the
//! same way, so the log resumes where it stopped once space frees.
//! SIGHUP calls [`AccessLog::reopen`] so logrotate can move the file away.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::record::Record;
use crate::snapshot::{AccessLogDest, AccessLogFormat, AccessLogSettings};

/// Records the queue holds before [`AccessLog::submit`] starts dropping.
pub const QUEUE_CAPACITY: usize = 65_536;
/// Under sustained load the buffer is flushed at least this often.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Write errors are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(1);
/// How long [`AccessLog::close`] waits for the writer to drain before giving up.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
const BUFFER: usize = 64 * 1024;

/// Appends the record as one ALB-format line (with its newline) to `out`.
///
/// Absent values are `-` (`"-"` in quoted fields), absent processing times `-1`;
/// inside quoted fields `"` and `\` are backslash-escaped and control characters
/// (and U+2028/U+2029) written as `\xHH` per UTF-8 byte, so a line can neither be
/// split nor grow extra fields. `target:port_list` and `target_status_code_list`
/// hold the one target and its status.
pub fn format_alb(r: &Record, out: &mut String) {
    let target = r.target.map(canonical);
    bare(out, Some(r.kind));
    time(out, r.time);
    bare(out, Some(&r.listener));
    num(out, Some(canonical(r.client)));
    num(out, target);
    secs(out, r.request_processing);
    secs(out, r.target_processing);
    secs(out, r.response_processing);
    num(out, r.elb_status);
    num(out, r.target_status);
    num(out, Some(r.received_bytes));
    num(out, Some(r.sent_bytes));
    quoted(out, Some(&r.request));
    quoted(out, r.user_agent.as_deref());
    bare(out, r.ssl_cipher);
    bare(out, r.ssl_protocol);
    bare(out, r.target_group.as_deref());
    quoted(out, r.trace_id.as_deref());
    quoted(out, r.domain_name.as_deref());
    quoted(out, r.chosen_cert.as_deref());
    num(out, r.matched_rule_priority);
    time(out, r.request_creation_time);
    quoted(out, Some(r.actions_executed));
    quoted(out, r.redirect_url.as_deref());
    quoted(out, r.error_reason);
    quoted(out, target.map(|t| t.to_string()).as_deref());
    quoted(out, r.target_status.map(|s| s.to_string()).as_deref());
    quoted(out, r.classification);
    quoted(out, r.classification_reason);
    out.pop(); // the last field's space
    out.push('\n');
}

/// Appends the record as one JSON object (with its newline) to `out`, with the
/// keys of SPEC §10 in that order: numbers (status codes, bytes, the rule
/// priority, processing times in seconds with millisecond precision) are JSON
/// numbers, values the alb format writes as `-` are `null`. A processing time
/// that was not measured is `-1`, as in the alb format. `target_list` and
/// `target_status_code_list` are strings, as the ALB lists are (`"10.0.0.1:80"`,
/// `"200"`).
pub fn format_json(r: &Record, out: &mut String) {
    let addr = |a: Option<SocketAddr>| a.map(|a| canonical(a).to_string());
    let secs = |d: Option<Duration>| d.map_or(-1.0, |d| millis(d) as f64 / 1000.0);
    let text = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    // An empty quoted field is `-` in the alb format, so `null` here.
    let opt = |s: &Option<String>| s.as_deref().filter(|s| !s.is_empty()).map(str::to_owned);
    let status_list = r.target_status.map(|s| s.to_string());
    out.push('{');
    field(out, "type", r.kind);
    field(out, "time", stamp(r.time));
    field(out, "elb", &*r.listener);
    field(out, "client", addr(Some(r.client)));
    field(out, "target", addr(r.target));
    field(out, "request_processing_time", secs(r.request_processing));
    field(out, "target_processing_time", secs(r.target_processing));
    field(out, "response_processing_time", secs(r.response_processing));
    field(out, "elb_status_code", r.elb_status);
    field(out, "target_status_code", r.target_status);
    field(out, "received_bytes", r.received_bytes);
    field(out, "sent_bytes", r.sent_bytes);
    field(out, "request", text(&r.request));
    field(out, "user_agent", opt(&r.user_agent));
    field(out, "ssl_cipher", r.ssl_cipher);
    field(out, "ssl_protocol", r.ssl_protocol);
    field(out, "target_group", r.target_group.as_deref());
    field(out, "trace_id", opt(&r.trace_id));
    field(out, "domain_name", opt(&r.domain_name));
    field(out, "chosen_cert", opt(&r.chosen_cert));
    field(out, "matched_rule_priority", r.matched_rule_priority);
    field(out, "request_creation_time", stamp(r.request_creation_time));
    field(out, "actions_executed", text(r.actions_executed));
    field(out, "redirect_url", opt(&r.redirect_url));
    field(out, "error_reason", r.error_reason);
    field(out, "target_list", addr(r.target));
    field(out, "target_status_code_list", status_list);
    field(out, "classification", r.classification);
    field(out, "classification_reason", r.classification_reason);
    out.pop(); // the last field's comma
    out.push_str("}\n");
}

fn field(out: &mut String, key: &str, value: impl serde::Serialize) {
    out.push('"');
    out.push_str(key);
    out.push_str("\":");
    match serde_json::to_string(&value) {
        Ok(v) => out.push_str(&v),
        Err(_) => out.push_str("null"),
    }
    out.push(',');
}

/// `2026-11-24T16:40:00.123456Z` (UTC, microseconds).
fn stamp(t: SystemTime) -> String {
    let secs = crate::util::rfc3339(t);
    let micros = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_micros());
    format!("{}.{micros:06}Z", secs.trim_end_matches('Z'))
}

/// Rounded to the nearest millisecond.
fn millis(d: Duration) -> u128 {
    (d.as_nanos() + 500_000) / 1_000_000
}

// The ALB field writers below append the value and a space.

fn time(out: &mut String, t: SystemTime) {
    out.push_str(&stamp(t));
    out.push(' ');
}

/// Seconds with three decimals, `-1` when absent.
fn secs(out: &mut String, d: Option<Duration>) {
    let _ = match d.map(millis) {
        Some(ms) => write!(out, "{}.{:03} ", ms / 1000, ms % 1000),
        None => write!(out, "-1 "),
    };
}

fn num(out: &mut String, n: Option<impl std::fmt::Display>) {
    let _ = match n {
        Some(n) => write!(out, "{n} "),
        None => write!(out, "- "),
    };
}

/// An IPv4-mapped IPv6 address (a dual-stack socket's view of an IPv4 peer) is
/// written as the IPv4 address.
fn canonical(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(ip) => SocketAddr::new(ip.into(), v6.port()),
            None => a,
        },
        SocketAddr::V4(_) => a,
    }
}

/// An unquoted field: `-` when absent or empty; whitespace, quotes, backslashes
/// and control characters (none expected in names) escaped as `\xHH`.
fn bare(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) if !s.is_empty() => escape(out, s, true),
        _ => out.push('-'),
    }
    out.push(' ');
}

/// A quoted field: `"-"` when absent or empty.
fn quoted(out: &mut String, s: Option<&str>) {
    out.push('"');
    match s {
        Some(s) if !s.is_empty() => escape(out, s, false),
        _ => out.push('-'),
    }
    out.push_str("\" ");
}

fn escape(out: &mut String, s: &str, bare: bool) {
    for c in s.chars() {
        let hex = c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}')
            || (bare && (c.is_whitespace() || c == '"' || c == '\\'));
        if hex {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "\\x{b:02x}");
            }
        } else {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
    }
}

enum Msg {
    Record(Box<Record>),
    /// Wakes the writer to act on a pending reopen.
    Wake,
    /// Flush and stop.
    Close,
}

/// What the writer thread shares with the handles (not the sender: the writer
/// ends when the last handle is dropped without `close`).
struct Shared {
    reopen: AtomicBool,
    /// Lines dropped: queue full, log closed, or lost to write errors.
    dropped: AtomicU64,
    dropped_metric: metrics::Counter,
    /// Held by a test to stall the writer.
    #[cfg(test)]
    gate: Mutex<()>,
}

struct Inner {
    settings: AccessLogSettings,
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
    closed: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// A handle on the access log's writer thread; clones share it.
#[derive(Clone)]
pub struct AccessLog {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("settings", &self.inner.settings)
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl AccessLog {
    /// Starts the background writer thread (a plain std thread) for the settings,
    /// opening the file (append, created if missing; its directory must exist);
    /// `None` when the log is off.
    pub fn start(settings: &AccessLogSettings) -> io::Result<Option<AccessLog>> {
        AccessLog::with_capacity(settings, QUEUE_CAPACITY)
    }

    /// [`AccessLog::start`] with a queue of `capacity` records.
    pub fn with_capacity(
        settings: &AccessLogSettings,
        capacity: usize,
    ) -> io::Result<Option<AccessLog>> {
        let path = match &settings.dest {
            AccessLogDest::Off => return Ok(None),
            AccessLogDest::Stdout => None,
            AccessLogDest::File(p) => Some(p.clone()),
        };
        let out = open(path.as_deref())?;
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let shared = Arc::new(Shared {
            reopen: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            dropped_metric: metrics::counter!(crate::metrics::ACCESS_LOG_DROPPED),
            #[cfg(test)]
            gate: Mutex::new(()),
        });
        let writer = Writer {
            rx,
            path,
            out,
            format: settings.format,
            shared: shared.clone(),
            line: String::with_capacity(1024),
            last_warn: None,
        };
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer.run())?;
        Ok(Some(AccessLog {
            inner: Arc::new(Inner {
                settings: settings.clone(),
                tx,
                shared,
                closed: AtomicBool::new(false),
                thread: Mutex::new(Some(thread)),
            }),
        }))
    }

    /// The settings this handle was started with (the format and destination
    /// are fixed; the owner restarts the handle when a reload changes them).
    pub fn settings(&self) -> &AccessLogSettings {
        &self.inner.settings
    }

    /// Queues the record without ever blocking; when the queue is full (or the
    /// log closed) the record is dropped and counted.
    pub fn submit(&self, r: Record) {
        let inner = &*self.inner;
        if inner.closed.load(Ordering::Relaxed) {
            return self.count_drop();
        }
        match inner.tx.try_send(Msg::Record(Box::new(r))) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.count_drop(),
        }
    }

    fn count_drop(&self) {
        self.inner.shared.count_dropped(1);
    }

    /// Records dropped so far, whether the queue was full or the file could not
    /// take them (also counted in `fulcrum_access_log_dropped_total`).
    pub fn dropped(&self) -> u64 {
        self.inner.shared.dropped.load(Ordering::Relaxed)
    }

    /// Reopens the file at its path (after logrotate moved it); called on
    /// SIGHUP. Returns at once: lines the writer handles from now on go to the
    /// new file. No-op for stdout.
    pub fn reopen(&self) {
        if let AccessLogDest::File(_) = self.inner.settings.dest {
            self.inner.shared.reopen.store(true, Ordering::Release);
            // When the queue is full the writer is busy and sees the flag anyway.
            let _ = self.inner.tx.try_send(Msg::Wake);
        }
    }

    /// Writes and flushes what is queued, then stops the thread (shutdown).
    /// Records submitted through other clones afterwards are dropped. Gives up
    /// waiting after 10 s (a stuck stdout, say).
    pub fn close(self) {
        let inner = &*self.inner;
        let thread = inner
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(thread) = thread else { return };
        inner.closed.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        let mut close = Some(Msg::Close);
        while !thread.is_finished() {
            if let Some(Err(TrySendError::Full(m))) = close.take().map(|m| inner.tx.try_send(m)) {
                close = Some(m);
            }
            if Instant::now() >= deadline {
                return tracing::warn!("access log: the writer did not finish; giving up");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = thread.join();
    }
}

fn open(path: Option<&Path>) -> io::Result<BufWriter<Box<dyn Write + Send>>> {
    let sink: Box<dyn Write + Send> = match path {
        // Not locked for good: tracing may share stdout.
        None => Box::new(io::stdout()),
        Some(p) => {
            let mut o = OpenOptions::new();
            o.append(true).create(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o640);
            Box::new(o.open(p)?)
        }
    };
    Ok(BufWriter::with_capacity(BUFFER, sink))
}

impl Shared {
    fn count_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
        self.dropped_metric.increment(n);
    }
}

struct Writer {
    rx: Receiver<Msg>,
    /// `None`: stdout.
    path: Option<PathBuf>,
    out: BufWriter<Box<dyn Write + Send>>,
    format: AccessLogFormat,
    shared: Arc<Shared>,
    line: String,
    last_warn: Option<Instant>,
}

impl Writer {
    fn run(mut self) {
        // Nothing is buffered while waiting here: every batch ends with a flush.
        while let Ok(first) = self.rx.recv() {
            #[cfg(test)]
            let shared = self.shared.clone();
            #[cfg(test)]
            let _gate = shared.gate.lock().unwrap_or_else(PoisonError::into_inner);
            let mut last_flush = Instant::now();
            let mut next = Some(first);
            while let Some(msg) = next {
                if self.shared.reopen.load(Ordering::Acquire)
                    && self.shared.reopen.swap(false, Ordering::AcqRel)
                {
                    self.reopen();
                }
                match msg {
                    Msg::Record(r) => self.write(&r),
                    Msg::Wake => {}
                    Msg::Close => return self.finish(),
                }
                if last_flush.elapsed() >= FLUSH_EVERY {
                    self.flush();
                    last_flush = Instant::now();
                }
                next = self.rx.try_recv().ok();
            }
            self.flush();
        }
        self.finish();
    }

    fn write(&mut self, r: &Record) {
        self.line.clear();
        match self.format {
            AccessLogFormat::Alb => format_alb(r, &mut self.line),
            AccessLogFormat::Json => format_json(r, &mut self.line),
        }
        // On an error nothing of the line was buffered: BufWriter first tries to
        // make room by flushing, and keeps what it could not write.
        if let Err(e) = self.out.write_all(self.line.as_bytes()) {
            self.shared.count_dropped(1);
            self.warn("write", &e);
        }
    }

    /// The last flush; lines the file still refuses are counted as dropped.
    fn finish(&mut self) {
        self.flush();
        let sink = std::mem::replace(&mut self.out, BufWriter::new(Box::new(io::sink())));
        self.discard(sink);
    }

    /// Drops a writer without the flush its `Drop` would try, counting the lines
    /// still in its buffer (a partly written line counts as dropped).
    fn discard(&self, old: BufWriter<Box<dyn Write + Send>>) {
        let (_, buffered) = old.into_parts();
        let lines = buffered.map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count());
        if lines > 0 {
            self.shared.count_dropped(lines as u64);
        }
    }

    fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            self.warn("flush", &e);
        }
    }

    fn reopen(&mut self) {
        let Some(path) = self.path.clone() else {
            return;
        };
        self.flush();
        match open(Some(&path)) {
            Ok(out) => {
                let old = std::mem::replace(&mut self.out, out);
                self.discard(old);
            }
            Err(e) => tracing::warn!(
                path = %path.display(),
                error = %e,
                "access log: cannot reopen; still writing to the old file"
            ),
        }
    }

    /// Logs a write error, at most once per second; the writer keeps going.
    fn warn(&mut self, what: &str, e: &io::Error) {
        let now = Instant::now();
        if self.last_warn.is_none_or(|t| now - t >= WARN_EVERY) {
            self.last_warn = Some(now);
            let path = self.path.as_deref().unwrap_or(Path::new("stdout"));
            tracing::warn!(path = %path.display(), error = %e, "access log: {what} failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(secs: u64, micros: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, micros * 1000)
    }

    fn https_record() -> Record {
        let client = "192.168.131.39:2817".parse().unwrap();
        let mut r = Record::new("https", "web".into(), client, at(1_795_538_399, 900_000));
        r.time = at(1_795_538_400, 123_456);
        r.target = Some("10.0.0.1:80".parse().unwrap());
        r.request_processing = Some(Duration::from_micros(1_499));
        r.target_processing = Some(Duration::from_millis(1_234));
        r.response_processing = Some(Duration::ZERO);
        (r.elb_status, r.target_status) = (Some(200), Some(200));
        (r.received_bytes, r.sent_bytes) = (34, 366);
        r.request = "GET https://www.example.com:443/ HTTP/1.1".into();
        r.user_agent = Some("curl/7.46.0".into());
        r.ssl_cipher = Some("ECDHE-RSA-AES128-GCM-SHA256");
        r.ssl_protocol = Some("TLSv1.2");
        r.target_group = Some("my-targets".into());
        r.trace_id = Some("Root=1-58337262-36d228ad5d99923122bbe354".into());
        r.domain_name = Some("www.example.com".into());
        r.chosen_cert = Some("site".into());
        r.matched_rule_priority = Some(0);
        r.actions_executed = "forward";
        r
    }

    fn tcp_record() -> Record {
        let client = "[::ffff:192.0.2.7]:40000".parse().unwrap();
        let mut r = Record::new("tcp", "db".into(), client, at(1_795_538_340, 0));
        r.time = at(1_795_538_400, 5);
        r.target = Some("[2001:db8::5]:5432".parse().unwrap());
        (r.received_bytes, r.sent_bytes) = (1024, 2048);
        r.target_group = Some("pg".into());
        r
    }

    fn alb(r: &Record) -> String {
        let mut s = String::new();
        format_alb(r, &mut s);
        s
    }

    fn json(r: &Record) -> serde_json::Value {
        let mut s = String::new();
        format_json(r, &mut s);
        assert!(s.ends_with("}\n") && s.matches('\n').count() == 1, "{s}");
        serde_json::from_str(&s).unwrap()
    }

    /// Splits an ALB line into fields, undoing the quoting (not the `\xHH`).
    fn fields(line: &str) -> Vec<String> {
        let (mut out, mut f, mut quoted, mut escaped) = (Vec::new(), String::new(), false, false);
        for c in line.strip_suffix('\n').unwrap().chars() {
            match c {
                _ if escaped => {
                    if c != '"' && c != '\\' {
                        f.push('\\'); // `\xHH` stays
                    }
                    f.push(c);
                    escaped = false;
                }
                '\\' if quoted => escaped = true,
                '"' if quoted || f.is_empty() => quoted = !quoted,
                ' ' if !quoted => out.push(std::mem::take(&mut f)),
                _ => f.push(c),
            }
        }
        assert!(!quoted && !escaped, "{line}");
        out.push(f);
        out
    }

    #[test]
    fn alb_lines() {
        assert_eq!(
            alb(&https_record()),
            "https 2026-11-24T16:40:00.123456Z web 192.168.131.39:2817 10.0.0.1:80 \
             0.001 1.234 0.000 200 200 34 366 \"GET https://www.example.com:443/ HTTP/1.1\" \
             \"curl/7.46.0\" ECDHE-RSA-AES128-GCM-SHA256 TLSv1.2 my-targets \
             \"Root=1-58337262-36d228ad5d99923122bbe354\" \"www.example.com\" \"site\" 0 \
             2026-11-24T16:39:59.900000Z \"forward\" \"-\" \"-\" \"10.0.0.1:80\" \"200\" \
             \"-\" \"-\"\n"
        );
        assert_eq!(
            alb(&tcp_record()),
            "tcp 2026-11-24T16:40:00.000005Z db 192.0.2.7:40000 [2001:db8::5]:5432 \
             -1 -1 -1 - - 1024 2048 \"-\" \"-\" - - pg \"-\" \"-\" \"-\" - \
             2026-11-24T16:39:00.000000Z \"-\" \"-\" \"-\" \"[2001:db8::5]:5432\" \"-\" \
             \"-\" \"-\"\n"
        );
        let mut r = tcp_record();
        (r.target, r.target_group, r.elb_status) = (None, None, Some(503));
        r.error_reason = Some("TargetConnectionErrorCode");
        r.redirect_url = Some(String::new());
        let f = fields(&alb(&r));
        assert_eq!(f.len(), 29);
        assert_eq!([&f[4], &f[8], &f[16], &f[23]], ["-", "503", "-", "-"]);
        assert_eq!([&f[24], &f[25]], ["TargetConnectionErrorCode", "-"]);
    }

    const KEYS: &str = "type time elb client target request_processing_time \
        target_processing_time response_processing_time elb_status_code target_status_code \
        received_bytes sent_bytes request user_agent ssl_cipher ssl_protocol target_group \
        trace_id domain_name chosen_cert matched_rule_priority request_creation_time \
        actions_executed redirect_url error_reason target_list target_status_code_list \
        classification classification_reason";

    #[test]
    fn json_keys_values_nulls() {
        let mut s = String::new();
        format_json(&https_record(), &mut s);
        let pos: Vec<usize> = KEYS
            .split_whitespace()
            .map(|k| s.find(&format!("\"{k}\":")).unwrap())
            .collect();
        assert!(
            pos.windows(2).all(|w| w[0] < w[1]),
            "keys in SPEC order: {s}"
        );
        #[rustfmt::skip]
        let want = json!({
            "type": "https", "time": "2026-11-24T16:40:00.123456Z", "elb": "web",
            "client": "192.168.131.39:2817", "target": "10.0.0.1:80",
            "request_processing_time": 0.001, "target_processing_time": 1.234,
            "response_processing_time": 0.0, "elb_status_code": 200, "target_status_code": 200,
            "received_bytes": 34, "sent_bytes": 366,
            "request": "GET https://www.example.com:443/ HTTP/1.1", "user_agent": "curl/7.46.0",
            "ssl_cipher": "ECDHE-RSA-AES128-GCM-SHA256", "ssl_protocol": "TLSv1.2",
            "target_group": "my-targets", "trace_id": "Root=1-58337262-36d228ad5d99923122bbe354",
            "domain_name": "www.example.com", "chosen_cert": "site", "matched_rule_priority": 0,
            "request_creation_time": "2026-11-24T16:39:59.900000Z", "actions_executed": "forward",
            "redirect_url": null, "error_reason": null, "target_list": "10.0.0.1:80",
            "target_status_code_list": "200", "classification": null, "classification_reason": null,
        });
        assert_eq!(json(&https_record()), want);
        #[rustfmt::skip]
        let want = json!({
            "type": "tcp", "time": "2026-11-24T16:40:00.000005Z", "elb": "db",
            "client": "192.0.2.7:40000", "target": "[2001:db8::5]:5432",
            "request_processing_time": -1.0, "target_processing_time": -1.0,
            "response_processing_time": -1.0, "elb_status_code": null, "target_status_code": null,
            "received_bytes": 1024, "sent_bytes": 2048, "request": null, "user_agent": null,
            "ssl_cipher": null, "ssl_protocol": null, "target_group": "pg", "trace_id": null,
            "domain_name": null, "chosen_cert": null, "matched_rule_priority": null,
            "request_creation_time": "2026-11-24T16:39:00.000000Z", "actions_executed": null,
            "redirect_url": null, "error_reason": null, "target_list": "[2001:db8::5]:5432",
            "target_status_code_list": null, "classification": null, "classification_reason": null,
        });
        assert_eq!(json(&tcp_record()), want);
    }

    /// An empty `User-Agent:` is `"-"` in the alb format and `null` in JSON.
    #[test]
    fn empty_text_is_a_dash_and_null() {
        let mut r = https_record();
        r.user_agent = Some(String::new());
        r.trace_id = Some(String::new());
        let v = json(&r);
        assert_eq!(
            (&v["user_agent"], &v["trace_id"]),
            (&json!(null), &json!(null))
        );
        let mut line = String::new();
        format_alb(&r, &mut line);
        let f = fields(&line);
        assert_eq!((f[13].as_str(), f[17].as_str()), ("-", "-"), "{line}");
    }

    #[test]
    fn hostile_user_agent_cannot_split_or_spoof() {
        let ua = "evil\" \"x\ny\\z\r\t\u{85}\u{2028}\" - 200";
        let mut r = https_record();
        r.user_agent = Some(ua.into());
        r.request = "GET / HTTP/1.1\n\"".into();
        r.listener = "my listener".into();
        let line = alb(&r);
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        assert!(!line.contains('\r') && !line.contains('\u{2028}'));
        let escaped = r#" "evil\" \"x\x0ay\\z\x0d\x09\xc2\x85\xe2\x80\xa8\" - 200" "#;
        assert!(line.contains(escaped), "{line}");
        let f = fields(&line);
        assert_eq!(f.len(), 29, "{line}");
        assert_eq!(f[2], r"my\x20listener");
        assert_eq!(f[12], r#"GET / HTTP/1.1\x0a""#);
        assert_eq!(
            f[13],
            r#"evil" "x\x0ay\z\x0d\x09\xc2\x85\xe2\x80\xa8" - 200"#
        );
        assert_eq!(f[14], "ECDHE-RSA-AES128-GCM-SHA256");
        let v = json(&r);
        assert_eq!(
            (&v["user_agent"], &v["elb"]),
            (&json!(ua), &json!("my listener"))
        );
    }

    fn file(path: &Path, format: AccessLogFormat) -> AccessLogSettings {
        let dest = AccessLogDest::File(path.to_owned());
        let path_at = crate::config::Pos::START;
        AccessLogSettings {
            dest,
            format,
            path_at,
        }
    }

    fn numbered(i: u64) -> Record {
        let mut r = tcp_record();
        r.sent_bytes = i;
        r
    }

    fn lines(path: &Path) -> Vec<String> {
        let text = std::fs::read_to_string(path).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    fn wait_for_lines(path: &Path, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while lines(path).len() < n {
            assert!(Instant::now() < deadline, "lines were not flushed");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn writes_records_in_order() {
        let dir = tempfile::tempdir().unwrap();
        for format in [AccessLogFormat::Alb, AccessLogFormat::Json] {
            let path = dir.path().join(format!("{format:?}.log"));
            let log = AccessLog::start(&file(&path, format)).unwrap().unwrap();
            assert_eq!(log.settings(), &file(&path, format));
            let other = log.clone();
            (0..5000).for_each(|i| other.submit(numbered(i)));
            log.close();
            let got = lines(&path);
            assert_eq!(got.len(), 5000);
            for (i, l) in got.iter().enumerate() {
                let sent = match format {
                    AccessLogFormat::Alb => l.split(' ').nth(11).unwrap().parse().unwrap(),
                    AccessLogFormat::Json => serde_json::from_str::<serde_json::Value>(l).unwrap()
                        ["sent_bytes"]
                        .as_u64()
                        .unwrap(),
                };
                assert_eq!(sent, i as u64);
            }
            assert_eq!(other.dropped(), 0);
            other.submit(numbered(0)); // after close: dropped, not blocked
            assert_eq!(other.dropped(), 1);
        }
    }

    #[test]
    fn appends_and_creates_no_directories() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        std::fs::write(&path, "old line\n").unwrap();
        let log = AccessLog::start(&file(&path, AccessLogFormat::Alb))
            .unwrap()
            .unwrap();
        log.submit(numbered(1));
        log.close();
        assert_eq!(lines(&path).len(), 2);
        assert_eq!(lines(&path)[0], "old line");

        let missing = dir.path().join("nope/access.log");
        assert!(AccessLog::start(&file(&missing, AccessLogFormat::Alb)).is_err());
        assert!(!dir.path().join("nope").exists());

        let format = AccessLogFormat::Json;
        let path_at = crate::config::Pos::START;
        let off = AccessLogSettings {
            dest: AccessLogDest::Off,
            format,
            path_at,
        };
        assert!(AccessLog::start(&off).unwrap().is_none());
        let stdout = AccessLogSettings {
            dest: AccessLogDest::Stdout,
            format,
            path_at,
        };
        let log = AccessLog::start(&stdout).unwrap().unwrap();
        log.reopen(); // no-op
        log.close();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn write_errors_do_not_stop_the_writer() {
        let full = file(Path::new("/dev/full"), AccessLogFormat::Alb); // ENOSPC
        let log = AccessLog::start(&full).unwrap().unwrap();
        (0..2000).for_each(|i| log.submit(numbered(i)));
        log.clone().close();
        // Every line is lost, and counted: those the buffer held at the end too.
        assert_eq!(log.dropped(), 2000);
    }

    #[test]
    fn reopen_after_rename_writes_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let rotated = dir.path().join("access.log.1");
        let log = AccessLog::start(&file(&path, AccessLogFormat::Alb))
            .unwrap()
            .unwrap();
        (0..10).for_each(|i| log.submit(numbered(i)));
        wait_for_lines(&path, 10);
        std::fs::rename(&path, &rotated).unwrap();
        log.submit(numbered(10)); // still into the old (renamed) file
        wait_for_lines(&rotated, 11);
        log.reopen();
        (100..105).for_each(|i| log.submit(numbered(i)));
        log.close();
        assert_eq!(lines(&rotated).len(), 11);
        let new = lines(&path);
        assert_eq!(new.len(), 5);
        assert!(new[0].contains(" 1024 100 "), "{}", new[0]);
    }

    #[test]
    fn full_queue_drops_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::with_capacity(&file(&path, AccessLogFormat::Alb), 4);
        let log = log.unwrap().unwrap();
        let shared = log.inner.shared.clone();
        let gate = shared.gate.lock().unwrap(); // the writer stalls
        let started = Instant::now();
        (0..100).for_each(|i| log.submit(numbered(i)));
        assert!(started.elapsed() < Duration::from_secs(1), "submit blocked");
        // The writer may have taken one record off the queue before stalling.
        let dropped = log.dropped();
        assert!((95..=96).contains(&dropped), "dropped {dropped}");
        drop(gate);
        log.close();
        assert_eq!(lines(&path).len() as u64, 100 - dropped);
    }
}
