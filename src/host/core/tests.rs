//! Regression tests for the core's bookkeeping, one scenario each (the
//! simulation covers the same ground at random).

use std::time::{Duration, Instant};

use super::{Action, Control, Core, Input, JobState, NewJob, Settings, WorkerId};
use crate::error::{Error, ExitStatus};
use crate::msg::JobId;
use crate::slot::Encoded;

fn settings(workers: usize) -> Settings {
    Settings::for_tests(workers)
}

struct Harness {
    core: Core<()>,
    now: Instant,
    /// Actions taken from the core but not looked at yet.
    pending: Vec<Action<()>>,
}

impl Harness {
    /// A core whose workers all started.
    fn new(set: Settings) -> Self {
        let now = Instant::now();
        let mut h = Harness {
            core: Core::new(set, now),
            now,
            pending: Vec::new(),
        };
        for a in h.actions() {
            if let Action::Spawn(w) = a {
                h.input(Input::Spawned {
                    worker: w,
                    result: Ok(100 + w.0 as u32),
                });
            }
        }
        h.actions();
        h
    }

    fn input(&mut self, input: Input<()>) {
        self.core.handle(self.now, input);
        self.settle();
    }

    /// Takes the core's actions (which settles it) and checks it. An
    /// answer given now (`Resolve`) is taken and listed as a `Release`
    /// with its result and no worker, so tests look in one place.
    fn settle(&mut self) {
        while let Some(a) = self.core.poll_action() {
            let a = match a {
                Action::Resolve { job } => match self.core.take_answer(job) {
                    Some((_, result)) => Action::Release {
                        job,
                        worker: None,
                        result: Some(result),
                        payload: (),
                    },
                    None => continue,
                },
                other => other,
            };
            self.pending.push(a);
        }
        self.core.check().unwrap();
    }

    fn actions(&mut self) -> Vec<Action<()>> {
        self.settle();
        std::mem::take(&mut self.pending)
    }

    fn submit(&mut self, id: u64) {
        self.input(Input::Submit(NewJob {
            id: JobId(id),
            size: 100,
            timeout: None,
            retries: 0,
            payload: (),
        }));
    }

    fn done(&mut self, w: u64, id: u64) {
        self.input(Input::Finished {
            worker: WorkerId(w),
            job: JobId(id),
            result: Ok(Encoded {
                body: vec![],
                offset: 0,
            }),
            rss: None,
        });
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.core.handle_timeout(self.now);
        self.settle();
    }
}

/// The jobs whose handles got an error, and the error.
fn errors(actions: &[Action<()>]) -> Vec<(u64, Error)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Release {
                job,
                result: Some(Err(e)),
                ..
            } => Some((job.0, e.clone())),
            _ => None,
        })
        .collect()
}

fn sent(actions: &[Action<()>]) -> Vec<(u64, u64, bool)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SendJob {
                worker, job, ahead, ..
            } => Some((worker.0, job.0, *ahead)),
            _ => None,
        })
        .collect()
}

/// Defect 4: a cancel that found a job still waiting inside its worker,
/// after the host counted it as started, is answered `Revoked`; the
/// running count must come back to zero.
#[test]
fn a_revoked_answer_to_a_cancel_of_a_started_job_leaves_no_running_job() {
    let mut h = Harness::new(settings(1));
    h.submit(1);
    assert_eq!(sent(&h.actions()), vec![(0, 1, false)]);
    assert_eq!(h.core.stats().running, 1);
    h.input(Input::Cancel(JobId(1)));
    h.actions();
    h.input(Input::Revoked {
        worker: WorkerId(0),
        job: JobId(1),
    });
    let released = h
        .actions()
        .iter()
        .any(|a| matches!(a, Action::Release { job: JobId(1), .. }));
    assert!(released);
    assert_eq!(h.core.stats().running, 0);
    assert_eq!(h.core.stats().queued, 0);
    // The grace timer went with the job: nothing is due.
    assert_eq!(h.core.poll_timeout(), None);
}

/// Defect 6: a finished job leaves no timer behind.
#[test]
fn a_finished_job_leaves_no_timer() {
    let mut set = settings(1);
    set.job_timeout = Some(Duration::from_secs(3600));
    let mut h = Harness::new(set);
    for id in 1..=1000 {
        h.submit(id);
        h.actions();
        assert!(h.core.poll_timeout().is_some());
        h.done(0, id);
        h.actions();
        assert_eq!(h.core.poll_timeout(), None, "job {id} left a timer");
    }
}

/// Defect 7: jobs taken back from a busy worker start in submission order,
/// whether it gives them back or dies with them.
#[test]
fn jobs_given_back_start_in_submission_order() {
    for dies in [false, true] {
        let mut set = settings(2);
        set.prefetch = 8;
        let mut h = Harness::new(set);
        for id in 1..=8 {
            h.submit(id);
        }
        let first = sent(&h.actions());
        assert_eq!(first[..2], [(0, 1, false), (1, 2, false)]);
        let on = |w: u64| -> Vec<u64> {
            first
                .iter()
                .filter(|s| s.0 == w && s.2)
                .map(|s| s.1)
                .collect()
        };
        let (ahead0, ahead1) = (on(0), on(1));
        // Worker 1 runs everything it has; then it is idle with nothing
        // queued, so worker 0's jobs sent ahead are asked back.
        h.done(1, 2);
        for &id in &ahead1 {
            h.input(Input::Started {
                worker: WorkerId(1),
                job: JobId(id),
            });
            h.done(1, id);
        }
        let revokes: Vec<u64> = h
            .actions()
            .iter()
            .filter_map(|a| match a {
                Action::Send {
                    msg: Control::Revoke(id),
                    ..
                } => Some(id.0),
                _ => None,
            })
            .collect();
        assert_eq!(revokes, ahead0);
        let mut order = Vec::new();
        if dies {
            h.input(Input::Exited {
                worker: WorkerId(0),
                status: ExitStatus::Signal(9),
                error: None,
                tail: String::new(),
            });
            order.extend(sent(&h.actions()).into_iter().map(|(_, id, _)| id));
        } else {
            for &id in &revokes {
                h.input(Input::Revoked {
                    worker: WorkerId(0),
                    job: JobId(id),
                });
                order.extend(sent(&h.actions()).into_iter().map(|(_, id, _)| id));
            }
        }
        assert_eq!(order, ahead0, "given back (worker died: {dies})");
    }
}

/// Defect 1: a job whose frame could not be handed to a leaving worker goes
/// back to the queue intact, and the worker takes no more jobs.
#[test]
fn a_failed_send_requeues_the_job_and_the_worker_takes_no_more() {
    let mut set = settings(2);
    set.slots = 4;
    let mut h = Harness::new(set);
    h.submit(1);
    assert_eq!(sent(&h.actions()), vec![(0, 1, false)]);
    h.input(Input::SendFailed {
        worker: WorkerId(0),
        job: JobId(1),
    });
    // Requeued and sent at once to the other worker.
    assert_eq!(sent(&h.actions()), vec![(1, 1, false)]);
    for id in 2..=6 {
        h.submit(id);
        for (w, _, _) in sent(&h.actions()) {
            assert_eq!(w, 1, "a leaving worker took a job");
        }
    }
}

/// Defect 1: a worker being recycled for its memory takes no new jobs.
#[test]
fn a_worker_recycled_for_memory_takes_no_new_job() {
    let mut set = settings(1);
    set.slots = 4;
    set.max_worker_rss = Some(1000);
    let mut h = Harness::new(set);
    h.submit(1);
    h.submit(2);
    h.actions();
    h.input(Input::Finished {
        worker: WorkerId(0),
        job: JobId(1),
        result: Ok(Encoded {
            body: vec![],
            offset: 0,
        }),
        rss: Some(5000),
    });
    let acts = h.actions();
    assert!(acts.iter().any(|a| matches!(a, Action::Spawn(_))));
    h.submit(3);
    assert!(
        sent(&h.actions()).is_empty(),
        "the retiring worker took job 3"
    );
    assert_eq!(h.core.stats().recycled, 1);
}

/// Defects 2 and 3: while workers cannot start, jobs fail fast (also jobs
/// given back by a worker that exits later); once one starts, the pool
/// serves again.
#[test]
fn start_up_failures_fail_jobs_fast_and_the_pool_recovers() {
    let mut set = settings(1);
    set.prefetch = 4;
    set.max_startup_failures = 2;
    let mut h = Harness::new(set);
    for id in 1..=3 {
        h.submit(id);
    }
    h.actions();
    // Worker 0 dies with job 1 running and jobs 2, 3 sent ahead.
    h.input(Input::Exited {
        worker: WorkerId(0),
        status: ExitStatus::Signal(9),
        error: None,
        tail: String::new(),
    });
    let mut next = 1;
    let mut failed = Vec::new();
    for _ in 0..2 {
        let acts = h.actions();
        failed.extend(errors(&acts));
        let spawn = acts
            .iter()
            .find_map(|a| match a {
                Action::Spawn(w) => Some(*w),
                _ => None,
            })
            .expect("a new start");
        next = spawn.0;
        h.input(Input::Spawned {
            worker: spawn,
            result: Err(Error::Spawn {
                message: "down".into(),
            }),
        });
        h.advance(Duration::from_millis(500));
    }
    failed.extend(errors(&h.actions()));
    for (job, e) in &failed {
        assert!(matches!(e, Error::Spawn { .. }) || *job == 1, "{e}");
    }
    let mut ids: Vec<u64> = failed.iter().map(|(j, _)| *j).collect();
    ids.sort();
    assert_eq!(ids, vec![1, 2, 3], "job 1 died, 2 and 3 failed fast");
    // New jobs fail at once.
    h.submit(4);
    let e = errors(&h.actions());
    assert!(matches!(e.as_slice(), [(4, Error::Spawn { .. })]), "{e:?}");
    // Start-ups work again.
    let w = WorkerId(next + 1);
    h.input(Input::Spawned {
        worker: w,
        result: Ok(7),
    });
    h.submit(5);
    assert_eq!(sent(&h.actions()), vec![(w.0, 5, false)]);
}

/// Defect 8: `prefetch(usize::MAX)` does not overflow.
#[test]
fn a_huge_prefetch_saturates() {
    let mut set = settings(1);
    set.prefetch = usize::MAX;
    set.slots = 3;
    let mut h = Harness::new(set);
    for id in 1..=50 {
        h.submit(id);
    }
    assert_eq!(sent(&h.actions()).len(), 50);
    assert_eq!(
        h.core.job_state(JobId(50)),
        Some(JobState::Prefetched(WorkerId(0)))
    );
}
