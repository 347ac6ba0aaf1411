//! Async tasks: `async fn run` on the worker's runtime, several jobs per
//! worker, and cancels and timeouts that drop the task's future inside the
//! worker instead of killing it.

mod support;

#[path = "support/procfs.rs"]
mod procfs;
#[path = "support/tasks.rs"]
mod tasks;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use procfs::*;
use procpool::{AsyncTask, Error, JobOptions, ProcessPoolExecutor, Task};
use serde::{Deserialize, Serialize};
use support::*;
use tasks::*;

procpool::init_before_main!();

/// Sleeps on the runtime's timer (from a spawned tokio task, so the worker
/// really has a runtime), then returns its value and the worker's pid.
#[derive(Serialize, Deserialize)]
struct AsyncEcho {
    ms: u64,
    value: u64,
}
impl AsyncTask for AsyncEcho {
    type Output = (u64, u32);
    async fn run(self) -> (u64, u32) {
        let ms = self.ms;
        tokio::spawn(async move { tokio::time::sleep(Duration::from_millis(ms)).await })
            .await
            .unwrap();
        (self.value, std::process::id())
    }
}
procpool::register!(AsyncEcho);

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// Counts how many of its kind run at once in this worker: returns the
/// peak it saw and the worker's pid.
#[derive(Serialize, Deserialize)]
struct Overlap {
    ms: u64,
}
impl AsyncTask for Overlap {
    type Output = (usize, u32);
    async fn run(self) -> (usize, u32) {
        let now = IN_FLIGHT.fetch_add(1, Ordering::SeqCst) + 1;
        PEAK.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(self.ms)).await;
        let peak = PEAK.load(Ordering::SeqCst);
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        (peak, std::process::id())
    }
}
procpool::register!(Overlap);

/// Writes `<tag>.started`, then waits forever holding a guard whose drop
/// writes `<tag>.dropped` with whether `procpool::cancelled()` held then.
#[derive(Serialize, Deserialize)]
struct HoldUntilDropped {
    dir: PathBuf,
    tag: String,
}
struct WriteOnDrop(PathBuf);
impl Drop for WriteOnDrop {
    fn drop(&mut self) {
        let text = format!("cancelled={}", procpool::cancelled());
        std::fs::write(&self.0, text).unwrap();
    }
}
impl AsyncTask for HoldUntilDropped {
    type Output = ();
    async fn run(self) {
        let _guard = WriteOnDrop(self.dir.join(format!("{}.dropped", self.tag)));
        std::fs::write(self.dir.join(format!("{}.started", self.tag)), "").unwrap();
        std::future::pending::<()>().await;
    }
}
procpool::register!(HoldUntilDropped);

#[derive(Serialize, Deserialize)]
struct AsyncPanic;
impl AsyncTask for AsyncPanic {
    type Output = ();
    async fn run(self) {
        tokio::task::yield_now().await;
        panic!("async boom");
    }
}
procpool::register!(AsyncPanic);

/// Exits the worker after a short sleep.
#[derive(Serialize, Deserialize)]
struct AsyncExit;
impl AsyncTask for AsyncExit {
    type Output = ();
    async fn run(self) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        std::process::exit(3);
    }
}
procpool::register!(AsyncExit);

/// Blocks its thread without ever awaiting: only a kill stops it.
#[derive(Serialize, Deserialize)]
struct BlocksThread {
    dir: PathBuf,
}
impl AsyncTask for BlocksThread {
    type Output = ();
    async fn run(self) {
        std::fs::write(self.dir.join("blocking.started"), "").unwrap();
        std::thread::sleep(Duration::from_secs(120));
    }
}
procpool::register!(BlocksThread);

/// Per-worker state built by an async initializer.
struct Greeting(String);

#[derive(Serialize, Deserialize)]
struct AsyncInit {
    greeting: String,
}
impl AsyncTask for AsyncInit {
    type Output = ();
    async fn run(self) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        procpool::set_worker_state(Greeting(self.greeting));
    }
}
procpool::register!(AsyncInit);

#[derive(Serialize, Deserialize)]
struct Greet(String);
impl AsyncTask for Greet {
    type Output = String;
    async fn run(self) -> String {
        let g = procpool::worker_state::<Greeting>().expect("the initializer ran");
        tokio::task::yield_now().await;
        format!("{}, {}", g.0, self.0)
    }
}
procpool::register!(Greet);

/// Reports progress `i / total` for each step, on the runtime's timer.
#[derive(Serialize, Deserialize)]
struct AsyncSteps {
    total: u64,
}
impl AsyncTask for AsyncSteps {
    type Output = u64;
    async fn run(self) -> u64 {
        for i in 1..=self.total {
            tokio::time::sleep(Duration::from_millis(15)).await;
            procpool::report_progress(i, Some(self.total));
        }
        self.total
    }
}
procpool::register!(AsyncSteps);

/// A blocking task that polls `cancelled()` and writes `path` if it sees
/// the cancel; else returns false after `ms`.
#[derive(Serialize, Deserialize)]
struct CooperativeFile {
    path: PathBuf,
    ms: u64,
}
impl Task for CooperativeFile {
    type Output = bool;
    fn run(self) -> bool {
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_millis(self.ms) {
            if procpool::cancelled() {
                std::fs::write(&self.path, "cancelled").unwrap();
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }
}
procpool::register!(CooperativeFile);

/// A fresh directory for one test's marker files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("procpool-async-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn appears(path: &Path) {
    eventually(&format!("{} to appear", path.display()), || path.exists()).await;
}

/// Checks that worker `pid` was not killed: it runs the next job, and the
/// pool never had to start a replacement.
async fn still_serves(pool: &ProcessPoolExecutor, pid: u32) {
    let (_, ran_on) = bounded("a later job", pool.submit(AsyncEcho { ms: 1, value: 1 }))
        .await
        .unwrap();
    assert_eq!(ran_on, pid);
    assert_eq!(pool.stats().respawns, 0);
}

async fn pool_with(workers: usize, jobs: usize) -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .workers(workers)
        .jobs_per_worker(jobs)
        // Long enough that a kill can never be what stopped a job here.
        .cancel_grace(Duration::from_secs(120))
        .build()
        .await
        .expect("the pool should start")
}

#[tokio::test]
async fn an_async_task_runs_on_a_runtime_in_the_worker() {
    for jobs in [1, 3] {
        let pool = pool_with(1, jobs).await;
        let pid = pool.worker_pids()[0];
        let (value, ran_on) = bounded("an async job", pool.submit(AsyncEcho { ms: 20, value: 7 }))
            .await
            .unwrap();
        assert_eq!((value, ran_on), (7, pid));
        assert_ne!(ran_on, std::process::id());
        bounded("shutdown", pool.shutdown()).await;
    }
}

#[tokio::test]
async fn jobs_per_worker_runs_that_many_jobs_at_once_and_no_more() {
    let pool = pool_with(1, 4).await;
    let pid = pool.worker_pids()[0];
    let handles: Vec<_> = (0..8).map(|_| pool.submit(Overlap { ms: 1500 })).collect();
    let mut peaks = Vec::new();
    for h in handles {
        let (peak, ran_on) = bounded("an overlapping job", h).await.unwrap();
        assert_eq!(ran_on, pid);
        peaks.push(peak);
    }
    assert!(
        peaks.iter().all(|&p| p <= 4),
        "more than 4 at once: {peaks:?}"
    );
    assert_eq!(peaks.iter().max(), Some(&4), "never 4 at once: {peaks:?}");
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn with_one_job_per_worker_async_jobs_run_one_at_a_time() {
    let pool = pool_with(1, 1).await;
    let handles: Vec<_> = (0..3).map(|_| pool.submit(Overlap { ms: 200 })).collect();
    for h in handles {
        let (peak, _) = bounded("a job", h).await.unwrap();
        assert_eq!(peak, 1);
    }
    bounded("shutdown", pool.shutdown()).await;
}

/// Cancels a running async task and checks that its future was dropped in
/// the worker (its destructor ran, seeing `cancelled()`), with no kill: the
/// grace period is two minutes and the worker keeps serving.
async fn cancel_drops_the_future(jobs: usize) {
    let dir = scratch(&format!("cancel-{jobs}"));
    let pool = pool_with(1, jobs).await;
    let pid = pool.worker_pids()[0];
    let handle = pool.submit(HoldUntilDropped {
        dir: dir.clone(),
        tag: "held".into(),
    });
    appears(&dir.join("held.started")).await;
    assert!(handle.cancel(), "the job was running, the cancel must take");
    let dropped = dir.join("held.dropped");
    appears(&dropped).await;
    eventually("the dropped marker to be written", || {
        std::fs::read_to_string(&dropped).is_ok_and(|s| !s.is_empty())
    })
    .await;
    assert_eq!(std::fs::read_to_string(&dropped).unwrap(), "cancelled=true");
    // The worker was not killed: it runs the next job.
    still_serves(&pool, pid).await;
    bounded("shutdown", pool.shutdown()).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_cancelled_async_task_is_dropped_inside_the_worker() {
    cancel_drops_the_future(1).await;
}

#[tokio::test]
async fn a_cancelled_async_task_is_dropped_inside_a_worker_running_several() {
    cancel_drops_the_future(4).await;
}

#[tokio::test]
async fn a_timed_out_async_task_is_dropped_not_killed() {
    let dir = scratch("timeout");
    let pool = pool_with(1, 2).await;
    let pid = pool.worker_pids()[0];
    let handle = pool.submit_with(
        HoldUntilDropped {
            dir: dir.clone(),
            tag: "slow".into(),
        },
        JobOptions::new().timeout(Duration::from_millis(300)),
    );
    let err = bounded("the timed-out job", handle).await.unwrap_err();
    assert!(matches!(err, Error::TimedOut { .. }), "{err:?}");
    appears(&dir.join("slow.dropped")).await;
    still_serves(&pool, pid).await;
    bounded("shutdown", pool.shutdown()).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_cancel_stops_only_its_own_job_among_concurrent_ones() {
    let dir = scratch("only-own");
    let pool = pool_with(1, 3).await;
    let a = pool.submit(AsyncEcho { ms: 800, value: 1 });
    let held = pool.submit(HoldUntilDropped {
        dir: dir.clone(),
        tag: "victim".into(),
    });
    let b = pool.submit(AsyncEcho { ms: 800, value: 2 });
    appears(&dir.join("victim.started")).await;
    assert!(held.cancel());
    appears(&dir.join("victim.dropped")).await;
    assert_eq!(bounded("job a", a).await.unwrap().0, 1);
    assert_eq!(bounded("job b", b).await.unwrap().0, 2);
    assert_eq!(pool.stats().respawns, 0);
    bounded("shutdown", pool.shutdown()).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn blocking_tasks_running_side_by_side_see_only_their_own_cancel() {
    let dir = scratch("blocking-side-by-side");
    let pool = pool_with(1, 2).await;
    let keep = pool.submit(CooperativeFile {
        path: dir.join("keep"),
        ms: 1500,
    });
    let stop = pool.submit(CooperativeFile {
        path: dir.join("stop"),
        ms: 60_000,
    });
    // Both run at once on the one worker (two slots); cancel one.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(stop.cancel());
    appears(&dir.join("stop")).await;
    assert!(
        !bounded("the other job", keep).await.unwrap(),
        "it saw a cancel"
    );
    assert!(!dir.join("keep").exists());
    assert_eq!(pool.stats().respawns, 0);
    bounded("shutdown", pool.shutdown()).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_panicking_async_task_fails_alone() {
    let pool = pool_with(1, 2).await;
    let pid = pool.worker_pids()[0];
    let slow = pool.submit(AsyncEcho { ms: 500, value: 5 });
    let err = bounded("the panicking job", pool.submit(AsyncPanic))
        .await
        .unwrap_err();
    match err {
        Error::Panicked { message, .. } => assert!(message.contains("async boom"), "{message}"),
        other => panic!("expected a panic, got {other:?}"),
    }
    assert_eq!(bounded("the other job", slow).await.unwrap(), (5, pid));
    assert_eq!(pool.stats().respawns, 0);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn a_worker_death_fails_every_job_running_on_it_and_the_pool_recovers() {
    let pool = pool_with(1, 3).await;
    let pid = pool.worker_pids()[0];
    let a = pool.submit(AsyncEcho {
        ms: 30_000,
        value: 1,
    });
    let b = pool.submit(AsyncEcho {
        ms: 30_000,
        value: 2,
    });
    let exit = pool.submit(AsyncExit);
    for (what, h) in [("a", a), ("b", b)] {
        let err = bounded(what, h).await.unwrap_err();
        assert!(matches!(err, Error::WorkerDied { .. }), "{what}: {err:?}");
    }
    let err = bounded("the exiting job", exit).await.unwrap_err();
    assert!(matches!(err, Error::WorkerDied { .. }), "{err:?}");
    let (v, ran_on) = bounded(
        "a job on the replacement",
        pool.submit(AsyncEcho { ms: 1, value: 9 }),
    )
    .await
    .unwrap();
    assert_eq!(v, 9);
    assert_ne!(ran_on, pid);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn an_async_task_that_never_awaits_is_killed_after_the_grace_period() {
    let dir = scratch("blocks");
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .jobs_per_worker(2)
        .cancel_grace(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let pid = pool.worker_pids()[0];
    let handle = pool.submit(BlocksThread { dir: dir.clone() });
    appears(&dir.join("blocking.started")).await;
    assert!(handle.cancel());
    eventually("the worker to be killed", || !process_alive(pid)).await;
    let (_, ran_on) = bounded(
        "a job on the replacement",
        pool.submit(AsyncEcho { ms: 1, value: 1 }),
    )
    .await
    .unwrap();
    assert_ne!(ran_on, pid);
    bounded("shutdown", pool.shutdown()).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_async_initializer_builds_state_that_async_tasks_read() {
    let pool = ProcessPoolExecutor::builder()
        .workers(2)
        .jobs_per_worker(2)
        .initializer(AsyncInit {
            greeting: "hello".into(),
        })
        .build()
        .await
        .unwrap();
    let handles: Vec<_> = (0..6)
        .map(|i| pool.submit(Greet(format!("job {i}"))))
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(
            bounded("a job", h).await.unwrap(),
            format!("hello, job {i}")
        );
    }
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn progress_of_concurrent_async_jobs_reaches_each_own_handle() {
    let pool = pool_with(1, 2).await;
    let a = pool.submit(AsyncSteps { total: 10 });
    let b = pool.submit(AsyncSteps { total: 17 });
    let (pa, pb) = (a.progress(), b.progress());
    assert_eq!(bounded("job a", a).await.unwrap(), 10);
    assert_eq!(bounded("job b", b).await.unwrap(), 17);
    let last_a = pa.borrow().clone().expect("job a reported");
    let last_b = pb.borrow().clone().expect("job b reported");
    assert_eq!((last_a.done, last_a.total), (10, Some(10)));
    assert_eq!((last_b.done, last_b.total), (17, Some(17)));
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn map_runs_async_tasks_concurrently_and_keeps_order() {
    use futures::StreamExt;
    let pool = pool_with(2, 8).await;
    let tasks = (0..40).map(|value| AsyncEcho { ms: 100, value });
    let out: Vec<u64> = bounded(
        "the map",
        pool.map(tasks).map(|r| r.unwrap().0).collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(out, (0..40).collect::<Vec<_>>());
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn a_graceful_shutdown_lets_concurrent_jobs_finish() {
    let pool = pool_with(1, 4).await;
    let handles: Vec<_> = (0..6)
        .map(|value| pool.submit(AsyncEcho { ms: 300, value }))
        .collect();
    bounded("shutdown", pool.shutdown()).await;
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(bounded("a job", h).await.unwrap().0, i as u64);
    }
}

/// Many mixed jobs (async and blocking, some sent ahead, some cancelled,
/// workers recycled every 40 jobs) on workers running 4 at once: every job
/// resolves with its own output, and the counters add up.
#[tokio::test]
async fn many_mixed_jobs_with_cancels_all_resolve() {
    let pool = ProcessPoolExecutor::builder()
        .workers(2)
        .jobs_per_worker(4)
        .max_tasks_per_worker(40)
        .build()
        .await
        .unwrap();
    let mut asyncs = Vec::new();
    let mut blocking = Vec::new();
    let (mut cancelled, mut too_late) = (0u64, 0u64);
    for i in 0..600u64 {
        if i % 2 == 1 {
            blocking.push((i, pool.submit(Square(i))));
            continue;
        }
        let h = pool.submit(AsyncEcho {
            ms: i % 5,
            value: i,
        });
        if i % 7 == 0 {
            if h.cancel() {
                cancelled += 1;
            } else {
                too_late += 1;
            }
        } else {
            asyncs.push((i, h));
        }
    }
    let mut ok = 0u64;
    for (i, h) in blocking {
        assert_eq!(bounded("a blocking job", h).await.unwrap(), i * i);
        ok += 1;
    }
    for (i, h) in asyncs {
        assert_eq!(bounded("an async job", h).await.unwrap().0, i);
        ok += 1;
    }
    let stats = pool.stats();
    assert_eq!(stats.completed, ok + too_late, "{stats:?}");
    assert_eq!(stats.cancelled, cancelled, "{stats:?}");
    assert_eq!(stats.failed, 0, "{stats:?}");
    assert!(stats.recycled >= 10, "{stats:?}");
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn batched_async_tasks_run_in_both_engines() {
    use futures::StreamExt;
    for jobs in [1, 2] {
        let pool = pool_with(1, jobs).await;
        let tasks = (0..30).map(|value| AsyncEcho { ms: 1, value });
        let out: Vec<u64> = bounded(
            "the batched map",
            pool.map(tasks)
                .chunk_size(7)
                .map(|r| r.unwrap().0)
                .collect::<Vec<_>>(),
        )
        .await;
        assert_eq!(out, (0..30).collect::<Vec<_>>(), "jobs_per_worker {jobs}");
        bounded("shutdown", pool.shutdown()).await;
    }
}

/// Waits forever; its destructor panics.
#[derive(Serialize, Deserialize)]
struct PanicsWhenDropped {
    dir: PathBuf,
}
struct PanicOnDrop;
impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("boom in drop");
    }
}
impl AsyncTask for PanicsWhenDropped {
    type Output = ();
    async fn run(self) {
        let _bomb = PanicOnDrop;
        std::fs::write(self.dir.join("bomb.started"), "").unwrap();
        std::future::pending::<()>().await;
    }
}
procpool::register!(PanicsWhenDropped);

#[tokio::test]
async fn a_destructor_that_panics_on_cancel_does_not_wedge_the_worker() {
    for jobs in [1, 2] {
        let dir = scratch(&format!("bomb-{jobs}"));
        let pool = pool_with(1, jobs).await;
        let pid = pool.worker_pids()[0];
        let h = pool.submit(PanicsWhenDropped { dir: dir.clone() });
        appears(&dir.join("bomb.started")).await;
        assert!(h.cancel());
        // The worker survives (the grace period is two minutes) and serves.
        still_serves(&pool, pid).await;
        bounded("shutdown", pool.shutdown()).await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
