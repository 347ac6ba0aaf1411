//! Submitting jobs and getting results: the basic contract of the pool.

mod support;

#[path = "support/bad_tasks.rs"]
mod bad_tasks;
#[path = "support/tasks.rs"]
mod tasks;
#[path = "support/worker.rs"]
mod worker;

use bad_tasks::*;
use procpool::{Error, JobHandle, ProcessPoolExecutor, SerdeStage};
use support::*;
use tasks::*;
use worker::*;

procpool::init_before_main!();

#[tokio::test]
async fn submit_returns_a_handle_that_resolves_to_the_output() {
    let pool = pool(2).await;
    let handle: JobHandle<u64> = pool.submit(Square(12));
    assert_eq!(bounded("a job", handle).await.unwrap(), 144);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn many_jobs_all_resolve_correctly() {
    let pool = pool(2).await;
    let handles: Vec<_> = (0..2000u64).map(|i| pool.submit(Square(i))).collect();
    for (i, h) in handles.into_iter().enumerate() {
        let i = i as u64;
        assert_eq!(bounded("a job", h).await.unwrap(), i * i);
    }
    let stats = pool.stats();
    assert_eq!(stats.completed, 2000);
    assert_eq!(stats.failed, 0);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn workers_are_re_executions_of_the_host_binary() {
    let pool = pool(2).await;
    let me = std::fs::read_link("/proc/self/exe").unwrap();
    let id = bounded("a job", pool.submit(WhoAmI)).await.unwrap();
    assert_ne!(id.pid, std::process::id(), "the job ran in the host");
    assert_eq!(id.ppid, std::process::id(), "the worker is not our child");
    assert_eq!(
        id.exe,
        me.display().to_string(),
        "the worker is another program"
    );
    assert_eq!(id.marker_env, None, "init() must remove the worker marker");
    assert!(pool.worker_pids().contains(&id.pid));
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn default_worker_count_is_available_parallelism() {
    let pool = ProcessPoolExecutor::builder().build().await.unwrap();
    let n = std::thread::available_parallelism().unwrap().get();
    assert_eq!(pool.workers(), n);
    eventually("all workers up", || pool.worker_pids().len() == n).await;
    assert_eq!(pool.stats().workers_alive, n);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn an_unregistered_task_fails_at_once_without_a_worker() {
    let pool = pool(1).await;
    let handle = pool.submit(Unregistered);
    assert!(handle.is_finished(), "the handle should resolve at submit");
    match handle.await {
        Err(Error::NotRegistered { type_name }) => {
            assert!(type_name.ends_with("Unregistered"), "{type_name}");
        }
        other => panic!("expected NotRegistered, got {other:?}"),
    }
    let msg = pool.submit(Unregistered).await.unwrap_err().to_string();
    assert!(msg.contains("procpool::register!"), "{msg}");
    assert_eq!(pool.stats().completed, 0);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn serialization_failures_fail_only_that_job_with_their_stage() {
    let pool = pool(1).await;
    let pid = bounded("a job", pool.submit(Pid)).await.unwrap();

    let e = pool.submit(FailsToSerialize).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Serialization {
                stage: SerdeStage::EncodeTask,
                ..
            }
        ),
        "{e:?}"
    );
    let e = bounded("a job", pool.submit(FailsToDeserialize))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Serialization {
                stage: SerdeStage::DecodeTask,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("FailsToDeserialize"), "{e}");
    let e = bounded("a job", pool.submit(BadOutput)).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Serialization {
                stage: SerdeStage::EncodeOutput,
                ..
            }
        ),
        "{e:?}"
    );
    let e = bounded("a job", pool.submit(UndecodableOutput))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Serialization {
                stage: SerdeStage::DecodeOutput,
                ..
            }
        ),
        "{e:?}"
    );
    // None of these is the worker's fault: it was not replaced.
    assert_eq!(bounded("a job", pool.submit(Pid)).await.unwrap(), pid);
    assert_eq!(pool.stats().respawns, 0);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn task_output_on_stdout_never_corrupts_the_channel() {
    let pool = pool(1).await;
    for i in 0..50 {
        assert_eq!(
            bounded("a noisy job", pool.submit(Noisy(i))).await.unwrap(),
            i + 1
        );
    }
    // Output on the channel would have broken the protocol and replaced the
    // worker.
    assert_eq!(pool.stats().respawns, 0);
    assert_eq!(pool.stats().failed, 0);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn large_payloads_round_trip() {
    let pool = pool(1).await;
    let data: Vec<u8> = (0..(8 << 20)).map(|i| (i % 251) as u8).collect();
    let back = bounded("an echo", pool.submit(Echo(data.clone())))
        .await
        .unwrap();
    assert_eq!(back, data);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn an_oversized_result_frame_is_a_protocol_error_and_the_worker_is_replaced() {
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .max_frame_size(64 * 1024)
        .build()
        .await
        .unwrap();
    let before = pool.worker_pids();
    // The worker refuses to send a frame over the limit: the job fails with
    // a clear error.
    let e = bounded("a job", pool.submit(Bytes(1 << 20)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Serialization {
                stage: SerdeStage::EncodeOutput,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("maximum frame size"), "{e}");
    // A task over the limit fails at submit.
    let e = pool.submit(Echo(vec![0; 1 << 20])).await.unwrap_err();
    assert!(matches!(e, Error::Protocol { .. }), "{e:?}");
    assert!(e.to_string().contains("maximum frame size"), "{e}");
    assert_eq!(bounded("a job", pool.submit(Square(3))).await.unwrap(), 9);
    assert_eq!(pool.worker_pids(), before);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn types_are_send_sync_clone_and_unpin() {
    fn send_sync_clone<T: Send + Sync + Clone + 'static>() {}
    fn send_unpin_future<T: Send + Unpin + std::future::Future>() {}
    fn error_bounds<T: std::error::Error + Send + Sync + 'static>() {}
    send_sync_clone::<ProcessPoolExecutor>();
    send_unpin_future::<JobHandle<u64>>();
    send_unpin_future::<JobHandle<Vec<String>>>();
    error_bounds::<Error>();
}

#[tokio::test]
async fn a_clone_of_the_pool_shares_it() {
    let pool = pool(1).await;
    let clone = pool.clone();
    assert_eq!(bounded("a job", clone.submit(Square(5))).await.unwrap(), 25);
    drop(clone);
    assert_eq!(bounded("a job", pool.submit(Square(6))).await.unwrap(), 36);
    assert_eq!(pool.stats().completed, 2);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn jobs_start_in_submission_order() {
    let pool = pool(1).await;
    let handles: Vec<_> = (0..200).map(|_| pool.submit(Ticket)).collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(bounded("a job", h).await.unwrap(), i as u64);
    }
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn no_job_waits_behind_a_busy_worker_while_another_is_idle() {
    let pool = pool(2).await;
    let long = pool.submit(Sleep(3000));
    eventually("the long job to start", || pool.stats().running == 1).await;
    let mut short_pids = std::collections::HashSet::new();
    for _ in 0..10 {
        short_pids.insert(
            bounded("a short job", pool.submit(Sleep(10)))
                .await
                .unwrap(),
        );
    }
    assert!(
        !long.is_finished(),
        "the short jobs took longer than the long one"
    );
    let long_pid = bounded("the long job", long).await.unwrap();
    assert_eq!(
        short_pids.len(),
        1,
        "the short jobs should all use the idle worker"
    );
    assert!(
        !short_pids.contains(&long_pid),
        "a short job waited behind the long one"
    );
    bounded("shutdown", pool.shutdown()).await;
}
