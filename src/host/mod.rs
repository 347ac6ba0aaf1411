//! The host side of a pool: a state machine without I/O ([`core`]) and the
//! thin driver that carries out what it decides ([`driver`]).
//!
//! The driver runs on the pool's own thread, in a single-threaded tokio
//! runtime that also drives every worker's pipes, so a pool does not depend
//! on the runtime (or the thread) that built it. Handles and the pool send
//! it [`Command`](crate::msg::Command)s; worker links and spawn tasks send
//! it events. It turns each into an [`Input`](core::Input) for the core,
//! then carries out the core's [`Action`](core::Action)s: writing frames,
//! closing and killing workers, starting workers, resolving handles. Its
//! only timer sleeps until the core's earliest deadline
//! ([`Core::poll_timeout`](core::Core::poll_timeout)).
//!
//! # Jobs sent ahead: who may take back which job
//!
//! One FIFO queue, ordered by job id. The next job goes to a worker with a
//! free slot (a worker runs up to `jobs_per_worker` jobs at once). While
//! every slot is taken, up to `prefetch` small jobs are also *sent ahead*
//! to each busy worker, where they wait in the worker's own queue. The
//! two sides' beliefs, step by step:
//!
//! | step | host (core) | worker |
//! |---|---|---|
//! | job sent to a free slot | `Running(W)`: started, its timeout runs | queues it and starts it at once (it has a free slot) |
//! | job sent ahead | `Prefetched(W)`: still counts as queued | queues it; when it starts it, it writes `Started` first |
//! | `Started` arrives | `Running(W)`, timeout armed | running |
//! | host wants it back (another worker idle, nothing queued; or W is retiring) | sends `Revoke`; `Revoking(W)` | if still queued: drops it and writes `Revoked`; if started: nothing (its `Started` is on the way) |
//! | `Revoked` arrives | back in the queue, in id order (or forgotten if its handle was cancelled) | gone |
//! | handle cancelled | queued: forgotten. Sent ahead: sends `Cancel`, `Revoking(W)`. Running: sends `Cancel`, grace timer | queued: drops it, writes `Revoked`. Running: flags it (`cancelled()`); an async task is dropped and answers `Cancelled` |
//! | grace over, still running | kills W | — |
//! | W exits | its `Running` jobs fail (`WorkerDied`) or are retried; its jobs sent ahead go back to the queue | — |
//!
//! Only the worker gives a job back (`Revoked`), and only one it has not
//! started; the host takes nothing back by itself, except every job of a
//! worker that exited. A `Revoked` may also answer a `Cancel` for a job
//! sent to a free slot that the worker had read but not yet started: the
//! host counted it as running; it never ran, so it is forgotten (its handle
//! is cancelled already). A worker that reports on a job it was not sent,
//! or starts one twice, broke the protocol and is killed.
//!
//! Jobs start in id order (retried and given-back jobs take their place
//! again), so a job given back by a busy worker does not fall behind later
//! ones. A worker never holds more than `jobs_per_worker + prefetch` jobs,
//! nor more than 1 MiB of small jobs sent ahead (or one job of up to
//! 16 MiB), nor more than `max_tasks_per_worker` jobs in its life.

pub(crate) mod core;
pub(crate) mod driver;
#[cfg(test)]
mod simulation;
