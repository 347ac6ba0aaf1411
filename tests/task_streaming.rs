//! Streaming tasks: items as a `Stream`, flow control, cancellation.

mod support;

#[path = "support/progress.rs"]
mod progress;
#[path = "support/tasks.rs"]
mod tasks;

use std::time::Duration;

use futures::StreamExt;
use progress::*;
use support::*;
use tasks::*;

procpool::init_before_main!();

#[tokio::test]
async fn items_arrive_in_order_then_the_output() {
    let pool = pool(1).await;
    let (items, handle) = pool.submit_stream(Numbers {
        n: 500,
        pad: 0,
        stop_file: None,
    });
    let got: Vec<u64> = bounded("the items", items.map(|r| r.unwrap().0).collect::<Vec<_>>()).await;
    assert_eq!(got, (0..500).collect::<Vec<_>>());
    assert_eq!(
        bounded("the output", handle).await.unwrap(),
        (0..500).sum::<u64>()
    );
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn a_slow_consumer_holds_the_producer_back() {
    let pool = pool(1).await;
    let (mut items, handle) = pool.submit_stream(Numbers {
        n: 2_000,
        pad: 16 * 1024,
        stop_file: None,
    });
    let progress = handle.progress();
    for expect in 0..5u64 {
        assert_eq!(
            bounded("an item", items.next()).await.unwrap().unwrap().0,
            expect
        );
    }
    // Stop consuming: the producer must stall at the window, not run on
    // through 2,000 items of 16 KiB.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let emitted = progress.borrow().as_ref().map_or(0, |p| p.done);
    assert!(
        emitted <= 5 + 16 + 1,
        "the producer ran ahead to {emitted} items"
    );
    // Resume: everything arrives.
    let rest = bounded("the rest", items.count()).await;
    assert_eq!(rest, 2_000 - 5);
    assert!(bounded("the output", handle).await.is_ok());
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn dropping_the_item_stream_stops_the_producer() {
    let pool = pool(1).await;
    let pid = pool.worker_pids()[0];
    let stop_file = temp_path("stream-stop");
    let (mut items, handle) = pool.submit_stream(Numbers {
        n: 1_000_000,
        pad: 0,
        stop_file: Some(stop_file.clone()),
    });
    for _ in 0..3 {
        bounded("an item", items.next()).await.unwrap().unwrap();
    }
    drop(items);
    assert!(
        bounded("the handle", handle)
            .await
            .unwrap_err()
            .is_cancelled()
    );
    eventually("the producer to stop", || {
        std::path::Path::new(&stop_file).exists()
    })
    .await;
    let text = std::fs::read_to_string(&stop_file).unwrap();
    let _ = std::fs::remove_file(&stop_file);
    let at: u64 = text.trim_start_matches("stopped ").parse().unwrap();
    assert!(at < 100, "the producer went on to item {at}");
    // It stopped by itself: the worker was not killed.
    assert_eq!(bounded("a job", pool.submit(Pid)).await.unwrap(), pid);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn streams_running_side_by_side_on_one_worker_keep_their_items_apart() {
    let pool = procpool::ProcessPoolExecutor::builder()
        .workers(1)
        .jobs_per_worker(2)
        .build()
        .await
        .unwrap();
    let (a_items, a) = pool.submit_stream(Numbers {
        n: 300,
        pad: 0,
        stop_file: None,
    });
    let (b_items, b) = pool.submit_stream(Numbers {
        n: 200,
        pad: 0,
        stop_file: None,
    });
    // Consume them together, so both producers wait on their own credit.
    let (got_a, got_b) = bounded(
        "both streams",
        futures::future::join(
            a_items.map(|r| r.unwrap().0).collect::<Vec<u64>>(),
            b_items.map(|r| r.unwrap().0).collect::<Vec<u64>>(),
        ),
    )
    .await;
    assert_eq!(got_a, (0..300).collect::<Vec<_>>());
    assert_eq!(got_b, (0..200).collect::<Vec<_>>());
    assert_eq!(bounded("a", a).await.unwrap(), (0..300).sum::<u64>());
    assert_eq!(bounded("b", b).await.unwrap(), (0..200).sum::<u64>());
    bounded("shutdown", pool.shutdown()).await;
}
