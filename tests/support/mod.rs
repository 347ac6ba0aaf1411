//! Pool helpers shared by the integration tests: a pool, and bounds on
//! how long a test waits.
//!
//! Each test binary includes this module (`mod support;`) and, beside it,
//! only the other files of this directory it uses, each as its own module
//! at the crate root:
//!
//! ```text
//! #[path = "support/tasks.rs"]
//! mod tasks;
//! ```
//!
//! A file that registers tasks (`procpool::register!`) registers them in
//! every binary that includes it. The other files are not submodules of
//! this one; a file that uses another says so at its top.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use procpool::ProcessPoolExecutor;

/// A generous bound for anything that should take milliseconds: the
/// machines running the tests are shared and slow.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub async fn pool(workers: usize) -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .workers(workers)
        .build()
        .await
        .expect("the pool should start")
}

/// Awaits `fut`, failing the test (instead of hanging) after [`PATIENCE`].
pub async fn bounded<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(PATIENCE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {PATIENCE:?}"),
    }
}

/// Polls `cond` until it holds, or fails the test after [`PATIENCE`].
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < PATIENCE,
            "{what} did not happen within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A unique temporary path for a test.
pub fn temp_path(name: &str) -> String {
    let p = std::env::temp_dir().join(format!(
        "procpool-test-{}-{}-{name}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    p.display().to_string()
}
