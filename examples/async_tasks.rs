//! Async tasks: I/O-bound work isolated in worker processes, many jobs in
//! flight per worker, and timeouts that drop the task inside the worker.
//!
//! The host serves a slow "backend" on localhost (every request waits 50 ms
//! before the answer, like a remote API). Workers fetch from it and parse
//! the answer. The same 200 fetches run three ways on 2 workers:
//!
//! - a blocking `Task` (`std::net`), one job per worker at a time;
//! - an `AsyncTask` (`tokio::net`), one job per worker at a time;
//! - the same `AsyncTask` with `jobs_per_worker(32)`.
//!
//! Then a fetch from an endpoint that never answers times out: the task's
//! future is dropped inside the worker (its guard says so on stderr), and
//! the worker goes on serving.
//!
//! Run with: `cargo run --release --example async_tasks`

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use futures::StreamExt;
use procpool::{AsyncTask, Error, JobOptions, ProcessPoolExecutor, Task};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// Asks the backend for `words` words and returns how many bytes of them
/// were vowels (the "parsing").
#[derive(Serialize, Deserialize)]
struct Fetch {
    addr: String,
    words: u32,
}

impl AsyncTask for Fetch {
    type Output = u64;

    async fn run(self) -> u64 {
        // Dropped with the future: on completion, or inside the worker when
        // the job is cancelled or times out.
        let _guard = Guard(self.words);
        let mut conn = tokio::net::TcpStream::connect(&self.addr)
            .await
            .expect("the backend is up");
        conn.write_all(format!("{}\n", self.words).as_bytes())
            .await
            .expect("request sent");
        let mut line = String::new();
        tokio::io::BufReader::new(conn)
            .read_line(&mut line)
            .await
            .expect("answer read");
        count_vowels(&line)
    }
}
procpool::register!(Fetch);

/// The same fetch with blocking I/O.
#[derive(Serialize, Deserialize)]
struct FetchBlocking {
    addr: String,
    words: u32,
}

impl Task for FetchBlocking {
    type Output = u64;

    fn run(self) -> u64 {
        let mut conn = std::net::TcpStream::connect(&self.addr).expect("the backend is up");
        conn.write_all(format!("{}\n", self.words).as_bytes())
            .expect("request sent");
        let mut line = String::new();
        BufReader::new(conn)
            .read_line(&mut line)
            .expect("answer read");
        count_vowels(&line)
    }
}
procpool::register!(FetchBlocking);

struct Guard(u32);

impl Drop for Guard {
    fn drop(&mut self) {
        if procpool::cancelled() {
            eprintln!(
                "fetch of {} words: dropped inside worker {} after a cancel",
                self.0,
                std::process::id()
            );
        }
    }
}

fn count_vowels(s: &str) -> u64 {
    s.bytes().filter(|b| b"aeiou".contains(b)).count() as u64
}

/// The slow backend: answers "<words>\n" with that many words after 50 ms;
/// a request for 0 words never gets an answer.
async fn backend() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address").to_string();
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let (r, mut w) = conn.into_split();
                let mut line = String::new();
                let mut r = tokio::io::BufReader::new(r);
                if r.read_line(&mut line).await.is_err() {
                    return;
                }
                let words: usize = line.trim().parse().unwrap_or(0);
                if words == 0 {
                    // Hold the connection open and say nothing.
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                let mut body = "procpool ".repeat(words);
                body.push('\n');
                let _ = w.write_all(body.as_bytes()).await;
            });
        }
    });
    addr
}

const FETCHES: u32 = 200;

#[tokio::main]
async fn main() -> Result<(), Error> {
    procpool::init();
    let addr = backend().await;
    let expected: u64 = (1..=FETCHES).map(|w| 3 * u64::from(w)).sum();

    let mut timings = Vec::new();
    for (label, jobs, blocking) in [
        ("blocking Task, 1 job per worker", 1, true),
        ("AsyncTask, 1 job per worker", 1, false),
        ("AsyncTask, 32 jobs per worker", 32, false),
    ] {
        let pool = ProcessPoolExecutor::builder()
            .workers(2)
            .jobs_per_worker(jobs)
            .build()
            .await?;
        let start = Instant::now();
        let vowels: u64 = if blocking {
            let addr = addr.clone();
            let tasks = (1..=FETCHES).map(move |words| FetchBlocking {
                addr: addr.clone(),
                words,
            });
            sum(pool.map_unordered(tasks)).await?
        } else {
            let addr = addr.clone();
            let tasks = (1..=FETCHES).map(move |words| Fetch {
                addr: addr.clone(),
                words,
            });
            sum(pool.map_unordered(tasks)).await?
        };
        let took = start.elapsed();
        assert_eq!(vowels, expected);
        println!(
            "{label:<34} {FETCHES} fetches in {:>7.1} ms",
            took.as_secs_f64() * 1e3
        );
        timings.push(took);
        pool.shutdown().await;
    }
    println!(
        "speedup of 32 async jobs per worker over blocking: {:.1}x",
        timings[0].as_secs_f64() / timings[2].as_secs_f64()
    );

    // A fetch that never gets an answer, with a timeout: the future is
    // dropped inside the worker, which keeps serving.
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .jobs_per_worker(4)
        .build()
        .await?;
    let pid = pool.worker_pids()[0];
    let stuck = pool.submit_with(
        Fetch {
            addr: addr.clone(),
            words: 0,
        },
        JobOptions::new().timeout(Duration::from_millis(300)),
    );
    let ok = pool.submit(Fetch {
        addr: addr.clone(),
        words: 10,
    });
    println!("stuck fetch: {}", stuck.await.unwrap_err());
    println!("fetch beside it: {} vowels", ok.await?);
    let again = pool.submit(Fetch { addr, words: 1 }).await?;
    println!(
        "after the timeout the same worker ({}) still serves: {again} vowels",
        if pool.worker_pids() == [pid] {
            "not restarted"
        } else {
            "restarted"
        }
    );
    pool.shutdown().await;
    Ok(())
}

async fn sum(results: procpool::MapStream<u64>) -> Result<u64, Error> {
    let mut total = 0;
    let mut results = results;
    while let Some(r) = results.next().await {
        total += r?;
    }
    Ok(total)
}
