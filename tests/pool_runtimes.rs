//! A pool does not belong to the runtime that built it: one global pool can
//! serve many `#[tokio::test]` functions (each with its own runtime) and
//! synchronous code.

mod support;

#[path = "support/tasks.rs"]
mod tasks;

use procpool::ProcessPoolExecutor;
use support::*;
use tasks::*;
use tokio::sync::OnceCell;

procpool::init_before_main!();

static POOL: OnceCell<ProcessPoolExecutor> = OnceCell::const_new();

async fn global() -> &'static ProcessPoolExecutor {
    POOL.get_or_init(|| pool(2)).await
}

async fn use_global_pool(base: u64) {
    let pool = global().await;
    let handles: Vec<_> = (base..base + 50).map(|i| pool.submit(Square(i))).collect();
    for (i, h) in (base..base + 50).zip(handles) {
        assert_eq!(bounded("a job", h).await.unwrap(), i * i);
    }
}

#[tokio::test]
async fn global_pool_from_runtime_one() {
    use_global_pool(0).await;
}

#[tokio::test]
async fn global_pool_from_runtime_two() {
    use_global_pool(1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_pool_from_a_multi_thread_runtime() {
    use_global_pool(2000).await;
}

#[tokio::test]
async fn a_pool_outlives_the_runtime_that_built_it() {
    let pool = std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(pool(1))
    })
    .join()
    .unwrap();
    // That runtime is gone; the pool still serves.
    assert_eq!(bounded("a job", pool.submit(Square(9))).await.unwrap(), 81);
    bounded("shutdown", pool.shutdown()).await;
}

#[test]
fn synchronous_code_can_build_and_wait_without_a_runtime() {
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .build_blocking()
        .unwrap();
    let h = pool.submit(Square(11));
    assert_eq!(h.blocking_wait().unwrap(), 121);
}
