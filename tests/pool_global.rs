//! The default global pool: built once on first use, shared by tests on
//! different runtimes and by synchronous code; `build_global` after that
//! is refused. (`pool_global_config.rs` checks that `build_global`'s
//! settings take effect, in a binary of its own.)

mod support;

#[path = "support/tasks.rs"]
mod tasks;

use std::sync::OnceLock;

use procpool::{Error, ProcessPoolExecutor};
use support::*;
use tasks::*;

procpool::init_before_main!();

/// The global pool's worker pids as the first test to look saw them.
static FIRST_PIDS: OnceLock<Vec<u32>> = OnceLock::new();

/// Checks that `pool` is the one global pool with the same workers every
/// test sees, and runs a job on it from synchronous code.
fn check_shared(pool: &'static ProcessPoolExecutor) {
    assert!(std::ptr::eq(pool, ProcessPoolExecutor::global()));
    let pids = pool.worker_pids();
    assert_eq!(pids.len(), pool.workers(), "every worker is up: {pids:?}");
    let first = FIRST_PIDS.get_or_init(|| pids.clone());
    assert_eq!(&pids, first, "the same workers in every test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_thread_runtime_uses_the_global_pool() {
    let pool = ProcessPoolExecutor::global();
    check_shared(pool);
    assert_eq!(bounded("a job", pool.submit(Square(6))).await.unwrap(), 36);
}

#[tokio::test]
async fn a_current_thread_runtime_uses_the_global_pool() {
    let pool = ProcessPoolExecutor::global();
    check_shared(pool);
    assert_eq!(bounded("a job", pool.submit(Square(7))).await.unwrap(), 49);
}

#[tokio::test]
async fn another_current_thread_runtime_uses_the_global_pool() {
    let pool = ProcessPoolExecutor::try_global().expect("the global pool");
    check_shared(pool);
    let pid = bounded("a job", pool.submit(Pid)).await.unwrap();
    assert!(
        pool.worker_pids().contains(&pid),
        "{pid} is a global worker"
    );
}

#[test]
fn synchronous_code_uses_the_global_pool() {
    let pool = ProcessPoolExecutor::global();
    check_shared(pool);
    assert_eq!(pool.submit(Square(8)).blocking_wait().unwrap(), 64);
}

#[test]
fn build_global_after_first_use_is_refused() {
    let pool = ProcessPoolExecutor::global();
    let err = ProcessPoolExecutor::builder()
        .workers(1)
        .build_global()
        .expect_err("the global pool already exists");
    assert!(
        matches!(&err, Error::Config { message } if message.contains("already exists")),
        "{err:?}"
    );
    // The existing pool is untouched.
    assert!(!pool.is_shutdown());
    check_shared(pool);
}
