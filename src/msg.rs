//! The messages the pool's handles send to the pool's thread.
//!
//! A leaf module: the handles ([`crate::handle`]) and the pool
//! ([`crate::pool`]) send [`Command`]s, and the host ([`crate::host`])
//! receives them.

use std::fmt;
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::options::JobOptions;
use crate::slot::Slot;

/// Identifies one submitted job within its pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub(crate) u64);

impl JobId {
    /// The job's number (unique within its pool, increasing in submission
    /// order).
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job {}", self.0)
    }
}

/// A job on its way to the pool's thread.
pub(crate) struct JobRequest {
    pub(crate) id: JobId,
    /// The task's index in the registry.
    pub(crate) task: u32,
    /// The complete frame, ready to write.
    pub(crate) frame: Vec<u8>,
    pub(crate) slot: Arc<Slot>,
    pub(crate) options: JobOptions,
}

/// What the pool and the handles ask of the pool's thread.
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
