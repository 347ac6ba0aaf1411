//! Per-worker state built by the initializer, and progress reports.

mod support;

#[path = "support/progress.rs"]
mod progress;
#[path = "support/tasks.rs"]
mod tasks;
#[path = "support/worker.rs"]
mod worker;

use std::collections::HashMap;

use procpool::ProcessPoolExecutor;
use progress::*;
use support::*;
use tasks::*;
use worker::*;

procpool::init_before_main!();

#[tokio::test]
async fn initializer_state_is_reused_by_later_tasks_on_the_same_worker() {
    let pool = ProcessPoolExecutor::builder()
        .workers(2)
        .max_tasks_per_worker(4)
        .initializer(LoadModel { weight: 77 })
        .build()
        .await
        .unwrap();
    let mut uses_by_pid: HashMap<u32, Vec<u64>> = HashMap::new();
    for _ in 0..16 {
        let (pid, weight, uses) = bounded("a job", pool.submit(UseModel)).await.unwrap();
        assert_eq!(weight, 77);
        uses_by_pid.entry(pid).or_default().push(uses);
    }
    // Each worker counted its own uses from 0: the state lived as long as
    // the worker, and recycled workers started fresh.
    assert!(uses_by_pid.len() >= 4, "{uses_by_pid:?}");
    for uses in uses_by_pid.values() {
        assert_eq!(
            *uses,
            (0..uses.len() as u64).collect::<Vec<_>>(),
            "{uses_by_pid:?}"
        );
    }
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn progress_reports_reach_the_handle() {
    let pool = pool(1).await;
    let handle = pool.submit(Steps {
        steps: 20,
        step_ms: 25,
    });
    let mut progress = handle.progress();
    let watcher = tokio::spawn(async move {
        let mut seen = Vec::new();
        while progress.changed().await.is_ok() {
            if let Some(p) = progress.borrow_and_update().clone() {
                seen.push(p);
                if seen.last().is_some_and(|p| p.total == Some(p.done)) {
                    break;
                }
            }
        }
        seen
    });
    assert_eq!(bounded("the job", handle).await.unwrap(), 20);
    let seen = bounded("the watcher", watcher).await.unwrap();
    assert!(seen.len() >= 2, "only {} reports seen", seen.len());
    assert!(seen.windows(2).all(|w| w[0].done <= w[1].done), "{seen:?}");
    let last = seen.last().unwrap();
    assert_eq!((last.done, last.total), (20, Some(20)));
    assert_eq!(last.message.as_deref(), Some("step 20"));
    assert_eq!(last.fraction(), Some(1.0));
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn a_job_that_reports_nothing_has_no_progress() {
    let pool = pool(1).await;
    let handle = pool.submit(Square(3));
    let progress = handle.progress();
    assert_eq!(bounded("the job", handle).await.unwrap(), 9);
    assert_eq!(*progress.borrow(), None);
    bounded("shutdown", pool.shutdown()).await;
}
