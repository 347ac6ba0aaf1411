//! `Builder::build_global` configures the global pool, in a binary of its
//! own (so that nothing built the global pool before): its settings take
//! effect, a second `build_global` is refused, and `shutdown()` on the
//! global pool is for good.

mod support;

#[path = "support/tasks.rs"]
mod tasks;

use procpool::{Error, ProcessPoolExecutor};
use support::*;
use tasks::*;

procpool::init_before_main!();

// One test: the steps depend on each other's order.
#[tokio::test]
async fn build_global_configures_the_global_pool_and_shutdown_is_for_good() {
    let built = ProcessPoolExecutor::builder()
        .workers(3)
        .build_global()
        .expect("the global pool should start");
    let pool = ProcessPoolExecutor::global();
    assert!(std::ptr::eq(built, pool));
    assert_eq!(pool.workers(), 3);
    assert_eq!(pool.worker_pids().len(), 3);
    assert_eq!(bounded("a job", pool.submit(Square(3))).await.unwrap(), 9);

    let again = ProcessPoolExecutor::builder().workers(1).build_global();
    assert!(
        matches!(&again, Err(Error::Config { message }) if message.contains("already exists")),
        "{again:?}"
    );
    assert_eq!(ProcessPoolExecutor::global().workers(), 3);

    bounded("shutdown", pool.shutdown()).await;
    let after = ProcessPoolExecutor::global();
    assert!(std::ptr::eq(after, pool), "no second global pool");
    assert!(after.is_shutdown());
    let r = bounded("a job after shutdown", after.submit(Square(3))).await;
    assert!(matches!(r, Err(Error::Shutdown)), "{r:?}");
}
