//! Inside a worker: the context of each running job (its id, its cancel
//! flag, its flow-control credit), and how code finds the job it runs in.
//!
//! A worker may run several jobs at once (`Builder::jobs_per_worker`), so
//! nothing here is "the" current job: each job has a [`JobCtx`], reachable
//! from the thread that runs it (a thread-local, for blocking tasks) or the
//! future that runs it (a task-local, for async tasks). Code on a thread a
//! task started itself (rayon, a plain `std::thread`) sees neither; it falls
//! back to the worker's only running job, if exactly one runs.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Items a streaming job may emit before the host consumes them.
pub(crate) const ITEM_WINDOW: u64 = 16;

/// One running job, as the worker knows it.
pub(crate) struct JobCtx {
    pub(crate) id: u64,
    cancelled: AtomicBool,
    /// Wakes an async task's cancel watcher.
    notify: tokio::sync::Notify,
    /// Items the job may still emit (streaming tasks).
    credits: Mutex<u64>,
    credit_wake: Condvar,
    /// When the job last reported progress.
    last_progress: Mutex<Option<Instant>>,
}

impl JobCtx {
    pub(crate) fn new(id: u64) -> Arc<Self> {
        Arc::new(JobCtx {
            id,
            cancelled: AtomicBool::new(false),
            notify: tokio::sync::Notify::new(),
            credits: Mutex::new(ITEM_WINDOW),
            credit_wake: Condvar::new(),
            last_progress: Mutex::new(None),
        })
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// Flags the job, and wakes whatever waits in it (an async task's
    /// watcher, a producer waiting for credit).
    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        self.notify.notify_waiters();
        let _c = self.credits.lock().unwrap_or_else(|p| p.into_inner());
        self.credit_wake.notify_all();
    }

    /// Resolves once the job is cancelled.
    pub(crate) async fn cancellation(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a cancel between the two is
            // not missed.
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }

    /// Whether a progress report should go out now: at most one per
    /// `interval`, and always the final one.
    pub(crate) fn progress_due(&self, interval: Duration, final_report: bool) -> bool {
        let now = Instant::now();
        let mut last = self.last_progress.lock().unwrap_or_else(|p| p.into_inner());
        let due = final_report || last.is_none_or(|at| now.duration_since(at) >= interval);
        if due {
            *last = Some(now);
        }
        due
    }

    pub(crate) fn add_credit(&self, n: u64) {
        let mut c = self.credits.lock().unwrap_or_else(|p| p.into_inner());
        *c = c.saturating_add(n);
        self.credit_wake.notify_all();
    }

    /// Takes one unit of credit, waiting for the host while there is none.
    /// False if the job was cancelled meanwhile.
    pub(crate) fn take_credit(&self) -> bool {
        let mut c = self.credits.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.is_cancelled() {
                return false;
            }
            if *c > 0 {
                *c -= 1;
                return true;
            }
            c = self
                .credit_wake
                .wait_timeout(c, Duration::from_millis(50))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

/// The jobs this worker is running. A job is added while the worker's
/// queue lock is held, in the same step that takes it off the queue, so a
/// cancel (handled under that lock) finds it either queued or here.
static RUNNING: Mutex<Vec<Arc<JobCtx>>> = Mutex::new(Vec::new());

fn running() -> std::sync::MutexGuard<'static, Vec<Arc<JobCtx>>> {
    RUNNING.lock().unwrap_or_else(|p| p.into_inner())
}

/// Registers a job that starts now.
pub(crate) fn start(id: u64) -> Arc<JobCtx> {
    let ctx = JobCtx::new(id);
    running().push(ctx.clone());
    ctx
}

/// Forgets a job that ended.
pub(crate) fn finish(ctx: &JobCtx) {
    let mut r = running();
    if let Some(at) = r.iter().position(|c| std::ptr::eq(&**c, ctx)) {
        r.swap_remove(at);
    }
}

/// The running job with this id.
pub(crate) fn find(id: u64) -> Option<Arc<JobCtx>> {
    running().iter().find(|c| c.id == id).cloned()
}

tokio::task_local! {
    static TASK_CTX: Arc<JobCtx>;
}

thread_local! {
    static THREAD_CTX: RefCell<Option<Arc<JobCtx>>> = const { RefCell::new(None) };
}

/// Runs `fut` as job `ctx` (for async tasks).
pub(crate) async fn scope<F: std::future::Future>(ctx: Arc<JobCtx>, fut: F) -> F::Output {
    TASK_CTX.scope(ctx, fut).await
}

/// Marks the current thread as running job `ctx` until the guard drops.
pub(crate) fn enter(ctx: Arc<JobCtx>) -> ThreadJob {
    let prev = THREAD_CTX.with(|c| c.replace(Some(ctx)));
    ThreadJob { prev }
}

pub(crate) struct ThreadJob {
    prev: Option<Arc<JobCtx>>,
}

impl Drop for ThreadJob {
    fn drop(&mut self) {
        let prev = self.prev.take();
        THREAD_CTX.with(|c| *c.borrow_mut() = prev);
    }
}

/// Calls `f` with the job the caller runs in, if any.
pub(crate) fn with_current<R>(f: impl FnOnce(&JobCtx) -> R) -> Option<R> {
    current().map(|ctx| f(&ctx))
}

/// The job the caller runs in, if any.
pub(crate) fn current() -> Option<Arc<JobCtx>> {
    TASK_CTX
        .try_with(Arc::clone)
        .ok()
        .or_else(|| THREAD_CTX.with(|c| c.borrow().clone()))
        .or_else(|| match running().as_slice() {
            [only] => Some(only.clone()),
            _ => None,
        })
}

/// Whether the job this code runs in has been asked to stop.
///
/// A long task can poll this from [`Task::run`](crate::Task::run) and return
/// early; the host has already resolved the job's handle with
/// [`Error::Cancelled`](crate::Error::Cancelled) (or
/// [`Error::TimedOut`](crate::Error::TimedOut)) and ignores what the task
/// returns. A task that does not poll is killed with its worker once the
/// cancel grace period has passed. An [`AsyncTask`](crate::AsyncTask) need
/// not poll: it is dropped at its next `.await`.
///
/// It answers for the job whose thread (or async task) calls it. On a
/// thread the task started itself, or in a tokio task it spawned, it
/// answers for the worker's only running job, and `false` if the worker
/// runs several at once
/// ([`jobs_per_worker`](crate::Builder::jobs_per_worker)); the same holds
/// for [`report_progress`](crate::report_progress). Outside a worker it is
/// always `false`.
pub fn cancelled() -> bool {
    with_current(JobCtx::is_cancelled).unwrap_or(false)
}
