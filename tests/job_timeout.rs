//! Timeouts: per job and pool-wide, counted from the start of the job.

mod support;

#[path = "support/procfs.rs"]
mod procfs;
#[path = "support/tasks.rs"]
mod tasks;

use std::time::Duration;

use procfs::*;
use procpool::{Error, JobOptions, ProcessPoolExecutor};
use support::*;
use tasks::*;

procpool::init_before_main!();

#[tokio::test]
async fn a_job_over_its_timeout_fails_and_its_worker_is_replaced() {
    let pool = pool(1).await;
    let pid = pool.worker_pids()[0];
    let opts = JobOptions::new().timeout(Duration::from_millis(200));
    let e = bounded("a timed-out job", pool.submit_with(Sleep(60_000), opts))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        Error::TimedOut {
            timeout: Duration::from_millis(200)
        }
    );
    assert!(e.is_timeout());
    let next = bounded("next job", pool.submit(Pid)).await.unwrap();
    assert_ne!(next, pid, "the worker should have been killed");
    assert!(!process_alive(pid));
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn the_pool_wide_timeout_applies_unless_a_job_overrides_it() {
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .job_timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let e = bounded("a job", pool.submit(Sleep(60_000)))
        .await
        .unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
    let long_ok = JobOptions::new().timeout(Duration::from_secs(60));
    assert!(
        bounded("a job", pool.submit_with(Sleep(400), long_ok))
            .await
            .is_ok()
    );
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn the_timeout_does_not_count_time_spent_queued() {
    let pool = pool(1).await;
    let first = pool.submit(Sleep(600));
    // Queued behind 600 ms of work, but runs for 50 ms: no timeout.
    let opts = JobOptions::new().timeout(Duration::from_millis(400));
    let second = pool.submit_with(Sleep(50), opts);
    bounded("first", first).await.unwrap();
    assert!(bounded("second", second).await.is_ok());
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn a_timeout_on_one_worker_does_not_disturb_another() {
    let pool = pool(2).await;
    let keep = pool.submit(Sleep(800));
    let opts = JobOptions::new().timeout(Duration::from_millis(100));
    let e = bounded("timed out", pool.submit_with(Sleep(60_000), opts))
        .await
        .unwrap_err();
    assert!(e.is_timeout());
    assert!(bounded("the other job", keep).await.is_ok());
    bounded("shutdown", pool.shutdown()).await;
}
