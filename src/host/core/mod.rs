//! The host core: a pool's bookkeeping as a state machine without I/O.
//!
//! [`Core::handle`] takes one [`Input`] (a submit, a cancel, something a
//! worker said, a worker's exit, a memory sample, a shutdown) and the time;
//! [`Core::handle_timeout`] takes the time when [`Core::poll_timeout`] is
//! due. Both only change the core's state and queue [`Action`]s (send this
//! job to that worker, kill it, start a worker, resolve that job), which
//! the driver (`host::driver`) drains with [`Core::poll_action`] and
//! carries out. The core calls no tokio, no process, no clock and no
//! system call, so the simulation (`host::simulation`) drives it with
//! simulated workers and time.
//!
//! The state: every job is in exactly one [`JobState`], every worker in one
//! [`WorkerState`]; a job moves only through [`Core::transition`], which
//! keeps the queue, the workers' job lists and the counters in step (and
//! checks them with `debug_assert!`). See `host/mod.rs` for the
//! prefetch/revoke/start protocol.

#[cfg(test)]
mod check;
mod dispatch;
mod jobs;
mod timers;
mod workers;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::error::{Error, ExitStatus};
use crate::msg::JobId;
use crate::slot::RawResult;

/// A worker process of one pool, numbered in the order they were started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct WorkerId(pub(crate) u64);

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "worker {}", self.0)
    }
}

/// The settings the core runs with (from the pool's [`Config`]).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// How many workers to keep (the most, with an idle timeout).
    pub(crate) workers: usize,
    /// With an idle timeout, how many stay however idle the pool is.
    pub(crate) min_workers: usize,
    /// Jobs a worker runs at once.
    pub(crate) slots: usize,
    /// Jobs that may wait inside a busy worker.
    pub(crate) prefetch: usize,
    pub(crate) max_tasks_per_worker: Option<u64>,
    pub(crate) max_worker_rss: Option<u64>,
    pub(crate) worker_memory_limit: Option<u64>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) job_timeout: Option<Duration>,
    pub(crate) cancel_grace: Duration,
    pub(crate) max_startup_failures: u32,
    pub(crate) max_startup_backoff: Duration,
}

impl Settings {
    pub(crate) fn from_config(cfg: &Config) -> Self {
        Settings {
            workers: cfg.workers,
            min_workers: cfg.min_workers,
            slots: cfg.jobs_per_worker,
            prefetch: cfg.prefetch,
            max_tasks_per_worker: cfg.max_tasks_per_worker,
            max_worker_rss: cfg.max_worker_rss,
            worker_memory_limit: cfg.worker_memory_limit,
            idle_timeout: cfg.idle_timeout,
            job_timeout: cfg.job_timeout,
            cancel_grace: cfg.cancel_grace,
            max_startup_failures: cfg.max_startup_failures,
            max_startup_backoff: cfg.max_startup_backoff,
        }
    }
}

impl Settings {
    /// Plain settings for the crate's tests: `workers` workers, one job
    /// each, nothing sent ahead, no limits.
    #[cfg(test)]
    pub(crate) fn for_tests(workers: usize) -> Self {
        Settings {
            workers,
            min_workers: 0,
            slots: 1,
            prefetch: 0,
            max_tasks_per_worker: None,
            max_worker_rss: None,
            worker_memory_limit: None,
            idle_timeout: None,
            job_timeout: None,
            cancel_grace: Duration::from_millis(100),
            max_startup_failures: 3,
            max_startup_backoff: Duration::from_millis(400),
        }
    }
}

/// A job entering the pool, with what the driver keeps for it (`payload`:
/// its handle's slot, its frame), which lives in the core's job table so a
/// job is looked up once, not once in the core and once in the driver.
#[derive(Debug)]
pub(crate) struct NewJob<P> {
    pub(crate) id: JobId,
    /// Size of its frame, for the prefetch byte budget.
    pub(crate) size: usize,
    /// Its own timeout (else the pool's).
    pub(crate) timeout: Option<Duration>,
    pub(crate) retries: u32,
    pub(crate) payload: P,
}

/// What happens to the core.
#[derive(Debug)]
pub(crate) enum Input<P> {
    Submit(NewJob<P>),
    /// The job's handle was cancelled or dropped (its slot says so already).
    Cancel(JobId),
    /// The consumer of a streaming job took `n` items.
    Credit(JobId, u64),
    /// A worker asked for with [`Action::Spawn`] finished starting (its
    /// pid) or failed to.
    Spawned {
        worker: WorkerId,
        result: Result<u32, Error>,
    },
    /// The worker started a job sent ahead.
    Started {
        worker: WorkerId,
        job: JobId,
    },
    /// The worker gave back a job it had not started.
    Revoked {
        worker: WorkerId,
        job: JobId,
    },
    /// The worker finished a job; `rss` is its resident memory right
    /// after, when the pool recycles workers by memory.
    Finished {
        worker: WorkerId,
        job: JobId,
        result: RawResult,
        rss: Option<u64>,
    },
    /// The worker broke the protocol (it is killed).
    Violation {
        worker: WorkerId,
        message: String,
    },
    /// A job frame could not be handed to the worker's link (it is going
    /// away): the job goes back to the queue intact.
    SendFailed {
        worker: WorkerId,
        job: JobId,
    },
    /// The worker's process is gone and reaped. `error` is set if its link
    /// dropped it for breaking the protocol.
    Exited {
        worker: WorkerId,
        status: ExitStatus,
        error: Option<String>,
        tail: String,
    },
    /// The worker's resident memory, sampled while it runs jobs.
    MemorySample {
        worker: WorkerId,
        rss: u64,
    },
    /// Graceful shutdown: finish what is queued and running, then stop.
    Shutdown,
    /// Fail every job, kill every worker.
    ShutdownNow,
}

/// A small message to a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    Cancel(JobId),
    Revoke(JobId),
    Credit(JobId, u64),
}

/// What the driver must do.
#[derive(Debug)]
pub(crate) enum Action<P> {
    /// Start a worker process; report with [`Input::Spawned`].
    Spawn(WorkerId),
    /// Send a job's frame, in its "sent ahead" form if `ahead`. `keep`:
    /// the frame may be needed again (it may be given back, or retried),
    /// so keep a copy. A job sent not ahead has started. If the frame
    /// cannot be handed over, report [`Input::SendFailed`] and keep it.
    SendJob {
        worker: WorkerId,
        job: JobId,
        ahead: bool,
        keep: bool,
    },
    /// Send a control message.
    Send { worker: WorkerId, msg: Control },
    /// A job sent ahead started; drop its frame unless `keep`.
    Started {
        worker: WorkerId,
        job: JobId,
        keep: bool,
    },
    /// Close the worker's input: it exits (it has no jobs).
    Close(WorkerId),
    /// Kill the worker's process group.
    Kill(WorkerId),
    /// The job's handle is to get its result now (take it with
    /// [`Core::take_answer`]); the job is still being stopped. If the job
    /// was forgotten meanwhile, the result went with its `Release`. A
    /// job's result goes out at most once.
    Resolve { job: JobId },
    /// The core forgot the job (exactly once per job): deliver `result` if
    /// there is one, and drop what was kept for it (`payload`, handed
    /// back). `worker`: the worker it ran on, if it ended there.
    Release {
        job: JobId,
        worker: Option<WorkerId>,
        result: Option<RawResult>,
        payload: P,
    },
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobState {
    /// In the queue, waiting for a worker.
    Queued,
    /// Sent ahead to a busy worker; waits inside it, not started.
    Prefetched(WorkerId),
    /// Sent ahead, then asked back (revoke or cancel): the worker answers
    /// `Revoked` (it gave it back) or `Started` (it had started it).
    Revoking(WorkerId),
    /// Running on the worker: sent to a free slot, or acknowledged.
    Running(WorkerId),
}

impl JobState {
    pub(crate) fn worker(self) -> Option<WorkerId> {
        match self {
            JobState::Queued => None,
            JobState::Prefetched(w) | JobState::Revoking(w) | JobState::Running(w) => Some(w),
        }
    }

    fn is_prefetched(self) -> bool {
        matches!(self, JobState::Prefetched(_) | JobState::Revoking(_))
    }
}

struct Job<P> {
    state: JobState,
    /// Its handle has its outcome: a result went out, or the handle was
    /// cancelled. The job may still run (it is being stopped).
    answered: bool,
    /// How many more times it may run if its worker dies under it.
    retries_left: u32,
    timeout: Option<Duration>,
    size: usize,
    /// Its armed timer (timeout, or the cancel grace), if any.
    timer: Option<(Instant, Timer)>,
    /// Times it started (for the simulation's checks).
    starts: u32,
    /// A result for its handle not yet taken by the driver.
    answer: Option<RawResult>,
    payload: P,
}

/// A worker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WorkerState {
    /// Being started; not a process the core can use yet.
    Starting,
    /// Takes jobs (unless it has been sent all `max_tasks_per_worker`
    /// allows, see [`Worker::spent`]).
    Serving,
    /// Takes no new jobs; its jobs sent ahead are revoked; it is closed
    /// once its jobs are done.
    Retiring,
    /// Closed or killed; waiting for its exit. Its jobs (if any) end with
    /// it.
    Leaving,
}

struct Worker {
    state: WorkerState,
    pid: u32,
    /// Started as part of `build()` (not counted as a respawn).
    initial: bool,
    /// The jobs on it (sent and not back or finished), in sending order:
    /// those running, then those sent ahead, which start in this order.
    jobs: VecDeque<JobId>,
    /// Jobs sent to it and not given back (for `max_tasks_per_worker`).
    sent: u64,
    /// Jobs started on it (never more than `max_tasks_per_worker`).
    started: u64,
    /// Bytes of its jobs sent ahead and not started.
    prefetched_bytes: usize,
    /// Since when it has had no job.
    idle_since: Instant,
    /// Its jobs in their cancel grace period (they may end in a kill).
    stopping: usize,
}

/// Timers, ordered by deadline in [`Core::timers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// The job has run for its timeout.
    Timeout(JobId),
    /// The job was asked to stop a grace period ago.
    Grace(JobId),
    /// The start-up backoff is over.
    Spawn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Running,
    /// Graceful shutdown: run what is queued, then stop.
    Draining,
    /// Everything is being stopped.
    Stopping,
}

/// The counters the core keeps (`stats()`'s queue and worker figures).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CoreStats {
    /// Jobs queued or sent ahead and not started.
    pub(crate) queued: usize,
    /// Jobs running on a worker.
    pub(crate) running: usize,
    /// Worker processes alive (started and not exited).
    pub(crate) workers_alive: usize,
    pub(crate) respawns: u64,
    pub(crate) recycled: u64,
    pub(crate) retried: u64,
}

/// A pool's state, with a `P` kept for each job. See the module docs.
pub(crate) struct Core<P> {
    set: Settings,
    jobs: HashMap<JobId, Job<P>, IdHash>,
    /// Jobs waiting for a worker, in submission (id) order; jobs given back
    /// or retried take their place again.
    queue: BTreeSet<JobId>,
    workers: BTreeMap<WorkerId, Worker>,
    timers: BTreeSet<(Instant, Timer)>,
    next_worker: u64,
    mode: Mode,
    /// Start-up failures in a row.
    startup_failures: u32,
    /// Set while workers cannot start and none serves: jobs fail with it.
    startup_error: Option<Error>,
    /// No worker is started before this (backoff after a failure).
    spawn_after: Option<Instant>,
    /// Jobs in `Prefetched` or `Revoking`.
    prefetched: usize,
    /// Jobs in `Running`.
    running: usize,
    stats: CoreStats,
    actions: VecDeque<Action<P>>,
    /// The time of the inputs not settled yet.
    unsettled: Option<Instant>,
}

impl<P> Core<P> {
    /// A core that starts its `workers` at once (see [`Action::Spawn`]).
    pub(crate) fn new(set: Settings, now: Instant) -> Self {
        let mut core = Core {
            set,
            jobs: HashMap::default(),
            queue: BTreeSet::new(),
            workers: BTreeMap::new(),
            timers: BTreeSet::new(),
            next_worker: 0,
            mode: Mode::Running,
            startup_failures: 0,
            startup_error: None,
            spawn_after: None,
            prefetched: 0,
            running: 0,
            stats: CoreStats::default(),
            actions: VecDeque::new(),
            unsettled: None,
        };
        for _ in 0..core.set.workers {
            core.spawn(now, true);
        }
        core
    }

    /// Applies one input. Dispatching and tidying up wait for the next
    /// [`poll_action`](Self::poll_action) (or [`flush`](Self::flush)), so a
    /// batch of inputs is settled once.
    pub(crate) fn handle(&mut self, now: Instant, input: Input<P>) {
        match input {
            Input::Submit(job) => self.on_submit(job),
            Input::Cancel(id) => self.on_cancel(id, now),
            Input::Credit(id, n) => {
                if let Some(w) = self.jobs.get(&id).and_then(|j| j.state.worker()) {
                    self.send(w, Control::Credit(id, n));
                }
            }
            Input::Spawned { worker, result } => self.on_spawned(worker, result, now),
            Input::Started { worker, job } => self.on_started(worker, job, now),
            Input::Revoked { worker, job } => self.on_revoked(worker, job),
            Input::Finished {
                worker,
                job,
                result,
                rss,
            } => self.on_finished(worker, job, result, rss, now),
            Input::Violation { worker, message } => self.violation(worker, message),
            Input::SendFailed { worker, job } => self.on_send_failed(worker, job),
            Input::Exited {
                worker,
                status,
                error,
                tail,
            } => self.on_exited(worker, status, error, tail),
            Input::MemorySample { worker, rss } => self.on_memory_sample(worker, rss),
            Input::Shutdown => {
                if self.mode == Mode::Running {
                    self.mode = Mode::Draining;
                }
            }
            Input::ShutdownNow => self.stop_all(),
        }
        self.unsettled = Some(now);
    }

    /// Fires the timers that are due at `now`.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, timer));
            if let Timer::Timeout(id) | Timer::Grace(id) = timer {
                if self
                    .jobs
                    .get(&id)
                    .is_some_and(|j| j.timer == Some((at, timer)))
                {
                    self.set_timer(id, None);
                }
            }
            match timer {
                Timer::Timeout(id) => self.on_job_timeout(id, now),
                Timer::Grace(id) => self.on_grace_over(id),
                // Only a wake-up: `replenish` compares `spawn_after` with now.
                Timer::Spawn => {}
            }
        }
        self.retire_idle(now);
        self.unsettled = Some(now);
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let timer = self.timers.first().map(|&(at, _)| at);
        match (timer, self.next_idle_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next thing to do.
    pub(crate) fn poll_action(&mut self) -> Option<Action<P>> {
        self.flush();
        self.actions.pop_front()
    }

    /// Settles what the inputs since the last call changed: fills free
    /// slots, closes and starts workers, updates the counters. Queries
    /// ([`stats`](Self::stats), [`poll_timeout`](Self::poll_timeout),
    /// [`is_finished`](Self::is_finished)) are current after it.
    pub(crate) fn flush(&mut self) {
        if let Some(now) = self.unsettled.take() {
            self.settle(now);
        }
    }

    /// Whether the pool has stopped: shut down, every worker gone, every job
    /// forgotten.
    pub(crate) fn is_finished(&self) -> bool {
        self.mode != Mode::Running && self.workers.is_empty() && self.jobs.is_empty()
    }

    /// What is kept for job `id`.
    pub(crate) fn payload(&self, id: JobId) -> Option<&P> {
        self.jobs.get(&id).map(|j| &j.payload)
    }

    pub(crate) fn payload_mut(&mut self, id: JobId) -> Option<&mut P> {
        self.jobs.get_mut(&id).map(|j| &mut j.payload)
    }

    /// What is kept for job `id` if it is on `worker` (sent, not back or
    /// finished), so what the worker says about it (items, progress) may
    /// be passed on.
    pub(crate) fn payload_on(&self, worker: WorkerId, id: JobId) -> Option<&P> {
        self.jobs
            .get(&id)
            .filter(|j| j.state.worker() == Some(worker))
            .map(|j| &j.payload)
    }

    /// What is kept for every job (for the driver's last resort if its
    /// thread unwinds).
    pub(crate) fn payloads(&self) -> impl Iterator<Item = &P> {
        self.jobs.values().map(|j| &j.payload)
    }

    /// The pids of workers that run jobs (for memory samples).
    pub(crate) fn busy_workers(&self) -> impl Iterator<Item = (WorkerId, u32)> + '_ {
        self.workers
            .iter()
            .filter(|(_, w)| {
                matches!(w.state, WorkerState::Serving | WorkerState::Retiring)
                    && !w.jobs.is_empty()
            })
            .map(|(&id, w)| (id, w.pid))
    }

    pub(crate) fn stats(&self) -> CoreStats {
        self.stats
    }

    /// Whether the pool takes jobs (not shut down).
    pub(crate) fn is_accepting(&self) -> bool {
        self.mode == Mode::Running
    }

    fn push(&mut self, action: Action<P>) {
        self.actions.push_back(action);
    }

    fn send(&mut self, worker: WorkerId, msg: Control) {
        self.push(Action::Send { worker, msg });
    }

    /// After every input: fill free slots, close and start workers, and
    /// publish the counters.
    fn settle(&mut self, now: Instant) {
        self.fail_queued_if_broken();
        self.dispatch(now);
        self.tidy_workers();
        self.replenish(now);
        self.stats.queued = self.queue.len() + self.prefetched;
        self.stats.running = self.running;
        self.stats.workers_alive = self
            .workers
            .values()
            .filter(|w| w.state != WorkerState::Starting)
            .count();
    }
}

/// Hashing for maps keyed by our own sequential ids: a multiply, instead
/// of SipHash's protection against keys chosen by an attacker.
pub(crate) type IdHash = std::hash::BuildHasherDefault<IdHasher>;

#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}
#[cfg(test)]
mod tests;
