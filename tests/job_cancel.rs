//! Cancelling: every way of giving up on a job stops the work.

mod support;

#[path = "support/effects.rs"]
mod effects;
#[path = "support/procfs.rs"]
mod procfs;
#[path = "support/tasks.rs"]
mod tasks;

use std::time::{Duration, Instant};

use effects::*;
use procfs::*;
use procpool::{Error, ProcessPoolExecutor};
use support::*;
use tasks::*;

procpool::init_before_main!();

#[tokio::test]
async fn a_queued_job_that_is_cancelled_never_runs() {
    let pool = pool(1).await;
    let blocker = pool.submit(Sleep(300));
    let path = temp_path("never");
    let queued = pool.submit(Touch(path.clone()));
    assert!(queued.cancel(), "a queued job can be cancelled");
    assert_eq!(
        bounded("cancelled", queued).await.unwrap_err(),
        Error::Cancelled
    );
    bounded("blocker", blocker).await.unwrap();
    // Give a wrongly dispatched job time to write its file.
    bounded("a later job", pool.submit(Sleep(300)))
        .await
        .unwrap();
    assert!(
        !std::path::Path::new(&path).exists(),
        "the cancelled job ran"
    );
    assert_eq!(pool.stats().cancelled, 1);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn cancel_after_completion_keeps_the_result() {
    let pool = pool(1).await;
    let mut h = pool.submit(Square(7));
    while !h.is_finished() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!h.cancel(), "cancel must not take effect on a finished job");
    assert_eq!(bounded("the result", &mut h).await.unwrap(), 49);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn a_cooperative_task_stops_by_itself_and_keeps_its_worker() {
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .cancel_grace(Duration::from_secs(30))
        .build()
        .await
        .unwrap();
    let pid = pool.worker_pids()[0];
    let h = pool.submit(Cooperative(60_000));
    eventually("the job to start", || pool.stats().running == 1).await;
    assert!(h.cancel());
    assert_eq!(bounded("cancelled", h).await.unwrap_err(), Error::Cancelled);
    // The next job runs on the same worker: it was not killed.
    assert_eq!(bounded("next job", pool.submit(Pid)).await.unwrap(), pid);
    assert_eq!(pool.stats().respawns, 0);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn a_task_that_ignores_cancel_is_killed_after_the_grace_period() {
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .cancel_grace(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    let pid = pool.worker_pids()[0];
    let h = pool.submit(Sleep(60_000));
    eventually("the job to start", || pool.stats().running == 1).await;
    drop(h);
    let next = bounded("next job", pool.submit(Pid)).await.unwrap();
    assert_ne!(
        next, pid,
        "the stubborn job's worker should have been replaced"
    );
    // SIGKILL takes effect asynchronously; on a loaded machine the process
    // may take a moment to be gone.
    eventually("the stubborn job's worker to die", || !process_alive(pid)).await;
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn tokio_timeout_over_a_handle_frees_the_worker_promptly() {
    let pool = pool(1).await;
    let started = Instant::now();
    let r = tokio::time::timeout(Duration::from_millis(200), pool.submit(Sleep(60_000))).await;
    assert!(r.is_err(), "the timeout should fire");
    assert_eq!(
        bounded("next job", pool.submit(Square(3))).await.unwrap(),
        9
    );
    // Generous: the minute-long job must not have been waited for.
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "{:?}",
        started.elapsed()
    );
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn select_over_a_handle_cancels_the_loser() {
    let pool = pool(1).await;
    let pid = pool.worker_pids()[0];
    let slow = pool.submit(Sleep(60_000));
    tokio::select! {
        _ = slow => panic!("the slow job cannot win"),
        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
    }
    let next = bounded("next job", pool.submit(Pid)).await.unwrap();
    assert_ne!(next, pid);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn killing_a_worker_kills_the_processes_its_job_started() {
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .cancel_grace(Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    let path = temp_path("grandchild");
    let h = pool.submit(SpawnGrandchild(path.clone()));
    eventually("the grandchild to start", || {
        std::path::Path::new(&path).exists()
    })
    .await;
    let grandchild: u32 = loop {
        if let Ok(pid) = std::fs::read_to_string(&path).unwrap().trim().parse() {
            break pid;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(process_alive(grandchild));
    assert!(h.cancel());
    eventually("the grandchild to die with the worker", || {
        !process_alive(grandchild)
    })
    .await;
    let _ = std::fs::remove_file(&path);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn cancelling_one_job_does_not_disturb_jobs_on_other_workers() {
    let pool = pool(2).await;
    let keep = pool.submit(Sleep(500));
    let kill = pool.submit(Sleep(60_000));
    eventually("both running", || pool.stats().running == 2).await;
    drop(kill);
    assert!(bounded("the other job", keep).await.is_ok());
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn a_detached_job_runs_to_completion() {
    let pool = pool(1).await;
    let path = temp_path("detached");
    pool.submit(Touch(path.clone())).detach();
    eventually("the detached job to run", || {
        std::path::Path::new(&path).exists()
    })
    .await;
    let _ = std::fs::remove_file(&path);
    bounded("shutdown", pool.shutdown()).await;
}

/// Cancels race with completion and with the dispatch of the next job:
/// whatever the timing, `cancel()`'s answer matches what the handle yields,
/// and no other job is ever hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_racing_completion_never_hits_the_wrong_job() {
    let pool = pool(1).await;
    let mut cancelled = 0;
    for i in 0..300u64 {
        let a = pool.submit(Square(i));
        let b = pool.submit(Square(i + 1));
        if i % 3 != 0 {
            tokio::task::yield_now().await;
        }
        if i % 5 == 0 {
            std::thread::sleep(Duration::from_micros(i * 3));
        }
        let took = a.cancel();
        match bounded("job a", a).await {
            Ok(v) => {
                assert!(!took, "cancel() said yes but the result arrived");
                assert_eq!(v, i * i);
            }
            Err(Error::Cancelled) => {
                assert!(took, "cancel() said no but the job was cancelled");
                cancelled += 1;
            }
            Err(e) => panic!("job a failed: {e}"),
        }
        assert_eq!(
            bounded("job b", b)
                .await
                .expect("the next job must not be hit"),
            (i + 1) * (i + 1)
        );
    }
    eprintln!("{cancelled} of 300 cancels took effect");
    bounded("shutdown", pool.shutdown()).await;
}
