//! The `Task` trait and the link-time registry that lets a worker find a
//! task's code.
//!
//! `register!` adds an entry to a `linkme` distributed slice. The host and
//! its workers run the same binary, so the slice is identical on both sides
//! and an entry's index is its wire key. The host finds the index by
//! `TypeId` (unique within a build, unlike `type_name`), and the handshake
//! compares a hash of the whole registry, so a worker built from other code
//! is refused instead of running the wrong task.

use std::any::TypeId;
use std::collections::HashMap;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::OnceLock;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::frame::EncodeError;
use crate::protocol::FailStage;

/// A unit of work that can run in a worker process.
///
/// The task value is serialized in the host, sent to a worker, deserialized
/// there and [`run`](Task::run); the output travels back the same way. Both
/// are encoded with [`postcard`](https://docs.rs/postcard), which is compact
/// and never runs code while decoding, but is not self-describing:
/// `#[serde(flatten)]`, untagged enums and `deserialize_any` do not work
/// (such a job fails with [`Error::Serialization`]).
///
/// Every task type must also be registered with [`register!`](crate::register)
/// so workers can find its code.
///
/// For an `async fn run`, implement [`AsyncTask`](crate::AsyncTask) instead:
/// every async task is a `Task` through a blanket impl, so it is submitted
/// and registered the same way.
///
/// Often a plain fn is all a task needs: [`#[procpool::task]`](crate::task)
/// on a `fn` (or an `async fn`) generates the struct, this impl and the
/// registration, so `pool.submit(square::new(7))` runs `square(7)` in a
/// worker.
///
/// # Performance: mark byte buffers with `serde_bytes`
///
/// serde sees a plain `Vec<u8>` (or `&[u8]`, `[u8; N]`) as a sequence of
/// separate `u8` values, so it is encoded and decoded one byte at a time:
/// moving 300 MB that way ran at 127–275 MB/s, against 350–623 MB/s for
/// the same bytes marked `#[serde(with = "serde_bytes")]` (the
/// [`serde_bytes`](https://docs.rs/serde_bytes) crate), which are copied
/// as one block. Mark every large byte buffer in tasks and outputs:
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Compress {
///     #[serde(with = "serde_bytes")]
///     data: Vec<u8>,
/// }
///
/// impl procpool::Task for Compress {
///     type Output = serde_bytes::ByteBuf; // the same for outputs
///     fn run(self) -> serde_bytes::ByteBuf {
///         serde_bytes::ByteBuf::from(self.data) // (the real work here)
///     }
/// }
/// procpool::register!(Compress);
/// ```
///
/// # Example
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Square(u64);
///
/// impl procpool::Task for Square {
///     type Output = u64;
///     fn run(self) -> u64 {
///         self.0 * self.0
///     }
/// }
/// procpool::register!(Square);
/// ```
pub trait Task: Serialize + DeserializeOwned + Send + 'static {
    /// What the task returns to the host.
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// Runs the task inside a worker process.
    ///
    /// A panic here fails the job with [`Error::Panicked`], which carries
    /// the panic's message and location, and the worker keeps serving. In
    /// a binary built with `panic = "abort"` the job fails the same way,
    /// but the worker process ends with the panic and the pool replaces
    /// it.
    fn run(self) -> Self::Output;

    /// The async entry point of an [`AsyncTask`](crate::AsyncTask); `None`
    /// for every other task. Not for direct use: do not override it.
    #[doc(hidden)]
    fn __async_entry() -> Option<AsyncEntry> {
        None
    }
}

/// A task that emits many items while it runs (a generator, in Python
/// terms), then returns a final output.
///
/// Submit it with
/// [`ProcessPoolExecutor::submit_stream`](crate::ProcessPoolExecutor::submit_stream),
/// which returns an [`ItemStream`](crate::ItemStream) of the items and a
/// [`JobHandle`](crate::JobHandle) of the output. Flow control is built in:
/// [`Emitter::emit`] blocks while the host holds 16 unconsumed items, so a
/// slow consumer slows the producer instead of growing memory. Register
/// the type with [`register_stream!`](crate::register_stream).
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Countdown(u32);
///
/// impl procpool::StreamTask for Countdown {
///     type Item = u32;
///     type Output = String;
///     fn run(self, items: &mut procpool::Emitter<u32>) -> String {
///         for i in (1..=self.0).rev() {
///             if !items.emit(i) {
///                 return "stopped".into(); // the consumer went away
///             }
///         }
///         "liftoff".into()
///     }
/// }
/// procpool::register_stream!(Countdown);
/// ```
pub trait StreamTask: Serialize + DeserializeOwned + Send + 'static {
    /// What the task emits while it runs.
    type Item: Serialize + DeserializeOwned + Send + 'static;
    /// What it returns at the end.
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// Runs the task inside a worker, emitting items through `items`.
    fn run(self, items: &mut Emitter<Self::Item>) -> Self::Output;
}

/// Sends the items of a [`StreamTask`] to the host.
#[derive(Debug)]
pub struct Emitter<T> {
    _item: std::marker::PhantomData<fn(T)>,
}

impl<T: Serialize> Emitter<T> {
    /// Sends `item` to the host, first waiting while the host holds as
    /// many unconsumed items as the flow-control window allows.
    ///
    /// Returns `false` if the job was cancelled (for example the host
    /// dropped the item stream): stop producing and return.
    ///
    /// # Panics
    ///
    /// Panics if `item` fails to serialize or is larger than the pool's
    /// maximum frame size (the job then fails with [`Error::Panicked`]
    /// naming the serialization error, and the field where it happened,
    /// at the caller's `emit` line).
    #[track_caller]
    pub fn emit(&mut self, item: T) -> bool {
        let Some(sink) = ITEM_SINK.get() else {
            // Not in a worker: there is no host to send to.
            return false;
        };
        let sent = sink(&mut |buf| {
            crate::frame::encode_into(&item, buf, crate::frame::worker_max())
                .map_err(|e| encode_message(&item, &e))
        });
        match sent {
            Ok(sent) => sent,
            Err(message) => panic!("a streamed item failed to serialize: {message}"),
        }
    }
}

/// Appends one encoded item to the frame being built in the buffer; the
/// error is why it could not be encoded.
pub(crate) type PutItem<'a> = &'a mut dyn FnMut(&mut Vec<u8>) -> Result<(), String>;

/// Where [`Emitter::emit`] sends items: given the item's encoder, it sends
/// the item of the job the caller runs in, waiting for flow-control credit
/// first, and returns false if the job was cancelled (or the caller runs
/// no job). The error says why the item could not be sent.
pub(crate) type ItemSink = Box<dyn Fn(PutItem<'_>) -> Result<bool, String> + Send + Sync>;

/// Installed by the worker when it starts (the worker sits above this
/// module; like [`crate::progress::SINK`], this hook is how a task reaches
/// it). Unset in every other process.
pub(crate) static ITEM_SINK: OnceLock<ItemSink> = OnceLock::new();

/// A panic caught in the worker: its message and, if the worker's panic
/// hook saw it, where it happened (`file:line:column`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Panic {
    pub(crate) message: String,
    pub(crate) location: Option<String>,
}

impl Panic {
    /// The panic `catch_unwind` caught with `payload` on this thread, with
    /// the location the panic hook recorded for it.
    pub(crate) fn caught(payload: &(dyn std::any::Any + Send)) -> Panic {
        let message = panic_message(payload);
        let recorded = LAST_PANIC
            .try_with(|p| p.try_borrow_mut().ok().and_then(|mut p| p.take()))
            .ok()
            .flatten();
        // The hook's record is this panic's unless another panic, caught
        // inside the task, came after it.
        let location = recorded.and_then(|(m, at)| (m == message).then_some(at));
        Panic { message, location }
    }

    /// A failure reported as a panic, with no location.
    pub(crate) fn without_location(message: impl Into<String>) -> Panic {
        Panic {
            message: message.into(),
            location: None,
        }
    }
}

thread_local! {
    /// The last panic on this thread, as the worker's panic hook saw it:
    /// its message and location.
    static LAST_PANIC: std::cell::RefCell<Option<(String, String)>> =
        const { std::cell::RefCell::new(None) };
}

/// Called by the worker's panic hook: remembers where the panic with this
/// message happened, for [`Panic::caught`] on this thread.
pub(crate) fn record_panic(message: String, location: String) {
    let _ = LAST_PANIC.try_with(|p| {
        if let Ok(mut p) = p.try_borrow_mut() {
            *p = Some((message, location));
        }
    });
}

/// Why a task failed inside the worker without killing it.
pub(crate) enum RunFailure {
    Panicked(Panic),
    Failed(FailStage, String),
    /// An async task was dropped because its job was cancelled.
    Cancelled,
}

/// The future of an async job: its encoded output, or why it failed.
pub(crate) type AsyncRun = Pin<Box<dyn Future<Output = Result<Vec<u8>, RunFailure>> + Send>>;

/// Decodes an async task and returns the future that runs it.
pub(crate) type StartFn = fn(&[u8]) -> Result<AsyncRun, RunFailure>;

/// The async entry point of a registered task (see
/// [`AsyncTask`](crate::AsyncTask)). Not for direct use.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct AsyncEntry {
    pub(crate) start: StartFn,
}

impl std::fmt::Debug for AsyncEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AsyncEntry")
    }
}

/// Decodes, runs and encodes a blocking task on the calling thread.
pub(crate) type RunFn = fn(&[u8], &mut Vec<u8>) -> Result<(), RunFailure>;

/// How a registered task runs; the worker decides where.
#[derive(Clone, Copy)]
pub(crate) enum Runner {
    /// Every task but an async one.
    Blocking(RunFn),
    /// An async task: decoding it gives the future that runs it.
    Async(StartFn),
}

/// One registered task type. Built by `register!`; not for direct use.
#[doc(hidden)]
pub struct TaskEntry {
    type_name: fn() -> &'static str,
    type_id: fn() -> TypeId,
    run: RunFn,
    async_entry: fn() -> Option<AsyncEntry>,
    file: &'static str,
    line: u32,
}

impl std::fmt::Debug for TaskEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskEntry")
            .field("type_name", &self.type_name())
            .field("site", &self.site())
            .finish()
    }
}

impl TaskEntry {
    /// The entry for streaming task type `T`, registered at `file:line`.
    pub const fn new_stream<T: StreamTask>(file: &'static str, line: u32) -> Self {
        TaskEntry {
            type_name: std::any::type_name::<T>,
            type_id: TypeId::of::<T>,
            run: run_stream_task::<T>,
            async_entry: no_async_entry,
            file,
            line,
        }
    }

    /// The entry for task type `T`, registered at `file:line`.
    pub const fn new<T: Task>(file: &'static str, line: u32) -> Self {
        TaskEntry {
            type_name: std::any::type_name::<T>,
            type_id: TypeId::of::<T>,
            run: run_task::<T>,
            async_entry: T::__async_entry,
            file,
            line,
        }
    }

    pub(crate) fn type_name(&self) -> &'static str {
        (self.type_name)()
    }

    fn site(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

/// The registry, filled by the linker.
#[doc(hidden)]
#[linkme::distributed_slice]
pub static TASKS: [TaskEntry];

/// Decodes the task, runs it, and appends the encoded output to `out`.
fn run_task<T: Task>(payload: &[u8], out: &mut Vec<u8>) -> Result<(), RunFailure> {
    run_decoded::<T, T::Output>(payload, out, T::run)
}

fn run_stream_task<T: StreamTask>(payload: &[u8], out: &mut Vec<u8>) -> Result<(), RunFailure> {
    run_decoded::<T, T::Output>(payload, out, |t| {
        let mut items = Emitter {
            _item: std::marker::PhantomData,
        };
        t.run(&mut items)
    })
}

fn no_async_entry() -> Option<AsyncEntry> {
    None
}

fn run_decoded<T, O>(
    payload: &[u8],
    out: &mut Vec<u8>,
    run: impl FnOnce(T) -> O,
) -> Result<(), RunFailure>
where
    T: DeserializeOwned,
    O: Serialize,
{
    let task: T = decode_task(payload)?;
    let output = catch_unwind(AssertUnwindSafe(move || run(task)))
        .map_err(|p| RunFailure::Panicked(Panic::caught(p.as_ref())))?;
    encode_output(&output, out)
}

/// Decodes a task; a user's `Deserialize` may panic, which is a decode
/// failure of this job, not a reason for the worker to die.
pub(crate) fn decode_task<T: DeserializeOwned>(payload: &[u8]) -> Result<T, RunFailure> {
    let decoded = catch_unwind(AssertUnwindSafe(|| postcard::take_from_bytes::<T>(payload)));
    match decoded {
        Ok(Ok((task, []))) => Ok(task),
        Ok(Ok((_, rest))) => Err(RunFailure::Failed(
            FailStage::DecodeTask,
            format!("{} bytes were left over after the task", rest.len()),
        )),
        Ok(Err(e)) => Err(RunFailure::Failed(
            FailStage::DecodeTask,
            crate::serde_diag::decode_failure::<T>(payload, &e),
        )),
        Err(p) => Err(RunFailure::Failed(
            FailStage::DecodeTask,
            format!("deserializing panicked: {}", panic_message(p.as_ref())),
        )),
    }
}

/// Appends the encoded `output` to `out` (leaving `out` as it was if that
/// fails). An output larger than the worker's maximum frame size fails as
/// soon as its encoding passes it.
pub(crate) fn encode_output<O: Serialize>(output: &O, out: &mut Vec<u8>) -> Result<(), RunFailure> {
    let start = out.len();
    let max = crate::frame::worker_max();
    let encoded = catch_unwind(AssertUnwindSafe(|| {
        crate::frame::encode_into(output, out, max)
    }));
    let failure = match encoded {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e)) => encode_message(output, &e),
        Err(p) => format!("serializing panicked: {}", panic_message(p.as_ref())),
    };
    out.truncate(start);
    Err(RunFailure::Failed(FailStage::EncodeOutput, failure))
}

/// What a user reads for `value`, which failed to encode with `e`: the
/// serde message at its field path (found by serializing it again, only
/// now that it failed), or that it is too large.
pub(crate) fn encode_message<T: Serialize + ?Sized>(value: &T, e: &EncodeError) -> String {
    match e {
        EncodeError::Serde(e) => crate::serde_diag::encode_failure(value, e),
        EncodeError::TooLarge { .. } => e.to_string(),
    }
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

/// How to run the task at `index` of the registry.
pub(crate) fn runner(index: u32) -> Result<Runner, RunFailure> {
    let Some(entry) = TASKS.get(index as usize) else {
        return Err(RunFailure::Failed(
            FailStage::UnknownTask,
            format!("the worker has no task number {index}"),
        ));
    };
    Ok(match (entry.async_entry)() {
        None => Runner::Blocking(entry.run),
        Some(entry) => Runner::Async(entry.start),
    })
}

/// The async entry point of the task at `index`, if it is an async task.
pub(crate) fn async_start(index: u32) -> Option<StartFn> {
    match runner(index) {
        Ok(Runner::Async(start)) => Some(start),
        Ok(Runner::Blocking(_)) | Err(_) => None,
    }
}

pub(crate) fn type_name_at(index: u32) -> String {
    TASKS
        .get(index as usize)
        .map(|e| e.type_name().to_owned())
        .unwrap_or_else(|| format!("task #{index}"))
}

struct Index {
    by_type: HashMap<TypeId, u32>,
    duplicate: Option<Error>,
}

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut by_type = HashMap::with_capacity(TASKS.len());
        let mut duplicate = None;
        for (i, entry) in TASKS.iter().enumerate() {
            let Ok(i) = u32::try_from(i) else { break };
            if let Some(prev) = by_type.insert((entry.type_id)(), i) {
                let first = &TASKS[prev as usize];
                duplicate.get_or_insert(Error::DuplicateRegistration {
                    type_name: entry.type_name(),
                    first: first.site(),
                    second: entry.site(),
                });
                by_type.insert((entry.type_id)(), prev);
            }
        }
        Index { by_type, duplicate }
    })
}

/// The wire key of task type `T`.
pub(crate) fn index_of<T: 'static>() -> Result<u32, Error> {
    index()
        .by_type
        .get(&TypeId::of::<T>())
        .copied()
        .ok_or(Error::NotRegistered {
            type_name: std::any::type_name::<T>(),
        })
}

/// A registry error that makes the whole binary unusable as a pool host.
pub(crate) fn check() -> Result<(), Error> {
    match &index().duplicate {
        Some(e) => Err(e.clone()),
        None => Ok(()),
    }
}

/// A fingerprint of this build: the crate version, the protocol version and
/// every registered task in order. Host and worker must agree on it.
pub(crate) fn build_id() -> u64 {
    static ID: OnceLock<u64> = OnceLock::new();
    *ID.get_or_init(|| {
        let mut h = Fnv::default();
        env!("CARGO_PKG_VERSION").hash(&mut h);
        crate::protocol::VERSION.hash(&mut h);
        for entry in TASKS.iter() {
            entry.type_name().hash(&mut h);
            entry.file.hash(&mut h);
            entry.line.hash(&mut h);
            (entry.type_id)().hash(&mut h);
        }
        h.finish()
    })
}

/// FNV-1a: stable across processes, unlike `RandomState`.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Registers a [`Task`] type so worker processes can run it.
///
/// Put it next to the `impl Task`; no runtime call is needed (the linker
/// collects the registrations). Registering a type twice in one binary is
/// reported by `build()` with both sites.
///
/// A task defined in another crate of yours is only registered if that crate
/// is linked into the binary: if nothing else uses it, add
/// `use that_crate as _;`.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// #[derive(Serialize, Deserialize)]
/// struct Echo(String);
///
/// impl procpool::Task for Echo {
///     type Output = String;
///     fn run(self) -> String { self.0 }
/// }
///
/// procpool::register!(Echo);
/// ```
#[macro_export]
macro_rules! register {
    ($task:ty) => {
        const _: () = {
            #[$crate::__private::linkme::distributed_slice($crate::__private::TASKS)]
            #[linkme(crate = $crate::__private::linkme)]
            static ENTRY: $crate::__private::TaskEntry =
                $crate::__private::TaskEntry::new::<$task>(::core::file!(), ::core::line!());
        };
    };
}

/// Registers a [`StreamTask`] type so worker processes can run it (the
/// [`register!`](crate::register) of streaming tasks).
#[macro_export]
macro_rules! register_stream {
    ($task:ty) => {
        const _: () = {
            #[$crate::__private::linkme::distributed_slice($crate::__private::TASKS)]
            #[linkme(crate = $crate::__private::linkme)]
            static ENTRY: $crate::__private::TaskEntry =
                $crate::__private::TaskEntry::new_stream::<$task>(::core::file!(), ::core::line!());
        };
    };
}
