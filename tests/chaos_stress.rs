//! Chaos from the API side: 32 tokio tasks for about three seconds
//! randomly submitting, awaiting, cancelling, dropping, detaching and
//! timing out jobs against a 2-worker pool. Every awaited handle resolves
//! (and with the outcome its operation allows), the run ends, and the pool
//! is whole afterwards.

mod support;

#[path = "support/chaos.rs"]
mod chaos;
#[path = "support/procfs.rs"]
mod procfs;
#[path = "support/tasks.rs"]
mod tasks;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chaos::*;
use futures::StreamExt;
use procfs::*;
use procpool::{Error, JobOptions, JobSet, ProcessPoolExecutor};
use support::*;
use tasks::*;

procpool::init_before_main!();

const TASKS: u64 = 32;
const RUN_FOR: Duration = Duration::from_secs(3);

#[derive(Default)]
struct Tally {
    /// Jobs handed to the pool.
    submitted: AtomicU64,
    ops: AtomicU64,
    ok: AtomicU64,
    cancelled: AtomicU64,
    timed_out: AtomicU64,
    tokio_timeouts: AtomicU64,
    dropped: AtomicU64,
    detached: AtomicU64,
    panicked: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

async fn random_ops(pool: ProcessPoolExecutor, seed: u64, t: Arc<Tally>) {
    let mut rng = XorShift::new(seed);
    let start = Instant::now();
    while start.elapsed() < RUN_FOR {
        add(&t.ops, 1);
        let n = rng.below(1_000_000);
        match rng.below(14) {
            // Submit and await: always the right value.
            0 | 1 => {
                add(&t.submitted, 1);
                let v = bounded("a plain job", pool.submit(Square(n))).await;
                assert_eq!(v.unwrap(), n * n);
                add(&t.ok, 1);
            }
            2 => {
                add(&t.submitted, 1);
                let v = bounded("a short sleep", pool.submit(Sleep(rng.below(20)))).await;
                assert!(v.unwrap() > 0);
                add(&t.ok, 1);
            }
            // Cancel, at once or a little later: the answer of cancel()
            // decides the outcome.
            3 => {
                add(&t.submitted, 1);
                let h = pool.submit(Sleep(rng.below(50)));
                match rng.below(3) {
                    0 => {}
                    1 => tokio::task::yield_now().await,
                    _ => tokio::time::sleep(Duration::from_millis(rng.below(30))).await,
                }
                let took = h.cancel();
                match bounded("a cancelled job", h).await {
                    Err(Error::Cancelled) if took => add(&t.cancelled, 1),
                    Ok(_) if !took => add(&t.ok, 1),
                    other => panic!("cancel() said {took}, the handle gave {other:?}"),
                }
            }
            // Drop the handle (cancels), maybe after it started.
            4 => {
                add(&t.submitted, 1);
                let h = pool.submit(Sleep(rng.below(40)));
                if rng.chance(50) {
                    tokio::time::sleep(Duration::from_millis(rng.below(20))).await;
                }
                drop(h);
                add(&t.dropped, 1);
            }
            // Detach: runs unobserved.
            5 => {
                add(&t.submitted, 1);
                pool.submit(SlowSquare {
                    n,
                    micros: rng.below(5000),
                })
                .detach();
                add(&t.detached, 1);
            }
            // tokio's timeout over an owned handle.
            6 => {
                add(&t.submitted, 1);
                let limit = Duration::from_millis(rng.range(1, 40));
                let job = pool.submit(Sleep(rng.below(60)));
                match bounded("a tokio timeout", tokio::time::timeout(limit, job)).await {
                    Ok(Ok(_)) => add(&t.ok, 1),
                    Ok(Err(e)) => panic!("a job under tokio's timeout failed: {e:?}"),
                    Err(_) => add(&t.tokio_timeouts, 1),
                }
            }
            // A job timeout.
            7 => {
                add(&t.submitted, 1);
                let timeout = Duration::from_millis(rng.range(5, 60));
                let h = pool.submit_with(Sleep(rng.below(80)), JobOptions::new().timeout(timeout));
                match bounded("a job with a timeout", h).await {
                    Ok(_) => add(&t.ok, 1),
                    Err(Error::TimedOut { timeout: d }) => {
                        assert_eq!(d, timeout);
                        add(&t.timed_out, 1);
                    }
                    Err(e) => panic!("expected a value or TimedOut, got {e:?}"),
                }
            }
            // A cooperative task cancelled while it runs.
            8 => {
                add(&t.submitted, 1);
                let h = pool.submit(Cooperative(5_000));
                tokio::time::sleep(Duration::from_millis(rng.below(20))).await;
                assert!(h.cancel(), "a 5 s job cannot have finished");
                assert_eq!(
                    bounded("a cancelled cooperative job", h).await.unwrap_err(),
                    Error::Cancelled
                );
                add(&t.cancelled, 1);
            }
            // A JobSet, joined or aborted.
            9 => {
                let k = rng.range(1, 6);
                add(&t.submitted, k);
                let mut set = JobSet::new();
                for i in 0..k {
                    set.spawn(&pool, Square(n + i));
                }
                let abort = rng.chance(50);
                if abort {
                    if rng.chance(50) {
                        tokio::task::yield_now().await;
                    }
                    set.abort_all();
                }
                for (_, r) in bounded("a job set", set.join_all()).await {
                    match r {
                        Ok(v) => {
                            assert!((n..n + k).any(|m| m * m == v));
                            add(&t.ok, 1);
                        }
                        Err(Error::Cancelled) if abort => add(&t.cancelled, 1),
                        Err(e) => panic!("a job set job failed: {e:?} (aborted: {abort})"),
                    }
                }
            }
            // try_submit, and a panicking job.
            10 => {
                add(&t.submitted, 2);
                let h = pool
                    .try_submit(Square(n))
                    .expect("an unbounded pool accepts");
                let p = pool.submit(SquareUnless { n, bad: n });
                assert_eq!(bounded("try_submit", h).await.unwrap(), n * n);
                assert!(bounded("a panicking job", p).await.unwrap_err().is_panic());
                add(&t.ok, 1);
                add(&t.panicked, 1);
            }
            // as_completed: take the first, drop the rest.
            11 => {
                let k = rng.range(2, 5);
                add(&t.submitted, k);
                let hs: Vec<_> = (0..k).map(|_| pool.submit(Sleep(rng.below(30)))).collect();
                let mut done = procpool::as_completed(hs);
                let (_, first) = bounded("as_completed", done.next()).await.unwrap();
                assert!(first.is_ok(), "{first:?}");
                add(&t.ok, 1);
                drop(done);
                add(&t.dropped, k - 1);
            }
            // A stubborn job given up on: killed after the cancel grace.
            12 => {
                add(&t.submitted, 1);
                let h = pool.submit(Sleep(10_000));
                tokio::time::sleep(Duration::from_millis(rng.below(30))).await;
                if rng.chance(50) {
                    assert!(h.cancel());
                    assert!(
                        bounded("a stubborn job", h)
                            .await
                            .unwrap_err()
                            .is_cancelled()
                    );
                    add(&t.cancelled, 1);
                } else {
                    drop(h);
                    add(&t.dropped, 1);
                }
            }
            // map, abandoned part-way.
            _ => {
                let k = rng.range(3, 12);
                let take = rng.below(k) as usize;
                let stream = pool
                    .map((0..k).map(move |i| Square(n + i)))
                    .in_flight(rng.range(1, 4) as usize);
                let got: Vec<_> = bounded("a map", stream.take(take).collect::<Vec<_>>()).await;
                for (i, r) in (0..).zip(got) {
                    assert_eq!(r.unwrap(), (n + i) * (n + i));
                    add(&t.ok, 1);
                }
                // The map submits lazily; count what it may have handed over.
                add(&t.submitted, take as u64);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_tasks_of_random_submits_cancels_drops_and_timeouts() {
    let seed = chaos_seed("thirty_two_tasks_of_random_submits_cancels_drops_and_timeouts");
    let pool = chaos_builder(2)
        .cancel_grace(Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            tokio::spawn(random_ops(
                pool.clone(),
                seed.wrapping_add(i),
                tally.clone(),
            ))
        })
        .collect();
    for t in tasks {
        bounded("a stress task", t)
            .await
            .expect("a stress task failed");
    }
    let elapsed = started.elapsed();
    let t = &tally;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    eprintln!(
        "{} ops in {elapsed:?}: ~{} jobs; {} ok, {} cancelled, {} timed out, {} tokio timeouts, \
         {} dropped, {} detached, {} panicked",
        get(&t.ops),
        get(&t.submitted),
        get(&t.ok),
        get(&t.cancelled),
        get(&t.timed_out),
        get(&t.tokio_timeouts),
        get(&t.dropped),
        get(&t.detached),
        get(&t.panicked),
    );
    assert!(get(&t.ops) > 100, "the tasks barely ran");

    // Detached jobs finish; the pool settles at full size.
    eventually("the pool to settle", || {
        let s = pool.stats();
        s.queued == 0 && s.running == 0 && s.workers_alive == 2 && pool.worker_pids().len() == 2
    })
    .await;
    let stats = pool.stats();
    eprintln!("{stats:?}, respawns {}", stats.respawns);

    // N slow jobs on N workers run side by side: no worker is wedged.
    let side_by_side: Vec<_> = (0..2).map(|_| pool.submit(Sleep(300))).collect();
    let mut pids = HashSet::new();
    for h in side_by_side {
        pids.insert(bounded("a job after the stress", h).await.unwrap());
    }
    assert_eq!(pids.len(), 2, "two jobs should run on the two workers");
    let quick: Vec<_> = (0..200u64).map(|n| pool.submit(Square(n))).collect();
    for (n, h) in (0..200u64).zip(quick) {
        assert_eq!(bounded("a quick job", h).await.unwrap(), n * n);
    }
    let all = pool.worker_pids();
    bounded("shutdown", pool.shutdown()).await;
    for pid in all {
        assert!(!process_alive(pid));
    }
    figures(
        "thirty_two_tasks_of_random_submits_cancels_drops_and_timeouts",
        stats.completed + stats.failed + stats.cancelled + 202,
        get(&t.cancelled)
            + get(&t.dropped)
            + get(&t.timed_out)
            + get(&t.tokio_timeouts)
            + get(&t.panicked),
    );
}

/// Documents a library bug (fails until it is fixed): a job whose cancel
/// races its completion is counted in no `stats()` counter. `cancel()`
/// marks the slot cancelled and sends `Command::Cancel`; if the worker's
/// result is processed first, `Shared::resolve` counts it as completed and
/// then takes the count back (the slot refused the result), and the late
/// `Cancel` finds no job and counts nothing. So `completed + failed +
/// cancelled` falls short of the jobs submitted, while every handle saw
/// exactly one outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_every_job_once_when_cancels_race_completions() {
    const JOBS: u64 = 6000;
    let seed = chaos_seed("stats_count_every_job_once_when_cancels_race_completions");
    let mut rng = XorShift::new(seed);
    let pool = chaos_pool(2).await;
    let (mut ok, mut cancelled) = (0u64, 0u64);
    let mut window = Vec::new();
    for n in 0..JOBS {
        window.push(pool.submit(Square(n)));
        if window.len() == 20 || n + 1 == JOBS {
            for _ in 0..rng.below(3) {
                tokio::task::yield_now().await;
            }
            if rng.chance(30) {
                std::thread::sleep(Duration::from_micros(rng.below(200)));
            }
            for h in &window {
                if rng.chance(50) {
                    h.cancel();
                }
            }
            for h in window.drain(..) {
                match bounded("a job", h).await {
                    Ok(_) => ok += 1,
                    Err(Error::Cancelled) => cancelled += 1,
                    Err(e) => panic!("{e:?}"),
                }
            }
        }
    }
    assert_eq!(ok + cancelled, JOBS);
    figures(
        "stats_count_every_job_once_when_cancels_race_completions",
        JOBS,
        cancelled,
    );
    eventually("the pool to settle", || {
        let s = pool.stats();
        s.queued == 0 && s.running == 0
    })
    .await;
    // Let late Cancel commands arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let s = pool.stats();
    eprintln!("handles: {ok} ok, {cancelled} cancelled; {s:?}");
    bounded("shutdown", pool.shutdown()).await;
    assert_eq!(s.completed, ok, "completed jobs miscounted: {s:?}");
    assert_eq!(
        s.completed + s.failed + s.cancelled,
        JOBS,
        "{} jobs are missing from the counters (handles: {ok} ok, {cancelled} cancelled): {s:?}",
        JOBS as i64 - (s.completed + s.failed + s.cancelled) as i64
    );
}
