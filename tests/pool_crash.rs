//! Crash isolation: a panicking or dying job fails only itself.

mod support;

#[path = "support/tasks.rs"]
mod tasks;

use std::time::Duration;

use procpool::{Error, ExitStatus};
use support::*;
use tasks::*;

procpool::init_before_main!();

#[tokio::test]
async fn a_panic_fails_the_job_with_its_message_and_the_worker_keeps_serving() {
    let pool = pool(1).await;
    let pid = bounded("a job", pool.submit(Pid)).await.unwrap();
    let e = bounded(
        "a panicking job",
        pool.submit(Panic("boom: the answer is 42".into())),
    )
    .await
    .unwrap_err();
    match &e {
        Error::Panicked { message, .. } => assert_eq!(message, "boom: the answer is 42"),
        other => panic!("expected Panicked, got {other:?}"),
    }
    assert!(e.is_panic());
    assert!(e.to_string().contains("boom: the answer is 42"), "{e}");
    assert_eq!(
        bounded("a job", pool.submit(Pid)).await.unwrap(),
        pid,
        "the worker was replaced"
    );
    assert_eq!(pool.stats().respawns, 0);
    bounded("shutdown", pool.shutdown()).await;
}

async fn death_fails_only_its_job(death: Death, expect: fn(&ExitStatus) -> bool) {
    let pool = pool(2).await;
    let before = pool.worker_pids();
    // A long job on the other worker must be undisturbed.
    let long = pool.submit(Sleep(1500));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let e = bounded("a dying job", pool.submit(Die(death)))
        .await
        .unwrap_err();
    match &e {
        Error::WorkerDied {
            pid,
            status,
            stderr_tail,
        } => {
            assert!(before.contains(pid), "{pid} was not a worker");
            assert!(expect(status), "{death:?} gave {status:?}");
            assert!(
                stderr_tail.contains(&format!("about to die by {death:?}")),
                "stderr tail: {stderr_tail:?}"
            );
        }
        other => panic!("{death:?}: expected WorkerDied, got {other:?}"),
    }
    assert!(e.is_worker_died());
    let long_pid = bounded("the long job", long)
        .await
        .expect("the other job must complete");
    assert!(before.contains(&long_pid));
    // The pool replaced the dead worker and keeps its size.
    eventually("the pool to regain its size", || {
        pool.worker_pids().len() == 2
    })
    .await;
    let mut seen = std::collections::HashSet::new();
    let jobs: Vec<_> = (0..20).map(|_| pool.submit(Sleep(20))).collect();
    for j in jobs {
        seen.insert(bounded("a job", j).await.unwrap());
    }
    assert_eq!(seen.len(), 2, "both workers should serve jobs");
    assert!(pool.stats().respawns >= 1);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn an_abort_fails_only_its_job() {
    death_fails_only_its_job(Death::Abort, |s| *s == ExitStatus::Signal(libc::SIGABRT)).await;
}

#[tokio::test]
async fn a_segfault_fails_only_its_job() {
    death_fails_only_its_job(Death::Segfault, |s| *s == ExitStatus::Signal(libc::SIGSEGV)).await;
}

#[tokio::test]
async fn process_exit_fails_only_its_job() {
    death_fails_only_its_job(Death::Exit(3), |s| *s == ExitStatus::Code(3)).await;
}

#[tokio::test]
async fn a_fatal_signal_fails_only_its_job() {
    death_fails_only_its_job(Death::Signal(libc::SIGTERM), |s| {
        *s == ExitStatus::Signal(libc::SIGTERM)
    })
    .await;
}

#[tokio::test]
async fn a_worker_killed_from_outside_fails_only_its_job() {
    let pool = pool(1).await;
    let job = pool.submit(Sleep(60_000));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = pool.worker_pids()[0];
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    match bounded("the killed job", job).await {
        Err(Error::WorkerDied { pid: p, status, .. }) => {
            assert_eq!(p, pid);
            assert_eq!(status, ExitStatus::Signal(libc::SIGKILL));
        }
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    let new_pid = bounded("a job", pool.submit(Pid)).await.unwrap();
    assert_ne!(new_pid, pid);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn an_idle_worker_that_dies_is_replaced_quietly() {
    let pool = pool(1).await;
    let pid = pool.worker_pids()[0];
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    eventually("a replacement worker", || {
        let pids = pool.worker_pids();
        pids.len() == 1 && pids[0] != pid
    })
    .await;
    assert_eq!(bounded("a job", pool.submit(Square(4))).await.unwrap(), 16);
    assert_eq!(pool.stats().failed, 0);
    bounded("shutdown", pool.shutdown()).await;
}
