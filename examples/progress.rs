//! Progress on long work: a terminal progress bar over a long `map`, and a
//! single long job reporting its own progress from inside the worker.
//!
//! Run with: `cargo run --release --example progress`

use std::time::Duration;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use procpool::{ProcessPoolExecutor, Task};
use serde::{Deserialize, Serialize};

/// A small piece of work (about 10 ms).
#[derive(Serialize, Deserialize)]
struct Chunk(u64);

impl Task for Chunk {
    type Output = u64;
    fn run(self) -> u64 {
        std::thread::sleep(Duration::from_millis(10));
        self.0 * 2
    }
}
procpool::register!(Chunk);

/// One long job that reports how far it got.
#[derive(Serialize, Deserialize)]
struct Render {
    frames: u64,
}

impl Task for Render {
    type Output = u64;
    fn run(self) -> u64 {
        for f in 1..=self.frames {
            std::thread::sleep(Duration::from_millis(15));
            procpool::report_progress_message(f, Some(self.frames), &format!("frame {f}"));
        }
        self.frames
    }
}
procpool::register!(Render);

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:40}] {pos}/{len} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_owned());
    bar
}

#[tokio::main]
async fn main() {
    procpool::init();
    let pool = ProcessPoolExecutor::builder()
        .build()
        .await
        .expect("the pool should start");

    // A long map: the bar counts results as they arrive.
    let n = 400;
    let map_bar = bar(n, "map");
    let mut results = pool.map((0..n).map(Chunk));
    let mut sum = 0;
    while let Some(r) = results.next().await {
        sum += r.expect("a chunk failed");
        map_bar.inc(1);
    }
    map_bar.finish_with_message(format!("sum {sum}"));

    // One job reporting its own progress through its handle.
    let job = pool.submit(Render { frames: 120 });
    let job_bar = bar(120, "render");
    let mut progress = job.progress();
    let watcher = {
        let job_bar = job_bar.clone();
        tokio::spawn(async move {
            while progress.changed().await.is_ok() {
                if let Some(p) = progress.borrow_and_update().clone() {
                    job_bar.set_position(p.done);
                    job_bar.set_message(p.message.unwrap_or_default());
                }
            }
        })
    };
    let frames = job.await.expect("the render failed");
    let _ = watcher.await;
    job_bar.finish_with_message(format!("{frames} frames rendered"));
    // The bars only draw on a terminal; say what happened either way.
    println!("map of {n} chunks: sum {sum}; render job: {frames} frames");
    pool.shutdown().await;
}
