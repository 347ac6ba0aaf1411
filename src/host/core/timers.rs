//! Timers: a job's timeout and cancel grace period.

use std::time::Instant;

use super::jobs::dec;
use super::{Control, Core, JobState, Timer};
use crate::error::Error;
use crate::msg::JobId;

impl<P> Core<P> {
    pub(super) fn on_job_timeout(&mut self, id: JobId, now: Instant) {
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        let (JobState::Running(w), false, Some(timeout)) = (job.state, job.answered, job.timeout)
        else {
            return;
        };
        self.answer(id, Err(Error::TimedOut { timeout }));
        // The same path as a cancel: ask, then kill after the grace period.
        self.send(w, Control::Cancel(id));
        self.arm_grace(id, now);
    }

    pub(super) fn on_grace_over(&mut self, id: JobId) {
        if let Some(JobState::Running(w)) = self.jobs.get(&id).map(|j| j.state) {
            tracing::debug!(%id, "the job did not stop within the cancel grace period");
            self.kill(w);
        }
    }

    /// Gives running job `id` the cancel grace period to stop; meanwhile
    /// its worker takes no new job and gives back those sent ahead, so
    /// that a kill at the end of the grace period hits no job that started
    /// after it.
    pub(super) fn arm_grace(&mut self, id: JobId, now: Instant) {
        self.arm(id, now + self.set.cancel_grace, Timer::Grace);
        if let Some(w) = self.jobs.get(&id).and_then(|j| j.state.worker()) {
            self.revoke_all_on(w);
        }
    }

    /// Arms the job's timer, replacing the one it had.
    pub(super) fn arm(&mut self, id: JobId, at: Instant, timer: fn(JobId) -> Timer) {
        self.set_timer(id, Some((at, timer(id))));
    }

    /// Sets (or with `None` clears) job `id`'s timer: the one place a job's
    /// timer changes, keeping the timer set and its worker's count of jobs
    /// in their grace period in step.
    pub(super) fn set_timer(&mut self, id: JobId, new: Option<(Instant, Timer)>) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let old = std::mem::replace(&mut job.timer, new);
        let w = job.state.worker();
        let grace = |t: Option<(Instant, Timer)>| matches!(t, Some((_, Timer::Grace(_))));
        if let Some(key) = old {
            self.timers.remove(&key);
        }
        if let Some(key) = new {
            self.timers.insert(key);
        }
        if let Some(worker) = w.and_then(|w| self.workers.get_mut(&w)) {
            if grace(old) {
                worker.stopping = dec(worker.stopping, "a worker's jobs being stopped");
            }
            if grace(new) {
                worker.stopping += 1;
            }
        }
    }
}
