//! The simulated worker processes and their pipes.

use std::time::Duration;

use super::{Ev, Kind, Msg, World};
use crate::error::{Error, ExitStatus};
use crate::host::core::{Control, Input, WorkerId};
use crate::msg::JobId;
use crate::slot::Encoded;

impl World {
    /// A delivery over worker `w`'s pipe (`up`: to the host), after
    /// whatever it sent before.
    pub(super) fn pipe(&mut self, w: WorkerId, up: bool, ev: Ev) {
        let delay = self.rng.ms(0, 5);
        let last = self.fifo.get(&(w, up)).copied().unwrap_or_default();
        let when = (self.t + delay).max(last);
        self.fifo.insert((w, up), when);
        self.seq += 1;
        self.events.insert((when, self.seq), ev);
    }

    /// Worker `w`'s process ends. `killed`: by the host, whose link stops
    /// reading at once (what was in the pipe is lost).
    pub(super) fn die(
        &mut self,
        w: WorkerId,
        status: ExitStatus,
        error: Option<String>,
        killed: bool,
    ) {
        let Some(p) = self.procs.get_mut(&w) else {
            return;
        };
        if p.dead {
            return;
        }
        p.dead = true;
        for &id in &p.running {
            if let Some(l) = self.jobs.get_mut(&id) {
                l.deaths += 1;
            }
        }
        // The host's link reads what the worker wrote until EOF, even when
        // it killed it; only a result being written as it died is lost
        // (half-written): that job died with its worker.
        if !killed && self.rng.pct(30) {
            let last = self
                .events
                .iter()
                .filter(|(_, ev)| matches!(ev, Ev::ToHost(x, _) if *x == w))
                .map(|(k, _)| *k)
                .next_back();
            let is_result = last
                .and_then(|k| self.events.get(&k))
                .is_some_and(|ev| matches!(ev, Ev::ToHost(_, Input::Finished { .. })));
            if let (true, Some(key)) = (is_result, last) {
                if let Some(Ev::ToHost(_, Input::Finished { job, .. })) = self.events.remove(&key) {
                    self.note(format!("{job}'s result is half-written as {w} dies"));
                    if let Some(l) = self.jobs.get_mut(&job) {
                        l.deaths += 1;
                    }
                }
            }
        }
        let input = Input::Exited {
            worker: w,
            status,
            error,
            tail: String::new(),
        };
        self.pipe(w, true, Ev::ToHost(w, input));
    }

    /// Worker `w` starts what it can.
    fn worker_start(&mut self, w: WorkerId) -> Result<(), String> {
        loop {
            let Some(p) = self.procs.get_mut(&w) else {
                return Ok(());
            };
            if p.dead || p.running.len() >= self.set.slots {
                return Ok(());
            }
            let Some((id, ahead)) = p.queue.pop_front() else {
                return Ok(());
            };
            p.running.insert(id);
            let l = self.ledger(id)?;
            l.starts += 1;
            if l.starts > 1 + l.retries || l.starts > 1 + l.deaths {
                return Err(format!(
                    "{id} started {} times with {} retries and {} worker deaths",
                    l.starts, l.retries, l.deaths
                ));
            }
            let (kind, run) = (l.kind, l.run);
            if ahead {
                self.pipe(
                    w,
                    true,
                    Ev::ToHost(w, Input::Started { worker: w, job: id }),
                );
            }
            let run = match kind {
                Kind::Hangs => Duration::from_secs(30),
                _ => run,
            };
            self.at(run, Ev::JobDone(w, id));
        }
    }

    pub(super) fn worker_msg(&mut self, w: WorkerId, msg: Msg) -> Result<(), String> {
        let Some(p) = self.procs.get_mut(&w) else {
            return Ok(());
        };
        if p.dead {
            return Ok(());
        }
        match msg {
            Msg::Job(id, ahead) => {
                p.queue.push_back((id, ahead));
                self.worker_start(w)?;
            }
            Msg::Control(Control::Cancel(id) | Control::Revoke(id)) => {
                let cancel = matches!(msg, Msg::Control(Control::Cancel(_)));
                if let Some(at) = p.queue.iter().position(|&(j, _)| j == id) {
                    p.queue.remove(at);
                    self.pipe(
                        w,
                        true,
                        Ev::ToHost(w, Input::Revoked { worker: w, job: id }),
                    );
                } else if cancel && p.running.contains(&id) {
                    p.cancelled.insert(id);
                    let kind = self.jobs.get(&id).map(|l| l.kind);
                    if matches!(kind, Some(Kind::Async | Kind::Cooperative)) {
                        let d = self.rng.ms(0, 5);
                        self.at(d, Ev::JobDone(w, id));
                    }
                }
            }
            Msg::Control(Control::Credit(..)) => {}
            Msg::Close => {
                // EOF on its input: it exits at once.
                self.die(w, ExitStatus::Code(0), None, false);
            }
        }
        Ok(())
    }

    pub(super) fn job_done(&mut self, w: WorkerId, id: JobId) -> Result<(), String> {
        let Some(p) = self.procs.get_mut(&w) else {
            return Ok(());
        };
        if p.dead || !p.running.remove(&id) {
            return Ok(());
        }
        let cancelled = p.cancelled.remove(&id);
        let kind = self.jobs.get(&id).map_or(Kind::Normal, |l| l.kind);
        let result = match kind {
            Kind::Dies => {
                p.running.insert(id);
                self.die(w, ExitStatus::Signal(11), None, false);
                return Ok(());
            }
            Kind::Garbles => {
                p.running.insert(id);
                self.die(
                    w,
                    ExitStatus::Signal(9),
                    Some("a garbled frame".into()),
                    false,
                );
                return Ok(());
            }
            Kind::Async if cancelled => Err(Error::Cancelled),
            Kind::Panics => Err(Error::Panicked {
                message: "boom".into(),
                location: None,
            }),
            _ => Ok(Encoded {
                body: vec![id.0 as u8],
                offset: 0,
            }),
        };
        let rss = self.set.max_worker_rss.map(|_| self.rng.below(1500));
        let input = Input::Finished {
            worker: w,
            job: id,
            result,
            rss,
        };
        self.pipe(w, true, Ev::ToHost(w, input));
        self.worker_start(w)
    }
}
