//! Chaos pools, their seeds and random numbers, the figures line, and the
//! small tasks the chaos suites (`tests/chaos_*.rs`) throw at them.
//!
//! Uses `tasks` (include `support/tasks.rs` as `mod tasks;` too).
#![allow(dead_code)]

use std::time::Duration;

use procpool::{ProcessPoolExecutor, Task};
use serde::{Deserialize, Serialize};

use crate::tasks::{Death, Die};

/// Set (via `Builder::env`) in the workers of chaos pools. Faults that end a
/// process only fire where it is set, so a fault placed in a serde impl that
/// also runs in the host can never take the test process down.
pub const CHAOS_IN_WORKER: &str = "PROCPOOL_CHAOS_IN_WORKER";

/// Whether this process is a worker of a chaos pool.
pub fn in_worker() -> bool {
    std::env::var_os(CHAOS_IN_WORKER).is_some()
}

/// A builder for a chaos pool: `workers` workers marked with
/// [`CHAOS_IN_WORKER`], their output not forwarded (jobs here print
/// megabytes; the last lines are still kept for `WorkerDied`), and
/// `RUST_BACKTRACE=0` in them: with backtraces on, a panic that kills a
/// worker fills the 20-line stderr tail with frames and pushes out the
/// panic message the tests look for.
pub fn chaos_builder(workers: usize) -> procpool::Builder {
    ProcessPoolExecutor::builder()
        .workers(workers)
        .env(CHAOS_IN_WORKER, "1")
        .env("RUST_BACKTRACE", "0")
        .forward_worker_output(false)
}

pub async fn chaos_pool(workers: usize) -> ProcessPoolExecutor {
    chaos_builder(workers)
        .build()
        .await
        .expect("the chaos pool should start")
}

/// The seed for a chaos run: `PROCPOOL_CHAOS_SEED` if set (to replay a
/// run), otherwise taken from the clock. Printed so a failure can be
/// replayed.
pub fn chaos_seed(test: &str) -> u64 {
    let seed = std::env::var("PROCPOOL_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("{test}: PROCPOOL_CHAOS_SEED={seed}");
    seed
}

/// xorshift64: a tiny deterministic PRNG (no new dependencies).
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        // splitmix64 step, so nearby seeds give unrelated streams; never 0.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        XorShift((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

/// Prints one line of figures for a chaos test that passed: how many jobs
/// it ran (every one resolved, or the test would have failed) and how many
/// faults it injected. Collect them with `--nocapture | grep CHAOS-FIGURES`.
pub fn figures(test: &str, jobs: u64, faults: u64) {
    eprintln!("CHAOS-FIGURES test={test} jobs={jobs} faults={faults}");
}

/// Sleeps `micros`, then squares `n`: a small job slow enough for a killer
/// to hit workers while it runs.
#[derive(Serialize, Deserialize)]
pub struct SlowSquare {
    pub n: u64,
    pub micros: u64,
}
impl Task for SlowSquare {
    type Output = u64;
    fn run(self) -> u64 {
        std::thread::sleep(Duration::from_micros(self.micros));
        self.n * self.n
    }
}
procpool::register!(SlowSquare);

/// [`SlowSquare`] as an async task (waits on the worker runtime's timer).
#[derive(Serialize, Deserialize)]
pub struct AsyncSlowSquare {
    pub n: u64,
    pub micros: u64,
}
impl procpool::AsyncTask for AsyncSlowSquare {
    type Output = u64;
    async fn run(self) -> u64 {
        tokio::time::sleep(Duration::from_micros(self.micros)).await;
        self.n * self.n
    }
}
procpool::register!(AsyncSlowSquare);

/// Sleeps, then dies the given way.
#[derive(Serialize, Deserialize)]
pub struct DelayedDeath {
    pub ms: u64,
    pub death: Death,
}
impl Task for DelayedDeath {
    type Output = ();
    fn run(self) {
        std::thread::sleep(Duration::from_millis(self.ms));
        Die(self.death).run()
    }
}
procpool::register!(DelayedDeath);

/// Spins forever without polling `cancelled()`; only a kill stops it.
#[derive(Serialize, Deserialize)]
pub struct SpinForever;
impl Task for SpinForever {
    type Output = ();
    fn run(self) {
        let mut x = 0u64;
        loop {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }
}
procpool::register!(SpinForever);
