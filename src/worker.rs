//! The worker side: the `init()` guard and the loop that serves jobs.
//!
//! A worker has two threads. The reader thread reads frames from the host:
//! jobs go to the runner thread, cancels set a flag the running task can
//! poll, and end of input (the host shut the worker down, or died) ends the
//! process at once, even in the middle of a job. The runner thread runs one
//! job at a time and writes its result. With `jobs_per_worker > 1` the
//! worker runs several jobs at once instead (see [`concurrent`]). How one
//! task runs, blocking or async, is in [`run`].
//!
//! The worker sits above the task modules: a task reaches it only through
//! the hooks it installs when it starts ([`crate::task::ITEM_SINK`] for
//! streamed items, [`crate::progress::SINK`] for progress reports).

use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Condvar, Mutex};

use crate::frame::{self, FrameError, SyncFrameReader};
use crate::job::{self, JobCtx};
use crate::protocol::{self, FailStage, ToWorker};
use crate::sys;
use crate::task::{Panic, PutItem, RunFailure};

mod concurrent;
mod run;

use run::run_registered;

/// Environment variable that marks a process as a worker; its value is the
/// host's pid, so a stale value left in a shell is not mistaken for a host.
pub(crate) const MARKER_ENV: &str = "PROCPOOL_WORKER";
/// Environment variable carrying the maximum frame size.
pub(crate) const MAX_FRAME_ENV: &str = "PROCPOOL_MAX_FRAME";
/// Environment variable carrying the niceness added to workers.
pub(crate) const NICE_ENV: &str = "PROCPOOL_NICE";
/// Environment variable that keeps core dumps enabled in workers.
pub(crate) const CORE_DUMPS_ENV: &str = "PROCPOOL_CORE_DUMPS";
/// Environment variable carrying how many jobs a worker runs at once.
pub(crate) const JOBS_ENV: &str = "PROCPOOL_JOBS_PER_WORKER";

/// Exit code of a worker whose host went away before it started.
const EXIT_ORPHANED: i32 = 101;
/// Exit code of a worker that received a malformed frame.
const EXIT_PROTOCOL: i32 = 102;
/// Exit code of a process that was started as a worker but did not call
/// `init()` before building a pool.
pub(crate) const EXIT_MISSING_INIT: i32 = 103;
/// Exit code of a worker that could not write to the host.
const EXIT_IO: i32 = 104;

/// The worker guard: call it first thing in `main`.
///
/// In a process that the pool started as a worker, `init()` serves jobs
/// until the host closes the connection and then exits the process; it never
/// returns. In every other process it returns at once and costs one
/// environment lookup.
///
/// It must run before anything writes to stdout, and before the program
/// builds a pool: a worker that reaches pool construction without it is
/// stopped with an error naming `procpool::init()`, never a recursive spawn.
///
/// Works as the first line of a plain `fn main` and of a `#[tokio::main]
/// async fn main` (the worker loop runs on a fresh thread, so tasks may build
/// their own runtimes). For test binaries, benches, and binaries whose
/// `main` you do not write, use [`init_before_main!`](crate::init_before_main).
///
/// # Panics
///
/// Never returns in a worker; exits with a non-zero code (and a message on
/// stderr) if the process was started as a worker of a host that has
/// already exited.
pub fn init() {
    let Some(marker) = std::env::var_os(MARKER_ENV) else {
        return;
    };
    sys::remove_env(MARKER_ENV);
    let host = marker_host(&marker);
    sys::set_parent_death_signal();
    if host.is_none() || host != Some(sys::parent_pid()) {
        eprintln!(
            "procpool: this process was started as a worker of process {marker:?}, which is not \
             its parent (the host has exited, or {MARKER_ENV} was set by hand); exiting"
        );
        sys::exit_now(EXIT_ORPHANED);
    }
    // `ps`, `top` and `pgrep` show the program's name, not `exe`.
    sys::name_after_program();
    // A worker holds its three pipes and nothing else the host had open:
    // descriptors the host inherited without close-on-exec must not reach
    // the jobs or the processes they start.
    sys::close_inherited_fds();
    if std::env::var_os(CORE_DUMPS_ENV).is_none() {
        sys::disable_core_dumps();
    }
    if let Some(nice) = std::env::var(NICE_ENV).ok().and_then(|v| v.parse().ok()) {
        sys::renice(nice);
    }
    let max_frame = std::env::var(MAX_FRAME_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(frame::DEFAULT_MAX_FRAME);
    let jobs = std::env::var(JOBS_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1usize)
        .max(1);
    // A fresh thread: `init()` may be called inside a runtime, and tasks may
    // build runtimes of their own.
    let code = std::thread::Builder::new()
        .name("procpool-worker".into())
        .spawn(move || serve(max_frame, jobs))
        .map(|t| t.join().unwrap_or(EXIT_IO))
        .unwrap_or(EXIT_IO);
    sys::exit_now(code)
}

/// The host pid a worker marker names, if it is well-formed.
fn marker_host(marker: &std::ffi::OsStr) -> Option<u32> {
    marker.to_str().and_then(|s| s.parse().ok())
}

/// Called from `Builder::build`: if this process is a worker that skipped
/// `init()`, tell the host and stop before anything recursive happens.
pub(crate) fn refuse_pool_in_unguarded_worker() {
    let Some(marker) = std::env::var_os(MARKER_ENV) else {
        return;
    };
    if marker_host(&marker) != Some(sys::parent_pid()) {
        // A stale marker (not our parent): this is an ordinary host.
        return;
    }
    let _ = std::io::stdout().flush();
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(protocol::MISSING_INIT_MAGIC);
    let _ = out.flush();
    eprintln!(
        "procpool: this process was started as a worker, but it reached \
         `ProcessPoolExecutor::builder().build()` without calling `procpool::init()` first. \
         Add `procpool::init();` as the first line of `main` (or \
         `procpool::init_before_main!();` in a test binary). Exiting instead of starting a \
         pool of its own."
    );
    sys::exit_now(EXIT_MISSING_INIT);
}

fn serve(max_frame: usize, jobs: usize) -> i32 {
    // The protocol moves off fd 0 and fd 1 before any job runs: a task's
    // `println!` (or a C library writing to fd 1) then goes to stderr, and a
    // task reading stdin sees EOF.
    let (input, mut output) = match (sys::dup_cloexec(0), sys::dup_cloexec(1)) {
        (Ok(i), Ok(o)) => (i, o),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("procpool worker: could not set up its channel: {e}");
            return EXIT_IO;
        }
    };
    if let Err(e) = sys::dup2(2, 1).and_then(|()| sys::stdin_from_dev_null()) {
        eprintln!("procpool worker: could not redirect stdio: {e}");
        return EXIT_IO;
    }
    sys::set_pipe_size(input.as_raw_fd(), 1 << 20);
    sys::set_pipe_size(output.as_raw_fd(), 1 << 20);

    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(protocol::MAGIC);
    let hello = frame::append_frame(&mut buf, max_frame, |buf| {
        protocol::put_hello(buf, crate::task::build_id(), std::process::id());
        Ok::<(), FrameError>(())
    });
    if hello.is_err() || output.write_all(&buf).is_err() {
        return EXIT_IO;
    }

    frame::set_worker_max(max_frame);
    let ctx = Arc::new(Worker {
        local: Mutex::new(Local::default()),
        wake: Condvar::new(),
        input: Mutex::new(SyncFrameReader::new(input, max_frame)),
        output: Mutex::new(output),
        max_frame,
    });
    install_panic_hook(ctx.clone());
    let sink = ctx.clone();
    let _ = crate::progress::SINK.set(Box::new(move |id, done, total, message| {
        // A report too large for a frame is dropped.
        let report = frame::build(32, sink.max_frame, |f| {
            protocol::put_progress(f, id, done, total, message);
        });
        if let Ok(f) = report {
            sink.write(&f);
        }
    }));
    let items = ctx.clone();
    let _ = crate::task::ITEM_SINK.set(Box::new(move |put| items.emit_item(put)));
    if jobs > 1 {
        ctx.serve_concurrent(jobs)
    }
    let other = ctx.clone();
    if std::thread::Builder::new()
        .name("procpool-worker-2".into())
        .spawn(move || other.serve())
        .is_err()
    {
        return EXIT_IO;
    }
    ctx.serve()
}

/// A worker's two threads share this. Whichever thread is free reads the
/// next frame; a thread that reads a job while no job runs runs it itself
/// (after waking the other thread to take over reading), so a job never
/// waits for a thread switch, and a cancel or the end of input is noticed
/// while a job runs.
struct Worker {
    local: Mutex<Local>,
    wake: Condvar,
    input: Mutex<SyncFrameReader<std::fs::File>>,
    output: Mutex<std::fs::File>,
    max_frame: usize,
}

#[derive(Default)]
struct Local {
    /// Jobs received and not started (the host may send some ahead).
    queue: VecDeque<Queued>,
    running: bool,
    reading: bool,
    /// Jobs running (with `jobs_per_worker > 1`).
    active: usize,
}

impl Local {
    /// Takes the next queued job and registers it as running, in one step
    /// under the queue lock, so a cancel finds it either queued or running.
    fn start_next(&mut self) -> Option<(Queued, Arc<JobCtx>)> {
        let job = self.queue.pop_front()?;
        let ctx = job::start(job.id);
        Some((job, ctx))
    }
}

/// A job frame waiting in the worker, with the fields the worker needs
/// before running it.
struct Queued {
    id: u64,
    /// Sent ahead: its start must be announced.
    ahead: bool,
    body: Vec<u8>,
}

enum Role {
    Read,
    Run(Queued, Arc<JobCtx>),
}

impl Worker {
    fn lock(&self) -> std::sync::MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self, bytes: &[u8]) {
        let mut out = self.output.lock().unwrap_or_else(|p| p.into_inner());
        if out.write_all(bytes).is_err() {
            // The host is gone.
            sys::exit_now(EXIT_IO);
        }
    }

    /// Sends one item of the streaming job the caller runs in, waiting for
    /// flow-control credit first. Returns false if the job was cancelled,
    /// and why if the item failed to encode or is too large for a frame
    /// (the task's `emit` then panics, failing its job).
    fn emit_item(&self, put: PutItem<'_>) -> Result<bool, String> {
        let Some(ctx) = job::current() else {
            return Ok(false);
        };
        if !ctx.take_credit() {
            return Ok(false);
        }
        let mut f = Vec::with_capacity(64);
        let framed = frame::write_frame(&mut f, self.max_frame, |f| {
            protocol::put_item_header(f, ctx.id);
            put(f).map_err(ItemError::Encode)
        });
        match framed {
            Ok(()) => {}
            Err(ItemError::Encode(message)) => return Err(message),
            Err(ItemError::Frame(e)) => return Err(format!("it is too large: {e}")),
        }
        self.write(&f);
        Ok(true)
    }

    /// Writes `bytes` to the host from the panic hook of a process about
    /// to abort. Waits a bounded time for the output: the panicking thread
    /// itself may hold it, and the process must still end.
    fn write_before_abort(&self, bytes: &[u8]) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            let out = match self.output.try_lock() {
                Ok(out) => Some(out),
                Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            };
            if let Some(mut out) = out {
                let _ = out.write_all(bytes);
                return;
            }
            if std::time::Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    fn serve(&self) -> ! {
        let mut out = Vec::with_capacity(4096);
        let mut scratch = Vec::new();
        loop {
            let role = {
                let mut st = self.lock();
                loop {
                    if !st.running {
                        if let Some((job, ctx)) = st.start_next() {
                            st.running = true;
                            if !st.reading {
                                // Someone must keep reading while we run.
                                self.wake.notify_one();
                            }
                            break Role::Run(job, ctx);
                        }
                    }
                    if !st.reading {
                        st.reading = true;
                        break Role::Read;
                    }
                    st = self.wake.wait(st).unwrap_or_else(|p| p.into_inner());
                }
            };
            match role {
                Role::Read => self.read_one(),
                Role::Run(job, ctx) => self.run_jobs(job, ctx, &mut out, &mut scratch),
            }
        }
    }

    fn read_one(&self) {
        let next = self
            .input
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next_frame();
        let body = match next {
            Ok(Some(body)) => body,
            // End of input: the host shut this worker down or went away.
            // Exit now, even mid-job; nothing can receive the result.
            Ok(None) => {
                let _ = std::io::stdout().flush();
                sys::exit_now(0)
            }
            Err(e) => {
                eprintln!("procpool worker: reading from the host failed: {e}; exiting");
                sys::exit_now(EXIT_PROTOCOL);
            }
        };
        let msg = match protocol::decode_to_worker(&body) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("procpool worker: the host sent {e}; exiting");
                sys::exit_now(EXIT_PROTOCOL);
            }
        };
        let mut st = self.lock();
        st.reading = false;
        match msg {
            ToWorker::Job { .. } | ToWorker::Batch { .. } => {
                let (id, ahead) = (msg.id(), msg.is_ahead());
                st.queue.push_back(Queued { id, ahead, body });
            }
            ToWorker::Cancel { id } | ToWorker::Revoke { id } => {
                let cancel = matches!(msg, ToWorker::Cancel { .. });
                let queued = st.queue.iter().position(|q| q.id == id);
                if let Some(at) = queued {
                    // Not started: give it back.
                    st.queue.remove(at);
                    let mut f = Vec::with_capacity(16);
                    put_status(&mut f, id, self.max_frame, protocol::put_revoked);
                    self.write(&f);
                } else if let (true, Some(ctx)) = (cancel, job::find(id)) {
                    ctx.cancel();
                }
            }
            ToWorker::Credit { id, n } => {
                if let Some(ctx) = job::find(id) {
                    ctx.add_credit(n);
                }
            }
        }
    }

    /// Runs `job`, then whatever is queued behind it, writing each result
    /// together with the start notice of the next job.
    fn run_jobs(
        &self,
        mut job: Queued,
        mut ctx: Arc<JobCtx>,
        out: &mut Vec<u8>,
        scratch: &mut Vec<u8>,
    ) {
        out.clear();
        // Whether the current job's start notice went out with the
        // previous result.
        let mut announced = false;
        while let Ok(msg) = protocol::decode_to_worker(&job.body) {
            let id = job.id;
            if job.ahead && !announced {
                // The host must know it started before it can run.
                put_status(out, id, self.max_frame, protocol::put_started);
                self.write(out);
                out.clear();
            }
            let entered = job::enter(ctx.clone());
            self.run_one(&msg, out, scratch);
            drop(entered);
            job::finish(&ctx);
            let _ = std::io::stdout().flush();
            // `running` stays set until this result is written, so the
            // other thread cannot start (and announce) a job before it.
            let next = self.lock().start_next();
            match next {
                Some((n, c)) => {
                    ctx = c;
                    announced = n.ahead;
                    if n.ahead {
                        put_status(out, n.id, self.max_frame, protocol::put_started);
                    }
                    self.write(out);
                    out.clear();
                    job = n;
                }
                None => {
                    self.write(out);
                    out.clear();
                    let mut st = self.lock();
                    match st.start_next() {
                        // Arrived while we wrote: run it too.
                        Some((n, c)) => {
                            announced = false;
                            job = n;
                            ctx = c;
                        }
                        None => {
                            st.running = false;
                            break;
                        }
                    }
                }
            }
            if out.capacity() > (1 << 20) {
                *out = Vec::with_capacity(4096);
            }
        }
    }

    /// Appends the result frame of one job (or batch) to `out`.
    fn run_one(&self, msg: &ToWorker<'_>, out: &mut Vec<u8>, scratch: &mut Vec<u8>) {
        put_outcome(out, msg.id(), self.max_frame, |out| match *msg {
            ToWorker::Job { task, payload, .. } => run_registered(task, payload, out),
            ToWorker::Batch { task, items, .. } => {
                run_batch(task, items, out, scratch);
                Ok(())
            }
            ToWorker::Cancel { .. } | ToWorker::Revoke { .. } | ToWorker::Credit { .. } => Ok(()),
        });
    }
}

/// Why an item frame could not be built.
enum ItemError {
    Encode(String),
    Frame(FrameError),
}

impl From<FrameError> for ItemError {
    fn from(e: FrameError) -> Self {
        ItemError::Frame(e)
    }
}

/// Why a result frame could not be built.
enum OutcomeError {
    /// The job failed.
    Run(RunFailure),
    /// Its output makes the frame too large.
    Frame(FrameError),
}

impl From<FrameError> for OutcomeError {
    fn from(e: FrameError) -> Self {
        OutcomeError::Frame(e)
    }
}

/// Appends the result frame of job `id` to `out`: the output `run` appends,
/// or the failure it returns. A result frame too large for `max_frame`
/// (a large output, a long panic message) becomes an `EncodeOutput`
/// failure that says so.
fn put_outcome(
    out: &mut Vec<u8>,
    id: u64,
    max_frame: usize,
    run: impl FnOnce(&mut Vec<u8>) -> Result<(), RunFailure>,
) {
    let done = frame::append_frame(out, max_frame, |out| {
        protocol::put_done_header(out, id);
        run(out).map_err(OutcomeError::Run)
    });
    let failure = match done {
        Ok(()) => return,
        Err(OutcomeError::Run(failure)) => failure,
        Err(OutcomeError::Frame(e)) => return put_too_large(out, id, max_frame, &e),
    };
    let reported = frame::append_frame(out, max_frame, |out| {
        match &failure {
            RunFailure::Panicked(p) => {
                protocol::put_panicked(out, id, &p.message, p.location.as_deref(), false);
            }
            RunFailure::Failed(stage, m) => protocol::put_failed(out, id, *stage, m),
            RunFailure::Cancelled => protocol::put_cancelled(out, id),
        }
        Ok::<(), FrameError>(())
    });
    if let Err(e) = reported {
        put_too_large(out, id, max_frame, &e);
    }
}

/// Appends the `EncodeOutput` failure of job `id`, whose result frame was
/// too large (`too_large`). With a small `max_frame` even that report may
/// not fit: its message is then cut to fit (an empty one always does, as
/// `max_frame` is at least 64 bytes).
fn put_too_large(out: &mut Vec<u8>, id: u64, max_frame: usize, too_large: &FrameError) {
    let mut message = too_large.to_string();
    loop {
        let reported = frame::append_frame(out, max_frame, |out| {
            protocol::put_failed(out, id, FailStage::EncodeOutput, &message);
            Ok::<(), FrameError>(())
        });
        let excess = match reported {
            Ok(()) => return,
            Err(FrameError::TooLarge { len, max }) => {
                usize::try_from(len).map_or(usize::MAX, |len| len.saturating_sub(max))
            }
            Err(_) => usize::MAX,
        };
        if message.is_empty() {
            return;
        }
        let mut cut = message.len().saturating_sub(excess.max(1));
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
}

/// Appends a start or revoke notice for job `id` to `out`. Its few bytes
/// always fit a frame (`max` is at least 64); were it not to, nothing
/// would be appended.
fn put_status(out: &mut Vec<u8>, id: u64, max: usize, put: fn(&mut Vec<u8>, u64)) {
    let _ = frame::append_frame(out, max, |out| {
        put(out, id);
        Ok::<(), FrameError>(())
    });
}

/// Installs the worker's panic hook: it records each panic's location for
/// the code that catches it ([`Panic::caught`]), and in a binary built
/// with `panic = "abort"`, where nothing catches it, sends the failure of
/// the job the panicking code runs in to the host before the process
/// aborts. Then the previous hook runs (it prints the panic to stderr).
fn install_panic_hook(worker: Arc<Worker>) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = crate::task::panic_message(info.payload());
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
        if cfg!(panic = "abort") {
            if let Some(ctx) = job::current() {
                let panic = Panic {
                    message: message.clone(),
                    location: location.clone(),
                };
                if let Some(f) = panicked_frame(ctx.id, &panic, worker.max_frame) {
                    worker.write_before_abort(&f);
                }
            }
        }
        if let Some(at) = location {
            crate::task::record_panic(message, at);
        }
        previous(info);
    }));
}

/// The frame reporting that job `id` panicked, its message cut to fit
/// `max` if need be; `None` if even that does not fit.
fn panicked_frame(id: u64, panic: &Panic, max: usize) -> Option<Vec<u8>> {
    let location = panic.location.as_deref();
    let fixed = 32 + location.map_or(0, str::len);
    let mut message = panic.message.as_str();
    if fixed + message.len() > max {
        let mut cut = max.saturating_sub(fixed).min(message.len());
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message = &message[..cut];
    }
    frame::build(fixed + message.len(), max, |f| {
        protocol::put_panicked(f, id, message, location, true);
    })
    .or_else(|_| {
        frame::build(32, max, |f| {
            protocol::put_panicked(f, id, message, None, true);
        })
    })
    .ok()
}

/// Runs every item of a batch, appending one item result per item. A
/// cancel stops the batch between items (the host discards the result).
fn run_batch(task: u32, items: &[u8], out: &mut Vec<u8>, scratch: &mut Vec<u8>) {
    for item in protocol::BatchItems::new(items) {
        if job::cancelled() {
            break;
        }
        scratch.clear();
        let (tag, stage, body): (u8, Option<FailStage>, &[u8]) = match item {
            Err(msg) => {
                scratch.extend_from_slice(msg.as_bytes());
                (
                    protocol::ITEM_FAILED,
                    Some(FailStage::DecodeTask),
                    &scratch[..],
                )
            }
            Ok(payload) => match run_registered(task, payload, scratch) {
                Ok(()) => (protocol::ITEM_OK, None, &scratch[..]),
                Err(RunFailure::Panicked(p)) => {
                    protocol::put_item_panicked(out, &p.message, p.location.as_deref());
                    continue;
                }
                Err(RunFailure::Failed(stage, msg)) => {
                    scratch.clear();
                    scratch.extend_from_slice(msg.as_bytes());
                    (protocol::ITEM_FAILED, Some(stage), &scratch[..])
                }
                // The host already resolved the batch; stop here.
                Err(RunFailure::Cancelled) => break,
            },
        };
        protocol::put_item_result(out, tag, stage, body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::FromWorker;

    /// The frames in `bytes`, decoded; panics unless they are all whole.
    fn frames(bytes: &[u8], max: usize) -> Vec<FromWorker> {
        let mut r = SyncFrameReader::new(bytes, max);
        let mut all = Vec::new();
        while let Some(body) = r.next_frame().unwrap() {
            all.push(protocol::decode_from_worker(body).unwrap());
        }
        all
    }

    fn encode_output_failure(bytes: &[u8], max: usize) -> String {
        match &frames(bytes, max)[..] {
            [
                FromWorker::Failed {
                    id: 7,
                    stage: FailStage::EncodeOutput,
                    message,
                },
            ] => message.clone(),
            other => panic!("expected one EncodeOutput failure of job 7, got {other:?}"),
        }
    }

    #[test]
    fn an_outcome_is_appended_after_what_the_buffer_holds() {
        let mut out = Vec::new();
        put_status(&mut out, 3, 64, protocol::put_started);
        put_outcome(&mut out, 7, 64, |out| {
            out.extend_from_slice(b"output");
            Ok(())
        });
        put_outcome(&mut out, 8, 64, |_| {
            Err(RunFailure::Panicked(Panic {
                message: "boom".into(),
                location: Some("src/x.rs:1:2".into()),
            }))
        });
        match &frames(&out, 64)[..] {
            [
                FromWorker::Started { id: 3 },
                FromWorker::Done {
                    id: 7,
                    body,
                    offset,
                },
                FromWorker::Panicked {
                    id: 8,
                    message,
                    location,
                    ending: false,
                },
            ] => {
                assert_eq!(&body[*offset..], b"output");
                assert_eq!(message, "boom");
                assert_eq!(location.as_deref(), Some("src/x.rs:1:2"));
            }
            other => panic!("unexpected frames {other:?}"),
        }
    }

    #[test]
    fn an_output_too_large_is_an_encode_output_failure() {
        let mut out = Vec::new();
        put_outcome(&mut out, 7, 1024, |out| {
            out.resize(out.len() + 2000, 1);
            Ok(())
        });
        let message = encode_output_failure(&out, 1024);
        assert!(message.contains("maximum frame size of 1024"), "{message}");
    }

    #[test]
    fn a_failure_report_too_large_is_cut_to_fit() {
        // A long panic message, and an output too large, with the smallest
        // maximum allowed: the report itself is cut, never left unframed.
        let mut out = Vec::new();
        put_outcome(&mut out, 7, 64, |_| {
            Err(RunFailure::Panicked(Panic::without_location(
                "é".repeat(300),
            )))
        });
        let message = encode_output_failure(&out, 64);
        assert!(
            message.starts_with("a frame announced 603 bytes"),
            "{message}"
        );

        let mut out = Vec::new();
        put_outcome(&mut out, 7, 64, |out| {
            out.resize(out.len() + 200, 1);
            Ok(())
        });
        let message = encode_output_failure(&out, 64);
        assert!(
            message.starts_with("a frame announced 202 bytes"),
            "{message}"
        );
        assert!(out.len() <= frame::PREFIX + 64);
    }
}
