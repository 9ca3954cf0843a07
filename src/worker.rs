//! The runtime model: `N` worker threads, each with its own current-thread tokio
//! runtime and its own SO_REUSEPORT socket per listener (the kernel spreads
//! connections over them). A connection lives and dies on the worker that
//! accepted it, so per-worker state (the upstream connection pool, buffers) needs
//! no lock. See docs/architecture.md for the measurements behind this choice.
//!
//! `FULCRUM_RUNTIME_MODEL=shared` swaps in one multi-thread runtime with `N`
//! threads instead (kept for comparison benchmarks only).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::{Builder, Handle, Runtime};
use tokio::sync::oneshot;

pub struct Workers {
    handles: Vec<Handle>,
    /// One progress counter per worker, bumped by a task on that worker.
    beats: Arc<Vec<AtomicU64>>,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
    shared: Option<Runtime>,
}

/// How often a worker proves it is alive: every 100 ms, or four times per
/// watchdog ping period when that is shorter (so a ping never finds a healthy
/// worker without a new beat).
fn beat() -> Duration {
    const BEAT: Duration = Duration::from_millis(100);
    crate::systemd::watchdog_interval()
        .map_or(BEAT, |p| (p / 4).clamp(Duration::from_millis(1), BEAT))
}

impl Workers {
    /// Starts `n` workers (0 = one per CPU).
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let n = if n == 0 {
            std::thread::available_parallelism().map_or(1, |p| p.get())
        } else {
            n
        };
        let shared_model = std::env::var("FULCRUM_RUNTIME_MODEL").is_ok_and(|v| v == "shared");
        let beats: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
        let mut w = Workers {
            handles: Vec::with_capacity(n),
            beats: beats.clone(),
            stops: Vec::new(),
            threads: Vec::new(),
            shared: None,
        };
        if shared_model {
            let rt = Builder::new_multi_thread()
                .worker_threads(n)
                .thread_name("fulcrum-worker")
                .enable_all()
                .build()?;
            for i in 0..n {
                w.handles.push(rt.handle().clone());
                rt.handle().spawn(heartbeat(beats.clone(), i));
            }
            w.shared = Some(rt);
            return Ok(w);
        }
        for i in 0..n {
            let (htx, hrx) = std::sync::mpsc::channel();
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            let beats = beats.clone();
            let thread = std::thread::Builder::new()
                .name(format!("fulcrum-worker-{i}"))
                .spawn(move || {
                    let rt = match Builder::new_current_thread().enable_all().build() {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = htx.send(Err(e));
                            return;
                        }
                    };
                    let _ = htx.send(Ok(rt.handle().clone()));
                    rt.spawn(heartbeat(beats, i));
                    rt.block_on(async {
                        let _ = stop_rx.await;
                    });
                    // Dropping the runtime cancels whatever is left.
                })?;
            let handle = hrx
                .recv()
                .map_err(|_| std::io::Error::other("worker thread died at start"))??;
            w.handles.push(handle);
            w.stops.push(stop_tx);
            w.threads.push(thread);
        }
        Ok(w)
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// The progress counters; a worker whose counter stops moving is hung.
    pub fn progress(&self) -> Vec<u64> {
        self.beats
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }

    /// Stops every worker and waits for their threads.
    pub fn stop(mut self) {
        for s in self.stops.drain(..) {
            let _ = s.send(());
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(rt) = self.shared.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

async fn heartbeat(beats: Arc<Vec<AtomicU64>>, i: usize) {
    let mut tick = tokio::time::interval(beat());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Some(b) = beats.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
    }
}
