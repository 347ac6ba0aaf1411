//! The slot a job's result goes to: filled once by the pool (or cancelled
//! once by the handle), read by the job's handle.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};

use crate::error::Error;
use crate::progress::Progress;
use crate::stats::Shared;

/// The encoded output of a job: `body[offset..]`.
pub(crate) struct Encoded {
    pub(crate) body: Vec<u8>,
    pub(crate) offset: usize,
}

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Encoded({} bytes)",
            self.body.len() - self.offset.min(self.body.len())
        )
    }
}

pub(crate) type RawResult = Result<Encoded, Error>;

const PENDING: u8 = 0;
const DONE: u8 = 1;
const CANCELLED: u8 = 2;

/// Where the pool puts a job's result. Exactly one of `complete` and
/// `cancel` wins; the loser does nothing.
pub(crate) struct Slot {
    state: AtomicU8,
    result: Mutex<Option<RawResult>>,
    waker: AtomicWaker,
    /// The job's place in a bounded queue: given back as soon as the job
    /// leaves the queue (dispatched, cancelled or failed).
    queue_place: Mutex<Option<OwnedSemaphorePermit>>,
    /// Where a cancel that wins is counted (exactly once per job: either
    /// the cancel or the result wins the slot).
    stats: Option<Arc<Shared>>,
    /// The latest progress report, created when first reported or watched.
    progress: OnceLock<watch::Sender<Option<Progress>>>,
    /// Where a streaming job's items go; dropped when the job is over,
    /// which ends the item stream.
    items: Mutex<Option<mpsc::UnboundedSender<Encoded>>>,
}

impl Slot {
    pub(crate) fn new(queue_place: Option<OwnedSemaphorePermit>, stats: Arc<Shared>) -> Arc<Self> {
        Arc::new(Slot {
            state: AtomicU8::new(PENDING),
            result: Mutex::new(None),
            waker: AtomicWaker::new(),
            queue_place: Mutex::new(queue_place),
            stats: Some(stats),
            progress: OnceLock::new(),
            items: Mutex::new(None),
        })
    }

    /// A slot for a streaming job, with the channel its items go to.
    pub(crate) fn new_streaming(
        queue_place: Option<OwnedSemaphorePermit>,
        stats: Arc<Shared>,
        items: mpsc::UnboundedSender<Encoded>,
    ) -> Arc<Self> {
        let slot = Slot::new(queue_place, stats);
        if let Ok(mut i) = slot.items.lock() {
            *i = Some(items);
        }
        slot
    }

    pub(crate) fn push_item(&self, item: Encoded) {
        if let Ok(i) = self.items.lock() {
            if let Some(tx) = i.as_ref() {
                let _ = tx.send(item);
            }
        }
    }

    fn end_items(&self) {
        if let Ok(mut i) = self.items.lock() {
            i.take();
        }
    }

    pub(crate) fn progress_sender(&self) -> &watch::Sender<Option<Progress>> {
        self.progress.get_or_init(|| watch::Sender::new(None))
    }

    pub(crate) fn set_progress(&self, p: Progress) {
        self.progress_sender().send_replace(Some(p));
    }

    pub(crate) fn release_queue_place(&self) {
        if let Ok(mut p) = self.queue_place.lock() {
            p.take();
        }
    }

    /// A slot that already holds `result`.
    pub(crate) fn ready(result: RawResult) -> Arc<Self> {
        Arc::new(Slot {
            state: AtomicU8::new(DONE),
            result: Mutex::new(Some(result)),
            waker: AtomicWaker::new(),
            queue_place: Mutex::new(None),
            stats: None,
            progress: OnceLock::new(),
            items: Mutex::new(None),
        })
    }

    /// Delivers a job's result, counting it first (as completed or failed)
    /// so that `stats()` read right after the handle resolves already
    /// includes it. Returns false if the job was cancelled first.
    pub(crate) fn resolve(&self, result: RawResult) -> bool {
        let counter = self.stats.as_ref().map(|s| {
            if result.is_ok() {
                &s.completed
            } else {
                &s.failed
            }
        });
        if let Some(c) = counter {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let delivered = self.complete(result);
        if let (false, Some(c)) = (delivered, counter) {
            c.fetch_sub(1, Ordering::Relaxed);
        }
        delivered
    }

    /// Delivers the result; returns false if the job was cancelled first
    /// (the result is then dropped).
    pub(crate) fn complete(&self, result: RawResult) -> bool {
        // Store before publishing DONE so a reader that sees DONE finds it.
        match self.result.lock() {
            Ok(mut r) => {
                if self.state.load(Ordering::Acquire) != PENDING {
                    return false;
                }
                *r = Some(result);
                if self
                    .state
                    .compare_exchange(PENDING, DONE, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    *r = None;
                    return false;
                }
            }
            Err(_) => return false,
        }
        self.release_queue_place();
        self.end_items();
        self.waker.wake();
        true
    }

    /// Marks the job cancelled unless its result is already in; returns
    /// whether the cancel took effect (true also if it was cancelled before).
    pub(crate) fn cancel(&self) -> bool {
        // Take the lock so a concurrent `complete` is either fully before
        // (we see DONE) or fully after (it sees CANCELLED).
        let _guard = self.result.lock();
        match self
            .state
            .compare_exchange(PENDING, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                if let Some(stats) = &self.stats {
                    stats.cancelled.fetch_add(1, Ordering::Relaxed);
                }
                self.release_queue_place();
                self.end_items();
                self.waker.wake();
                true
            }
            Err(state) => state == CANCELLED,
        }
    }

    pub(crate) fn is_pending(&self) -> bool {
        self.state.load(Ordering::Acquire) == PENDING
    }

    pub(crate) fn poll_result(&self, cx: &mut Context<'_>) -> Poll<RawResult> {
        if let Some(r) = self.try_take() {
            return Poll::Ready(r);
        }
        self.waker.register(cx.waker());
        match self.try_take() {
            Some(r) => Poll::Ready(r),
            None => Poll::Pending,
        }
    }

    fn try_take(&self) -> Option<RawResult> {
        match self.state.load(Ordering::Acquire) {
            DONE => Some(
                self.result
                    .lock()
                    .ok()
                    .and_then(|mut r| r.take())
                    .unwrap_or(Err(Error::Protocol {
                        message: "the job's result was already taken (polled after completion)"
                            .into(),
                    })),
            ),
            CANCELLED => Some(Err(Error::Cancelled)),
            _ => None,
        }
    }
}
