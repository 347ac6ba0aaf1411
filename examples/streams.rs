//! Many jobs at once: results as they complete, an ordered and a batched
//! `map`, and a timeout that really stops the work.
//!
//! Run with: `cargo run --release --example streams`

use std::time::{Duration, Instant};

use futures::StreamExt;
use procpool::{Error, JobOptions, ProcessPoolExecutor, Task};
use serde::{Deserialize, Serialize};

/// Sleeps for `ms` milliseconds, then returns it.
#[derive(Serialize, Deserialize)]
struct Nap {
    ms: u64,
}

impl Task for Nap {
    type Output = u64;
    fn run(self) -> u64 {
        std::thread::sleep(Duration::from_millis(self.ms));
        self.ms
    }
}
procpool::register!(Nap);

/// A cheap job, for map.
#[derive(Serialize, Deserialize)]
struct Cube(u64);

impl Task for Cube {
    type Output = u64;
    fn run(self) -> u64 {
        self.0 * self.0 * self.0
    }
}
procpool::register!(Cube);

/// A job that would run for a minute unless stopped.
#[derive(Serialize, Deserialize)]
struct Forever;

impl Task for Forever {
    type Output = ();
    fn run(self) {
        loop {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
procpool::register!(Forever);

#[tokio::main]
async fn main() {
    procpool::init();
    let pool = ProcessPoolExecutor::builder()
        .workers(2)
        .build()
        .await
        .expect("the pool should start");

    println!("-- as_completed: results in the order the jobs finish");
    let handles: Vec<_> = [300, 100, 200, 50]
        .into_iter()
        .map(|ms| pool.submit(Nap { ms }))
        .collect();
    let mut done = procpool::as_completed(handles);
    while let Some((id, result)) = done.next().await {
        println!("{id} finished: slept {} ms", result.expect("a nap failed"));
    }

    println!("-- map: 100,000 cubes in input order, 1,000 per batch");
    let t = Instant::now();
    let cubes: Vec<u64> = pool
        .map((0..100_000u64).map(Cube))
        .chunk_size(1000)
        .map(|r| r.expect("a cube failed"))
        .collect()
        .await;
    assert!(
        cubes
            .iter()
            .enumerate()
            .all(|(i, c)| *c == (i as u64).pow(3))
    );
    println!(
        "{} results in {:.0} ms; the last is {}",
        cubes.len(),
        t.elapsed().as_secs_f64() * 1e3,
        cubes[cubes.len() - 1]
    );

    println!("-- map_unordered over naps: first to finish comes first");
    let order: Vec<u64> = pool
        .map_unordered([120, 10, 60].into_iter().map(|ms| Nap { ms }))
        .map(|r| r.expect("a nap failed"))
        .collect()
        .await;
    println!("completion order: {order:?}");

    println!("-- timeouts stop the work");
    let t = Instant::now();
    let e = pool
        .submit_with(
            Forever,
            JobOptions::new().timeout(Duration::from_millis(200)),
        )
        .await
        .unwrap_err();
    println!(
        "job timeout: {e} (after {:.0} ms)",
        t.elapsed().as_secs_f64() * 1e3
    );
    assert!(matches!(e, Error::TimedOut { .. }));

    let t = Instant::now();
    let r = tokio::time::timeout(Duration::from_millis(200), pool.submit(Forever)).await;
    assert!(r.is_err());
    // Dropping the handle (inside tokio's timeout) cancelled the job; its
    // worker is stopped and replaced, so the pool serves again at once.
    let n = pool.submit(Cube(3)).await.expect("the pool serves again");
    println!(
        "tokio::time::timeout gave up after 200 ms; the next job returned {n} {:.0} ms after the start",
        t.elapsed().as_secs_f64() * 1e3
    );
    println!("stats: {:?}", pool.stats());
    pool.shutdown().await;
}
