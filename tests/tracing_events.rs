//! `tracing` spans and events for jobs and workers, and worker output
//! attributed to the job that printed it.

mod support;

#[path = "support/tasks.rs"]
mod tasks;

use std::io::Write;
use std::sync::{Arc, Mutex};

use support::*;
use tasks::*;

procpool::init_before_main!();

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn jobs_and_workers_emit_tracing_events() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let pool = pool(1).await;
    let noisy = pool.submit(Noisy(1));
    let id = noisy.id();
    assert_eq!(bounded("a noisy job", noisy).await.unwrap(), 2);
    assert!(
        bounded("a dying job", pool.submit(Die(Death::Exit(3))))
            .await
            .is_err()
    );
    eventually("the replacement worker", || pool.stats().workers_alive == 1).await;
    bounded("shutdown", pool.shutdown()).await;

    let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    for needle in [
        "procpool worker started",
        "procpool.job",
        "dispatched",
        "finished",
        "procpool worker died",
        "println from a task",
    ] {
        assert!(text.contains(needle), "no {needle:?} in the trace:\n{text}");
    }
    let attributed = text
        .lines()
        .any(|l| l.contains("println from a task") && l.contains(&format!("job={}", id.as_u64())));
    assert!(
        attributed,
        "the job's output is not attributed to it:\n{text}"
    );
}
