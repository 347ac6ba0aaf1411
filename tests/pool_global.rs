//! The default global pool: built once on first use, shared by tests on
//! different runtimes and by synchronous code; `build_global` after that
//! is refused; and its workers exit when the process does, although the
//! global pool is never dropped. (`pool_global_config.rs` checks that
//! `build_global`'s settings take effect, in a binary of its own.)

mod support;

#[path = "support/host.rs"]
mod host;
#[path = "support/procfs.rs"]
mod procfs;
#[path = "support/tasks.rs"]
mod tasks;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use host::*;
use procfs::*;
use procpool::{Error, ProcessPoolExecutor};
use support::*;
use tasks::*;

const ROLE: &str = "PROCPOOL_TEST_GLOBAL_HOST";

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

/// Not a test on its own: the host process for the test below. It builds
/// the global pool on first use inside a runtime, starts a long job, and
/// exits the process mid-job without dropping anything.
#[tokio::test]
#[ignore = "helper: runs only as the host process of pool_global tests"]
async fn global_host_helper() {
    if std::env::var_os(ROLE).is_none() {
        return;
    }
    let pool = ProcessPoolExecutor::global();
    let job = pool.submit(Sleep(120_000));
    eventually("the job running", || pool.stats().running == 1).await;
    let pids: Vec<String> = pool.worker_pids().iter().map(u32::to_string).collect();
    println!("WORKERS {}", pids.join(" "));
    std::mem::forget(job);
    std::process::exit(0);
}

#[test]
fn the_global_pools_workers_exit_with_the_process() {
    let (mut host, rx) = start_host_helper("global_host_helper", &[(ROLE, "1")], "WORKERS ");
    let pids: Vec<u32> = match rx.recv_timeout(PATIENCE) {
        Ok(line) => line["WORKERS ".len()..]
            .split(' ')
            .map(|p| p.parse().unwrap())
            .collect(),
        Err(_) => {
            let _ = host.kill();
            panic!("the host helper did not report its workers");
        }
    };
    assert!(!pids.is_empty());
    let status = host.wait().unwrap();
    assert!(status.success(), "the host helper ended with {status}");
    let exited = Instant::now();
    while pids.iter().any(|&p| process_alive(p)) {
        assert!(
            exited.elapsed() < Duration::from_secs(20),
            "global pool workers {pids:?} outlived their process by 20 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
