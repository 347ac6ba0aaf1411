//! Progress reports from running tasks, and per-worker state.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// A progress report from a running job, seen through
/// [`JobHandle::progress`](crate::JobHandle::progress).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Progress {
    /// Units done so far.
    pub done: u64,
    /// Units in all, if known.
    pub total: Option<u64>,
    /// A message from the task, if it gave one.
    pub message: Option<String>,
}

impl Progress {
    pub(crate) fn new(done: u64, total: Option<u64>, message: Option<String>) -> Self {
        Progress {
            done,
            total,
            message,
        }
    }

    /// `done / total` between 0 and 1, if the total is known and not zero.
    pub fn fraction(&self) -> Option<f64> {
        match self.total {
            Some(t) if t > 0 => Some((self.done as f64 / t as f64).min(1.0)),
            _ => None,
        }
    }
}

/// How often a job's progress reaches the host at most (the last report
/// of a job, `done == total`, always goes out).
const PROGRESS_INTERVAL: Duration = Duration::from_millis(10);

/// Where the worker sends progress frames; set when the worker starts.
pub(crate) type ProgressSink = Box<dyn Fn(u64, u64, Option<u64>, Option<&str>) + Send + Sync>;
pub(crate) static SINK: OnceLock<ProgressSink> = OnceLock::new();

/// Reports progress of the running job to the host: `done` units out of
/// `total` (if known).
///
/// Call it from [`Task::run`](crate::Task::run) as often as you like:
/// reports are rate-limited (at most one every 10 ms reaches the host, and
/// the final `done == total` always does). The host sees the latest report
/// through [`JobHandle::progress`](crate::JobHandle::progress). Outside a
/// worker (or outside a job) it does nothing.
pub fn report_progress(done: u64, total: Option<u64>) {
    send(done, total, None);
}

/// [`report_progress`] with a message (for example the current step).
pub fn report_progress_message(done: u64, total: Option<u64>, message: &str) {
    send(done, total, Some(message));
}

fn send(done: u64, total: Option<u64>, message: Option<&str>) {
    let Some(sink) = SINK.get() else {
        return;
    };
    let final_report = total == Some(done);
    let due = crate::job::with_current(|ctx| {
        (ctx.id != 0 && ctx.progress_due(PROGRESS_INTERVAL, final_report)).then_some(ctx.id)
    });
    if let Some(Some(job)) = due {
        sink(job, done, total, message);
    }
}

type StateMap = HashMap<TypeId, Arc<dyn Any + Send + Sync>>;

fn states() -> &'static Mutex<StateMap> {
    static STATES: OnceLock<Mutex<StateMap>> = OnceLock::new();
    STATES.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Stores `state` for the rest of this worker's life, to be read by later
/// tasks on the same worker with [`worker_state`] (one value per type;
/// storing again replaces it).
///
/// Call it from the pool's [initializer](crate::Builder::initializer) to
/// build something once per worker: a loaded model, a warmed cache, an open
/// connection. The state lives as long as the worker process: a recycled or
/// respawned worker runs the initializer again and starts fresh. (In a
/// process that is not a worker, it is simply process-wide state.)
/// `examples/worker_state.rs` shows it end to end.
pub fn set_worker_state<S: Send + Sync + 'static>(state: S) {
    if let Ok(mut map) = states().lock() {
        map.insert(TypeId::of::<S>(), Arc::new(state));
    }
}

/// The state of type `S` stored in this worker by [`set_worker_state`], if
/// any.
pub fn worker_state<S: Send + Sync + 'static>() -> Option<Arc<S>> {
    let any = states().lock().ok()?.get(&TypeId::of::<S>())?.clone();
    any.downcast::<S>().ok()
}
