//! Per-job options.

use std::time::Duration;

/// Options for one job, for
/// [`ProcessPoolExecutor::submit_with`](crate::ProcessPoolExecutor::submit_with).
///
/// ```
/// use std::time::Duration;
/// let options = procpool::JobOptions::new().timeout(Duration::from_secs(5));
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobOptions {
    pub(crate) timeout: Option<Duration>,
    pub(crate) retries: u32,
}

impl JobOptions {
    /// Default options: the pool's default timeout, if any.
    pub fn new() -> Self {
        Self::default()
    }

    /// A timeout for this job, overriding the pool's
    /// [`job_timeout`](crate::Builder::job_timeout). It counts from when the
    /// job starts running on a worker, not while it waits in the queue (to
    /// bound the whole wait, wrap the handle in `tokio::time::timeout`, which
    /// cancels the job when it fires). A job that runs longer resolves to
    /// [`Error::TimedOut`](crate::Error::TimedOut) and is stopped like a
    /// cancelled job: asked first, then after the
    /// [grace period](crate::Builder::cancel_grace) its worker is killed
    /// and replaced.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Runs the job again, up to `n` more times, if its worker dies while
    /// running it ([`Error::WorkerDied`](crate::Error::WorkerDied)); only
    /// the last death is reported. Default 0: a job runs at most once.
    /// Only for jobs that are safe to run more than once (idempotent). A
    /// panic, a timeout, a cancel or a serialization error is never
    /// retried. The encoded task is kept until the job finishes.
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }
}
