//! Opt-in retries after a worker death, and the per-worker memory limit.

mod support;

#[path = "support/effects.rs"]
mod effects;
#[path = "support/tasks.rs"]
mod tasks;

use effects::*;
use procpool::{Error, JobOptions, ProcessPoolExecutor};
use support::*;
use tasks::*;

procpool::init_before_main!();

#[tokio::test]
async fn a_job_with_retries_runs_again_after_its_worker_dies() {
    let pool = pool(1).await;
    let flag = temp_path("die-once");
    let r = bounded(
        "a retried job",
        pool.submit_with(DieOnce(flag.clone()), JobOptions::new().retries(1)),
    )
    .await;
    let _ = std::fs::remove_file(&flag);
    assert_eq!(r.unwrap(), 7);
    assert_eq!(pool.stats().retried, 1);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn without_retries_a_job_runs_at_most_once() {
    let pool = pool(1).await;
    let flag = temp_path("die-once-no-retry");
    let e = bounded("a job", pool.submit(DieOnce(flag.clone())))
        .await
        .unwrap_err();
    let _ = std::fs::remove_file(&flag);
    assert!(e.is_worker_died(), "{e:?}");
    assert_eq!(pool.stats().retried, 0);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn retries_are_bounded() {
    let pool = pool(1).await;
    let e = bounded(
        "a job that always dies",
        pool.submit_with(Die(Death::Abort), JobOptions::new().retries(2)),
    )
    .await
    .unwrap_err();
    assert!(e.is_worker_died(), "{e:?}");
    assert_eq!(pool.stats().retried, 2);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn a_worker_over_the_memory_limit_is_killed_and_its_job_says_why() {
    let pool = ProcessPoolExecutor::builder()
        .workers(2)
        .worker_memory_limit(200 << 20)
        .build()
        .await
        .unwrap();
    let good = pool.submit(Hog {
        mb: 20,
        hold_ms: 300,
    });
    let e = bounded(
        "a hog",
        pool.submit(Hog {
            mb: 600,
            hold_ms: 30_000,
        }),
    )
    .await
    .unwrap_err();
    match &e {
        Error::MemoryLimit { limit, rss } => {
            assert_eq!(*limit, 200 << 20);
            assert!(*rss > *limit);
        }
        other => panic!("expected MemoryLimit, got {other:?}"),
    }
    assert!(e.to_string().contains("limit"), "{e}");
    assert!(bounded("a good job", good).await.is_ok());
    eventually("the pool to regain its size", || {
        pool.stats().workers_alive == 2
    })
    .await;
    assert_eq!(bounded("a job", pool.submit(Square(2))).await.unwrap(), 4);
    bounded("shutdown", pool.shutdown()).await;
}
