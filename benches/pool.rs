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
//! and its own ping-pong child (`PROCPOOL_BENCH_CHILD=pingpong`). Arguments
//! (cargo passes `--bench`) are ignored. The measurement code is shared
//! with `examples/bench_report.rs` (the full report) in `benches/common/`.

mod common;

use std::time::{Duration, Instant};

use common::{
    Row, build_pool, group, median, plural, print_table, spawn_blocking_throughput, throughput,
};

const LATENCY_WARMUP: usize = 2_000;
const LATENCY_ITERS: usize = 20_000;
/// W1 and its floor alternate in blocks of this many samples.
const LATENCY_BLOCK: usize = 1_000;
/// W2 and W3 report the median of this many rounds.
const ROUNDS: usize = 3;
const THROUGHPUT_JOBS: u64 = 100_000;
const SCALING_JOBS: u64 = 16;
const SCALING_JOB_TIME: Duration = Duration::from_millis(20);

fn main() {
    procpool::init();
    if let Some(mode) = common::child_mode() {
        common::serve_child(&mode);
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
    let (floor, per_pool) = common::measure_w1(&rt, LATENCY_WARMUP, LATENCY_ITERS, LATENCY_BLOCK);
    for (workers, lat) in per_pool {
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
    let (iters, expected, pools) = common::prepare_scaling(&rt, SCALING_JOB_TIME, SCALING_JOBS);
    let mut serial_times = Vec::new();
    let mut pool_times = [Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        serial_times.push(common::serial_scaling(SCALING_JOBS, iters, &expected));
        common::pools_scaling(&rt, &pools, SCALING_JOBS, iters, &expected, &mut pool_times);
    }
    common::shutdown_all(&rt, &pools);
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

    print_table(&rows, false);
    println!(
        "(W2 and W3: median of {ROUNDS} rounds; W1 and its floor: {LATENCY_ITERS} samples each \
         after {LATENCY_WARMUP} warm-up, interleaved in blocks of {LATENCY_BLOCK})"
    );
    eprintln!(
        "procpool bench: done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
