//! Resource limits: the open-file limit (accept errors back off instead of
//! spinning, are logged, and serving resumes once descriptors free up),
//! `runtime.max_connections` over several listeners (SPEC §2: past it new
//! connections are closed at once and counted as rejected, §9), a full disk under
//! the access log (SPEC §10: traffic unaffected, lost lines counted in
//! `fulcrum_access_log_dropped_total`, writing resumes when space frees) and under
//! the alert spool (SPEC §6: traffic unaffected, the error logged and counted in
//! `fulcrum_alerts_spool_errors_total`, the alerts still delivered).
//!
//! The full-disk tests mount a small tmpfs, which needs root (CI runs the tests
//! as root). Without it they fail, unless `FULCRUM_SKIP_MOUNT` is set: then the
//! access-log test writes to `/dev/full` instead and the spool test is skipped.

mod common;
#[path = "smtp/fixture.rs"]
mod fixture;
#[path = "common/l4tls.rs"]
mod l4tls;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use fixture::{Opts, Relay};
use l4tls::{Kind, TcpTarget};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------------------------
// /proc

/// Open file descriptors of a process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// utime + stime of a process, in clock ticks (`/proc/<pid>/stat` fields 14, 15).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/pid/stat");
    // The command name (field 2) may hold spaces: count from the last ')'.
    let rest = &stat[stat.rfind(')').expect("stat has a command name") + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state), so field 14 is f[11].
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 on Linux).
fn clk_tck() -> u64 {
    let out = Command::new("getconf").arg("CLK_TCK").output();
    out.ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100)
}

/// Lines of the process's captured output that contain `needle`.
fn log_lines(f: &Fulcrum, needle: &str) -> usize {
    f.logs().lines().filter(|l| l.contains(needle)).count()
}

// ---------------------------------------------------------------------------------
// tmpfs

/// A small tmpfs mounted on a temp dir, lazily unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`64k`). `None` when the mount fails and
    /// `FULCRUM_SKIP_MOUNT` is set; without it a failed mount fails the test.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output();
        let why = match out {
            Ok(o) if o.status.success() => return Some(Tmpfs { dir }),
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
            Err(e) => e.to_string(),
        };
        if std::env::var_os("FULCRUM_SKIP_MOUNT").is_some() {
            eprintln!("FULCRUM_SKIP_MOUNT is set and mounting a tmpfs failed ({why})");
            return None;
        }
        panic!(
            "cannot mount a {size} tmpfs on {} ({why}). The full-disk tests need root \
             (CI runs them as root); set FULCRUM_SKIP_MOUNT=1 to skip what needs a mount.",
            dir.path().display()
        );
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system with `filler` until the kernel says ENOSPC; returns
    /// its path. Removing it frees the space.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = [0x55u8; 4096];
        for _ in 0..100_000 {
            if let Err(e) = f.write_all(&block).and_then(|_| f.sync_all()) {
                assert_eq!(e.kind(), std::io::ErrorKind::StorageFull, "{e}");
                // The last page may be half used: take it too.
                let _ = f.write_all(&block[..1]);
                let probe = std::fs::write(self.path().join("probe"), b"x");
                assert!(probe.is_err(), "the tmpfs still takes writes");
                let _ = std::fs::remove_file(self.path().join("probe"));
                return path;
            }
        }
        panic!("the tmpfs never filled up");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a process that still has a file open there does not block it.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

// ---------------------------------------------------------------------------------
// Open-file limit

/// With its open-file limit lowered (`prlimit --pid`) to a few above what it
/// holds, fulcrum meets EMFILE at accept while clients keep connecting. It must
/// not spin: its CPU time over 3 s at the limit stays far below one core, and the
/// accept error is logged (rate-limited by the back-off). Once the clients
/// close, it accepts and serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_at_the_open_file_limit_backs_off_and_recovers() {
    bounded(90, async {
        let a = Backend::start("nofile").await;
        let (admin, web) = (free_port(), free_port());
        let f = Fulcrum::start(&simple_config(admin, web, &[a.addr])).await;
        assert_eq!(get(local(web), "/warm").await.status, 200);

        let pid = f.pid();
        let held = open_fds(pid);
        let limit = held + 8;
        let st = Command::new("prlimit")
            .arg("--pid")
            .arg(pid.to_string())
            .arg(format!("--nofile={limit}:{limit}"))
            .status()
            .expect("run prlimit (util-linux)");
        assert!(st.success(), "prlimit --pid {pid} --nofile={limit}:{limit}");

        // More clients than descriptors left: the rest wait in the backlog and
        // every accept fails with EMFILE.
        let mut clients = Vec::new();
        for _ in 0..40 {
            clients.push(TcpStream::connect(local(web)).await.unwrap());
        }
        eventually(
            Duration::from_secs(10),
            "an accept error in the log",
            || {
                let n = log_lines(&f, "accept failed");
                async move { (n > 0).then_some(()) }
            },
        )
        .await;
        let at_limit = open_fds(pid);
        assert!(
            at_limit >= limit - 1,
            "fulcrum holds {at_limit} fds, limit {limit}: not at the limit"
        );

        let window = Duration::from_secs(3);
        let (ticks0, logged0, t0) = (
            cpu_ticks(pid),
            log_lines(&f, "accept failed"),
            Instant::now(),
        );
        tokio::time::sleep(window).await;
        let (ticks1, logged1) = (cpu_ticks(pid), log_lines(&f, "accept failed"));
        let secs = t0.elapsed().as_secs_f64();
        let cpu = (ticks1 - ticks0) as f64 / clk_tck() as f64 / secs;
        eprintln!(
            "open-file limit {limit} (held {held} before, {at_limit} at the limit): \
             fulcrum used {:.1}% of one core over {secs:.1} s at the limit; \
             {} accept-failure log lines in that time",
            cpu * 100.0,
            logged1 - logged0
        );
        assert!(
            cpu < 0.25,
            "fulcrum spins at the open-file limit: {:.0}% of a core",
            cpu * 100.0
        );
        assert!(
            logged1 - logged0 < 100,
            "accept failures flood the log: {} lines in {secs:.1} s",
            logged1 - logged0
        );
        let logs = f.logs();
        assert!(
            logs.contains("Too many open files"),
            "the accept error does not say what failed:\n{logs}"
        );

        drop(clients);
        let r = eventually(
            Duration::from_secs(15),
            "fulcrum serves again",
            || async move {
                let raw = b"GET /after HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n";
                let r = tokio::time::timeout(ms(2000), http_request(local(web), raw)).await;
                r.ok()?.ok().filter(|r| r.status == 200)
            },
        )
        .await;
        assert_eq!(r.text(), "nofile");
        let (st, _) = f.admin_get("/healthz").await;
        assert_eq!(st, 200);
        // The backlog's closed connections are still being accepted and let go
        // one by one; within a few seconds the descriptors are back.
        eventually(
            Duration::from_secs(10),
            "descriptors given back after the clients left",
            || async move { (open_fds(pid) < limit).then_some(()) },
        )
        .await;
    })
    .await;
}

// ---------------------------------------------------------------------------------
// max_connections

async fn echo_once(s: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    s.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(ms(5000), s.read_exact(&mut back))
        .await
        .expect("echo within 5 s")
        .expect("echo");
    back
}

/// `max_connections` counts client connections over all listeners: with 3 open
/// (two http keep-alive, one tcp), a fourth on either listener is closed at once
/// without a byte, counted `fulcrum_rejected_connections_total{reason=
/// "max_connections"}` on its listener, and reaches no target; the three keep
/// working; the admin API is not counted; when one leaves, a new client is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_spans_listeners_and_spares_open_connections() {
    bounded(60, async {
        let be = Backend::start("web-be").await;
        let echo = TcpTarget::start(Kind::Echo).await;
        let (admin, web, raw) = (free_port(), free_port(), free_port());
        let yaml = format!(
            "node: {{name: lb-test, zone: zone-a}}\n\
             runtime: {{worker_threads: 2, max_connections: 3}}\n\
             admin: {{bind: \"127.0.0.1:{admin}\"}}\n\
             listeners:\n\
             \x20 - {{name: web, protocol: http, bind: \"127.0.0.1:{web}\", default_action: {{forward: web}}}}\n\
             \x20 - {{name: raw, protocol: tcp, bind: \"127.0.0.1:{raw}\", default_action: {{forward: echo}}}}\n\
             target_groups:\n\
             \x20 - {{name: web, protocol: http, health_check: {{path: /hc, interval: 30s, timeout: 2s}}, targets: [\"{}\"]}}\n\
             \x20 - {{name: echo, protocol: tcp, health_check: {{interval: 30s, timeout: 2s}}, targets: [\"{}\"]}}\n",
            be.addr, echo.addr
        );
        let f = Fulcrum::start(&yaml).await;

        let mut c1 = Conn::connect(local(web)).await.unwrap();
        assert_eq!(c1.get("/1").await.unwrap().status, 200);
        let mut c2 = Conn::connect(local(web)).await.unwrap();
        assert_eq!(c2.get("/2").await.unwrap().status, 200);
        let mut t1 = TcpStream::connect(local(raw)).await.unwrap();
        assert_eq!(echo_once(&mut t1, b"first").await, b"first");
        let active = f
            .wait_metric("fulcrum_active_connections", &[], ms(3000))
            .await;
        assert_eq!(active, 3.0, "fulcrum_active_connections over all listeners");

        // The fourth, on each listener.
        assert!(
            closed_at_accept(local(web)).await,
            "an http connection past max_connections got bytes or stayed open"
        );
        // Sends an HTTP request, which the echo target would send back.
        assert!(
            closed_at_accept(local(raw)).await,
            "a tcp connection past max_connections got bytes or stayed open"
        );
        assert_eq!(be.requests(), 2, "a rejected request reached the target");
        assert!(
            !echo.received().windows(9).any(|w| w == b"/rejected"),
            "a rejected tcp connection reached the target"
        );
        for l in ["web", "raw"] {
            let n = f
                .wait_metric(
                    "fulcrum_rejected_connections_total",
                    &[("listener", l), ("reason", "max_connections")],
                    ms(3000),
                )
                .await;
            assert_eq!(n, 1.0, "rejected max_connections on {l}");
        }
        let (st, _) = f.admin_get("/healthz").await;
        assert_eq!(st, 200, "the admin API counts against max_connections");

        // The three open connections keep working.
        assert_eq!(c1.get("/1b").await.unwrap().status, 200);
        assert_eq!(c2.get("/2b").await.unwrap().status, 200);
        assert_eq!(echo_once(&mut t1, b"second").await, b"second");

        drop(t1);
        let served = eventually(Duration::from_secs(5), "a slot frees up", || async move {
            let mut c = Conn::connect(local(web)).await.ok()?;
            let r = c.get("/4").await.ok()?;
            Some((r, c))
        })
        .await;
        assert_eq!(served.0.status, 200);
        assert_eq!(served.0.text(), "web-be");
    })
    .await;
}

// ---------------------------------------------------------------------------------
// Full disk: access log

/// `n` keep-alive GETs of `prefix-i` on `conns` connections at once; each must be
/// the backend's 200 with its own path echoed back.
async fn traffic(web: SocketAddr, prefix: &str, n: usize, conns: usize) {
    let mut tasks = Vec::new();
    for c in 0..conns {
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::connect(web).await.unwrap();
            for i in (c..n).step_by(conns) {
                let path = format!("/{prefix}-{i}");
                let r = tokio::time::timeout(ms(5000), conn.get(&path))
                    .await
                    .unwrap_or_else(|_| panic!("GET {path}: no answer in 5 s"))
                    .unwrap_or_else(|e| panic!("GET {path}: {e}"));
                assert_eq!(r.status, 200, "GET {path}: {r:?}");
                assert_eq!(r.header("x-path"), Some(path.as_str()), "{r:?}");
            }
        }));
    }
    for t in tasks {
        t.await.expect("traffic task");
    }
}

/// The access log on a full disk: requests are all served while the writer
/// fails, the lost lines are counted in `fulcrum_access_log_dropped_total` and
/// the error logged; once space frees, new lines are written again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_on_a_full_disk_leaves_traffic_alone_and_counts_lost_lines() {
    bounded(90, async {
        // Room for the writer's 64 KiB buffer once the filler goes.
        let fs = Tmpfs::mount("256k");
        let path = match &fs {
            Some(fs) => fs.path().join("access.log"),
            None => PathBuf::from("/dev/full"),
        };
        let a = Backend::start("logged").await;
        let (admin, web) = (free_port(), free_port());
        let yaml = simple_config(admin, web, &[a.addr])
            + &format!(
                "access_log: {{path: \"{}\", format: alb}}\n",
                path.display()
            );
        let f = Fulcrum::start(&yaml).await;

        let filler = match &fs {
            Some(fs) => {
                traffic(local(web), "before", 5, 1).await;
                eventually(Duration::from_secs(5), "5 lines in the access log", || {
                    let n = std::fs::read_to_string(&path)
                        .unwrap_or_default()
                        .lines()
                        .count();
                    async move { (n == 5).then_some(()) }
                })
                .await;
                Some(fs.fill())
            }
            None => None,
        };

        // Far more lines than the writer's 64 KiB buffer holds.
        let sent = 1500;
        traffic(local(web), "full", sent, 3).await;
        let dropped = eventually(Duration::from_secs(10), "lost lines counted", || async {
            let n = f.metric("fulcrum_access_log_dropped_total", &[]).await?;
            (n > 0.0).then_some(n)
        })
        .await;
        eprintln!(
            "access log on a full disk: {sent} requests served, {dropped} lines counted dropped"
        );
        assert!(dropped <= sent as f64, "dropped {dropped} of {sent}");
        let logs = f.logs();
        assert!(
            logs.contains("access log:") && logs.contains("No space left on device"),
            "the write error is not logged:\n{logs}"
        );
        assert_eq!(a.requests(), 5 * usize::from(fs.is_some()) + sent);

        if let (Some(filler), Some(_)) = (filler, &fs) {
            std::fs::remove_file(filler).unwrap();
            traffic(local(web), "after", 10, 1).await;
            eventually(Duration::from_secs(10), "lines after space freed", || {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                async move {
                    (0..10)
                        .all(|i| text.contains(&format!("/after-{i} ")))
                        .then_some(())
                }
            })
            .await;
        }
        drop(f);
    })
    .await;
}

// ---------------------------------------------------------------------------------
// Full disk: alert spool

/// The alert spool on a full disk: the event that cannot be spooled is logged and
/// counted (`fulcrum_alerts_spool_errors_total`), traffic goes on, and the alert
/// is still delivered (from memory) once the relay takes it; after space frees,
/// the next event is spooled again and delivered, and the spool empties.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_spool_on_a_full_disk_still_delivers() {
    bounded(120, async {
        let Some(fs) = Tmpfs::mount("64k") else {
            eprintln!("skipped: the spool test needs a tmpfs");
            return;
        };
        // The first delivery attempt is refused, so the message waits for a retry
        // (5 s) while the disk is freed.
        let relay = Relay::start(Opts {
            replies: vec!["451 4.3.0 Temporary local problem".into()],
            ..Opts::default()
        });
        let (a, b) = (Backend::start("a").await, Backend::start("b").await);
        let (admin, web) = (free_port(), free_port());
        let spool = fs.path().join("spool");
        let tg = [tgt(a.addr), tgt(b.addr)];
        let mut yaml = lb_config(
            "name: lb-test, zone: zone-a",
            admin,
            &[("web", "http", web, "web")],
            &[group("web", "http", &[], FAST_HC, &tg)],
        );
        yaml += &format!(
            "alerts:\n\
             \x20 smtp: {{host: 127.0.0.1, port: {}, tls: none, timeout: 5s}}\n\
             \x20 from: \"fulcrum <alerts@example.com>\"\n\
             \x20 to: [oncall@example.com]\n\
             \x20 events: [target_unhealthy, target_healthy]\n\
             \x20 batch_window: 2s\n\
             \x20 max_send_rate: 100\n\
             \x20 spool_dir: \"{}\"\n",
            relay.port,
            spool.display()
        );
        let f = Fulcrum::start(&yaml).await;
        for t in [&a, &b] {
            f.wait_state("web", t.addr, "healthy", ms(6000)).await;
        }
        let errors0 = f
            .metric("fulcrum_alerts_spool_errors_total", &[])
            .await
            .expect("fulcrum_alerts_spool_errors_total exists once alerts are configured");
        assert_eq!(errors0, 0.0);

        let sampler = Sampler::start(local(web));
        let filler = fs.fill();
        a.set_health(500);
        f.wait_state("web", a.addr, "unhealthy", ms(8000)).await;
        eventually(Duration::from_secs(10), "a spool error counted", || async {
            let n = f.metric("fulcrum_alerts_spool_errors_total", &[]).await?;
            (n > 0.0).then_some(())
        })
        .await;
        let logs = f.logs();
        assert!(
            logs.contains("cannot write the event to the spool")
                && logs.contains("No space left on device"),
            "the spool error is not logged:\n{logs}"
        );
        // The refused attempt; the retry comes after the disk has room again.
        relay.wait_attempts(1, Duration::from_secs(15)).await;
        std::fs::remove_file(filler).unwrap();
        let m = relay.wait_messages(1, Duration::from_secs(20)).await;
        let body = m[0]["body"].as_str().unwrap_or("");
        assert!(body.contains(&a.addr.to_string()), "{body}");
        // The event and its message could not be written.
        let errors = f.metric("fulcrum_alerts_spool_errors_total", &[]).await;
        let errors = errors.unwrap_or(0.0);
        assert!(errors >= 2.0, "{errors} spool errors");
        eprintln!("alert spool on a full disk: {errors} spool errors counted; the alert was delivered after a retry");

        // With room again, the next event is spooled, delivered and removed.
        a.set_health(200);
        f.wait_state("web", a.addr, "healthy", ms(8000)).await;
        let m = relay.wait_messages(2, Duration::from_secs(15)).await;
        assert!(
            m[1]["subject"].as_str().unwrap_or("").contains("healthy again"),
            "{:?}",
            m[1]
        );
        let after = f.metric("fulcrum_alerts_spool_errors_total", &[]).await;
        assert_eq!(after, Some(errors), "spool errors with room on the disk");
        eventually(Duration::from_secs(5), "an empty spool", || {
            let left: Vec<String> = std::fs::read_dir(&spool)
                .map(|d| {
                    d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                        .filter(|n| n.starts_with("ev-") || n.starts_with("msg-"))
                        .collect()
                })
                .unwrap_or_default();
            async move { left.is_empty().then_some(()) }
        })
        .await;
        assert_eq!(f.metric("fulcrum_alerts_queued", &[]).await, Some(0.0));

        let samples = sampler.finish().await;
        let bad: Vec<&(Instant, String)> = samples
            .iter()
            .filter(|(_, who)| who != "a" && who != "b")
            .collect();
        assert!(samples.len() > 50, "only {} requests sampled", samples.len());
        assert!(bad.is_empty(), "requests failed while the spool was full: {bad:?}");
        drop(f);
    })
    .await;
}
