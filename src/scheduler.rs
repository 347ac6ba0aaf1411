//! The scheduler: the one owner of a pool's state.
//!
//! It runs on the pool's own thread, in a single-threaded tokio runtime that
//! also drives every worker's pipes, so a pool does not depend on the runtime
//! (or the thread) that built it. Everyone else talks to it by message:
//! handles and the pool send [`Command`]s, worker I/O tasks and timers send
//! [`Event`]s.
//!
//! It keeps one FIFO queue. The next job goes to whichever worker has a
//! free slot (a worker runs up to `jobs_per_worker` jobs at once, one by
//! default), so a job never waits behind another while a worker is free.
//! While every slot is taken, a few small jobs are also sent ahead to each
//! worker (they wait inside it, and it acknowledges each start); a job sent
//! ahead is revoked when another worker goes idle with nothing queued, and
//! requeued if its worker dies before starting it. Each worker's jobs in
//! flight are kept in the order they were sent (`Worker::inflight`): the
//! started ones first, then those sent ahead, which start in that order.
//! Started jobs may finish in any order when several run at once.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::error::{Error, ExitStatus, SerdeStage};
use crate::handle::{Encoded, JobId, Slot};
use crate::options::JobOptions;
use crate::process::{self, Link, OutFrame, WorkerEvent};
use crate::protocol::{self, FailStage, FromWorker};
use crate::stats::Shared;

/// A job on its way to the scheduler.
pub(crate) struct JobRequest {
    pub(crate) id: JobId,
    pub(crate) task: u32,
    /// The complete frame, ready to write.
    pub(crate) frame: Vec<u8>,
    pub(crate) slot: Arc<Slot>,
    pub(crate) options: JobOptions,
}

/// What the pool and the handles ask of the scheduler.
pub(crate) enum Command {
    Submit(JobRequest),
    Cancel(JobId),
    /// The consumer of a streaming job took `n` items.
    Credit(JobId, u64),
    /// Finish queued and running jobs, then stop the workers.
    Shutdown {
        done: oneshot::Sender<()>,
    },
    /// Fail queued jobs, kill running ones, stop the workers.
    ShutdownNow {
        done: oneshot::Sender<()>,
    },
    /// The last pool handle was dropped.
    Abandon,
}

/// What happens on the pool's side: worker messages, exits, timers.
pub(crate) enum Event {
    Worker {
        uid: u64,
        event: WorkerEvent,
    },
    Spawned(Box<Result<process::Spawned, Error>>),
    TimedOut {
        uid: u64,
        job: JobId,
        timeout: Duration,
    },
    GraceOver {
        uid: u64,
        job: JobId,
    },
    /// Time to let idle workers beyond the minimum go.
    IdleCheck,
    /// Time to compare busy workers' memory with the limit.
    MemoryCheck,
}

struct Job {
    task: u32,
    /// The encoded job, kept until it is known to have started (or, with
    /// retries, until it finishes).
    frame: Option<Arc<Vec<u8>>>,
    slot: Arc<Slot>,
    timeout: Option<Duration>,
    /// The worker running it, once dispatched.
    worker: Option<u64>,
    /// How many more times it may run if its worker dies.
    retries_left: u32,
    /// Known to have started on its worker (sent to an idle worker, or
    /// acknowledged). A job that never started is requeued if its worker
    /// dies.
    started: bool,
    /// A revoke was sent for it.
    revoking: bool,
    /// Size of its frame.
    size: usize,
    /// Its `procpool.job` tracing span (disabled unless a subscriber wants
    /// it).
    span: tracing::Span,
}

#[derive(PartialEq, Eq)]
enum WorkerState {
    Idle,
    Busy,
    /// Told to exit (stdin closed) or killed; waiting for its exit.
    Leaving,
}

struct Worker {
    pid: u32,
    link: Link,
    state: WorkerState,
    /// Jobs sent to it, in order: the started ones (running), then those
    /// sent ahead that wait in the worker.
    inflight: VecDeque<JobId>,
    /// Jobs sent to it so far (for `max_tasks_per_worker`).
    sent: u64,
    /// Stop sending it jobs; close it once its in-flight jobs are done.
    retiring: bool,
    /// Bytes of the jobs sent ahead and not started.
    ahead_bytes: usize,
    idle_since: Instant,
}

impl Worker {
    /// Whether it has been sent all the jobs `max_tasks_per_worker` allows.
    fn spent(&self, max_tasks: Option<u64>) -> bool {
        max_tasks.is_some_and(|n| self.sent >= n)
    }

    fn position(&self, id: JobId) -> Option<usize> {
        self.inflight.iter().position(|&j| j == id)
    }
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Mode {
    Running,
    /// Graceful: run what is queued, then stop.
    Draining,
    /// Everything is being stopped.
    Stopping,
}

pub(crate) struct Scheduler {
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    events_tx: mpsc::UnboundedSender<Event>,
    queue: VecDeque<JobId>,
    jobs: HashMap<JobId, Job, IdHash>,
    workers: HashMap<u64, Worker, IdHash>,
    idle: Vec<u64>,
    next_uid: u64,
    spawning: usize,
    startup_failures: u32,
    broken: Option<Error>,
    mode: Mode,
    waiters: Vec<oneshot::Sender<()>>,
    /// Jobs in the queue (not counting ids of jobs cancelled since).
    waiting: usize,
    /// Jobs sent ahead to a worker and not started yet.
    ahead: usize,
    /// Jobs known to be running on a worker.
    running: usize,
}

/// Runs a pool: starts its workers, reports the outcome on `ready`, then
/// serves commands until the pool is shut down or dropped.
pub(crate) async fn run(
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    ready: oneshot::Sender<Result<(), Error>>,
) {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut s = Scheduler {
        cfg: cfg.clone(),
        shared,
        events_tx,
        queue: VecDeque::new(),
        jobs: HashMap::default(),
        workers: HashMap::default(),
        idle: Vec::new(),
        next_uid: 0,
        spawning: 0,
        startup_failures: 0,
        broken: None,
        mode: Mode::Running,
        waiters: Vec::new(),
        waiting: 0,
        ahead: 0,
        running: 0,
    };

    // Start every worker at once; fail the build if any cannot start.
    let starts = (0..cfg.workers).map(|_| process::spawn(&cfg));
    let mut first_error = None;
    let mut started = Vec::new();
    for r in futures::future::join_all(starts).await {
        match r {
            Ok(w) => started.push(w),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        // Dropping `started` kills the workers that did start.
        drop(started);
        let _ = ready.send(Err(e));
        return;
    }
    for w in started {
        s.add_worker(w);
    }
    if cfg.worker_memory_limit.is_some() {
        s.timer(MEMORY_POLL, Event::MemoryCheck);
    }
    if let Some(timeout) = cfg.idle_timeout {
        s.timer(timeout.max(Duration::from_millis(10)), Event::IdleCheck);
    }
    if ready.send(Ok(())).is_err() {
        // Nobody awaits the pool any more.
        s.stop_all(Error::Shutdown);
    }

    let mut commands_open = true;
    loop {
        if s.finished() {
            break;
        }
        tokio::select! {
            cmd = commands.recv(), if commands_open => match cmd {
                Some(cmd) => s.on_command(cmd),
                None => {
                    commands_open = false;
                    s.on_command(Command::Abandon);
                }
            },
            Some(ev) = events.recv() => s.on_event(ev),
        }
        // Drain what else is ready before dispatching once.
        for _ in 0..256 {
            if !commands_open {
                break;
            }
            match commands.try_recv() {
                Ok(cmd) => s.on_command(cmd),
                Err(_) => break,
            }
        }
        while let Ok(ev) = events.try_recv() {
            s.on_event(ev);
        }
        s.dispatch();
        s.retire_idle();
        s.publish();
    }
    for w in s.waiters.drain(..) {
        let _ = w.send(());
    }
}

impl Scheduler {
    /// Jobs waiting for a worker (the queue may also hold ids of jobs
    /// cancelled since).
    fn queued(&self) -> usize {
        self.waiting
    }

    fn has_queued(&self) -> bool {
        self.queued() > 0
    }

    fn finished(&self) -> bool {
        self.mode != Mode::Running
            && self.workers.is_empty()
            && self.spawning == 0
            && self.jobs.is_empty()
    }

    fn add_worker(&mut self, w: process::Spawned) {
        let uid = self.next_uid;
        self.next_uid += 1;
        let pid = w.pid;
        let events = self.events_tx.clone();
        let link = process::start_io(w, move |event| {
            let _ = events.send(Event::Worker { uid, event });
        });
        self.workers.insert(
            uid,
            Worker {
                pid,
                link,
                state: WorkerState::Idle,
                inflight: VecDeque::new(),
                sent: 0,
                retiring: false,
                ahead_bytes: 0,
                idle_since: Instant::now(),
            },
        );
        self.idle.push(uid);
        self.shared.workers_alive.fetch_add(1, Ordering::Relaxed);
        self.shared.set_pids(self.workers.values().map(|w| w.pid));
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Submit(req) => self.on_submit(req),
            Command::Cancel(id) => self.on_cancel(id),
            Command::Credit(id, n) => {
                if let Some(uid) = self.jobs.get(&id).and_then(|j| j.worker) {
                    self.send_control(uid, |f| protocol::put_credit(f, id.0, n));
                }
            }
            Command::Shutdown { done } => {
                self.waiters.push(done);
                if self.mode == Mode::Running {
                    self.mode = Mode::Draining;
                }
                self.retire_idle();
            }
            Command::ShutdownNow { done } => {
                self.waiters.push(done);
                self.stop_all(Error::Shutdown);
            }
            Command::Abandon => self.stop_all(Error::Shutdown),
        }
    }

    fn on_submit(&mut self, req: JobRequest) {
        if self.mode != Mode::Running {
            self.resolve(&req.slot, Err(Error::Shutdown));
            return;
        }
        if let Some(e) = &self.broken {
            let e = e.clone();
            self.resolve(&req.slot, Err(e));
            return;
        }
        self.waiting += 1;
        self.queue.push_back(req.id);
        self.jobs.insert(
            req.id,
            Job {
                task: req.task,
                size: req.frame.len(),
                span: {
                    let span = tracing::debug_span!(
                        "procpool.job",
                        id = req.id.0,
                        task = %crate::task::type_name_at(req.task)
                    );
                    span.in_scope(|| tracing::trace!("queued"));
                    span
                },
                frame: Some(Arc::new(req.frame)),
                slot: req.slot,
                timeout: req.options.timeout.or(self.cfg.job_timeout),
                worker: None,
                retries_left: req.options.retries,
                started: false,
                revoking: false,
            },
        );
        if self.cfg.idle_timeout.is_some() {
            self.replenish();
        }
    }

    fn on_cancel(&mut self, id: JobId) {
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        match job.worker {
            None => {
                // Queued: forget it; the queue skips missing ids.
                self.jobs.remove(&id);
                self.waiting = self.waiting.saturating_sub(1);
            }
            Some(uid) => {
                let started = job.started;
                // The worker drops it if it has not started (and says so),
                // or flags it for `cancelled()`.
                self.send_control(uid, |f| protocol::put_cancel(f, id.0));
                if started {
                    self.grace_timer(uid, id);
                }
            }
        }
    }

    /// Sends a small control frame (cancel, revoke, credit) to a worker.
    fn send_control(&self, uid: u64, put: impl FnOnce(&mut Vec<u8>)) {
        if let Some(frames) = self.workers.get(&uid).and_then(|w| w.link.frames.as_ref()) {
            let mut f = Vec::with_capacity(24);
            crate::frame::begin(&mut f);
            put(&mut f);
            if crate::frame::finish(&mut f, usize::MAX).is_ok() {
                let _ = frames.send(OutFrame {
                    bytes: Arc::new(f),
                    ahead: false,
                });
            }
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Worker { uid, event } => match event {
                WorkerEvent::Message(msg) => self.on_message(uid, msg),
                WorkerEvent::Exited {
                    status,
                    error,
                    stderr_tail,
                } => self.on_exit(uid, status, error, stderr_tail),
            },
            Event::Spawned(r) => {
                self.spawning -= 1;
                match *r {
                    Ok(w) => {
                        self.startup_failures = 0;
                        if self.mode == Mode::Stopping {
                            drop(w);
                        } else {
                            self.add_worker(w);
                            self.shared.respawns.fetch_add(1, Ordering::Relaxed);
                            if self.mode == Mode::Draining && !self.has_queued() {
                                self.retire_idle();
                            }
                        }
                    }
                    Err(e) => {
                        self.startup_failures += 1;
                        if self.startup_failures >= self.cfg.max_startup_failures {
                            self.give_up(e);
                        } else {
                            self.replenish();
                        }
                    }
                }
            }
            Event::TimedOut { uid, job, timeout } => {
                if self.is_running_on(uid, job) {
                    if let Some(j) = self.jobs.get(&job) {
                        let slot = j.slot.clone();
                        self.resolve(&slot, Err(Error::TimedOut { timeout }));
                    }
                    // The same path as a cancel: ask, then kill after the
                    // grace period.
                    self.send_control(uid, |f| protocol::put_cancel(f, job.0));
                    self.grace_timer(uid, job);
                }
            }
            Event::IdleCheck => self.on_idle_check(),
            Event::MemoryCheck => self.on_memory_check(),
            Event::GraceOver { uid, job } => {
                if self.is_running_on(uid, job) {
                    self.kill_worker(uid);
                }
            }
        }
    }

    fn on_message(&mut self, uid: u64, msg: FromWorker) {
        let (id, result) = match msg {
            FromWorker::Done { id, body, offset } => (id, Ok(Encoded { body, offset })),
            FromWorker::Panicked { id, message } => (id, Err(Error::Panicked { message })),
            // The host cancelled it (its handle is resolved already).
            FromWorker::Cancelled { id } => (id, Err(Error::Cancelled)),
            FromWorker::Failed { id, stage, message } => {
                let type_name = self
                    .jobs
                    .get(&JobId(id))
                    .map(|j| crate::task::type_name_at(j.task))
                    .unwrap_or_default();
                let err = match stage {
                    FailStage::DecodeTask => Error::Serialization {
                        stage: SerdeStage::DecodeTask,
                        type_name,
                        message,
                    },
                    FailStage::EncodeOutput => Error::Serialization {
                        stage: SerdeStage::EncodeOutput,
                        type_name,
                        message,
                    },
                    FailStage::UnknownTask => Error::Protocol { message },
                };
                (id, Err(err))
            }
            FromWorker::Started { id } => return self.on_started(uid, JobId(id)),
            FromWorker::Item { id, body, offset } => {
                if let Some(job) = self.jobs.get(&JobId(id)) {
                    job.slot.push_item(Encoded { body, offset });
                }
                return;
            }
            FromWorker::Progress {
                id,
                done,
                total,
                message,
            } => {
                if let Some(job) = self.jobs.get(&JobId(id)) {
                    let p = crate::progress::Progress::new(done, total, message);
                    job.slot.set_progress(p);
                }
                return;
            }
            FromWorker::Revoked { id } => return self.on_revoked(uid, JobId(id)),
            FromWorker::Hello { .. } => {
                self.protocol_violation(uid, "a second handshake".into());
                return;
            }
        };
        let id = JobId(id);
        let Some(at) = self.running_at(uid, id) else {
            return;
        };
        let Some(w) = self.workers.get_mut(&uid) else {
            return;
        };
        w.inflight.remove(at);
        let recycle = w.spent(self.cfg.max_tasks_per_worker)
            || self
                .cfg
                .max_worker_rss
                .is_some_and(|limit| crate::sys::rss_bytes(w.pid).is_some_and(|rss| rss > limit));
        if recycle && !w.retiring {
            w.retiring = true;
            self.shared.recycled.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(job) = self.jobs.remove(&id) {
            if job.started {
                self.running = self.running.saturating_sub(1);
            } else {
                self.ahead = self.ahead.saturating_sub(1);
                w.ahead_bytes = w.ahead_bytes.saturating_sub(job.size);
            }
            let ok = result.is_ok();
            job.span.in_scope(|| tracing::debug!(ok, "finished"));
            self.resolve(&job.slot, result);
        }
        self.after_job(uid);
        if recycle {
            self.replenish();
        }
    }

    /// Bookkeeping once one of a worker's jobs is gone: it goes idle (or
    /// has a free slot again), or is retired when its last job is done.
    fn after_job(&mut self, uid: u64) {
        let Some(w) = self.workers.get(&uid) else {
            return;
        };
        if w.state == WorkerState::Leaving {
            return;
        }
        let spent = w.spent(self.cfg.max_tasks_per_worker);
        if spent && !w.retiring && w.inflight.is_empty() {
            // Its last jobs were given back: nothing will report on it.
            if let Some(w) = self.workers.get_mut(&uid) {
                w.retiring = true;
                self.shared.recycled.fetch_add(1, Ordering::Relaxed);
            }
            self.idle.retain(|&u| u != uid);
            self.after_job(uid);
            self.replenish();
            return;
        }
        if w.retiring {
            let ahead = self.not_started(uid);
            if let Some(w) = self.workers.get_mut(&uid) {
                if w.inflight.is_empty() {
                    w.state = WorkerState::Leaving;
                    w.link.frames = None;
                    return;
                }
            }
            for id in ahead {
                self.revoke(uid, id);
            }
            return;
        }
        let slots = self.cfg.jobs_per_worker;
        let Some(w) = self.workers.get_mut(&uid) else {
            return;
        };
        if w.inflight.is_empty() {
            w.state = WorkerState::Idle;
            w.idle_since = Instant::now();
            w.link.current_job.store(0, Ordering::Relaxed);
        }
        // With jobs sent ahead, the next one starts right away (its start
        // notice follows) and takes the free slot.
        if w.inflight.len() < slots && !spent && !self.idle.contains(&uid) {
            self.idle.push(uid);
        }
    }

    /// Jobs sent ahead to a worker that have not started.
    fn not_started(&self, uid: u64) -> Vec<JobId> {
        self.inflight_where(uid, false)
    }

    /// Jobs known to be running on a worker.
    fn started_on(&self, uid: u64) -> Vec<JobId> {
        self.inflight_where(uid, true)
    }

    /// A worker's in-flight jobs that have (or have not) started.
    fn inflight_where(&self, uid: u64, started: bool) -> Vec<JobId> {
        let Some(w) = self.workers.get(&uid) else {
            return Vec::new();
        };
        w.inflight
            .iter()
            .copied()
            .filter(|id| self.jobs.get(id).is_some_and(|j| j.started == started))
            .collect()
    }

    /// Whether `job` is running (known to have started) on a worker.
    fn is_running_on(&self, uid: u64, job: JobId) -> bool {
        self.workers
            .get(&uid)
            .is_some_and(|w| w.position(job).is_some())
            && self.jobs.get(&job).is_some_and(|j| j.started)
    }

    /// Where `id` is in the worker's in-flight jobs, if it is one it may
    /// report on (sent to it and started); a worker that names another job
    /// broke the protocol and is replaced.
    fn running_at(&mut self, uid: u64, id: JobId) -> Option<usize> {
        let w = self.workers.get(&uid)?;
        match w.position(id) {
            Some(at) if self.jobs.get(&id).is_none_or(|j| j.started) => Some(at),
            _ => {
                let message = format!("the worker reported on {id}, which it was not running");
                self.protocol_violation(uid, message);
                None
            }
        }
    }

    fn on_started(&mut self, uid: u64, id: JobId) {
        if self
            .workers
            .get(&uid)
            .and_then(|w| w.position(id))
            .is_none()
        {
            let message = format!("the worker started {id}, which it was not sent");
            self.protocol_violation(uid, message);
            return;
        }
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        if job.started {
            let message = format!("the worker started {id} twice");
            self.protocol_violation(uid, message);
            return;
        }
        job.started = true;
        job.revoking = false;
        job.slot.release_queue_place();
        let size = job.size;
        job.span.in_scope(|| tracing::debug!("started"));
        self.ahead = self.ahead.saturating_sub(1);
        self.running += 1;
        let attribute = self.cfg.jobs_per_worker == 1;
        if let Some(w) = self.workers.get_mut(&uid) {
            w.ahead_bytes = w.ahead_bytes.saturating_sub(size);
            if attribute {
                w.link.current_job.store(id.0, Ordering::Relaxed);
            }
        }
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        if job.retries_left == 0 {
            job.frame = None;
        }
        let (timeout, cancelled) = (job.timeout, !job.slot.is_pending());
        self.timeout_timer(uid, id, timeout);
        if cancelled {
            // Cancelled while it was on its way; it is flagged in the worker.
            self.grace_timer(uid, id);
        }
    }

    fn on_revoked(&mut self, uid: u64, id: JobId) {
        let Some(w) = self.workers.get_mut(&uid) else {
            return;
        };
        let Some(at) = w.position(id) else {
            return;
        };
        w.inflight.remove(at);
        self.ahead = self.ahead.saturating_sub(1);
        let size = self.jobs.get(&id).map_or(0, |j| j.size);
        w.ahead_bytes = w.ahead_bytes.saturating_sub(size);
        // Re-evaluate: a free slot, idle again, or retired.
        self.after_job(uid);
        self.requeue_front(&[id]);
    }

    /// Puts jobs that never started back at the head of the queue, in
    /// order; drops those that were cancelled meanwhile.
    fn requeue_front(&mut self, ids: &[JobId]) {
        for &id in ids.iter().rev() {
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            if !job.slot.is_pending() {
                self.jobs.remove(&id);
                continue;
            }
            job.worker = None;
            job.started = false;
            job.revoking = false;
            self.queue.push_front(id);
            self.waiting += 1;
        }
    }

    fn revoke(&mut self, uid: u64, id: JobId) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        if job.started || job.revoking {
            return;
        }
        job.revoking = true;
        self.send_control(uid, |f| protocol::put_revoke(f, id.0));
    }

    fn on_exit(&mut self, uid: u64, status: ExitStatus, error: Option<String>, tail: String) {
        let Some(w) = self.workers.remove(&uid) else {
            return;
        };
        if w.state == WorkerState::Leaving {
            tracing::debug!(pid = w.pid, %status, "procpool worker exited");
        } else {
            tracing::warn!(
                pid = w.pid,
                %status,
                jobs = w.inflight.len(),
                "procpool worker died; replacing it"
            );
        }
        self.idle.retain(|&u| u != uid);
        self.shared.workers_alive.fetch_sub(1, Ordering::Relaxed);
        self.shared.set_pids(self.workers.values().map(|w| w.pid));
        let mut never_started = Vec::new();
        for &id in &w.inflight {
            let Some(job) = self.jobs.get(&id) else {
                continue;
            };
            if job.started {
                self.running = self.running.saturating_sub(1);
            } else {
                self.ahead = self.ahead.saturating_sub(1);
            }
            if !job.started {
                never_started.push(id);
                continue;
            }
            let retry = error.is_none()
                && self.mode != Mode::Stopping
                && job.retries_left > 0
                && job.slot.is_pending()
                && job.frame.is_some();
            if retry {
                // At-most-once is relaxed only where the caller asked.
                if let Some(job) = self.jobs.get_mut(&id) {
                    job.retries_left -= 1;
                }
                never_started.insert(0, id);
                self.shared.retried.fetch_add(1, Ordering::Relaxed);
            } else if let Some(job) = self.jobs.remove(&id) {
                let err = match &error {
                    Some(message) => Error::Protocol {
                        message: message.clone(),
                    },
                    None if self.mode == Mode::Stopping => Error::Shutdown,
                    None => Error::WorkerDied {
                        pid: w.pid,
                        status,
                        stderr_tail: tail.clone(),
                    },
                };
                job.span
                    .in_scope(|| tracing::debug!(error = %err, "failed"));
                self.resolve(&job.slot, Err(err));
            }
        }
        if self.mode == Mode::Stopping {
            for id in never_started {
                if let Some(job) = self.jobs.remove(&id) {
                    self.resolve(&job.slot, Err(Error::Shutdown));
                }
            }
        } else {
            self.requeue_front(&never_started);
        }
        self.replenish();
    }

    /// How many workers the pool wants now: all of them, or with an idle
    /// timeout, enough for the work at hand but at least the minimum.
    fn desired_workers(&self) -> usize {
        match self.cfg.idle_timeout {
            None => self.cfg.workers,
            Some(_) => {
                let busy = self.running + self.ahead + self.waiting;
                busy.div_ceil(self.cfg.jobs_per_worker)
                    .max(self.cfg.min_workers)
                    .min(self.cfg.workers)
            }
        }
    }

    fn live_workers(&self) -> usize {
        self.workers
            .values()
            .filter(|w| w.state != WorkerState::Leaving)
            .count()
    }

    /// Starts workers until the pool has the size it wants again.
    fn replenish(&mut self) {
        if self.mode == Mode::Stopping || self.broken.is_some() {
            return;
        }
        if self.mode == Mode::Draining && !self.has_queued() {
            return;
        }
        let live = self.live_workers();
        let missing = self.desired_workers().saturating_sub(live + self.spawning);
        if missing > 0 {
            tracing::debug!(missing, "starting procpool workers");
        }
        for _ in 0..missing {
            self.spawning += 1;
            let cfg = self.cfg.clone();
            let events = self.events_tx.clone();
            let delay = backoff(self.startup_failures);
            tokio::spawn(async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let r = process::spawn(&cfg).await;
                let _ = events.send(Event::Spawned(Box::new(r)));
            });
        }
    }

    /// Workers keep failing to start: fail what waits, refuse new jobs.
    fn give_up(&mut self, e: Error) {
        let live = self
            .workers
            .values()
            .filter(|w| w.state != WorkerState::Leaving)
            .count();
        if live > 0 {
            // Some workers still serve; try again later at the slowest pace.
            self.replenish();
            return;
        }
        let e = Error::Spawn {
            message: format!(
                "workers failed to start {} times in a row; giving up: {e}",
                self.startup_failures
            ),
        };
        self.broken = Some(e.clone());
        self.fail_queued(e);
    }

    fn fail_queued(&mut self, e: Error) {
        while let Some(id) = self.queue.pop_front() {
            if let Some(job) = self.jobs.remove(&id) {
                self.waiting = self.waiting.saturating_sub(1);
                self.resolve(&job.slot, Err(e.clone()));
            }
        }
    }

    fn dispatch(&mut self) {
        // Free slots first: a job never waits while a worker is free.
        while !self.idle.is_empty() {
            let Some(id) = self.next_queued() else {
                break;
            };
            let Some(uid) = self.take_free_slot() else {
                break;
            };
            self.send_job(uid, id, false);
        }
        // Then keep up to `prefetch` jobs waiting inside each busy worker,
        // so it never waits for the host between jobs. Round by round, the
        // emptiest first, so the workers share the queue evenly.
        if self.cfg.prefetch > 0 && self.has_queued() {
            let most = self.cfg.jobs_per_worker + self.cfg.prefetch;
            let mut room: Vec<(usize, u64)> = self
                .workers
                .iter()
                .filter(|(_, w)| {
                    w.state == WorkerState::Busy
                        && !w.retiring
                        && w.inflight.len() < most
                        && !w.spent(self.cfg.max_tasks_per_worker)
                })
                .map(|(&uid, w)| (w.inflight.len(), uid))
                .collect();
            room.sort_unstable();
            'rounds: loop {
                let mut sent_any = false;
                for (depth, uid) in room.iter_mut() {
                    if *depth >= most {
                        continue;
                    }
                    let Some(id) = self.next_queued() else {
                        break 'rounds;
                    };
                    // Bound what waits inside a worker: one job of any
                    // size, or small ones up to AHEAD_BYTES in all; and
                    // never more than it may run before it is recycled.
                    let size = self.jobs.get(&id).map_or(0, |j| j.size);
                    let fits = self.workers.get(uid).is_some_and(|w| {
                        (w.ahead_bytes + size <= AHEAD_BYTES
                            || (w.ahead_bytes == 0 && size <= AHEAD_ONE_BYTES))
                            && !w.spent(self.cfg.max_tasks_per_worker)
                    });
                    if !fits {
                        self.requeue_front(&[id]);
                        *depth = usize::MAX;
                        continue;
                    }
                    self.send_job(*uid, id, true);
                    *depth += 1;
                    sent_any = true;
                }
                if !sent_any {
                    break;
                }
            }
        }
        // A worker is idle and nothing is queued: take back jobs waiting
        // behind a running one elsewhere, so none waits behind a long job.
        if !self.idle.is_empty() && !self.has_queued() && self.ahead > 0 {
            let uids: Vec<u64> = self.workers.keys().copied().collect();
            for uid in uids {
                for id in self.not_started(uid) {
                    self.revoke(uid, id);
                }
            }
        }
    }

    /// A worker with a free slot, for the next job: the one running the
    /// fewest jobs. It leaves the free list once this job fills it.
    fn take_free_slot(&mut self) -> Option<u64> {
        let slots = self.cfg.jobs_per_worker;
        if slots == 1 {
            return self.idle.pop();
        }
        let (at, _) = self
            .idle
            .iter()
            .enumerate()
            .min_by_key(|(_, uid)| self.workers.get(uid).map_or(0, |w| w.inflight.len()))?;
        let uid = self.idle[at];
        if self
            .workers
            .get(&uid)
            .is_none_or(|w| w.inflight.len() + 1 >= slots)
        {
            self.idle.swap_remove(at);
        }
        Some(uid)
    }

    /// The next job in the queue that is still wanted.
    fn next_queued(&mut self) -> Option<JobId> {
        while let Some(id) = self.queue.pop_front() {
            let Some(job) = self.jobs.get(&id) else {
                continue;
            };
            self.waiting = self.waiting.saturating_sub(1);
            if !job.slot.is_pending() {
                // Cancelled; its Cancel command is still on the way.
                self.jobs.remove(&id);
                continue;
            }
            return Some(id);
        }
        None
    }

    fn send_job(&mut self, uid: u64, id: JobId, ahead: bool) {
        let (Some(w), Some(job)) = (self.workers.get_mut(&uid), self.jobs.get_mut(&id)) else {
            self.requeue_front(&[id]);
            return;
        };
        // Keep the frame while the job may still have to be sent again: if
        // it goes ahead (it may be given back), or may be retried.
        let bytes = if ahead || job.retries_left > 0 {
            job.frame.clone()
        } else {
            job.frame.take()
        };
        let Some(bytes) = bytes else {
            // Not expected (a job drops its frame only once it started), but
            // never leave a handle pending.
            if let Some(job) = self.jobs.remove(&id) {
                let message = format!("{id} could not be sent again");
                self.resolve(&job.slot, Err(Error::Protocol { message }));
            }
            return;
        };
        let sent = w
            .link
            .frames
            .as_ref()
            .map(|f| f.send(OutFrame { bytes, ahead }));
        if !matches!(sent, Some(Ok(()))) {
            // The worker is going away; it will be replaced.
            w.state = WorkerState::Leaving;
            self.idle.retain(|&u| u != uid);
            self.requeue_front(&[id]);
            return;
        }
        w.state = WorkerState::Busy;
        w.inflight.push_back(id);
        w.sent += 1;
        if w.spent(self.cfg.max_tasks_per_worker) {
            // Its last job: no free slot for more; it is recycled once
            // its jobs are done.
            self.idle.retain(|&u| u != uid);
        }
        job.span
            .in_scope(|| tracing::debug!(worker_pid = w.pid, ahead, "dispatched"));
        // Output lines name the job only while it is the worker's only one.
        if !ahead && self.cfg.jobs_per_worker == 1 {
            w.link.current_job.store(id.0, Ordering::Relaxed);
        }
        job.worker = Some(uid);
        job.started = !ahead;
        if ahead {
            // It still counts as queued (and keeps its place in a bounded
            // queue) until the worker says it started.
            self.ahead += 1;
            w.ahead_bytes += job.size;
        } else {
            job.slot.release_queue_place();
            self.running += 1;
        }
        if !ahead {
            let timeout = job.timeout;
            self.timeout_timer(uid, id, timeout);
        }
    }

    /// Closes the input of idle workers so they exit (graceful shutdown).
    fn retire_idle(&mut self) {
        if self.mode != Mode::Draining || self.has_queued() {
            return;
        }
        let workers = &mut self.workers;
        self.idle.retain(|uid| {
            let Some(w) = workers.get_mut(uid) else {
                return false;
            };
            if !w.inflight.is_empty() {
                // Still running jobs; it closes once they are done.
                return true;
            }
            w.state = WorkerState::Leaving;
            w.link.frames = None;
            false
        });
    }

    /// Closes a worker's input so it exits; used to recycle it.
    fn retire(&mut self, uid: u64) {
        if let Some(w) = self.workers.get_mut(&uid) {
            w.retiring = true;
        }
        self.idle.retain(|&u| u != uid);
        self.after_job(uid);
    }

    /// Kills busy workers over the memory limit, failing their jobs.
    fn on_memory_check(&mut self) {
        let Some(limit) = self.cfg.worker_memory_limit else {
            return;
        };
        let over: Vec<(u64, u64)> = self
            .workers
            .iter()
            .filter(|(_, w)| w.state == WorkerState::Busy)
            .filter_map(|(&uid, w)| {
                let rss = crate::sys::rss_bytes(w.pid)?;
                Some((uid, rss)).filter(|_| rss > limit)
            })
            .collect();
        for (uid, rss) in over {
            // Every job running on it shares the blame: memory is per
            // process.
            for id in self.started_on(uid) {
                if let Some(job) = self.jobs.get(&id) {
                    let slot = job.slot.clone();
                    self.shared
                        .resolve(&slot, Err(Error::MemoryLimit { limit, rss }));
                }
            }
            self.kill_worker(uid);
        }
        if self.mode != Mode::Stopping {
            self.timer(MEMORY_POLL, Event::MemoryCheck);
        }
    }

    /// Lets workers beyond the minimum go once they have idled long enough.
    fn on_idle_check(&mut self) {
        let Some(timeout) = self.cfg.idle_timeout else {
            return;
        };
        if self.mode == Mode::Running {
            let mut live = self.live_workers();
            let expired: Vec<u64> = self
                .idle
                .iter()
                .copied()
                .filter(|uid| {
                    self.workers
                        .get(uid)
                        .is_some_and(|w| w.inflight.is_empty() && w.idle_since.elapsed() >= timeout)
                })
                .collect();
            for uid in expired {
                if live <= self.cfg.min_workers {
                    break;
                }
                self.retire(uid);
                live -= 1;
            }
        }
        let tick = (timeout / 4).max(Duration::from_millis(10));
        self.timer(tick, Event::IdleCheck);
    }

    fn kill_worker(&mut self, uid: u64) {
        if let Some(w) = self.workers.get_mut(&uid) {
            tracing::debug!(pid = w.pid, "killing procpool worker");
            w.state = WorkerState::Leaving;
            w.link.frames = None;
            if let Some(k) = w.link.kill.take() {
                let _ = k.send(());
            }
        }
        self.idle.retain(|&u| u != uid);
        // The replacement starts now, not when the exit is noticed.
        self.replenish();
    }

    /// Fails every job and kills every worker.
    fn stop_all(&mut self, e: Error) {
        self.mode = Mode::Stopping;
        self.fail_queued(e.clone());
        let jobs: Vec<Job> = self.jobs.drain().map(|(_, j)| j).collect();
        for job in jobs {
            self.resolve(&job.slot, Err(e.clone()));
        }
        let uids: Vec<u64> = self.workers.keys().copied().collect();
        for uid in uids {
            if let Some(w) = self.workers.get_mut(&uid) {
                w.state = WorkerState::Leaving;
                w.inflight.clear();
                w.link.frames = None;
                if let Some(k) = w.link.kill.take() {
                    let _ = k.send(());
                }
            }
        }
        self.idle.clear();
        self.waiting = 0;
        self.ahead = 0;
        self.running = 0;
    }

    fn protocol_violation(&mut self, uid: u64, message: String) {
        for id in self.started_on(uid) {
            if let Some(job) = self.jobs.get(&id) {
                let slot = job.slot.clone();
                let message = message.clone();
                self.resolve(&slot, Err(Error::Protocol { message }));
            }
        }
        self.kill_worker(uid);
    }

    /// Starts the timeout of job `id`, which just started on worker `uid`.
    fn timeout_timer(&self, uid: u64, id: JobId, timeout: Option<Duration>) {
        if let Some(timeout) = timeout {
            let job = id;
            self.timer(timeout, Event::TimedOut { uid, job, timeout });
        }
    }

    /// Gives job `id`, asked to stop on worker `uid`, the cancel grace
    /// period before its worker is killed.
    fn grace_timer(&self, uid: u64, id: JobId) {
        self.timer(self.cfg.cancel_grace, Event::GraceOver { uid, job: id });
    }

    fn timer(&self, after: Duration, ev: Event) {
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = events.send(ev);
        });
    }

    /// Delivers a result, publishing the counters first so `stats()` read
    /// right after a handle resolves is current.
    fn resolve(&self, slot: &Slot, result: Result<Encoded, Error>) {
        self.publish();
        self.shared.resolve(slot, result);
    }

    fn publish(&self) {
        self.shared
            .queued
            .store(self.waiting + self.ahead, Ordering::Relaxed);
        self.shared.running.store(self.running, Ordering::Relaxed);
        if self.mode != Mode::Running {
            self.shared.accepting.store(false, Ordering::Release);
        }
    }
}

/// Hashing for maps keyed by our own sequential ids: a multiply, instead
/// of SipHash's protection against keys chosen by an attacker.
type IdHash = std::hash::BuildHasherDefault<IdHasher>;

#[derive(Default)]
struct IdHasher(u64);

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

/// Small jobs may wait inside a worker up to this many bytes in all.
const AHEAD_BYTES: usize = 1 << 20;
/// A single job up to this size may always wait inside a worker.
const AHEAD_ONE_BYTES: usize = 16 << 20;

/// How often busy workers' memory is compared with the limit.
const MEMORY_POLL: Duration = Duration::from_millis(20);

fn backoff(failures: u32) -> Duration {
    if failures == 0 {
        Duration::ZERO
    } else {
        Duration::from_millis(50u64 << failures.min(6))
    }
}
