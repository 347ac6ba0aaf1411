//! Async tasks: `async fn run`, polled on a tokio runtime inside the worker.
//!
//! Every [`AsyncTask`] is also a [`Task`] (a blanket impl), so `submit`,
//! `map`, `JobSet`, the initializer and the tower service take it as they
//! are. The registry entry of an async task carries a second entry point
//! that returns the task's future instead of blocking on it; the worker
//! uses it to run the future under its cancel watcher, alone or with up to
//! `jobs_per_worker` others at once (see `worker::run`).
//!
//! The runtime lives here, not in the worker: calling an async task's
//! [`Task::run`] directly blocks on it in any process.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::OnceLock;

use futures::FutureExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::task::{AsyncEntry, AsyncRun, Panic, RunFailure, Task, decode_task, encode_output};

/// A task whose `run` is an `async fn`, for I/O-heavy or mixed work that
/// must still be isolated in another process: a flaky native client
/// library, a sandboxed parser that also fetches.
///
/// It runs on a tokio runtime inside the worker (a multi-thread runtime
/// with one worker thread, I/O and timers enabled, started on the first
/// async job), so `tokio::net`, `tokio::time` and `tokio::spawn` work in
/// it. With [`Builder::jobs_per_worker(n)`](crate::Builder::jobs_per_worker)
/// each worker runs up to `n` jobs at once, which is where async tasks pay
/// off: a worker waiting on the network for one job serves the others.
///
/// Every `AsyncTask` is a [`Task`] too, so register it with
/// [`register!`](crate::register) and submit it like any task; nothing
/// else changes on the host side. [`#[procpool::task]`](crate::task) on an
/// `async fn` generates an `AsyncTask` and registers it.
///
/// Cancelling the job (dropping its handle, [`JobHandle::cancel`], a
/// timeout) drops the task's future inside the worker at its next `.await`,
/// so its destructors run (close a connection, remove a temporary file)
/// and the worker keeps serving. Only a task that blocks without awaiting
/// past the [cancel grace period](crate::Builder::cancel_grace) gets its
/// worker killed.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use std::time::Duration;
///
/// #[derive(Serialize, Deserialize)]
/// struct SlowEcho(String);
///
/// impl procpool::AsyncTask for SlowEcho {
///     type Output = String;
///     async fn run(self) -> String {
///         tokio::time::sleep(Duration::from_millis(10)).await;
///         self.0
///     }
/// }
/// procpool::register!(SlowEcho);
/// ```
///
/// `examples/async_tasks.rs` fetches from a slow local server, with and
/// without `jobs_per_worker`, and shows a timed-out fetch dropped in its
/// worker.
///
/// [`JobHandle::cancel`]: crate::JobHandle::cancel
pub trait AsyncTask: Serialize + DeserializeOwned + Send + 'static {
    /// What the task returns to the host.
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// Runs the task inside a worker process. Implement it as an
    /// `async fn`; the future must be `Send`.
    ///
    /// A panic fails the job with [`Error::Panicked`](crate::Error::Panicked)
    /// and the worker keeps serving its other jobs.
    fn run(self) -> impl Future<Output = Self::Output> + Send;
}

impl<T: AsyncTask> Task for T {
    type Output = <T as AsyncTask>::Output;

    /// Runs the async task to completion on the worker's runtime, blocking
    /// the calling thread. The pool never calls this for an async task; it
    /// is there for calling a task directly, outside async code.
    ///
    /// # Panics
    ///
    /// Panics if called from async code (inside a tokio runtime), or if the
    /// runtime cannot be started.
    fn run(self) -> Self::Output {
        match runtime() {
            Ok(rt) => rt.handle().block_on(AsyncTask::run(self)),
            Err(e) => panic!("{e}"),
        }
    }

    fn __async_entry() -> Option<AsyncEntry> {
        Some(AsyncEntry { start: start::<T> })
    }
}

fn start<T: AsyncTask>(payload: &[u8]) -> Result<AsyncRun, RunFailure> {
    let task: T = decode_task(payload)?;
    Ok(Box::pin(async move {
        // The call itself may panic too (a hand-written `fn run`).
        let output = AssertUnwindSafe(async move { AsyncTask::run(task).await })
            .catch_unwind()
            .await
            .map_err(|p| RunFailure::Panicked(Panic::caught(p.as_ref())))?;
        let mut out = Vec::new();
        encode_output(&output, &mut out)?;
        Ok(out)
    }))
}

/// The runtime async tasks run on (in a worker, and when called directly),
/// started on first use.
pub(crate) fn runtime() -> Result<&'static tokio::runtime::Runtime, String> {
    static RT: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("procpool-async")
            .enable_all()
            .build()
            .map_err(|e| format!("the worker could not start its async runtime: {e}"))
    })
    .as_ref()
    .map_err(Clone::clone)
}
