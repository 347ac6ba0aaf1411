//! Forwarding worker output to the host's stderr without ever blocking the
//! pool's thread.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};

/// Forwarded lines that may wait for the host's stderr; more are dropped.
const FORWARD_QUEUE_LINES: usize = 4096;
/// Forwarded bytes that may wait for the host's stderr; more are dropped
/// (a line may be up to about 72 KiB long).
const FORWARD_QUEUE_BYTES: usize = 8 << 20;

/// Writes the worker output a pool forwards to the host's stderr, on a
/// thread of its own (started with the first line), so that a host stderr
/// that blocks (a full pipe nobody reads) never stalls the pool's thread,
/// which drives every worker pipe and timer. Lines that find the queue
/// full are dropped and counted. One per pool; clones share it.
#[derive(Clone, Default)]
pub(crate) struct OutputForwarder {
    inner: Arc<ForwarderInner>,
}

#[derive(Default)]
struct ForwarderInner {
    /// The queue to the forwarding thread; `None` if it could not start.
    queue: OnceLock<Option<SyncSender<String>>>,
    /// Bytes queued or being written.
    queued_bytes: Arc<AtomicUsize>,
    /// Lines dropped, read by `PoolStats::output_lines_dropped`.
    dropped: Arc<AtomicU64>,
}

impl fmt::Debug for OutputForwarder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutputForwarder")
            .field("dropped", &self.inner.dropped.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl OutputForwarder {
    /// A forwarder that counts the lines it drops into `dropped`.
    pub(crate) fn new(dropped: Arc<AtomicU64>) -> Self {
        OutputForwarder {
            inner: Arc::new(ForwarderInner {
                queue: OnceLock::new(),
                queued_bytes: Arc::default(),
                dropped,
            }),
        }
    }

    /// Queues `line` for the host's stderr without waiting; drops it (and
    /// counts it) if too much output is already waiting.
    pub(crate) fn forward(&self, line: String) {
        let inner = &*self.inner;
        let len = line.len();
        let queued = inner.queued_bytes.fetch_add(len, Ordering::Relaxed);
        let sent = queued.saturating_add(len) <= FORWARD_QUEUE_BYTES
            && match inner
                .queue
                .get_or_init(|| start_forwarder(inner.queued_bytes.clone()))
            {
                Some(queue) => match queue.try_send(line) {
                    Ok(()) => true,
                    Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
                },
                None => false,
            };
        if !sent {
            inner.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            inner.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Starts the thread that writes forwarded lines; it ends once every
/// sender is gone and the queue is empty.
fn start_forwarder(queued_bytes: Arc<AtomicUsize>) -> Option<SyncSender<String>> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<String>(FORWARD_QUEUE_LINES);
    let started = std::thread::Builder::new()
        .name("procpool-output".into())
        .spawn(move || {
            for line in rx {
                // `eprintln!` (not a raw write) so test harnesses capture it
                // (this thread inherits the capture of the thread that built
                // the pool); a closed host stderr must not end the thread.
                let _ = std::panic::catch_unwind(|| eprintln!("{line}"));
                queued_bytes.fetch_sub(line.len(), Ordering::Relaxed);
            }
        });
    match started {
        Ok(_) => Some(tx),
        Err(e) => {
            tracing::warn!(
                "procpool could not start its output thread ({e}); worker output is not forwarded"
            );
            None
        }
    }
}
