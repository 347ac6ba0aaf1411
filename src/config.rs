//! The settings a pool runs with, shared by the host core, its driver and the transport.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// Default maximum frame size (1 GiB, so images and arrays pass): the
/// worker's default too.
pub(crate) use crate::frame::DEFAULT_MAX_FRAME;

/// How a worker process is started.
#[derive(Debug, Clone)]
pub(crate) struct Command {
    /// `None`: re-execute the running binary.
    pub(crate) program: Option<PathBuf>,
    pub(crate) args: Vec<OsString>,
    pub(crate) envs: Vec<(OsString, Option<OsString>)>,
    pub(crate) env_clear: bool,
    pub(crate) current_dir: Option<PathBuf>,
}

/// A pool's settings, fixed at `build()`.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) workers: usize,
    pub(crate) command: Command,
    pub(crate) max_frame: usize,
    pub(crate) handshake_timeout: Duration,
    /// Bounds the initializer in each new worker (`None`: unbounded).
    pub(crate) initializer_timeout: Option<Duration>,
    pub(crate) cancel_grace: Duration,
    pub(crate) job_timeout: Option<Duration>,
    pub(crate) core_dumps: bool,
    pub(crate) nice: Option<i32>,
    pub(crate) forward_output: bool,
    /// Writes forwarded worker output; `build()` gives each pool its own.
    pub(crate) output: crate::output::OutputForwarder,
    pub(crate) max_startup_failures: u32,
    pub(crate) max_startup_backoff: Duration,
    pub(crate) max_queued: Option<usize>,
    pub(crate) prefetch: usize,
    pub(crate) jobs_per_worker: usize,
    pub(crate) max_tasks_per_worker: Option<u64>,
    pub(crate) max_worker_rss: Option<u64>,
    pub(crate) worker_memory_limit: Option<u64>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) min_workers: usize,
    pub(crate) initializer: Option<Result<Initializer, crate::Error>>,
}

/// The encoded initializer job (job id 0), sent to every new worker.
#[derive(Debug, Clone)]
pub(crate) struct Initializer {
    pub(crate) frame: Vec<u8>,
    pub(crate) type_name: &'static str,
}
