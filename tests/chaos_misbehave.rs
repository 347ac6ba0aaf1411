//! Chaos from inside: jobs that panic, abort, segfault, exit, spin forever,
//! flood their output, or sabotage the worker's protocol channel, mixed
//! with good jobs in one run. Good jobs all succeed; every bad job gets an
//! error that says what happened; the pool keeps its size and serves.

mod support;

#[path = "support/chaos.rs"]
mod chaos;
#[path = "support/hostile.rs"]
mod hostile;
#[path = "support/procfs.rs"]
mod procfs;
#[path = "support/tasks.rs"]
mod tasks;

use std::time::Duration;

use chaos::*;
use hostile::*;
use procfs::*;
use procpool::{Error, ExitStatus, JobHandle, JobOptions};
use support::*;
use tasks::*;

procpool::init_before_main!();

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bad {
    Panic,
    Abort,
    Segfault,
    Exit3,
    SpinForever,
    Flood,
    Scribble(Garbage),
    CloseChannel(Channel),
}

const BAD: &[Bad] = &[
    Bad::Panic,
    Bad::Abort,
    Bad::Segfault,
    Bad::Exit3,
    Bad::SpinForever,
    Bad::Flood,
    Bad::Scribble(Garbage::Oversized),
    Bad::Scribble(Garbage::BadBody),
    Bad::Scribble(Garbage::Forged),
    Bad::Scribble(Garbage::Stall),
    Bad::CloseChannel(Channel::Both),
    Bad::CloseChannel(Channel::Output),
];

const SPIN_TIMEOUT: Duration = Duration::from_millis(800);
const STALL_TIMEOUT: Duration = Duration::from_millis(1500);
const FLOOD_MIB: u32 = 3;

enum Job {
    Good(u64),
    Bad(Bad),
}

enum Handle {
    Good(u64, JobHandle<u64>),
    Unit(Bad, JobHandle<()>),
    Count(Bad, JobHandle<u32>),
}

fn submit(pool: &procpool::ProcessPoolExecutor, job: &Job) -> Handle {
    match *job {
        Job::Good(n) => Handle::Good(n, pool.submit(Square(n))),
        Job::Bad(b) => match b {
            Bad::Panic => Handle::Unit(b, pool.submit(Panic("chaos panic".into()))),
            Bad::Abort => Handle::Unit(b, pool.submit(Die(Death::Abort))),
            Bad::Segfault => Handle::Unit(b, pool.submit(Die(Death::Segfault))),
            Bad::Exit3 => Handle::Unit(b, pool.submit(Die(Death::Exit(3)))),
            Bad::SpinForever => Handle::Unit(
                b,
                pool.submit_with(SpinForever, JobOptions::new().timeout(SPIN_TIMEOUT)),
            ),
            Bad::Flood => Handle::Count(b, pool.submit(Flood(FLOOD_MIB))),
            Bad::Scribble(g) => {
                let opts = if g == Garbage::Stall {
                    JobOptions::new().timeout(STALL_TIMEOUT)
                } else {
                    JobOptions::new()
                };
                Handle::Count(b, pool.submit_with(Scribble(g), opts))
            }
            Bad::CloseChannel(c) => Handle::Count(b, pool.submit(CloseChannel(c))),
        },
    }
}

/// Checks that `bad`'s outcome is the error that says what it did.
fn check_bad(bad: Bad, outcome: Result<Option<u32>, Error>) {
    let died = |e: &Error, want: ExitStatus, marker: &str| match e {
        Error::WorkerDied {
            status,
            stderr_tail,
            ..
        } => {
            assert_eq!(*status, want, "{bad:?}");
            assert!(
                stderr_tail.contains(marker),
                "{bad:?}: tail {stderr_tail:?}"
            );
        }
        other => panic!("{bad:?}: expected WorkerDied, got {other:?}"),
    };
    let protocol = |e: &Error, needle: &str| match e {
        Error::Protocol { message } => {
            assert!(message.contains(needle), "{bad:?}: {message}")
        }
        other => panic!("{bad:?}: expected a Protocol error, got {other:?}"),
    };
    match (bad, outcome) {
        (Bad::Flood, Ok(Some(n))) => assert_eq!(n, FLOOD_MIB + 1),
        (Bad::Flood, other) => panic!("a flood of output must not fail the job: {other:?}"),
        (_, Ok(v)) => panic!("{bad:?} succeeded with {v:?}"),
        (Bad::Panic, Err(e)) => assert!(
            matches!(&e, Error::Panicked { message, location: Some(_) } if message == "chaos panic"),
            "{e:?}"
        ),
        (Bad::Abort, Err(e)) => died(
            &e,
            ExitStatus::Signal(libc::SIGABRT),
            "about to die by Abort",
        ),
        (Bad::Segfault, Err(e)) => died(
            &e,
            ExitStatus::Signal(libc::SIGSEGV),
            "about to die by Segfault",
        ),
        (Bad::Exit3, Err(e)) => died(&e, ExitStatus::Code(3), "about to die by Exit(3)"),
        (Bad::SpinForever, Err(e)) => assert_eq!(
            e,
            Error::TimedOut {
                timeout: SPIN_TIMEOUT
            }
        ),
        (Bad::Scribble(Garbage::Oversized), Err(e)) => protocol(&e, "maximum frame size"),
        (Bad::Scribble(Garbage::BadBody), Err(e)) => protocol(&e, "unknown kind"),
        (Bad::Scribble(Garbage::Forged), Err(e)) => protocol(&e, "which it was not running"),
        // The job's own result frame is swallowed by the fake length
        // prefix: nothing can arrive; the timeout ends it, or the end of
        // the stream when the worker dies first (a job sent ahead to it may
        // kill it, and the truncated fake frame then ends the channel).
        (Bad::Scribble(Garbage::Stall), Err(e)) => assert!(
            matches!(
                e,
                Error::TimedOut { .. } | Error::WorkerDied { .. } | Error::Protocol { .. }
            ),
            "{bad:?}: {e:?}"
        ),
        (Bad::CloseChannel(_), Err(e)) => match e {
            // Killed by the pool when its output ended; or exited by itself
            // when it could not write its result (104) or read from the
            // host (102, if its reader thread was not already blocked in a
            // read of the closed input); or, in debug builds, aborted by
            // std's I/O-safety check when the worker dropped its `File` for
            // a descriptor the job had closed.
            Error::WorkerDied {
                status,
                stderr_tail,
                ..
            } => assert!(
                matches!(
                    status,
                    ExitStatus::Signal(libc::SIGKILL)
                        | ExitStatus::Code(104)
                        | ExitStatus::Code(102)
                        | ExitStatus::Signal(libc::SIGABRT)
                ),
                "{bad:?}: {status:?}, tail {stderr_tail:?}"
            ),
            other => panic!("{bad:?}: expected WorkerDied, got {other:?}"),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_jobs_succeed_among_hostile_ones() {
    const GOOD: u64 = 400;
    const EACH_BAD: usize = 2;
    let seed = chaos_seed("good_jobs_succeed_among_hostile_ones");
    // No jobs sent ahead: a job that forges or truncates frames on the
    // protocol channel voids what the host knows about that worker, so a
    // job sent ahead to it could fail in the saboteur's place. Without
    // prefetch each bad job's error is exactly its own.
    let pool = chaos_builder(2).prefetch(0).build().await.unwrap();

    // The premise of the sabotage jobs: a job really can find the channel.
    let fds = bounded("fd listing", pool.submit(ListProtocolFds))
        .await
        .unwrap();
    assert_eq!(
        fds.iter().filter(|(_, w)| *w).count(),
        1,
        "one writable protocol pipe expected: {fds:?}"
    );
    assert_eq!(fds.len(), 2, "input and output pipes expected: {fds:?}");

    let mut jobs: Vec<Job> = (0..GOOD).map(Job::Good).collect();
    for _ in 0..EACH_BAD {
        jobs.extend(BAD.iter().map(|&b| Job::Bad(b)));
    }
    XorShift::new(seed).shuffle(&mut jobs);
    let handles: Vec<Handle> = jobs.iter().map(|j| submit(&pool, j)).collect();

    let mut bad_seen = 0;
    for h in handles {
        match h {
            Handle::Good(n, h) => assert_eq!(
                bounded("a good job", h)
                    .await
                    .unwrap_or_else(|e| panic!("good job {n} failed among hostile ones: {e:?}")),
                n * n
            ),
            Handle::Unit(b, h) => {
                check_bad(b, bounded("a bad job", h).await.map(|()| None));
                bad_seen += 1;
            }
            Handle::Count(b, h) => {
                check_bad(b, bounded("a bad job", h).await.map(Some));
                bad_seen += 1;
            }
        }
    }
    assert_eq!(bad_seen, BAD.len() * EACH_BAD);

    // A job resolves before the pool has reaped the worker it killed:
    // wait for the last exit to be processed and the last replacement.
    eventually("the pool to settle at full size", || {
        let s = pool.stats();
        s.running == 0 && s.workers_alive == 2 && pool.worker_pids().len() == 2
    })
    .await;
    let stats = pool.stats();
    eprintln!("{stats:?}");
    let expected_failures = (BAD.len() - 1) * EACH_BAD; // all but the flood
    assert_eq!(stats.completed, GOOD + EACH_BAD as u64 + 1, "{stats:?}"); // + flood + fd listing
    assert_eq!(stats.failed, expected_failures as u64, "{stats:?}");
    // Most bad jobs cost a worker. (Not exactly one each: a job that
    // corrupts the channel can take a job sent ahead to it down too.)
    assert!(
        stats.respawns >= ((BAD.len() - 2) * EACH_BAD / 2) as u64,
        "{stats:?}"
    );
    let mut seen = std::collections::HashSet::new();
    let after: Vec<_> = (0..20).map(|_| pool.submit(Sleep(20))).collect();
    for h in after {
        seen.insert(bounded("a job after", h).await.unwrap());
    }
    assert_eq!(seen.len(), 2, "both workers should serve");
    let pids = pool.worker_pids();
    bounded("shutdown", pool.shutdown()).await;
    for pid in pids {
        assert!(!process_alive(pid));
    }
    figures(
        "good_jobs_succeed_among_hostile_ones",
        GOOD + bad_seen as u64 + 21,
        bad_seen as u64,
    );
}

/// Closing the worker's *input* does not stop the job in hand (its result
/// goes out on the intact output), but the worker can no longer read: the
/// job (or one dispatched to that worker right after it) may fail with
/// `WorkerDied`. Every job still resolves, no more than one job after the
/// saboteur is hit, and the pool recovers.
#[tokio::test]
async fn a_job_that_closes_the_workers_input() {
    let pool = chaos_pool(1).await;
    let h = pool.submit(CloseChannel(Channel::Input));
    let next: Vec<_> = (0..5u64).map(|n| pool.submit(Square(n))).collect();
    match bounded("the saboteur", h).await {
        Ok(closed) => assert_eq!(closed, 1),
        Err(Error::WorkerDied { .. }) => {}
        Err(e) => panic!("expected Ok or WorkerDied, got {e:?}"),
    }
    // The worker keeps reading what it had buffered, then fails to read:
    // at most one job (the first sent after that point) is hit.
    let mut victims = 0;
    for (n, h) in (0..5u64).zip(next) {
        match bounded("a job after the saboteur", h).await {
            Ok(v) => assert_eq!(v, n * n),
            Err(Error::WorkerDied { stderr_tail, .. }) => {
                eprintln!("victim: {stderr_tail}");
                victims += 1;
            }
            Err(e) => panic!("expected Ok or WorkerDied, got {e:?}"),
        }
    }
    for n in 0..10u64 {
        match bounded("a later job", pool.submit(Square(n))).await {
            Ok(v) => assert_eq!(v, n * n),
            Err(Error::WorkerDied { stderr_tail, .. }) => {
                eprintln!("victim: {stderr_tail}");
                victims += 1;
            }
            Err(e) => panic!("expected Ok or WorkerDied, got {e:?}"),
        }
    }
    assert!(victims <= 1, "{victims} jobs were hit by one sabotage");
    assert_eq!(
        bounded("a last job", pool.submit(Square(7))).await.unwrap(),
        49
    );
    bounded("shutdown", pool.shutdown()).await;
    figures("a_job_that_closes_the_workers_input", 16, 1);
}

/// Megabytes of output with forwarding on (the default): every line goes
/// through the host's stderr, and the job still returns.
#[tokio::test]
async fn a_flood_of_output_with_forwarding_on() {
    let pool = chaos_builder(1)
        .forward_worker_output(true)
        .build()
        .await
        .unwrap();
    let floods: Vec<_> = (0..2).map(|_| pool.submit(Flood(2))).collect();
    let good: Vec<_> = (0..50u64).map(|n| pool.submit(Square(n))).collect();
    for f in floods {
        assert_eq!(bounded("a flood", f).await.unwrap(), 3);
    }
    for (n, h) in (0..50u64).zip(good) {
        assert_eq!(bounded("a job", h).await.unwrap(), n * n);
    }
    assert_eq!(pool.stats().respawns, 0);
    bounded("shutdown", pool.shutdown()).await;
    figures("a_flood_of_output_with_forwarding_on", 52, 2);
}
