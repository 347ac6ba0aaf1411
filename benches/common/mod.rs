//! Measurement code shared by the bench (`benches/pool.rs`) and the full
//! report (`examples/bench_report.rs`, which includes this file with
//! `#[path]`): the no-op and CPU-bound tasks, the workloads, the helper
//! children that give the floors, and the table.
//!
//! Each binary that includes this module registers these tasks in its own
//! registry, and serves as its own helper child: `main` calls
//! `procpool::init()` first, then [`child_mode`] / [`serve_child`].
#![allow(dead_code)] // each includer uses a different part

use std::hint::black_box;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use procpool::{ProcessPoolExecutor, Task};
use serde::{Deserialize, Serialize};

/// Set in the environment of a helper child; its value says what the child
/// does (see [`serve_child`]).
pub const CHILD_ENV: &str = "PROCPOOL_BENCH_CHILD";

/// The pipe buffer size procpool asks for on its worker pipes; the raw
/// pipe floors use the same, so they are floors for the same pipes.
pub const PIPE_SIZE: usize = 1 << 20;

/// The no-op job: `x + 1`.
#[derive(Serialize, Deserialize)]
pub struct Noop(pub u64);

impl Task for Noop {
    type Output = u64;
    fn run(self) -> u64 {
        noop(self.0)
    }
}
procpool::register!(Noop);

/// The no-op job as an async task.
#[derive(Serialize, Deserialize)]
pub struct AsyncNoop(pub u64);

impl procpool::AsyncTask for AsyncNoop {
    type Output = u64;
    async fn run(self) -> u64 {
        noop(self.0)
    }
}
procpool::register!(AsyncNoop);

/// An I/O-bound job: waits `ms` on a timer (async), returns `ms`.
#[derive(Serialize, Deserialize)]
pub struct AsyncWait(pub u64);

impl procpool::AsyncTask for AsyncWait {
    type Output = u64;
    async fn run(self) -> u64 {
        tokio::time::sleep(Duration::from_millis(self.0)).await;
        self.0
    }
}
procpool::register!(AsyncWait);

/// The same wait, blocking its thread.
#[derive(Serialize, Deserialize)]
pub struct BlockingWait(pub u64);

impl Task for BlockingWait {
    type Output = u64;
    fn run(self) -> u64 {
        std::thread::sleep(Duration::from_millis(self.0));
        self.0
    }
}
procpool::register!(BlockingWait);

pub fn noop(x: u64) -> u64 {
    black_box(x).wrapping_add(1)
}

/// A deterministic CPU-bound job: `iters` rounds of xorshift from `seed`.
#[derive(Serialize, Deserialize)]
pub struct Spin {
    pub iters: u64,
    pub seed: u64,
}

impl Task for Spin {
    type Output = u64;
    fn run(self) -> u64 {
        spin(self.iters, self.seed)
    }
}
procpool::register!(Spin);

pub fn spin(iters: u64, seed: u64) -> u64 {
    let mut x = black_box(seed) | 1;
    for _ in 0..black_box(iters) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

pub fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

pub async fn build_pool(workers: usize) -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .workers(workers)
        .build()
        .await
        .expect("the pool should start")
}

/// p50 and p99 of a set of samples, in µs.
#[derive(Debug, Clone, Copy)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
}

pub fn percentiles(mut samples: Vec<Duration>) -> Percentiles {
    samples.sort_unstable();
    let at = |p: f64| {
        let rank = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[rank - 1].as_secs_f64() * 1e6
    };
    Percentiles {
        p50: at(0.50),
        p99: at(0.99),
    }
}

/// W1: `n` times, submit one no-op job and await it; adds the round
/// trips to `samples`.
pub async fn latency(pool: &ProcessPoolExecutor, n: usize, samples: &mut Vec<Duration>) {
    latency_of(pool, n, samples, Noop).await;
}

/// [`latency`] with any no-op task built by `task`.
pub async fn latency_of<T: Task<Output = u64>>(
    pool: &ProcessPoolExecutor,
    n: usize,
    samples: &mut Vec<Duration>,
    task: impl Fn(u64) -> T,
) {
    for i in 0..n as u64 {
        let t = Instant::now();
        let out = pool.submit(task(i)).await.expect("a no-op job failed");
        samples.push(t.elapsed());
        assert_eq!(out, i + 1);
    }
}

/// W2: submit `jobs` no-op jobs, then await them all; jobs per second.
pub async fn throughput(pool: &ProcessPoolExecutor, jobs: u64) -> f64 {
    let t = Instant::now();
    let handles: Vec<_> = (0..jobs).map(|i| pool.submit(Noop(i))).collect();
    for (i, h) in handles.into_iter().enumerate() {
        let out = h.await.expect("a no-op job failed");
        assert_eq!(out, i as u64 + 1);
    }
    jobs as f64 / t.elapsed().as_secs_f64()
}

/// W2 batched: `jobs` no-op jobs through `map` with `chunk_size(chunk)`,
/// results consumed in order; jobs per second.
pub async fn map_throughput(pool: &ProcessPoolExecutor, jobs: u64, chunk: usize) -> f64 {
    use futures::StreamExt;
    let t = Instant::now();
    let mut results = pool.map((0..jobs).map(Noop)).chunk_size(chunk);
    let mut next = 0;
    while let Some(out) = results.next().await {
        assert_eq!(out.expect("a no-op job failed"), next + 1);
        next += 1;
    }
    assert_eq!(next, jobs, "map yielded too few results");
    jobs as f64 / t.elapsed().as_secs_f64()
}

/// W2 comparison: the same no-op on tokio's blocking pool.
pub async fn spawn_blocking_throughput(jobs: u64) -> f64 {
    let t = Instant::now();
    let handles: Vec<_> = (0..jobs)
        .map(|i| tokio::task::spawn_blocking(move || noop(i)))
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let out = h.await.expect("a spawn_blocking job failed");
        assert_eq!(out, i as u64 + 1);
    }
    jobs as f64 / t.elapsed().as_secs_f64()
}

/// W3: submit `jobs` CPU-bound jobs at once, await them all; the results
/// and the time in seconds.
pub async fn scaling(pool: &ProcessPoolExecutor, jobs: u64, iters: u64) -> (Vec<u64>, f64) {
    let t = Instant::now();
    let handles: Vec<_> = (0..jobs)
        .map(|seed| pool.submit(Spin { iters, seed }))
        .collect();
    let mut results = Vec::with_capacity(handles.len());
    for h in handles {
        results.push(h.await.expect("a CPU-bound job failed"));
    }
    (results, t.elapsed().as_secs_f64())
}

/// W3, one round: the jobs run serially in this process; checks them
/// against `expected` and returns the seconds taken.
pub fn serial_scaling(jobs: u64, iters: u64, expected: &[u64]) -> f64 {
    let t = Instant::now();
    let serial: Vec<u64> = (0..jobs).map(|seed| spin(iters, seed)).collect();
    let elapsed = t.elapsed().as_secs_f64();
    assert_eq!(serial, expected, "the serial run is not deterministic");
    elapsed
}

/// W3, one round on each pool: checks the results against `expected` and
/// appends each pool's seconds to its entry in `times`.
pub fn pools_scaling(
    rt: &tokio::runtime::Runtime,
    pools: &[ProcessPoolExecutor],
    jobs: u64,
    iters: u64,
    expected: &[u64],
    times: &mut [Vec<f64>],
) {
    for (pool, times) in pools.iter().zip(times) {
        let (results, elapsed) = rt.block_on(scaling(pool, jobs, iters));
        times.push(elapsed);
        assert_eq!(results, expected, "the pool and the serial run disagree");
    }
}

/// Shuts every pool down.
pub fn shutdown_all(rt: &tokio::runtime::Runtime, pools: &[ProcessPoolExecutor]) {
    rt.block_on(async {
        for pool in pools {
            pool.shutdown().await;
        }
    });
}

/// W3 warm-up: one job per worker, so no worker runs its first job in the
/// timed part.
pub async fn warm_up_spin(pool: &ProcessPoolExecutor, iters: u64) {
    let warm: Vec<_> = (0..pool.workers() as u64)
        .map(|seed| pool.submit(Spin { iters, seed }))
        .collect();
    for h in warm {
        h.await.expect("a warm-up job failed");
    }
}

/// This binary re-executed as a helper child (`mode` in [`CHILD_ENV`]).
pub fn child_command(mode: &str) -> Command {
    let exe = std::env::current_exe().expect("the bench's own executable");
    let mut cmd = Command::new(exe);
    cmd.env(CHILD_ENV, mode);
    cmd
}

/// A helper child with its stdin and stdout piped (pipes raised to
/// [`PIPE_SIZE`] like procpool's).
fn piped_child(mode: &str) -> (Child, ChildStdin, ChildStdout) {
    let mut child = child_command(mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the helper child should start");
    let to_child = child.stdin.take().expect("piped stdin");
    let from_child = child.stdout.take().expect("piped stdout");
    set_pipe_size(to_child.as_raw_fd());
    set_pipe_size(from_child.as_raw_fd());
    (child, to_child, from_child)
}

/// Closes a helper child's input and reaps it.
fn finish_child(mut child: Child, to_child: ChildStdin) {
    drop(to_child);
    let status = child.wait().expect("reap the helper child");
    assert!(status.success(), "the helper child failed: {status}");
}

/// Raises a pipe's kernel buffer to [`PIPE_SIZE`]; errors are ignored.
fn set_pipe_size(fd: std::os::fd::RawFd) {
    // SAFETY: F_SETPIPE_SZ only changes the capacity of the pipe `fd`.
    unsafe {
        libc::fcntl(fd, libc::F_SETPIPE_SZ, PIPE_SIZE as libc::c_int);
    }
}

/// The W1 floor: this binary re-executed as an echo child; 8 bytes out, 8
/// bytes back, blocking, one at a time.
pub struct PingPong {
    child: Child,
    to_child: ChildStdin,
    from_child: ChildStdout,
    next: u64,
}

impl PingPong {
    pub fn start() -> Self {
        let (child, to_child, from_child) = piped_child("pingpong");
        PingPong {
            child,
            to_child,
            from_child,
            next: 0,
        }
    }

    /// `n` round trips; adds their times to `samples`.
    pub fn measure(&mut self, n: usize, samples: &mut Vec<Duration>) {
        for _ in 0..n {
            let msg = self.next.to_le_bytes();
            self.next += 1;
            let t = Instant::now();
            self.to_child
                .write_all(&msg)
                .expect("write to the ping-pong child");
            let mut back = [0u8; 8];
            self.from_child
                .read_exact(&mut back)
                .expect("read from the ping-pong child");
            samples.push(t.elapsed());
            assert_eq!(back, msg, "the ping-pong child echoed something else");
        }
    }

    /// Closes the child's input and reaps it.
    pub fn finish(self) {
        finish_child(self.child, self.to_child);
    }
}

/// The W5 floor: this binary re-executed as a sink child; an 8-byte length
/// and that many bytes out, one byte back.
pub struct PipeSink {
    child: Child,
    to_child: ChildStdin,
    from_child: ChildStdout,
}

impl PipeSink {
    pub fn start() -> Self {
        let (child, to_child, from_child) = piped_child("sink");
        PipeSink {
            child,
            to_child,
            from_child,
        }
    }

    /// Sends `payload` and waits for the child's one-byte answer; the time
    /// that took.
    pub fn send(&mut self, payload: &[u8]) -> Duration {
        let t = Instant::now();
        self.to_child
            .write_all(&(payload.len() as u64).to_le_bytes())
            .and_then(|()| self.to_child.write_all(payload))
            .expect("write to the sink child");
        let mut ack = [0u8; 1];
        self.from_child
            .read_exact(&mut ack)
            .expect("read from the sink child");
        let elapsed = t.elapsed();
        assert_eq!(ack, [1], "the sink child answered something else");
        elapsed
    }

    pub fn finish(self) {
        finish_child(self.child, self.to_child);
    }
}

/// The helper-child mode this process was started in, if any.
pub fn child_mode() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

/// Serves as the helper child `mode`: `pingpong` (echo 8-byte messages),
/// `sink` (read length-prefixed payloads, answer one byte each) or `exit`
/// (return at once, a stand-in for `/bin/true`). Returns at the end of
/// input.
///
/// # Panics
///
/// On any other mode, and on I/O errors.
pub fn serve_child(mode: &str) {
    match mode {
        "pingpong" => pingpong_child(),
        "sink" => sink_child(),
        "exit" => {}
        other => panic!("unknown {CHILD_ENV} mode {other:?}"),
    }
}

/// Echo 8-byte messages from stdin to stdout until EOF.
fn pingpong_child() {
    let mut input = std::io::stdin().lock();
    let mut output = std::io::stdout().lock();
    let mut buf = [0u8; 8];
    loop {
        match input.read_exact(&mut buf) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return,
            Err(e) => panic!("ping-pong child: read failed: {e}"),
        }
        output
            .write_all(&buf)
            .and_then(|()| output.flush())
            .expect("ping-pong child: write failed");
    }
}

/// Read length-prefixed payloads into one buffer, answering one byte for
/// each, until EOF.
fn sink_child() {
    let mut input = std::io::stdin().lock();
    let mut output = std::io::stdout().lock();
    let mut buf = Vec::new();
    loop {
        let mut len = [0u8; 8];
        match input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return,
            Err(e) => panic!("sink child: read failed: {e}"),
        }
        let n = usize::try_from(u64::from_le_bytes(len)).expect("a payload that fits");
        if buf.len() < n {
            buf.resize(n, 0);
        }
        input
            .read_exact(&mut buf[..n])
            .expect("sink child: read failed");
        black_box(&buf);
        output
            .write_all(&[1])
            .and_then(|()| output.flush())
            .expect("sink child: write failed");
    }
}

/// The number of `spin` iterations that takes about `target` in this
/// process (the median of a few timed runs).
pub fn calibrate(target: Duration) -> u64 {
    // Grow until one run takes at least 5 ms, for a usable first estimate.
    let mut iters: u64 = 1 << 16;
    loop {
        let t = Instant::now();
        black_box(spin(iters, 1));
        if t.elapsed() >= Duration::from_millis(5) {
            break;
        }
        iters *= 2;
    }
    let mut estimate = iters;
    for _ in 0..3 {
        let mut times: Vec<f64> = (0..5)
            .map(|seed| {
                let t = Instant::now();
                black_box(spin(estimate, seed));
                t.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        estimate = ((estimate as f64) * target.as_secs_f64() / median).max(1.0) as u64;
    }
    estimate
}

pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Formats a rate with thousands separators.
pub fn group(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One line of the table.
pub struct Row {
    pub workload: String,
    pub figure: String,
    pub versus: String,
    pub ratio: String,
    /// The target and whether it was met; `None` for rows without one.
    pub target: Option<(String, bool)>,
}

impl Row {
    pub fn new(workload: &str, figure: String, versus: String, ratio: String) -> Self {
        Row {
            workload: workload.to_owned(),
            figure,
            versus,
            ratio,
            target: None,
        }
    }

    /// Adds a target and whether this run met it.
    pub fn target(mut self, target: impl Into<String>, met: bool) -> Self {
        self.target = Some((target.into(), met));
        self
    }
}

/// Prints `rows` as a markdown table. With `targets`, two more columns say
/// each row's target and whether it was met.
pub fn print_table(rows: &[Row], targets: bool) {
    let mut header = vec![
        "workload".to_owned(),
        "figure".to_owned(),
        "floor / comparison (same run)".to_owned(),
        "ratio".to_owned(),
    ];
    if targets {
        header.push("target".to_owned());
        header.push("met".to_owned());
    }
    let cells = |r: &Row| {
        let mut c = vec![
            r.workload.clone(),
            r.figure.clone(),
            r.versus.clone(),
            r.ratio.clone(),
        ];
        if targets {
            let (target, met) = match &r.target {
                Some((t, true)) => (t.clone(), "met"),
                Some((t, false)) => (t.clone(), "**not met**"),
                None => ("—".to_owned(), "—"),
            };
            c.push(target);
            c.push(met.to_owned());
        }
        c
    };
    let body: Vec<Vec<String>> = rows.iter().map(cells).collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            body.iter()
                .chain(std::iter::once(&header))
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |r: &[String]| {
        let padded: Vec<String> = r.iter().zip(&widths).map(|(c, &w)| pad(c, w)).collect();
        println!("| {} |", padded.join(" | "));
    };
    println!();
    line(&header);
    let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w + 2)).collect();
    println!("|{}|", rule.join("|"));
    for r in &body {
        line(r);
    }
}

/// Pads to `width` characters (not bytes: "µ" is two bytes).
fn pad(s: &str, width: usize) -> String {
    let n = s.chars().count();
    format!("{s}{}", " ".repeat(width.saturating_sub(n)))
}

/// W1 samples: a no-op job awaited one at a time on pools of 1 and 2
/// workers, and the pipe ping-pong floor, interleaved in blocks so that a
/// change in the machine's speed during the run affects every side alike.
/// Returns the floor and, per pool, its worker count and percentiles.
pub fn measure_w1(
    rt: &tokio::runtime::Runtime,
    warmup: usize,
    iters: usize,
    block: usize,
) -> (Percentiles, Vec<(usize, Percentiles)>) {
    let mut pingpong = PingPong::start();
    let pools = rt.block_on(async { [build_pool(1).await, build_pool(2).await] });
    pingpong.measure(warmup, &mut Vec::new());
    for pool in &pools {
        rt.block_on(latency(pool, warmup, &mut Vec::new()));
    }
    let mut floor = Vec::with_capacity(iters);
    let mut lat = [Vec::with_capacity(iters), Vec::with_capacity(iters)];
    for _ in 0..iters / block {
        pingpong.measure(block, &mut floor);
        for (pool, samples) in pools.iter().zip(&mut lat) {
            rt.block_on(latency(pool, block, samples));
        }
    }
    pingpong.finish();
    shutdown_all(rt, &pools);
    let per_pool = pools
        .iter()
        .zip(lat)
        .map(|(pool, samples)| (pool.workers(), percentiles(samples)))
        .collect();
    (percentiles(floor), per_pool)
}

/// W3 set-up: calibrates a CPU-bound job of about `job_time`, computes the
/// expected results of `jobs` of them, and starts warmed-up pools of 1 and
/// 2 workers. Returns the job's iteration count, the expected results and
/// the pools.
pub fn prepare_scaling(
    rt: &tokio::runtime::Runtime,
    job_time: Duration,
    jobs: u64,
) -> (u64, Vec<u64>, [ProcessPoolExecutor; 2]) {
    eprintln!("W3: calibrating the CPU-bound job...");
    let iters = calibrate(job_time);
    eprintln!("W3: {jobs} CPU-bound jobs, serially and on 1 and 2 workers...");
    let expected: Vec<u64> = (0..jobs).map(|seed| spin(iters, seed)).collect();
    let pools = rt.block_on(async {
        let pools = [build_pool(1).await, build_pool(2).await];
        for pool in &pools {
            warm_up_spin(pool, iters).await;
        }
        pools
    });
    (iters, expected, pools)
}
