//! Many jobs at once: completion-order streams, job sets and `map`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::{BoxStream, FuturesUnordered, Stream, StreamExt};
use serde::de::DeserializeOwned;

use crate::error::{Error, stage_error};
use crate::handle::{JobHandle, RawHandle, decode_slice};
use crate::msg::JobId;
use crate::options::JobOptions;
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

    /// Submits `task` to `pool` with per-job options (a timeout, retries:
    /// see [`ProcessPoolExecutor::submit_with`]) and adds its job to the
    /// set.
    pub fn spawn_with<K>(
        &mut self,
        pool: &ProcessPoolExecutor,
        task: K,
        options: JobOptions,
    ) -> JobId
    where
        K: Task<Output = T>,
    {
        self.insert(pool.submit_with(task, options))
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
    /// [`MapStream`] for the options: `in_flight`, `chunk_size`, and per-job
    /// `options`, `timeout`, `retries`; [`MapStream::indexed`] tells which
    /// input each result belongs to).
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
    /// `None`: the default, which depends on the chunk size.
    in_flight: Option<usize>,
    chunk_size: usize,
    ordered: bool,
    job: JobOptions,
}

/// A result with the position of its task in the input.
type Indexed<O> = (usize, Result<O, Error>);

type MakeStream<O> = Box<dyn FnOnce(MapOptions) -> BoxStream<'static, Indexed<O>> + Send>;

enum MapState<O> {
    Ready(MakeStream<O>, MapOptions),
    Running(BoxStream<'static, Indexed<O>>),
    Done,
}

/// How many jobs sent ahead each worker may hold by default
/// ([`Builder::prefetch`](crate::Builder::prefetch)); the default window
/// of an unbatched map covers them.
const DEFAULT_PREFETCH: usize = 32;

/// The default window of a map: for single tasks, enough jobs to keep
/// every worker's slots busy and its jobs sent ahead topped up, plus a few
/// per slot waiting in the pool's queue, so that no worker waits for the
/// map to submit its next task; for batches (which already amortize the
/// round trip) four per slot.
fn default_in_flight(workers: usize, jobs_per_worker: usize, chunk_size: usize) -> usize {
    let slots = workers.max(1) * jobs_per_worker.max(1);
    if chunk_size <= 1 {
        slots * 4 + workers.max(1) * DEFAULT_PREFETCH
    } else {
        slots * 4
    }
}

/// The options of one batch of `count` tasks: the per-task timeout times
/// `count`; retries as given (a retry runs the whole batch again).
fn batch_options(job: JobOptions, count: usize) -> JobOptions {
    let mut batch = job;
    if let Some(t) = job.timeout {
        batch.timeout = Some(t.saturating_mul(u32::try_from(count).unwrap_or(u32::MAX)));
    }
    batch
}

/// The stream of results returned by
/// [`ProcessPoolExecutor::map`](crate::ProcessPoolExecutor::map) and its
/// variants: one `Result` per task. [`indexed`](MapStream::indexed) adds
/// each task's position in the input.
///
/// It pulls tasks from its input only as results are consumed, keeping at
/// most [`in_flight`](MapStream::in_flight) jobs submitted at a time, so a
/// long (or endless) input never sits in memory at once. Set the options
/// ([`in_flight`](MapStream::in_flight),
/// [`chunk_size`](MapStream::chunk_size), [`options`](MapStream::options),
/// [`timeout`](MapStream::timeout), [`retries`](MapStream::retries)) before
/// the first poll. Dropping the stream cancels the jobs in flight. The
/// stream holds a clone of the pool, keeping it alive.
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
            in_flight: None,
            chunk_size: 1,
            ordered,
            job: JobOptions::default(),
        };
        let make: MakeStream<O> = Box::new(move |opts: MapOptions| {
            let n = opts.in_flight.unwrap_or_else(|| {
                default_in_flight(pool.workers(), pool.jobs_per_worker(), opts.chunk_size)
            });
            let n = n.max(1);
            let job = opts.job;
            let tasks = tasks.enumerate();
            if opts.chunk_size <= 1 {
                // With a bounded queue, each job waits for room (as
                // `submit_wait` does) instead of failing with `Overloaded`.
                let jobs = tasks.map(move |(i, t)| {
                    let pool = pool.clone();
                    async move { (i, pool.submit_wait_with(t, job).await.await) }
                });
                if opts.ordered {
                    jobs.buffered(n).boxed()
                } else {
                    jobs.buffer_unordered(n).boxed()
                }
            } else {
                // A chunk holds consecutive tasks: its results' positions
                // are the first task's plus their place in the chunk.
                let batches = tasks.ready_chunks(opts.chunk_size).map(move |chunk| {
                    let pool = pool.clone();
                    let first = chunk.first().map_or(0, |(i, _)| *i);
                    let chunk: Vec<T> = chunk.into_iter().map(|(_, t)| t).collect();
                    let count = chunk.len();
                    async move {
                        let raw = pool
                            .submit_batch_wait(chunk, batch_options(job, count))
                            .await;
                        let results =
                            BatchJob::<O>::new(raw, count, std::any::type_name::<T>()).await;
                        (first, results)
                    }
                });
                let batches = if opts.ordered {
                    batches.buffered(n).boxed()
                } else {
                    batches.buffer_unordered(n).boxed()
                };
                batches
                    .flat_map(|(first, results)| {
                        futures::stream::iter(
                            results
                                .into_iter()
                                .enumerate()
                                .map(move |(k, r)| (first + k, r)),
                        )
                    })
                    .boxed()
            }
        });
        MapStream {
            state: MapState::Ready(make, opts),
        }
    }

    fn configure(mut self, f: impl FnOnce(&mut MapOptions)) -> Self {
        if let MapState::Ready(_, opts) = &mut self.state {
            f(opts);
        }
        self
    }

    /// How many jobs (or batches) may be submitted and unfinished at once.
    /// Only effective before the first poll.
    ///
    /// The default keeps every worker busy without the map ever being the
    /// bottleneck: for single tasks, four per worker slot
    /// ([`workers`](crate::Builder::workers) ×
    /// [`jobs_per_worker`](crate::Builder::jobs_per_worker)) plus 32 per
    /// worker, as many jobs as a busy worker holds sent ahead at the
    /// default [`prefetch`](crate::Builder::prefetch) (with a smaller
    /// window, workers wait for the map to submit their next job: with 2
    /// workers and tiny jobs, a window of 8 ran at about a third of the
    /// rate); with a [`chunk_size`](Self::chunk_size) above 1, four batches
    /// per worker slot. A window is memory only: each job in it holds its
    /// encoded task and, in `map`, a finished result waiting for those
    /// before it.
    pub fn in_flight(self, n: usize) -> Self {
        self.configure(|o| o.in_flight = Some(n.max(1)))
    }

    /// Sends tasks to the workers in batches of up to `n` (Python's
    /// `chunksize`): one frame and one round trip per batch instead of per
    /// task, which multiplies throughput for small tasks. The items of a
    /// batch run one after another on one worker; each still yields its own
    /// result (a panic fails only its item). A batch is one job: its results
    /// arrive together when the whole batch is done, and a worker death, a
    /// timeout or a cancel fails every item of the batch (see
    /// [`options`](Self::options)). Default 1 (no batching). Only effective
    /// before the first poll.
    pub fn chunk_size(self, n: usize) -> Self {
        self.configure(|o| o.chunk_size = n.max(1))
    }

    /// Options for every job of this map, as
    /// [`submit_with`](crate::ProcessPoolExecutor::submit_with) takes for
    /// one job: a [timeout](JobOptions::timeout) and
    /// [retries](JobOptions::retries). Without them the pool's defaults
    /// apply ([`Builder::job_timeout`](crate::Builder::job_timeout), no
    /// retries). Only effective before the first poll.
    ///
    /// With a [`chunk_size`](Self::chunk_size) `k` above 1, a batch is one
    /// job, so:
    ///
    /// - the timeout given here is per task: a batch of `k` tasks gets `k`
    ///   times it, counted from when the batch starts on its worker. When
    ///   it expires, every task of the batch fails with
    ///   [`Error::TimedOut`] (whose `timeout` is the batch's), including
    ///   those that had finished, since a batch answers at once. The pool's
    ///   `job_timeout`, when no timeout is given here, applies to each
    ///   batch as a whole, not multiplied;
    /// - a retry runs the whole batch again (tasks that had finished run
    ///   twice), so retries are only for idempotent tasks, as always.
    pub fn options(self, options: JobOptions) -> Self {
        self.configure(|o| o.job = options)
    }

    /// Sets the timeout of every job of this map (per task, also in
    /// batches: see [`options`](Self::options)); shortcut for
    /// `options(JobOptions::new().timeout(timeout))` that keeps the other
    /// options.
    pub fn timeout(self, timeout: Duration) -> Self {
        self.configure(|o| o.job = o.job.timeout(timeout))
    }

    /// Sets the retries of every job of this map (a retry runs a whole
    /// batch again: see [`options`](Self::options)); shortcut for
    /// `options(JobOptions::new().retries(n))` that keeps the other
    /// options.
    pub fn retries(self, n: u32) -> Self {
        self.configure(|o| o.job = o.job.retries(n))
    }

    /// Yields each result with the position of its task in the input
    /// (0-based), so that a failure can be tied to what caused it. The
    /// order of the results is unchanged (input order for `map`,
    /// completion order for `map_unordered`). The options can be set before
    /// or after this call, up to the first poll.
    ///
    /// ```no_run
    /// # async fn demo(pool: procpool::ProcessPoolExecutor, files: Vec<String>) {
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Parse(String);
    /// # impl procpool::Task for Parse { type Output = u64; fn run(self) -> u64 { 0 } }
    /// use futures::StreamExt;
    /// use std::time::Duration;
    /// let mut results = pool
    ///     .map_unordered(files.clone().into_iter().map(Parse))
    ///     .timeout(Duration::from_millis(500))
    ///     .indexed();
    /// while let Some((i, result)) = results.next().await {
    ///     if let Err(e) = result {
    ///         eprintln!("{}: {e}", files[i]);
    ///     }
    /// }
    /// # }
    /// ```
    pub fn indexed(self) -> IndexedMapStream<O> {
        IndexedMapStream { inner: self }
    }

    fn poll_indexed(&mut self, cx: &mut Context<'_>) -> Poll<Option<Indexed<O>>> {
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

impl<O: DeserializeOwned + Send + 'static> Stream for MapStream<O> {
    type Item = Result<O, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_indexed(cx).map(|r| r.map(|(_, r)| r))
    }
}

/// A [`MapStream`] whose results come with the position of their task in
/// the input (0-based): made by [`MapStream::indexed`].
///
/// It has the same options as [`MapStream`] (set them before the first
/// poll) and behaves the same way otherwise: dropping it cancels the jobs
/// in flight.
#[must_use = "streams do nothing unless polled"]
pub struct IndexedMapStream<O> {
    inner: MapStream<O>,
}

impl<O> fmt::Debug for IndexedMapStream<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("IndexedMapStream")
            .field(&self.inner)
            .finish()
    }
}

impl<O: DeserializeOwned + Send + 'static> IndexedMapStream<O> {
    /// As [`MapStream::in_flight`].
    pub fn in_flight(self, n: usize) -> Self {
        self.inner.in_flight(n).indexed()
    }

    /// As [`MapStream::chunk_size`]; the positions stay those of the
    /// tasks, not of the batches.
    pub fn chunk_size(self, n: usize) -> Self {
        self.inner.chunk_size(n).indexed()
    }

    /// As [`MapStream::options`].
    pub fn options(self, options: JobOptions) -> Self {
        self.inner.options(options).indexed()
    }

    /// As [`MapStream::timeout`].
    pub fn timeout(self, timeout: Duration) -> Self {
        self.inner.timeout(timeout).indexed()
    }

    /// As [`MapStream::retries`].
    pub fn retries(self, n: u32) -> Self {
        self.inner.retries(n).indexed()
    }
}

impl<O: DeserializeOwned + Send + 'static> Stream for IndexedMapStream<O> {
    type Item = (usize, Result<O, Error>);

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_indexed(cx)
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
