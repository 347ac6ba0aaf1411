//! The pool as a `tower::Service`, composed with tower's layers.

mod support;

#[path = "support/tasks.rs"]
mod tasks;

use std::time::Duration;

use procpool::Error;
use support::*;
use tasks::*;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

procpool::init_before_main!();

#[tokio::test]
async fn the_pool_is_a_tower_service() {
    let pool = pool(2).await;
    let mut svc = pool.clone();
    let ready = ServiceExt::<Square>::ready(&mut svc).await.unwrap();
    let out = bounded("a call", ready.call(Square(9))).await;
    assert_eq!(out.unwrap(), 81);
    bounded("shutdown", pool.shutdown()).await;
    let e = ServiceExt::<Square>::ready(&mut svc)
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(e, Error::Shutdown);
}

#[tokio::test]
async fn tower_layers_compose_with_the_pool() {
    let pool = pool(2).await;
    let mut svc = ServiceBuilder::new()
        .concurrency_limit(2)
        .timeout(Duration::from_millis(300))
        .service(pool.clone());
    let ready = ServiceExt::<Square>::ready(&mut svc).await.unwrap();
    let ok = bounded("a call", ready.call(Square(4))).await;
    assert_eq!(ok.unwrap(), 16);
    // The timeout layer drops the handle, which cancels the job.
    let slow = bounded(
        "a slow call",
        ServiceExt::<Sleep>::ready(&mut svc)
            .await
            .unwrap()
            .call(Sleep(60_000)),
    )
    .await;
    let e: BoxError = slow.unwrap_err();
    assert!(e.is::<tower::timeout::error::Elapsed>(), "{e}");
    eventually("the cancel to be counted", || pool.stats().cancelled == 1).await;

    // Load shedding: with one slot taken by a long job, a second call is
    // refused at once instead of queueing.
    let mut shed = ServiceBuilder::new()
        .load_shed()
        .concurrency_limit(1)
        .service(pool.clone());
    let long = ServiceExt::<Sleep>::ready(&mut shed)
        .await
        .unwrap()
        .call(Sleep(500));
    // LoadShed is always ready and fails the call when the inner service
    // is not.
    let refused = ServiceExt::<Square>::ready(&mut shed)
        .await
        .unwrap()
        .call(Square(2))
        .await
        .unwrap_err();
    assert!(
        refused.is::<tower::load_shed::error::Overloaded>(),
        "{refused}"
    );
    bounded("the long call", long).await.unwrap();
    bounded("shutdown", pool.shutdown()).await;
}
