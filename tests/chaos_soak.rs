//! A soak: one million small jobs with random cancels and drops, half of
//! them submitted one by one, half through `map` with batching. Every job
//! resolves, and the host's memory stays flat.
//!
//! Gated: it runs only with `PROCPOOL_SOAK=1`, and is `#[ignore]`d too:
//!
//! ```text
//! PROCPOOL_SOAK=1 cargo test --release --test chaos_soak -- --ignored --nocapture
//! ```
//!
//! With `PROCPOOL_SOAK_JOBS_PER_WORKER=n` the workers run `n` jobs at once.

mod support;

#[path = "support/chaos.rs"]
mod chaos;
#[path = "support/procfs.rs"]
mod procfs;
#[path = "support/tasks.rs"]
mod tasks;

use std::time::Instant;

use chaos::*;
use futures::StreamExt;
use procfs::*;
use procpool::Error;
use support::*;
use tasks::*;

procpool::init_before_main!();

const TOTAL: u64 = 1_000_000;
const WINDOW: u64 = 2_000;
const CHECKPOINT: u64 = 100_000;
/// How much the host's RSS may grow between the first and the last
/// checkpoint.
const RSS_SLACK: u64 = 32 * MIB;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: a million jobs; run with \
            PROCPOOL_SOAK=1 cargo test --release --test chaos_soak -- --ignored --nocapture"]
async fn a_million_small_jobs_with_random_cancels() {
    if std::env::var("PROCPOOL_SOAK").as_deref() != Ok("1") {
        eprintln!("chaos_soak skipped: set PROCPOOL_SOAK=1 to run it");
        return;
    }
    let seed = chaos_seed("a_million_small_jobs_with_random_cancels");
    let mut rng = XorShift::new(seed);
    // `PROCPOOL_SOAK_JOBS_PER_WORKER=4` soaks the concurrent worker engine.
    let slots = std::env::var("PROCPOOL_SOAK_JOBS_PER_WORKER")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let pool = chaos_builder(2)
        .jobs_per_worker(slots)
        .build()
        .await
        .expect("the soak pool should start");
    let started = Instant::now();
    let (mut ok, mut cancelled, mut dropped, mut batched) = (0u64, 0u64, 0u64, 0u64);
    let mut rss_at = Vec::new();
    let mut worker_peak = 0u64;
    let mut n = 0u64;
    let mut window_no = 0u64;
    while n < TOTAL {
        let base = n;
        let count = WINDOW.min(TOTAL - n);
        if window_no % 2 == 1 {
            // Through map, in batches of 50.
            let results: Vec<_> = bounded(
                "a batched window",
                pool.map((base..base + count).map(Square))
                    .chunk_size(50)
                    .collect::<Vec<_>>(),
            )
            .await;
            assert_eq!(results.len() as u64, count);
            for (m, r) in (base..).zip(results) {
                assert_eq!(r.unwrap(), m * m);
            }
            ok += count;
            batched += count;
        } else {
            // One by one; about 1% cancelled, 0.5% dropped.
            let mut handles = Vec::with_capacity(count as usize);
            for m in base..base + count {
                handles.push((m, pool.submit(Square(m))));
            }
            let mut keep = Vec::with_capacity(handles.len());
            for (m, h) in handles {
                match rng.below(200) {
                    0 | 1 => {
                        let took = h.cancel();
                        keep.push((m, h, Some(took)));
                    }
                    2 => {
                        drop(h);
                        dropped += 1;
                    }
                    _ => keep.push((m, h, None)),
                }
                if rng.below(500) == 0 {
                    tokio::task::yield_now().await;
                }
            }
            for (m, h, took) in keep {
                match (bounded("a soak job", h).await, took) {
                    (Ok(v), None | Some(false)) => {
                        assert_eq!(v, m * m);
                        ok += 1;
                    }
                    (Err(Error::Cancelled), Some(true)) => cancelled += 1,
                    (r, took) => panic!("job {m}: cancel() said {took:?}, got {r:?}"),
                }
            }
        }
        n += count;
        window_no += 1;
        if n % CHECKPOINT == 0 {
            let rss = rss_bytes(None);
            for pid in pool.worker_pids() {
                worker_peak = worker_peak.max(peak_rss_bytes(Some(pid)));
            }
            rss_at.push(rss);
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "{n:>8} jobs in {secs:6.1} s ({:.0}/s): host RSS {:.1} MiB, stats {:?}",
                n as f64 / secs,
                rss as f64 / MIB as f64,
                pool.stats()
            );
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(ok + cancelled + dropped, TOTAL, "a job went missing");
    for pid in pool.worker_pids() {
        worker_peak = worker_peak.max(peak_rss_bytes(Some(pid)));
    }
    let host_peak = peak_rss_bytes(None);
    let stats = pool.stats();
    eprintln!(
        "soak: {TOTAL} jobs ({batched} batched) in {:.2} min: {ok} ok, {cancelled} cancelled, \
         {dropped} dropped; host peak RSS {:.1} MiB, worker peak RSS {:.1} MiB; {stats:?}",
        elapsed.as_secs_f64() / 60.0,
        host_peak as f64 / MIB as f64,
        worker_peak as f64 / MIB as f64,
    );
    figures(
        "a_million_small_jobs_with_random_cancels",
        TOTAL,
        cancelled + dropped,
    );
    let first = rss_at[0];
    let last = *rss_at.last().unwrap();
    assert!(
        last <= first + RSS_SLACK,
        "host RSS grew from {:.1} MiB after the first {CHECKPOINT} jobs to {:.1} MiB after the \
         last: {rss_at:?}",
        first as f64 / MIB as f64,
        last as f64 / MIB as f64
    );
    assert_eq!(stats.respawns, 0, "no worker should have been lost");
    eventually("the pool to settle", || {
        let s = pool.stats();
        s.queued == 0 && s.running == 0
    })
    .await;
    bounded("shutdown", pool.shutdown()).await;
}
