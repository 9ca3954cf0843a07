//! Idle keep-alive connections of plain http listeners, parked off the runtime.
//!
//! A plain client connection with no request for [`PARK_AFTER`] ends its task:
//! its socket leaves tokio's reactor for this worker's own epoll set, and what
//! the connection needs to carry on (client address, listener, age, idle
//! deadline, its `max_connections` slot) waits in a slab here, about 100 bytes
//! instead of a task, a timer and a reactor registration (about 1 KiB). When the
//! client sends its next request (or closes), the socket goes back to the
//! reactor under a new task that reads it at once; at the idle deadline, or when
//! shutdown drains the connections, it is closed silently, as an idle
//! connection that was not parked would be.
//!
//! One lot per worker thread (per current-thread runtime): a connection is
//! parked and resumed on the worker that accepted it. The lot's task waits on
//! the epoll set (registered with the reactor as one descriptor), the earliest
//! idle deadline and the drain signal.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::epoll;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

use crate::listener::ConnGuard;
use crate::server::Shared;

/// A plain keep-alive connection is parked after this long without a request.
/// A busy connection never reaches it (parking and resuming cost four system
/// calls and a task), one whose client went quiet stops costing a task.
pub(super) const PARK_AFTER: Duration = Duration::from_millis(250);

/// Slots per slab chunk (the slab grows by chunks, never by copying).
const CHUNK: usize = 64;

/// Events taken per `epoll_wait`.
const BATCH: usize = 64;

/// Deadlines and slots share one `u64` in the deadline heap: milliseconds since
/// the lot started above, the slot below.
const SLOT_BITS: u32 = 24;
const MAX_SLOTS: usize = 1 << SLOT_BITS;

/// What a connection carries from one request to the next, beside its socket.
pub(super) struct Carried {
    pub peer: SocketAddr,
    pub local_port: u16,
    pub born: Instant,
    pub listener: Arc<str>,
    pub guard: ConnGuard,
}

/// What a parked connection keeps.
struct Parked {
    stream: std::net::TcpStream,
    /// Idle deadline, milliseconds since the lot's epoch.
    deadline_ms: u64,
    carried: Carried,
}

enum Slot {
    /// Free; the next free slot (or `u32::MAX`).
    Free(u32),
    Taken(Parked),
}

struct Lot {
    shared: Arc<Shared>,
    epoll: Arc<AsyncFd<OwnedFd>>,
    epoch: tokio::time::Instant,
    chunks: Vec<Box<[Slot; CHUNK]>>,
    free: u32,
    /// Parked connections.
    count: usize,
    /// `Reverse(deadline_ms << SLOT_BITS | slot)`; entries of slots resumed
    /// since stay until they come up (or the heap is rebuilt).
    deadlines: BinaryHeap<Reverse<u64>>,
    /// The deadline the lot's task sleeps until (`u64::MAX`: none).
    armed_ms: u64,
    wake: Arc<Notify>,
    /// `epoll_wait`'s buffer (kept here: an event is not `Send`, the task must be).
    events: Vec<epoll::Event>,
}

enum State {
    Untried,
    /// Parking is not available on this thread (not a current-thread worker,
    /// no epoll, or shut down).
    Off,
    On(Lot),
}

thread_local! {
    static LOT: RefCell<State> = const { RefCell::new(State::Untried) };
}

/// Whether a connection of `shared`'s server can be parked on this thread.
pub(super) fn available(shared: &Arc<Shared>) -> bool {
    LOT.with(|l| {
        let mut l = l.borrow_mut();
        if let State::Untried = *l {
            *l = match start(shared) {
                Ok(lot) => State::On(lot),
                Err(e) => {
                    if e.kind() == std::io::ErrorKind::Unsupported {
                        tracing::debug!(error = %e, "idle connections are not parked on this worker");
                    } else {
                        tracing::warn!(error = %e, "idle connections are not parked on this worker");
                    }
                    State::Off
                }
            };
        }
        match &*l {
            State::On(lot) => Arc::ptr_eq(&lot.shared, shared) && !*shared.draining.borrow(),
            _ => false,
        }
    })
}

fn start(shared: &Arc<Shared>) -> std::io::Result<Lot> {
    // A multi-thread runtime may resume a task on another thread than the one
    // whose lot holds its socket: parking is for the per-worker runtimes.
    let unsupported = |why: &str| std::io::Error::new(std::io::ErrorKind::Unsupported, why);
    let handle = tokio::runtime::Handle::try_current().map_err(|_| unsupported("no runtime"))?;
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::CurrentThread {
        return Err(unsupported("not a current-thread runtime"));
    }
    let fd = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    // The safe registration, deprecated because a generic `T: AsRawFd` may not
    // own its descriptor (tokio#8587); an `OwnedFd` does, and the `AsyncFd`
    // deregisters it before closing it. `AsyncFd::register_with_interest` is the
    // same call marked `unsafe`, which this crate forbids.
    #[allow(deprecated)]
    let epoll = Arc::new(AsyncFd::with_interest(fd, tokio::io::Interest::READABLE)?);
    let wake = Arc::new(Notify::new());
    tokio::spawn(run(epoll.clone(), wake.clone(), shared.clone()));
    Ok(Lot {
        shared: shared.clone(),
        epoll,
        epoch: tokio::time::Instant::now(),
        chunks: Vec::new(),
        free: u32::MAX,
        count: 0,
        deadlines: BinaryHeap::new(),
        armed_ms: u64::MAX,
        wake,
        events: Vec::with_capacity(BATCH),
    })
}

/// Parks `stream` (its reactor registration is dropped here) until its next
/// bytes, `deadline` or shutdown. A connection that cannot be parked (a failed
/// system call) is closed, as an idle connection may be at any time.
pub(super) fn park(
    stream: tokio::net::TcpStream,
    carried: Carried,
    deadline: tokio::time::Instant,
) {
    let stream = match stream.into_std() {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(client = %carried.peer, error = %e, "cannot park an idle connection; closing it");
            return;
        }
    };
    LOT.with(|l| {
        let mut l = l.borrow_mut();
        let State::On(lot) = &mut *l else { return };
        let deadline_ms = lot.ms(deadline);
        let peer = carried.peer;
        let p = Parked {
            stream,
            deadline_ms,
            carried,
        };
        if let Err(e) = lot.insert(p) {
            tracing::debug!(client = %peer, error = %e, "cannot park an idle connection; closing it");
        }
    });
}

impl Lot {
    fn ms(&self, t: tokio::time::Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_millis() as u64
    }

    fn slot_mut(&mut self, i: u32) -> &mut Slot {
        let i = i as usize;
        &mut self.chunks[i / CHUNK][i % CHUNK]
    }

    fn insert(&mut self, p: Parked) -> std::io::Result<()> {
        if self.free == u32::MAX {
            let base = self.chunks.len() * CHUNK;
            if base + CHUNK > MAX_SLOTS {
                return Err(std::io::Error::other("parking lot full"));
            }
            let chunk: Box<[Slot; CHUNK]> = Box::new(std::array::from_fn(|k| {
                if k + 1 < CHUNK {
                    Slot::Free((base + k + 1) as u32)
                } else {
                    Slot::Free(u32::MAX)
                }
            }));
            self.chunks.push(chunk);
            self.free = base as u32;
        }
        let i = self.free;
        epoll::add(
            self.epoll.get_ref(),
            &p.stream,
            epoll::EventData::new_u64(i as u64),
            epoll::EventFlags::IN | epoll::EventFlags::RDHUP,
        )?;
        let deadline_ms = p.deadline_ms;
        let slot = self.slot_mut(i);
        let Slot::Free(next) = *slot else {
            unreachable!("the free list holds free slots")
        };
        *slot = Slot::Taken(p);
        self.free = next;
        self.count += 1;
        self.deadlines
            .push(Reverse(deadline_ms << SLOT_BITS | i as u64));
        if deadline_ms < self.armed_ms {
            self.armed_ms = deadline_ms;
            self.wake.notify_one();
        }
        Ok(())
    }

    fn take(&mut self, i: u32) -> Option<Parked> {
        if i as usize >= self.chunks.len() * CHUNK {
            return None;
        }
        let free = self.free;
        let slot = self.slot_mut(i);
        if let Slot::Free(_) = slot {
            return None;
        }
        let Slot::Taken(p) = std::mem::replace(slot, Slot::Free(free)) else {
            return None;
        };
        self.free = i;
        self.count -= 1;
        Some(p)
    }

    /// Closes the connections whose idle deadline has passed; the next
    /// deadline to wake up for.
    fn expire(&mut self, now_ms: u64) -> u64 {
        while let Some(&Reverse(top)) = self.deadlines.peek() {
            let (ms, i) = (top >> SLOT_BITS, (top & (MAX_SLOTS as u64 - 1)) as u32);
            if ms > now_ms {
                break;
            }
            self.deadlines.pop();
            let current = matches!(
                self.chunks.get(i as usize / CHUNK).map(|c| &c[i as usize % CHUNK]),
                Some(Slot::Taken(p)) if p.deadline_ms <= now_ms
            );
            if current {
                // Dropped: the socket closes (and leaves the epoll set).
                drop(self.take(i));
            }
        }
        // Entries of resumed connections pile up under a steady park/resume
        // churn: rebuild once they outnumber the parked connections.
        if self.deadlines.len() > 2 * self.count + 1024 {
            let mut live = Vec::with_capacity(self.count);
            for (c, chunk) in self.chunks.iter().enumerate() {
                for (k, s) in chunk.iter().enumerate() {
                    if let Slot::Taken(p) = s {
                        live.push(Reverse(p.deadline_ms << SLOT_BITS | (c * CHUNK + k) as u64));
                    }
                }
            }
            self.deadlines = BinaryHeap::from(live);
        }
        self.armed_ms = self
            .deadlines
            .peek()
            .map_or(u64::MAX, |&Reverse(t)| t >> SLOT_BITS);
        self.armed_ms
    }

    /// Takes what the epoll set reports without waiting and resumes those
    /// connections; how many events there were.
    fn resume_ready(&mut self, shared: &Arc<Shared>) -> usize {
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        let n = loop {
            match epoll::wait(
                self.epoll.get_ref(),
                rustix::buffer::spare_capacity(&mut events),
                Some(&rustix::time::Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                }),
            ) {
                Ok(n) => break n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "epoll_wait on parked connections failed");
                    break 0;
                }
            }
        };
        for ev in &events {
            if let Some(p) = self.take(ev.data.u64() as u32) {
                resume(&self.epoll, shared, p, self.epoch);
            }
        }
        self.events = events;
        n
    }

    /// Closes every parked connection (shutdown).
    fn close_all(&mut self) {
        self.chunks.clear();
        self.deadlines.clear();
        self.free = u32::MAX;
        self.count = 0;
    }
}

/// Hands the socket back to the reactor and its connection to a new task.
fn resume(epoll: &AsyncFd<OwnedFd>, shared: &Arc<Shared>, p: Parked, epoch: tokio::time::Instant) {
    let _ = epoll::delete(epoll.get_ref(), &p.stream);
    let deadline = epoch + Duration::from_millis(p.deadline_ms);
    match tokio::net::TcpStream::from_std(p.stream) {
        Ok(stream) => {
            tokio::spawn(super::conn::resume(
                stream,
                p.carried,
                deadline,
                shared.clone(),
            ));
        }
        Err(e) => {
            tracing::debug!(client = %p.carried.peer, error = %e, "cannot resume a parked connection; closing it");
        }
    }
}

/// The lot's task: resumes connections with bytes (or an end) to read, closes
/// those past their idle deadline, and all of them at shutdown.
async fn run(epoll: Arc<AsyncFd<OwnedFd>>, wake: Arc<Notify>, shared: Arc<Shared>) {
    // However the task ends (shutdown, a reactor error, the runtime dropping it),
    // parking stops on this worker and what is parked closes.
    struct Closing;
    impl Drop for Closing {
        fn drop(&mut self) {
            let _ = LOT.try_with(|l| {
                if let Ok(mut l) = l.try_borrow_mut() {
                    if let State::On(lot) = &mut *l {
                        lot.close_all();
                    }
                    *l = State::Off;
                }
            });
        }
    }
    let _closing = Closing;
    let mut draining = shared.draining.subscribe();
    loop {
        let (epoch, next_ms) = LOT.with(|l| match &mut *l.borrow_mut() {
            State::On(lot) => {
                let now = lot.ms(tokio::time::Instant::now());
                (lot.epoch, Some(lot.expire(now)))
            }
            _ => (tokio::time::Instant::now(), None),
        });
        let Some(next_ms) = next_ms else { return };
        let sleep = async {
            if next_ms == u64::MAX {
                std::future::pending::<()>().await
            } else {
                tokio::time::sleep_until(epoch + Duration::from_millis(next_ms)).await
            }
        };
        tokio::select! {
            biased;
            r = draining.wait_for(|d| *d) => {
                let _ = r;
                // A request already waiting in a parked socket is served (with
                // `Connection: close`), as it would be on a connection that had
                // not been parked; the others close (`Closing`).
                while LOT.with(|l| match &mut *l.borrow_mut() {
                    State::On(lot) => lot.resume_ready(&shared) == BATCH,
                    _ => false,
                }) {}
                return;
            }
            r = epoll.readable() => {
                let Ok(mut guard) = r else { return };
                // Resumes up to BATCH connections per wait; fewer means the set
                // has nothing more to report.
                while LOT.with(|l| match &mut *l.borrow_mut() {
                    State::On(lot) => lot.resume_ready(&shared) == BATCH,
                    _ => false,
                }) {}
                guard.clear_ready();
            }
            _ = wake.notified() => {}
            _ = sleep => {}
        }
    }
}
