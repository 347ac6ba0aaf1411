//! `map` with indexed results and per-map job options (timeouts, retries),
//! chunked and unchunked, and `JobSet::spawn_with`.

mod support;

#[path = "support/tasks.rs"]
mod tasks;

use std::time::Duration;

use futures::StreamExt;
use procpool::{Error, JobOptions, JobSet, ProcessPoolExecutor};
use support::*;
use tasks::*;

procpool::init_before_main!();

const BAD: u64 = 77;
const N: usize = 300;

/// Checks that `results` has one result for each of the `N` inputs, tied to
/// the right input: `i * i`, except the panic of input `BAD`.
fn check_indexed(what: &str, results: &[(usize, Result<u64, Error>)]) {
    assert_eq!(results.len(), N, "{what}: one result per input");
    let mut seen = vec![false; N];
    for (i, r) in results {
        assert!(!seen[*i], "{what}: index {i} twice");
        seen[*i] = true;
        if *i as u64 == BAD {
            assert!(
                matches!(r, Err(Error::Panicked { message, .. }) if message.contains("refusing 77")),
                "{what}: input {i} gave {r:?}"
            );
        } else {
            assert_eq!(
                r.as_ref().ok(),
                Some(&(*i as u64 * *i as u64)),
                "{what}: input {i}"
            );
        }
    }
}

fn inputs() -> impl Iterator<Item = SquareUnless> + Send + 'static {
    (0..N as u64).map(|n| SquareUnless { n, bad: BAD })
}

#[tokio::test]
async fn indexed_results_name_their_input_in_every_kind_of_map() {
    let pool = pool(2).await;

    let ordered = bounded("map", pool.map(inputs()).indexed().collect::<Vec<_>>()).await;
    check_indexed("map", &ordered);
    let order: Vec<usize> = ordered.iter().map(|(i, _)| *i).collect();
    assert_eq!(order, (0..N).collect::<Vec<_>>(), "map keeps input order");

    let unordered = bounded(
        "map_unordered",
        pool.map_unordered(inputs()).indexed().collect::<Vec<_>>(),
    )
    .await;
    check_indexed("map_unordered", &unordered);

    // Options set after `indexed()`: the positions are the tasks', not the
    // batches'.
    let chunked = bounded(
        "chunked map",
        pool.map(inputs())
            .indexed()
            .chunk_size(16)
            .collect::<Vec<_>>(),
    )
    .await;
    check_indexed("chunked map", &chunked);
    let order: Vec<usize> = chunked.iter().map(|(i, _)| *i).collect();
    assert_eq!(order, (0..N).collect::<Vec<_>>(), "chunked map keeps order");

    let chunked_unordered = bounded(
        "chunked map_unordered",
        pool.map_unordered(inputs())
            .chunk_size(7)
            .in_flight(3)
            .indexed()
            .collect::<Vec<_>>(),
    )
    .await;
    check_indexed("chunked map_unordered", &chunked_unordered);

    let from_stream = bounded(
        "map_stream_unordered",
        pool.map_stream_unordered(futures::stream::iter(inputs()))
            .indexed()
            .collect::<Vec<_>>(),
    )
    .await;
    check_indexed("map_stream_unordered", &from_stream);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn a_map_timeout_fails_only_the_slow_task_and_names_it() {
    // The pool has no job timeout of its own.
    let pool = pool(2).await;
    let timeout = Duration::from_secs(2);
    let tasks = (0..6u64).map(|i| Sleep(if i == 3 { 60_000 } else { 1 }));
    let results = bounded(
        "a map with a timeout",
        pool.map_unordered(tasks)
            .timeout(timeout)
            .indexed()
            .collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(results.len(), 6);
    for (i, r) in &results {
        if *i == 3 {
            assert!(
                matches!(r, Err(Error::TimedOut { timeout: t }) if *t == timeout),
                "input {i}: {r:?}"
            );
        } else {
            assert!(r.is_ok(), "input {i}: {r:?}");
        }
    }
    assert_eq!(pool.stats().failed, 1);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn a_chunked_map_timeout_is_per_task_so_a_batch_gets_k_times_it() {
    let pool = pool(2).await;
    let per_task = Duration::from_secs(1);
    // Batch 0: four tasks of 0.6 s, 2.4 s in all: over the per-task
    // timeout, under 4 times it. Batch 1: one task that never ends.
    let tasks = (0..8u64).map(|i| {
        Sleep(if i == 5 {
            60_000
        } else if i < 4 {
            600
        } else {
            1
        })
    });
    let results = bounded(
        "a chunked map with a timeout",
        pool.map(tasks)
            .chunk_size(4)
            .options(JobOptions::new().timeout(per_task))
            .indexed()
            .collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(results.len(), 8);
    for (i, r) in &results {
        if *i < 4 {
            assert!(r.is_ok(), "input {i} (first batch): {r:?}");
        } else {
            // The whole second batch fails, with the batch's timeout.
            assert!(
                matches!(r, Err(Error::TimedOut { timeout }) if *timeout == per_task * 4),
                "input {i} (second batch): {r:?}"
            );
        }
    }
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn map_retries_run_a_task_again_after_its_worker_died() {
    let pool = pool(1).await;
    let flags: Vec<String> = (0..2).map(|i| temp_path(&format!("map-die-{i}"))).collect();
    let results = bounded(
        "a map with retries",
        pool.map(flags.clone().into_iter().map(DieOnce))
            .retries(1)
            .collect::<Vec<_>>(),
    )
    .await;
    for r in &results {
        assert_eq!(r.as_ref().ok(), Some(&7), "{r:?}");
    }
    assert_eq!(pool.stats().retried, 2);

    // Without retries the death is the task's result.
    let flag = temp_path("map-die-unretried");
    let results = bounded(
        "a map without retries",
        pool.map(std::iter::once(DieOnce(flag.clone())))
            .collect::<Vec<_>>(),
    )
    .await;
    assert!(
        matches!(results[..], [Err(Error::WorkerDied { .. })]),
        "{results:?}"
    );
    for f in flags.iter().chain([&flag]) {
        let _ = std::fs::remove_file(f);
    }
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn a_chunked_map_retry_runs_the_whole_batch_again() {
    let pool = pool(1).await;
    // Each run of the batch kills its worker at the first task whose flag
    // does not exist yet: three runs die, the fourth completes.
    let flags: Vec<String> = (0..3)
        .map(|i| temp_path(&format!("batch-die-{i}")))
        .collect();
    let results = bounded(
        "a chunked map with retries",
        pool.map(flags.clone().into_iter().map(DieOnce))
            .chunk_size(3)
            .retries(3)
            .collect::<Vec<_>>(),
    )
    .await;
    for r in &results {
        assert_eq!(r.as_ref().ok(), Some(&7), "{r:?}");
    }
    assert_eq!(pool.stats().retried, 3);
    assert_eq!(pool.stats().completed, 1, "one batch job");

    // With fewer retries than that, every task of the batch fails.
    let fewer: Vec<String> = (0..3)
        .map(|i| temp_path(&format!("batch-fewer-{i}")))
        .collect();
    let results = bounded(
        "a chunked map with too few retries",
        pool.map(fewer.clone().into_iter().map(DieOnce))
            .chunk_size(3)
            .retries(1)
            .collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(results.len(), 3);
    for r in &results {
        assert!(matches!(r, Err(Error::WorkerDied { .. })), "{r:?}");
    }
    for f in flags.iter().chain(&fewer) {
        let _ = std::fs::remove_file(f);
    }
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn job_set_spawn_with_applies_the_options_to_that_job_only() {
    let pool: ProcessPoolExecutor = pool(2).await;
    let mut set = JobSet::new();
    let slow = set.spawn_with(
        &pool,
        Sleep(60_000),
        JobOptions::new().timeout(Duration::from_millis(300)),
    );
    let fast = set.spawn(&pool, Sleep(1));
    let results = bounded("the set", set.join_all()).await;
    assert_eq!(results.len(), 2);
    for (id, r) in results {
        if id == slow {
            assert!(
                matches!(r, Err(Error::TimedOut { timeout }) if timeout == Duration::from_millis(300)),
                "{r:?}"
            );
        } else {
            assert_eq!(id, fast);
            assert!(r.is_ok(), "{r:?}");
        }
    }
    bounded("shutdown", pool.shutdown()).await;
}
