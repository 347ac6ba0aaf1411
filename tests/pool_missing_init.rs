//! The missing-guard case. This test binary deliberately does NOT install
//! `procpool::init_before_main!()`: its workers are this binary, which then
//! runs libtest, reaches `build()` as a worker, and must stop with an error
//! naming `procpool::init()` instead of starting a pool of its own.
//!
//! Keep this file to this one test: in the worker, libtest runs it too.

use std::time::Duration;

use procpool::{Error, ProcessPoolExecutor};

#[tokio::test]
async fn a_binary_without_the_guard_fails_build_with_an_error_naming_init() {
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        ProcessPoolExecutor::builder().workers(2).build(),
    )
    .await
    .expect("build() must fail promptly, not hang");
    let e = result.expect_err("a pool of unguarded workers must not start");
    assert!(matches!(e, Error::MissingInit { .. }), "{e:?}");
    assert!(e.to_string().contains("procpool::init()"), "{e}");
    // It names the program by its real path, not the `/proc/self/exe` the
    // pool executes.
    let exe = std::env::current_exe().unwrap().display().to_string();
    match &e {
        Error::MissingInit { program } => assert_eq!(program, &exe),
        _ => unreachable!(),
    }
    assert!(e.to_string().contains(&format!("`{exe}`")), "{e}");
    assert!(!e.to_string().contains("/proc/self/exe"), "{e}");
}
