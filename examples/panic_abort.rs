//! A panicking task in a binary built with `panic = "abort"`: the job
//! still fails with `Error::Panicked` (message and location), the worker
//! that aborted is replaced, and the next job succeeds.
//!
//! Run with: `cargo run --profile panic-abort --example panic_abort`
//! (`tests/task_panic_abort.rs` builds and runs it). It prints one line per
//! job, `first: ...` and `second: ...`, then `queued behind: ...` for a
//! panic with jobs waiting behind it, `respawns: N` and `panic strategy:
//! ...`.

use procpool::{Error, ProcessPoolExecutor, Task};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Boom;

impl Task for Boom {
    type Output = ();

    fn run(self) {
        panic!("abort boom (line {})", line!());
    }
}
procpool::register!(Boom);

#[derive(Serialize, Deserialize)]
struct Answer;

impl Task for Answer {
    type Output = u32;

    fn run(self) -> u32 {
        42
    }
}
procpool::register!(Answer);

fn main() {
    procpool::init();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let pool = ProcessPoolExecutor::builder()
            .workers(1)
            .build()
            .await
            .expect("the pool should start");
        match pool.submit(Boom).await {
            Err(Error::Panicked { message, location }) => println!(
                "first: panicked location={} message={message}",
                location.as_deref().unwrap_or("unknown")
            ),
            other => println!("first: other {other:?}"),
        }
        match pool.submit(Answer).await {
            Ok(v) => println!("second: ok {v}"),
            Err(e) => println!("second: error {e:?}"),
        }
        // A panic with jobs queued behind it (sent ahead to the worker):
        // only the panicking job fails; the others run on the replacement.
        let boom = pool.submit(Boom);
        let answers: Vec<_> = (0..3).map(|_| pool.submit(Answer)).collect();
        let panicked = boom.await.as_ref().is_err_and(Error::is_panic);
        let mut ok = 0;
        for answer in answers {
            if answer.await == Ok(42) {
                ok += 1;
            }
        }
        println!("queued behind: panicked={panicked} ok={ok}");
        println!("respawns: {}", pool.stats().respawns);
        pool.shutdown().await;
    });
    let strategy = if cfg!(panic = "abort") {
        "abort"
    } else {
        "unwind"
    };
    println!("panic strategy: {strategy}");
}
