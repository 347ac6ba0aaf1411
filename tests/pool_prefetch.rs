//! Jobs sent ahead to busy workers: never lost, never stuck behind a long
//! job while another worker is idle.

mod support;

#[path = "support/tasks.rs"]
mod tasks;

use std::time::Duration;

use procpool::ProcessPoolExecutor;
use support::*;
use tasks::*;

procpool::init_before_main!();

#[tokio::test]
async fn a_job_sent_ahead_to_a_worker_that_dies_is_requeued_not_failed() {
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .prefetch(1)
        .build()
        .await
        .unwrap();
    let running = pool.submit(Sleep(60_000));
    eventually("the first job to run", || pool.stats().running == 1).await;
    let ahead = pool.submit(Square(12));
    // Give the scheduler time to send it ahead to the busy worker.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = pool.worker_pids()[0];
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    assert!(
        bounded("the running job", running)
            .await
            .unwrap_err()
            .is_worker_died()
    );
    assert_eq!(bounded("the job sent ahead", ahead).await.unwrap(), 144);
    assert_eq!(pool.stats().retried, 0, "requeued, not retried");
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn a_job_waiting_behind_a_long_one_is_taken_back_when_a_worker_idles() {
    let pool = ProcessPoolExecutor::builder()
        .workers(2)
        .prefetch(2)
        .build()
        .await
        .unwrap();
    let long = pool.submit(Sleep(4000));
    let short = pool.submit(Sleep(300));
    eventually("both running", || pool.stats().running == 2).await;
    // Queued while both workers are busy: sent ahead to one of them.
    let waiting: Vec<_> = (0..4).map(|_| pool.submit(Sleep(10))).collect();
    let short_pid = bounded("the short job", short).await.unwrap();
    for w in waiting {
        let pid = bounded("a waiting job", w).await.unwrap();
        assert_eq!(pid, short_pid, "a job ran behind the long one");
    }
    assert!(
        !long.is_finished(),
        "the waiting jobs finished after the long job"
    );
    bounded("the long job", long).await.unwrap();
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn many_jobs_with_prefetch_all_resolve_in_order_per_submission() {
    let pool = ProcessPoolExecutor::builder()
        .workers(2)
        .prefetch(4)
        .build()
        .await
        .unwrap();
    let handles: Vec<_> = (0..20_000u64).map(|i| pool.submit(Square(i))).collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(bounded("a job", h).await.unwrap(), (i * i) as u64);
    }
    let s = pool.stats();
    assert_eq!(s.completed, 20_000);
    eventually("counters to settle", || {
        let s = pool.stats();
        s.queued == 0 && s.running == 0
    })
    .await;
    bounded("shutdown", pool.shutdown()).await;
}
