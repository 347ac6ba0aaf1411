//! An async-native process pool for tokio.
//!
//! `procpool` runs jobs in worker processes and hands you plain futures for
//! their results. Workers are re-executions of your own binary (never a
//! `fork` without `exec`), so a crash, a leak or a runaway loop in a job
//! cannot take the host down, and a job can really be stopped. Jobs and
//! results are `serde` types sent over pipes with `postcard`.
//!
//! ```
//! use procpool::{ProcessPoolExecutor, Task};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Fib(u64);
//!
//! impl Task for Fib {
//!     type Output = u64;
//!     fn run(self) -> u64 {
//!         fn fib(n: u64) -> u64 { if n < 2 { n } else { fib(n - 1) + fib(n - 2) } }
//!         fib(self.0)
//!     }
//! }
//! procpool::register!(Fib);
//!
//! fn main() {
//!     procpool::init(); // the guard: in a worker, serves jobs and exits
//!     let rt = tokio::runtime::Runtime::new().unwrap();
//!     rt.block_on(async {
//!         let pool = ProcessPoolExecutor::builder().workers(2).build().await.unwrap();
//!         assert_eq!(pool.worker_pids().len(), 2);
//!         let handle = pool.submit(Fib(30));
//!         assert_eq!(handle.await.unwrap(), 832040);
//!         pool.shutdown().await;
//!     });
//! }
//! ```
//!
//! (This doctest really starts two worker processes: they are
//! re-executions of the doctest binary, whose `main` starts with the guard.
//! `examples/quickstart.rs` is a longer version that CI also runs.)
//!
//! # The pieces
//!
//! - [`Task`]: a serializable value with a `run` method; register each task
//!   type with [`register!`]. [`AsyncTask`] and [`StreamTask`] are the
//!   async and the item-streaming kinds.
//! - [`#[procpool::task]`](task): the short way, on a plain `fn` or
//!   `async fn`: submit `f::new(args..)` and `f(args..)` runs in a worker.
//! - [`init()`]: the worker guard, first line of `main`. In test binaries
//!   and benches use [`init_before_main!`] once per file instead.
//! - [`ProcessPoolExecutor`]: `submit` returns a [`JobHandle`], a future of
//!   `Result<T, Error>`.
//! - [`Error`]: one enum that says what happened to a job.
//!
//! # Which kind of task
//!
//! | the work | pick | how it runs in the worker |
//! |---|---|---|
//! | CPU-bound, one value in, one out (most work) | [`Task`] | on a worker thread, one job per worker at a time |
//! | waits on I/O (network, subprocesses, a flaky native client) | [`AsyncTask`] with [`Builder::jobs_per_worker`] | as a tokio task on the worker's runtime, up to `n` jobs per worker at once |
//! | produces many results over time (a generator, a long scan) | [`StreamTask`] | on a worker thread; the host gets an [`ItemStream`], and a slow consumer pauses the producer |
//! | many tiny tasks | [`Task`] with [`ProcessPoolExecutor::map`] and [`MapStream::chunk_size`] | in batches, one frame (and one round trip) per batch |
//!
//! - A CPU-bound task gains nothing from `async`: the pool's parallelism is
//!   its processes ([`Builder::workers`], default one per core). Keep
//!   `jobs_per_worker` at 1 for such work.
//! - An I/O-bound task as a blocking [`Task`] holds a whole process while
//!   it waits. As an [`AsyncTask`] with `jobs_per_worker(n)`, each worker
//!   keeps `n` waits in flight; and a cancel or timeout drops its future in
//!   the worker (destructors run, the worker survives) instead of killing
//!   the process.
//! - Long jobs of any kind can report progress with [`report_progress`]
//!   (seen on [`JobHandle::progress`]) and check [`cancelled()`].
//! - Something expensive every task needs (a model, a cache, a
//!   connection): build it once per worker in the
//!   [initializer](Builder::initializer) (which may be an [`AsyncTask`])
//!   with [`set_worker_state`], and read it with [`worker_state`]. It lives
//!   as long as the worker; a recycled or replaced worker runs the
//!   initializer again.
//!
//! # What happens when things go wrong
//!
//! - A task that panics fails its job with [`Error::Panicked`] (its message
//!   and `file:line:column`); the worker keeps serving. In a binary built
//!   with `panic = "abort"` the job fails the same way and the worker,
//!   which ends with the panic, is replaced.
//! - A worker that dies (abort, segfault, `exit`, a kill from outside) fails
//!   only the job it was running (with [`Builder::jobs_per_worker`] above 1,
//!   the jobs it was running), with [`Error::WorkerDied`] (exit status and
//!   the tail of its stderr); jobs sent ahead to it and not started are
//!   requeued. The worker is replaced and the pool keeps its size. There is
//!   no "broken pool" state: while new workers cannot start at all (an
//!   initializer whose dependency is down, say), jobs fail at once with
//!   [`Error::Spawn`] naming the cause, the pool keeps retrying with a
//!   capped backoff ([`Builder::max_startup_backoff`]), and it serves again
//!   as soon as a worker starts.
//! - A job runs at most once unless you ask for retries
//!   ([`JobOptions::retries`]): a job sent ahead to a worker is run
//!   elsewhere only if that worker gave it back or died before starting it
//!   (the pool reads everything a dying worker wrote before deciding).
//! - If the pool's own thread ever panicked (a bug in procpool), every
//!   pending handle resolves with [`Error::PoolCrashed`]; none hangs.
//! - Dropping a [`JobHandle`] cancels the job; a job that outlives its
//!   timeout is cancelled the same way, and if it does not stop within the
//!   grace period its worker (with the worker's process group) is killed.
//! - Workers exit when the host goes away, even by `SIGKILL`: they notice
//!   the end of their input while a job runs, and on Linux the parent-death
//!   signal is a backup.
//! - A binary that forgot [`init()`] fails `build()` with
//!   [`Error::MissingInit`] instead of spawning itself recursively.
//!
//! # Cancellation and timeouts
//!
//! Every way a tokio program stops waiting for a job also stops the work:
//!
//! - [`JobHandle::cancel`], dropping a [`JobHandle`] (which is what
//!   `tokio::time::timeout(d, handle)` and a losing `select!` branch do),
//!   dropping an [`AsCompleted`], [`JobSet`] or [`MapStream`], and
//!   [`JobSet::abort_all`].
//! - A job still in the queue is removed and never runs.
//! - A running job is asked to stop: [`cancelled()`] turns true inside the
//!   task, which may return early. A running [`AsyncTask`] is dropped at its
//!   next `.await` (its destructors run inside the worker, which keeps
//!   serving). If the job has not finished after the
//!   [cancel grace period](Builder::cancel_grace) (200 ms by default), its
//!   worker is killed with its whole process group (so processes the task
//!   started die too) and a replacement is started. During the grace period
//!   the worker takes no new job and gives back the jobs sent ahead to it,
//!   so the kill never hits a job that started after the cancel.
//! - The handle resolves to [`Error::Cancelled`] as soon as the cancel
//!   takes effect; it does not wait for the worker.
//! - `cancel()` returns `false` if the result had already arrived; the
//!   result is then kept. A cancel never affects any other job, even when
//!   it races with the job finishing and the worker starting the next one
//!   (cancels name the job, not the worker).
//!
//! Timeouts ([`Builder::job_timeout`], [`JobOptions::timeout`]) count from
//! when the job starts running on a worker, not while it waits in the
//! queue. A job that runs longer resolves to [`Error::TimedOut`] at once
//! and is then stopped exactly like a cancelled one: asked (an async task
//! is dropped), and after the grace period its worker is killed and
//! replaced, so the CPU is really freed. To bound the total wait including
//! the queue, wrap the handle in `tokio::time::timeout`.
//!
//! [`JobHandle::detach`] does the opposite: the job runs to completion and
//! its result is discarded.
//!
//! # Backpressure
//!
//! The queue is unbounded by default. With [`Builder::max_queued`]:
//! [`submit`](ProcessPoolExecutor::submit) resolves the handle with
//! [`Error::Overloaded`] when the queue is full,
//! [`try_submit`](ProcessPoolExecutor::try_submit) returns that error (for
//! load shedding), and [`submit_wait`](ProcessPoolExecutor::submit_wait) waits
//! for room. A job gives its place back as soon as it starts or is
//! cancelled. [`map`](ProcessPoolExecutor::map) keeps a bounded number of
//! jobs in flight by itself.
//!
//! # Cancel safety
//!
//! | future | if dropped before it completes |
//! |---|---|
//! | `JobHandle` (owned) | the job is cancelled |
//! | `&mut JobHandle` | nothing is lost; await the handle again |
//! | [`JobSet::join_next`] | nothing is lost; the job stays in the set |
//! | [`ProcessPoolExecutor::submit_wait`] | the job was not submitted |
//! | [`ProcessPoolExecutor::shutdown`] / `shutdown_now` | the shutdown goes on |
//! | [`Builder::build`] | the workers started so far are stopped |
//!
//! # Guarantees
//!
//! - Every submitted job resolves exactly once: with its output or with an
//!   [`Error`] that says what happened.
//! - A job runs at most once: a job whose worker died is not run again.
//! - Jobs start in submission order, each on the first worker with a free
//!   slot; a job never waits behind another while a worker is idle.
//!
//! # Logs and tracing
//!
//! procpool reports through [`tracing`](https://docs.rs/tracing); with no
//! subscriber installed it costs next to nothing and prints nothing of its
//! own. Every target starts with `procpool`, so a filter on `procpool`
//! takes all of it. What it emits (messages may be reworded; targets other
//! than `procpool::worker_output` are module paths and may move, so filter
//! on the `procpool` prefix):
//!
//! | what | level | target | fields |
//! |---|---|---|---|
//! | each line a worker prints (its stdout and stderr, a task's `println!` included) | INFO | `procpool::worker_output` | `pid`, `job` (the job running on that worker; `0` if none, and always with [`Builder::jobs_per_worker`] above 1), the line as the message |
//! | a worker started, exited when asked, is being killed; workers being started | DEBUG | `procpool::host::…` | `pid`, `status`, `missing` |
//! | a job's span `procpool.job`, and in it its events: queued (TRACE), dispatched to a worker, started, finished | DEBUG | `procpool::host::…` | span: `id`, `task`; events: `worker`, `ahead`, `ok`, `error` |
//! | a job that did not stop within the cancel grace period (its worker is killed) | DEBUG | `procpool::host::…` | `id` |
//! | a worker died unexpectedly and is being replaced | WARN | `procpool::host::…` | `pid`, `status`, `jobs` |
//! | a worker failed to start (the pool retries with a backoff) | WARN | `procpool::host::…` | `failures`, `retry_in`, `error` |
//! | a worker broke the protocol (it is killed) | WARN | `procpool::host::…` | `w` (the worker), `message` |
//! | the pool could not start its output thread (raw worker lines are then not forwarded) | WARN | `procpool::…` | |
//!
//! Worker output takes one path per line, never two: when the subscriber
//! takes `procpool::worker_output` at INFO, each line is an event (and is
//! not written to stderr); otherwise it is written to the host's stderr as
//! `[procpool worker PID] line` (`[procpool worker PID job N] line` while
//! one job runs there), unless [`Builder::forward_worker_output`] is off.
//! Either way the last lines are kept for [`Error::WorkerDied`]. To keep
//! the raw lines while logging the rest, filter the target out:
//! `RUST_LOG=info,procpool::worker_output=off`.
//!
//! The pool does its work on a thread of its own, and logs there to the
//! subscriber that was in effect where [`Builder::build`] ran, including
//! one set only for that thread (`tracing::subscriber::with_default`,
//! `set_default`); if none was, to the global default, even one installed
//! after `build()`. A job's span is created on that thread, so it is not
//! a child of the span that submitted the job.
//!
//! ```
//! use procpool::{ProcessPoolExecutor, Task};
//! use serde::{Deserialize, Serialize};
//! use tracing_subscriber::EnvFilter;
//!
//! #[derive(Serialize, Deserialize)]
//! struct Hello(u32);
//!
//! impl Task for Hello {
//!     type Output = u32;
//!     fn run(self) -> u32 {
//!         println!("hello from job {}", self.0); // one `procpool::worker_output` event
//!         self.0
//!     }
//! }
//! procpool::register!(Hello);
//!
//! fn main() {
//!     procpool::init();
//!     // `RUST_LOG=procpool=debug` adds the workers and every job;
//!     // `RUST_LOG=info,procpool::worker_output=off` keeps worker lines raw.
//!     let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
//!     tracing_subscriber::fmt().with_env_filter(filter).init();
//!     let rt = tokio::runtime::Runtime::new().unwrap();
//!     rt.block_on(async {
//!         let pool = ProcessPoolExecutor::builder().workers(1).build().await.unwrap();
//!         assert_eq!(pool.submit(Hello(7)).await.unwrap(), 7);
//!         pool.shutdown().await;
//!     });
//! }
//! ```
//!
//! This prints (with `tracing-subscriber`'s `env-filter` feature):
//!
//! ```text
//! 2026-12-02T18:25:55.380443Z  INFO procpool::worker_output: hello from job 7 pid=22660 job=1
//! ```
//!
//! Worker processes carry the program's name: `ps`, `top`, `pstree` and
//! `pgrep -x myapp` (which match the process name) show a worker of
//! `myapp` as `myapp`, like the host (cut to 15 bytes by the kernel, as the
//! host's is), and its command line (`ps -o args`, `pgrep -f`) reads
//! `/path/to/myapp (procpool worker)`. A worker started with
//! [`Builder::program`] keeps the name and command line it was started
//! with.
//!
//! # Implementation
//!
//! Each pool has one thread of its own (named `procpool`) running a
//! single-threaded tokio runtime. It owns the worker processes, their pipes
//! (via `tokio::process`) and all of the pool's state; handles talk to it by
//! message. The pool's bookkeeping (the queue, the jobs, the workers, the
//! timers) is a state machine without I/O that this thread drives; it is
//! tested by a deterministic simulation of thousands of seeded runs with
//! simulated workers that die, hang and race (`cargo test --lib
//! simulation`). Timers cost nothing per job: the thread sleeps until the
//! earliest deadline. Output forwarding runs on one more thread per pool,
//! so a host stderr that blocks never stalls the pool (lines it cannot
//! take are dropped and counted in [`PoolStats::output_lines_dropped`]).
//! `tokio::process` was chosen over `async-process` by measurement:
//! an 8-byte round trip over a child's pipes took 21–26 µs p50 with
//! `tokio::process` and 111–114 µs with `async-process`, whose pipes are
//! driven by its own reactor thread.
//!
//! Each worker process has two threads: one reads frames from the host (so
//! it notices a cancel or the host's exit while a job runs) and one runs
//! jobs. Async tasks run on a tokio runtime the worker starts on first use
//! (one runtime thread, I/O and timers enabled); with
//! [`Builder::jobs_per_worker`] above 1, the reading thread hands each job
//! to that runtime (async tasks) or its blocking threads (everything else),
//! and results go back in the order jobs finish. A worker's stdout and
//! stderr (including a task's `println!`) are forwarded to the host's
//! stderr with a `[procpool worker PID]` prefix, or become
//! `procpool::worker_output` events (see [Logs and
//! tracing](#logs-and-tracing)); the protocol uses a private copy of the
//! original stdout descriptor.
//!
//! Frames are a 4-byte little-endian length and a body; the length is
//! checked against [`Builder::max_frame_size`] before anything is allocated.
//! Decoding a frame never runs code.
//!
//! # Security
//!
//! - Decoding a frame or a task never runs code (unlike pickle): postcard
//!   only builds the declared types, and the frame decoders are fuzzed.
//! - A worker is the host's own binary (by default `/proc/self/exe`, so the
//!   very file the host runs), and the handshake checks that it is the same
//!   build and protocol version.
//! - A worker inherits the host's environment (plus `PROCPOOL_WORKER`, the
//!   host's pid, `PROCPOOL_MAX_FRAME`, and with the matching builder options
//!   `PROCPOOL_NICE`, `PROCPOOL_CORE_DUMPS` and `PROCPOOL_JOBS_PER_WORKER`,
//!   all read by `init()`; adjust with [`Builder::env`],
//!   [`Builder::env_remove`], [`Builder::env_clear`]), its working directory, and exactly three file
//!   descriptors: stdin and stdout (the protocol) and stderr, all pipes to
//!   the host. Everything Rust and tokio open is close-on-exec, and the
//!   worker moves the protocol to private close-on-exec descriptors before
//!   any job runs, so processes a task starts inherit none of them.
//!   Descriptors the host itself inherited without close-on-exec (from a
//!   shell, say) reach the worker's exec, and `init()` closes them first.
//! - Workers start with core dumps disabled (`RLIMIT_CORE = 0`; see
//!   [`Builder::core_dumps`]).
//! - A task runs with the worker's privileges, which are the host's. A task
//!   that deliberately writes to the protocol descriptors voids the
//!   guarantees for its worker's jobs (the pool survives: the worker is
//!   replaced).
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![deny(unsafe_op_in_unsafe_fn)]

mod async_task;
mod config;
mod error;
mod frame;
#[doc(hidden)]
pub mod fuzz;
mod global;
mod handle;
mod host;
mod job;
mod msg;
mod options;
mod output;
mod pool;
mod process;
mod progress;
mod protocol;
mod serde_diag;
#[cfg(feature = "tower")]
mod service;
mod slot;
mod stats;
mod streams;
mod sys;
mod task;
mod worker;

pub use async_task::AsyncTask;
pub use error::{Error, ExitStatus, SerdeStage};
pub use handle::{ItemStream, JobHandle};
pub use job::cancelled;
pub use msg::JobId;
pub use options::JobOptions;
pub use pool::{Builder, ProcessPoolExecutor};
pub use progress::{
    Progress, report_progress, report_progress_message, set_worker_state, worker_state,
};
pub use stats::PoolStats;
pub use streams::{AsCompleted, IndexedMapStream, JobSet, MapStream, as_completed};
pub use task::{Emitter, StreamTask, Task};
pub use worker::init;

pub use procpool_macros::task;

/// Support items for the macros; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::fuzz;
    pub use crate::task::{TASKS, TaskEntry};
    pub use ctor;
    pub use linkme;
    pub use serde;
}

/// The examples and the rejected forms in the docs of [`task`], run as
/// doc tests of this crate (the attribute's own crate cannot run them
/// under this crate's `cargo test`).
#[cfg(doctest)]
#[doc = include_str!("../procpool-macros/src/task.md")]
struct TaskAttributeDocs;

/// Installs [`init()`] as a constructor that runs before `main`.
///
/// Use it once per test binary (each file in `tests/`), bench, or binary
/// whose `main` you do not control (for example under `#[tokio::main]` if
/// you prefer not to call `init()` yourself). Test harnesses print to
/// stdout and start threads before any test runs; this guard runs earlier
/// still, so the process can serve as a worker.
///
/// ```
/// procpool::init_before_main!();
/// ```
#[macro_export]
macro_rules! init_before_main {
    () => {
        $crate::__private::ctor::declarative::ctor! {
            #[ctor(unsafe, anonymous)]
            fn __procpool_init_before_main() {
                $crate::init();
            }
        }
    };
}
