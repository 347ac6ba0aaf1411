//! The core's invariants, recounted from scratch (for the simulation and
//! the core's tests).

use super::{Core, JobState, Mode, Timer, WorkerId, WorkerState};
use crate::msg::JobId;

impl<P> Core<P> {
    /// Ids of the jobs in the queue, in order (for the simulation).
    pub(crate) fn queued_ids(&self) -> Vec<JobId> {
        self.queue.iter().copied().collect()
    }

    /// How many times job `id` started, if the core still has it.
    pub(crate) fn starts(&self, id: JobId) -> Option<u32> {
        self.jobs.get(&id).map(|j| j.starts)
    }

    /// Where job `id` is.
    pub(crate) fn job_state(&self, id: JobId) -> Option<JobState> {
        self.jobs.get(&id).map(|j| j.state)
    }

    /// Recounts everything and checks the invariants that tie the state
    /// together (for the simulation; O(jobs + workers)).
    #[cfg(test)]
    pub(crate) fn check(&self) -> Result<(), String> {
        let (mut prefetched, mut running) = (0, 0);
        for (&id, job) in &self.jobs {
            match job.state {
                JobState::Queued => {
                    if !self.queue.contains(&id) {
                        return Err(format!("{id} is queued but not in the queue"));
                    }
                }
                s => {
                    let w = s.worker().unwrap_or(WorkerId(u64::MAX));
                    let on = self.workers.get(&w).is_some_and(|x| x.jobs.contains(&id));
                    if !on {
                        return Err(format!("{id} is {s:?} but not on that worker"));
                    }
                    if matches!(s, JobState::Running(_)) {
                        running += 1;
                    } else {
                        prefetched += 1;
                    }
                }
            }
            if let Some((at, t)) = job.timer {
                if !self.timers.contains(&(at, t)) {
                    return Err(format!("{id}'s timer is not armed"));
                }
            }
        }
        if self.queue.len() + prefetched + running != self.jobs.len() {
            return Err("the queue holds jobs the core does not have".into());
        }
        if (prefetched, running) != (self.prefetched, self.running) {
            return Err(format!(
                "counted {prefetched} sent ahead and {running} running, kept {} and {}",
                self.prefetched, self.running
            ));
        }
        for (&w, worker) in &self.workers {
            let mut bytes = 0;
            let mut started = 0;
            for id in &worker.jobs {
                let job = self.jobs.get(id).ok_or(format!("{w} holds unknown {id}"))?;
                if job.state.worker() != Some(w) {
                    return Err(format!("{w} holds {id}, which is {:?}", job.state));
                }
                match job.state {
                    JobState::Running(_) => started += 1,
                    _ => bytes += job.size,
                }
            }
            let stopping = worker
                .jobs
                .iter()
                .filter(|id| {
                    self.jobs
                        .get(id)
                        .is_some_and(|j| matches!(j.timer, Some((_, Timer::Grace(_)))))
                })
                .count();
            if stopping != worker.stopping {
                return Err(format!(
                    "{w}: {stopping} jobs in grace, kept {}",
                    worker.stopping
                ));
            }
            if bytes != worker.prefetched_bytes {
                return Err(format!(
                    "{w}: {bytes} bytes ahead, kept {}",
                    worker.prefetched_bytes
                ));
            }
            if started > self.set.slots {
                return Err(format!(
                    "{w} runs {started} jobs in {} slots",
                    self.set.slots
                ));
            }
            if worker.started > worker.sent {
                return Err(format!("{w} started more jobs than it was sent"));
            }
            if let Some(max) = self.set.max_tasks_per_worker {
                if worker.sent > max {
                    return Err(format!(
                        "{w} was sent {} jobs, more than {max}",
                        worker.sent
                    ));
                }
            }
            if worker.state == WorkerState::Starting && !worker.jobs.is_empty() {
                return Err(format!("{w} has jobs while starting"));
            }
        }
        if !self.queue.is_empty() && self.mode != Mode::Stopping {
            if let Some(w) = self.free_worker() {
                return Err(format!("{w} has a free slot while jobs wait in the queue"));
            }
        }
        Ok(())
    }
}
