//! Jobs: the one transition function, and what moves a job.

use std::time::Instant;

use super::{Action, Control, Core, Job, JobState, Mode, NewJob, Timer, WorkerId, WorkerState};
use crate::error::Error;
use crate::msg::JobId;
use crate::slot::RawResult;

impl<P> Core<P> {
    /// Moves job `id` to `to` (`None`: the core forgets it and returns the
    /// job), keeping the queue, the workers' job lists, the byte budgets
    /// and the counters in step. Leaving `Running` disarms the job's timer.
    /// With [`restate`](Self::restate) (which keeps a job on its worker),
    /// the only place a job's state changes.
    pub(super) fn transition(&mut self, id: JobId, to: Option<JobState>) -> Option<Job<P>> {
        let Some(job) = self.jobs.get_mut(&id) else {
            debug_assert!(false, "transition of unknown {id}");
            return None;
        };
        let (from, size, timed) = (job.state, job.size, job.timer.is_some());
        if timed && (matches!(from, JobState::Running(_)) || to.is_none()) {
            self.set_timer(id, None);
        }
        if let (Some(to), Some(job)) = (to, self.jobs.get_mut(&id)) {
            job.state = to;
        }
        // Leave `from`.
        match from {
            JobState::Queued => {
                let was = self.queue.remove(&id);
                debug_assert!(was, "{id} was not in the queue");
            }
            JobState::Prefetched(w) | JobState::Revoking(w) => {
                self.prefetched = dec(self.prefetched, "jobs sent ahead");
                if let Some(worker) = self.workers.get_mut(&w) {
                    worker.prefetched_bytes =
                        dec_by(worker.prefetched_bytes, size, "a worker's bytes sent ahead");
                    remove(&mut worker.jobs, id);
                }
            }
            JobState::Running(w) => {
                self.running = dec(self.running, "running jobs");
                if let Some(worker) = self.workers.get_mut(&w) {
                    remove(&mut worker.jobs, id);
                }
            }
        }
        // Enter `to`.
        let mut removed = None;
        match to {
            None => {
                removed = self.jobs.remove(&id);
            }
            Some(JobState::Queued) => {
                let new = self.queue.insert(id);
                debug_assert!(new, "{id} was queued twice");
            }
            Some(JobState::Prefetched(w) | JobState::Revoking(w)) => {
                self.prefetched += 1;
                if let Some(worker) = self.workers.get_mut(&w) {
                    worker.prefetched_bytes += size;
                    worker.jobs.push_back(id);
                }
            }
            Some(JobState::Running(w)) => {
                self.running += 1;
                if let Some(worker) = self.workers.get_mut(&w) {
                    worker.jobs.push_back(id);
                    worker.started += 1;
                }
            }
        }
        debug_assert!(
            from.worker().is_none() || to.and_then(JobState::worker).is_none(),
            "{id} moved between workers without the queue"
        );
        removed
    }

    /// Changes the state of a job that stays on its worker (prefetched to
    /// revoking, or to running), keeping its place in the worker's list.
    pub(super) fn restate(&mut self, id: JobId, to: JobState) {
        let Some(job) = self.jobs.get_mut(&id) else {
            debug_assert!(false, "restate of unknown {id}");
            return;
        };
        let from = job.state;
        debug_assert_eq!(from.worker(), to.worker(), "{id} changes worker");
        debug_assert!(from.is_prefetched(), "{id} restated from {from:?}");
        job.state = to;
        let size = job.size;
        if let JobState::Running(w) = to {
            self.prefetched = dec(self.prefetched, "jobs sent ahead");
            self.running += 1;
            if let Some(worker) = self.workers.get_mut(&w) {
                worker.prefetched_bytes =
                    dec_by(worker.prefetched_bytes, size, "a worker's bytes sent ahead");
                worker.started += 1;
            }
        }
    }

    /// Forgets a job, resolving it with `result` unless its handle has its
    /// outcome already.
    pub(super) fn finish(&mut self, id: JobId, result: Option<RawResult>) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let worker = job.state.worker();
        // An answer given but not yet taken goes with the release.
        let result = job
            .answer
            .take()
            .or(if job.answered { None } else { result });
        job.answered = true;
        if let Some(job) = self.transition(id, None) {
            self.push(Action::Release {
                job: id,
                worker,
                result,
                payload: job.payload,
            });
        }
    }

    /// What the handle of job `id` is to get now (see
    /// [`Action::Resolve`]), with what is kept for the job.
    pub(crate) fn take_answer(&mut self, id: JobId) -> Option<(&P, RawResult)> {
        let job = self.jobs.get_mut(&id)?;
        let result = job.answer.take()?;
        Some((&job.payload, result))
    }

    /// Gives the handle its result now; the job itself may still be
    /// stopping.
    pub(super) fn answer(&mut self, id: JobId, result: RawResult) {
        if let Some(job) = self.jobs.get_mut(&id) {
            if !job.answered {
                job.answered = true;
                job.answer = Some(result);
                self.push(Action::Resolve { job: id });
            }
        }
    }

    pub(super) fn on_submit(&mut self, new: NewJob<P>) {
        let refused = match (&self.mode, &self.startup_error) {
            (Mode::Running, None) => None,
            (Mode::Running, Some(e)) => Some(e.clone()),
            _ => Some(Error::Shutdown),
        };
        if let Some(e) = refused {
            self.push(Action::Release {
                job: new.id,
                worker: None,
                result: Some(Err(e)),
                payload: new.payload,
            });
            return;
        }
        let job = Job {
            state: JobState::Queued,
            answered: false,
            retries_left: new.retries,
            timeout: new.timeout.or(self.set.job_timeout),
            size: new.size,
            timer: None,
            starts: 0,
            answer: None,
            payload: new.payload,
        };
        let before = self.jobs.insert(new.id, job);
        debug_assert!(before.is_none(), "{} submitted twice", new.id);
        self.queue.insert(new.id);
    }

    pub(super) fn on_cancel(&mut self, id: JobId, now: Instant) {
        let Some(job) = self.jobs.get_mut(&id) else {
            // Finished (or never accepted) already.
            return;
        };
        let first = !job.answered;
        job.answered = true;
        match job.state {
            JobState::Queued => self.finish(id, None),
            JobState::Prefetched(w) => {
                // The worker gives it back, or (if it started meanwhile)
                // flags it; `on_started` then starts the grace period.
                self.restate(id, JobState::Revoking(w));
                self.send(w, Control::Cancel(id));
            }
            JobState::Revoking(w) => self.send(w, Control::Cancel(id)),
            JobState::Running(w) => {
                if first {
                    self.send(w, Control::Cancel(id));
                    self.arm_grace(id, now);
                }
            }
        }
    }

    /// Sends job `id` from the queue to `w`: to a free slot (it starts), or
    /// `ahead` to wait inside the worker.
    pub(super) fn send_job(&mut self, w: WorkerId, id: JobId, ahead: bool, now: Instant) {
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        // Keep the frame while it may have to be sent again.
        let keep = ahead || job.retries_left > 0;
        let to = if ahead {
            JobState::Prefetched(w)
        } else {
            JobState::Running(w)
        };
        self.transition(id, Some(to));
        if let Some(worker) = self.workers.get_mut(&w) {
            worker.sent += 1;
        }
        self.push(Action::SendJob {
            worker: w,
            job: id,
            ahead,
            keep,
        });
        if !ahead {
            self.started(id, now);
        }
    }

    /// Bookkeeping once job `id` is known to have started.
    fn started(&mut self, id: JobId, now: Instant) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        job.starts += 1;
        if job.answered {
            // Cancelled on its way: it is flagged in the worker; it gets
            // the grace period to stop.
            self.arm_grace(id, now);
        } else if let Some(t) = job.timeout {
            self.arm(id, now + t, Timer::Timeout);
        }
    }

    pub(super) fn on_started(&mut self, w: WorkerId, id: JobId, now: Instant) {
        let state = self.jobs.get(&id).map(|j| j.state);
        match state {
            Some(JobState::Prefetched(x) | JobState::Revoking(x)) if x == w => {
                self.restate(id, JobState::Running(w));
                let keep = self.jobs.get(&id).is_some_and(|j| j.retries_left > 0);
                self.push(Action::Started {
                    worker: w,
                    job: id,
                    keep,
                });
                self.started(id, now);
            }
            Some(JobState::Running(x)) if x == w => {
                self.violation(w, format!("the worker started {id} twice"));
            }
            _ => self.violation(w, format!("the worker started {id}, which it was not sent")),
        }
    }

    pub(super) fn on_revoked(&mut self, w: WorkerId, id: JobId) {
        let state = self.jobs.get(&id).map(|j| j.state);
        if state.and_then(JobState::worker) != Some(w) {
            self.violation(
                w,
                format!("the worker gave back {id}, which it was not sent"),
            );
            return;
        }
        // It never ran there (a job sent to a free slot is given back too
        // when a cancel finds it still waiting in the worker).
        self.unsend(w, id);
        self.requeue(id);
    }

    /// Undoes the counts of sending job `id` to `w`: the job never ran
    /// there.
    fn unsend(&mut self, w: WorkerId, id: JobId) {
        let was_running = matches!(
            self.jobs.get(&id).map(|j| j.state),
            Some(JobState::Running(_))
        );
        if let (true, Some(job)) = (was_running, self.jobs.get_mut(&id)) {
            job.starts = dec(job.starts, "a job's starts");
        }
        if let Some(worker) = self.workers.get_mut(&w) {
            worker.sent = dec(worker.sent, "a worker's jobs sent");
            if was_running {
                worker.started = dec(worker.started, "a worker's jobs started");
            }
        }
    }

    /// Puts a job that did not run back in the queue, or forgets it if its
    /// handle has its outcome already.
    fn requeue(&mut self, id: JobId) {
        if self.jobs.get(&id).is_none_or(|j| j.answered) {
            self.finish(id, None);
        } else {
            self.transition(id, Some(JobState::Queued));
        }
    }

    pub(super) fn on_finished(
        &mut self,
        w: WorkerId,
        id: JobId,
        result: RawResult,
        rss: Option<u64>,
        now: Instant,
    ) {
        let state = self.jobs.get(&id).map(|j| j.state);
        if state != Some(JobState::Running(w)) {
            let message = format!("the worker reported on {id}, which it was not running");
            self.violation(w, message);
            return;
        }
        self.finish(id, Some(result));
        self.after_job(w, rss, now);
    }

    pub(super) fn on_send_failed(&mut self, w: WorkerId, id: JobId) {
        if self.jobs.get(&id).and_then(|j| j.state.worker()) != Some(w) {
            return;
        }
        // The frame never reached the worker: undo the send. Its link is
        // gone, so it is leaving; its exit follows.
        self.unsend(w, id);
        if let Some(worker) = self.workers.get_mut(&w) {
            worker.state = WorkerState::Leaving;
        }
        self.requeue(id);
    }

    /// Fails every job and kills every worker.
    pub(super) fn stop_all(&mut self) {
        self.mode = Mode::Stopping;
        let ids: Vec<JobId> = self.jobs.keys().copied().collect();
        for id in ids {
            self.answer(id, Err(Error::Shutdown));
        }
        let queued: Vec<JobId> = self.queue.iter().copied().collect();
        for id in queued {
            self.finish(id, None);
        }
        let ws: Vec<WorkerId> = self.workers.keys().copied().collect();
        for w in ws {
            self.kill(w);
        }
        let timed: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.timer.is_some())
            .map(|(&id, _)| id)
            .collect();
        for id in timed {
            self.set_timer(id, None);
        }
        self.spawn_after = None;
    }

    /// While workers cannot start and none serves, queued jobs fail with
    /// the start-up error instead of waiting.
    pub(super) fn fail_queued_if_broken(&mut self) {
        let Some(e) = self.startup_error.clone() else {
            return;
        };
        while let Some(&id) = self.queue.first() {
            self.finish(id, Some(Err(e.clone())));
        }
    }
}

fn remove(list: &mut std::collections::VecDeque<JobId>, id: JobId) {
    match list.iter().position(|&j| j == id) {
        Some(at) => {
            list.remove(at);
        }
        None => debug_assert!(false, "{id} was not on its worker"),
    }
}

/// `n - 1` for a bookkeeping count, which never goes below zero: checked
/// with `debug_assert!` (the simulation runs with them); a release build
/// keeps serving with zero.
pub(super) fn dec<T: Count>(n: T, what: &str) -> T {
    dec_by(n, T::ONE, what)
}

/// `n - by`, checked as [`dec`] is.
fn dec_by<T: Count>(n: T, by: T, what: &str) -> T {
    let r = n.minus(by);
    debug_assert!(r.is_some(), "{what} went below zero");
    r.unwrap_or(T::ZERO)
}

pub(super) trait Count: Copy {
    const ZERO: Self;
    const ONE: Self;
    fn minus(self, other: Self) -> Option<Self>;
}

macro_rules! count {
    ($($t:ty),*) => {$(
        impl Count for $t {
            const ZERO: Self = 0;
            const ONE: Self = 1;
            fn minus(self, other: Self) -> Option<Self> {
                self.checked_sub(other)
            }
        }
    )*};
}
count!(usize, u32, u64);
