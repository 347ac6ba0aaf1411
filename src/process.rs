//! The transport: starting a worker process, its handshake, and the task
//! that moves frames over its pipes.
//!
//! Each worker has one private duplex channel (its stdin, and its original
//! stdout, which the worker moves off fd 1 before running jobs) and its
//! stderr, whose lines become `procpool::worker_output` events or are
//! forwarded to the host's stderr (by a thread of the pool's own, see
//! [`OutputForwarder`](crate::output::OutputForwarder)), and are remembered
//! (the last lines) for error reports. The I/O task owns the `Child`: it
//! is the only one that reaps it, so the pid (and process group id) cannot
//! be reused while anything here may still signal it.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout};
use tokio::sync::{mpsc, oneshot};

use crate::config::{Config, Initializer};
use crate::error::{Error, ExitStatus, fmt_tail};
use crate::frame::{AsyncFrameReader, FrameError};
use crate::output::OutputForwarder;
use crate::protocol::{self, FromWorker};
use crate::worker::{
    CORE_DUMPS_ENV, EXIT_MISSING_INIT, JOBS_ENV, MARKER_ENV, MAX_FRAME_ENV, NICE_ENV,
};

/// Appended to the program's path in a worker's `argv[0]`, so `ps -o args`
/// reads `/path/to/myapp (procpool worker)`.
const WORKER_ARG0_SUFFIX: &str = " (procpool worker)";
/// How much unexpected stdout output the handshake scans for the magic.
const HANDSHAKE_SCAN_LIMIT: usize = 64 * 1024;
/// Lines of a worker's stderr kept for error reports.
const TAIL_LINES: usize = 40;
/// How long to wait for the rest of a dead worker's stderr.
const STDERR_DRAIN: Duration = Duration::from_millis(250);
/// The last lines a worker wrote to stderr.
#[derive(Default)]
pub(crate) struct Tail {
    lines: VecDeque<String>,
}

impl Tail {
    fn push(&mut self, line: String) {
        if self.lines.len() == TAIL_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    pub(crate) fn text(&self) -> String {
        let mut s = String::new();
        for l in &self.lines {
            s.push_str(l);
            s.push('\n');
        }
        s
    }
}

pub(crate) type SharedTail = Arc<Mutex<Tail>>;

fn tail_text(tail: &SharedTail) -> String {
    tail.lock().map(|t| t.text()).unwrap_or_default()
}

/// A worker that completed its handshake. Dropping it kills the worker
/// (`kill_on_drop`; tokio reaps it later); it has run no job yet, so it has
/// no children. [`Spawned::discard`] kills and reaps it at once.
pub(crate) struct Spawned {
    pub(crate) pid: u32,
    child: Child,
    stdin: ChildStdin,
    reader: AsyncFrameReader<ChildStdout>,
    pub(crate) tail: SharedTail,
    /// The job the worker is running (0: none), set by the driver, so
    /// output lines can be attributed to it.
    pub(crate) current_job: Arc<AtomicU64>,
    stderr_task: tokio::task::JoinHandle<()>,
}

impl Spawned {
    /// Stops a started worker that will not be used (a build that failed
    /// half-way): kills its process group and reaps it, so it leaves no
    /// zombie.
    pub(crate) async fn discard(mut self) {
        // Kill the group before reaping, while the pid is still ours.
        crate::sys::kill_group(self.pid);
        let _ = self.child.wait().await;
        self.stderr_task.abort();
    }
}

/// Starts a worker and waits for its handshake.
pub(crate) async fn spawn(cfg: &Config) -> Result<Spawned, Error> {
    let program = match &cfg.command.program {
        Some(p) => p.clone(),
        None => default_program()?,
    };
    let mut cmd = tokio::process::Command::new(&program);
    if cfg.command.program.is_none() {
        // The command line `ps` shows: the host's program, marked as a
        // worker (the worker's `init()` also names the process after it).
        if let Ok(exe) = std::env::current_exe() {
            let mut arg0 = exe.into_os_string();
            arg0.push(WORKER_ARG0_SUFFIX);
            cmd.arg0(arg0);
        }
    }
    if cfg.command.env_clear {
        cmd.env_clear();
    }
    for (k, v) in &cfg.command.envs {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.args(&cfg.command.args)
        .env(MARKER_ENV, std::process::id().to_string())
        .env(MAX_FRAME_ENV, cfg.max_frame.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    if cfg.core_dumps {
        cmd.env(CORE_DUMPS_ENV, "1");
    }
    if cfg.jobs_per_worker > 1 {
        cmd.env(JOBS_ENV, cfg.jobs_per_worker.to_string());
    }
    if let Some(nice) = cfg.nice {
        cmd.env(NICE_ENV, nice.to_string());
    }
    if let Some(dir) = &cfg.command.current_dir {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn().map_err(|e| Error::Spawn {
        message: format!("starting `{}` failed: {e}", shown_program(&program)),
    })?;
    let pid = child.id().unwrap_or(0);
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        crate::sys::kill_group(pid);
        return Err(Error::Spawn {
            message: "the worker's pipes were not created".into(),
        });
    };
    use std::os::fd::AsRawFd;
    crate::sys::set_pipe_size(stdin.as_raw_fd(), 1 << 20);
    let tail = SharedTail::default();
    let current_job = Arc::new(AtomicU64::new(0));
    let output = OutputSink {
        pid,
        tail: tail.clone(),
        forward: cfg.forward_output.then(|| cfg.output.clone()),
        current_job: current_job.clone(),
    };
    let stderr_task = tokio::spawn(pump_stderr(stderr, output));
    let mut spawned = Spawned {
        pid,
        child,
        stdin,
        reader: AsyncFrameReader::new(stdout, cfg.max_frame),
        tail,
        current_job,
        stderr_task,
    };
    let failure = match start(&mut spawned, cfg).await {
        Ok(()) => return Ok(spawned),
        Err(e) => e,
    };
    // Failed: stop it, reap it, and report with what it said on stderr.
    crate::sys::kill_group(pid);
    let status = spawned.child.wait().await.map(ExitStatus::from).ok();
    let _ = tokio::time::timeout(STDERR_DRAIN, &mut spawned.stderr_task).await;
    let tail = tail_text(&spawned.tail);
    let program = shown_program(&program);
    Err(match failure {
        Handshake::MissingInit => Error::MissingInit { program },
        Handshake::Exited if status == Some(ExitStatus::Code(EXIT_MISSING_INIT)) => {
            Error::MissingInit { program }
        }
        Handshake::Exited => Error::Spawn {
            message: format!(
                "the worker `{program}` exited ({}) before its handshake; does its `main` call \
                 `procpool::init()` first?{}",
                status.map_or("unknown status".into(), |s| s.to_string()),
                fmt_tail(&tail)
            ),
        },
        Handshake::Protocol(message) => Error::Protocol {
            message: format!("{message}{}", fmt_tail(&tail)),
        },
        Handshake::Failed(message) => Error::Spawn {
            message: format!("the worker `{program}`: {message}{}", fmt_tail(&tail)),
        },
        Handshake::Initializer { type_name, message } => Error::Initializer {
            type_name: type_name.to_owned(),
            message: format!("{message}{}", fmt_tail(&tail)),
        },
    })
}

/// The handshake, bounded by `handshake_timeout`, then the initializer (if
/// any), bounded by `initializer_timeout` (if set).
async fn start(w: &mut Spawned, cfg: &Config) -> Result<(), Handshake> {
    match tokio::time::timeout(cfg.handshake_timeout, handshake(w)).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(Handshake::Failed(format!(
                "no handshake within {:?}; does `main` call `procpool::init()` first?",
                cfg.handshake_timeout
            )));
        }
    }
    let Some(Ok(init)) = &cfg.initializer else {
        return Ok(());
    };
    let Some(limit) = cfg.initializer_timeout else {
        return run_initializer(w, init).await;
    };
    match tokio::time::timeout(limit, run_initializer(w, init)).await {
        Ok(r) => r,
        Err(_) => Err(Handshake::Initializer {
            type_name: init.type_name,
            message: format!(
                "it did not finish within {limit:?}, the pool's `initializer_timeout`; the \
                 worker was stopped (raise `Builder::initializer_timeout` if it needs longer)"
            ),
        }),
    }
}

/// The file this process runs, on Linux.
const PROC_SELF_EXE: &str = "/proc/self/exe";

fn default_program() -> Result<std::path::PathBuf, Error> {
    // On Linux, /proc/self/exe is the very file this process runs, even if
    // the binary on disk was rebuilt or removed since.
    #[cfg(target_os = "linux")]
    {
        let p = std::path::PathBuf::from(PROC_SELF_EXE);
        if p.exists() {
            return Ok(p);
        }
    }
    std::env::current_exe().map_err(|e| Error::Spawn {
        message: format!("cannot find the current executable to re-execute: {e}"),
    })
}

/// The worker program as messages name it: for the default program
/// (`/proc/self/exe`, which is what is executed), the real path of this
/// executable.
fn shown_program(program: &std::path::Path) -> String {
    if program == std::path::Path::new(PROC_SELF_EXE) {
        if let Ok(real) = std::fs::read_link(program).or_else(|_| std::env::current_exe()) {
            return real.display().to_string();
        }
    }
    program.display().to_string()
}

enum Handshake {
    MissingInit,
    Initializer {
        type_name: &'static str,
        message: String,
    },
    Exited,
    Protocol(String),
    Failed(String),
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn handshake(w: &mut Spawned) -> Result<(), Handshake> {
    // Find the magic; anything before it was printed to stdout by code that
    // ran before `procpool::init()`.
    loop {
        let buffered = w.reader.buffer().buffered();
        let magic = find(buffered, protocol::MAGIC);
        let missing = find(buffered, protocol::MISSING_INIT_MAGIC);
        if missing.is_some() && (magic.is_none() || missing < magic) {
            return Err(Handshake::MissingInit);
        }
        if let Some(at) = magic {
            if at > 0 {
                let junk = String::from_utf8_lossy(&buffered[..at.min(200)]).into_owned();
                return Err(Handshake::Protocol(format!(
                    "the worker wrote {at} bytes to stdout before its handshake ({junk:?}); \
                     `procpool::init()` must run before anything prints to stdout"
                )));
            }
            w.reader.buffer().consume(protocol::MAGIC.len());
            break;
        }
        if buffered.len() > HANDSHAKE_SCAN_LIMIT {
            let junk = String::from_utf8_lossy(&buffered[..200]).into_owned();
            return Err(Handshake::Protocol(format!(
                "the worker wrote to stdout instead of a handshake ({junk:?}...); is \
                 `procpool::init()` the first line of its `main`?"
            )));
        }
        match w.reader.fill().await {
            Ok(0) => {
                let buffered = w.reader.buffer().buffered();
                if buffered.is_empty() {
                    return Err(Handshake::Exited);
                }
                let junk = String::from_utf8_lossy(&buffered[..buffered.len().min(200)]);
                return Err(Handshake::Protocol(format!(
                    "the worker exited after writing {junk:?} to stdout instead of a handshake; \
                     does its `main` call `procpool::init()` first?"
                )));
            }
            Ok(_) => {}
            Err(e) => return Err(Handshake::Failed(e.to_string())),
        }
    }
    let body = match w.reader.next_frame().await {
        Ok(Some(body)) => body,
        Ok(None) => return Err(Handshake::Exited),
        Err(e) => return Err(Handshake::Protocol(format!("bad handshake: {e}"))),
    };
    match protocol::decode_from_worker(body) {
        Ok(FromWorker::Hello {
            version,
            build_id,
            pid: _,
        }) => {
            if version != protocol::VERSION {
                return Err(Handshake::Protocol(format!(
                    "the worker speaks protocol version {version}, the host {}; host and \
                     workers must be the same build",
                    protocol::VERSION
                )));
            }
            if build_id != crate::task::build_id() {
                return Err(Handshake::Protocol(
                    "the worker is a different build than the host (its registered tasks differ); \
                     the worker program must be the host's own binary"
                        .into(),
                ));
            }
            Ok(())
        }
        Ok(other) => Err(Handshake::Protocol(format!(
            "expected a handshake, got {other:?}"
        ))),
        Err(e) => Err(Handshake::Protocol(format!("bad handshake: {e}"))),
    }
}

/// Runs the pool's initializer (job 0) on a new worker and waits for it.
async fn run_initializer(w: &mut Spawned, init: &Initializer) -> Result<(), Handshake> {
    let fail = |message: String| Handshake::Initializer {
        type_name: init.type_name,
        message,
    };
    w.stdin
        .write_all(&init.frame)
        .await
        .map_err(|e| fail(format!("sending it failed: {e}")))?;
    let body = match w.reader.next_frame().await {
        Ok(Some(body)) => body,
        Ok(None) => return Err(fail("the worker exited while running it".into())),
        Err(e) => return Err(Handshake::Protocol(e.to_string())),
    };
    match protocol::decode_from_worker(body) {
        Ok(FromWorker::Done { id: 0, .. }) => Ok(()),
        Ok(FromWorker::Panicked {
            id: 0,
            message,
            location,
            ..
        }) => Err(fail(match location {
            Some(at) => format!("it panicked at {at}: {message}"),
            None => format!("it panicked: {message}"),
        })),
        Ok(FromWorker::Failed { id: 0, message, .. }) => Err(fail(message)),
        Ok(other) => Err(Handshake::Protocol(format!(
            "expected the initializer's result, got {other:?}"
        ))),
        Err(e) => Err(Handshake::Protocol(e)),
    }
}

/// Where a worker's output lines go.
struct OutputSink {
    pid: u32,
    tail: SharedTail,
    /// Where lines are forwarded to the host's stderr, if they are.
    forward: Option<OutputForwarder>,
    current_job: Arc<AtomicU64>,
}

/// Passes a worker's stderr (which also carries what its tasks print to
/// stdout) on line by line, as a `procpool::worker_output` event if a
/// `tracing` subscriber takes those, else to the host's stderr (if
/// forwarding is on), and keeps the last lines.
async fn pump_stderr(mut stderr: ChildStderr, sink: OutputSink) {
    let mut buf = vec![0u8; 8192];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match stderr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            sink.emit(&line[..line.len() - 1]);
        }
        if pending.len() > 64 * 1024 {
            let line = std::mem::take(&mut pending);
            sink.emit(&line);
        }
    }
    if !pending.is_empty() {
        sink.emit(&pending);
    }
}

impl OutputSink {
    fn emit(&self, line: &[u8]) {
        let line = String::from_utf8_lossy(line).into_owned();
        let pid = self.pid;
        let job = self.current_job.load(Ordering::Relaxed);
        // One path per line: an event for a subscriber that takes worker
        // output, or else the raw line on the host's stderr, never both.
        if tracing::enabled!(target: "procpool::worker_output", tracing::Level::INFO) {
            tracing::info!(target: "procpool::worker_output", pid, job, "{line}");
        } else if let Some(forward) = &self.forward {
            // Never written here: this is the pool's only thread.
            forward.forward(if job == 0 {
                format!("[procpool worker {pid}] {line}")
            } else {
                format!("[procpool worker {pid} job {job}] {line}")
            });
        }
        if let Ok(mut t) = self.tail.lock() {
            t.push(line);
        }
    }
}

/// Something a worker's I/O task reports to the driver.
pub(crate) enum WorkerEvent {
    Message(FromWorker),
    /// The worker is gone (and reaped). `error` is set if it was dropped
    /// because it broke the protocol.
    Exited {
        status: ExitStatus,
        error: Option<String>,
        stderr_tail: String,
    },
}

/// The driver's side of a running worker.
pub(crate) struct Link {
    /// Frames to write; dropping it closes the worker's stdin, which makes
    /// it exit once idle.
    pub(crate) frames: Option<mpsc::UnboundedSender<OutFrame>>,
    /// Dropping or firing it kills the worker's process group.
    pub(crate) kill: Option<oneshot::Sender<()>>,
    /// The job it runs, for attributing its output.
    pub(crate) current_job: Arc<AtomicU64>,
}

/// Starts the I/O task of a worker that completed its handshake.
pub(crate) fn start_io<F>(w: Spawned, mut report: F) -> Link
where
    F: FnMut(WorkerEvent) + Send + 'static,
{
    let (frames_tx, frames_rx) = mpsc::unbounded_channel::<OutFrame>();
    let (kill_tx, kill_rx) = oneshot::channel::<()>();
    let Spawned {
        pid,
        child,
        stdin,
        reader,
        tail,
        current_job,
        stderr_task,
    } = w;
    tokio::spawn(async move {
        let writer = tokio::spawn(write_frames(stdin, frames_rx));
        let mut reader = reader;
        let (error, killed) = tokio::select! {
            biased;
            _ = kill_rx => (None, true),
            e = read_frames(&mut reader, &mut report) => (e, false),
        };
        // Kill the group (it may hold grandchildren) before reaping, while
        // the pid is still ours.
        crate::sys::kill_group(pid);
        let error = if killed {
            // Read what it wrote before it died: a start notice still in
            // the pipe means that job started (it must not run again
            // elsewhere), a result means it finished.
            tokio::time::timeout(STDERR_DRAIN * 4, read_frames(&mut reader, &mut report))
                .await
                .ok()
                .flatten()
        } else {
            error
        };
        let mut child = child;
        let status = child
            .wait()
            .await
            .map(ExitStatus::from)
            .unwrap_or(ExitStatus::Unknown);
        writer.abort();
        let _ = tokio::time::timeout(STDERR_DRAIN, stderr_task).await;
        report(WorkerEvent::Exited {
            status,
            error,
            stderr_tail: tail_text(&tail),
        });
    });
    Link {
        frames: Some(frames_tx),
        kill: Some(kill_tx),
        current_job,
    }
}

/// Reads frames until the worker's output ends; returns a protocol error
/// message if the worker broke the protocol.
async fn read_frames<F>(
    reader: &mut AsyncFrameReader<ChildStdout>,
    report: &mut F,
) -> Option<String>
where
    F: FnMut(WorkerEvent),
{
    loop {
        match reader.next_frame().await {
            Ok(Some(body)) => match protocol::decode_from_worker(body) {
                Ok(msg) => report(WorkerEvent::Message(msg)),
                Err(e) => return Some(format!("the worker sent {e}")),
            },
            Ok(None) => return None,
            Err(FrameError::Truncated { .. }) => return None,
            Err(e) => return Some(e.to_string()),
        }
    }
}

/// A frame on its way to a worker. Job frames are shared with the
/// driver, which keeps them until the job has started (a job sent ahead
/// may have to be sent again to another worker).
pub(crate) struct OutFrame {
    pub(crate) bytes: Arc<Vec<u8>>,
    /// Send the job in its "sent ahead" form.
    pub(crate) ahead: bool,
}

/// Writes frames to the worker, several per syscall when they queue up.
async fn write_frames(mut stdin: ChildStdin, mut frames: mpsc::UnboundedReceiver<OutFrame>) {
    let mut batch: Vec<u8> = Vec::new();
    while let Some(first) = frames.recv().await {
        let mut next = Some(first);
        while let Some(frame) = next.take() {
            let bytes = &frame.bytes[..];
            if bytes.len() >= 64 * 1024 {
                if !batch.is_empty() {
                    if stdin.write_all(&batch).await.is_err() {
                        return;
                    }
                    batch.clear();
                }
                let head = crate::frame::PREFIX + 1;
                let mut first = [0u8; crate::frame::PREFIX + 1];
                first.copy_from_slice(&bytes[..head]);
                if frame.ahead {
                    protocol::mark_ahead(&mut first);
                }
                if stdin.write_all(&first).await.is_err()
                    || stdin.write_all(&bytes[head..]).await.is_err()
                {
                    return;
                }
            } else {
                let start = batch.len();
                batch.extend_from_slice(bytes);
                if frame.ahead {
                    protocol::mark_ahead(&mut batch[start..]);
                }
            }
            if batch.len() < 256 * 1024 {
                next = frames.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            if stdin.write_all(&batch).await.is_err() {
                return;
            }
            batch.clear();
        }
        if batch.capacity() > (1 << 20) {
            batch = Vec::new();
        }
    }
    // The sender was dropped: closing stdin tells the worker to exit.
    drop(stdin);
}
