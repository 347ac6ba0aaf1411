//! Counters the pool's thread publishes and `stats()` reads without a round
//! trip. A leaf module: it imports nothing of the crate.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// State shared between the pool handles and the pool's thread.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) accepting: AtomicBool,
    pub(crate) queued: AtomicUsize,
    pub(crate) running: AtomicUsize,
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) workers_alive: AtomicUsize,
    pub(crate) respawns: AtomicU64,
    pub(crate) recycled: AtomicU64,
    pub(crate) retried: AtomicU64,
    /// Counted by the pool's output forwarder.
    pub(crate) output_lines_dropped: Arc<AtomicU64>,
    pids: Mutex<Vec<u32>>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            accepting: AtomicBool::new(true),
            queued: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            workers_alive: AtomicUsize::new(0),
            respawns: AtomicU64::new(0),
            recycled: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            output_lines_dropped: Arc::default(),
            pids: Mutex::new(Vec::new()),
        }
    }
}

impl Shared {
    pub(crate) fn set_pids(&self, pids: impl Iterator<Item = u32>) {
        if let Ok(mut p) = self.pids.lock() {
            p.clear();
            p.extend(pids);
            p.sort_unstable();
        }
    }

    pub(crate) fn pids(&self) -> Vec<u32> {
        self.pids.lock().map(|p| p.clone()).unwrap_or_default()
    }

    pub(crate) fn snapshot(&self) -> PoolStats {
        PoolStats {
            queued: self.queued.load(Ordering::Relaxed),
            running: self.running.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
            workers_alive: self.workers_alive.load(Ordering::Relaxed),
            respawns: self.respawns.load(Ordering::Relaxed),
            recycled: self.recycled.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            output_lines_dropped: self.output_lines_dropped.load(Ordering::Relaxed),
        }
    }
}

/// A snapshot of a pool's counters, from
/// [`ProcessPoolExecutor::stats`](crate::ProcessPoolExecutor::stats).
///
/// The counters are updated by the pool's thread as events happen, so a
/// snapshot taken while jobs are in flight may be a moment behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Jobs waiting for a worker.
    pub queued: usize,
    /// Jobs running on a worker.
    pub running: usize,
    /// Jobs that finished with a result.
    pub completed: u64,
    /// Jobs that finished with an error other than a cancel (panic, worker
    /// death, timeout, serialization error, shutdown). A job that fails at
    /// submit because of its task (it does not serialize, is larger than
    /// the maximum frame size, or its type is not registered) counts here
    /// too, once, whether it was submitted with `submit`, `try_submit`,
    /// `submit_wait`, `submit_stream` or `map`. A submission the pool
    /// refuses ([`Error::Overloaded`](crate::Error::Overloaded), or any
    /// after shutdown) is not a job and is not counted.
    pub failed: u64,
    /// Jobs cancelled while queued or running.
    pub cancelled: u64,
    /// Worker processes alive.
    pub workers_alive: usize,
    /// Workers started after `build()`: replacements for workers that
    /// died, were killed, were recycled or idled out.
    pub respawns: u64,
    /// Workers retired by `max_tasks_per_worker` or `max_worker_rss`.
    pub recycled: u64,
    /// Jobs run again after their worker died
    /// ([`JobOptions::retries`](crate::JobOptions::retries)).
    pub retried: u64,
    /// Lines of worker output that were not forwarded to the host's stderr
    /// because too many were already waiting for it (the host's stderr is
    /// slow or blocked, for example a full pipe nobody reads). The pool
    /// drops them rather than stall; see
    /// [`Builder::forward_worker_output`](crate::Builder::forward_worker_output).
    pub output_lines_dropped: u64,
}
