//! Counts primes in ranges on a process pool and compares with doing the
//! same work serially in this process.
//!
//! Run with: `cargo run --release --example quickstart`

use std::time::Instant;

use procpool::ProcessPoolExecutor;

/// Counts the primes in `start..end`. The attribute keeps this a plain fn
/// and adds the task `count_primes::new(start, end)` that runs it in a
/// worker process.
#[procpool::task]
fn count_primes(start: u64, end: u64) -> u64 {
    (start..end).filter(|&n| is_prime(n)).count() as u64
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

const CHUNK: u64 = 250_000;
const CHUNKS: u64 = 16;

fn main() {
    // The guard: in a worker process this serves jobs and never returns.
    procpool::init();

    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    rt.block_on(async {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let started = Instant::now();
        let pool = ProcessPoolExecutor::builder()
            .workers(workers)
            .build()
            .await
            .expect("the pool should start");
        println!(
            "started {} worker processes {:?} in {:.1} ms",
            pool.workers(),
            pool.worker_pids(),
            started.elapsed().as_secs_f64() * 1e3
        );

        let ranges: Vec<(u64, u64)> = (0..CHUNKS).map(|i| (i * CHUNK, (i + 1) * CHUNK)).collect();

        let t = Instant::now();
        let serial: Vec<u64> = ranges
            .iter()
            .map(|&(start, end)| count_primes(start, end))
            .collect();
        let serial_time = t.elapsed();

        let t = Instant::now();
        let handles: Vec<_> = ranges
            .iter()
            .map(|&(start, end)| pool.submit(count_primes::new(start, end)))
            .collect();
        let mut parallel = Vec::new();
        for h in handles {
            parallel.push(h.await.expect("a job failed"));
        }
        let pool_time = t.elapsed();

        for ((start, end), n) in ranges.iter().zip(&parallel) {
            println!("primes in {start:>9}..{end:<9}: {n}");
        }
        assert_eq!(serial, parallel, "the pool and the serial run disagree");
        let total: u64 = parallel.iter().sum();
        println!("total primes below {}: {total}", CHUNK * CHUNKS);
        println!(
            "serial in-process: {:.0} ms; pool of {}: {:.0} ms; speedup {:.2}x",
            serial_time.as_secs_f64() * 1e3,
            pool.workers(),
            pool_time.as_secs_f64() * 1e3,
            serial_time.as_secs_f64() / pool_time.as_secs_f64()
        );
        println!("stats: {:?}", pool.stats());
        pool.shutdown().await;
        println!("pool shut down; all workers exited");
    });
}
