//! How the worker runs one registered task: a blocking task on the calling
//! thread, an async task as a future under its job's cancel watcher, on the
//! async runtime.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;

use crate::job::{self, JobCtx};
use crate::task::{self, AsyncRun, Panic, RunFailure, Runner};

/// Runs the task at `index` of the registry on this thread, appending its
/// encoded output to `out`.
pub(super) fn run_registered(
    index: u32,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), RunFailure> {
    match task::runner(index)? {
        Runner::Blocking(run) => run(payload, out),
        Runner::Async(start) => {
            // An async task on a thread that runs jobs: block on it, as the
            // job this thread runs.
            let run = start(payload)?;
            let ctx = job::current().unwrap_or_else(|| JobCtx::new(0));
            let bytes = block_on(ctx, run)?;
            out.extend_from_slice(&bytes);
            Ok(())
        }
    }
}

/// Runs an async job as job `ctx`, dropping its future (inside the job's
/// scope, so its destructors see [`cancelled()`](crate::cancelled)) as soon
/// as the job is cancelled.
pub(super) async fn guarded(ctx: Arc<JobCtx>, run: AsyncRun) -> Result<Vec<u8>, RunFailure> {
    let watch = ctx.clone();
    let raced = job::scope(ctx, async move {
        tokio::select! {
            biased;
            () = watch.cancellation() => Err(RunFailure::Cancelled),
            r = run => r,
        }
    });
    // The task's own panics are caught inside `run`; this catches one in
    // its destructor, run here when a cancel drops it.
    AssertUnwindSafe(raced)
        .catch_unwind()
        .await
        .unwrap_or_else(|p| Err(RunFailure::Panicked(Panic::caught(p.as_ref()))))
}

/// Runs an async job to completion from a thread outside the runtime (a
/// worker's runner thread, a blocking thread).
fn block_on(ctx: Arc<JobCtx>, run: AsyncRun) -> Result<Vec<u8>, RunFailure> {
    let rt = crate::async_task::runtime()
        .map_err(|e| RunFailure::Panicked(Panic::without_location(e)))?;
    rt.handle().block_on(guarded(ctx, run))
}
