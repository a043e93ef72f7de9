//! Group commit: one dedicated thread makes writes durable. A writer registers *after* its
//! write is in the engine and waits; the thread takes every registered waiter, runs one flush,
//! and answers them all. A flush therefore always covers the writes of the waiters it answers,
//! and many writes share one fsync. The fsync never runs on a runtime worker thread.
//!
//! In periodic mode writers do not wait; the thread flushes every `flush_every` when there
//! were writes.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::metrics::Metrics;
use crate::store::{ErrorKind, StoreError};

/// The flush the committer runs: engine flush + fsync of the files.
pub(super) type FlushFn = Box<dyn Fn() -> Result<(), StoreError> + Send + Sync>;

type Waiter = oneshot::Sender<Result<(), StoreError>>;

/// A writer's place in the next flush: resolves when a flush covering its write is done.
pub(super) type Ticket = oneshot::Receiver<Result<(), StoreError>>;

#[derive(Default)]
struct State {
    waiters: Vec<Waiter>,
    /// The commit thread is blocked waiting for a first writer: only then does a writer
    /// signal the condvar (a futex wake syscall), not once per write.
    idle: bool,
    /// Periodic mode: writes since the last flush.
    dirty: bool,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

pub(super) struct Committer {
    shared: Arc<Shared>,
    /// `None` = sync mode (writers wait); `Some(period)` = periodic mode.
    period: Option<Duration>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer")
            .field("period", &self.period)
            .finish()
    }
}

impl Committer {
    pub(super) fn start(
        flush: FlushFn,
        period: Option<Duration>,
        metrics: Arc<Metrics>,
    ) -> Committer {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("micronode-commit".to_owned())
            .spawn(move || run(&worker, &flush, period, &metrics))
            .expect("spawning the commit thread only fails when the OS is out of threads");
        Committer {
            shared,
            period,
            thread: Mutex::new(Some(thread)),
        }
    }

    /// Called after a write is in the engine. Sync mode: a ticket for the flush that will cover
    /// it. Periodic mode: `None` (the write is marked for the next periodic flush).
    pub(super) fn enlist(&self) -> Result<Option<Ticket>, StoreError> {
        let Ok(mut st) = self.shared.state.lock() else {
            return Err(StoreError::internal("commit state poisoned"));
        };
        if st.stop {
            return Err(StoreError::new(ErrorKind::Unavailable, "store is closed"));
        }
        if self.period.is_some() {
            st.dirty = true;
            return Ok(None);
        }
        let (tx, rx) = oneshot::channel();
        st.waiters.push(tx);
        let wake = std::mem::take(&mut st.idle);
        drop(st);
        if wake {
            self.shared.wake.notify_one();
        }
        Ok(Some(rx))
    }

    /// Stops the thread after it has answered every waiter. Idempotent.
    pub(super) fn stop(&self) {
        if let Ok(mut st) = self.shared.state.lock() {
            st.stop = true;
        }
        self.shared.wake.notify_all();
        let handle = self.thread.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(shared: &Shared, flush: &FlushFn, period: Option<Duration>, metrics: &Metrics) {
    loop {
        let (batch, stop) = {
            let Ok(mut st) = shared.state.lock() else {
                return;
            };
            match period {
                None => {
                    while st.waiters.is_empty() && !st.stop {
                        st.idle = true;
                        st = match shared.wake.wait(st) {
                            Ok(g) => g,
                            Err(_) => return,
                        };
                    }
                    st.idle = false;
                }
                Some(p) => {
                    let deadline = Instant::now() + p;
                    while !st.stop {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        st = match shared.wake.wait_timeout(st, left) {
                            Ok((g, _)) => g,
                            Err(_) => return,
                        };
                    }
                }
            }
            let dirty = std::mem::take(&mut st.dirty);
            ((std::mem::take(&mut st.waiters), dirty || st.stop), st.stop)
        };
        let (waiters, periodic_due) = batch;
        if !waiters.is_empty() || (period.is_some() && periodic_due) {
            let started = Instant::now();
            let result = flush();
            metrics.flush_seconds.observe_duration(started.elapsed());
            if let Err(e) = &result {
                tracing::error!(cause = %e, "store flush failed");
            }
            if !waiters.is_empty() {
                metrics.commit_batch_size.observe(waiters.len() as u64);
            }
            for w in waiters {
                let _ = w.send(result.clone());
            }
        }
        if stop {
            return;
        }
    }
}
