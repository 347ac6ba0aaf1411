//! Dispatch: free slots first, then jobs sent ahead, then revokes.

use std::time::Instant;

use super::{Control, Core, JobState, Mode, Worker, WorkerId, WorkerState};

/// Small jobs may wait inside a worker up to this many bytes in all.
pub(super) const AHEAD_BYTES: usize = 1 << 20;
/// A single job up to this size may always wait inside a worker.
pub(super) const AHEAD_ONE_BYTES: usize = 16 << 20;

impl Worker {
    /// Whether it has been sent all the jobs `max_tasks_per_worker` allows.
    pub(super) fn spent(&self, max_tasks: Option<u64>) -> bool {
        max_tasks.is_some_and(|n| self.sent >= n)
    }

    /// Whether it has room for a job, in a free slot (`depth == slots`) or
    /// sent ahead (`depth` = slots + prefetch); see also [`Core::takes`].
    fn has_room(&self, depth: usize, max_tasks: Option<u64>) -> bool {
        self.state == WorkerState::Serving && self.jobs.len() < depth && !self.spent(max_tasks)
    }

    /// Whether a job of `size` bytes may wait inside it: one job of any
    /// size up to [`AHEAD_ONE_BYTES`], or small ones up to
    /// [`AHEAD_BYTES`] in all.
    fn fits(&self, size: usize) -> bool {
        self.prefetched_bytes.saturating_add(size) <= AHEAD_BYTES
            || (self.prefetched_bytes == 0 && size <= AHEAD_ONE_BYTES)
    }
}

impl<P> Core<P> {
    /// Whether worker `w` takes a job now: it has room, and none of its
    /// jobs is being stopped (a cancelled or timed-out job in its grace
    /// period may end in a kill, which must not hit a job sent since).
    pub(super) fn takes(&self, w: &Worker, depth: usize) -> bool {
        w.has_room(depth, self.set.max_tasks_per_worker) && w.stopping == 0
    }

    /// Sends queued jobs: to free slots, then ahead to busy workers; and
    /// when a worker is idle with nothing queued, asks for the jobs waiting
    /// inside busy workers back.
    pub(super) fn dispatch(&mut self, now: Instant) {
        if self.mode == Mode::Stopping {
            return;
        }
        // Free slots first: a job never waits while a worker has room.
        while let Some(&id) = self.queue.first() {
            let Some(w) = self.free_worker() else {
                break;
            };
            self.send_job(w, id, false, now);
        }
        if self.set.prefetch > 0 && !self.queue.is_empty() {
            self.prefetch(now);
        }
        if self.queue.is_empty() && self.prefetched > 0 && self.free_worker().is_some() {
            self.revoke_prefetched();
        }
    }

    /// The worker with a free slot for the next job: the one running the
    /// fewest jobs, and of those the one idle the shortest time (so the
    /// others can idle out).
    pub(super) fn free_worker(&self) -> Option<WorkerId> {
        self.workers
            .iter()
            .filter(|(_, w)| self.takes(w, self.set.slots))
            .min_by_key(|(id, w)| (w.jobs.len(), std::cmp::Reverse(w.idle_since), **id))
            .map(|(&id, _)| id)
    }

    /// Keeps up to `prefetch` jobs waiting inside each busy worker, so it
    /// never waits for the host between jobs: round by round, the emptiest
    /// worker first, so the workers share the queue evenly.
    fn prefetch(&mut self, now: Instant) {
        let most = self.set.slots.saturating_add(self.set.prefetch);
        let mut room: Vec<(usize, WorkerId)> = self
            .workers
            .iter()
            .filter(|(_, w)| self.takes(w, most))
            .map(|(&id, w)| (w.jobs.len(), id))
            .collect();
        room.sort_unstable();
        loop {
            let mut sent_any = false;
            for (depth, w) in room.iter_mut() {
                let Some(&id) = self.queue.first() else {
                    return;
                };
                if *depth >= most {
                    continue;
                }
                let size = self.jobs.get(&id).map_or(0, |j| j.size);
                let ok = self
                    .workers
                    .get(w)
                    .is_some_and(|x| self.takes(x, most) && x.fits(size));
                if !ok {
                    *depth = most;
                    continue;
                }
                self.send_job(*w, id, true, now);
                *depth += 1;
                sent_any = true;
            }
            if !sent_any {
                return;
            }
        }
    }

    /// Asks every worker for its jobs sent ahead back.
    fn revoke_prefetched(&mut self) {
        let mut ids = Vec::new();
        for (&w, worker) in &self.workers {
            for &id in &worker.jobs {
                if let Some(JobState::Prefetched(_)) = self.jobs.get(&id).map(|j| j.state) {
                    ids.push((w, id));
                }
            }
        }
        for (w, id) in ids {
            self.revoke(w, id);
        }
    }

    /// The jobs on worker `w`, in sending order (a copy, to act on).
    pub(super) fn jobs_on(&self, w: WorkerId) -> Vec<JobId> {
        self.workers
            .get(&w)
            .map(|x| x.jobs.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Asks `w` for all its jobs sent ahead back.
    pub(super) fn revoke_all_on(&mut self, w: WorkerId) {
        for id in self.jobs_on(w) {
            self.revoke(w, id);
        }
    }

    /// Asks `w` for job `id`, sent ahead, back.
    pub(super) fn revoke(&mut self, w: WorkerId, id: JobId) {
        if let Some(JobState::Prefetched(x)) = self.jobs.get(&id).map(|j| j.state) {
            if x == w {
                self.restate(id, JobState::Revoking(w));
                self.send(w, Control::Revoke(id));
            }
        }
    }
}

use crate::msg::JobId;
