//! Forwarding worker output never stalls the pool: a host whose stderr is a
//! full pipe nobody reads keeps running jobs and firing timeouts, and drops
//! (and counts) the lines it cannot write. The test re-executes this test
//! binary as such a host (a helper test that only acts when an environment
//! variable is set), with `--nocapture` so its output really goes to the
//! pipe.

mod support;

#[path = "support/tasks.rs"]
mod tasks;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use procpool::{JobOptions, ProcessPoolExecutor, Task};
use serde::{Deserialize, Serialize};
use support::*;
use tasks::*;

procpool::init_before_main!();

const ROLE: &str = "PROCPOOL_TEST_BLOCKED_STDERR_ROLE";
const HELPER: &str = "blocked_stderr_host_helper";
const LINES: u32 = 10_000;

/// Prints `lines` lines of about `len` bytes to stderr; returns `lines`.
#[derive(Serialize, Deserialize)]
struct Shout {
    lines: u32,
    len: usize,
}
impl Task for Shout {
    type Output = u32;
    fn run(self) -> u32 {
        let pad = "x".repeat(self.len);
        let mut err = std::io::stderr().lock();
        for i in 0..self.lines {
            writeln!(err, "shout {i} {pad}").unwrap();
        }
        self.lines
    }
}
procpool::register!(Shout);

/// Runs in the helper host: two rounds of a job that prints 10,000 long
/// lines beside a job that must time out. Returns the dropped-line count.
async fn serve_with_a_blocked_stderr() -> Result<u64, String> {
    let pool = ProcessPoolExecutor::builder()
        .workers(2)
        .forward_worker_output(true)
        .build()
        .await
        .map_err(|e| format!("build failed: {e}"))?;
    let timeout = JobOptions::new().timeout(Duration::from_millis(500));
    for round in 0..2 {
        let shout = pool.submit(Shout {
            lines: LINES,
            len: 200,
        });
        let slow = pool.submit_with(Sleep(120_000), timeout);
        match slow.await {
            Err(e) if e.is_timeout() => {}
            other => {
                return Err(format!(
                    "round {round}: the job with a timeout ended with {other:?}, not a timeout"
                ));
            }
        }
        match shout.await {
            Ok(n) if n == LINES => {}
            other => {
                return Err(format!(
                    "round {round}: the printing job ended with {other:?}"
                ));
            }
        }
    }
    let dropped = pool.stats().output_lines_dropped;
    pool.shutdown().await;
    if dropped == 0 {
        return Err("no output line was counted as dropped".into());
    }
    Ok(dropped)
}

/// Not a test on its own: the host process for the test below. It must not
/// write to stderr (that would block), so it reports on stdout only.
#[tokio::test]
#[ignore = "helper: runs only as the host process of worker_output_blocked"]
async fn blocked_stderr_host_helper() {
    if std::env::var_os(ROLE).is_none() {
        return;
    }
    let outcome =
        tokio::time::timeout(Duration::from_secs(45), serve_with_a_blocked_stderr()).await;
    let report = match outcome {
        Ok(Ok(dropped)) => format!("RESULT ok {dropped}"),
        Ok(Err(e)) => format!("RESULT failed: {e}"),
        Err(_) => "RESULT failed: the pool stalled for 45 s".into(),
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{report}");
    let _ = out.flush();
}

#[test]
fn a_host_stderr_nobody_reads_does_not_stall_the_pool() {
    let mut host = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", HELPER, "--ignored", "--nocapture"])
        .env(ROLE, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Held open and not read until the host has exited: once its 64 KiB
    // are full, every write to the host's stderr blocks.
    let mut stderr = host.stderr.take().unwrap();
    let stdout = host.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("RESULT ") {
                let _ = tx.send(line);
            }
        }
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = host.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > PATIENCE {
            let _ = host.kill();
            let _ = host.wait();
            panic!("the host with a blocked stderr did not finish within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Drain the pipe now that nobody writes to it any more.
    let (etx, erx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        let _ = etx.send(text);
    });
    let forwarded = erx.recv_timeout(PATIENCE).unwrap_or_default();
    let result = rx.recv_timeout(PATIENCE).unwrap_or_default();
    assert!(status.success(), "the host failed ({status}); {result}");
    let dropped: u64 = match result.strip_prefix("RESULT ok ") {
        Some(n) => n.parse().unwrap(),
        None => panic!("the host reported {result:?}"),
    };
    assert!(dropped > 0);
    assert!(
        String::from_utf8_lossy(&forwarded).contains("[procpool worker "),
        "the host forwarded no worker output at all"
    );
    eprintln!("the host dropped {dropped} lines of worker output");
}
