//! Many jobs at once: completion-order streams, job sets and `map`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::{BoxStream, FuturesUnordered, Stream, StreamExt};
use serde::de::DeserializeOwned;

use crate::error::{Error, stage_error};
use crate::handle::{JobHandle, RawHandle, decode_slice};
use crate::msg::JobId;
use crate::pool::ProcessPoolExecutor;
use crate::protocol::{self, ItemResult};
use crate::slot::Encoded;
use crate::task::Task;

/// A handle that yields its job id with its result.
struct Tagged<T>(JobHandle<T>);

impl<T: DeserializeOwned> Future for Tagged<T> {
    type Output = (JobId, Result<T, Error>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let id = self.0.id();
        Pin::new(&mut self.0).poll(cx).map(|r| (id, r))
    }
}

/// Yields the results of `handles` in the order the jobs finish, each with
/// its [`JobId`] (compare with [`JobHandle::id`] to tell them apart).
///
/// Dropping the stream drops the handles that have not yielded yet, which
/// cancels their jobs.
///
/// ```no_run
/// # async fn demo(pool: procpool::ProcessPoolExecutor) {
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Work(u64);
/// # impl procpool::Task for Work { type Output = u64; fn run(self) -> u64 { self.0 } }
/// use futures::StreamExt;
/// let handles: Vec<_> = (0..10).map(|i| pool.submit(Work(i))).collect();
/// let mut done = procpool::as_completed(handles);
/// while let Some((id, result)) = done.next().await {
///     println!("{id}: {result:?}");
/// }
/// # }
/// ```
pub fn as_completed<T, I>(handles: I) -> AsCompleted<T>
where
    T: DeserializeOwned,
    I: IntoIterator<Item = JobHandle<T>>,
{
    AsCompleted {
        set: handles.into_iter().map(Tagged).collect(),
    }
}

/// The stream returned by [`as_completed`].
#[must_use = "streams do nothing unless polled"]
pub struct AsCompleted<T> {
    set: FuturesUnordered<Tagged<T>>,
}

impl<T> fmt::Debug for AsCompleted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsCompleted")
            .field("pending", &self.set.len())
            .finish()
    }
}

impl<T: DeserializeOwned> Stream for AsCompleted<T> {
    type Item = (JobId, Result<T, Error>);

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.set.poll_next_unpin(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.set.len(), Some(self.set.len()))
    }
}

/// A set of jobs awaited in completion order, in the spirit of tokio's
/// `JoinSet`.
///
/// Dropping the set cancels every job still in it.
///
/// ```no_run
/// # async fn demo(pool: procpool::ProcessPoolExecutor) {
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Work(u64);
/// # impl procpool::Task for Work { type Output = u64; fn run(self) -> u64 { self.0 } }
/// let mut set = procpool::JobSet::new();
/// for i in 0..10 {
///     set.spawn(&pool, Work(i));
/// }
/// while let Some((id, result)) = set.join_next().await {
///     println!("{id}: {result:?}");
/// }
/// # }
/// ```
#[must_use = "dropping a JobSet cancels its jobs"]
pub struct JobSet<T> {
    set: FuturesUnordered<Tagged<T>>,
}

impl<T> fmt::Debug for JobSet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobSet")
            .field("len", &self.set.len())
            .finish()
    }
}

impl<T> Default for JobSet<T> {
    fn default() -> Self {
        JobSet {
            set: FuturesUnordered::new(),
        }
    }
}

impl<T: DeserializeOwned> JobSet<T> {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Submits `task` to `pool` and adds its job to the set.
    pub fn spawn<K>(&mut self, pool: &ProcessPoolExecutor, task: K) -> JobId
    where
        K: Task<Output = T>,
    {
        self.insert(pool.submit(task))
    }

    /// Adds an already submitted job to the set.
    pub fn insert(&mut self, handle: JobHandle<T>) -> JobId {
        let id = handle.id();
        self.set.push(Tagged(handle));
        id
    }

    /// Number of jobs in the set (including finished ones not yet joined).
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Waits for the next job to finish and removes it from the set;
    /// `None` when the set is empty.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped, no result is lost; the job
    /// stays in the set.
    pub async fn join_next(&mut self) -> Option<(JobId, Result<T, Error>)> {
        self.set.next().await
    }

    /// Removes a finished job without waiting, if there is one.
    pub fn try_join_next(&mut self) -> Option<(JobId, Result<T, Error>)> {
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        match self.set.poll_next_unpin(&mut cx) {
            Poll::Ready(r) => r,
            Poll::Pending => None,
        }
    }

    /// Waits for every job and returns the results in completion order.
    pub async fn join_all(mut self) -> Vec<(JobId, Result<T, Error>)> {
        let mut out = Vec::with_capacity(self.len());
        while let Some(r) = self.join_next().await {
            out.push(r);
        }
        out
    }

    /// Cancels every job in the set. They stay in the set: joining them
    /// yields [`Error::Cancelled`] (or the result, for jobs that had already
    /// finished).
    pub fn abort_all(&mut self) {
        for tagged in self.set.iter_mut() {
            tagged.0.cancel();
        }
    }

    /// Empties the set, letting its jobs run to completion unobserved.
    pub fn detach_all(&mut self) {
        for tagged in std::mem::take(&mut self.set) {
            tagged.0.detach();
        }
    }
}

impl ProcessPoolExecutor {
    /// Runs `task` on every item of `tasks` and yields the results in input
    /// order, keeping a bounded number of jobs in flight (see
    /// [`MapStream`] for the options: `in_flight`, `chunk_size`).
    ///
    /// Tasks are pulled from the iterator only as results are consumed, so
    /// a huge input never sits in memory. Each item yields its own
    /// `Result`; an error does not end the stream.
    ///
    /// ```no_run
    /// # async fn demo(pool: procpool::ProcessPoolExecutor) {
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Work(u64);
    /// # impl procpool::Task for Work { type Output = u64; fn run(self) -> u64 { self.0 } }
    /// use futures::StreamExt;
    /// let results: Vec<_> = pool
    ///     .map((0..1_000_000).map(Work))
    ///     .chunk_size(1000)
    ///     .collect()
    ///     .await;
    /// # }
    /// ```
    pub fn map<T, I>(&self, tasks: I) -> MapStream<T::Output>
    where
        T: Task,
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
    {
        MapStream::new(self, futures::stream::iter(tasks), true)
    }

    /// Like [`map`](Self::map), but yields results in completion order.
    pub fn map_unordered<T, I>(&self, tasks: I) -> MapStream<T::Output>
    where
        T: Task,
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
    {
        MapStream::new(self, futures::stream::iter(tasks), false)
    }

    /// Like [`map`](Self::map), with the tasks coming from a `Stream`.
    pub fn map_stream<T, S>(&self, tasks: S) -> MapStream<T::Output>
    where
        T: Task,
        S: Stream<Item = T> + Send + 'static,
    {
        MapStream::new(self, tasks, true)
    }

    /// Like [`map_unordered`](Self::map_unordered), with the tasks coming
    /// from a `Stream`.
    pub fn map_stream_unordered<T, S>(&self, tasks: S) -> MapStream<T::Output>
    where
        T: Task,
        S: Stream<Item = T> + Send + 'static,
    {
        MapStream::new(self, tasks, false)
    }
}

/// Settings of a [`MapStream`].
#[derive(Debug, Clone, Copy)]
struct MapOptions {
    in_flight: usize,
    chunk_size: usize,
    ordered: bool,
}

type MakeStream<O> = Box<dyn FnOnce(MapOptions) -> BoxStream<'static, Result<O, Error>> + Send>;

enum MapState<O> {
    Ready(MakeStream<O>, MapOptions),
    Running(BoxStream<'static, Result<O, Error>>),
    Done,
}

/// The stream of results returned by
/// [`ProcessPoolExecutor::map`](crate::ProcessPoolExecutor::map) and its
/// variants.
///
/// It pulls tasks from its input only as results are consumed, keeping at
/// most [`in_flight`](MapStream::in_flight) jobs submitted at a time, so a
/// long (or endless) input never sits in memory at once. Set the options
/// before the first poll. Dropping the stream cancels the jobs in flight.
/// The stream holds a clone of the pool, keeping it alive.
#[must_use = "streams do nothing unless polled"]
pub struct MapStream<O> {
    state: MapState<O>,
}

impl<O> fmt::Debug for MapStream<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            MapState::Ready(_, opts) => format!("not started, {opts:?}"),
            MapState::Running(_) => "running".into(),
            MapState::Done => "done".into(),
        };
        f.debug_struct("MapStream").field("state", &state).finish()
    }
}

impl<O: DeserializeOwned + Send + 'static> MapStream<O> {
    pub(crate) fn new<T, S>(pool: &ProcessPoolExecutor, tasks: S, ordered: bool) -> Self
    where
        T: Task<Output = O>,
        S: Stream<Item = T> + Send + 'static,
    {
        let pool = pool.clone();
        let opts = MapOptions {
            in_flight: pool.workers().max(1) * pool.jobs_per_worker().max(4),
            chunk_size: 1,
            ordered,
        };
        let make: MakeStream<O> = Box::new(move |opts: MapOptions| {
            let n = opts.in_flight.max(1);
            if opts.chunk_size <= 1 {
                // With a bounded queue, each job waits for room (as
                // `submit_wait` does) instead of failing with `Overloaded`.
                let jobs = tasks.map(move |t| {
                    let pool = pool.clone();
                    async move { pool.submit_wait(t).await.await }
                });
                if opts.ordered {
                    jobs.buffered(n).boxed()
                } else {
                    jobs.buffer_unordered(n).boxed()
                }
            } else {
                let batches = tasks.ready_chunks(opts.chunk_size).map(move |chunk| {
                    let pool = pool.clone();
                    let count = chunk.len();
                    async move {
                        let raw = pool
                            .submit_batch_wait(chunk, crate::JobOptions::default())
                            .await;
                        BatchJob::<O>::new(raw, count, std::any::type_name::<T>()).await
                    }
                });
                let batches = if opts.ordered {
                    batches.buffered(n).boxed()
                } else {
                    batches.buffer_unordered(n).boxed()
                };
                batches.flat_map(futures::stream::iter).boxed()
            }
        });
        MapStream {
            state: MapState::Ready(make, opts),
        }
    }

    fn options(mut self, f: impl FnOnce(&mut MapOptions)) -> Self {
        if let MapState::Ready(_, opts) = &mut self.state {
            f(opts);
        }
        self
    }

    /// How many jobs (or batches) may be submitted and unfinished at once
    /// (default: four per worker, or
    /// [`jobs_per_worker`](crate::Builder::jobs_per_worker) per worker if
    /// that is more). Only effective before the first poll.
    pub fn in_flight(self, n: usize) -> Self {
        self.options(|o| o.in_flight = n.max(1))
    }

    /// Sends tasks to the workers in batches of up to `n` (Python's
    /// `chunksize`): one frame and one round trip per batch instead of per
    /// task, which multiplies throughput for small tasks. The items of a
    /// batch run one after another on one worker; each still yields its own
    /// result (a panic fails only its item). A worker death or a cancel
    /// fails the whole batch. Default 1 (no batching). Only effective before
    /// the first poll.
    pub fn chunk_size(self, n: usize) -> Self {
        self.options(|o| o.chunk_size = n.max(1))
    }
}

impl<O: DeserializeOwned + Send + 'static> Stream for MapStream<O> {
    type Item = Result<O, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match &mut self.state {
                MapState::Running(s) => {
                    let r = s.poll_next_unpin(cx);
                    if let Poll::Ready(None) = r {
                        self.state = MapState::Done;
                    }
                    return r;
                }
                MapState::Done => return Poll::Ready(None),
                MapState::Ready(..) => {
                    let MapState::Ready(make, opts) =
                        std::mem::replace(&mut self.state, MapState::Done)
                    else {
                        return Poll::Ready(None);
                    };
                    self.state = MapState::Running(make(opts));
                }
            }
        }
    }
}

/// A batch job: resolves to one result per item.
struct BatchJob<O> {
    raw: RawHandle,
    count: usize,
    /// The task's type, for its errors.
    task: &'static str,
    _output: std::marker::PhantomData<fn() -> O>,
}

impl<O> BatchJob<O> {
    fn new(raw: RawHandle, count: usize, task: &'static str) -> Self {
        BatchJob {
            raw,
            count,
            task,
            _output: std::marker::PhantomData,
        }
    }
}

impl<O: DeserializeOwned> Future for BatchJob<O> {
    type Output = Vec<Result<O, Error>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (count, task) = (self.count, self.task);
        self.raw.poll_raw(cx).map(|r| match r {
            Ok(enc) => decode_batch::<O>(&enc, count, task),
            Err(e) => (0..count).map(|_| Err(e.clone())).collect(),
        })
    }
}

fn decode_batch<O: DeserializeOwned>(
    enc: &Encoded,
    count: usize,
    task: &str,
) -> Vec<Result<O, Error>> {
    let mut bytes = enc.body.get(enc.offset..).unwrap_or_default();
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let Some(item) = protocol::take_item_result(&mut bytes) else {
            break;
        };
        out.push(match item {
            ItemResult::Ok(b) => decode_slice::<O>(b),
            ItemResult::Panicked { message, location } => {
                Err(Error::Panicked { message, location })
            }
            ItemResult::Failed(stage, message) => Err(stage_error(stage, task, message)),
        });
    }
    while out.len() < count {
        out.push(Err(Error::Protocol {
            message: format!(
                "the worker returned {} results for a batch of {count}",
                out.len()
            ),
        }));
    }
    out
}
