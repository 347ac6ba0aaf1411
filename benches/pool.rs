//! Benchmarks for `procpool`, each against a floor or comparison measured in
//! the same run.
//!
//! Run with: `cargo bench --bench pool`
//!
//! - W1 latency: a no-op job submitted and awaited one at a time (pools of 1
//!   and 2 workers), against a blocking 8-byte ping-pong over a child's
//!   pipes (the floor for any pipe-based pool).
//! - W2 throughput: 100,000 no-op jobs submitted at once on 2 workers,
//!   against `tokio::task::spawn_blocking` doing the same, and against the
//!   W1 floor turned into a rate.
//! - W3 scaling: 16 CPU-bound jobs of about 20 ms on 1 and 2 workers,
//!   against the same work done serially in this process.
//!
//! W1 and its floor are measured in alternating blocks; W2 and W3 report
//! the median of a few rounds, alternating the pool and its comparison.
//!
//! The bench binary is its own worker (`procpool::init()` first in `main`)
//! and its own ping-pong child (`PROCPOOL_BENCH_PINGPONG=1`). Arguments
//! (cargo passes `--bench`) are ignored.

use std::hint::black_box;
use std::io::{Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use procpool::{ProcessPoolExecutor, Task};
use serde::{Deserialize, Serialize};

/// Set in the environment of the ping-pong child.
const PINGPONG_ENV: &str = "PROCPOOL_BENCH_PINGPONG";

const LATENCY_WARMUP: usize = 2_000;
const LATENCY_ITERS: usize = 20_000;
/// W1 and its floor alternate in blocks of this many samples.
const LATENCY_BLOCK: usize = 1_000;
/// W2 and W3 report the median of this many rounds.
const ROUNDS: usize = 3;
const THROUGHPUT_JOBS: u64 = 100_000;
const SCALING_JOBS: u64 = 16;
const SCALING_JOB_TIME: Duration = Duration::from_millis(20);

/// The no-op job: `x + 1`.
#[derive(Serialize, Deserialize)]
struct Noop(u64);

impl Task for Noop {
    type Output = u64;
    fn run(self) -> u64 {
        noop(self.0)
    }
}
procpool::register!(Noop);

fn noop(x: u64) -> u64 {
    black_box(x).wrapping_add(1)
}

/// A deterministic CPU-bound job: `iters` rounds of xorshift from `seed`.
#[derive(Serialize, Deserialize)]
struct Spin {
    iters: u64,
    seed: u64,
}

impl Task for Spin {
    type Output = u64;
    fn run(self) -> u64 {
        spin(self.iters, self.seed)
    }
}
procpool::register!(Spin);

fn spin(iters: u64, seed: u64) -> u64 {
    let mut x = black_box(seed) | 1;
    for _ in 0..black_box(iters) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

fn main() {
    procpool::init();
    if std::env::var_os(PINGPONG_ENV).is_some() {
        pingpong_child();
        return;
    }

    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!("procpool bench: {cpus} CPUs available");
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");

    let mut rows: Vec<Row> = Vec::new();

    // W1 and its floor, interleaved in blocks so that a change in the
    // machine's speed during the run affects both sides alike.
    eprintln!("W1: latency on 1 and 2 workers, and the pipe ping-pong floor...");
    let mut pingpong = PingPong::start();
    let pools = rt.block_on(async { [build_pool(1).await, build_pool(2).await] });
    pingpong.measure(LATENCY_WARMUP, &mut Vec::new());
    for pool in &pools {
        rt.block_on(latency(pool, LATENCY_WARMUP, &mut Vec::new()));
    }
    let mut floor = Vec::with_capacity(LATENCY_ITERS);
    let mut lat = [
        Vec::with_capacity(LATENCY_ITERS),
        Vec::with_capacity(LATENCY_ITERS),
    ];
    for _ in 0..LATENCY_ITERS / LATENCY_BLOCK {
        pingpong.measure(LATENCY_BLOCK, &mut floor);
        for (pool, samples) in pools.iter().zip(&mut lat) {
            rt.block_on(latency(pool, LATENCY_BLOCK, samples));
        }
    }
    pingpong.finish();
    rt.block_on(async {
        for pool in &pools {
            pool.shutdown().await;
        }
    });
    let floor = percentiles(floor);
    for (pool, samples) in pools.iter().zip(lat) {
        let workers = pool.workers();
        let lat = percentiles(samples);
        let name = format!("W1 no-op latency, {workers} worker{}", plural(workers));
        rows.push(Row::new(
            &name,
            format!("p50 {:.1} µs", lat.p50),
            format!("pipe ping-pong p50 {:.1} µs", floor.p50),
            format!("{:.2}x", lat.p50 / floor.p50),
        ));
        rows.push(Row::new(
            &name,
            format!("p99 {:.1} µs", lat.p99),
            format!("pipe ping-pong p99 {:.1} µs", floor.p99),
            format!("{:.2}x", lat.p99 / floor.p99),
        ));
    }

    // W2: throughput, the pool and spawn_blocking alternating.
    eprintln!("W2: throughput on 2 workers, and spawn_blocking...");
    let (pool_rate, blocking_rate) = rt.block_on(async {
        let pool = build_pool(2).await;
        // Warm up: let the workers, pipes and blocking threads settle.
        throughput(&pool, THROUGHPUT_JOBS / 10).await;
        spawn_blocking_throughput(THROUGHPUT_JOBS / 10).await;
        let mut pool_rates = Vec::new();
        let mut blocking_rates = Vec::new();
        for _ in 0..ROUNDS {
            pool_rates.push(throughput(&pool, THROUGHPUT_JOBS).await);
            blocking_rates.push(spawn_blocking_throughput(THROUGHPUT_JOBS).await);
        }
        pool.shutdown().await;
        (median(pool_rates), median(blocking_rates))
    });
    let floor_rate = 1e6 / floor.p50;
    let name = format!("W2 {THROUGHPUT_JOBS} no-op jobs at once, 2 workers");
    rows.push(Row::new(
        &name,
        format!("{} jobs/s", group(pool_rate)),
        format!("spawn_blocking {} jobs/s", group(blocking_rate)),
        format!("{:.3}x", pool_rate / blocking_rate),
    ));
    rows.push(Row::new(
        &name,
        format!("{} jobs/s", group(pool_rate)),
        format!("floor 1e6/p50 {} jobs/s", group(floor_rate)),
        format!("{:.2}x", pool_rate / floor_rate),
    ));

    // W3: scaling of CPU-bound jobs, serial and pools alternating.
    eprintln!("W3: calibrating the CPU-bound job...");
    let iters = calibrate(SCALING_JOB_TIME);
    eprintln!("W3: {SCALING_JOBS} CPU-bound jobs, serially and on 1 and 2 workers...");
    let expected: Vec<u64> = (0..SCALING_JOBS).map(|seed| spin(iters, seed)).collect();
    let pools = rt.block_on(async {
        let pools = [build_pool(1).await, build_pool(2).await];
        // Warm up: one job per worker, so no worker runs its first job in
        // the timed part.
        for pool in &pools {
            let warm: Vec<_> = (0..pool.workers() as u64)
                .map(|seed| pool.submit(Spin { iters, seed }))
                .collect();
            for h in warm {
                h.await.expect("a warm-up job failed");
            }
        }
        pools
    });
    let mut serial_times = Vec::new();
    let mut pool_times = [Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let serial: Vec<u64> = (0..SCALING_JOBS)
            .map(|seed| Spin { iters, seed }.run())
            .collect();
        serial_times.push(t.elapsed().as_secs_f64());
        assert_eq!(serial, expected, "the serial run is not deterministic");
        for (pool, times) in pools.iter().zip(&mut pool_times) {
            let (results, elapsed) = rt.block_on(scaling(pool, iters));
            times.push(elapsed);
            assert_eq!(results, expected, "the pool and the serial run disagree");
        }
    }
    rt.block_on(async {
        for pool in &pools {
            pool.shutdown().await;
        }
    });
    let serial_time = median(serial_times);
    for (pool, times) in pools.iter().zip(pool_times) {
        let workers = pool.workers();
        let pool_time = median(times);
        let speedup = serial_time / pool_time;
        rows.push(Row::new(
            &format!(
                "W3 {SCALING_JOBS} x ~{} ms CPU jobs, {workers} worker{}",
                SCALING_JOB_TIME.as_millis(),
                plural(workers)
            ),
            format!("{:.0} ms", pool_time * 1e3),
            format!("serial in-process {:.0} ms", serial_time * 1e3),
            format!(
                "speedup {speedup:.2}x, efficiency {:.0}%",
                100.0 * speedup / workers as f64
            ),
        ));
    }

    print_table(&rows);
    println!(
        "(W2 and W3: median of {ROUNDS} rounds; W1 and its floor: {LATENCY_ITERS} samples each \
         after {LATENCY_WARMUP} warm-up, interleaved in blocks of {LATENCY_BLOCK})"
    );
    eprintln!(
        "procpool bench: done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

async fn build_pool(workers: usize) -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .workers(workers)
        .build()
        .await
        .expect("the pool should start")
}

/// p50 and p99 of a set of samples, in µs.
struct Percentiles {
    p50: f64,
    p99: f64,
}

fn percentiles(mut samples: Vec<Duration>) -> Percentiles {
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
async fn latency(pool: &ProcessPoolExecutor, n: usize, samples: &mut Vec<Duration>) {
    for i in 0..n as u64 {
        let t = Instant::now();
        let out = pool.submit(Noop(i)).await.expect("a no-op job failed");
        samples.push(t.elapsed());
        assert_eq!(out, i + 1);
    }
}

/// W2: submit `jobs` no-op jobs, then await them all; jobs per second.
async fn throughput(pool: &ProcessPoolExecutor, jobs: u64) -> f64 {
    let t = Instant::now();
    let handles: Vec<_> = (0..jobs).map(|i| pool.submit(Noop(i))).collect();
    for (i, h) in handles.into_iter().enumerate() {
        let out = h.await.expect("a no-op job failed");
        assert_eq!(out, i as u64 + 1);
    }
    jobs as f64 / t.elapsed().as_secs_f64()
}

/// W2 comparison: the same no-op on tokio's blocking pool.
async fn spawn_blocking_throughput(jobs: u64) -> f64 {
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

/// W3: submit the CPU-bound jobs at once, await them all; the results and
/// the time in seconds.
async fn scaling(pool: &ProcessPoolExecutor, iters: u64) -> (Vec<u64>, f64) {
    let t = Instant::now();
    let handles: Vec<_> = (0..SCALING_JOBS)
        .map(|seed| pool.submit(Spin { iters, seed }))
        .collect();
    let mut results = Vec::with_capacity(handles.len());
    for h in handles {
        results.push(h.await.expect("a CPU-bound job failed"));
    }
    (results, t.elapsed().as_secs_f64())
}

/// The W1 floor: this binary re-executed as an echo child; 8 bytes out, 8
/// bytes back, blocking, one at a time.
struct PingPong {
    child: Child,
    to_child: ChildStdin,
    from_child: ChildStdout,
    next: u64,
}

impl PingPong {
    fn start() -> Self {
        let exe = std::env::current_exe().expect("the bench's own executable");
        let mut child = Command::new(exe)
            .env(PINGPONG_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the ping-pong child should start");
        let to_child = child.stdin.take().expect("piped stdin");
        let from_child = child.stdout.take().expect("piped stdout");
        PingPong {
            child,
            to_child,
            from_child,
            next: 0,
        }
    }

    /// `n` round trips; adds their times to `samples`.
    fn measure(&mut self, n: usize, samples: &mut Vec<Duration>) {
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
    fn finish(self) {
        let PingPong {
            mut child,
            to_child,
            ..
        } = self;
        drop(to_child);
        let status = child.wait().expect("reap the ping-pong child");
        assert!(status.success(), "the ping-pong child failed: {status}");
    }
}

/// The ping-pong child: echo 8-byte messages from stdin to stdout until EOF.
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

/// The number of `spin` iterations that takes about `target` in this
/// process (the median of a few timed runs).
fn calibrate(target: Duration) -> u64 {
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

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Formats a rate with thousands separators.
fn group(x: f64) -> String {
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

struct Row {
    workload: String,
    figure: String,
    versus: String,
    ratio: String,
}

impl Row {
    fn new(workload: &str, figure: String, versus: String, ratio: String) -> Self {
        Row {
            workload: workload.to_owned(),
            figure,
            versus,
            ratio,
        }
    }
}

fn print_table(rows: &[Row]) {
    let header = Row::new(
        "workload",
        "figure".into(),
        "floor / comparison (same run)".into(),
        "ratio".into(),
    );
    let width = |f: fn(&Row) -> &str| {
        rows.iter()
            .chain(std::iter::once(&header))
            .map(|r| f(r).chars().count())
            .max()
            .unwrap_or(0)
    };
    let w = [
        width(|r| &r.workload),
        width(|r| &r.figure),
        width(|r| &r.versus),
        width(|r| &r.ratio),
    ];
    let line = |r: &Row| {
        println!(
            "| {} | {} | {} | {} |",
            pad(&r.workload, w[0]),
            pad(&r.figure, w[1]),
            pad(&r.versus, w[2]),
            pad(&r.ratio, w[3])
        );
    };
    println!();
    line(&header);
    println!(
        "|{}|{}|{}|{}|",
        "-".repeat(w[0] + 2),
        "-".repeat(w[1] + 2),
        "-".repeat(w[2] + 2),
        "-".repeat(w[3] + 2)
    );
    for r in rows {
        line(r);
    }
}

/// Pads to `width` characters (not bytes: "µ" is two bytes).
fn pad(s: &str, width: usize) -> String {
    let n = s.chars().count();
    format!("{s}{}", " ".repeat(width.saturating_sub(n)))
}
