//! A bounded queue: wait for room, or fail fast when full.

mod support;

#[path = "support/bad_tasks.rs"]
mod bad_tasks;
#[path = "support/tasks.rs"]
mod tasks;

use std::time::Duration;

use bad_tasks::*;
use procpool::{Error, ProcessPoolExecutor};
use support::*;
use tasks::*;

procpool::init_before_main!();

async fn full_pool() -> (ProcessPoolExecutor, Vec<procpool::JobHandle<u32>>) {
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .max_queued(2)
        .build()
        .await
        .unwrap();
    let running = pool.submit(Sleep(60_000));
    eventually("the first job to run", || pool.stats().running == 1).await;
    let queued = vec![running, pool.submit(Sleep(10)), pool.submit(Sleep(10))];
    eventually("two jobs queued", || pool.stats().queued == 2).await;
    (pool, queued)
}

#[tokio::test]
async fn a_full_queue_rejects_at_once() {
    let (pool, jobs) = full_pool().await;
    let h = pool.submit(Square(2));
    assert!(h.is_finished());
    assert_eq!(h.await.unwrap_err(), Error::Overloaded { capacity: 2 });
    match pool.try_submit(Square(2)) {
        Err(Error::Overloaded { capacity: 2 }) => {}
        other => panic!("expected Overloaded, got {other:?}"),
    }
    drop(jobs);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn submit_wait_waits_for_room() {
    let (pool, mut jobs) = full_pool().await;
    let waiting = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.submit_wait(Square(3)).await.await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiting.is_finished(),
        "submit_wait should wait while the queue is full"
    );
    // Free the worker: the queued jobs run, room appears.
    jobs.remove(0).cancel();
    let r = bounded("the waiting submit", waiting).await.unwrap();
    assert_eq!(r.unwrap(), 9);
    for j in jobs {
        assert!(bounded("a queued job", j).await.is_ok());
    }
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn cancelled_and_dispatched_jobs_give_their_place_back() {
    let (pool, mut jobs) = full_pool().await;
    jobs.pop().unwrap().cancel();
    let h = pool
        .try_submit(Square(4))
        .expect("a cancelled job frees its place");
    drop(jobs);
    assert_eq!(bounded("a job", h).await.unwrap(), 16);
    // Once the queue drains, it accepts a full load again.
    let hs: Vec<_> = (0..2)
        .map(|i| pool.try_submit(Square(i)).unwrap())
        .collect();
    for h in hs {
        bounded("a job", h).await.unwrap();
    }
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn try_submit_reports_other_immediate_errors_too() {
    let pool = pool(1).await;
    assert!(matches!(
        pool.try_submit(Unregistered),
        Err(Error::NotRegistered { .. })
    ));
    let h = pool.try_submit(Square(5)).unwrap();
    assert_eq!(bounded("a job", h).await.unwrap(), 25);
    bounded("shutdown", pool.shutdown()).await;
    assert_eq!(pool.try_submit(Square(5)).unwrap_err(), Error::Shutdown);
}
