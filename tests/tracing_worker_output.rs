//! A line a worker prints reaches the host by one path, never two: as a
//! `procpool::worker_output` event when a `tracing` subscriber takes those
//! (installed globally, or only for the thread that built the pool), else
//! as the raw `[procpool worker …]` line on the host's stderr.
//!
//! Each test re-executes this test binary as a host (a helper test that
//! only acts when an environment variable is set, run with `--nocapture`)
//! whose subscriber writes to its stdout, and reads its stdout and stderr.
//! The host prints a marker line from a job, then (with the subscriber's
//! interest in worker output switched off) an end line. Raw lines reach
//! stderr in order through one queue, so once the end line is on stderr,
//! a marker forwarded as a raw line would be there too.

mod support;

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use procpool::{ProcessPoolExecutor, Task};
use serde::{Deserialize, Serialize};
use support::*;
use tracing_subscriber::layer::SubscriberExt;

procpool::init_before_main!();

const MODE: &str = "PROCPOOL_TEST_WORKER_OUTPUT_MODE";
const HELPER: &str = "worker_output_host_helper";
const TARGET: &str = "procpool::worker_output";

/// Prints its line to stdout, in the worker.
#[derive(Serialize, Deserialize)]
struct Say(String);
impl Task for Say {
    type Output = ();
    fn run(self) {
        println!("{}", self.0);
    }
}
procpool::register!(Say);

/// Whether the helper's subscriber takes `procpool::worker_output` events.
static TAKE_OUTPUT: AtomicBool = AtomicBool::new(true);

/// The helper's subscriber output: its stdout, and a copy it can read.
#[derive(Clone, Default)]
struct Tee(Arc<Mutex<Vec<u8>>>);

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        let mut out = std::io::stdout().lock();
        out.write_all(buf)?;
        out.flush()?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Tee {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A subscriber writing to `tee` that takes every event, and
/// `procpool::worker_output` events while [`TAKE_OUTPUT`] is set.
fn switchable_subscriber(tee: Tee) -> impl tracing::Subscriber + Send + Sync {
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || tee.clone()),
        )
        .with(tracing_subscriber::filter::dynamic_filter_fn(|meta, _| {
            meta.target() != TARGET || TAKE_OUTPUT.load(Ordering::SeqCst)
        }))
}

/// Runs in the helper host: the marker job, then the end job.
async fn print_two_lines(mode: &str, tee: Option<Tee>) -> Result<(), String> {
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .build()
        .await
        .map_err(|e| format!("build failed: {e}"))?;
    let marker = format!("MARKER-{mode}");
    bounded("the marker job", pool.submit(Say(marker.clone())))
        .await
        .map_err(|e| format!("the marker job failed: {e}"))?;
    if let Some(tee) = tee {
        // The line is read from the worker's stderr on its own schedule:
        // wait for its event before turning events off.
        eventually("the marker's event", || tee.text().contains(&marker)).await;
        TAKE_OUTPUT.store(false, Ordering::SeqCst);
    }
    bounded("the end job", pool.submit(Say(format!("END-{mode}"))))
        .await
        .map_err(|e| format!("the end job failed: {e}"))?;
    bounded("shutdown", pool.shutdown()).await;
    Ok(())
}

/// Not a test on its own: the host process for the tests below. It
/// reports on stdout, then waits for its stdin to close (so the pool's
/// output thread has written everything before the process exits).
#[tokio::test]
#[ignore = "helper: runs only as the host process of tracing_worker_output"]
async fn worker_output_host_helper() {
    let Ok(mode) = std::env::var(MODE) else {
        return;
    };
    let tee = Tee::default();
    let outcome = match mode.as_str() {
        "global" => {
            tracing::subscriber::set_global_default(switchable_subscriber(tee.clone())).unwrap();
            print_two_lines(&mode, Some(tee)).await
        }
        "scoped" => {
            // Only this thread has it: the pool's thread must log to it too.
            let _scope = tracing::subscriber::set_default(switchable_subscriber(tee.clone()));
            print_two_lines(&mode, Some(tee)).await
        }
        "uninterested" => {
            let filter = tracing_subscriber::EnvFilter::new(format!("info,{TARGET}=off"));
            tracing_subscriber::fmt()
                .with_ansi(false)
                .with_env_filter(filter)
                .with_writer(move || tee.clone())
                .init();
            print_two_lines(&mode, None).await
        }
        "none" => print_two_lines(&mode, None).await,
        other => Err(format!("unknown mode {other:?}")),
    };
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(()) => writeln!(out, "RESULT ok").unwrap(),
        Err(e) => writeln!(out, "RESULT failed: {e}").unwrap(),
    }
    out.flush().unwrap();
    drop(out);
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

/// What the helper host wrote.
struct Host {
    stdout: String,
    stderr: String,
}

impl Host {
    /// Lines of stdout / stderr containing `needle`.
    fn count(text: &str, needle: &str) -> usize {
        text.lines().filter(|l| l.contains(needle)).count()
    }
}

/// Appends everything `from` yields to `into`, on a thread of its own.
fn collect(mut from: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let into = text.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    text
}

/// Runs the helper host in `mode` until it has reported and its end line
/// is on its stderr, then lets it exit.
fn run_host(mode: &str) -> Host {
    let mut host: Child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", HELPER, "--ignored", "--nocapture"])
        .env(MODE, mode)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = collect(host.stdout.take().unwrap());
    let stderr = collect(host.stderr.take().unwrap());
    let end = format!("END-{mode}");
    let start = Instant::now();
    loop {
        let (out, err) = (
            stdout.lock().unwrap().clone(),
            stderr.lock().unwrap().clone(),
        );
        if out.contains("RESULT failed") || host.try_wait().unwrap().is_some() {
            let _ = host.kill();
            panic!("the host in mode {mode} failed:\n{out}\n{err}");
        }
        if out.contains("RESULT ok") && err.contains(&end) {
            break;
        }
        if start.elapsed() > PATIENCE {
            let _ = host.kill();
            let _ = host.wait();
            panic!("the host in mode {mode} did not finish within {PATIENCE:?}:\n{out}\n{err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(host.stdin.take());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = host.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > PATIENCE {
            let _ = host.kill();
            let _ = host.wait();
            panic!("the host in mode {mode} did not exit within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "the host in mode {mode} ended with {status}"
    );
    let stdout = stdout.lock().unwrap().clone();
    let stderr = stderr.lock().unwrap().clone();
    Host { stdout, stderr }
}

/// With a subscriber taking worker output: the marker once as an event,
/// never raw; the end line (events off by then) raw once, no event.
fn assert_one_event_no_raw_line(mode: &str) {
    let host = run_host(mode);
    let (marker, end) = (format!("MARKER-{mode}"), format!("END-{mode}"));
    let events = Host::count(&host.stdout, &marker);
    assert_eq!(
        events, 1,
        "the marker should be one event, not {events}:\n{}",
        host.stdout
    );
    assert!(
        host.stdout
            .lines()
            .any(|l| l.contains(&marker) && l.contains(TARGET) && l.contains("job=")),
        "the marker's event lacks its target or job:\n{}",
        host.stdout
    );
    assert_eq!(
        Host::count(&host.stderr, &marker),
        0,
        "the marker was also forwarded raw:\n{}",
        host.stderr
    );
    assert_eq!(Host::count(&host.stderr, &end), 1, "{}", host.stderr);
    assert_eq!(Host::count(&host.stdout, &end), 0, "{}", host.stdout);
}

/// Without a subscriber taking worker output: each line raw once.
fn assert_raw_lines_only(mode: &str) {
    let host = run_host(mode);
    for line in [format!("MARKER-{mode}"), format!("END-{mode}")] {
        let raw: Vec<&str> = host.stderr.lines().filter(|l| l.contains(&line)).collect();
        assert_eq!(
            raw.len(),
            1,
            "{line} should be forwarded once:\n{}",
            host.stderr
        );
        assert!(
            raw[0].starts_with("[procpool worker "),
            "{line} was forwarded without its prefix: {:?}",
            raw[0]
        );
        assert_eq!(
            Host::count(&host.stdout, &line),
            0,
            "{line} was also an event:\n{}",
            host.stdout
        );
    }
}

#[test]
fn with_a_global_subscriber_a_worker_line_is_one_event_and_not_forwarded() {
    assert_one_event_no_raw_line("global");
}

#[test]
fn a_subscriber_of_the_thread_that_built_the_pool_gets_worker_lines() {
    assert_one_event_no_raw_line("scoped");
}

#[test]
fn without_a_subscriber_a_worker_line_is_forwarded_once() {
    assert_raw_lines_only("none");
}

#[test]
fn a_subscriber_that_filters_out_worker_output_leaves_lines_forwarded() {
    assert_raw_lines_only("uninterested");
}
