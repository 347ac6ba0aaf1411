//! The pool's bookkeeping under settings that used to break it (defects of
//! the host-core issue, end to end with real workers; the simulation in
//! `src/host/simulation.rs` covers the same rules at random).

mod support;

use std::time::Duration;

use futures::StreamExt;
use procpool::{Error, ProcessPoolExecutor, Task};
use serde::{Deserialize, Serialize};
use support::{bounded, eventually};

procpool::init_before_main!();

#[derive(Serialize, Deserialize)]
struct Double(u64);

impl Task for Double {
    type Output = u64;
    fn run(self) -> u64 {
        std::thread::sleep(Duration::from_millis(self.0 % 7));
        self.0 * 2
    }
}
procpool::register!(Double);

/// Defect 1: with `max_worker_rss` and several jobs per worker, a worker
/// being recycled took new jobs, and jobs whose send failed lost their
/// frame ("could not be sent again"). Every worker is over a 1-byte limit
/// after every job here, so each is recycled as soon as one job ends.
#[tokio::test]
async fn recycling_by_memory_with_several_jobs_per_worker_loses_no_job() {
    let pool = ProcessPoolExecutor::builder()
        .workers(2)
        .jobs_per_worker(4)
        .max_worker_rss(1)
        .build()
        .await
        .unwrap();
    for round in 0..3 {
        let handles: Vec<_> = (0..100).map(|i| pool.submit(Double(i))).collect();
        for (i, h) in handles.into_iter().enumerate() {
            let r = bounded("a job on a recycling pool", h).await;
            let r = r.unwrap_or_else(|e| panic!("round {round}, job {i}: {e}"));
            assert_eq!(r, 2 * i as u64);
        }
    }
    assert!(pool.stats().recycled > 0);
    assert_eq!(pool.stats().running, 0);
    bounded("shutdown", pool.shutdown()).await;
}

/// Defect 8: `prefetch(usize::MAX)` overflowed `jobs_per_worker +
/// prefetch` on the pool thread, leaving every handle pending.
#[tokio::test]
async fn a_huge_prefetch_serves_normally() {
    let pool = ProcessPoolExecutor::builder()
        .workers(2)
        .jobs_per_worker(2)
        .prefetch(usize::MAX)
        .build()
        .await
        .unwrap();
    let results: Vec<u64> = bounded(
        "jobs with a huge prefetch",
        futures::future::join_all((0..40).map(|i| pool.submit(Double(i)))),
    )
    .await
    .into_iter()
    .map(Result::unwrap)
    .collect();
    assert_eq!(results, (0..40).map(|i| 2 * i).collect::<Vec<_>>());
    bounded("shutdown", pool.shutdown()).await;
}

/// Defect 9: `map` on a pool with `max_queued` yielded `Overloaded` items;
/// it waits for room instead, one job at a time or in chunks.
#[tokio::test]
async fn map_on_a_bounded_queue_waits_for_room() {
    let pool = ProcessPoolExecutor::builder()
        .workers(2)
        .max_queued(2)
        .build()
        .await
        .unwrap();
    for chunk in [1, 3] {
        let results: Vec<Result<u64, Error>> = bounded(
            "map over a bounded queue",
            pool.map((0..40).map(Double))
                .in_flight(16)
                .chunk_size(chunk)
                .collect(),
        )
        .await;
        let values: Vec<u64> = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|e| panic!("chunk size {chunk}: {e}")))
            .collect();
        assert_eq!(values, (0..40).map(|i| 2 * i).collect::<Vec<_>>());
        let unordered: Vec<Result<u64, Error>> = bounded(
            "map_unordered over a bounded queue",
            pool.map_unordered((0..40).map(Double))
                .in_flight(16)
                .chunk_size(chunk)
                .collect(),
        )
        .await;
        assert!(unordered.iter().all(Result::is_ok), "{unordered:?}");
    }
    bounded("shutdown", pool.shutdown()).await;
}

/// Defect 4: a cancel racing a job's start left `stats().running` at 1 on
/// an idle pool. Many jobs are cancelled right after they are submitted
/// (some before, some while, some after they reach a worker).
#[tokio::test]
async fn cancels_racing_dispatch_leave_the_counters_at_zero() {
    let pool = ProcessPoolExecutor::builder()
        .workers(2)
        .jobs_per_worker(2)
        .build()
        .await
        .unwrap();
    for round in 0..20 {
        let handles: Vec<_> = (0..20).map(|i| pool.submit(Double(i))).collect();
        for (i, h) in handles.into_iter().enumerate() {
            if (i + round) % 3 == 0 {
                tokio::task::yield_now().await;
            }
            drop(h);
        }
    }
    eventually("the counters to settle at zero", || {
        let s = pool.stats();
        s.running == 0 && s.queued == 0
    })
    .await;
    assert_eq!(bounded("a job", pool.submit(Double(4))).await.unwrap(), 8);
    bounded("shutdown", pool.shutdown()).await;
}
