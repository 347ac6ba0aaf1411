//! A streaming task: a worker emits items while it runs (like a Python
//! generator), the host consumes them as a `Stream`, and a slow consumer
//! slows the producer down instead of piling items up in memory.
//!
//! Run with: `cargo run --release --example streaming`

use std::time::{Duration, Instant};

use futures::StreamExt;
use procpool::{Emitter, ProcessPoolExecutor, StreamTask};
use serde::{Deserialize, Serialize};

/// Emits the primes below `limit`; returns how many it found.
#[derive(Serialize, Deserialize)]
struct Primes {
    limit: u64,
}

impl StreamTask for Primes {
    type Item = u64;
    type Output = u64;

    fn run(self, items: &mut Emitter<u64>) -> u64 {
        let mut found = 0;
        for n in 2..self.limit {
            if (2..).take_while(|d| d * d <= n).all(|d| n % d != 0) {
                found += 1;
                if !items.emit(n) {
                    break; // the consumer went away: stop working
                }
            }
        }
        found
    }
}
procpool::register_stream!(Primes);

#[tokio::main]
async fn main() {
    procpool::init();
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .build()
        .await
        .expect("the pool should start");

    let (mut primes, count) = pool.submit_stream(Primes { limit: 200_000 });
    let t = Instant::now();
    let mut last = 0;
    let mut seen = 0;
    while let Some(p) = primes.next().await {
        last = p.expect("a bad item");
        seen += 1;
        if seen <= 5 {
            // A slow start: the worker waits for us after 16 items.
            tokio::time::sleep(Duration::from_millis(100)).await;
            println!("prime #{seen}: {last}");
        }
    }
    let count = count.await.expect("the job failed");
    println!(
        "{seen} primes streamed (the worker counted {count}); the largest below 200000 is {last}; {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );

    // Taking only what we need: dropping the stream stops the producer.
    let (primes, count) = pool.submit_stream(Primes { limit: u64::MAX });
    let first: Vec<u64> = primes
        .take(10)
        .map(|p| p.expect("a bad item"))
        .collect()
        .await;
    println!("the first ten primes: {first:?}");
    println!(
        "the endless job after the stream was dropped: {:?}",
        count.await
    );
    pool.shutdown().await;
}
