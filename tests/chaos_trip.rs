//! A fault at every point of a job's trip: the task's `Serialize` in the
//! host, its `Deserialize` in the worker, the output's `Serialize` in the
//! worker, the output's `Deserialize` in the host. Each by a serde error,
//! a panic, a process exit and an abort (the last three only where a worker
//! runs the code). Also: a crash while `shutdown()` runs, and a crash with
//! 64 MiB in flight. Each fault resolves its own job, with an error that
//! says what happened, and the pool keeps serving.

mod support;

#[path = "support/chaos.rs"]
mod chaos;
#[path = "support/procfs.rs"]
mod procfs;
#[path = "support/tasks.rs"]
mod tasks;
#[path = "support/trip.rs"]
mod trip;

use std::time::Duration;

use chaos::*;
use futures::StreamExt;
use procfs::*;
use procpool::{Error, ExitStatus, ProcessPoolExecutor, SerdeStage};
use support::*;
use tasks::*;
use trip::*;

procpool::init_before_main!();

/// The pool still serves both workers' worth of good trips.
async fn still_serves(pool: &ProcessPoolExecutor) {
    let hs: Vec<_> = (100..110u64).map(|v| pool.submit(Trip::ok(v))).collect();
    for (v, h) in (100..110u64).zip(hs) {
        assert_eq!(
            bounded("a good trip", h).await.unwrap(),
            TripOut {
                fault: None,
                value: v * 2
            }
        );
    }
}

fn stage_of(at: TripPoint) -> SerdeStage {
    match at {
        TripPoint::EncodeTask => SerdeStage::EncodeTask,
        TripPoint::DecodeTask => SerdeStage::DecodeTask,
        TripPoint::EncodeOutput => SerdeStage::EncodeOutput,
        TripPoint::DecodeOutput => SerdeStage::DecodeOutput,
    }
}

#[tokio::test]
async fn a_serde_error_at_every_point_fails_only_its_job_with_its_stage() {
    let pool = chaos_pool(2).await;
    let pids = pool.worker_pids();
    for at in [
        TripPoint::EncodeTask,
        TripPoint::DecodeTask,
        TripPoint::EncodeOutput,
        TripPoint::DecodeOutput,
    ] {
        // A good job on each side of the bad one, submitted together.
        let before = pool.submit(Trip::ok(1));
        let bad = pool.submit(Trip::at(at, Fault::SerdeError, 2));
        let after = pool.submit(Trip::ok(3));
        match bounded("a bad trip", bad).await {
            Err(Error::Serialization {
                stage,
                type_name,
                message,
            }) => {
                assert_eq!(stage, stage_of(at), "{at:?}");
                assert!(type_name.contains("Trip"), "{at:?}: {type_name}");
                // postcard drops the text of custom serde errors, so the
                // message is its generic one ("Serde Serialization Error").
                assert!(!message.is_empty(), "{at:?}");
                eprintln!("{at:?}: {message}");
            }
            other => panic!("{at:?}: expected a Serialization error, got {other:?}"),
        }
        assert_eq!(bounded("before", before).await.unwrap().value, 2);
        assert_eq!(bounded("after", after).await.unwrap().value, 6);
    }
    still_serves(&pool).await;
    // A serde error is the types' fault, not the worker's: none replaced.
    assert_eq!(pool.worker_pids(), pids);
    assert_eq!(pool.stats().respawns, 0);
    bounded("shutdown", pool.shutdown()).await;
    figures(
        "a_serde_error_at_every_point_fails_only_its_job_with_its_stage",
        22,
        4,
    );
}

/// A fault that ends the process, placed where the host runs the code, is
/// refused by the test types (it would kill the test): the guard works and
/// the job fails with a serde error.
#[tokio::test]
async fn host_side_faults_never_reach_the_host() {
    let pool = chaos_pool(1).await;
    for at in [TripPoint::EncodeTask, TripPoint::DecodeOutput] {
        for fault in [Fault::Abort, Fault::Exit(5), Fault::Panic] {
            match bounded("a trip", pool.submit(Trip::at(at, fault, 1))).await {
                Err(Error::Serialization { stage, .. }) => assert_eq!(stage, stage_of(at)),
                other => panic!("{at:?}/{fault:?}: {other:?}"),
            }
        }
    }
    bounded("shutdown", pool.shutdown()).await;
    figures("host_side_faults_never_reach_the_host", 6, 6);
}

async fn expect_death(pool: &ProcessPoolExecutor, at: TripPoint, fault: Fault, want: ExitStatus) {
    let pids = pool.worker_pids();
    let other = pool.submit(SlowSquare {
        n: 7,
        micros: 200_000,
    });
    let bad = pool.submit(Trip::at(at, fault, 1));
    match bounded("a dying trip", bad).await {
        Err(Error::WorkerDied {
            pid,
            status,
            stderr_tail,
        }) => {
            assert!(pids.contains(&pid), "{at:?}/{fault:?}: {pid} not a worker");
            assert_eq!(status, want, "{at:?}/{fault:?}");
            assert!(
                stderr_tail.contains(&format!("chaos: {fault:?} at {at:?}")),
                "{at:?}/{fault:?}: tail {stderr_tail:?}"
            );
        }
        other => panic!("{at:?}/{fault:?}: expected WorkerDied, got {other:?}"),
    }
    assert_eq!(
        bounded("the job on the other worker", other).await.unwrap(),
        49,
        "{at:?}/{fault:?} disturbed another worker's job"
    );
    still_serves(pool).await;
    eventually("the pool to regain its size", || {
        pool.worker_pids().len() == 2
    })
    .await;
}

#[tokio::test]
async fn a_process_exit_inside_worker_side_serde_is_a_worker_death() {
    let pool = chaos_pool(2).await;
    expect_death(
        &pool,
        TripPoint::DecodeTask,
        Fault::Exit(7),
        ExitStatus::Code(7),
    )
    .await;
    expect_death(
        &pool,
        TripPoint::EncodeOutput,
        Fault::Exit(9),
        ExitStatus::Code(9),
    )
    .await;
    assert!(pool.stats().respawns >= 2);
    bounded("shutdown", pool.shutdown()).await;
    figures(
        "a_process_exit_inside_worker_side_serde_is_a_worker_death",
        24,
        2,
    );
}

#[tokio::test]
async fn an_abort_inside_worker_side_serde_is_a_worker_death() {
    let pool = chaos_pool(2).await;
    let abort = ExitStatus::Signal(libc::SIGABRT);
    expect_death(&pool, TripPoint::DecodeTask, Fault::Abort, abort).await;
    expect_death(&pool, TripPoint::EncodeOutput, Fault::Abort, abort).await;
    bounded("shutdown", pool.shutdown()).await;
    figures("an_abort_inside_worker_side_serde_is_a_worker_death", 24, 2);
}

/// A panic in the output's `Serialize` is caught: `EncodeOutput`, worker
/// kept. A panic in the task's `Deserialize` must fail its job with an
/// error that names the panic (its message is in the error or, if the
/// worker died of it, in the stderr tail).
#[tokio::test]
async fn a_panic_inside_worker_side_serde() {
    let pool = chaos_pool(1).await;
    let pid = pool.worker_pids()[0];
    let e = bounded(
        "a trip",
        pool.submit(Trip::at(TripPoint::EncodeOutput, Fault::Panic, 1)),
    )
    .await
    .unwrap_err();
    match &e {
        Error::Serialization { stage, message, .. } => {
            assert_eq!(*stage, SerdeStage::EncodeOutput);
            // A caught panic keeps its message.
            assert!(
                message.contains("chaos: Panic at EncodeOutput"),
                "{message}"
            );
        }
        other => panic!("expected EncodeOutput, got {other:?}"),
    }
    assert_eq!(pool.worker_pids(), vec![pid], "the worker was replaced");

    let e = bounded(
        "a trip",
        pool.submit(Trip::at(TripPoint::DecodeTask, Fault::Panic, 1)),
    )
    .await
    .unwrap_err();
    let marker = "chaos: Panic at DecodeTask";
    match &e {
        Error::Panicked { message, .. } => assert!(message.contains(marker), "{message}"),
        Error::Serialization { stage, message, .. } => {
            assert_eq!(*stage, SerdeStage::DecodeTask);
            assert!(message.contains(marker), "{message}");
        }
        Error::WorkerDied { stderr_tail, .. } => {
            assert!(stderr_tail.contains(marker), "{stderr_tail}");
        }
        other => panic!("expected the panic to be reported, got {other:?}"),
    }
    eprintln!("a panic in the task's Deserialize gave: {e:?}");
    for v in 0..5 {
        assert_eq!(
            bounded("a trip", pool.submit(Trip::ok(v)))
                .await
                .unwrap()
                .value,
            v * 2
        );
    }
    bounded("shutdown", pool.shutdown()).await;
    figures("a_panic_inside_worker_side_serde", 7, 2);
}

/// Documents a library bug (fails until it is fixed): a panic in the
/// task's `Deserialize` is not caught in the worker, unlike a panic in the
/// output's `Serialize` (which gives `EncodeOutput`, "serializing
/// panicked"). It unwinds out of the worker's job thread, the worker exits
/// (code 104, or SIGKILL from the host on EOF), the job fails with
/// `WorkerDied` and the worker is replaced. Expected: `Serialization
/// { stage: DecodeTask }` (or `Panicked`) and the worker kept.
#[tokio::test]
async fn a_panic_in_the_tasks_deserialize_keeps_the_worker() {
    let pool = chaos_pool(1).await;
    let pid = pool.worker_pids()[0];
    let e = bounded(
        "a trip",
        pool.submit(Trip::at(TripPoint::DecodeTask, Fault::Panic, 1)),
    )
    .await
    .unwrap_err();
    let caught = matches!(
        &e,
        Error::Serialization {
            stage: SerdeStage::DecodeTask,
            ..
        } | Error::Panicked { .. }
    );
    assert_eq!(
        bounded("a trip", pool.submit(Trip::ok(2)))
            .await
            .unwrap()
            .value,
        4
    );
    let kept = pool.worker_pids() == vec![pid];
    figures("a_panic_in_the_tasks_deserialize_keeps_the_worker", 2, 1);
    bounded("shutdown", pool.shutdown()).await;
    assert!(
        caught && kept,
        "a panic in the task's Deserialize should fail the job with DecodeTask (or Panicked) \
         and keep the worker, like a panic in the output's Serialize; got {e:?}, worker kept: \
         {kept}"
    );
}

/// Faults inside a batch (`map` with a chunk size): a serde error fails
/// only its item; a death fails only its batch.
#[tokio::test]
async fn faults_inside_a_batch() {
    const N: u64 = 64;
    const CHUNK: usize = 8;
    let pool = chaos_pool(2).await;
    let faulty = |v: u64| match v {
        5 => Some((TripPoint::DecodeTask, Fault::SerdeError)),
        17 => Some((TripPoint::EncodeOutput, Fault::SerdeError)),
        30 => Some((TripPoint::DecodeOutput, Fault::SerdeError)),
        41 => Some((TripPoint::EncodeOutput, Fault::Panic)),
        _ => None,
    };
    let tasks: Vec<Trip> = (0..N)
        .map(|v| Trip {
            fault: faulty(v),
            value: v,
        })
        .collect();
    let results: Vec<_> = bounded(
        "a batched map",
        pool.map(tasks).chunk_size(CHUNK).collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(results.len(), N as usize);
    for (v, r) in (0..N).zip(results) {
        match (faulty(v), r) {
            (None, Ok(out)) => assert_eq!(out.value, v * 2),
            (Some((at, _)), Err(Error::Serialization { stage, .. })) => {
                assert_eq!(stage, stage_of(at), "item {v}")
            }
            (f, r) => panic!("item {v} ({f:?}): {r:?}"),
        }
    }
    assert_eq!(pool.stats().respawns, 0);

    // An abort in one item's Deserialize kills the worker: its whole batch
    // fails with WorkerDied, and only that batch.
    let tasks: Vec<Trip> = (0..N)
        .map(|v| {
            if v == 20 {
                Trip::at(TripPoint::DecodeTask, Fault::Abort, v)
            } else {
                Trip::ok(v)
            }
        })
        .collect();
    let results: Vec<_> = bounded(
        "a batched map with a death",
        pool.map(tasks).chunk_size(CHUNK).collect::<Vec<_>>(),
    )
    .await;
    let failed: Vec<u64> = (0..N)
        .zip(&results)
        .filter(|(_, r)| r.is_err())
        .map(|(v, _)| v)
        .collect();
    assert!(failed.contains(&20), "{failed:?}");
    assert!(
        failed.len() <= CHUNK,
        "more than one batch failed: {failed:?}"
    );
    for (v, r) in (0..N).zip(results) {
        match r {
            Ok(out) => assert_eq!(out.value, v * 2),
            Err(Error::WorkerDied { status, .. }) => {
                assert_eq!(status, ExitStatus::Signal(libc::SIGABRT))
            }
            Err(e) => panic!("item {v}: {e:?}"),
        }
    }
    still_serves(&pool).await;
    bounded("shutdown", pool.shutdown()).await;
    figures("faults_inside_a_batch", 2 * N + 10, 5);
}

/// `shutdown()` (graceful) while a running job is about to crash: it
/// returns, the crashing job resolves `WorkerDied` (or `Shutdown`), and
/// the jobs queued behind it still run (on a replacement worker).
#[tokio::test]
async fn shutdown_while_a_job_is_about_to_crash() {
    for (round, delay) in [0u64, 1, 5, 20, 60, 150].into_iter().enumerate() {
        let pool = chaos_pool(1).await;
        let pid = pool.worker_pids()[0];
        let crash = pool.submit(DelayedDeath {
            ms: delay,
            death: if round % 2 == 0 {
                Death::Abort
            } else {
                Death::Segfault
            },
        });
        let queued: Vec<_> = (0..5u64).map(|n| pool.submit(Square(n))).collect();
        if round % 3 == 1 {
            eventually("the crash job to start", || {
                pool.stats().running == 1 || crash.is_finished()
            })
            .await;
        }
        bounded("shutdown during a crash", pool.shutdown()).await;
        match bounded("the crashing job", crash).await {
            Err(Error::WorkerDied { pid: p, .. }) => assert_eq!(p, pid),
            Err(Error::Shutdown) => {}
            other => panic!("round {round}: expected WorkerDied or Shutdown, got {other:?}"),
        }
        for (n, h) in (0..5u64).zip(queued) {
            assert_eq!(
                bounded("a queued job", h).await.unwrap(),
                n * n,
                "round {round}: a queued job was lost in the drain"
            );
        }
        assert!(pool.worker_pids().is_empty());
        assert!(!process_alive(pid));
    }
    figures("shutdown_while_a_job_is_about_to_crash", 36, 6);
}

/// `shutdown_now()` and `shutdown_timeout()` while a job is about to crash:
/// they return, and everything resolves with `Shutdown` (or `WorkerDied`
/// for a crash that won the race).
#[tokio::test]
async fn shutdown_now_while_a_job_is_about_to_crash() {
    for (round, delay) in [0u64, 2, 10, 40].into_iter().enumerate() {
        let pool = chaos_pool(2).await;
        let pids = pool.worker_pids();
        let crashes: Vec<_> = (0..2)
            .map(|_| {
                pool.submit(DelayedDeath {
                    ms: delay,
                    death: Death::Exit(3),
                })
            })
            .collect();
        let queued: Vec<_> = (0..50u64).map(|_| pool.submit(Sleep(10))).collect();
        tokio::time::sleep(Duration::from_millis(delay)).await;
        if round % 2 == 0 {
            bounded("shutdown_now", pool.shutdown_now()).await;
        } else {
            bounded(
                "shutdown_timeout",
                pool.shutdown_timeout(Duration::from_millis(delay)),
            )
            .await;
        }
        for h in crashes {
            match bounded("a crashing job", h).await {
                Err(Error::WorkerDied { status, .. }) => assert_eq!(status, ExitStatus::Code(3)),
                Err(Error::Shutdown) => {}
                other => panic!("round {round}: {other:?}"),
            }
        }
        for h in queued {
            match bounded("a queued job", h).await {
                Ok(_) | Err(Error::Shutdown) => {}
                Err(e) => panic!("round {round}: a queued job got {e:?}"),
            }
        }
        assert!(pool.worker_pids().is_empty());
        for pid in pids {
            assert!(!process_alive(pid));
        }
    }
    figures("shutdown_now_while_a_job_is_about_to_crash", 4 * 52, 8);
}

const BIG: usize = 64 << 20;

/// A worker that dies with 64 MiB in flight: aborting in the payload's
/// `Deserialize`, or killed while the host writes the payload or reads
/// the result. Only that job fails; the other worker keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_crashing_with_64_mib_in_flight() {
    let pool = chaos_pool(2).await;
    // Small jobs on the other worker throughout.
    let smalls: Vec<_> = (0..200u64)
        .map(|n| pool.submit(SlowSquare { n, micros: 2000 }))
        .collect();

    // Aborts once the whole payload has arrived.
    let e = bounded(
        "a big aborting job",
        pool.submit(BigPayload {
            abort_in_worker: true,
            data: vec![0x5a; BIG],
        }),
    )
    .await
    .unwrap_err();
    match e {
        Error::WorkerDied { status, .. } => assert_eq!(status, ExitStatus::Signal(libc::SIGABRT)),
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    // The same payload without the fault goes through.
    let (len, sum) = bounded(
        "a big job",
        pool.submit(BigPayload {
            abort_in_worker: false,
            data: vec![1; BIG],
        }),
    )
    .await
    .unwrap();
    assert_eq!((len, sum), (BIG as u64, BIG as u64));

    // The small jobs on the other worker were not disturbed.
    for (n, h) in (0..200u64).zip(smalls) {
        assert_eq!(bounded("a small job", h).await.unwrap(), n * n);
    }
    still_serves(&pool).await;
    bounded("shutdown", pool.shutdown()).await;

    // On a one-worker pool: killed while the host writes 64 MiB to it (or,
    // losing the race, after: then the echo simply succeeds).
    let pool = chaos_pool(1).await;
    let (mut hit, mut missed) = (0, 0);
    for _ in 0..3 {
        let pid = pool.worker_pids()[0];
        let h = pool.submit(Echo(vec![0xa5; BIG]));
        while pool.stats().running == 0 {
            tokio::task::yield_now().await;
        }
        assert!(signal_child(pid, libc::SIGKILL));
        match bounded("an echo under fire", h).await {
            Ok(back) => {
                assert_eq!(back.len(), BIG);
                assert!(back.iter().all(|&b| b == 0xa5));
                missed += 1;
            }
            Err(Error::WorkerDied { pid: p, status, .. }) => {
                assert_eq!((p, status), (pid, ExitStatus::Signal(libc::SIGKILL)));
                hit += 1;
            }
            Err(e) => panic!("expected the echo or WorkerDied, got {e:?}"),
        }
        eventually("a replacement", || {
            let pids = pool.worker_pids();
            pids.len() == 1 && pids[0] != pid
        })
        .await;
    }
    eprintln!("killed during a 64 MiB write: {hit} hit, {missed} too late");

    // Killed while it sends a 64 MiB result.
    let pid = pool.worker_pids()[0];
    let h = pool.submit(Bytes(BIG));
    eventually("the job to start", || pool.stats().running == 1).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(signal_child(pid, libc::SIGKILL));
    match bounded("a big result under fire", h).await {
        Ok(v) => assert_eq!(v.len(), BIG),
        Err(Error::WorkerDied { pid: p, .. }) => assert_eq!(p, pid),
        Err(e) => panic!("expected the bytes or WorkerDied, got {e:?}"),
    }
    eventually("the pool to regain its size", || {
        pool.worker_pids().len() == 1 && pool.stats().running == 0
    })
    .await;
    assert_eq!(bounded("a job", pool.submit(Square(8))).await.unwrap(), 64);
    bounded("shutdown", pool.shutdown()).await;
    figures("a_worker_crashing_with_64_mib_in_flight", 218, 5);
}
