//! The driver: the pool thread's loop. It owns the processes, pipes, timers
//! and `/proc` reads, feeds the [`Core`] and carries out its actions.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::core::{Action, Control, Core, Input, NewJob, Settings, WorkerId};
use crate::config::Config;
use crate::error::{Error, stage_error};
use crate::msg::{Command, JobId, JobRequest};
use crate::process::{self, Link, OutFrame, WorkerEvent};
use crate::protocol::{self, FromWorker};
use crate::slot::{Encoded, Slot};
use crate::stats::Shared;

/// How often busy workers' memory is compared with the limit.
const MEMORY_POLL: Duration = Duration::from_millis(20);

/// What worker links and spawn tasks report.
enum Event {
    Worker {
        worker: WorkerId,
        event: WorkerEvent,
    },
    Spawned {
        worker: WorkerId,
        result: Box<Result<process::Spawned, Error>>,
    },
}

/// What the driver keeps of a job, in the core's job table: its slot, and
/// its frame until the job no longer needs it.
struct Entry {
    slot: Arc<Slot>,
    frame: Option<Arc<Vec<u8>>>,
    task: u32,
    span: tracing::Span,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("task", &self.task)
            .finish_non_exhaustive()
    }
}

/// The core, with a last resort: if the pool thread ever unwinds, dropping
/// it resolves every pending handle with [`Error::PoolCrashed`], so none is
/// left hanging, and the pool stops accepting jobs.
struct Guarded {
    core: Core<Entry>,
    shared: Arc<Shared>,
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        self.shared.accepting.store(false, Ordering::Release);
        for e in self.core.payloads() {
            e.slot.resolve(Err(Error::PoolCrashed {
                message: "the pool's thread panicked".into(),
            }));
        }
    }
}

impl std::ops::Deref for Guarded {
    type Target = Core<Entry>;
    fn deref(&self) -> &Core<Entry> {
        &self.core
    }
}

impl std::ops::DerefMut for Guarded {
    fn deref_mut(&mut self) -> &mut Core<Entry> {
        &mut self.core
    }
}

struct WorkerLink {
    pid: u32,
    link: Link,
}

struct Driver {
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    core: Guarded,
    links: HashMap<WorkerId, WorkerLink>,
    events: mpsc::UnboundedSender<Event>,
    waiters: Vec<oneshot::Sender<()>>,
    /// The time of the batch of inputs being handled (one clock read per
    /// batch).
    now: Instant,
}

/// Runs a pool: starts its workers, reports the outcome on `ready`, then
/// serves commands until the pool is shut down or dropped.
pub(crate) async fn run(
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    ready: oneshot::Sender<Result<(), Error>>,
) {
    let (events, mut events_rx) = mpsc::unbounded_channel();
    let mut d = Driver {
        core: Guarded {
            core: Core::new(Settings::from_config(&cfg), Instant::now()),
            shared: shared.clone(),
        },
        cfg,
        shared,
        links: HashMap::new(),
        events,
        waiters: Vec::new(),
        now: Instant::now(),
    };
    if let Err(e) = d.start().await {
        let _ = ready.send(Err(e));
        return;
    }
    if ready.send(Ok(())).is_err() {
        // Nobody awaits the pool any more.
        d.handle(Input::ShutdownNow);
    }

    let sleep = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(sleep);
    let mut armed: Option<Instant> = None;
    let mut memory = tokio::time::interval(MEMORY_POLL);
    memory.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let watch_memory = d.cfg.worker_memory_limit.is_some();
    let mut commands_open = true;
    loop {
        d.apply_actions();
        if d.core.is_finished() {
            break;
        }
        let deadline = d.core.poll_timeout();
        if deadline != armed {
            if let Some(at) = deadline {
                sleep.as_mut().reset(tokio::time::Instant::from_std(at));
            }
            armed = deadline;
        }
        enum Woken {
            Command(Option<Command>),
            Event(Event),
            Timer,
            Memory,
        }
        let woken = tokio::select! {
            cmd = commands.recv(), if commands_open => Woken::Command(cmd),
            Some(ev) = events_rx.recv() => Woken::Event(ev),
            () = &mut sleep, if armed.is_some() => Woken::Timer,
            _ = memory.tick(), if watch_memory => Woken::Memory,
        };
        d.now = Instant::now();
        match woken {
            Woken::Command(Some(cmd)) => d.on_command(cmd),
            Woken::Command(None) => {
                commands_open = false;
                d.handle(Input::ShutdownNow);
            }
            Woken::Event(ev) => d.on_event(ev),
            Woken::Timer => {
                armed = None;
                d.core.handle_timeout(d.now);
            }
            Woken::Memory => d.sample_memory(),
        }
        // Take what else is ready before acting once.
        for _ in 0..256 {
            if !commands_open {
                break;
            }
            match commands.try_recv() {
                Ok(cmd) => d.on_command(cmd),
                Err(_) => break,
            }
        }
        while let Ok(ev) = events_rx.try_recv() {
            d.on_event(ev);
        }
    }
    d.core.flush();
    d.publish();
    for w in d.waiters.drain(..) {
        let _ = w.send(());
    }
}

impl Driver {
    fn handle(&mut self, input: Input<Entry>) {
        self.core.handle(self.now, input);
    }

    /// Starts the first workers, all at once; fails if any cannot start
    /// (reaping those that did).
    async fn start(&mut self) -> Result<(), Error> {
        let mut ids = Vec::new();
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::Spawn(w) => ids.push(w),
                other => debug_assert!(false, "{other:?} before start"),
            }
        }
        let starts = ids.iter().map(|_| process::spawn(&self.cfg));
        let results = futures::future::join_all(starts).await;
        if let Some(e) = results.iter().find_map(|r| r.as_ref().err()).cloned() {
            let discards = results.into_iter().flatten().map(process::Spawned::discard);
            futures::future::join_all(discards).await;
            return Err(e);
        }
        self.now = Instant::now();
        for (w, r) in ids.into_iter().zip(results) {
            if let Ok(spawned) = r {
                self.attach(w, spawned);
            }
        }
        Ok(())
    }

    /// Starts the I/O of a worker that completed its start-up.
    fn attach(&mut self, worker: WorkerId, spawned: process::Spawned) {
        let pid = spawned.pid;
        let events = self.events.clone();
        let link = process::start_io(spawned, move |event| {
            let _ = events.send(Event::Worker { worker, event });
        });
        self.links.insert(worker, WorkerLink { pid, link });
        self.shared.set_pids(self.links.values().map(|l| l.pid));
        self.handle(Input::Spawned {
            worker,
            result: Ok(pid),
        });
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Submit(req) => self.on_submit(req),
            Command::Cancel(id) => self.handle(Input::Cancel(id)),
            Command::Credit(id, n) => self.handle(Input::Credit(id, n)),
            Command::Shutdown { done } => {
                self.waiters.push(done);
                self.handle(Input::Shutdown);
            }
            Command::ShutdownNow { done } => {
                self.waiters.push(done);
                self.handle(Input::ShutdownNow);
            }
            Command::Abandon => self.handle(Input::ShutdownNow),
        }
    }

    fn on_submit(&mut self, req: JobRequest) {
        let JobRequest {
            id,
            task,
            frame,
            slot,
            options,
        } = req;
        let span = tracing::debug_span!(
            "procpool.job",
            id = id.0,
            task = %crate::task::type_name_at(task)
        );
        span.in_scope(|| tracing::trace!("queued"));
        let new = NewJob {
            id,
            size: frame.len(),
            timeout: options.timeout,
            retries: options.retries,
            payload: Entry {
                slot,
                frame: Some(Arc::new(frame)),
                task,
                span,
            },
        };
        self.handle(Input::Submit(new));
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Spawned { worker, result } => match *result {
                Ok(spawned) => self.attach(worker, spawned),
                Err(e) => self.handle(Input::Spawned {
                    worker,
                    result: Err(e),
                }),
            },
            Event::Worker { worker, event } => match event {
                WorkerEvent::Message(msg) => self.on_message(worker, msg),
                WorkerEvent::Exited {
                    status,
                    error,
                    stderr_tail,
                } => {
                    self.links.remove(&worker);
                    self.shared.set_pids(self.links.values().map(|l| l.pid));
                    self.handle(Input::Exited {
                        worker,
                        status,
                        error,
                        tail: stderr_tail,
                    });
                }
            },
        }
    }

    /// Turns a worker's message into the core's input; items and progress
    /// go straight to the job's slot.
    fn on_message(&mut self, worker: WorkerId, msg: FromWorker) {
        if let (FromWorker::Panicked { ending: true, .. }, Some(l)) =
            (&msg, self.links.get_mut(&worker))
        {
            // The worker ends with this panic (`panic = "abort"`): send it
            // nothing more, so a job dispatched to it now is requeued.
            l.link.frames = None;
        }
        // A worker recycled by memory is judged right after each result.
        let rss = || {
            self.cfg.max_worker_rss?;
            crate::sys::rss_bytes(self.links.get(&worker)?.pid)
        };
        let finished = |job: u64, result| Input::Finished {
            worker,
            job: JobId(job),
            result,
            rss: rss(),
        };
        let input = match msg {
            FromWorker::Done { id, body, offset } => finished(id, Ok(Encoded { body, offset })),
            FromWorker::Panicked {
                id,
                message,
                location,
                ..
            } => finished(id, Err(Error::Panicked { message, location })),
            FromWorker::Cancelled { id } => finished(id, Err(Error::Cancelled)),
            FromWorker::Failed { id, stage, message } => {
                let task = self.core.payload(JobId(id)).map(|e| e.task);
                let type_name = task.map(crate::task::type_name_at).unwrap_or_default();
                finished(id, Err(stage_error(stage, &type_name, message)))
            }
            FromWorker::Started { id } => Input::Started {
                worker,
                job: JobId(id),
            },
            FromWorker::Revoked { id } => Input::Revoked {
                worker,
                job: JobId(id),
            },
            FromWorker::Hello { .. } => Input::Violation {
                worker,
                message: "the worker sent a second handshake".into(),
            },
            FromWorker::Item { id, body, offset } => {
                if let Some(e) = self.core.payload_on(worker, JobId(id)) {
                    e.slot.push_item(Encoded { body, offset });
                }
                return;
            }
            FromWorker::Progress {
                id,
                done,
                total,
                message,
            } => {
                if let Some(e) = self.core.payload_on(worker, JobId(id)) {
                    let p = crate::progress::Progress::new(done, total, message);
                    e.slot.set_progress(p);
                }
                return;
            }
        };
        self.handle(input);
    }

    /// Samples the memory of the workers that run jobs.
    fn sample_memory(&mut self) {
        let samples: Vec<(WorkerId, u64)> = self
            .core
            .busy_workers()
            .filter_map(|(w, pid)| Some((w, crate::sys::rss_bytes(pid)?)))
            .collect();
        for (worker, rss) in samples {
            self.handle(Input::MemorySample { worker, rss });
        }
    }

    /// Carries out the core's actions (and the inputs they cause) until it
    /// has none left.
    fn apply_actions(&mut self) {
        // Counters first, so `stats()` read right after a handle resolves
        // is current.
        self.core.flush();
        self.publish();
        let mut failed = Vec::new();
        loop {
            while let Some(action) = self.core.poll_action() {
                self.apply(action, &mut failed);
            }
            if failed.is_empty() {
                break;
            }
            for (worker, job) in failed.drain(..) {
                self.handle(Input::SendFailed { worker, job });
            }
            self.core.flush();
            self.publish();
        }
    }

    fn apply(&mut self, action: Action<Entry>, failed: &mut Vec<(WorkerId, JobId)>) {
        match action {
            Action::Spawn(worker) => {
                let cfg = self.cfg.clone();
                let events = self.events.clone();
                tokio::spawn(async move {
                    let result = Box::new(process::spawn(&cfg).await);
                    let _ = events.send(Event::Spawned { worker, result });
                });
            }
            Action::SendJob {
                worker,
                job,
                ahead,
                keep,
            } => {
                if !self.send_job(worker, job, ahead, keep) {
                    failed.push((worker, job));
                }
            }
            Action::Send { worker, msg } => self.send_control(worker, msg),
            Action::Started { worker, job, keep } => {
                if let Some(e) = self.core.payload_mut(job) {
                    if !keep {
                        e.frame = None;
                    }
                    started(e);
                }
                self.current_job(worker, job.0);
            }
            Action::Close(worker) => {
                if let Some(l) = self.links.get_mut(&worker) {
                    l.link.frames = None;
                }
            }
            Action::Kill(worker) => {
                if let Some(l) = self.links.get_mut(&worker) {
                    l.link.frames = None;
                    if let Some(k) = l.link.kill.take() {
                        let _ = k.send(());
                    }
                }
            }
            Action::Resolve { job } => {
                if let Some((e, result)) = self.core.take_answer(job) {
                    deliver(e, result);
                }
            }
            Action::Release {
                job,
                worker,
                result,
                payload,
            } => {
                if let Some(result) = result {
                    deliver(&payload, result);
                }
                // Never leave a handle pending (its result was given, or it
                // was cancelled; this only guards against a bug).
                if payload.slot.is_pending() {
                    debug_assert!(false, "{job} released unresolved");
                    payload.slot.resolve(Err(Error::Shutdown));
                }
                if let Some(w) = worker {
                    self.current_job(w, 0);
                }
            }
        }
    }

    /// With one job per worker, the worker's output lines name the job it
    /// runs (0: none).
    fn current_job(&self, worker: WorkerId, job: u64) {
        if let (1, Some(l)) = (self.cfg.jobs_per_worker, self.links.get(&worker)) {
            l.link.current_job.store(job, Ordering::Relaxed);
        }
    }

    /// Hands a job's frame to the worker's link; false (frame kept) if the
    /// link is gone.
    fn send_job(&mut self, worker: WorkerId, job: JobId, ahead: bool, keep: bool) -> bool {
        let tx = self.links.get(&worker).and_then(|l| l.link.frames.as_ref());
        let Some(e) = self.core.core.payload_mut(job) else {
            return true;
        };
        let bytes = if keep {
            e.frame.clone()
        } else {
            e.frame.take()
        };
        let Some(bytes) = bytes else {
            debug_assert!(false, "{job}'s frame is gone");
            return false;
        };
        let Some(tx) = tx else {
            e.frame = Some(bytes);
            return false;
        };
        if let Err(back) = tx.send(OutFrame { bytes, ahead }) {
            e.frame = Some(back.0.bytes);
            return false;
        }
        e.span
            .in_scope(|| tracing::debug!(%worker, ahead, "dispatched"));
        if !ahead {
            started(e);
            self.current_job(worker, job.0);
        }
        true
    }

    fn send_control(&self, worker: WorkerId, msg: Control) {
        let Some(tx) = self.links.get(&worker).and_then(|l| l.link.frames.as_ref()) else {
            return;
        };
        let frame = crate::frame::build(24, usize::MAX, |f| match msg {
            Control::Cancel(id) => protocol::put_cancel(f, id.0),
            Control::Revoke(id) => protocol::put_revoke(f, id.0),
            Control::Credit(id, n) => protocol::put_credit(f, id.0, n),
        });
        if let Ok(bytes) = frame {
            let _ = tx.send(OutFrame {
                bytes: Arc::new(bytes),
                ahead: false,
            });
        }
    }

    fn publish(&self) {
        let s = self.core.stats();
        let sh = &self.shared;
        sh.queued.store(s.queued, Ordering::Relaxed);
        sh.running.store(s.running, Ordering::Relaxed);
        sh.workers_alive.store(s.workers_alive, Ordering::Relaxed);
        sh.respawns.store(s.respawns, Ordering::Relaxed);
        sh.recycled.store(s.recycled, Ordering::Relaxed);
        sh.retried.store(s.retried, Ordering::Relaxed);
        if !self.core.is_accepting() {
            sh.accepting.store(false, Ordering::Release);
        }
    }
}

/// A job started: it gives back its place in a bounded queue.
fn started(e: &Entry) {
    e.slot.release_queue_place();
    e.span.in_scope(|| tracing::debug!("started"));
}

/// Gives a job's handle its result.
fn deliver(e: &Entry, result: crate::slot::RawResult) {
    e.span.in_scope(|| match &result {
        Ok(_) => tracing::debug!(ok = true, "finished"),
        Err(err) => tracing::debug!(ok = false, error = %err, "finished"),
    });
    e.slot.resolve(result);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defect 8: a panic on the pool thread left every pending handle
    /// hanging. The guarded core resolves them as it unwinds.
    #[test]
    fn a_panic_on_the_pool_thread_resolves_pending_handles() {
        let shared = Arc::new(Shared::default());
        let slot = Slot::new(None, shared.clone());
        let kept = slot.clone();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let set = Settings::for_tests(1);
            let mut guarded = Guarded {
                core: Core::new(set, Instant::now()),
                shared: shared.clone(),
            };
            let new = NewJob {
                id: JobId(1),
                size: 10,
                timeout: None,
                retries: 0,
                payload: Entry {
                    slot,
                    frame: None,
                    task: 0,
                    span: tracing::Span::none(),
                },
            };
            guarded.handle(Instant::now(), Input::Submit(new));
            panic!("a bug");
        }));
        assert!(r.is_err());
        assert!(!kept.is_pending(), "the handle was left pending");
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        match kept.poll_result(&mut cx) {
            std::task::Poll::Ready(Err(Error::PoolCrashed { .. })) => {}
            _ => panic!("expected PoolCrashed"),
        }
        assert!(!shared.accepting.load(Ordering::Acquire));
    }
}
