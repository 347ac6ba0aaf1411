//! The full comparative benchmark report: every workload next to a floor or
//! comparison measured in the same run, the ratio, the target and whether
//! this run met it, plus the same workloads on what a user would otherwise
//! pick (Python's process pools, the `procspawn` crate's pool).
//!
//! Run with: `cargo run --release --example bench_report`
//!
//! Prints one markdown table on stdout (progress goes to stderr):
//!
//! - W1 latency: a no-op job (`u64` in, `u64` out) submitted and awaited one
//!   at a time, 20,000 times after warm-up, on 1 and 2 workers: p50, p99.
//!   Floor: a blocking 8-byte ping-pong with a child over a pipe pair,
//!   measured in alternating blocks with the pools.
//! - W2 throughput: 200,000 no-op jobs in flight at once on 2 workers with
//!   plain `submit`, and through `map` with `chunk_size(1000)`: jobs/s.
//!   Comparisons: `spawn_blocking` with the same no-op; the W1 floor as a
//!   rate.
//! - W3 scaling: 64 CPU-bound jobs of about 20 ms on 1 and 2 workers, against
//!   the same work done serially in this process: speedup, overhead vs
//!   ideal; and on 2 threads of this process, for what the machine gave
//!   any 2-way pool in the same run. Best of 5 rounds for each side.
//! - W4 cold start: from `build()` to the first result of a no-op job with 2
//!   workers, median of 20; floor: spawning and waiting on a re-exec of this
//!   binary that exits at once.
//! - W5 payload: a job taking 1 MiB and 64 MiB of bytes and returning the
//!   length, and one echoing them back: MB/s; floors: raw pipe bandwidth
//!   between two processes (the child reads N bytes, answers 1 byte), and
//!   memcpy of the same size. Also the peak host RSS during the 64 MiB jobs
//!   relative to the payload.
//! - W6 memory: host RSS with 100,000 jobs queued behind a worker busy with
//!   a long job (in a fresh host process, so that memory freed by earlier
//!   workloads does not hide the growth), and the RSS of an idle worker.
//! - W7 async tasks: the no-op as an `AsyncTask`, awaited one at a time on
//!   1 worker with `jobs_per_worker` 1 and 8, against the blocking no-op on
//!   the same pool in the same blocks (the cost of the worker's runtime);
//!   and I/O-bound fan-out, 512 jobs that each wait 20 ms on a timer, on 2
//!   workers with `jobs_per_worker(64)`, against the same wait as a
//!   blocking task with one job per worker (64 jobs): jobs/s.
//!
//! - W2 map defaults (`PROCPOOL_BENCH_ONLY=w2map`): 20,000 no-op jobs on 2
//!   workers through `submit` + `JobSet` (all submitted at once) against
//!   `map_unordered` at its defaults, with `in_flight(8)` (the window
//!   before it was widened) and with `chunk_size(16)`, interleaved in one
//!   run: jobs/s, median of 5 rounds.
//!
//! Python (`benches/python_pool.py`, if `python3` is on the PATH) and
//! `procspawn` run W1, W2, W4 and W5 (64 MiB) with 2 workers; their rows
//! compare them with procpool's figures from this run.
//!
//! This binary is its own pool worker (`procpool::init()`), its own
//! procspawn worker (`procspawn::init()`) and its own helper child
//! (`PROCPOOL_BENCH_CHILD=...`).

#[path = "../benches/common/mod.rs"]
mod common;

use std::collections::VecDeque;
use std::hint::black_box;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    PipeSink, Row, build_pool, child_command, group, map_throughput, median, percentiles, plural,
    print_table, spawn_blocking_throughput, spin, throughput,
};
use procpool::{ProcessPoolExecutor, Task};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use tokio::runtime::Runtime;

const LATENCY_WARMUP: usize = 2_000;
const LATENCY_ITERS: usize = 20_000;
/// W1 and its floor alternate in blocks of this many samples.
const LATENCY_BLOCK: usize = 1_000;
/// W2 reports the median of this many rounds.
const ROUNDS: usize = 3;
/// W3 reports the best of this many rounds for each side: on a shared
/// machine a round is slowed by other processes, never sped up.
const SCALING_ROUNDS: usize = 5;
const THROUGHPUT_JOBS: u64 = 200_000;
const MAP_CHUNK: usize = 1_000;
const SCALING_JOBS: u64 = 64;
/// W2 map defaults: jobs per round, and timed rounds (after one warm-up).
const MAP_DEFAULT_JOBS: u64 = 20_000;
const MAP_DEFAULT_ROUNDS: usize = 5;
const SCALING_JOB_TIME: Duration = Duration::from_millis(20);
const COLD_START_ROUNDS: usize = 20;
const MIB: usize = 1 << 20;
/// W5 payload sizes and how many timed repetitions each (after one
/// warm-up); the median is reported.
const PAYLOADS: [(usize, usize); 2] = [(MIB, 30), (64 * MIB, 5)];
const QUEUED_JOBS: u64 = 100_000;
/// procspawn creates two IPC channels (socket pairs) per job, so its W2 runs
/// fewer jobs and keeps at most `PS_IN_FLIGHT` in flight (for file
/// descriptors).
const PS_LATENCY_WARMUP: usize = LATENCY_WARMUP;
const PS_LATENCY_ITERS: usize = LATENCY_ITERS;
const PS_THROUGHPUT_JOBS: u64 = 20_000;
const PS_IN_FLIGHT: usize = 1_000;
const PS_PAYLOAD_REPS: usize = 3;
/// The Python script is stopped if it runs longer than this.
const PYTHON_DEADLINE: Duration = Duration::from_secs(150);

// Targets.
const W1_P50_TARGET: f64 = 1.5;
const W1_P99_TARGET: f64 = 3.0;
const W2_SUBMIT_TARGET: f64 = 0.5;
const W2_MAP_TARGET: f64 = 3_000_000.0;
const W3_SPEEDUP_TARGET: f64 = 1.9;
const W4_TARGET_MS: f64 = 3.0;
const W5_PIPE_TARGET: f64 = 0.8;
const W5_PEAK_TARGET: f64 = 2.0;
const W6_PER_JOB_TARGET: f64 = 1024.0;
const W6_IDLE_WORKER_TARGET: f64 = 10.0 * MIB as f64;

/// A job taking bytes and returning their length.
#[derive(Serialize, Deserialize)]
struct Len(#[serde(with = "serde_bytes")] Vec<u8>);

impl Task for Len {
    type Output = u64;
    fn run(self) -> u64 {
        self.0.len() as u64
    }
}
procpool::register!(Len);

/// A job returning its bytes.
#[derive(Serialize, Deserialize)]
struct Echo(#[serde(with = "serde_bytes")] Vec<u8>);

impl Task for Echo {
    type Output = ByteBuf;
    fn run(self) -> ByteBuf {
        ByteBuf::from(self.0)
    }
}
procpool::register!(Echo);

/// Holds its worker until cancelled (or for at most the given ms).
#[derive(Serialize, Deserialize)]
struct Hold(u64);

impl Task for Hold {
    type Output = ();
    fn run(self) {
        let t = Instant::now();
        while !procpool::cancelled() && t.elapsed() < Duration::from_millis(self.0) {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}
procpool::register!(Hold);

fn main() {
    procpool::init();
    procspawn::init();
    if let Some(mode) = common::child_mode() {
        match mode.as_str() {
            "w6" => w6_child(),
            other => common::serve_child(other),
        }
        return;
    }

    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!("procpool bench_report: {cpus} CPUs available");
    let load_at_start = load_average();
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut report = Report::default();

    // `PROCPOOL_BENCH_ONLY=w3,w7` runs only those workloads (no peers).
    let only = std::env::var("PROCPOOL_BENCH_ONLY").ok();
    if let Some(only) = &only {
        let run = |w: &str| only.split(',').any(|x| x.trim().eq_ignore_ascii_case(w));
        if run("w1") || run("w2") {
            let w1 = w1_latency(&rt, &mut report);
            if run("w2") {
                w2_throughput(&rt, &mut report, w1.floor.p50);
            }
        }
        if run("w3") {
            w3_scaling(&rt, &mut report);
        }
        if run("w4") {
            w4_cold_start(&rt, &mut report);
        }
        if run("w5") {
            w5_payload(&rt, &mut report);
        }
        if run("w6") {
            w6_memory(&rt, &mut report);
        }
        if run("w7") {
            w7_async(&rt, &mut report);
        }
        if run("w2map") {
            w2_map_defaults(&rt, &mut report);
        }
        report.print();
        return;
    }

    let w1 = w1_latency(&rt, &mut report);
    let w2 = w2_throughput(&rt, &mut report, w1.floor.p50);
    w3_scaling(&rt, &mut report);
    let w4 = w4_cold_start(&rt, &mut report);
    let w5 = w5_payload(&rt, &mut report);
    w6_memory(&rt, &mut report);
    w7_async(&rt, &mut report);
    w2_map_defaults(&rt, &mut report);
    let ours = Ours {
        w1: w1.two_workers,
        w2_submit: w2.0,
        w2_map: w2.1,
        w4_ms: w4,
        w5_len: w5.0,
        w5_echo: w5.1,
    };

    eprintln!("procspawn: W1, W2, W4, W5 on its pool of 2...");
    let ps = procspawn_figures();
    report.compare(&ours, &ps);
    eprintln!("python: running benches/python_pool.py...");
    match python_figures() {
        Ok(alts) => {
            for alt in &alts {
                report.compare(&ours, alt);
            }
        }
        Err(why) => report.add(
            8,
            Row::new(
                "Python process pools",
                format!("skipped: {why}"),
                "—".into(),
                "—".into(),
            ),
        ),
    }

    report.print();
    println!(
        "(W1: {LATENCY_ITERS} samples after {LATENCY_WARMUP} warm-up, interleaved with the floor \
         in blocks of {LATENCY_BLOCK}; W2: median of {ROUNDS} rounds; W3: best of \
         {SCALING_ROUNDS} rounds each; W4: median of \
         {COLD_START_ROUNDS}; W5: median of {} / {} runs; {cpus} CPUs, 1-min load average {} at \
         the start and {} at the end; {:.0} s in all)",
        PAYLOADS[0].1,
        PAYLOADS[1].1,
        load_at_start,
        load_average(),
        started.elapsed().as_secs_f64()
    );
    eprintln!(
        "procpool bench_report: done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The 1-minute load average (Linux), to tell a busy machine's run apart.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// The table's rows, each in a section (the workload number) so that the
/// comparisons with other pools print next to procpool's own rows.
#[derive(Default)]
struct Report {
    rows: Vec<(u8, Row)>,
}

impl Report {
    fn add(&mut self, section: u8, row: Row) {
        self.rows.push((section, row));
    }

    /// Rows comparing procpool's figures with another pool's.
    fn compare(&mut self, ours: &Ours, alt: &Alt) {
        let name = &alt.name;
        if let Some(theirs) = alt.w1 {
            self.add(
                1,
                Row::new(
                    &format!("W1 vs {name}"),
                    format!(
                        "procpool 2 workers: p50 {:.1} µs, p99 {:.1} µs",
                        ours.w1.p50, ours.w1.p99
                    ),
                    format!(
                        "p50 {:.1} µs, p99 {:.1} µs ({} jobs)",
                        theirs.p50,
                        theirs.p99,
                        group(alt.w1_jobs as f64)
                    ),
                    format!(
                        "p50: {}; p99: {}",
                        versus(ours.w1.p50, theirs.p50, false),
                        versus(ours.w1.p99, theirs.p99, false)
                    ),
                ),
            );
        }
        if let Some((rate, how)) = &alt.w2_submit {
            self.add(
                2,
                Row::new(
                    &format!("W2 unbatched vs {name}"),
                    format!("procpool submit: {} jobs/s", group(ours.w2_submit)),
                    format!("{} jobs/s ({how})", group(*rate)),
                    versus(ours.w2_submit, *rate, true),
                ),
            );
        }
        if let Some((rate, how)) = &alt.w2_batched {
            self.add(
                2,
                Row::new(
                    &format!("W2 batched vs {name}"),
                    format!(
                        "procpool map chunk_size {MAP_CHUNK}: {} jobs/s",
                        group(ours.w2_map)
                    ),
                    format!("{} jobs/s ({how})", group(*rate)),
                    versus(ours.w2_map, *rate, true),
                ),
            );
        }
        if let Some(ms) = alt.w4_ms {
            self.add(
                4,
                Row::new(
                    &format!("W4 vs {name}"),
                    format!("procpool median {:.2} ms", ours.w4_ms),
                    format!("median {ms:.2} ms{}", alt.w4_note),
                    versus(ours.w4_ms, ms, false),
                ),
            );
        }
        for (what, ours, theirs) in [
            ("64 MiB in, length out", ours.w5_len, alt.w5_len),
            ("64 MiB echo", ours.w5_echo, alt.w5_echo),
        ] {
            if let Some(theirs) = theirs {
                self.add(
                    5,
                    Row::new(
                        &format!("W5 {what} vs {name}"),
                        format!("procpool {} MB/s", group(ours)),
                        format!("{} MB/s", group(theirs)),
                        versus(ours, theirs, true),
                    ),
                );
            }
        }
    }

    fn print(mut self) {
        self.rows.sort_by_key(|(section, _)| *section);
        let rows: Vec<Row> = self.rows.into_iter().map(|(_, r)| r).collect();
        print_table(&rows, true);
    }
}

/// procpool's figures that the other pools are compared with.
struct Ours {
    /// W1 on 2 workers (the others run 2 workers too).
    w1: common::Percentiles,
    w2_submit: f64,
    w2_map: f64,
    w4_ms: f64,
    /// W5, 64 MiB, MB/s.
    w5_len: f64,
    w5_echo: f64,
}

/// Another pool's figures (any may be missing).
#[derive(Default)]
struct Alt {
    name: String,
    w1: Option<common::Percentiles>,
    w1_jobs: u64,
    /// jobs/s and how they were run.
    w2_submit: Option<(f64, String)>,
    w2_batched: Option<(f64, String)>,
    w4_ms: Option<f64>,
    w4_note: String,
    w5_len: Option<f64>,
    w5_echo: Option<f64>,
}

/// "procpool 2.10x faster" or "procpool 1.30x slower".
fn versus(ours: f64, theirs: f64, higher_is_better: bool) -> String {
    let r = if higher_is_better {
        ours / theirs
    } else {
        theirs / ours
    };
    if r >= 1.0 {
        format!("procpool {r:.2}x faster")
    } else {
        format!("procpool {:.2}x slower", 1.0 / r)
    }
}

struct W1 {
    floor: common::Percentiles,
    two_workers: common::Percentiles,
}

fn w1_latency(rt: &Runtime, report: &mut Report) -> W1 {
    eprintln!("W1: latency on 1 and 2 workers, and the pipe ping-pong floor...");
    let (floor, per_pool) = common::measure_w1(rt, LATENCY_WARMUP, LATENCY_ITERS, LATENCY_BLOCK);
    let mut two_workers = floor;
    for (workers, lat) in per_pool {
        if workers == 2 {
            two_workers = lat;
        }
        let name = format!("W1 no-op latency, {workers} worker{}", plural(workers));
        let p50 = lat.p50 / floor.p50;
        let p99 = lat.p99 / floor.p99;
        report.add(
            1,
            Row::new(
                &name,
                format!("p50 {:.1} µs", lat.p50),
                format!("pipe ping-pong p50 {:.1} µs", floor.p50),
                format!("{p50:.2}x"),
            )
            .target(format!("≤ {W1_P50_TARGET}x floor"), p50 <= W1_P50_TARGET),
        );
        report.add(
            1,
            Row::new(
                &name,
                format!("p99 {:.1} µs", lat.p99),
                format!("pipe ping-pong p99 {:.1} µs", floor.p99),
                format!("{p99:.2}x"),
            )
            .target(format!("≤ {W1_P99_TARGET}x floor"), p99 <= W1_P99_TARGET),
        );
    }
    W1 { floor, two_workers }
}

/// W2; returns (submit, map) jobs/s.
fn w2_throughput(rt: &Runtime, report: &mut Report, floor_p50: f64) -> (f64, f64) {
    eprintln!("W2: throughput on 2 workers (submit, map), and spawn_blocking...");
    let (submit_rate, map_rate, blocking_rate) = rt.block_on(async {
        let pool = build_pool(2).await;
        // Warm up: let the workers, pipes and blocking threads settle.
        throughput(&pool, THROUGHPUT_JOBS / 10).await;
        map_throughput(&pool, THROUGHPUT_JOBS / 10, MAP_CHUNK).await;
        spawn_blocking_throughput(THROUGHPUT_JOBS / 10).await;
        let mut submit_rates = Vec::new();
        let mut map_rates = Vec::new();
        let mut blocking_rates = Vec::new();
        for _ in 0..ROUNDS {
            submit_rates.push(throughput(&pool, THROUGHPUT_JOBS).await);
            map_rates.push(map_throughput(&pool, THROUGHPUT_JOBS, MAP_CHUNK).await);
            blocking_rates.push(spawn_blocking_throughput(THROUGHPUT_JOBS).await);
        }
        pool.shutdown().await;
        (
            median(submit_rates),
            median(map_rates),
            median(blocking_rates),
        )
    });
    // The same submits with a job timeout that never fires: a timer per
    // job must cost neither throughput nor memory once the job is done.
    let (timeout_rate, rss_growth) = rt.block_on(async {
        let pool = ProcessPoolExecutor::builder()
            .workers(2)
            .job_timeout(Duration::from_secs(3600))
            .build()
            .await
            .expect("the pool should start");
        // One full round first: the allocator keeps what 200,000 jobs in
        // flight need; what grows after it is what jobs leave behind.
        throughput(&pool, THROUGHPUT_JOBS).await;
        let before = pid_status_bytes("self", "VmRSS").unwrap_or(0);
        let mut rates = Vec::new();
        for _ in 0..ROUNDS {
            rates.push(throughput(&pool, THROUGHPUT_JOBS).await);
        }
        let after = pid_status_bytes("self", "VmRSS").unwrap_or(0);
        pool.shutdown().await;
        (median(rates), after.saturating_sub(before))
    });
    let floor_rate = 1e6 / floor_p50;
    let jobs = group(THROUGHPUT_JOBS as f64);
    report.add(
        2,
        Row::new(
            &format!("W2 {jobs} no-op jobs at once, 2 workers, submit, job_timeout(1h)"),
            format!("{} jobs/s", group(timeout_rate)),
            format!("without a timeout {} jobs/s", group(submit_rate)),
            format!("{:.2}x", timeout_rate / submit_rate),
        ),
    );
    report.add(
        2,
        Row::new(
            &format!(
                "W2 host RSS growth over {ROUNDS} more rounds of {jobs} jobs, job_timeout(1h)"
            ),
            format!("{:.1} MiB", rss_growth as f64 / MIB as f64),
            "—".into(),
            "—".into(),
        ),
    );
    let name = format!("W2 {jobs} no-op jobs at once, 2 workers, submit");
    let vs_blocking = submit_rate / blocking_rate;
    report.add(
        2,
        Row::new(
            &name,
            format!("{} jobs/s", group(submit_rate)),
            format!("spawn_blocking {} jobs/s", group(blocking_rate)),
            format!("{vs_blocking:.3}x"),
        )
        .target(
            format!("≥ {W2_SUBMIT_TARGET}x spawn_blocking"),
            vs_blocking >= W2_SUBMIT_TARGET,
        ),
    );
    report.add(
        2,
        Row::new(
            &name,
            format!("{} jobs/s", group(submit_rate)),
            format!("W1 floor as a rate (1e6/p50) {} jobs/s", group(floor_rate)),
            format!("{:.2}x", submit_rate / floor_rate),
        ),
    );
    report.add(
        2,
        Row::new(
            &format!("W2 {jobs} no-op jobs, 2 workers, map chunk_size {MAP_CHUNK}"),
            format!("{} jobs/s", group(map_rate)),
            format!("spawn_blocking {} jobs/s", group(blocking_rate)),
            format!("{:.2}x", map_rate / blocking_rate),
        )
        .target(
            format!("≥ {} jobs/s", group(W2_MAP_TARGET)),
            map_rate >= W2_MAP_TARGET,
        ),
    );
    (submit_rate, map_rate)
}

/// W2 map defaults: the same tiny jobs through `submit` + `JobSet` (all
/// submitted at once) and through `map_unordered`, at its default settings,
/// with the old default window of four jobs per worker, and with
/// `chunk_size(16)`, interleaved round by round on one pool.
fn w2_map_defaults(rt: &Runtime, report: &mut Report) {
    use futures::StreamExt;
    eprintln!("W2 map defaults: {MAP_DEFAULT_JOBS} no-op jobs, JobSet vs map_unordered...");
    async fn job_set(pool: &ProcessPoolExecutor) -> f64 {
        let t = Instant::now();
        let mut set = procpool::JobSet::new();
        for i in 0..MAP_DEFAULT_JOBS {
            set.spawn(pool, common::Noop(i));
        }
        let mut n = 0;
        while let Some((_, r)) = set.join_next().await {
            r.expect("a no-op job failed");
            n += 1;
        }
        assert_eq!(n, MAP_DEFAULT_JOBS);
        MAP_DEFAULT_JOBS as f64 / t.elapsed().as_secs_f64()
    }
    async fn unordered(pool: &ProcessPoolExecutor, in_flight: usize, chunk: usize) -> f64 {
        let t = Instant::now();
        let mut stream = pool.map_unordered((0..MAP_DEFAULT_JOBS).map(common::Noop));
        if in_flight > 0 {
            stream = stream.in_flight(in_flight);
        }
        if chunk > 1 {
            stream = stream.chunk_size(chunk);
        }
        let mut n = 0;
        while let Some(r) = stream.next().await {
            r.expect("a no-op job failed");
            n += 1;
        }
        assert_eq!(n, MAP_DEFAULT_JOBS);
        MAP_DEFAULT_JOBS as f64 / t.elapsed().as_secs_f64()
    }
    let [set, default, old_window, chunked] = rt.block_on(async {
        let pool = build_pool(2).await;
        let old = 4 * pool.workers();
        let mut rates: [Vec<f64>; 4] = Default::default();
        for round in 0..=MAP_DEFAULT_ROUNDS {
            let r = [
                job_set(&pool).await,
                unordered(&pool, 0, 1).await,
                unordered(&pool, old, 1).await,
                unordered(&pool, 0, 16).await,
            ];
            // Round 0 is the warm-up.
            if round > 0 {
                for (v, x) in rates.iter_mut().zip(r) {
                    v.push(x);
                }
            }
        }
        pool.shutdown().await;
        rates.map(median)
    });
    let jobs = group(MAP_DEFAULT_JOBS as f64);
    let vs = format!("submit + JobSet {} jobs/s", group(set));
    report.add(
        2,
        Row::new(
            &format!("W2 {jobs} no-op jobs, 2 workers, map_unordered defaults"),
            format!("{} jobs/s", group(default)),
            vs.clone(),
            format!("{:.2}x", default / set),
        )
        .target("≥ 1.0x submit + JobSet", default >= set),
    );
    report.add(
        2,
        Row::new(
            &format!("W2 {jobs} no-op jobs, 2 workers, map_unordered in_flight(8)"),
            format!("{} jobs/s", group(old_window)),
            vs.clone(),
            format!("{:.2}x", old_window / set),
        ),
    );
    report.add(
        2,
        Row::new(
            &format!("W2 {jobs} no-op jobs, 2 workers, map_unordered chunk_size(16)"),
            format!("{} jobs/s", group(chunked)),
            vs,
            format!("{:.2}x", chunked / set),
        ),
    );
}

fn w3_scaling(rt: &Runtime, report: &mut Report) {
    let (iters, expected, pools) = common::prepare_scaling(rt, SCALING_JOB_TIME, SCALING_JOBS);
    let mut serial_times = Vec::new();
    let mut thread_times = Vec::new();
    let mut pool_times = [Vec::new(), Vec::new()];
    for _ in 0..SCALING_ROUNDS {
        serial_times.push(common::serial_scaling(SCALING_JOBS, iters, &expected));
        let (results, elapsed) = on_threads(2, iters);
        thread_times.push(elapsed);
        assert_eq!(results, expected, "the threads and the serial run disagree");
        common::pools_scaling(rt, &pools, SCALING_JOBS, iters, &expected, &mut pool_times);
    }
    common::shutdown_all(rt, &pools);
    let serial_time = best(&serial_times);
    let thread_time = best(&thread_times);
    for (pool, times) in pools.iter().zip(pool_times) {
        let workers = pool.workers();
        let pool_time = best(&times);
        let speedup = serial_time / pool_time;
        let ideal = serial_time / workers as f64;
        let name = format!(
            "W3 {SCALING_JOBS} x ~{} ms CPU jobs, {workers} worker{}",
            SCALING_JOB_TIME.as_millis(),
            plural(workers)
        );
        let row = Row::new(
            &name,
            format!("{:.0} ms", pool_time * 1e3),
            format!("serial in-process {:.0} ms", serial_time * 1e3),
            format!(
                "speedup {speedup:.2}x; {:+.1}% vs ideal {:.0} ms",
                100.0 * (pool_time / ideal - 1.0),
                ideal * 1e3
            ),
        );
        if workers != 2 {
            report.add(3, row);
            continue;
        }
        report.add(
            3,
            row.target(
                format!("speedup ≥ {W3_SPEEDUP_TARGET}x"),
                speedup >= W3_SPEEDUP_TARGET,
            ),
        );
        // What this machine gave two threads in the same run: the speedup
        // any 2-way pool could have had.
        report.add(
            3,
            Row::new(
                &name,
                format!("{:.0} ms", pool_time * 1e3),
                format!(
                    "2 threads in-process {:.0} ms (speedup {:.2}x)",
                    thread_time * 1e3,
                    serial_time / thread_time
                ),
                format!("{:.2}x the threads' time", pool_time / thread_time),
            ),
        );
    }
}

fn best(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(f64::INFINITY, f64::min)
}

/// The W3 jobs on `threads` threads of this process, each taking the next
/// job; the results in job order and the time in seconds.
fn on_threads(threads: usize, iters: u64) -> (Vec<u64>, f64) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let next = AtomicU64::new(0);
    let t = Instant::now();
    let mut results: Vec<(u64, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let seed = next.fetch_add(1, Ordering::Relaxed);
                        if seed >= SCALING_JOBS {
                            return done;
                        }
                        done.push((seed, spin(iters, seed)));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a W3 thread panicked"))
            .collect()
    });
    let elapsed = t.elapsed().as_secs_f64();
    results.sort_unstable();
    (results.into_iter().map(|(_, r)| r).collect(), elapsed)
}

/// W4; returns procpool's median in ms.
fn w4_cold_start(rt: &Runtime, report: &mut Report) -> f64 {
    eprintln!("W4: cold start with 2 workers, and spawning a re-exec that exits at once...");
    let mut pool_times = Vec::new();
    let mut floor_times = Vec::new();
    for round in 0..=COLD_START_ROUNDS {
        let t = Instant::now();
        let status = child_command("exit")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .expect("the exit child should start");
        let floor = t.elapsed();
        assert!(status.success(), "the exit child failed: {status}");
        let pool_time = rt.block_on(async {
            let t = Instant::now();
            let pool = build_pool(2).await;
            let out = pool
                .submit(common::Noop(1))
                .await
                .expect("a no-op job failed");
            let elapsed = t.elapsed();
            assert_eq!(out, 2);
            pool.shutdown().await;
            elapsed
        });
        // Round 0 is a warm-up (page cache, dynamic loader).
        if round > 0 {
            floor_times.push(floor.as_secs_f64() * 1e3);
            pool_times.push(pool_time.as_secs_f64() * 1e3);
        }
    }
    let pool_ms = median(pool_times);
    let floor_ms = median(floor_times);
    report.add(
        4,
        Row::new(
            "W4 cold start: build() to first no-op result, 2 workers",
            format!("median {pool_ms:.2} ms"),
            format!("spawn + wait of a re-exec that exits at once: median {floor_ms:.2} ms"),
            format!("{:.2}x", pool_ms / floor_ms),
        )
        .target(format!("≤ {W4_TARGET_MS} ms"), pool_ms <= W4_TARGET_MS),
    );
    pool_ms
}

/// `size` bytes of a pattern, every page touched.
fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

fn mb_per_s(bytes: usize, seconds: f64) -> f64 {
    bytes as f64 / seconds / 1e6
}

/// The median time of `reps` copies of `size` bytes into a buffer whose
/// pages are already touched.
fn memcpy_time(src: &[u8], reps: usize) -> f64 {
    let mut dst = vec![1u8; src.len()];
    let times = (0..reps)
        .map(|_| {
            let t = Instant::now();
            dst.copy_from_slice(black_box(src));
            black_box(&mut dst);
            t.elapsed().as_secs_f64()
        })
        .collect();
    median(times)
}

/// W5; returns the 64 MiB (length, echo) MB/s.
fn w5_payload(rt: &Runtime, report: &mut Report) -> (f64, f64) {
    eprintln!("W5: 1 MiB and 64 MiB payloads, raw pipe and memcpy...");
    let pool = rt.block_on(build_pool(1));
    let mut sink = PipeSink::start();
    let mut at_64 = (0.0, 0.0);
    for (size, reps) in PAYLOADS {
        let data = payload(size);
        let mut pipe_times = Vec::new();
        let mut len_times = Vec::new();
        let mut echo_times = Vec::new();
        for rep in 0..=reps {
            let pipe = sink.send(&data).as_secs_f64();
            let task = Len(data.clone());
            let t = Instant::now();
            let n = rt.block_on(pool.submit(task)).expect("a Len job failed");
            let len = t.elapsed().as_secs_f64();
            assert_eq!(n, size as u64);
            let task = Echo(data.clone());
            let t = Instant::now();
            let back = rt.block_on(pool.submit(task)).expect("an Echo job failed");
            let echo = t.elapsed().as_secs_f64();
            assert!(back[..] == data[..], "the echo came back different");
            drop(back);
            // Repetition 0 is a warm-up.
            if rep > 0 {
                pipe_times.push(pipe);
                len_times.push(len);
                echo_times.push(echo);
            }
        }
        let pipe = mb_per_s(size, median(pipe_times));
        let copy = mb_per_s(size, memcpy_time(&data, reps));
        let len = mb_per_s(size, median(len_times));
        let echo = mb_per_s(2 * size, median(echo_times));
        let versus = format!("raw pipe {} MB/s; memcpy {} MB/s", group(pipe), group(copy));
        let mib = size / MIB;
        for (what, rate) in [
            (format!("W5 {mib} MiB in, length out"), len),
            (
                format!("W5 {mib} MiB echo (MB/s of bytes moved both ways)"),
                echo,
            ),
        ] {
            let ratio = rate / pipe;
            let row = Row::new(
                &what,
                format!("{} MB/s", group(rate)),
                versus.clone(),
                format!("{ratio:.2}x pipe; {:.3}x memcpy", rate / copy),
            );
            let row = if size >= 64 * MIB {
                row.target(
                    format!("≥ {W5_PIPE_TARGET}x raw pipe"),
                    ratio >= W5_PIPE_TARGET,
                )
            } else {
                row
            };
            report.add(5, row);
        }
        if size >= 64 * MIB {
            at_64 = (len, echo);
        }
    }
    sink.finish();

    // Peak host memory during one 64 MiB job: the growth of the host's RSS
    // from before the payload is made to its peak (VmHWM, reset first), so
    // the caller's own payload counts as 1x.
    let size = 64 * MIB;
    for echo in [false, true] {
        let baseline = status_bytes("VmRSS");
        let reset = reset_peak_rss();
        {
            let data = payload(size);
            if echo {
                let back = rt
                    .block_on(pool.submit(Echo(data)))
                    .expect("an Echo job failed");
                assert_eq!(back.len(), size);
            } else {
                let n = rt
                    .block_on(pool.submit(Len(data)))
                    .expect("a Len job failed");
                assert_eq!(n, size as u64);
            }
        }
        let peak = status_bytes("VmHWM");
        let (what, target) = if echo {
            ("W5 64 MiB echo: peak host RSS (result included)", None)
        } else {
            (
                "W5 64 MiB in, length out: peak host RSS",
                Some(W5_PEAK_TARGET),
            )
        };
        let row = match (baseline, peak, reset) {
            (Some(baseline), Some(peak), true) => {
                let growth = peak.saturating_sub(baseline) as f64;
                let ratio = growth / size as f64;
                let row = Row::new(
                    what,
                    format!("+{:.1} MiB over the pre-payload RSS", growth / MIB as f64),
                    "payload 64.0 MiB (the caller's own copy counts 1x)".into(),
                    format!("{ratio:.2}x payload"),
                );
                match target {
                    Some(t) => row.target(format!("≤ {t}x payload"), ratio <= t),
                    None => row,
                }
            }
            _ => Row::new(
                what,
                "not measured (no /proc/self/clear_refs or status)".into(),
                "—".into(),
                "—".into(),
            ),
        };
        report.add(5, row);
    }
    rt.block_on(pool.shutdown());
    at_64
}

/// A field of `/proc/self/status` (in kB there), in bytes.
fn status_bytes(field: &str) -> Option<u64> {
    pid_status_bytes("self", field)
}

fn pid_status_bytes(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find(|l| l.split(':').next() == Some(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resets this process's peak RSS (VmHWM) to its current RSS (Linux).
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn w7_async(rt: &Runtime, report: &mut Report) {
    eprintln!("W7: async tasks: no-op latency, I/O-bound fan-out...");
    for jobs in [1, 8] {
        let (sync, async_) = rt.block_on(async {
            let pool = procpool::ProcessPoolExecutor::builder()
                .workers(1)
                .jobs_per_worker(jobs)
                .build()
                .await
                .expect("the pool should start");
            let (mut sync, mut async_) = (Vec::new(), Vec::new());
            common::latency_of(&pool, LATENCY_WARMUP, &mut Vec::new(), common::Noop).await;
            common::latency_of(&pool, LATENCY_WARMUP, &mut Vec::new(), common::AsyncNoop).await;
            for _ in 0..LATENCY_ITERS / LATENCY_BLOCK / 2 {
                common::latency_of(&pool, LATENCY_BLOCK, &mut sync, common::Noop).await;
                common::latency_of(&pool, LATENCY_BLOCK, &mut async_, common::AsyncNoop).await;
            }
            pool.shutdown().await;
            (percentiles(sync), percentiles(async_))
        });
        report.add(
            7,
            Row::new(
                &format!("W7 async no-op latency, 1 worker, jobs_per_worker {jobs}"),
                format!("p50 {:.1} µs", async_.p50),
                format!("blocking no-op on the same pool p50 {:.1} µs", sync.p50),
                format!("{:.2}x", async_.p50 / sync.p50),
            ),
        );
    }
    let (async_rate, blocking_rate) = rt.block_on(async {
        let fan_out = procpool::ProcessPoolExecutor::builder()
            .workers(2)
            .jobs_per_worker(64)
            .build()
            .await
            .expect("the pool should start");
        let one_each = build_pool(2).await;
        let rate = |pool: procpool::ProcessPoolExecutor, jobs: u64, blocking: bool| async move {
            let t = Instant::now();
            let handles: Vec<_> = (0..jobs)
                .map(|_| {
                    if blocking {
                        pool.submit(common::BlockingWait(20))
                    } else {
                        pool.submit(common::AsyncWait(20))
                    }
                })
                .collect();
            for h in handles {
                assert_eq!(h.await.expect("a waiting job failed"), 20);
            }
            let r = jobs as f64 / t.elapsed().as_secs_f64();
            pool.shutdown().await;
            r
        };
        (
            rate(fan_out, 512, false).await,
            rate(one_each, 64, true).await,
        )
    });
    report.add(
        7,
        Row::new(
            "W7 fan-out, 20 ms waits, 2 workers x 64 async jobs",
            format!("{} jobs/s", group(async_rate)),
            format!(
                "blocking wait, 1 job per worker: {} jobs/s",
                group(blocking_rate)
            ),
            format!("{:.1}x (ideal 64x)", async_rate / blocking_rate),
        ),
    );
}

fn w6_memory(rt: &Runtime, report: &mut Report) {
    eprintln!("W6: {QUEUED_JOBS} queued jobs (in a fresh host process), idle worker RSS...");
    let out = child_command("w6")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("the W6 child should start");
    assert!(out.status.success(), "the W6 child failed: {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    let nums: Vec<u64> = text
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let [before, after, jobs] = nums[..] else {
        panic!("the W6 child printed {text:?}");
    };
    let per_job = after.saturating_sub(before) as f64 / jobs as f64;
    report.add(
        6,
        Row::new(
            &format!(
                "W6 {} no-op jobs queued behind a busy worker: host RSS",
                group(jobs as f64)
            ),
            format!(
                "+{:.1} MiB = {per_job:.0} B per queued job ({:.0} B beyond the 8-byte payload; \
                 handles included)",
                after.saturating_sub(before) as f64 / MIB as f64,
                per_job - 8.0
            ),
            "target 1 KiB per queued job".into(),
            format!("{:.2}x target", (per_job - 8.0) / W6_PER_JOB_TARGET),
        )
        .target("< 1 KiB per queued job", per_job - 8.0 < W6_PER_JOB_TARGET),
    );

    let (rss, anon) = rt.block_on(async {
        let pool = build_pool(2).await;
        // Let the workers settle after their handshake.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut rss = Vec::new();
        let mut anon = Vec::new();
        for pid in pool.worker_pids() {
            let pid = pid.to_string();
            rss.extend(pid_status_bytes(&pid, "VmRSS"));
            anon.extend(pid_status_bytes(&pid, "RssAnon"));
        }
        pool.shutdown().await;
        (rss, anon)
    });
    let max = |v: &[u64]| v.iter().copied().max().unwrap_or(0) as f64;
    let (rss, anon) = (max(&rss), max(&anon));
    report.add(
        6,
        Row::new(
            "W6 idle worker RSS (largest of 2 fresh workers)",
            format!(
                "VmRSS {:.1} MiB (RssAnon {:.1} MiB)",
                rss / MIB as f64,
                anon / MIB as f64
            ),
            "target 10 MiB per idle worker".into(),
            format!("{:.2}x target", rss / W6_IDLE_WORKER_TARGET),
        )
        .target("< 10 MiB per idle worker", rss < W6_IDLE_WORKER_TARGET),
    );
}

/// The W6 host: a fresh process, so that nothing freed earlier is reused.
/// Prints `RSS-before RSS-after jobs` on stdout.
fn w6_child() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async {
        let pool = build_pool(1).await;
        let hold = pool.submit(Hold(120_000));
        wait_for("the long job to start", || pool.stats().running == 1).await;
        // Let the pool's thread and this one settle.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let before = status_bytes("VmRSS").expect("VmRSS");
        let handles: Vec<_> = (0..QUEUED_JOBS)
            .map(|i| pool.submit(common::Noop(i)))
            .collect();
        wait_for("the jobs to be queued", || {
            pool.stats().queued as u64 == QUEUED_JOBS
        })
        .await;
        let after = status_bytes("VmRSS").expect("VmRSS");
        println!("{before} {after} {QUEUED_JOBS}");
        hold.cancel();
        drop(handles);
        pool.shutdown_now().await;
    });
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what} did not happen within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn ps_noop(x: u64) -> u64 {
    common::noop(x)
}

fn ps_len(bytes: ByteBuf) -> u64 {
    bytes.len() as u64
}

fn ps_echo(bytes: ByteBuf) -> ByteBuf {
    bytes
}

/// The `procspawn` crate's pool on W1, W2 (one job at a time), W4 and W5
/// 64 MiB. Its API is blocking; it runs on this thread.
fn procspawn_figures() -> Alt {
    let name = "procspawn::Pool".to_owned();
    let mut alt = Alt {
        name,
        ..Alt::default()
    };

    // W4 first: from Pool::new to the first result.
    let mut times = Vec::new();
    for round in 0..=COLD_START_ROUNDS {
        let t = Instant::now();
        let pool = procspawn::Pool::new(2).expect("a procspawn pool");
        let out = pool
            .spawn(1, ps_noop)
            .join()
            .expect("a procspawn job failed");
        let elapsed = t.elapsed();
        assert_eq!(out, 2);
        pool.shutdown();
        if round > 0 {
            times.push(elapsed.as_secs_f64() * 1e3);
        }
    }
    alt.w4_ms = Some(median(times));

    let pool = procspawn::Pool::new(2).expect("a procspawn pool");
    // W1.
    for i in 0..PS_LATENCY_WARMUP as u64 {
        let out = pool
            .spawn(i, ps_noop)
            .join()
            .expect("a procspawn job failed");
        assert_eq!(out, i + 1);
    }
    let mut samples = Vec::with_capacity(PS_LATENCY_ITERS);
    for i in 0..PS_LATENCY_ITERS as u64 {
        let t = Instant::now();
        let out = pool
            .spawn(i, ps_noop)
            .join()
            .expect("a procspawn job failed");
        samples.push(t.elapsed());
        assert_eq!(out, i + 1);
    }
    alt.w1 = Some(percentiles(samples));
    alt.w1_jobs = PS_LATENCY_ITERS as u64;

    // W2: submit with at most PS_IN_FLIGHT unfinished.
    let t = Instant::now();
    let mut in_flight = VecDeque::with_capacity(PS_IN_FLIGHT);
    let mut next_out = 1;
    let mut check = |h: procspawn::JoinHandle<u64>| {
        assert_eq!(h.join().expect("a procspawn job failed"), next_out);
        next_out += 1;
    };
    for i in 0..PS_THROUGHPUT_JOBS {
        if in_flight.len() == PS_IN_FLIGHT {
            check(in_flight.pop_front().expect("a job in flight"));
        }
        in_flight.push_back(pool.spawn(i, ps_noop));
    }
    in_flight.into_iter().for_each(check);
    let rate = PS_THROUGHPUT_JOBS as f64 / t.elapsed().as_secs_f64();
    alt.w2_submit = Some((
        rate,
        format!(
            "{} jobs, ≤ {} in flight",
            group(PS_THROUGHPUT_JOBS as f64),
            group(PS_IN_FLIGHT as f64)
        ),
    ));

    // W5, 64 MiB.
    let size = 64 * MIB;
    let data = payload(size);
    let mut len_times = Vec::new();
    let mut echo_times = Vec::new();
    for rep in 0..=PS_PAYLOAD_REPS {
        let arg = ByteBuf::from(data.clone());
        let t = Instant::now();
        let n = pool
            .spawn(arg, ps_len)
            .join()
            .expect("a procspawn job failed");
        let len = t.elapsed().as_secs_f64();
        assert_eq!(n, size as u64);
        let arg = ByteBuf::from(data.clone());
        let t = Instant::now();
        let back = pool
            .spawn(arg, ps_echo)
            .join()
            .expect("a procspawn job failed");
        let echo = t.elapsed().as_secs_f64();
        assert!(back[..] == data[..], "the echo came back different");
        if rep > 0 {
            len_times.push(len);
            echo_times.push(echo);
        }
    }
    alt.w5_len = Some(mb_per_s(size, median(len_times)));
    alt.w5_echo = Some(mb_per_s(2 * size, median(echo_times)));
    pool.shutdown();
    alt
}

/// Runs `benches/python_pool.py` and turns its JSON into one [`Alt`] per
/// variant; `Err` says why there are no Python rows.
fn python_figures() -> Result<Vec<Alt>, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/python_pool.py");
    let mut child = match Command::new("python3")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err("no python3".into());
        }
        Err(e) => return Err(format!("python3 did not start: {e}")),
    };
    // Read stdout on a thread so the deadline below can be kept.
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > PYTHON_DEADLINE => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "python_pool.py ran longer than {} s",
                    PYTHON_DEADLINE.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("waiting for python3: {e}")),
        }
    };
    let text = reader
        .join()
        .map_err(|_| "the reader thread panicked".to_owned())?
        .map_err(|e| format!("reading python3's output: {e}"))?;
    if !status.success() {
        return Err(format!("python_pool.py failed: {status}"));
    }
    let json: serde_json::Value =
        serde_json::from_str(text.trim()).map_err(|e| format!("python_pool.py's JSON: {e}"))?;
    let version = json["python"].as_str().unwrap_or("3").to_owned();
    let variants = json["variants"]
        .as_object()
        .ok_or("python_pool.py's JSON has no variants")?;
    let mut alts = Vec::new();
    for (key, label) in [
        ("cf_spawn", "ProcessPoolExecutor (spawn)"),
        ("mp_pool_fork", "multiprocessing.Pool (fork)"),
        ("cf_forkserver", "ProcessPoolExecutor (forkserver)"),
    ] {
        let Some(v) = variants.get(key) else {
            continue;
        };
        let num = |k: &str| v[k].as_f64();
        let w1 = match (num("w1_p50_us"), num("w1_p99_us")) {
            (Some(p50), Some(p99)) => Some(common::Percentiles { p50, p99 }),
            _ => None,
        };
        let w2_submit = num("w2_chunk1_jobs_per_s").map(|rate| {
            let jobs = num("w2_chunk1_jobs").unwrap_or(0.0);
            (rate, format!("map chunksize=1, {} jobs", group(jobs)))
        });
        let w2_batched = num("w2_batched_jobs_per_s").map(|rate| {
            let jobs = num("w2_batched_jobs").unwrap_or(0.0);
            let chunk = num("w2_chunk").unwrap_or(0.0);
            (
                rate,
                format!("map chunksize={chunk:.0}, {} jobs", group(jobs)),
            )
        });
        alts.push(Alt {
            name: format!("Python {version} {label}"),
            w1,
            w1_jobs: num("w1_iters").unwrap_or(0.0) as u64,
            w2_submit,
            w2_batched,
            w4_ms: num("w4_ms"),
            w4_note: if key == "cf_forkserver" {
                " (fork server already running)".into()
            } else {
                String::new()
            },
            w5_len: num("w5_len_mb_per_s"),
            w5_echo: num("w5_echo_mb_per_s"),
        });
    }
    Ok(alts)
}
