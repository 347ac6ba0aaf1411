//! Chaos on the host's side. (a) The host is killed with SIGKILL mid-run,
//! with many jobs in flight, a worker spinning, 64 MiB on the wire, or
//! workers in the middle of starting: every worker exits within a bound.
//! The test re-executes this test binary as the host (a helper test that
//! only acts when an environment variable is set), as in host_orphans.rs.
//! (b) The pool is dropped (or stopped at once) with thousands of jobs
//! queued: every handle resolves, to `Shutdown` unless it had finished,
//! nothing hangs, the workers exit.

mod support;

#[path = "support/chaos.rs"]
mod chaos;
#[path = "support/host.rs"]
mod host;
#[path = "support/procfs.rs"]
mod procfs;
#[path = "support/tasks.rs"]
mod tasks;

use std::time::{Duration, Instant};

use chaos::*;
use host::*;
use procfs::*;
use procpool::Error;
use support::*;
use tasks::*;

procpool::init_before_main!();

const ROLE: &str = "PROCPOOL_CHAOS_HOST_ROLE";
const HOST_TAG: &str = "PROCPOOL_CHAOS_HOST_TAG";
/// How long orphaned workers may outlive their host.
const ORPHAN_BOUND: Duration = Duration::from_secs(20);

/// Not a test on its own: the host process for the tests below. Its mode
/// comes from `PROCPOOL_CHAOS_HOST_ROLE`; it prints `READY` once the chaos
/// is under way, then keeps working until it is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper: runs only as the host process of the chaos_host tests"]
async fn chaos_host_helper() {
    let Ok(mode) = std::env::var(ROLE) else {
        return;
    };
    let tag = std::env::var(HOST_TAG).unwrap();
    let pool = chaos_builder(2).env(CHAOS_TAG, &tag).build().await.unwrap();
    let ready = || {
        use std::io::Write;
        println!("READY {:?}", pool.worker_pids());
        std::io::stdout().flush().unwrap();
    };
    match mode.as_str() {
        // Thousands of small jobs streaming through.
        "busy" => {
            let handles: Vec<_> = (0..20_000u64)
                .map(|n| pool.submit(SlowSquare { n, micros: 200 }))
                .collect();
            let mut said = false;
            for (n, h) in (0..20_000u64).zip(handles) {
                assert_eq!(h.await.unwrap(), n * n);
                if !said && n >= 100 {
                    ready();
                    said = true;
                }
            }
        }
        // One worker spinning without end, the other receiving 64 MiB
        // payloads over and over.
        "stuck" => {
            let spin = pool.submit(SpinForever);
            let mut said = false;
            loop {
                let h = pool.submit(Echo(vec![7; 64 << 20]));
                if !said {
                    eventually("both busy", || pool.stats().running == 2).await;
                    ready();
                    said = true;
                }
                let _ = h.await;
                if spin.is_finished() {
                    break;
                }
            }
        }
        // Workers killed and replaced over and over: some are always in
        // the middle of starting.
        "respawning" => {
            let _jobs: Vec<_> = (0..100_000u64)
                .map(|n| pool.submit(SlowSquare { n, micros: 100 }))
                .collect();
            let mut said = false;
            loop {
                for pid in pool.worker_pids() {
                    signal_child(pid, libc::SIGKILL);
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
                if !said && pool.stats().respawns >= 4 {
                    ready();
                    said = true;
                }
            }
        }
        other => panic!("unknown mode {other}"),
    }
    tokio::time::sleep(Duration::from_secs(120)).await;
}

fn host_killed_by_sigkill(mode: &str, extra_delay: Duration) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let tag = format!("{mode}-{}-{nanos}", std::process::id());
    let (mut host, rx) = start_host_helper(
        "chaos_host_helper",
        &[(ROLE, mode), (HOST_TAG, &tag)],
        "READY",
    );
    if rx.recv_timeout(PATIENCE).is_err() {
        let _ = host.kill();
        let _ = host.wait();
        panic!("{mode}: the host helper never got ready");
    }
    std::thread::sleep(extra_delay);
    // (Where the host kills its own workers every few milliseconds, there
    // may be none at this instant; wait for one.)
    let look = Instant::now();
    let workers = loop {
        let w = tagged_processes(&tag);
        if !w.is_empty() || look.elapsed() > PATIENCE {
            break w;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    assert!(
        !workers.is_empty(),
        "{mode}: no workers found for the live host"
    );
    for &w in &workers {
        // Gone already (the host kills its own workers in one mode), or
        // the host's child.
        if let Some((_, ppid)) = proc_state(w) {
            assert_eq!(
                ppid,
                host.id(),
                "{mode}: tagged process {w} is not the host's"
            );
        }
    }
    unsafe {
        libc::kill(host.id() as i32, libc::SIGKILL);
    }
    let _ = host.wait();
    let killed = Instant::now();
    // Keep looking until no tagged process has been seen for a while: a
    // worker forked just before the kill execs (and gets its tag) later.
    let mut last_seen = Instant::now();
    let mut seen = std::collections::BTreeSet::new();
    while last_seen.elapsed() < Duration::from_millis(300) {
        let now = tagged_processes(&tag);
        if !now.is_empty() {
            last_seen = Instant::now();
            seen.extend(now.iter().copied());
        }
        assert!(
            killed.elapsed() < ORPHAN_BOUND,
            "{mode}: workers {now:?} outlived their host by {ORPHAN_BOUND:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    if seen.is_empty() {
        eprintln!(
            "{mode}: {} worker(s) at the kill; none left by the first look after the host was \
             reaped",
            workers.len()
        );
    } else {
        eprintln!(
            "{mode}: {} worker(s) at the kill, {} seen after; the last gone {:.1} ms after the \
             host was reaped",
            workers.len(),
            seen.len(),
            last_seen.duration_since(killed).as_secs_f64() * 1e3
        );
    }
}

#[test]
fn workers_exit_when_a_busy_host_is_killed() {
    for delay in [0, 37, 150] {
        host_killed_by_sigkill("busy", Duration::from_millis(delay));
    }
    figures("workers_exit_when_a_busy_host_is_killed", 0, 3);
}

#[test]
fn workers_exit_when_a_host_is_killed_with_a_worker_spinning_and_64_mib_on_the_wire() {
    host_killed_by_sigkill("stuck", Duration::from_millis(5));
    figures(
        "workers_exit_when_a_host_is_killed_with_a_worker_spinning_and_64_mib_on_the_wire",
        0,
        1,
    );
}

#[test]
fn workers_exit_when_a_host_is_killed_while_workers_start() {
    for delay in [0, 11, 23] {
        host_killed_by_sigkill("respawning", Duration::from_millis(delay));
    }
    figures(
        "workers_exit_when_a_host_is_killed_while_workers_start",
        0,
        3,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_pool_with_thousands_queued_resolves_every_handle() {
    const JOBS: u64 = 5000;
    let pool = chaos_pool(2).await;
    let pids = pool.worker_pids();
    let handles: Vec<_> = (0..JOBS)
        .map(|n| pool.submit(SlowSquare { n, micros: 500 }))
        .collect();
    eventually("some jobs done", || pool.stats().completed >= 50).await;
    let done_before = pool.stats().completed;
    drop(pool);
    let (mut ok, mut shut) = (0u64, 0u64);
    let started = Instant::now();
    for (n, h) in (0..JOBS).zip(handles) {
        match bounded("a job of a dropped pool", h).await {
            Ok(v) => {
                assert_eq!(v, n * n);
                ok += 1;
            }
            Err(Error::Shutdown) => shut += 1,
            Err(e) => panic!("job {n}: expected a value or Shutdown, got {e:?}"),
        }
    }
    eprintln!(
        "{ok} finished ({done_before} before the drop), {shut} resolved Shutdown in {:?}",
        started.elapsed()
    );
    assert_eq!(ok + shut, JOBS);
    assert!(ok >= done_before);
    assert!(shut >= JOBS / 2, "most jobs were still queued: {shut}");
    eventually("the workers to exit", || {
        pids.iter().all(|&p| !process_alive(p))
    })
    .await;
    figures(
        "dropping_the_pool_with_thousands_queued_resolves_every_handle",
        JOBS,
        1,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_pool_mid_chaos_resolves_every_handle() {
    let tag = format!("drop-{}", std::process::id());
    let pool = chaos_builder(2).env(CHAOS_TAG, &tag).build().await.unwrap();
    let spin = pool.submit(SpinForever);
    let big = pool.submit(Echo(vec![3; 64 << 20]));
    let dying: Vec<_> = (0..50)
        .map(|i| {
            pool.submit(DelayedDeath {
                ms: i % 3,
                death: Death::Abort,
            })
        })
        .collect();
    let queued: Vec<_> = (0..3000u64).map(|n| pool.submit(Square(n))).collect();
    eventually("both workers busy", || pool.stats().running == 2).await;
    drop(pool);
    assert!(
        bounded("the spinning job", spin)
            .await
            .unwrap_err()
            .is_shutdown()
    );
    match bounded("the big job", big).await {
        Ok(v) => assert_eq!(v.len(), 64 << 20),
        Err(e) => assert!(e.is_shutdown(), "{e:?}"),
    }
    for h in dying {
        match bounded("a dying job", h).await {
            Err(Error::Shutdown) | Err(Error::WorkerDied { .. }) => {}
            other => panic!("expected Shutdown or WorkerDied, got {other:?}"),
        }
    }
    for (n, h) in (0..3000u64).zip(queued) {
        match bounded("a queued job", h).await {
            Ok(v) => assert_eq!(v, n * n),
            Err(Error::Shutdown) => {}
            Err(e) => panic!("expected a value or Shutdown, got {e:?}"),
        }
    }
    eventually("the workers to exit", || tagged_children(&tag).is_empty()).await;
    figures(
        "dropping_the_pool_mid_chaos_resolves_every_handle",
        3052,
        52,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_now_with_thousands_queued_returns_and_fails_them() {
    const JOBS: u64 = 5000;
    let pool = chaos_pool(2).await;
    let pids = pool.worker_pids();
    let handles: Vec<_> = (0..JOBS).map(|_| pool.submit(Sleep(50))).collect();
    eventually("both running", || pool.stats().running == 2).await;
    bounded("shutdown_now", pool.shutdown_now()).await;
    for pid in &pids {
        assert!(!process_alive(*pid), "worker {pid} outlived shutdown_now");
    }
    let mut shut = 0;
    for h in handles {
        match bounded("a job", h).await {
            Ok(_) => {}
            Err(Error::Shutdown) => shut += 1,
            Err(e) => panic!("expected a value or Shutdown, got {e:?}"),
        }
    }
    assert!(shut >= JOBS - 100, "{shut} of {JOBS} resolved Shutdown");
    let late = pool.submit(Square(2));
    assert_eq!(late.await.unwrap_err(), Error::Shutdown);
    figures(
        "shutdown_now_with_thousands_queued_returns_and_fails_them",
        JOBS + 1,
        1,
    );
}
