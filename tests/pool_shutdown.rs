//! Shutting a pool down, gracefully or by dropping it.

mod support;

#[path = "support/procfs.rs"]
mod procfs;
#[path = "support/tasks.rs"]
mod tasks;

use std::time::Duration;

use procfs::*;
use procpool::Error;
use support::*;
use tasks::*;

procpool::init_before_main!();

#[tokio::test]
async fn shutdown_finishes_queued_and_running_jobs_then_stops_the_workers() {
    let pool = pool(2).await;
    let pids = pool.worker_pids();
    let handles: Vec<_> = (0..10).map(|_| pool.submit(Sleep(50))).collect();
    bounded("shutdown", pool.shutdown()).await;
    for h in handles {
        assert!(
            bounded("a job", h).await.is_ok(),
            "a queued job was dropped"
        );
    }
    assert_eq!(pool.stats().completed, 10);
    for pid in pids {
        assert!(!process_alive(pid), "worker {pid} outlived shutdown");
    }
    assert!(pool.worker_pids().is_empty());
}

#[tokio::test]
async fn submitting_after_shutdown_fails_at_once() {
    let pool = pool(1).await;
    let clone = pool.clone();
    bounded("shutdown", pool.shutdown()).await;
    assert!(clone.is_shutdown(), "shutdown must apply to every clone");
    let h = clone.submit(Square(2));
    assert!(h.is_finished());
    assert_eq!(h.await.unwrap_err(), Error::Shutdown);
    // Shutting down twice is harmless.
    bounded("a second shutdown", clone.shutdown()).await;
}

#[tokio::test]
async fn dropping_the_last_pool_handle_kills_the_workers_and_fails_pending_jobs() {
    let pool = pool(2).await;
    let pids = pool.worker_pids();
    let running = pool.submit(Sleep(60_000));
    let queued: Vec<_> = (0..5).map(|_| pool.submit(Sleep(60_000))).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(pool);
    assert_eq!(
        bounded("a running job", running).await.unwrap_err(),
        Error::Shutdown
    );
    for h in queued {
        assert_eq!(
            bounded("a queued job", h).await.unwrap_err(),
            Error::Shutdown
        );
    }
    eventually("the workers to exit", || {
        pids.iter().all(|&p| !process_alive(p))
    })
    .await;
}

#[tokio::test]
async fn handles_do_not_keep_the_pool_alive() {
    let pool = pool(1).await;
    let pids = pool.worker_pids();
    let h = pool.submit(Sleep(60_000));
    drop(pool);
    eventually("the workers to exit", || {
        pids.iter().all(|&p| !process_alive(p))
    })
    .await;
    assert!(bounded("the job", h).await.unwrap_err().is_shutdown());
}
