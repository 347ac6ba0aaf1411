//! The handshake: a worker must be the same build, speaking the same
//! protocol, and must not print to stdout before `init()`.

mod support;

#[path = "support/worker.rs"]
mod worker;

use std::path::PathBuf;

use procpool::{Error, ProcessPoolExecutor};
use support::*;
use worker::*;

procpool::init_before_main!();

/// `examples/quickstart`, which `cargo test` builds alongside the tests: a
/// program that calls `procpool::init()` but registers other tasks.
fn other_build() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let p = dir.join("examples").join("quickstart");
    assert!(
        p.exists(),
        "{} is missing; run the whole `cargo test` (which builds the examples) or \
         `cargo build --examples` first",
        p.display()
    );
    p
}

#[tokio::test]
async fn a_worker_from_another_build_is_refused() {
    let e = ProcessPoolExecutor::builder()
        .workers(1)
        .program(other_build())
        .build()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Protocol { .. }), "{e:?}");
    assert!(e.to_string().contains("different build"), "{e}");
}

#[tokio::test]
async fn a_program_that_cannot_start_fails_build_without_retrying() {
    let e = ProcessPoolExecutor::builder()
        .workers(2)
        .program("/nonexistent/procpool-worker")
        .build()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Spawn { .. }), "{e:?}");
    assert!(
        e.to_string().contains("/nonexistent/procpool-worker"),
        "{e}"
    );
}

#[tokio::test]
async fn a_program_that_prints_before_the_handshake_is_refused() {
    // `sh -c 'echo ...'` plays a program that prints before init(); the
    // marker variable is set but nobody honours it.
    let e = ProcessPoolExecutor::builder()
        .workers(1)
        .program("/bin/sh")
        .args(["-c", "echo hello from main; sleep 1"])
        .build()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Protocol { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("hello from main") && msg.contains("procpool::init()"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_program_that_exits_at_once_names_init_in_the_error() {
    let e = ProcessPoolExecutor::builder()
        .workers(1)
        .program("/bin/sh")
        .args(["-c", "echo oops >&2; exit 7"])
        .build()
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Spawn { .. }), "{e:?}");
    assert!(
        msg.contains("exit code 7") && msg.contains("procpool::init()"),
        "{msg}"
    );
    assert!(msg.contains("oops"), "the stderr tail is missing: {msg}");
}

#[tokio::test]
async fn worker_arguments_environment_and_directory_are_passed() {
    let dir = std::env::temp_dir();
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .env("PROCPOOL_TEST_VALUE", "forty-two")
        .current_dir(&dir)
        .build()
        .await
        .unwrap();
    let id = bounded("a job", pool.submit(WhoAmI)).await.unwrap();
    assert_ne!(id.pid, std::process::id());
    assert_eq!(
        bounded("a job", pool.submit(EnvVar("PROCPOOL_TEST_VALUE".into())))
            .await
            .unwrap(),
        Some("forty-two".to_string())
    );
    assert_eq!(
        bounded("a job", pool.submit(Cwd)).await.unwrap(),
        dir.canonicalize().unwrap().display().to_string()
    );
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn workers_can_run_at_a_lower_priority() {
    let base = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .worker_nice(5)
        .build()
        .await
        .unwrap();
    let nice = bounded("a job", pool.submit(Niceness)).await.unwrap();
    assert_eq!(nice, (base + 5).min(19));
    bounded("shutdown", pool.shutdown()).await;
}
