//! Per-worker state: an initializer builds something expensive once per
//! worker (here a prime table standing in for a model, a cache or a
//! connection), and every later task on that worker reuses it.
//!
//! The state lives as long as the worker process. A recycled or replaced
//! worker runs the initializer again (shown with `max_tasks_per_worker`).
//!
//! Run with: `cargo run --release --example worker_state`

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use procpool::{Error, ProcessPoolExecutor, Task};
use serde::{Deserialize, Serialize};

const LIMIT: usize = 20_000_000;

/// What the initializer builds: every prime below `LIMIT`.
struct PrimeTable {
    primes: Vec<u32>,
    /// Which load this is (the worker's pid), to show reuse.
    loaded_by: u32,
}

fn sieve(limit: usize) -> Vec<u32> {
    let mut composite = vec![false; limit];
    let mut primes = Vec::new();
    for n in 2..limit {
        if !composite[n] {
            primes.push(n as u32);
            let mut m = n * n;
            while m < limit {
                composite[m] = true;
                m += n;
            }
        }
    }
    primes
}

/// The initializer: runs once in every new worker, before its first job.
#[derive(Serialize, Deserialize)]
struct LoadTable;

impl Task for LoadTable {
    type Output = ();
    fn run(self) {
        procpool::set_worker_state(PrimeTable {
            primes: sieve(LIMIT),
            loaded_by: std::process::id(),
        });
    }
}
procpool::register!(LoadTable);

/// How many primes are at most `x`, from the worker's table. Returns the
/// count and the pid of the worker whose table answered.
#[derive(Serialize, Deserialize)]
struct PrimesUpTo(u32);

impl Task for PrimesUpTo {
    type Output = (usize, u32);
    fn run(self) -> (usize, u32) {
        let table: Arc<PrimeTable> =
            procpool::worker_state().expect("the pool's initializer loads the table");
        (
            table.primes.partition_point(|&p| p <= self.0),
            table.loaded_by,
        )
    }
}
procpool::register!(PrimesUpTo);

/// The same query without state: builds the table every time.
#[derive(Serialize, Deserialize)]
struct PrimesUpToCold(u32);

impl Task for PrimesUpToCold {
    type Output = usize;
    fn run(self) -> usize {
        sieve(LIMIT).partition_point(|&p| p <= self.0)
    }
}
procpool::register!(PrimesUpToCold);

#[tokio::main]
async fn main() -> Result<(), Error> {
    procpool::init();
    let queries: Vec<u32> = (1..=200).map(|i| i * 99_991).collect();

    // Each worker loads the table once, in the initializer.
    let start = Instant::now();
    let pool = ProcessPoolExecutor::builder()
        .workers(2)
        .initializer(LoadTable)
        .build()
        .await?;
    let built = start.elapsed();
    let handles: Vec<_> = queries
        .iter()
        .map(|&q| pool.submit(PrimesUpTo(q)))
        .collect();
    let mut answers = Vec::new();
    let mut by_worker = BTreeMap::<u32, usize>::new();
    for h in handles {
        let (count, pid) = h.await?;
        answers.push(count);
        *by_worker.entry(pid).or_default() += 1;
    }
    let warm = start.elapsed();
    pool.shutdown().await;
    let queries_took = warm - built;
    println!(
        "with state:    build() with 2 table loads {:.0} ms, then 200 queries in {:.1} ms; \
         queries per loaded table: {:?}",
        built.as_secs_f64() * 1e3,
        queries_took.as_secs_f64() * 1e3,
        by_worker.values().collect::<Vec<_>>()
    );

    // Without state, every task pays the load (only 10 queries here).
    let pool = ProcessPoolExecutor::builder().workers(2).build().await?;
    let start = Instant::now();
    let handles: Vec<_> = queries[..10]
        .iter()
        .map(|&q| pool.submit(PrimesUpToCold(q)))
        .collect();
    for (h, expected) in handles.into_iter().zip(&answers) {
        assert_eq!(h.await?, *expected);
    }
    let cold = start.elapsed();
    pool.shutdown().await;
    println!(
        "without state: 10 queries in {:.0} ms ({:.0} ms per query, against {:.3} ms with state)",
        cold.as_secs_f64() * 1e3,
        cold.as_secs_f64() * 1e3 / 10.0,
        queries_took.as_secs_f64() * 1e3 / 200.0
    );

    // A recycled worker is a new process: it runs the initializer again.
    let pool = ProcessPoolExecutor::builder()
        .workers(2)
        .max_tasks_per_worker(50)
        .initializer(LoadTable)
        .build()
        .await?;
    let handles: Vec<_> = queries
        .iter()
        .map(|&q| pool.submit(PrimesUpTo(q)))
        .collect();
    let mut loads = BTreeMap::<u32, usize>::new();
    for h in handles {
        *loads.entry(h.await?.1).or_default() += 1;
    }
    pool.shutdown().await;
    println!(
        "max_tasks_per_worker(50): 200 queries answered by {} tables, each loaded once by its \
         own worker: {:?}",
        loads.len(),
        loads.values().collect::<Vec<_>>()
    );
    Ok(())
}
