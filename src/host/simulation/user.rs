//! What the simulated user does: submits, cancels, shutdowns; and what
//! the world does to workers (memory samples, external kills).

use super::{Kind, Ledger, World};
use crate::error::ExitStatus;
use crate::host::core::{Input, NewJob, WorkerId};
use crate::msg::JobId;

impl World {
    /// One thing the user (or the world) does now.
    pub(super) fn user_step(&mut self) -> Result<(), String> {
        match self.rng.below(100) {
            0..=44 => {
                let n = if self.rng.pct(15) {
                    1 + self.rng.below(10)
                } else {
                    1
                };
                for _ in 0..n {
                    self.submit(None)?;
                }
                Ok(())
            }
            45..=64 => {
                let pending: Vec<JobId> = self
                    .jobs
                    .iter()
                    .filter(|(_, l)| l.accepted && l.resolved == 0 && !l.cancelled)
                    .map(|(&id, _)| id)
                    .collect();
                if pending.is_empty() {
                    return Ok(());
                }
                let id = pending[self.rng.below(pending.len() as u64) as usize];
                if let Some(l) = self.jobs.get_mut(&id) {
                    l.cancelled = true;
                }
                self.input(Input::Cancel(id))
            }
            65..=69 => {
                let busy: Vec<WorkerId> = self.core.busy_workers().map(|(w, _)| w).collect();
                if busy.is_empty() {
                    return Ok(());
                }
                let w = busy[self.rng.below(busy.len() as u64) as usize];
                let rss = self.rng.below(2500);
                if self.set.worker_memory_limit.is_some_and(|l| rss > l) {
                    self.over_memory.insert(w);
                }
                self.input(Input::MemorySample { worker: w, rss })
            }
            70..=72 => {
                let alive: Vec<WorkerId> = self
                    .procs
                    .iter()
                    .filter(|(_, p)| !p.dead)
                    .map(|(&w, _)| w)
                    .collect();
                if alive.is_empty() {
                    return Ok(());
                }
                let w = alive[self.rng.below(alive.len() as u64) as usize];
                self.note(format!("the OOM killer kills {w}"));
                self.die(w, ExitStatus::Signal(9), None, false);
                Ok(())
            }
            73 if !self.shut_down && self.rng.pct(20) => {
                self.shut_down = true;
                if self.rng.pct(50) {
                    self.input(Input::Shutdown)
                } else {
                    self.input(Input::ShutdownNow)
                }
            }
            74..=75 => {
                let on: Vec<JobId> = self
                    .jobs
                    .keys()
                    .copied()
                    .filter(|&id| {
                        self.core
                            .job_state(id)
                            .is_some_and(|s| s.worker().is_some())
                    })
                    .collect();
                match on.first() {
                    Some(&id) => self.input(Input::Credit(id, 1)),
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    pub(super) fn submit(&mut self, kind: Option<Kind>) -> Result<(), String> {
        let id = JobId(self.next_job);
        self.next_job += 1;
        let kind = kind.unwrap_or_else(|| match self.rng.below(100) {
            0..=54 => Kind::Normal,
            55..=64 => Kind::Cooperative,
            65..=74 => Kind::Async,
            75..=82 => Kind::Panics,
            83..=87 => Kind::Hangs,
            88..=95 => Kind::Dies,
            _ => Kind::Garbles,
        });
        let run = if self.rng.pct(10) {
            self.rng.ms(200, 2000)
        } else {
            self.rng.ms(0, 40)
        };
        let retries = if self.rng.pct(25) {
            1 + self.rng.below(2) as u32
        } else {
            0
        };
        let size = if self.rng.pct(5) {
            (1 << 20) + self.rng.below(20 << 20) as usize
        } else {
            64 + self.rng.below(4096) as usize
        };
        let timeout = self.rng.pct(15).then(|| self.rng.ms(10, 500));
        self.jobs.insert(
            id,
            Ledger {
                kind,
                run,
                retries,
                resolved: 0,
                cancelled: false,
                released: 0,
                starts: 0,
                deaths: 0,
                accepted: true,
            },
        );
        self.input(Input::Submit(NewJob {
            id,
            size,
            timeout,
            retries,
            payload: (),
        }))
    }
}
