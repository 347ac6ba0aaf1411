//! Workers: starting, recycling, retiring, idling out, and their exits.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{Action, Core, JobState, Mode, Timer, Worker, WorkerId, WorkerState};
use crate::error::{Error, ExitStatus};

/// The first wait after a start-up failure; it doubles with each failure in
/// a row, up to `max_startup_backoff`.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

impl<P> Core<P> {
    /// Asks for a new worker.
    pub(super) fn spawn(&mut self, now: Instant, initial: bool) {
        let id = WorkerId(self.next_worker);
        self.next_worker += 1;
        self.workers.insert(
            id,
            Worker {
                state: WorkerState::Starting,
                pid: 0,
                initial,
                jobs: VecDeque::new(),
                sent: 0,
                started: 0,
                prefetched_bytes: 0,
                idle_since: now,
                stopping: 0,
            },
        );
        self.push(Action::Spawn(id));
    }

    pub(super) fn on_spawned(&mut self, w: WorkerId, result: Result<u32, Error>, now: Instant) {
        let Some(worker) = self.workers.get_mut(&w) else {
            debug_assert!(false, "{w} reported a start it was not asked for");
            return;
        };
        if worker.state != WorkerState::Starting {
            debug_assert!(false, "{w} started twice");
            return;
        }
        match result {
            Ok(pid) => {
                worker.pid = pid;
                worker.idle_since = now;
                if !worker.initial {
                    self.stats.respawns += 1;
                }
                self.startup_failures = 0;
                self.startup_error = None;
                self.spawn_after = None;
                if self.mode == Mode::Stopping {
                    worker.state = WorkerState::Leaving;
                    self.push(Action::Kill(w));
                } else {
                    worker.state = WorkerState::Serving;
                    tracing::debug!(pid, "procpool worker started");
                }
            }
            Err(e) => {
                self.workers.remove(&w);
                self.startup_failures = self.startup_failures.saturating_add(1);
                let delay = self.backoff();
                tracing::warn!(
                    failures = self.startup_failures,
                    retry_in = ?delay,
                    error = %e,
                    "a procpool worker failed to start"
                );
                if self.mode != Mode::Stopping {
                    self.spawn_after = Some(now + delay);
                    self.timers.insert((now + delay, Timer::Spawn));
                }
                if self.startup_failures >= self.set.max_startup_failures && self.serving() == 0 {
                    self.startup_error = Some(Error::Spawn {
                        message: format!(
                            "workers failed to start {} times in a row (the pool retries every \
                             {delay:?} and serves again once one starts): {e}",
                            self.startup_failures
                        ),
                    });
                }
            }
        }
    }

    /// The wait before the next start after `startup_failures` failures.
    fn backoff(&self) -> Duration {
        let doublings = self.startup_failures.saturating_sub(1).min(20);
        FIRST_BACKOFF
            .saturating_mul(1 << doublings)
            .min(self.set.max_startup_backoff)
    }

    pub(super) fn on_exited(
        &mut self,
        w: WorkerId,
        status: ExitStatus,
        error: Option<String>,
        tail: String,
    ) {
        let Some(worker) = self.workers.get(&w) else {
            debug_assert!(false, "{w} exited twice");
            return;
        };
        let (pid, state) = (worker.pid, worker.state);
        let ids = self.jobs_on(w);
        if state == WorkerState::Leaving {
            tracing::debug!(pid, %status, "procpool worker exited");
        } else {
            tracing::warn!(pid, %status, jobs = ids.len(), "procpool worker died; replacing it");
        }
        for id in ids {
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            match job.state {
                JobState::Running(_) if !job.answered => {
                    let retry =
                        error.is_none() && self.mode != Mode::Stopping && job.retries_left > 0;
                    if retry {
                        // At-most-once is relaxed only where the caller asked.
                        job.retries_left -= 1;
                        self.stats.retried += 1;
                        self.transition(id, Some(JobState::Queued));
                    } else {
                        let err = match &error {
                            Some(message) => Error::Protocol {
                                message: message.clone(),
                            },
                            None => Error::WorkerDied {
                                pid,
                                status,
                                stderr_tail: tail.clone(),
                            },
                        };
                        self.finish(id, Some(Err(err)));
                    }
                }
                JobState::Running(_) => self.finish(id, None),
                // It broke the protocol: what it wrote after the bad frame
                // is lost, so whether it started this one is unknown; a job
                // runs at most once, so it fails.
                _ if !job.answered && error.is_some() => {
                    let message = format!(
                        "its worker broke the protocol before saying whether it started {id}: {}",
                        error.as_deref().unwrap_or_default()
                    );
                    self.finish(id, Some(Err(Error::Protocol { message })));
                }
                // Never started: it runs elsewhere.
                _ if !job.answered => {
                    self.transition(id, Some(JobState::Queued));
                }
                _ => self.finish(id, None),
            }
        }
        self.workers.remove(&w);
    }

    /// After a job left `w`: recycle it if it is over its memory limit.
    pub(super) fn after_job(&mut self, w: WorkerId, rss: Option<u64>, now: Instant) {
        let over = match (rss, self.set.max_worker_rss) {
            (Some(rss), Some(limit)) => rss > limit,
            _ => false,
        };
        let Some(worker) = self.workers.get_mut(&w) else {
            return;
        };
        if worker.jobs.is_empty() {
            worker.idle_since = now;
        }
        if over && worker.state == WorkerState::Serving {
            self.retire(w, true);
        }
    }

    /// Takes `w` out of service: it takes no new jobs, its jobs sent ahead
    /// are asked back, and it is closed once its jobs are done.
    /// `recycled`: counted in `stats().recycled`.
    pub(super) fn retire(&mut self, w: WorkerId, recycled: bool) {
        let Some(worker) = self.workers.get_mut(&w) else {
            return;
        };
        if worker.state != WorkerState::Serving {
            return;
        }
        worker.state = WorkerState::Retiring;
        if recycled {
            self.stats.recycled += 1;
        }
        self.revoke_all_on(w);
    }

    /// Kills `w` (its jobs end with its exit).
    pub(super) fn kill(&mut self, w: WorkerId) {
        if let Some(worker) = self.workers.get_mut(&w) {
            if matches!(worker.state, WorkerState::Serving | WorkerState::Retiring) {
                tracing::debug!(pid = worker.pid, "killing procpool worker");
                worker.state = WorkerState::Leaving;
                self.push(Action::Kill(w));
            }
        }
    }

    fn close(&mut self, w: WorkerId) {
        if let Some(worker) = self.workers.get_mut(&w) {
            debug_assert!(worker.jobs.is_empty(), "{w} closed with jobs");
            worker.state = WorkerState::Leaving;
            self.push(Action::Close(w));
        }
    }

    /// A worker broke the protocol: its running jobs fail with `message`,
    /// and it is killed (those sent ahead run elsewhere).
    pub(super) fn violation(&mut self, w: WorkerId, message: String) {
        tracing::warn!(%w, %message, "procpool worker broke the protocol");
        for id in self.jobs_on(w) {
            if let Some(JobState::Running(_)) = self.jobs.get(&id).map(|j| j.state) {
                let message = message.clone();
                self.answer(id, Err(Error::Protocol { message }));
            }
        }
        self.kill(w);
    }

    pub(super) fn on_memory_sample(&mut self, w: WorkerId, rss: u64) {
        let Some(limit) = self.set.worker_memory_limit else {
            return;
        };
        let Some(worker) = self.workers.get(&w) else {
            return;
        };
        if rss <= limit || !matches!(worker.state, WorkerState::Serving | WorkerState::Retiring) {
            return;
        }
        // Every job running on it shares the blame: memory is per process.
        let mut running = false;
        for id in self.jobs_on(w) {
            if let Some(JobState::Running(_)) = self.jobs.get(&id).map(|j| j.state) {
                running = true;
                self.answer(id, Err(Error::MemoryLimit { limit, rss }));
            }
        }
        if running {
            self.kill(w);
        }
    }

    /// Workers that serve (not starting, retiring or leaving).
    pub(super) fn serving(&self) -> usize {
        self.workers
            .values()
            .filter(|w| w.state == WorkerState::Serving)
            .count()
    }

    /// Closes the workers that are done: retiring or spent ones whose jobs
    /// are over, and, while draining with nothing queued, idle ones.
    pub(super) fn tidy_workers(&mut self) {
        let max = self.set.max_tasks_per_worker;
        let draining = self.mode == Mode::Draining && self.queue.is_empty();
        let mut spent = Vec::new();
        let mut done = Vec::new();
        for (&id, w) in &self.workers {
            if !w.jobs.is_empty() {
                continue;
            }
            match w.state {
                WorkerState::Serving if w.spent(max) => spent.push(id),
                WorkerState::Serving if draining => done.push(id),
                WorkerState::Retiring => done.push(id),
                _ => {}
            }
        }
        for id in spent {
            self.retire(id, true);
            self.close(id);
        }
        for id in done {
            self.close(id);
        }
    }

    /// How many workers the pool wants now: all of them, or with an idle
    /// timeout, enough for the work at hand but at least the minimum.
    fn desired_workers(&self) -> usize {
        match self.set.idle_timeout {
            None => self.set.workers,
            Some(_) => {
                let busy = self.queue.len() + self.prefetched + self.running;
                busy.div_ceil(self.set.slots)
                    .max(self.set.min_workers)
                    .min(self.set.workers)
            }
        }
    }

    /// Starts workers until the pool has the size it wants again (unless a
    /// start-up backoff is running).
    pub(super) fn replenish(&mut self, now: Instant) {
        match self.mode {
            Mode::Stopping => return,
            Mode::Draining if self.queue.is_empty() => return,
            _ => {}
        }
        if self.spawn_after.is_some_and(|t| t > now) {
            return;
        }
        let max = self.set.max_tasks_per_worker;
        let have = self
            .workers
            .values()
            .filter(|w| match w.state {
                WorkerState::Starting => true,
                WorkerState::Serving => !w.spent(max),
                _ => false,
            })
            .count();
        let missing = self.desired_workers().saturating_sub(have);
        if missing > 0 {
            tracing::debug!(missing, "starting procpool workers");
        }
        for _ in 0..missing {
            self.spawn(now, false);
        }
    }

    /// The idle workers and when each idles out, if some may (the pool
    /// runs, with an idle timeout, and more workers serve than
    /// `min_workers`); with how many may go.
    fn idle_workers(&self) -> Option<(usize, impl Iterator<Item = (Instant, WorkerId)> + '_)> {
        let timeout = self.set.idle_timeout?;
        let spare = self.serving().saturating_sub(self.set.min_workers);
        if self.mode != Mode::Running || spare == 0 {
            return None;
        }
        let idle = self
            .workers
            .iter()
            .filter(|(_, w)| w.state == WorkerState::Serving && w.jobs.is_empty())
            .map(move |(&id, w)| (w.idle_since + timeout, id));
        Some((spare, idle))
    }

    /// When the next worker idles out (on the driver's every wait, so it
    /// allocates nothing).
    pub(super) fn next_idle_deadline(&self) -> Option<Instant> {
        self.idle_workers()?.1.map(|(at, _)| at).min()
    }

    /// Lets workers beyond the minimum go once they have idled long enough.
    pub(super) fn retire_idle(&mut self, now: Instant) {
        let Some((spare, idle)) = self.idle_workers() else {
            return;
        };
        // The most idle first, as many as may go.
        let mut idle: Vec<(Instant, WorkerId)> = idle.collect();
        idle.sort_unstable();
        idle.truncate(spare);
        for (at, w) in idle {
            if at <= now {
                self.retire(w, false);
            }
        }
    }
}
