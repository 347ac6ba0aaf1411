//! The one error type of the crate.

use std::fmt;
use std::time::Duration;

use crate::protocol::FailStage;

/// Where a value failed to serialize or deserialize.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SerdeStage {
    /// The host could not serialize the task.
    EncodeTask,
    /// The worker could not deserialize the task.
    DecodeTask,
    /// The worker could not serialize the task's output.
    EncodeOutput,
    /// The host could not deserialize the task's output.
    DecodeOutput,
}

impl fmt::Display for SerdeStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SerdeStage::EncodeTask => "serializing the task in the host",
            SerdeStage::DecodeTask => "deserializing the task in the worker",
            SerdeStage::EncodeOutput => "serializing the output in the worker",
            SerdeStage::DecodeOutput => "deserializing the output in the host",
        })
    }
}

/// How a worker process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
    /// The status could not be determined.
    Unknown,
}

impl From<std::process::ExitStatus> for ExitStatus {
    fn from(s: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (s.code(), s.signal()) {
            (Some(c), _) => ExitStatus::Code(c),
            (None, Some(sig)) => ExitStatus::Signal(sig),
            _ => ExitStatus::Unknown,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "signal {s} ({})", signal_name(*s)),
            ExitStatus::Unknown => f.write_str("unknown status"),
        }
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGABRT => "SIGABRT, an abort",
        libc::SIGSEGV => "SIGSEGV, an invalid memory access",
        libc::SIGBUS => "SIGBUS, a bus error",
        libc::SIGILL => "SIGILL, an illegal instruction",
        libc::SIGFPE => "SIGFPE, an arithmetic fault",
        libc::SIGKILL => "SIGKILL, killed",
        libc::SIGTERM => "SIGTERM, terminated",
        libc::SIGINT => "SIGINT, interrupted",
        _ => "another signal",
    }
}

/// What went wrong with a job or a pool.
///
/// Every variant is a complete account of one failure; the `Display`
/// messages are sentences that say what happened and what to do about it.
/// The enum is `#[non_exhaustive]`: match with a wildcard arm. The
/// predicates (`is_cancelled()`, ...) are stable shortcuts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The task panicked. The worker caught the panic and keeps serving
    /// (in a binary built with `panic = "abort"`, the worker reported the
    /// panic, ended, and was replaced).
    ///
    /// Match it with `Error::Panicked { message, .. }`: a pattern without
    /// `..` does not compile since `location` was added.
    #[error("the task panicked{}: {message}", fmt_location(location))]
    Panicked {
        /// The panic message.
        message: String,
        /// Where the task panicked, as `file:line:column`
        /// (`src/jobs.rs:12:5`); `None` when unknown.
        location: Option<String>,
    },

    /// The worker process running the job died (crashed, aborted, exited or
    /// was killed from outside). The pool replaced it.
    #[error(
        "the worker process {pid} running this job died ({status}); the pool replaced it{}",
        fmt_tail(stderr_tail)
    )]
    WorkerDied {
        /// The worker's process id.
        pid: u32,
        /// How it ended.
        status: ExitStatus,
        /// The last lines the worker wrote to stderr (may be empty).
        stderr_tail: String,
    },

    /// The job was cancelled (by [`JobHandle::cancel`](crate::JobHandle::cancel),
    /// a dropped handle, or a set being aborted).
    #[error("the job was cancelled")]
    Cancelled,

    /// The job ran longer than its timeout; its worker was stopped.
    #[error("the job ran longer than its timeout of {timeout:?} and was stopped")]
    TimedOut {
        /// The timeout that expired.
        timeout: Duration,
    },

    /// The worker running the job used more memory than
    /// [`Builder::worker_memory_limit`](crate::Builder::worker_memory_limit)
    /// allows; it was killed and replaced.
    #[error(
        "the job's worker used {rss} bytes of memory, over the pool's limit of {limit} bytes, \
         and was stopped"
    )]
    MemoryLimit {
        /// The configured limit in bytes.
        limit: u64,
        /// The resident memory seen, in bytes.
        rss: u64,
    },

    /// The pool was shut down before the job could run (or finish).
    #[error("the process pool is shut down; jobs can no longer be submitted or completed")]
    Shutdown,

    /// The pool's bounded queue is full.
    #[error(
        "the process pool's queue is full ({capacity} jobs waiting); retry later, \
         wait for room with `submit_wait`, or raise `max_queued`"
    )]
    Overloaded {
        /// The configured queue capacity.
        capacity: usize,
    },

    /// The task type was never registered with `procpool::register!`.
    #[error(
        "the task type `{type_name}` is not registered; add `procpool::register!({type_name});` \
         next to its `Task` impl (and if it lives in another crate, make sure that crate is \
         linked, e.g. with `use that_crate as _;`)"
    )]
    NotRegistered {
        /// The task's type name.
        type_name: &'static str,
    },

    /// A task or an output failed to serialize or deserialize. This is a bug
    /// in the user's types (or a type postcard cannot represent, such as
    /// `#[serde(flatten)]` or untagged enums); the worker is not replaced.
    #[error("{stage} failed for `{type_name}`: {message}")]
    Serialization {
        /// Where it failed.
        stage: SerdeStage,
        /// The type that failed.
        type_name: String,
        /// The serde error.
        message: String,
    },

    /// A malformed or oversized frame, or a handshake that did not match.
    /// The worker involved was replaced.
    #[error("protocol error: {message}")]
    Protocol {
        /// What was wrong.
        message: String,
    },

    /// A worker process could not be started.
    #[error("could not start a worker process: {message}")]
    Spawn {
        /// Why.
        message: String,
    },

    /// The worker program was started as a worker but does not call
    /// `procpool::init()` at the start of `main`.
    #[error(
        "the worker program `{program}` does not call `procpool::init()` first thing in `main` \
         (or `procpool::init_before_main!()` in test binaries), so it cannot act as a worker; \
         add the call and rebuild"
    )]
    MissingInit {
        /// The program that was started.
        program: String,
    },

    /// The pool's initializer failed in a new worker (it panicked or could
    /// not be decoded), so the worker was not used.
    #[error("the pool's initializer `{type_name}` failed in a new worker: {message}")]
    Initializer {
        /// The initializer's task type.
        type_name: String,
        /// What went wrong.
        message: String,
    },

    /// A task registered more than once in the same binary.
    #[error(
        "the task type `{type_name}` is registered twice, at {first} and at {second}; \
         remove one of the `procpool::register!` calls"
    )]
    DuplicateRegistration {
        /// The task's type name.
        type_name: &'static str,
        /// `file:line` of one registration.
        first: String,
        /// `file:line` of the other.
        second: String,
    },

    /// A builder option was invalid.
    #[error("invalid pool configuration: {message}")]
    Config {
        /// What was wrong.
        message: String,
    },
    /// The pool's own thread stopped unexpectedly (a bug in procpool): the
    /// job's outcome is unknown, and the pool accepts no more jobs. Build a
    /// new pool.
    #[error(
        "the pool stopped unexpectedly ({message}); the job's outcome is unknown; build a new pool"
    )]
    PoolCrashed {
        /// What stopped it (a panic message).
        message: String,
    },
}

/// The error for a job that failed in the worker's glue code at `stage`
/// (the one mapping, for single jobs and batch items alike). `type_name`
/// is the task's type.
pub(crate) fn stage_error(stage: FailStage, type_name: &str, message: String) -> Error {
    let serde = |stage| Error::Serialization {
        stage,
        type_name: type_name.to_owned(),
        message: message.clone(),
    };
    match stage {
        FailStage::DecodeTask => serde(SerdeStage::DecodeTask),
        FailStage::EncodeOutput => serde(SerdeStage::EncodeOutput),
        FailStage::UnknownTask => Error::Protocol {
            message: format!("the worker has no task `{type_name}`: {message}"),
        },
    }
}

/// ` at {location}`, or nothing if the location is unknown.
fn fmt_location(location: &Option<String>) -> String {
    match location {
        Some(at) => format!(" at {at}"),
        None => String::new(),
    }
}

/// `tail` as the end of an error message, or nothing if it is blank.
pub(crate) fn fmt_tail(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!("; the last lines of its stderr:\n{tail}")
    }
}

impl Error {
    /// The job was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Error::Cancelled)
    }

    /// The task panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self, Error::Panicked { .. })
    }

    /// The worker running the job died.
    pub fn is_worker_died(&self) -> bool {
        matches!(self, Error::WorkerDied { .. })
    }

    /// The job timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::TimedOut { .. })
    }

    /// The pool is shut down.
    pub fn is_shutdown(&self) -> bool {
        matches!(self, Error::Shutdown)
    }
}
