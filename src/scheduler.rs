//! The scheduler: the one owner of a pool's state.
//!
//! It runs on the pool's own thread, in a single-threaded tokio runtime that
//! also drives every worker's pipes, so a pool does not depend on the runtime
//! (or the thread) that built it. Everyone else talks to it by message:
//! handles and the pool send [`Command`]s, worker I/O tasks and timers send
//! [`Event`]s. It keeps one FIFO queue and hands the next job to whichever
//! worker is idle, so a job never waits behind another while a worker is
//! free.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::error::{Error, ExitStatus, SerdeStage};
use crate::handle::{Encoded, JobId, Slot};
use crate::options::JobOptions;
use crate::process::{self, Link, WorkerEvent};
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
    frame: Option<Vec<u8>>,
    slot: Arc<Slot>,
    timeout: Option<Duration>,
    /// The worker running it, once dispatched.
    worker: Option<u64>,
    /// How many more times it may run if its worker dies.
    retries_left: u32,
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
    current: Option<JobId>,
    jobs_run: u64,
    idle_since: Instant,
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
    jobs: HashMap<JobId, Job>,
    workers: HashMap<u64, Worker>,
    idle: Vec<u64>,
    next_uid: u64,
    spawning: usize,
    startup_failures: u32,
    broken: Option<Error>,
    mode: Mode,
    waiters: Vec<oneshot::Sender<()>>,
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
        jobs: HashMap::new(),
        workers: HashMap::new(),
        idle: Vec::new(),
        next_uid: 0,
        spawning: 0,
        startup_failures: 0,
        broken: None,
        mode: Mode::Running,
        waiters: Vec::new(),
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
        self.shared.queued.load(Ordering::Relaxed)
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
                current: None,
                jobs_run: 0,
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
            self.finish_job_slot(&req.slot, Err(Error::Shutdown));
            return;
        }
        if let Some(e) = &self.broken {
            let e = e.clone();
            self.finish_job_slot(&req.slot, Err(e));
            return;
        }
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        self.queue.push_back(req.id);
        self.jobs.insert(
            req.id,
            Job {
                task: req.task,
                frame: Some(req.frame),
                slot: req.slot,
                timeout: req.options.timeout.or(self.cfg.job_timeout),
                worker: None,
                retries_left: req.options.retries,
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
                self.shared.queued.fetch_sub(1, Ordering::Relaxed);
                self.shared.cancelled.fetch_add(1, Ordering::Relaxed);
            }
            Some(uid) => {
                let Some(w) = self.workers.get(&uid) else {
                    return;
                };
                if let Some(frames) = &w.link.frames {
                    let mut f = Vec::with_capacity(16);
                    crate::frame::begin(&mut f);
                    protocol::put_cancel(&mut f, id.0);
                    if crate::frame::finish(&mut f, usize::MAX).is_ok() {
                        let _ = frames.send(f);
                    }
                }
                self.shared.cancelled.fetch_add(1, Ordering::Relaxed);
                let grace = self.cfg.cancel_grace;
                self.timer(grace, Event::GraceOver { uid, job: id });
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
                if self.workers.get(&uid).and_then(|w| w.current) == Some(job) {
                    if let Some(j) = self.jobs.get(&job) {
                        let slot = j.slot.clone();
                        self.shared.resolve(&slot, Err(Error::TimedOut { timeout }));
                    }
                    self.kill_worker(uid);
                }
            }
            Event::IdleCheck => self.on_idle_check(),
            Event::MemoryCheck => self.on_memory_check(),
            Event::GraceOver { uid, job } => {
                if self.workers.get(&uid).and_then(|w| w.current) == Some(job) {
                    self.kill_worker(uid);
                }
            }
        }
    }

    fn on_message(&mut self, uid: u64, msg: FromWorker) {
        let (id, result) = match msg {
            FromWorker::Done { id, body, offset } => (id, Ok(Encoded { body, offset })),
            FromWorker::Panicked { id, message } => (id, Err(Error::Panicked { message })),
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
            FromWorker::Hello { .. } => {
                self.protocol_violation(uid, "a second handshake".into());
                return;
            }
        };
        let id = JobId(id);
        let Some(w) = self.workers.get_mut(&uid) else {
            return;
        };
        if w.current != Some(id) {
            let message = format!("the worker reported on {id}, which it was not running");
            self.protocol_violation(uid, message);
            return;
        }
        w.current = None;
        w.jobs_run += 1;
        let recycle =
            self.cfg
                .max_tasks_per_worker
                .is_some_and(|n| w.jobs_run >= n)
                || self.cfg.max_worker_rss.is_some_and(|limit| {
                    crate::sys::rss_bytes(w.pid).is_some_and(|rss| rss > limit)
                });
        if w.state == WorkerState::Busy {
            w.state = WorkerState::Idle;
            w.idle_since = Instant::now();
            self.idle.push(uid);
        }
        self.shared.running.fetch_sub(1, Ordering::Relaxed);
        if recycle {
            self.retire(uid);
            self.shared.recycled.fetch_add(1, Ordering::Relaxed);
            self.replenish();
        }
        if let Some(job) = self.jobs.remove(&id) {
            self.shared.resolve(&job.slot, result);
        }
        if self.mode == Mode::Draining && !self.has_queued() {
            self.retire_idle();
        }
    }

    fn on_exit(&mut self, uid: u64, status: ExitStatus, error: Option<String>, tail: String) {
        let Some(w) = self.workers.remove(&uid) else {
            return;
        };
        self.idle.retain(|&u| u != uid);
        self.shared.workers_alive.fetch_sub(1, Ordering::Relaxed);
        self.shared.set_pids(self.workers.values().map(|w| w.pid));
        if let Some(id) = w.current {
            self.shared.running.fetch_sub(1, Ordering::Relaxed);
            let retry = error.is_none()
                && self.mode != Mode::Stopping
                && self.jobs.get(&id).is_some_and(|j| {
                    j.retries_left > 0 && j.slot.is_pending() && j.frame.is_some()
                });
            if retry {
                // At-most-once is relaxed only where the caller asked.
                if let Some(job) = self.jobs.get_mut(&id) {
                    job.retries_left -= 1;
                    job.worker = None;
                }
                self.queue.push_front(id);
                self.shared.queued.fetch_add(1, Ordering::Relaxed);
                self.shared.retried.fetch_add(1, Ordering::Relaxed);
            } else if let Some(job) = self.jobs.remove(&id) {
                let err = match error {
                    Some(message) => Error::Protocol { message },
                    None if self.mode == Mode::Stopping => Error::Shutdown,
                    None => Error::WorkerDied {
                        pid: w.pid,
                        status,
                        stderr_tail: tail,
                    },
                };
                self.shared.resolve(&job.slot, Err(err));
            }
        }
        self.replenish();
    }

    /// How many workers the pool wants now: all of them, or with an idle
    /// timeout, enough for the work at hand but at least the minimum.
    fn desired_workers(&self) -> usize {
        match self.cfg.idle_timeout {
            None => self.cfg.workers,
            Some(_) => {
                let busy = self.shared.running.load(Ordering::Relaxed) + self.queued();
                busy.max(self.cfg.min_workers).min(self.cfg.workers)
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
                self.shared.queued.fetch_sub(1, Ordering::Relaxed);
                self.shared.resolve(&job.slot, Err(e.clone()));
            }
        }
    }

    fn dispatch(&mut self) {
        while !self.idle.is_empty() {
            let Some(id) = self.queue.pop_front() else {
                break;
            };
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            self.shared.queued.fetch_sub(1, Ordering::Relaxed);
            if !job.slot.is_pending() {
                // Cancelled; its Cancel command is still on the way.
                self.jobs.remove(&id);
                self.shared.cancelled.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let Some(uid) = self.idle.pop() else { break };
            let Some(w) = self.workers.get_mut(&uid) else {
                self.queue.push_front(id);
                self.shared.queued.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            // Keep a copy only if the job may have to run again.
            let frame = if job.retries_left > 0 {
                job.frame.clone().unwrap_or_default()
            } else {
                job.frame.take().unwrap_or_default()
            };
            let sent = w.link.frames.as_ref().map(|f| f.send(frame));
            if !matches!(sent, Some(Ok(()))) {
                // The worker is going away; it will be replaced.
                w.state = WorkerState::Leaving;
                self.queue.push_front(id);
                self.shared.queued.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            w.state = WorkerState::Busy;
            w.current = Some(id);
            job.worker = Some(uid);
            job.slot.release_queue_place();
            self.shared.running.fetch_add(1, Ordering::Relaxed);
            if let Some(timeout) = job.timeout {
                self.timer(
                    timeout,
                    Event::TimedOut {
                        uid,
                        job: id,
                        timeout,
                    },
                );
            }
        }
    }

    /// Closes the input of idle workers so they exit (graceful shutdown).
    fn retire_idle(&mut self) {
        if self.mode != Mode::Draining || self.has_queued() {
            return;
        }
        for uid in std::mem::take(&mut self.idle) {
            if let Some(w) = self.workers.get_mut(&uid) {
                w.state = WorkerState::Leaving;
                w.link.frames = None;
            }
        }
    }

    /// Closes a worker's input so it exits; used to recycle it.
    fn retire(&mut self, uid: u64) {
        if let Some(w) = self.workers.get_mut(&uid) {
            if w.current.is_none() {
                w.state = WorkerState::Leaving;
                w.link.frames = None;
            }
        }
        self.idle.retain(|&u| u != uid);
    }

    /// Kills busy workers over the memory limit, failing their jobs.
    fn on_memory_check(&mut self) {
        let Some(limit) = self.cfg.worker_memory_limit else {
            return;
        };
        let over: Vec<(u64, JobId, u64)> = self
            .workers
            .iter()
            .filter(|(_, w)| w.state == WorkerState::Busy)
            .filter_map(|(&uid, w)| {
                let rss = crate::sys::rss_bytes(w.pid)?;
                Some((uid, w.current?, rss)).filter(|_| rss > limit)
            })
            .collect();
        for (uid, id, rss) in over {
            if let Some(job) = self.jobs.get(&id) {
                let slot = job.slot.clone();
                self.shared
                    .resolve(&slot, Err(Error::MemoryLimit { limit, rss }));
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
                        .is_some_and(|w| w.idle_since.elapsed() >= timeout)
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
        for (_, job) in self.jobs.drain() {
            self.shared.resolve(&job.slot, Err(e.clone()));
        }
        let uids: Vec<u64> = self.workers.keys().copied().collect();
        for uid in uids {
            if let Some(w) = self.workers.get_mut(&uid) {
                w.state = WorkerState::Leaving;
                w.current = None;
                w.link.frames = None;
                if let Some(k) = w.link.kill.take() {
                    let _ = k.send(());
                }
            }
        }
        self.idle.clear();
        self.shared.running.store(0, Ordering::Relaxed);
    }

    fn protocol_violation(&mut self, uid: u64, message: String) {
        if let Some(w) = self.workers.get(&uid) {
            if let Some(id) = w.current {
                if let Some(job) = self.jobs.get(&id) {
                    let slot = job.slot.clone();
                    self.shared.resolve(&slot, Err(Error::Protocol { message }));
                }
            }
        }
        self.kill_worker(uid);
    }

    fn finish_job_slot(&self, slot: &Slot, r: Result<Encoded, Error>) {
        self.shared.resolve(slot, r);
    }

    fn timer(&self, after: Duration, ev: Event) {
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = events.send(ev);
        });
    }

    fn publish(&self) {
        if self.mode != Mode::Running {
            self.shared.accepting.store(false, Ordering::Release);
        }
    }
}

/// How often busy workers' memory is compared with the limit.
const MEMORY_POLL: Duration = Duration::from_millis(20);

fn backoff(failures: u32) -> Duration {
    if failures == 0 {
        Duration::ZERO
    } else {
        Duration::from_millis(50u64 << failures.min(6))
    }
}
