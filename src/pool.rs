//! `ProcessPoolExecutor` and its builder: the user-facing side of a pool.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, mpsc, oneshot};

use crate::config::{self, Config};
use crate::error::{Error, SerdeStage};
use crate::frame;
use crate::handle::{CancelLink, ItemStream, JobHandle, RawHandle};
use crate::msg::{Command, JobId, JobRequest};
use crate::options::JobOptions;
use crate::protocol;
use crate::slot::Slot;
use crate::stats::{PoolStats, Shared};
use crate::task::{self, StreamTask, Task};
use serde::Serialize;

/// A pool of worker processes that run [`Task`]s.
///
/// Built with [`ProcessPoolExecutor::builder`]. Cloning is cheap: every clone
/// is a handle to the same pool. The pool shuts down when
/// [`shutdown`](Self::shutdown) is called on any clone, or, killing its
/// workers, when the last clone is dropped.
///
/// # Runtime independence
///
/// A pool drives its worker pipes on a thread of its own (with a
/// single-threaded tokio runtime), not on the runtime that built it. So one
/// pool can be shared by many runtimes (for example a global pool used by
/// many `#[tokio::test]` functions) and by synchronous code
/// ([`JobHandle::blocking_wait`]); the runtime that built it may end first.
#[derive(Clone)]
pub struct ProcessPoolExecutor {
    inner: Arc<Inner>,
}

struct Inner {
    commands: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    max_frame: usize,
    workers: usize,
    jobs_per_worker: usize,
    queue_slots: Option<Arc<Semaphore>>,
    max_queued: usize,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(sem) = &self.queue_slots {
            sem.close();
        }
        let _ = self.commands.send(Command::Abandon);
    }
}

impl fmt::Debug for ProcessPoolExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessPoolExecutor")
            .field("workers", &self.inner.workers)
            .field("stats", &self.stats())
            .finish()
    }
}

impl ProcessPoolExecutor {
    /// A builder with default settings: one worker per available CPU,
    /// re-executing the current binary.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Submits a job and returns its handle at once, without awaiting
    /// anything.
    ///
    /// The task is serialized here, on the calling thread. Errors known at
    /// submit time resolve the handle immediately: [`Error::Shutdown`] after
    /// shutdown, [`Error::NotRegistered`] for a task type without
    /// [`register!`](crate::register), [`Error::Serialization`] for a task
    /// that fails to serialize, [`Error::Protocol`] for one larger than the
    /// maximum frame size, and [`Error::Overloaded`] when a bounded queue
    /// ([`Builder::max_queued`]) is full. No worker is involved in any of
    /// these.
    ///
    /// Jobs start in submission order, each on the first idle worker.
    /// Dropping the handle cancels the job; see [`JobHandle`].
    pub fn submit<T: Task>(&self, task: T) -> JobHandle<T::Output> {
        self.submit_with(task, JobOptions::default())
    }

    /// [`submit`](Self::submit) with per-job options, such as a timeout.
    pub fn submit_with<T: Task>(&self, task: T, options: JobOptions) -> JobHandle<T::Output> {
        let id = self.next_id();
        let raw = match self.queue_permit() {
            Ok(permit) => self.start(id, &task, options, permit),
            Err(e) => RawHandle::failed(id, e),
        };
        JobHandle::from_raw(raw)
    }

    /// Submits a job unless it would fail at once: returns the error instead
    /// of a handle that is already resolved with it. In particular, when a
    /// bounded queue is full this returns [`Error::Overloaded`] without
    /// waiting, for load shedding.
    ///
    /// # Errors
    ///
    /// [`Error::Overloaded`], [`Error::Shutdown`], [`Error::NotRegistered`],
    /// [`Error::Serialization`] or [`Error::Protocol`], as listed for
    /// [`submit`](Self::submit).
    pub fn try_submit<T: Task>(&self, task: T) -> Result<JobHandle<T::Output>, Error> {
        self.try_submit_with(task, JobOptions::default())
    }

    /// [`try_submit`](Self::try_submit) with per-job options.
    ///
    /// # Errors
    ///
    /// As [`try_submit`](Self::try_submit).
    pub fn try_submit_with<T: Task>(
        &self,
        task: T,
        options: JobOptions,
    ) -> Result<JobHandle<T::Output>, Error> {
        let id = self.next_id();
        let permit = self.queue_permit()?;
        self.try_start(id, &task, options, permit)
            .map(JobHandle::from_raw)
    }

    /// Submits a job, first waiting for room in a bounded queue
    /// ([`Builder::max_queued`]); without a bound it does not wait.
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped before it completes, the job was not
    /// submitted (and the task value is dropped with the future).
    pub async fn submit_wait<T: Task>(&self, task: T) -> JobHandle<T::Output> {
        self.submit_wait_with(task, JobOptions::default()).await
    }

    /// [`submit_wait`](Self::submit_wait) with per-job options.
    ///
    /// # Cancel safety
    ///
    /// As [`submit_wait`](Self::submit_wait).
    pub async fn submit_wait_with<T: Task>(
        &self,
        task: T,
        options: JobOptions,
    ) -> JobHandle<T::Output> {
        let permit = match self.queue_permit_wait().await {
            Ok(p) => p,
            Err(e) => return JobHandle::failed(self.next_id(), e),
        };
        let id = self.next_id();
        JobHandle::from_raw(self.start(id, &task, options, permit))
    }

    fn next_id(&self) -> JobId {
        JobId(self.inner.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// A place in a bounded queue, if there is a bound.
    fn queue_permit(&self) -> Result<Option<OwnedSemaphorePermit>, Error> {
        match &self.inner.queue_slots {
            None => Ok(None),
            Some(sem) => match sem.clone().try_acquire_owned() {
                Ok(p) => Ok(Some(p)),
                Err(TryAcquireError::NoPermits) => Err(Error::Overloaded {
                    capacity: self.inner.max_queued,
                }),
                Err(TryAcquireError::Closed) => Err(Error::Shutdown),
            },
        }
    }

    fn start<T: Task>(
        &self,
        id: JobId,
        task: &T,
        options: JobOptions,
        permit: Option<OwnedSemaphorePermit>,
    ) -> RawHandle {
        self.try_start(id, task, options, permit)
            .unwrap_or_else(|e| RawHandle::failed(id, e))
    }

    /// Encodes and queues a job; the error is one known at submit time.
    fn try_start<T: Task>(
        &self,
        id: JobId,
        task: &T,
        options: JobOptions,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<RawHandle, Error> {
        let (index, frame) = self.encode_job(id, task)?;
        self.enqueue(id, index, frame, options, permit)
    }

    /// Submits a [`StreamTask`]: returns the stream of the items it emits
    /// and the handle of its final output.
    ///
    /// The two share the job: dropping either before the job is over
    /// cancels it (call [`JobHandle::detach`] to consume only the items).
    /// Errors known at submit time resolve the handle at once and end the
    /// stream, as for [`submit`](Self::submit).
    pub fn submit_stream<T: StreamTask>(
        &self,
        task: T,
    ) -> (ItemStream<T::Item>, JobHandle<T::Output>) {
        let id = self.next_id();
        let (tx, rx) = mpsc::unbounded_channel();
        let encoded = self
            .queue_permit()
            .and_then(|permit| Ok((permit, self.encode_job(id, &task)?)));
        let link = CancelLink {
            commands: self.inner.commands.clone(),
        };
        let raw = encoded
            .and_then(|(permit, (index, frame))| {
                let slot = Slot::new_streaming(permit, self.inner.shared.clone(), tx);
                self.send_request(id, index, frame, JobOptions::default(), slot)
            })
            .unwrap_or_else(|e| RawHandle::failed(id, e));
        let stream = ItemStream::new(id, rx, raw.slot().clone(), link);
        (stream, JobHandle::from_raw(raw))
    }

    fn encode_job<T: Serialize + 'static>(
        &self,
        id: JobId,
        task: &T,
    ) -> Result<(u32, Vec<u8>), Error> {
        self.check_open()?;
        let encoded = task::index_of::<T>().and_then(|index| {
            let frame = encode_job_frame(id.0, index, task, self.inner.max_frame)?;
            Ok((index, frame))
        });
        encoded.inspect_err(|_| self.count_failed_at_submit())
    }

    /// Counts a job that failed at submit because of its task (it does not
    /// serialize, is too large for a frame, or its type is not registered)
    /// in `stats().failed`, once: no slot of the pool's ever holds it.
    fn count_failed_at_submit(&self) {
        self.inner.shared.failed.fetch_add(1, Ordering::Relaxed);
    }

    /// Submits `tasks` as one batch job: one frame, run one after another by
    /// one worker, first waiting for room in a bounded queue (as
    /// [`submit_wait`](Self::submit_wait) does). Used by `map` with a chunk
    /// size.
    pub(crate) async fn submit_batch_wait<T: Task>(
        &self,
        tasks: Vec<T>,
        options: JobOptions,
    ) -> RawHandle {
        let permit = match self.queue_permit_wait().await {
            Ok(p) => p,
            Err(e) => return RawHandle::failed(self.next_id(), e),
        };
        let id = self.next_id();
        let encoded = self.check_open().and_then(|()| {
            let index = task::index_of::<T>().inspect_err(|_| self.count_failed_at_submit())?;
            let mut buf = Vec::with_capacity(64 + 16 * tasks.len());
            let mut item = Vec::new();
            let max = self.inner.max_frame;
            frame::write_frame(&mut buf, max, |buf| {
                protocol::put_batch_header(buf, id.0, index, tasks.len() as u64);
                for t in &tasks {
                    item.clear();
                    frame::encode_into(t, &mut item, max).map_err(|e| encode_failure(t, e))?;
                    frame::put_varint(buf, item.len() as u64);
                    frame::reserve(buf, item.len());
                    buf.extend_from_slice(&item);
                }
                Ok::<(), JobFrameError>(())
            })
            .map_err(job_frame_error::<T>)
            .inspect_err(|_| self.count_failed_at_submit())?;
            Ok((index, buf))
        });
        encoded
            .and_then(|(index, frame)| self.enqueue(id, index, frame, options, permit))
            .unwrap_or_else(|e| RawHandle::failed(id, e))
    }

    /// A place in a bounded queue, waiting for one if it is full.
    async fn queue_permit_wait(&self) -> Result<Option<OwnedSemaphorePermit>, Error> {
        match &self.inner.queue_slots {
            Some(sem) => match sem.clone().acquire_owned().await {
                Ok(p) => Ok(Some(p)),
                Err(_) => Err(Error::Shutdown),
            },
            None => Ok(None),
        }
    }

    fn check_open(&self) -> Result<(), Error> {
        if self.inner.shared.accepting.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(Error::Shutdown)
        }
    }

    fn enqueue(
        &self,
        id: JobId,
        task: u32,
        frame: Vec<u8>,
        options: JobOptions,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<RawHandle, Error> {
        let slot = Slot::new(permit, self.inner.shared.clone());
        self.send_request(id, task, frame, options, slot)
    }

    fn send_request(
        &self,
        id: JobId,
        task: u32,
        frame: Vec<u8>,
        options: JobOptions,
        slot: Arc<Slot>,
    ) -> Result<RawHandle, Error> {
        let req = JobRequest {
            id,
            task,
            frame,
            slot: slot.clone(),
            options,
        };
        if self.inner.commands.send(Command::Submit(req)).is_err() {
            return Err(Error::Shutdown);
        }
        let link = CancelLink {
            commands: self.inner.commands.clone(),
        };
        Ok(RawHandle::new(id, slot, Some(link)))
    }

    /// Shuts the pool down gracefully, for every clone: new submissions fail
    /// with [`Error::Shutdown`], queued and running jobs finish, then the
    /// workers exit. Returns when they have.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the shutdown has begun when this is first polled and
    /// continues if the future is dropped.
    pub async fn shutdown(&self) {
        self.stop_accepting();
        let (done, wait) = oneshot::channel();
        if self.inner.commands.send(Command::Shutdown { done }).is_ok() {
            let _ = wait.await;
        }
    }

    /// Shuts down gracefully like [`shutdown`](Self::shutdown), but if jobs
    /// are still running after `grace`, stops like
    /// [`shutdown_now`](Self::shutdown_now): what is left is killed and
    /// resolves to [`Error::Shutdown`]. Returns when every worker has exited.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the shutdown continues if the future is dropped (but the
    /// deadline is then not enforced).
    pub async fn shutdown_timeout(&self, grace: Duration) {
        if tokio::time::timeout(grace, self.shutdown()).await.is_err() {
            self.shutdown_now().await;
        }
    }

    fn stop_accepting(&self) {
        self.inner.shared.accepting.store(false, Ordering::Release);
        if let Some(sem) = &self.inner.queue_slots {
            sem.close();
        }
    }

    /// Shuts the pool down at once, for every clone: queued jobs fail with
    /// [`Error::Shutdown`], running jobs are killed with their workers (and
    /// also resolve to [`Error::Shutdown`]). Returns when every worker has
    /// exited.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, like [`shutdown`](Self::shutdown).
    pub async fn shutdown_now(&self) {
        self.stop_accepting();
        let (done, wait) = oneshot::channel();
        if self
            .inner
            .commands
            .send(Command::ShutdownNow { done })
            .is_ok()
        {
            let _ = wait.await;
        }
    }

    /// Whether the pool has been shut down (by any clone).
    pub fn is_shutdown(&self) -> bool {
        !self.inner.shared.accepting.load(Ordering::Acquire)
    }

    /// The configured number of workers.
    pub fn workers(&self) -> usize {
        self.inner.workers
    }

    /// How many jobs each worker runs at once
    /// ([`Builder::jobs_per_worker`]).
    pub fn jobs_per_worker(&self) -> usize {
        self.inner.jobs_per_worker
    }

    /// The process ids of the live workers, in ascending order.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.inner.shared.pids()
    }

    /// A snapshot of the pool's counters.
    pub fn stats(&self) -> PoolStats {
        self.inner.shared.snapshot()
    }
}

/// Configures and builds a [`ProcessPoolExecutor`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until build() is awaited"]
pub struct Builder {
    cfg: Config,
}

impl Default for Builder {
    fn default() -> Self {
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        Builder {
            cfg: Config {
                workers,
                command: config::Command {
                    program: None,
                    args: Vec::new(),
                    envs: Vec::new(),
                    env_clear: false,
                    current_dir: None,
                },
                max_frame: config::DEFAULT_MAX_FRAME,
                handshake_timeout: Duration::from_secs(10),
                initializer_timeout: None,
                cancel_grace: Duration::from_millis(200),
                job_timeout: None,
                core_dumps: false,
                nice: None,
                forward_output: true,
                output: Default::default(),
                max_startup_failures: 5,
                max_startup_backoff: Duration::from_secs(2),
                max_queued: None,
                prefetch: 32,
                jobs_per_worker: 1,
                max_tasks_per_worker: None,
                max_worker_rss: None,
                worker_memory_limit: None,
                idle_timeout: None,
                min_workers: 0,
                initializer: None,
            },
        }
    }
}

impl Builder {
    /// Number of worker processes (default: `available_parallelism()`).
    pub fn workers(mut self, n: usize) -> Self {
        self.cfg.workers = n;
        self
    }

    /// The program to start as a worker (default: the running executable,
    /// via `/proc/self/exe` on Linux so a binary rebuilt on disk mid-run is
    /// not the one started). The program must be a build of the same code
    /// that calls [`init()`](crate::init) first; the handshake refuses
    /// anything else.
    pub fn program(mut self, program: impl Into<PathBuf>) -> Self {
        self.cfg.command.program = Some(program.into());
        self
    }

    /// Adds an argument to the worker command line.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.cfg.command.args.push(arg.into());
        self
    }

    /// Adds arguments to the worker command line.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.cfg
            .command
            .args
            .extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable for the workers (they inherit the host's
    /// environment otherwise).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.cfg.command.envs.push((key.into(), Some(value.into())));
        self
    }

    /// Removes an environment variable from the workers' environment.
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Self {
        self.cfg.command.envs.push((key.into(), None));
        self
    }

    /// Starts workers with an empty environment (plus what
    /// [`env`](Self::env) adds).
    pub fn env_clear(mut self) -> Self {
        self.cfg.command.env_clear = true;
        self
    }

    /// The workers' working directory (default: the host's).
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cfg.command.current_dir = Some(dir.into());
        self
    }

    /// The largest frame (one encoded task or output) either side accepts,
    /// checked before allocating. Default 1 GiB; at most 4 GiB - 1.
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.cfg.max_frame = bytes;
        self
    }

    /// How long a new worker may take to start and complete its handshake
    /// (default 10 s). The [initializer](Self::initializer) runs after the
    /// handshake and does not count; see
    /// [`initializer_timeout`](Self::initializer_timeout).
    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.cfg.handshake_timeout = d;
        self
    }

    /// How long the [initializer](Self::initializer) may run in a new
    /// worker (default: no limit, since an initializer may load a model for
    /// minutes). A worker whose initializer runs longer is killed and not
    /// used: `build()` fails with [`Error::Initializer`], and for a
    /// replacement it counts as a start-up failure
    /// ([`max_startup_failures`](Self::max_startup_failures)).
    pub fn initializer_timeout(mut self, d: Duration) -> Self {
        self.cfg.initializer_timeout = Some(d);
        self
    }

    /// How long a cancelled (or timed-out) running job may take to stop by
    /// itself before its worker is killed (default 200 ms).
    pub fn cancel_grace(mut self, d: Duration) -> Self {
        self.cfg.cancel_grace = d;
        self
    }

    /// A default timeout for every job, counted from when the job starts
    /// running (not while it waits in the queue). A job that runs longer
    /// resolves to [`Error::TimedOut`] and is stopped like a cancelled job:
    /// asked first (an [`AsyncTask`](crate::AsyncTask) is dropped), then,
    /// after the [grace period](Self::cancel_grace), its worker is killed
    /// and replaced. Default: none.
    pub fn job_timeout(mut self, d: Duration) -> Self {
        self.cfg.job_timeout = Some(d);
        self
    }

    /// Runs the workers at a lower scheduling priority: `nice` is added to
    /// their niceness (Unix; 1 to 19, higher is lower priority). For web
    /// backends, so that when the CPU is saturated the server's own threads
    /// (and its latency) win over the offloaded work. Default: the host's
    /// priority.
    pub fn worker_nice(mut self, nice: i32) -> Self {
        self.cfg.nice = Some(nice);
        self
    }

    /// Let crashing workers write core dumps (default: disabled with
    /// `RLIMIT_CORE = 0`, so crashing jobs do not fill a disk).
    pub fn core_dumps(mut self, enabled: bool) -> Self {
        self.cfg.core_dumps = enabled;
        self
    }

    /// Whether what workers write to stdout and stderr is re-emitted on the
    /// host's stderr, each line prefixed with `[procpool worker PID]`
    /// (default: true). The last lines are kept for
    /// [`Error::WorkerDied`] either way. While a `tracing` subscriber takes
    /// `procpool::worker_output` events, each line is such an event instead
    /// and is not written to stderr, whether this is on or off (see
    /// [Logs and tracing](crate#logs-and-tracing)).
    ///
    /// Lines are written by a thread of the pool's own, so a host stderr
    /// that blocks (a full pipe nobody reads) never stalls the pool. While
    /// it cannot keep up, a few thousand lines (at most 8 MiB) wait; lines
    /// beyond that are dropped and counted in
    /// [`PoolStats::output_lines_dropped`].
    pub fn forward_worker_output(mut self, forward: bool) -> Self {
        self.cfg.forward_output = forward;
        self
    }

    /// Bounds the queue of jobs waiting for a worker (default: unbounded,
    /// like Python's executor). When it is full,
    /// [`submit`](ProcessPoolExecutor::submit) resolves the handle with
    /// [`Error::Overloaded`], [`try_submit`](ProcessPoolExecutor::try_submit)
    /// returns that error, and [`submit_wait`](ProcessPoolExecutor::submit_wait)
    /// waits for room. Running jobs do not count.
    pub fn max_queued(mut self, n: usize) -> Self {
        self.cfg.max_queued = Some(n);
        self
    }

    /// How many jobs may wait inside each busy worker (one whose
    /// [`jobs_per_worker`](Self::jobs_per_worker) slots are all taken),
    /// sent ahead so it never waits for the host between jobs (default 32;
    /// 0 disables).
    /// Jobs are only sent ahead while no worker is idle, at most 1 MiB of
    /// small jobs (or one job of up to 16 MiB) per worker, and a job sent
    /// ahead is taken back (revoked) as soon as another worker is idle with
    /// nothing queued, so it does not wait behind a long job. A job sent
    /// ahead to a worker that dies before starting it is requeued, not
    /// failed; its timeout starts when it starts. Jobs sent ahead still
    /// count as queued in [`PoolStats`] and in [`max_queued`](Self::max_queued).
    pub fn prefetch(mut self, n: usize) -> Self {
        self.cfg.prefetch = n;
        self
    }

    /// How many jobs each worker runs at once (default 1; 0 is rejected by
    /// [`build`](Self::build) with [`Error::Config`]).
    ///
    /// Raise it for [`AsyncTask`](crate::AsyncTask)s that mostly wait (on
    /// the network, on a subprocess): a worker then polls up to `n` of them
    /// concurrently on its runtime, so `workers(2).jobs_per_worker(32)`
    /// keeps 64 requests in flight from two processes. Blocking [`Task`]s
    /// also run `n` at a time, each on its own thread in the worker; for
    /// CPU-bound work keep the default and size the pool with
    /// [`workers`](Self::workers) instead.
    ///
    /// A worker that dies or is killed fails every job running on it, so a
    /// task that must be stopped by force (it ignores its cancel past the
    /// [grace period](Self::cancel_grace)) takes the others on its worker
    /// down too. Async tasks are stopped without a kill: their future is
    /// dropped at its next `.await`.
    pub fn jobs_per_worker(mut self, n: usize) -> Self {
        self.cfg.jobs_per_worker = n;
        self
    }

    /// Replaces a worker after it has run `n` jobs (Python's
    /// `max_tasks_per_child`), for leaky native libraries (0 is rejected by
    /// [`build`](Self::build) with [`Error::Config`]). The replacement
    /// starts at once; no job waits for it if another worker is idle.
    pub fn max_tasks_per_worker(mut self, n: u64) -> Self {
        self.cfg.max_tasks_per_worker = Some(n);
        self
    }

    /// Replaces a worker whose resident memory (RSS) is above `bytes` after
    /// a job, for jobs that leak or fragment memory (Linux; read from
    /// `/proc`). The job itself is not affected.
    pub fn max_worker_rss(mut self, bytes: u64) -> Self {
        self.cfg.max_worker_rss = Some(bytes);
        self
    }

    /// Limits each worker's resident memory (RSS) while it runs a job: a
    /// worker above `bytes` is killed and replaced, and its job fails with
    /// [`Error::MemoryLimit`] (with [`jobs_per_worker`](Self::jobs_per_worker)
    /// above one, every job running on it does). The host polls `/proc` every 20 ms (Linux),
    /// so a job that allocates very fast can overshoot briefly; this guards
    /// against runaway jobs, it is not a hard cap (use cgroups for that).
    /// Unlike `RLIMIT_AS`, it does not break allocators that reserve large
    /// address ranges, and the job fails with an error that says why.
    pub fn worker_memory_limit(mut self, bytes: u64) -> Self {
        self.cfg.worker_memory_limit = Some(bytes);
        self
    }

    /// Lets workers beyond [`min_workers`](Self::min_workers) exit after
    /// being idle for `d`; they are started again on demand (costing a
    /// process start, a few milliseconds, to the job that needs one). For
    /// mostly idle services. Default: workers never idle out.
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.cfg.idle_timeout = Some(d);
        self
    }

    /// With [`idle_timeout`](Self::idle_timeout), how many workers stay
    /// alive however idle the pool is (default 0). `build()` still starts
    /// [`workers`](Self::workers) of them.
    pub fn min_workers(mut self, n: usize) -> Self {
        self.cfg.min_workers = n;
        self
    }

    /// A registered task run once in every worker, before it takes jobs
    /// (Python's `initializer`/`initargs`), for example to load a model.
    /// Every new worker (including replacements) runs it again. If it
    /// panics or fails (or runs longer than
    /// [`initializer_timeout`](Self::initializer_timeout)), the worker is
    /// not used: `build()` fails with
    /// [`Error::Initializer`], and a replacement that fails counts as a
    /// start-up failure.
    ///
    /// # Errors
    ///
    /// The error is reported by [`build`](Self::build):
    /// [`Error::NotRegistered`] if the task type is not registered,
    /// [`Error::Serialization`] if it does not serialize.
    pub fn initializer<T: Task>(mut self, task: T) -> Self {
        let encoded = task::index_of::<T>()
            .and_then(|index| encode_job_frame(0, index, &task, self.cfg.max_frame));
        self.cfg.initializer = Some(encoded.map(|frame| config::Initializer {
            frame,
            type_name: std::any::type_name::<T>(),
        }));
        self
    }

    /// How many times in a row new workers may fail to start (before their
    /// handshake completes, or in the initializer) before, with no worker
    /// left serving, queued and new jobs fail at once with
    /// [`Error::Spawn`] (default 5; at least 1). The pool keeps trying to
    /// start workers (see [`max_startup_backoff`](Self::max_startup_backoff))
    /// and serves again as soon as one starts. Workers that die while
    /// serving jobs never count.
    pub fn max_startup_failures(mut self, n: u32) -> Self {
        self.cfg.max_startup_failures = n;
        self
    }

    /// The longest wait between two attempts to start a worker while
    /// start-ups keep failing (default 2 s). The first retry comes after
    /// 50 ms, and the wait doubles with each failure in a row up to this.
    /// The pool never gives up for good: it keeps trying at this pace and
    /// serves again as soon as a worker starts.
    pub fn max_startup_backoff(mut self, d: Duration) -> Self {
        self.cfg.max_startup_backoff = d;
        self
    }

    /// Starts the workers and waits until every one has completed its
    /// handshake.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] if a worker cannot be started (it is not retried in
    /// a loop), [`Error::MissingInit`] if the worker program does not call
    /// [`init()`](crate::init), [`Error::Protocol`] if a worker is a
    /// different build or prints to stdout before its handshake,
    /// [`Error::DuplicateRegistration`] and [`Error::Config`] for problems
    /// in the binary or the settings.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes stops the workers started so
    /// far.
    pub async fn build(self) -> Result<ProcessPoolExecutor, Error> {
        crate::worker::refuse_pool_in_unguarded_worker();
        task::check()?;
        let mut cfg = self.cfg;
        if let Some(Err(e)) = &cfg.initializer {
            return Err(e.clone());
        }
        validate(&cfg)?;
        let shared = Shared::default();
        // Each pool its own forwarder, even if the builder was cloned.
        cfg.output = crate::output::OutputForwarder::new(shared.output_lines_dropped.clone());
        let shared = Arc::new(shared);
        let (commands, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let workers = cfg.workers;
        let max_frame = cfg.max_frame;
        let jobs_per_worker = cfg.jobs_per_worker;
        let max_queued = cfg.max_queued.unwrap_or(usize::MAX);
        let queue_slots = cfg
            .max_queued
            .map(|n| Arc::new(Semaphore::new(n.min(Semaphore::MAX_PERMITS))));
        let cfg = Arc::new(cfg);
        let thread_shared = shared.clone();
        // The pool's thread logs to the builder's `tracing` subscriber, even
        // one set with `with_default` (none set: the global one, if any).
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        // A long-lived thread of our own: it owns the children (Linux's
        // parent-death signal follows the spawning thread) and their pipes.
        std::thread::Builder::new()
            .name("procpool".into())
            .spawn(move || {
                let _logs = (!dispatch.is::<tracing::subscriber::NoSubscriber>())
                    .then(|| tracing::dispatcher::set_default(&dispatch));
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match rt {
                    Ok(rt) => {
                        rt.block_on(crate::host::driver::run(cfg, thread_shared, rx, ready_tx))
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(Error::Spawn {
                            message: format!("could not start the pool's runtime: {e}"),
                        }));
                    }
                }
            })
            .map_err(|e| Error::Spawn {
                message: format!("could not start the pool's thread: {e}"),
            })?;
        let pool = ProcessPoolExecutor {
            inner: Arc::new(Inner {
                commands,
                shared,
                next_id: AtomicU64::new(0),
                max_frame,
                workers,
                jobs_per_worker,
                queue_slots,
                max_queued,
            }),
        };
        match ready_rx.await {
            Ok(Ok(())) => Ok(pool),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Spawn {
                message: "the pool's thread ended during start-up".into(),
            }),
        }
    }

    /// [`build`](Self::build) for synchronous code: blocks the thread until
    /// the pool is ready.
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build).
    ///
    /// # Panics
    ///
    /// Panics if called from within a tokio runtime thread; use `build().await`
    /// there.
    pub fn build_blocking(self) -> Result<ProcessPoolExecutor, Error> {
        if tokio::runtime::Handle::try_current().is_ok() {
            panic!("Builder::build_blocking called from within a tokio runtime; use build().await");
        }
        futures::executor::block_on(self.build())
    }
}

/// The one check of a builder's settings: a zero that makes no sense, or
/// a size out of range, is [`Error::Config`].
fn validate(cfg: &Config) -> Result<(), Error> {
    let zero = |what: &str| {
        Err(Error::Config {
            message: format!("{what} must be at least 1, not 0"),
        })
    };
    if cfg.workers == 0 {
        return zero("workers (a pool needs at least one worker)");
    }
    if cfg.jobs_per_worker == 0 {
        return zero("jobs_per_worker");
    }
    if cfg.max_tasks_per_worker == Some(0) {
        return zero("max_tasks_per_worker");
    }
    if cfg.max_startup_failures == 0 {
        return zero("max_startup_failures");
    }
    if cfg.min_workers > cfg.workers {
        return Err(Error::Config {
            message: format!(
                "min_workers ({}) must not exceed workers ({})",
                cfg.min_workers, cfg.workers
            ),
        });
    }
    if cfg.max_frame < 64 || u32::try_from(cfg.max_frame).is_err() {
        return Err(Error::Config {
            message: format!(
                "max_frame_size must be between 64 bytes and 4 GiB - 1, not {}",
                cfg.max_frame
            ),
        });
    }
    Ok(())
}

/// Why a job frame could not be built: the task did not serialize (with
/// the message that says where), its encoding passed the maximum frame
/// size, or the frame is over it.
enum JobFrameError {
    Encode(String),
    TooLarge(frame::EncodeError),
    Frame(frame::FrameError),
}

impl From<frame::FrameError> for JobFrameError {
    fn from(e: frame::FrameError) -> Self {
        JobFrameError::Frame(e)
    }
}

/// Why `task` failed to encode with `e` (the diagnosis runs only now that
/// it failed).
fn encode_failure<T: Serialize + ?Sized>(task: &T, e: frame::EncodeError) -> JobFrameError {
    match e {
        frame::EncodeError::Serde(_) => JobFrameError::Encode(task::encode_message(task, &e)),
        frame::EncodeError::TooLarge { .. } => JobFrameError::TooLarge(e),
    }
}

/// The error a user sees for a job frame of task type `T` that could not be
/// built.
fn job_frame_error<T>(e: JobFrameError) -> Error {
    match e {
        JobFrameError::Encode(message) => Error::Serialization {
            stage: SerdeStage::EncodeTask,
            type_name: std::any::type_name::<T>().to_owned(),
            message,
        },
        JobFrameError::TooLarge(e) => Error::Protocol {
            message: format!(
                "the task `{}` is too large: {e}",
                std::any::type_name::<T>()
            ),
        },
        JobFrameError::Frame(e) => Error::Protocol {
            message: format!(
                "the task `{}` is too large: {e}",
                std::any::type_name::<T>()
            ),
        },
    }
}

/// The complete frame of job `id` for the task at registry `index`.
fn encode_job_frame<T: Serialize>(
    id: u64,
    index: u32,
    task: &T,
    max: usize,
) -> Result<Vec<u8>, Error> {
    let mut buf = Vec::with_capacity(64);
    frame::write_frame(&mut buf, max, |buf| {
        protocol::put_job_header(buf, id, index);
        frame::encode_into(task, buf, max).map_err(|e| encode_failure(task, e))
    })
    .map_err(job_frame_error::<T>)?;
    Ok(buf)
}
