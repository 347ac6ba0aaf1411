//! `JobHandle`: the future a user awaits, and `ItemStream`, a streaming
//! job's items.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};

use crate::error::{Error, SerdeStage};
use crate::msg::{Command, JobId};
use crate::progress::Progress;
use crate::slot::{Encoded, RawResult, Slot};

/// The connection from a handle back to its pool, for cancelling.
#[derive(Clone)]
pub(crate) struct CancelLink {
    pub(crate) commands: tokio::sync::mpsc::UnboundedSender<Command>,
}

impl CancelLink {
    fn send_cancel(&self, id: JobId) {
        let _ = self.commands.send(Command::Cancel(id));
    }

    /// What dropping a handle or an item stream does: cancel the job
    /// unless it is already over.
    fn cancel_if_pending(&self, slot: &Slot, id: JobId) {
        if slot.is_pending() && slot.cancel() {
            self.send_cancel(id);
        }
    }
}

/// The untyped part of a handle: the slot, and the way back to the pool for
/// cancelling. Dropping it cancels the job unless it was detached.
pub(crate) struct RawHandle {
    id: JobId,
    slot: Arc<Slot>,
    link: Option<CancelLink>,
}

impl RawHandle {
    pub(crate) fn new(id: JobId, slot: Arc<Slot>, link: Option<CancelLink>) -> Self {
        RawHandle { id, slot, link }
    }

    pub(crate) fn failed(id: JobId, error: Error) -> Self {
        RawHandle::new(id, Slot::ready(Err(error)), None)
    }

    pub(crate) fn is_finished(&self) -> bool {
        !self.slot.is_pending()
    }

    pub(crate) fn cancel(&self) -> bool {
        let took_effect = self.slot.cancel();
        if took_effect {
            self.notify_cancel();
        }
        took_effect
    }

    fn notify_cancel(&self) {
        if let Some(link) = &self.link {
            link.send_cancel(self.id);
        }
    }

    pub(crate) fn detach(&mut self) {
        self.link = None;
    }

    pub(crate) fn slot(&self) -> &Arc<Slot> {
        &self.slot
    }

    pub(crate) fn progress(&self) -> watch::Receiver<Option<Progress>> {
        self.slot.progress_sender().subscribe()
    }

    pub(crate) fn poll_raw(&self, cx: &mut Context<'_>) -> Poll<RawResult> {
        self.slot.poll_result(cx)
    }
}

impl Drop for RawHandle {
    fn drop(&mut self) {
        if let Some(link) = &self.link {
            link.cancel_if_pending(&self.slot, self.id);
        }
    }
}

/// A submitted job: a future of the job's result.
///
/// Returned by [`ProcessPoolExecutor::submit`](crate::ProcessPoolExecutor::submit)
/// without awaiting anything; the job is already queued. Await it to get
/// `Result<T, Error>`.
///
/// **Dropping a `JobHandle` cancels its job** (a queued job is removed, a
/// running one is stopped; see [`cancel`](JobHandle::cancel)). To let a job
/// run to completion without awaiting it, call [`detach`](JobHandle::detach).
/// A handle does not keep its pool alive: if the last pool handle is dropped,
/// pending jobs resolve to [`Error::Shutdown`].
///
/// # Cancel safety
///
/// Awaiting a `&mut JobHandle` is cancel safe: dropping that future loses
/// nothing, and the handle can be awaited again. Dropping the handle itself
/// cancels the job, so `tokio::time::timeout(d, handle)` and `select!` over
/// an owned handle stop the work when they give up on it.
#[must_use = "dropping a JobHandle cancels its job; await it or call detach()"]
pub struct JobHandle<T> {
    raw: RawHandle,
    _output: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for JobHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobHandle")
            .field("id", &self.raw.id)
            .field("finished", &self.raw.is_finished())
            .finish()
    }
}

impl<T> JobHandle<T> {
    pub(crate) fn from_raw(raw: RawHandle) -> Self {
        JobHandle {
            raw,
            _output: PhantomData,
        }
    }

    /// A handle that is already resolved with `error`.
    pub(crate) fn failed(id: JobId, error: Error) -> Self {
        JobHandle::from_raw(RawHandle::failed(id, error))
    }

    /// The job's id.
    pub fn id(&self) -> JobId {
        self.raw.id
    }

    /// Whether the job has finished (successfully or not) or been cancelled,
    /// so that awaiting the handle returns at once.
    pub fn is_finished(&self) -> bool {
        self.raw.is_finished()
    }

    /// Cancels the job; returns whether the cancel took effect.
    ///
    /// A queued job is removed and never runs. A running job is asked to stop
    /// (a task can notice with [`procpool::cancelled()`](crate::cancelled);
    /// a running [`AsyncTask`](crate::AsyncTask) is dropped at its next
    /// `.await`), and if it has not finished after the pool's cancel grace period its
    /// worker is killed (with its process group) and replaced. Either way,
    /// awaiting the handle then gives [`Error::Cancelled`] at once.
    ///
    /// Returns `false` if the job had already finished: its result is kept
    /// and awaiting the handle returns it (like Python's `Future.cancel()`).
    pub fn cancel(&self) -> bool {
        self.raw.cancel()
    }

    /// Lets the job run to completion without awaiting it; its result is
    /// discarded. (Dropping the handle instead cancels the job.)
    pub fn detach(mut self) {
        self.raw.detach();
    }

    /// Watches the job's progress: the latest report the task made with
    /// [`report_progress`](crate::report_progress) (`None` until the first).
    /// The receiver can be moved to another task (for a progress bar) and
    /// outlives the handle; it sees no changes once the job is over.
    pub fn progress(&self) -> watch::Receiver<Option<Progress>> {
        self.raw.progress()
    }

    /// Waits for the result from synchronous code, blocking the thread.
    ///
    /// # Errors
    ///
    /// The job's error, as when awaiting the handle.
    ///
    /// # Panics
    ///
    /// Panics if called from within a tokio runtime thread, where blocking
    /// would stall other tasks; await the handle there instead.
    pub fn blocking_wait(self) -> Result<T, Error>
    where
        T: DeserializeOwned,
    {
        assert!(
            tokio::runtime::Handle::try_current().is_err(),
            "JobHandle::blocking_wait called from within a tokio runtime; await the handle instead"
        );
        futures::executor::block_on(self)
    }
}

impl<T: DeserializeOwned> Future for JobHandle<T> {
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.raw.poll_raw(cx) {
            Poll::Ready(raw) => Poll::Ready(raw.and_then(decode::<T>)),
            Poll::Pending => Poll::Pending,
        }
    }
}

pub(crate) fn decode<T: DeserializeOwned>(enc: Encoded) -> Result<T, Error> {
    decode_slice(enc.body.get(enc.offset..).unwrap_or_default())
}

pub(crate) fn decode_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(Error::Serialization {
            stage: SerdeStage::DecodeOutput,
            type_name: std::any::type_name::<T>().to_owned(),
            message: format!("{} bytes were left over after the output", rest.len()),
        }),
        Err(e) => Err(Error::Serialization {
            stage: SerdeStage::DecodeOutput,
            type_name: std::any::type_name::<T>().to_owned(),
            message: crate::serde_diag::decode_failure::<T>(bytes, &e),
        }),
    }
}

/// The items of a [`StreamTask`](crate::StreamTask) job, as a `Stream`,
/// from [`ProcessPoolExecutor::submit_stream`](crate::ProcessPoolExecutor::submit_stream).
///
/// Items arrive in the order the task emitted them. The stream ends when
/// the job is over; the job's final output (or error) is on its
/// [`JobHandle`]. Consuming an item lets the worker emit another: at most
/// 16 items wait on the host, so a slow consumer slows the producer.
///
/// Dropping the stream before it ends cancels the job (as dropping the
/// handle does); the task sees [`Emitter::emit`](crate::Emitter::emit)
/// return `false`.
#[must_use = "streams do nothing unless polled; dropping this one cancels the job"]
pub struct ItemStream<T> {
    id: JobId,
    rx: mpsc::UnboundedReceiver<Encoded>,
    slot: Arc<Slot>,
    link: CancelLink,
    /// Items consumed but not yet credited back to the worker.
    owed: u64,
    _item: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for ItemStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ItemStream").field("id", &self.id).finish()
    }
}

impl<T> ItemStream<T> {
    pub(crate) fn new(
        id: JobId,
        rx: mpsc::UnboundedReceiver<Encoded>,
        slot: Arc<Slot>,
        link: CancelLink,
    ) -> Self {
        ItemStream {
            id,
            rx,
            slot,
            link,
            owed: 0,
            _item: PhantomData,
        }
    }

    /// The job's id.
    pub fn id(&self) -> JobId {
        self.id
    }
}

impl<T: DeserializeOwned> futures::Stream for ItemStream<T> {
    type Item = Result<T, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(enc)) => {
                // The item left the host's buffer: the worker may emit one
                // more. Credits go back in small batches.
                self.owed += 1;
                if self.owed >= 8 || self.rx.is_empty() {
                    let n = std::mem::take(&mut self.owed);
                    let _ = self.link.commands.send(Command::Credit(self.id, n));
                }
                Poll::Ready(Some(decode::<T>(enc)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T> Drop for ItemStream<T> {
    fn drop(&mut self) {
        self.link.cancel_if_pending(&self.slot, self.id);
    }
}
