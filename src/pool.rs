//! `ProcessPoolExecutor` and its builder: the user-facing side of a pool.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::config::{self, Config};
use crate::error::{Error, SerdeStage};
use crate::frame;
use crate::handle::{CancelLink, JobHandle, JobId, Slot};
use crate::protocol;
use crate::scheduler::{self, Command, JobRequest};
use crate::stats::{PoolStats, Shared};
use crate::task::{self, Task};

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
}

impl Drop for Inner {
    fn drop(&mut self) {
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
    /// maximum frame size. No worker is involved in any of these.
    ///
    /// Jobs start in submission order, each on the first idle worker.
    /// Dropping the handle cancels the job; see [`JobHandle`].
    pub fn submit<T: Task>(&self, task: T) -> JobHandle<T::Output> {
        let id = JobId(self.inner.next_id.fetch_add(1, Ordering::Relaxed) + 1);
        match self.prepare(id, &task) {
            Ok((index, frame)) => self.enqueue(id, index, frame, None),
            Err(e) => JobHandle::failed(id, e),
        }
    }

    fn prepare<T: Task>(&self, id: JobId, task: &T) -> Result<(u32, Vec<u8>), Error> {
        if !self.inner.shared.accepting.load(Ordering::Acquire) {
            return Err(Error::Shutdown);
        }
        let index = task::index_of::<T>()?;
        let mut buf = Vec::with_capacity(64);
        frame::begin(&mut buf);
        protocol::put_job_header(&mut buf, id.0, index);
        let buf = postcard::to_extend(task, buf).map_err(|e| Error::Serialization {
            stage: SerdeStage::EncodeTask,
            type_name: std::any::type_name::<T>().to_owned(),
            message: e.to_string(),
        })?;
        let mut buf = buf;
        frame::finish(&mut buf, self.inner.max_frame).map_err(|e| Error::Protocol {
            message: format!(
                "the task `{}` is too large: {e}",
                std::any::type_name::<T>()
            ),
        })?;
        Ok((index, buf))
    }

    fn enqueue<O>(
        &self,
        id: JobId,
        task: u32,
        frame: Vec<u8>,
        timeout: Option<Duration>,
    ) -> JobHandle<O> {
        let slot = Slot::new();
        let req = JobRequest {
            id,
            task,
            frame,
            slot: slot.clone(),
            timeout,
        };
        if self.inner.commands.send(Command::Submit(req)).is_err() {
            return JobHandle::failed(id, Error::Shutdown);
        }
        let link = CancelLink {
            commands: self.inner.commands.clone(),
        };
        JobHandle::new(id, slot, Some(link))
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
        self.inner.shared.accepting.store(false, Ordering::Release);
        let (done, wait) = oneshot::channel();
        if self.inner.commands.send(Command::Shutdown { done }).is_ok() {
            let _ = wait.await;
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
        self.inner.shared.accepting.store(false, Ordering::Release);
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
                cancel_grace: Duration::from_millis(200),
                job_timeout: None,
                core_dumps: false,
                forward_output: true,
                max_startup_failures: 5,
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
    /// (default 10 s).
    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.cfg.handshake_timeout = d;
        self
    }

    /// How long a cancelled running job may take to stop by itself before
    /// its worker is killed (default 200 ms).
    pub fn cancel_grace(mut self, d: Duration) -> Self {
        self.cfg.cancel_grace = d;
        self
    }

    /// A default timeout for every job, counted from when the job starts
    /// running (not while it waits in the queue). A job that runs longer
    /// resolves to [`Error::TimedOut`] and its worker is killed and
    /// replaced. Default: none.
    pub fn job_timeout(mut self, d: Duration) -> Self {
        self.cfg.job_timeout = Some(d);
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
    /// [`Error::WorkerDied`] either way.
    pub fn forward_worker_output(mut self, forward: bool) -> Self {
        self.cfg.forward_output = forward;
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
        let cfg = self.cfg;
        if cfg.workers == 0 {
            return Err(Error::Config {
                message: "a pool needs at least one worker".into(),
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
        let shared = Arc::new(Shared::default());
        let (commands, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let workers = cfg.workers;
        let max_frame = cfg.max_frame;
        let cfg = Arc::new(cfg);
        let thread_shared = shared.clone();
        // A long-lived thread of our own: it owns the children (Linux's
        // parent-death signal follows the spawning thread) and their pipes.
        std::thread::Builder::new()
            .name("procpool".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match rt {
                    Ok(rt) => rt.block_on(scheduler::run(cfg, thread_shared, rx, ready_tx)),
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
