//! A web backend that keeps CPU-heavy work off its async runtime: an axum
//! server whose `POST /hash` runs an iterated hash over the request body on
//! a process pool, while `GET /health` keeps answering.
//!
//! Run with: `cargo run --release --example axum_backend`
//!
//! Environment:
//! - `PORT`: the port on 127.0.0.1 (default 3000).
//! - `WORKERS`: worker processes (default: one per available CPU).
//! - `MODE`: where `/hash` does its work, to compare the approaches with one
//!   binary: `pool` (default; a worker process), `inline` (in the async
//!   handler, blocking a runtime thread: what not to do) or `spawn_blocking`
//!   (tokio's blocking thread pool, in this process).
//!
//! `tests/axum_backend.rs` includes this file as a module (it cannot import
//! an example), so everything but `main` is written to be reused: the task,
//! [`digest`], [`router`] and [`serve`].

use std::fmt;
use std::future::Future;
use std::str::FromStr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use procpool::{Error, ProcessPoolExecutor, Task};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

/// Rounds of hashing when the request does not say: about 50-100 ms of one
/// core in a release build.
pub const DEFAULT_ROUNDS: u64 = 6_000_000;

/// The most rounds a request may ask for (hours of work); more is refused
/// with 400 Bad Request.
pub const MAX_ROUNDS: u64 = 1 << 40;

/// How many `/hash` jobs may wait for a worker; beyond that the server
/// answers 503 at once instead of queueing without bound.
pub const MAX_QUEUED: usize = 1024;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// How often (in rounds) a running job checks whether it was cancelled.
const CHECK_EVERY: u64 = 1 << 16;

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// The CPU-heavy computation: 64-bit FNV-1a over `body`, then `rounds - 1`
/// more rounds of FNV-1a, each over the previous digest mixed with the round
/// number. Deliberately sequential: no round can start before the last one
/// ends.
///
/// `stop` is asked every 65,536 rounds; if it says yes, the work is
/// abandoned and `None` returned.
pub fn digest_until(body: &[u8], rounds: u64, stop: impl Fn() -> bool) -> Option<u64> {
    let mut h = fnv1a(FNV_OFFSET, body);
    for i in 1..rounds {
        if i % CHECK_EVERY == 0 && stop() {
            return None;
        }
        h = fnv1a(h, &(h ^ i).to_le_bytes());
    }
    Some(h)
}

/// [`digest_until`] without a way to stop.
pub fn digest(body: &[u8], rounds: u64) -> u64 {
    digest_until(body, rounds, || false).unwrap_or_default()
}

/// The job sent to a worker process.
#[derive(Serialize, Deserialize)]
pub struct HashJob {
    /// The request body.
    pub body: Vec<u8>,
    /// Rounds of hashing.
    pub rounds: u64,
}

impl Task for HashJob {
    type Output = u64;

    fn run(self) -> u64 {
        // Polling `procpool::cancelled()` lets a cancelled job end by itself
        // and keep its worker; a task that never polls is killed with its
        // worker after the pool's cancel grace period (200 ms by default),
        // and the worker is replaced. The host ignores what a cancelled job
        // returns.
        digest_until(&self.body, self.rounds, procpool::cancelled).unwrap_or_default()
    }
}
procpool::register!(HashJob);

/// Where `/hash` does its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// On the process pool (the point of this example).
    Pool,
    /// In the async handler itself, blocking a runtime worker thread.
    Inline,
    /// On tokio's blocking thread pool, in this process.
    SpawnBlocking,
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pool" => Ok(Mode::Pool),
            "inline" => Ok(Mode::Inline),
            "spawn_blocking" => Ok(Mode::SpawnBlocking),
            other => Err(format!(
                "unknown mode {other:?}: expected pool, inline or spawn_blocking"
            )),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Pool => "pool",
            Mode::Inline => "inline",
            Mode::SpawnBlocking => "spawn_blocking",
        })
    }
}

#[derive(Clone)]
struct AppState {
    pool: ProcessPoolExecutor,
    mode: Mode,
}

#[derive(Deserialize)]
struct HashParams {
    rounds: Option<u64>,
}

type HttpError = (StatusCode, String);

/// The application: `POST /hash?rounds=N` and `GET /health`.
pub fn router(pool: ProcessPoolExecutor, mode: Mode) -> Router {
    Router::new()
        .route("/hash", post(hash))
        .route("/health", get(health))
        .with_state(AppState { pool, mode })
}

async fn health() -> &'static str {
    "ok"
}

/// Answers with the digest as 16 hex digits and a newline.
async fn hash(
    State(app): State<AppState>,
    Query(params): Query<HashParams>,
    body: Bytes,
) -> Result<String, HttpError> {
    let rounds = params.rounds.unwrap_or(DEFAULT_ROUNDS);
    if rounds > MAX_ROUNDS {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("rounds must be at most {MAX_ROUNDS}\n"),
        ));
    }
    let digest = match app.mode {
        Mode::Pool => {
            // If the client disconnects, hyper drops this handler's future,
            // and with it the `JobHandle` being awaited here; dropping a
            // `JobHandle` cancels its job. So a client that goes away frees
            // its worker (or its place in the queue) without any code here.
            let job = HashJob {
                body: body.to_vec(),
                rounds,
            };
            app.pool.submit(job).await.map_err(pool_error)?
        }
        // For comparison only: this blocks one of the runtime's worker
        // threads for the whole computation, stalling every other request
        // scheduled on it (including /health).
        Mode::Inline => digest(&body, rounds),
        // Off the runtime threads, but in this process: a client that
        // disconnects does not stop the computation, and the work competes
        // with the runtime for the same cores without a bound on how many
        // computations run at once (up to tokio's 512 blocking threads).
        Mode::SpawnBlocking => tokio::task::spawn_blocking(move || digest(&body, rounds))
            .await
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")))?,
    };
    Ok(format!("{digest:016x}\n"))
}

fn pool_error(e: Error) -> HttpError {
    let status = match e {
        Error::Overloaded { .. } | Error::Shutdown => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, format!("{e}\n"))
}

/// Serves [`router`] on `listener` until `shutdown` completes, lets the
/// requests in flight finish (axum's graceful shutdown), then shuts the pool
/// down, waiting for its workers to exit.
pub async fn serve(
    listener: TcpListener,
    pool: ProcessPoolExecutor,
    mode: Mode,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let served = axum::serve(listener, router(pool.clone(), mode))
        .with_graceful_shutdown(shutdown)
        .await;
    pool.shutdown().await;
    served
}

// Not compiled into tests/axum_backend.rs, which includes this file as a
// module and has no use for a `main`.
#[cfg(not(test))]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The guard: in a worker process this serves jobs and never returns.
    procpool::init();

    let mode: Mode = match std::env::var("MODE") {
        Ok(m) => m.parse()?,
        Err(_) => Mode::Pool,
    };
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p.parse()?,
        Err(_) => 3000,
    };
    let workers: Option<usize> = match std::env::var("WORKERS") {
        Ok(w) => Some(w.parse()?),
        Err(_) => None,
    };

    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let mut builder = ProcessPoolExecutor::builder().max_queued(MAX_QUEUED);
        if let Some(n) = workers {
            builder = builder.workers(n);
        }
        // WORKER_NICE=10: run the workers at a lower priority than the server.
        if let Some(nice) = std::env::var("WORKER_NICE")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            builder = builder.worker_nice(nice);
        }
        let pool = builder.build().await?;
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        println!(
            "listening on http://{addr} (mode {mode}, {} worker processes {:?})",
            pool.workers(),
            pool.worker_pids()
        );
        println!(
            "try: curl --data-binary 'hello world' 'http://{addr}/hash?rounds={DEFAULT_ROUNDS}'"
        );
        println!("     curl http://{addr}/health");
        println!("stop with Ctrl-C");

        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
            println!("Ctrl-C: finishing requests in flight, then stopping the pool");
        };
        serve(listener, pool.clone(), mode, ctrl_c).await?;
        println!("stopped; pool stats: {:?}", pool.stats());
        Ok(())
    })
}
