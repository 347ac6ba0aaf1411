//! A value larger than `max_frame_size` fails as soon as its encoding
//! passes the limit, with an error that names the limit and how to raise
//! it, instead of being encoded in full first. The elapsed times are
//! printed (not asserted) for the record.

mod support;

use std::time::Instant;

use procpool::{Error, ProcessPoolExecutor, SerdeStage, Task};
use serde::{Deserialize, Serialize};
use support::*;

procpool::init_before_main!();

const MAX: usize = 1 << 20;
const HUGE: usize = 512 << 20;

/// Returns `HUGE` zero bytes, as one byte string (`serde_bytes`) or as a
/// plain `Vec<u8>` (a sequence of `HUGE` single bytes).
#[derive(Serialize, Deserialize)]
struct Zeros {
    as_bytes: bool,
}

#[derive(Serialize, Deserialize)]
enum Huge {
    Bytes(#[serde(with = "serde_bytes")] Vec<u8>),
    Plain(Vec<u8>),
}

impl Task for Zeros {
    type Output = Huge;
    fn run(self) -> Huge {
        if self.as_bytes {
            Huge::Bytes(vec![0; HUGE])
        } else {
            Huge::Plain(vec![0; HUGE])
        }
    }
}
procpool::register!(Zeros);

/// Carries its payload to the worker.
#[derive(Serialize, Deserialize)]
struct Carry(Vec<u8>);

impl Task for Carry {
    type Output = usize;
    fn run(self) -> usize {
        self.0.len()
    }
}
procpool::register!(Carry);

async fn small_pool() -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .workers(1)
        .max_frame_size(MAX)
        .build()
        .await
        .expect("the pool should start")
}

fn assert_names_the_limit(message: &str) {
    assert!(
        message.contains(&format!(
            "larger than the maximum frame size (`max_frame_size`) of {MAX} bytes"
        )),
        "{message}"
    );
    assert!(message.contains("Builder::max_frame_size"), "{message}");
}

#[tokio::test]
async fn a_huge_output_fails_early_with_an_error_naming_max_frame_size() {
    let pool = small_pool().await;
    for as_bytes in [true, false] {
        let started = Instant::now();
        let Err(e) = bounded("a huge output", pool.submit(Zeros { as_bytes })).await else {
            panic!("an output over max_frame_size must fail");
        };
        eprintln!(
            "a {HUGE}-byte output ({}) over a {MAX}-byte max_frame_size failed in {:.3} s",
            if as_bytes {
                "serde_bytes"
            } else {
                "plain Vec<u8>"
            },
            started.elapsed().as_secs_f64()
        );
        match &e {
            Error::Serialization {
                stage: SerdeStage::EncodeOutput,
                message,
                ..
            } => assert_names_the_limit(message),
            other => panic!("expected an EncodeOutput error, got {other:?}"),
        }
    }
    // Not the worker's fault: it keeps serving.
    let n = bounded("a small job", pool.submit(Carry(vec![1; 10])))
        .await
        .unwrap();
    assert_eq!(n, 10);
    assert_eq!(pool.stats().respawns, 0);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn a_huge_task_fails_at_submit_with_an_error_naming_max_frame_size() {
    let pool = small_pool().await;
    let task = Carry(vec![0; 64 << 20]);
    let started = Instant::now();
    let e = pool.try_submit(task).map(drop).unwrap_err();
    eprintln!(
        "a {}-byte task over a {MAX}-byte max_frame_size failed in {:.3} s",
        64 << 20,
        started.elapsed().as_secs_f64()
    );
    match &e {
        Error::Protocol { message } => {
            assert!(message.contains("Carry` is too large"), "{message}");
            assert_names_the_limit(message);
        }
        other => panic!("expected a Protocol error, got {other:?}"),
    }
    bounded("shutdown", pool.shutdown()).await;
}
