//! Worker lifecycle: recycling, idle timeout, initializer, respawn limits,
//! shutdown_now and stats.

mod support;

#[path = "support/effects.rs"]
mod effects;
#[path = "support/procfs.rs"]
mod procfs;
#[path = "support/tasks.rs"]
mod tasks;
#[path = "support/worker.rs"]
mod worker;

use std::collections::HashSet;
use std::time::Duration;

use effects::*;
use procfs::*;
use procpool::{Error, ProcessPoolExecutor};
use support::*;
use tasks::*;
use worker::*;

procpool::init_before_main!();

#[tokio::test]
async fn workers_are_recycled_after_max_tasks() {
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .max_tasks_per_worker(3)
        .build()
        .await
        .unwrap();
    let mut pids = Vec::new();
    for _ in 0..9 {
        pids.push(bounded("a job", pool.submit(Pid)).await.unwrap());
    }
    for chunk in pids.chunks(3) {
        assert!(chunk.iter().all(|p| *p == chunk[0]), "{pids:?}");
    }
    assert_eq!(pids.iter().collect::<HashSet<_>>().len(), 3, "{pids:?}");
    assert!(pool.stats().recycled >= 2);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn a_worker_above_the_memory_bound_is_recycled() {
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .max_worker_rss(150 << 20)
        .build()
        .await
        .unwrap();
    let first = bounded("a job", pool.submit(Pid)).await.unwrap();
    assert_eq!(
        bounded("a small job", pool.submit(Pid)).await.unwrap(),
        first
    );
    bounded("a leaking job", pool.submit(Leak(200)))
        .await
        .unwrap();
    let after = bounded("a job", pool.submit(Pid)).await.unwrap();
    assert_ne!(after, first, "the bloated worker should have been replaced");
    assert_eq!(pool.stats().recycled, 1);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn idle_workers_exit_and_come_back_on_demand() {
    let pool = ProcessPoolExecutor::builder()
        .workers(2)
        .idle_timeout(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    eventually("idle workers to exit", || pool.stats().workers_alive == 0).await;
    assert_eq!(
        bounded("a job on demand", pool.submit(Square(6)))
            .await
            .unwrap(),
        36
    );
    let hs: Vec<_> = (0..4).map(|_| pool.submit(Sleep(200))).collect();
    eventually("two workers for two jobs", || {
        pool.stats().workers_alive == 2
    })
    .await;
    for h in hs {
        bounded("a job", h).await.unwrap();
    }
    eventually("idle again", || pool.stats().workers_alive == 0).await;
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn min_workers_stay_alive_when_idle() {
    let pool = ProcessPoolExecutor::builder()
        .workers(2)
        .idle_timeout(Duration::from_millis(50))
        .min_workers(1)
        .build()
        .await
        .unwrap();
    eventually("one idle worker to exit", || {
        pool.stats().workers_alive == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pool.stats().workers_alive, 1);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn the_initializer_runs_in_every_worker_before_jobs() {
    let pool = ProcessPoolExecutor::builder()
        .workers(2)
        .max_tasks_per_worker(2)
        .initializer(Init {
            value: 4242,
            fail_if_exists: None,
        })
        .build()
        .await
        .unwrap();
    for _ in 0..8 {
        assert_eq!(bounded("a job", pool.submit(ReadInit)).await.unwrap(), 4242);
    }
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn a_failing_initializer_fails_build_clearly() {
    let flag = temp_path("fail-init");
    std::fs::write(&flag, "x").unwrap();
    let e = ProcessPoolExecutor::builder()
        .workers(2)
        .initializer(Init {
            value: 1,
            fail_if_exists: Some(flag.clone()),
        })
        .build()
        .await
        .unwrap_err();
    let _ = std::fs::remove_file(&flag);
    assert!(matches!(e, Error::Initializer { .. }), "{e:?}");
    assert!(e.to_string().contains("initializer told to fail"), "{e}");
}

/// Defect 2 of the host-core issue: start-up failures broke the pool for
/// good. While workers cannot start, jobs fail fast with the start-up
/// error; once one can, the pool serves again.
#[tokio::test]
async fn workers_failing_at_start_up_fail_jobs_fast_then_the_pool_recovers() {
    let flag = temp_path("respawn-storm");
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .max_startup_failures(3)
        .max_startup_backoff(Duration::from_millis(100))
        .initializer(Init {
            value: 1,
            fail_if_exists: Some(flag.clone()),
        })
        .build()
        .await
        .unwrap();
    std::fs::write(&flag, "x").unwrap();
    kill_the_worker_of_a_running_job(&pool).await;
    let queued = pool.submit(Square(2));
    let e = bounded("a job in a pool that cannot start workers", queued)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Spawn { .. }), "{e:?}");
    assert!(
        e.to_string().contains("failed to start 3 times in a row"),
        "{e}"
    );
    assert!(e.to_string().contains("initializer told to fail"), "{e}");
    assert_eq!(pool.stats().workers_alive, 0);
    assert!(!pool.is_shutdown());
    // A job submitted while it is broken fails at once, not after a wait.
    let started = std::time::Instant::now();
    let e = bounded("a job while broken", pool.submit(Square(2)))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Spawn { .. }), "{e:?}");
    assert!(started.elapsed() < PATIENCE);
    // The dependency is back: the pool starts a worker and serves again.
    std::fs::remove_file(&flag).unwrap();
    let mut served = false;
    for _ in 0..600 {
        match pool.submit(Square(3)).await {
            Ok(n) => {
                assert_eq!(n, 9);
                served = true;
                break;
            }
            Err(Error::Spawn { .. }) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("unexpected error while recovering: {e}"),
        }
    }
    assert!(
        served,
        "the pool did not serve again after start-ups worked"
    );
    assert_eq!(pool.stats().workers_alive, 1);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn workers_killed_while_serving_keep_being_replaced() {
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .max_startup_failures(2)
        .build()
        .await
        .unwrap();
    for _ in 0..8 {
        kill_the_worker_of_a_running_job(&pool).await;
    }
    assert_eq!(bounded("a job", pool.submit(Square(3))).await.unwrap(), 9);
    assert!(pool.stats().respawns >= 8);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn shutdown_now_fails_queued_kills_running_and_waits_for_exit() {
    let pool = pool(2).await;
    let pids = pool.worker_pids();
    let running: Vec<_> = (0..2).map(|_| pool.submit(Sleep(60_000))).collect();
    let queued: Vec<_> = (0..5).map(|_| pool.submit(Sleep(60_000))).collect();
    eventually("both running", || pool.stats().running == 2).await;
    bounded("shutdown_now", pool.shutdown_now()).await;
    for p in &pids {
        assert!(!process_alive(*p), "worker {p} outlived shutdown_now");
    }
    for h in running.into_iter().chain(queued) {
        assert_eq!(bounded("a job", h).await.unwrap_err(), Error::Shutdown);
    }
}

#[tokio::test]
async fn shutdown_timeout_lets_short_jobs_finish_and_kills_the_rest() {
    let pool = pool(2).await;
    let short = pool.submit(Sleep(50));
    let long = pool.submit(Sleep(60_000));
    bounded(
        "shutdown_timeout",
        pool.shutdown_timeout(Duration::from_millis(500)),
    )
    .await;
    assert!(bounded("short", short).await.is_ok());
    assert_eq!(bounded("long", long).await.unwrap_err(), Error::Shutdown);
    assert!(pool.worker_pids().is_empty());
}

#[tokio::test]
async fn stats_add_up() {
    let pool = pool(2).await;
    let ok: Vec<_> = (0..20).map(|i| pool.submit(Square(i))).collect();
    let panics: Vec<_> = (0..3).map(|_| pool.submit(Panic("x".into()))).collect();
    let cancelled: Vec<_> = (0..4).map(|_| pool.submit(Sleep(60_000))).collect();
    for h in &cancelled {
        h.cancel();
    }
    for h in ok {
        bounded("a job", h).await.unwrap();
    }
    for h in panics {
        bounded("a job", h).await.unwrap_err();
    }
    drop(cancelled);
    eventually("the pool to settle", || {
        let s = pool.stats();
        s.queued == 0 && s.running == 0
    })
    .await;
    let s = pool.stats();
    assert_eq!(s.completed, 20, "{s:?}");
    assert_eq!(s.failed, 3, "{s:?}");
    assert_eq!(s.cancelled, 4, "{s:?}");
    assert_eq!(s.workers_alive, 2, "{s:?}");
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn max_tasks_per_worker_holds_with_many_jobs_at_once() {
    for slots in [1, 3] {
        let pool = ProcessPoolExecutor::builder()
            .workers(2)
            .jobs_per_worker(slots)
            .max_tasks_per_worker(50)
            .build()
            .await
            .unwrap();
        let handles: Vec<_> = (0..300).map(|_| pool.submit(Pid)).collect();
        let mut per_pid = std::collections::HashMap::<u32, usize>::new();
        for h in handles {
            *per_pid
                .entry(bounded("a job", h).await.unwrap())
                .or_default() += 1;
        }
        assert!(
            per_pid.values().all(|&n| n <= 50),
            "slots {slots}: {per_pid:?}"
        );
        assert!(per_pid.len() >= 6, "slots {slots}: {per_pid:?}");
        bounded("shutdown", pool.shutdown()).await;
    }
}

/// Starts a long job on a one-worker pool, SIGKILLs the worker, and checks
/// that the job failed with `WorkerDied`.
async fn kill_the_worker_of_a_running_job(pool: &ProcessPoolExecutor) {
    let job = pool.submit(Sleep(60_000));
    eventually("the job to run", || pool.stats().running == 1).await;
    let pid = pool.worker_pids()[0];
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    assert!(
        bounded("the killed job", job)
            .await
            .unwrap_err()
            .is_worker_died()
    );
}
