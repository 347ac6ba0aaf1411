//! Many jobs: as_completed, JobSet and map.

mod support;

#[path = "support/tasks.rs"]
mod tasks;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use procpool::{Error, JobSet, as_completed};
use support::*;
use tasks::*;

procpool::init_before_main!();

#[tokio::test]
async fn as_completed_yields_in_completion_order_with_ids() {
    let pool = pool(2).await;
    let slow = pool.submit(Sleep(2000));
    let fast = pool.submit(Sleep(1));
    let (slow_id, fast_id) = (slow.id(), fast.id());
    let order: Vec<_> = bounded(
        "as_completed",
        as_completed(vec![slow, fast]).collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(order.len(), 2);
    assert_eq!(order[0].0, fast_id);
    assert_eq!(order[1].0, slow_id);
    assert!(order.iter().all(|(_, r)| r.is_ok()));
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn a_job_set_joins_everything_and_abort_all_cancels() {
    let pool = pool(2).await;
    let mut set = JobSet::new();
    let ids: Vec<_> = (0..20u64).map(|i| set.spawn(&pool, Square(i))).collect();
    assert_eq!(set.len(), 20);
    let mut seen = Vec::new();
    while let Some((id, r)) = bounded("join_next", set.join_next()).await {
        let i = ids.iter().position(|&x| x == id).unwrap() as u64;
        assert_eq!(r.unwrap(), i * i);
        seen.push(id);
    }
    assert_eq!(seen.len(), 20);
    assert!(set.is_empty());

    let mut set = JobSet::new();
    for _ in 0..6 {
        set.spawn(&pool, Sleep(60_000));
    }
    set.abort_all();
    let results = bounded("aborted jobs", set.join_all()).await;
    assert_eq!(results.len(), 6);
    assert!(
        results
            .iter()
            .all(|(_, r)| matches!(r, Err(Error::Cancelled)))
    );
    assert_eq!(bounded("a job", pool.submit(Square(2))).await.unwrap(), 4);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn dropping_a_job_set_cancels_its_jobs() {
    let pool = pool(1).await;
    let mut set = JobSet::new();
    for _ in 0..5 {
        set.spawn(&pool, Sleep(60_000));
    }
    drop(set);
    assert_eq!(
        bounded("a job after the drop", pool.submit(Square(5)))
            .await
            .unwrap(),
        25
    );
    eventually("cancels counted", || pool.stats().cancelled == 5).await;
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn map_yields_results_in_input_order() {
    let pool = pool(2).await;
    let out: Vec<u64> = bounded("map", pool.map((0..500u64).map(Square)).collect::<Vec<_>>())
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(out, (0..500u64).map(|i| i * i).collect::<Vec<_>>());
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn map_unordered_yields_every_result() {
    let pool = pool(2).await;
    let mut out: Vec<u64> = bounded(
        "map_unordered",
        pool.map_unordered((0..500u64).map(Square))
            .collect::<Vec<_>>(),
    )
    .await
    .into_iter()
    .map(Result::unwrap)
    .collect();
    out.sort_unstable();
    assert_eq!(out, (0..500u64).map(|i| i * i).collect::<Vec<_>>());
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn map_with_chunks_keeps_order_and_fails_only_the_bad_item() {
    let pool = pool(2).await;
    let tasks = (0..1000u64).map(|n| SquareUnless { n, bad: 321 });
    let out: Vec<_> = bounded(
        "chunked map",
        pool.map(tasks).chunk_size(64).collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(out.len(), 1000);
    for (n, r) in out.into_iter().enumerate() {
        let n = n as u64;
        if n == 321 {
            let e = r.unwrap_err();
            assert!(
                matches!(&e, Error::Panicked { message, .. } if message.contains("refusing 321")),
                "{e:?}"
            );
        } else {
            assert_eq!(r.unwrap(), n * n);
        }
    }
    // 1000 items in chunks of 64: 16 jobs, not 1000.
    assert_eq!(pool.stats().completed, 16);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn map_pulls_its_input_lazily() {
    let pool = pool(2).await;
    let pulled = Arc::new(AtomicUsize::new(0));
    let counter = pulled.clone();
    let input = (0..1_000_000u64).map(move |i| {
        counter.fetch_add(1, Ordering::SeqCst);
        Square(i)
    });
    let mut stream = pool.map(input).in_flight(4);
    for i in 0..10u64 {
        assert_eq!(
            bounded("an item", stream.next()).await.unwrap().unwrap(),
            i * i
        );
    }
    let n = pulled.load(Ordering::SeqCst);
    assert!(n <= 10 + 4 + 1, "map pulled {n} items for 10 results");
    drop(stream);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn map_stream_takes_a_stream_of_tasks() {
    let pool = pool(2).await;
    let tasks = futures::stream::iter(0..100u64).then(|i| async move {
        tokio::task::yield_now().await;
        Square(i)
    });
    let out: Vec<u64> = bounded(
        "map_stream",
        pool.map_stream(tasks).chunk_size(8).collect::<Vec<_>>(),
    )
    .await
    .into_iter()
    .map(Result::unwrap)
    .collect();
    assert_eq!(out, (0..100u64).map(|i| i * i).collect::<Vec<_>>());
    bounded("shutdown", pool.shutdown()).await;
}
