//! Start, reload and graceful shutdown (SPEC §7). The control thread owns the
//! registry, the running listeners and the reload queue; workers only read the
//! published [`Live`] view.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot, watch};

use crate::listener::{self, Running};
use crate::live::Live;
use crate::snapshot::Snapshot;
use crate::systemd;
use crate::targets::Registry;
use crate::worker::Workers;

/// State shared by the control thread, the admin API and every worker.
pub struct Shared {
    /// The one published view; replaced whole by a reload.
    pub live: ArcSwap<Live>,
    /// Client connections over all listeners (`runtime.max_connections`).
    pub connections: AtomicUsize,
    /// `/readyz`: true once listening, false again when shutting down.
    pub ready: AtomicBool,
    /// Set at shutdown: connections finish their request and close.
    pub draining: watch::Sender<bool>,
    /// The admin API's bearer token (re-read at reload).
    pub admin_token: ArcSwap<Option<String>>,
    /// The config file this process serves.
    pub config_path: PathBuf,
    /// Targets removed by a reload that are still draining (for the status API).
    pub draining_targets: std::sync::Mutex<Vec<crate::health::worker::Draining>>,
    /// The alerter, when `alerts` is configured.
    pub alerts: arc_swap::ArcSwapOption<crate::alerts::Alerts>,
    /// The workers' runtimes, to reach their per-worker state (the pools).
    pub workers: std::sync::OnceLock<Vec<tokio::runtime::Handle>>,
}

impl Shared {
    /// Closes the idle pooled connections to `addr` on every worker (a target that
    /// went unhealthy or left).
    pub fn forget_idle(&self, addr: SocketAddr) {
        for h in self.workers.get().into_iter().flatten() {
            h.spawn(async move { crate::http::pool::forget(addr) });
        }
    }

    /// Hands an event to the alerter (when alerts are configured).
    pub fn alert(&self, event: crate::alerts::Event) {
        if let Some(a) = self.alerts.load().as_ref() {
            a.emit(event);
        }
    }
}

/// The answer to a reload, shared by every caller that waited for it.
#[derive(Clone, Debug)]
pub enum ReloadOutcome {
    Ok { summary: String },
    Failed { errors: Vec<String> },
}

/// Asks the control thread for a reload and waits for its answer.
#[derive(Clone)]
pub struct ReloadHandle {
    tx: mpsc::UnboundedSender<oneshot::Sender<ReloadOutcome>>,
}

impl ReloadHandle {
    pub async fn reload(&self) -> ReloadOutcome {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(tx).is_err() {
            return ReloadOutcome::Failed {
                errors: vec!["the server is shutting down".into()],
            };
        }
        rx.await.unwrap_or(ReloadOutcome::Failed {
            errors: vec!["the server is shutting down".into()],
        })
    }
}

/// Raises the open-file soft limit to the hard limit (each connection costs fds).
fn raise_nofile_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        lim.current = lim.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, lim) {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
        }
    }
}

/// Turns transparent huge pages off for the process (`PR_SET_THP_DISABLE`)
/// unless `FULCRUM_ALLOW_THP=1`; called first thing in [`crate::cli::main`]. The
/// allocator asks for them on its segments, so resident memory would move in
/// 2 MiB steps and stay a step up after a burst; with 4 KiB pages it follows the
/// connections (a parked idle connection's ~0.1 KiB shows as such) and the
/// process starts near 11 MB instead of 20. Requests per second and CPU per
/// request did not change measurably (benches/README.md). Best effort: a refusal
/// (before logging is set up, so not logged) leaves the setting as it was.
pub fn huge_pages_off() {
    if std::env::var("FULCRUM_ALLOW_THP").is_ok_and(|v| v.trim() == "1") {
        return;
    }
    let _ = rustix::thread::disable_transparent_huge_pages(true);
}

/// `FILE:LINE:COL: access_log.path: cannot open PATH: why`.
fn access_log_error(snapshot: &Snapshot, e: &std::io::Error) -> String {
    let s = &snapshot.access_log;
    let path = match &s.dest {
        crate::snapshot::AccessLogDest::File(p) => p.display().to_string(),
        _ => "stdout".to_owned(),
    };
    format!(
        "{}:{}:{}: access_log.path: cannot open {path}: {e}",
        snapshot.source.path.display(),
        s.path_at.line,
        s.path_at.col
    )
}

fn read_token(snapshot: &Snapshot) -> Option<String> {
    let path = snapshot.admin.token_file.as_ref()?;
    match std::fs::read_to_string(path) {
        // Surrounding ASCII whitespace is not part of the token (the presented
        // one is trimmed alike); an empty token would let anyone in.
        Ok(s) if !crate::util::trim_ascii(&s).is_empty() => {
            Some(crate::util::trim_ascii(&s).to_owned())
        }
        Ok(_) => {
            tracing::error!(path = %path.display(), "the admin token file is empty; /api/ refuses every request");
            Some(format!("unreadable-{}", fastrand::u64(..)))
        }
        Err(e) => {
            // An unreadable token must not open the API: use one nobody knows.
            tracing::error!(path = %path.display(), error = %e, "cannot read admin token file; /api/ refuses every request");
            Some(format!("unreadable-{}", fastrand::u64(..)))
        }
    }
}

/// Control-thread state.
struct Control {
    shared: Arc<Shared>,
    registry: Registry,
    running: HashMap<String, Running>,
    workers: Workers,
    checks: crate::health::worker::Checks,
    /// Values that need a restart to change.
    worker_threads: usize,
    admin_bind: Option<SocketAddr>,
}

/// Runs the load balancer until SIGTERM/SIGINT. Returns the exit code.
pub fn run(config: &Path) -> i32 {
    let snapshot = match crate::config::load(config) {
        Ok(s) => Arc::new(s),
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            return 1;
        }
    };
    raise_nofile_limit();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fulcrum: cannot start the control runtime: {e}");
            return 1;
        }
    };
    rt.block_on(async move {
        // Before anything slow (binds, the first health-check round): a signal
        // during start-up is then handled once serving, not fatal.
        let signals = match Signals::install() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("fulcrum: cannot install signal handlers: {e}");
                return 1;
            }
        };
        match start(config, snapshot, None).await {
            Ok(server) => server.wait(signals).await,
            Err(msg) => {
                eprintln!("fulcrum: {msg}");
                1
            }
        }
    })
}

/// A started server, for `run`, `demo` and tests.
pub struct Server {
    control: Control,
    reload_rx: mpsc::UnboundedReceiver<oneshot::Sender<ReloadOutcome>>,
    pub reload: ReloadHandle,
    pub admin_addr: Option<SocketAddr>,
    stop_rx: Option<oneshot::Receiver<()>>,
}

/// Binds every listener and the admin API and starts serving. `stop` (for
/// `demo` and tests) ends the server like SIGTERM does.
pub async fn start(
    config: &Path,
    snapshot: Arc<Snapshot>,
    stop: Option<oneshot::Receiver<()>>,
) -> Result<Server, String> {
    let prometheus = crate::metrics::install();
    let workers = Workers::start(snapshot.runtime.worker_threads)
        .map_err(|e| format!("cannot start worker threads: {e}"))?;
    for h in workers.handles() {
        h.spawn(crate::http::pool::sweeper(Duration::from_millis(500)));
    }
    let mut registry = Registry::default();
    // An access log that cannot be opened is a config error, not a silent gap.
    match registry.open_changed_access_log(&snapshot.access_log) {
        Ok(Some(log)) => registry.replace_access_log(log),
        Ok(None) => {}
        Err(e) => return Err(access_log_error(&snapshot, &e)),
    }
    let live = Live::build(snapshot.clone(), &mut registry);
    let (draining, _) = watch::channel(false);
    let shared = Arc::new(Shared {
        live: ArcSwap::from_pointee(live),
        connections: AtomicUsize::new(0),
        ready: AtomicBool::new(false),
        draining,
        admin_token: ArcSwap::from_pointee(read_token(&snapshot)),
        config_path: snapshot.source.path.clone(),
        draining_targets: std::sync::Mutex::new(Vec::new()),
        alerts: arc_swap::ArcSwapOption::empty(),
        workers: std::sync::OnceLock::new(),
    });
    let _ = shared.workers.set(workers.handles().to_vec());
    if let Some(settings) = &snapshot.alerts {
        match crate::alerts::Alerts::start(settings.clone(), snapshot.node.name.clone()).await {
            Ok(a) => shared.alerts.store(Some(Arc::new(a))),
            Err(e) => {
                tracing::error!(spool = %settings.spool_dir.display(), error = %e, "cannot start alerts; no alert will be sent")
            }
        }
    }
    let _ = config;
    let mut control = Control {
        shared: shared.clone(),
        registry,
        running: HashMap::new(),
        workers,
        checks: Default::default(),
        worker_threads: snapshot.runtime.worker_threads,
        admin_bind: snapshot.admin.bind,
    };
    // `FILE:LINE:COL: field: listener NAME cannot bind ADDR: error`.
    let socket_error = |l: &crate::snapshot::Listener, what: &str, e: std::io::Error| {
        let (pos, field) = &l.bind_at;
        let file = snapshot.source.path.display();
        format!(
            "{file}:{}:{}: {field}: listener {} cannot {what} {}: {e}",
            pos.line, pos.col, l.name, l.bind
        )
    };
    // Bind everything first: a failure leaves nothing half-started.
    let mut bound = Vec::new();
    for l in &snapshot.listeners {
        match listener::bind(l.bind, control.workers.len()) {
            Ok(s) => bound.push((l, s)),
            Err(e) => return Err(socket_error(l, "bind", e)),
        }
    }
    let (reload_tx, reload_rx) = mpsc::unbounded_channel();
    let reload = ReloadHandle { tx: reload_tx };
    let admin_addr = match snapshot.admin.bind {
        Some(addr) => Some(
            crate::admin::start(addr, shared.clone(), reload.clone(), prometheus)
                .await
                .map_err(|e| format!("admin API: cannot bind {addr}: {e}"))?,
        ),
        None => None,
    };
    // Listeners accept only after the first health-check round (SPEC §4), so a
    // restart never sends traffic to dead targets: until then their sockets are
    // bound but not listening, and a connection is refused, not queued.
    control.checks = crate::health::worker::Checks::start(&shared).await;
    // Every socket listens before any accept loop starts: a failure (another
    // program bound the address meanwhile) still leaves no listener serving.
    let mut listening = Vec::with_capacity(bound.len());
    for (l, sockets) in bound {
        match listener::listen(sockets) {
            Ok(s) => listening.push((l, s)),
            Err(e) => return Err(socket_error(l, "listen on", e)),
        }
    }
    for (l, sockets) in listening {
        let state = control.registry.listener(&l.name);
        let r = listener::start(&l.name, l.bind, sockets, &control.workers, &shared, state);
        control.running.insert(l.name.clone(), r);
    }
    crate::metrics::loaded();
    shared.ready.store(true, Ordering::Release);
    systemd::ready();
    tracing::info!(config = %snapshot.source.path.display(), "{}; serving", snapshot.summary());
    Ok(Server {
        control,
        reload_rx,
        reload,
        admin_addr,
        stop_rx: stop,
    })
}

/// SIGHUP, SIGTERM and SIGINT, caught from the moment this exists: one that
/// arrives while the server starts waits for [`Server::wait`] (a SIGTERM during
/// start-up becomes a graceful shutdown right after it, instead of the default
/// action killing the process).
pub struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers; needs a tokio runtime.
    pub fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }
}

impl Server {
    /// Serves reloads and signals until shutdown; returns the exit code.
    pub async fn wait(mut self, signals: Signals) -> i32 {
        let Signals {
            mut hup,
            mut term,
            mut int,
        } = signals;
        let mut stop_rx = self.stop_rx.take();
        let watchdog = systemd::watchdog_interval();
        // The first tick one period from now: progress is compared with the
        // snapshot below, which an immediate tick would find unchanged.
        let period = watchdog.unwrap_or(Duration::from_secs(3600));
        let mut watchdog_tick =
            tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        // Ticks missed while the loop was busy (a reload) are not made up in a
        // burst: a burst would compare progress over microseconds.
        watchdog_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_progress = self.control.workers.progress();
        let prometheus = crate::metrics::install();
        let mut upkeep = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                // In this order: a stop first; then a SIGHUP, which also serves the
                // API calls queued meanwhile, so at most one reload waits whoever
                // asked for it (SPEC §7).
                biased;
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = async { match stop_rx.as_mut() { Some(rx) => { let _ = rx.await; } None => std::future::pending().await } } => break,
                _ = hup.recv() => {
                    self.control.registry.reopen_access_log();
                    let mut waiters = Vec::new();
                    while let Ok(w) = self.reload_rx.try_recv() {
                        waiters.push(w);
                    }
                    let t = Instant::now();
                    let outcome = self.control.reload().await;
                    log_outcome("SIGHUP", &outcome, t.elapsed());
                    for w in waiters {
                        let _ = w.send(outcome.clone());
                    }
                }
                Some(first) = self.reload_rx.recv() => {
                    // Everyone who asked while a reload ran shares the next one.
                    let mut waiters = vec![first];
                    while let Ok(w) = self.reload_rx.try_recv() {
                        waiters.push(w);
                    }
                    let t = Instant::now();
                    let outcome = self.control.reload().await;
                    log_outcome("API", &outcome, t.elapsed());
                    for w in waiters {
                        let _ = w.send(outcome.clone());
                    }
                }
                _ = watchdog_tick.tick(), if watchdog.is_some() => {
                    let now = self.control.workers.progress();
                    // Only while every worker moved since the last tick.
                    if now.iter().zip(&last_progress).all(|(a, b)| a != b) {
                        systemd::watchdog();
                    } else {
                        tracing::error!("a worker thread made no progress; withholding the watchdog ping");
                    }
                    last_progress = now;
                }
                _ = upkeep.tick() => prometheus.run_upkeep(),
            }
        }
        // Reloads asked for from now on, and any still queued, are refused with
        // an answer rather than left waiting through the shutdown.
        self.reload_rx.close();
        while let Ok(w) = self.reload_rx.try_recv() {
            let _ = w.send(ReloadOutcome::Failed {
                errors: vec!["the server is shutting down".into()],
            });
        }
        self.shutdown().await;
        0
    }

    async fn shutdown(self) {
        let shared = self.control.shared.clone();
        let snap = shared.live.load_full().snapshot.clone();
        shared.ready.store(false, Ordering::Release);
        systemd::stopping();
        tracing::info!(
            "shutting down: /readyz answers 503; listeners close in {:?}",
            snap.runtime.shutdown_delay
        );
        tokio::time::sleep(snap.runtime.shutdown_delay).await;
        for r in self.control.running.values() {
            r.stop();
        }
        let _ = shared.draining.send(true);
        let deadline = Instant::now() + snap.runtime.shutdown_timeout;
        while shared.connections.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = shared.connections.load(Ordering::Acquire);
        if left > 0 {
            tracing::warn!(
                "shutdown_timeout reached with {left} connections still open; closing them"
            );
            // End the work still open as a deregistration delay's end does (a
            // request not yet answered gets a 502, a tunnel or tcp connection
            // closes), so each still writes its access-log line; then a moment
            // for those lines before the log closes.
            let live = shared.live.load_full();
            let draining: Vec<Arc<crate::targets::TargetState>> =
                match shared.draining_targets.lock() {
                    Ok(list) => list.iter().map(|d| d.state.clone()).collect(),
                    Err(p) => p.into_inner().iter().map(|d| d.state.clone()).collect(),
                };
            for st in live
                .groups
                .iter()
                .flat_map(|g| g.targets.iter())
                .chain(&draining)
            {
                st.killed.store(true, Ordering::Release);
                st.kill.notify_waiters();
            }
            let grace = Instant::now() + SHUTDOWN_CUT_GRACE;
            while shared.connections.load(Ordering::Acquire) > 0 && Instant::now() < grace {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let mut control = self.control;
        control.checks.stop();
        if let Some(a) = shared.alerts.swap(None) {
            if let Ok(a) = Arc::try_unwrap(a) {
                a.stop().await;
            }
        }
        control.registry.close_access_log();
        control.workers.stop();
        tracing::info!("stopped");
    }
}

/// After `shutdown_timeout`, how long the work cut off then gets to answer and
/// log before the access log closes and the workers stop.
const SHUTDOWN_CUT_GRACE: Duration = Duration::from_secs(1);

fn log_outcome(via: &str, outcome: &ReloadOutcome, took: Duration) {
    match outcome {
        ReloadOutcome::Ok { summary } => tracing::info!(
            "reload ({via}): {summary}; applied in {:.1} ms",
            took.as_secs_f64() * 1000.0
        ),
        ReloadOutcome::Failed { errors } => {
            for e in errors {
                tracing::error!("reload ({via}) refused: {e}");
            }
        }
    }
}

impl Control {
    /// Re-reads, validates and compiles the config, then swaps it in with the
    /// listener changes; any error changes nothing.
    async fn reload(&mut self) -> ReloadOutcome {
        systemd::reloading();
        let path = self.shared.config_path.clone();
        let loaded = tokio::task::spawn_blocking(move || crate::config::load(&path)).await;
        let outcome = match loaded {
            Ok(Ok(snapshot)) => self.apply(Arc::new(snapshot)),
            Ok(Err(errors)) => ReloadOutcome::Failed {
                errors: errors.iter().map(|e| e.to_string()).collect(),
            },
            Err(e) => ReloadOutcome::Failed {
                errors: vec![format!("reload task failed: {e}")],
            },
        };
        crate::metrics::reload(matches!(outcome, ReloadOutcome::Ok { .. }));
        if let ReloadOutcome::Failed { errors } = &outcome {
            self.shared.alert(crate::alerts::Event::ConfigReloadFailed {
                errors: errors.clone(),
                at: std::time::SystemTime::now(),
            });
        }
        systemd::ready();
        outcome
    }

    fn apply(&mut self, snapshot: Arc<Snapshot>) -> ReloadOutcome {
        let file = snapshot.source.path.display().to_string();
        // 0. admin.bind keeps its running value until a restart, so the token the
        //    running address requires (SPEC §2) stays required.
        if let Some(addr) = self.admin_bind {
            if !addr.ip().is_loopback() && snapshot.admin.token_file.is_none() {
                let at = snapshot.admin.at;
                return ReloadOutcome::Failed {
                    errors: vec![format!(
                        "{file}:{}:{}: admin.token_file: required while the admin API listens on {addr}, \
                         not a loopback address (admin.bind changes need a restart; nothing was changed)",
                        at.line, at.col
                    )],
                };
            }
        }
        // 1. Bind what is new or moved, then open a changed access log; a failure
        //    rolls everything back (new sockets close as they are dropped).
        let mut new_sockets = Vec::new();
        for l in &snapshot.listeners {
            let keep = self.running.get(&l.name).is_some_and(|r| r.bind == l.bind);
            if keep {
                continue;
            }
            match listener::bind(l.bind, self.workers.len()).and_then(listener::listen) {
                Ok(s) => new_sockets.push((l.name.clone(), l.bind, s)),
                Err(e) => {
                    return ReloadOutcome::Failed {
                        errors: vec![format!(
                            "{file}:{}:{}: {}: listener {} cannot bind {}: {e} (nothing was changed)",
                            l.bind_at.0.line, l.bind_at.0.col, l.bind_at.1, l.name, l.bind
                        )],
                    };
                }
            }
        }
        let new_log = match self.registry.open_changed_access_log(&snapshot.access_log) {
            Ok(l) => l,
            Err(e) => {
                return ReloadOutcome::Failed {
                    errors: vec![format!(
                        "{} (nothing was changed)",
                        access_log_error(&snapshot, &e)
                    )],
                };
            }
        };
        // 2. Restart-only keys keep their running values.
        let mut notes = Vec::new();
        if snapshot.runtime.worker_threads != self.worker_threads {
            notes.push(format!(
                "runtime.worker_threads changed to {} but needs a restart (still {})",
                snapshot.runtime.worker_threads, self.worker_threads
            ));
        }
        if snapshot.admin.bind != self.admin_bind {
            notes.push(format!(
                "admin.bind changed but needs a restart (still {})",
                self.admin_bind.map_or("off".to_owned(), |a| a.to_string())
            ));
        }
        // 3. Publish; idle pooled connections to targets that left close at once.
        if let Some(log) = new_log {
            self.registry.replace_access_log(log);
        }
        let mut live = Live::build(snapshot.clone(), &mut self.registry);
        // A listener renamed with its bind kept: its connections go on.
        live.carry_renames(&self.shared.live.load());
        let old = self.shared.live.swap(Arc::new(live));
        let kept: std::collections::HashSet<SocketAddr> = snapshot
            .target_groups
            .iter()
            .flat_map(|g| g.targets.iter().map(|t| t.addr))
            .collect();
        let gone: Vec<SocketAddr> = old
            .snapshot
            .target_groups
            .iter()
            .flat_map(|g| g.targets.iter().map(|t| t.addr))
            .filter(|a| !kept.contains(a))
            .collect();
        // Targets that left drain; targets that came back return to service.
        let new_live = self.shared.live.load_full();
        for (g, lg) in new_live.snapshot.target_groups.iter().zip(&new_live.groups) {
            for st in &lg.targets {
                crate::health::worker::undrain(&self.shared, st);
            }
            let _ = g;
        }
        for (g, lg) in old.snapshot.target_groups.iter().zip(&old.groups) {
            // The group's delay as the new config sets it (a reload that changes
            // deregistration_delay and removes targets drains them by the new
            // value); the old one when the group itself is gone.
            let new_group = new_live.snapshot.group_by_name(&g.name);
            let delay = new_group.map_or(g.deregistration_delay, |ng| ng.deregistration_delay);
            for (t, st) in g.targets.iter().zip(&lg.targets) {
                let stays =
                    new_group.is_some_and(|ng| ng.targets.iter().any(|nt| nt.address == t.address));
                if !stays && !st.is_draining() {
                    let d = crate::health::worker::Draining {
                        group: g.name.clone(),
                        group_protocol: g.protocol.as_str(),
                        group_algorithm: g.algorithm.as_str(),
                        address: t.address.clone(),
                        zone: t.zone.clone(),
                        state: st.clone(),
                        deadline: std::time::SystemTime::now() + delay,
                    };
                    crate::health::worker::drain(&self.shared, d, delay);
                }
            }
        }
        self.checks.sync(&self.shared, &new_live, None);
        // Alerts follow the new settings; pending events stay in the spool.
        let current = self.shared.alerts.load_full();
        match (&new_live.snapshot.alerts, current) {
            (Some(settings), Some(a)) => {
                a.update(settings.clone(), new_live.snapshot.node.name.clone())
            }
            (Some(settings), None) => {
                let (settings, node) = (settings.clone(), new_live.snapshot.node.name.clone());
                let shared = self.shared.clone();
                tokio::spawn(async move {
                    match crate::alerts::Alerts::start(settings, node).await {
                        Ok(a) => shared.alerts.store(Some(Arc::new(a))),
                        Err(e) => tracing::error!(error = %e, "cannot start alerts"),
                    }
                });
            }
            (None, Some(_)) => {
                if let Some(a) = self.shared.alerts.swap(None) {
                    if let Ok(a) = Arc::try_unwrap(a) {
                        tokio::spawn(a.stop());
                    }
                }
            }
            (None, None) => {}
        }
        drop(old);
        if !gone.is_empty() {
            for h in self.workers.handles() {
                let gone = gone.clone();
                h.spawn(async move {
                    for a in gone {
                        crate::http::pool::forget(a);
                    }
                });
            }
        }
        self.shared
            .admin_token
            .store(Arc::new(read_token(&snapshot)));
        // 4. Close listeners that are gone or moved; open the new ones.
        let wanted: HashMap<&str, SocketAddr> = snapshot
            .listeners
            .iter()
            .map(|l| (l.name.as_str(), l.bind))
            .collect();
        let mut closed = 0;
        self.running.retain(|name, r| {
            let keep = wanted.get(name.as_str()) == Some(&r.bind);
            if !keep {
                r.stop();
                closed += 1;
            }
            keep
        });
        let opened = new_sockets.len();
        for (name, bind, sockets) in new_sockets {
            let state = self.registry.listener(&name);
            let r = listener::start(&name, bind, sockets, &self.workers, &self.shared, state);
            self.running.insert(name, r);
        }
        self.registry.prune();
        let mut summary = snapshot.summary();
        if opened > 0 || closed > 0 {
            summary.push_str(&format!("; listeners opened {opened}, closed {closed}"));
        }
        for n in notes {
            summary.push_str("; ");
            summary.push_str(&n);
        }
        ReloadOutcome::Ok { summary }
    }
}
