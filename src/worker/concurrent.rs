//! The worker engine for `jobs_per_worker > 1`: several jobs at once.
//!
//! The worker's first thread only reads: a job goes to the queue and starts
//! as soon as fewer than `limit` jobs run. An async task runs as a task on
//! the worker's runtime, under its cancel watcher; any other job (a
//! blocking task, a batch) runs on the runtime's blocking threads. Each job
//! writes its own result when it ends and starts the next queued job, so
//! results leave in the order jobs finish. Start notices of jobs sent ahead
//! are written under the queue lock, in the order the jobs start.

use std::io::Write;
use std::sync::Arc;

use tokio::runtime::Runtime;

use super::{EXIT_IO, Queued, Worker, put_outcome, put_status};
use crate::job::{self, JobCtx};
use crate::protocol::{self, ToWorker};
use crate::sys;
use crate::task::{Panic, RunFailure};

impl Worker {
    /// Serves jobs, up to `limit` at once, until the host goes away.
    pub(super) fn serve_concurrent(self: &Arc<Self>, limit: usize) -> ! {
        let rt = match crate::async_task::runtime() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("procpool worker: {e}; exiting");
                sys::exit_now(EXIT_IO)
            }
        };
        loop {
            self.read_one();
            self.start_ready(rt, limit);
        }
    }

    /// Starts queued jobs while fewer than `limit` run.
    fn start_ready(self: &Arc<Self>, rt: &'static Runtime, limit: usize) {
        let mut starting = Vec::new();
        {
            let mut st = self.lock();
            let mut notices = Vec::new();
            while st.active < limit {
                let Some((job, ctx)) = st.start_next() else {
                    break;
                };
                st.active += 1;
                if job.ahead {
                    put_status(&mut notices, job.id, self.max_frame, protocol::put_started);
                }
                starting.push((job, ctx));
            }
            if !notices.is_empty() {
                // Under the lock: the host hears of starts in start order.
                self.write(&notices);
            }
        }
        for (job, ctx) in starting {
            self.spawn_job(rt, limit, job, ctx);
        }
    }

    fn spawn_job(
        self: &Arc<Self>,
        rt: &'static Runtime,
        limit: usize,
        job: Queued,
        ctx: Arc<JobCtx>,
    ) {
        let w = self.clone();
        let start = match protocol::decode_to_worker(&job.body) {
            Ok(ToWorker::Job { task, .. }) => crate::task::async_start(task),
            _ => None,
        };
        match start {
            Some(start) => {
                rt.spawn(async move {
                    let run = match protocol::decode_to_worker(&job.body) {
                        Ok(ToWorker::Job { payload, .. }) => start(payload),
                        // Not reached: the frame was decoded before.
                        _ => Err(RunFailure::Panicked(Panic::without_location(
                            "a malformed job frame",
                        ))),
                    };
                    let result = match run {
                        Ok(run) => super::run::guarded(ctx.clone(), run).await,
                        Err(e) => Err(e),
                    };
                    let mut out = Vec::new();
                    put_outcome(&mut out, job.id, w.max_frame, |out| {
                        out.extend_from_slice(&result?);
                        Ok(())
                    });
                    // Writing may block on a full pipe: let the runtime's
                    // other tasks move to another thread meanwhile.
                    tokio::task::block_in_place(|| w.job_ended(rt, limit, &ctx, &out));
                });
            }
            None => {
                rt.spawn_blocking(move || {
                    let mut out = Vec::new();
                    if let Ok(msg) = protocol::decode_to_worker(&job.body) {
                        let _entered = job::enter(ctx.clone());
                        w.run_one(&msg, &mut out, &mut Vec::new());
                    }
                    w.job_ended(rt, limit, &ctx, &out);
                });
            }
        }
    }

    /// Writes a job's result and lets the next queued job start.
    fn job_ended(self: &Arc<Self>, rt: &'static Runtime, limit: usize, ctx: &JobCtx, out: &[u8]) {
        job::finish(ctx);
        let _ = std::io::stdout().flush();
        self.write(out);
        self.lock().active -= 1;
        self.start_ready(rt, limit);
    }
}
