//! Jobs that fail at submit because of their task (it does not serialize,
//! it is larger than the maximum frame size, its type is not registered)
//! count once each in `stats().failed`, by every way of submitting; a
//! submission the pool refuses (after shutdown) does not.

mod support;

use futures::StreamExt;
use procpool::{Emitter, Error, ProcessPoolExecutor, StreamTask, Task};
use serde::{Deserialize, Serialize};
use support::*;

procpool::init_before_main!();

/// Refuses to serialize when `fail` is set; otherwise returns its payload's
/// length.
#[derive(Deserialize)]
struct Maybe {
    fail: bool,
    payload: Vec<u8>,
}

impl Serialize for Maybe {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.fail {
            return Err(serde::ser::Error::custom("refused"));
        }
        (self.fail, &self.payload).serialize(s)
    }
}

impl Task for Maybe {
    type Output = usize;
    fn run(self) -> usize {
        self.payload.len()
    }
}
procpool::register!(Maybe);

impl StreamTask for Maybe {
    type Item = u8;
    type Output = usize;
    fn run(self, _: &mut Emitter<u8>) -> usize {
        self.payload.len()
    }
}

/// Never registered.
#[derive(Serialize, Deserialize)]
struct Unregistered;

impl Task for Unregistered {
    type Output = ();
    fn run(self) {}
}

fn bad() -> Maybe {
    Maybe {
        fail: true,
        payload: Vec::new(),
    }
}

fn good(len: usize) -> Maybe {
    Maybe {
        fail: false,
        payload: vec![7; len],
    }
}

#[tokio::test]
async fn each_job_failing_at_submit_counts_once_in_failed() {
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .max_frame_size(64 * 1024)
        .build()
        .await
        .expect("the pool should start");
    let mut expected_failed = 0;

    // Three serialization failures, by submit, try_submit and submit_wait.
    let e = bounded("a bad job", pool.submit(bad())).await.unwrap_err();
    assert!(matches!(e, Error::Serialization { .. }), "{e:?}");
    assert!(pool.try_submit(bad()).is_err());
    let e = bounded("a bad job", pool.submit_wait(bad()).await)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Serialization { .. }), "{e:?}");
    expected_failed += 3;
    assert_eq!(pool.stats().failed, expected_failed, "{:?}", pool.stats());

    // Too large for a frame; and a type that is not registered.
    let e = bounded("a huge job", pool.submit(good(1 << 20)))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Protocol { .. }), "{e:?}");
    let e = bounded("an unregistered job", pool.submit(Unregistered))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotRegistered { .. }), "{e:?}");
    expected_failed += 2;
    assert_eq!(pool.stats().failed, expected_failed, "{:?}", pool.stats());

    // A streaming job, and a chunked map (one batch job) that fail to
    // serialize.
    let (items, handle) = pool.submit_stream(bad());
    assert!(bounded("a bad stream", handle).await.is_err());
    assert_eq!(bounded("its items", items.count()).await, 0);
    let results: Vec<_> = bounded(
        "a bad chunked map",
        pool.map([good(1), bad(), good(2)])
            .chunk_size(3)
            .collect::<Vec<_>>(),
    )
    .await;
    assert!(results.iter().all(Result::is_err), "the batch failed whole");
    expected_failed += 2;
    let stats = pool.stats();
    assert_eq!(stats.failed, expected_failed, "{stats:?}");
    // Nothing else moved: no job was queued, ran, completed or cancelled.
    assert_eq!(
        (
            stats.queued,
            stats.running,
            stats.completed,
            stats.cancelled
        ),
        (0, 0, 0, 0),
        "{stats:?}"
    );

    // A good job still counts as completed; dropping a handle that failed
    // at submit cancels nothing.
    assert_eq!(
        bounded("a good job", pool.submit(good(5))).await.unwrap(),
        5
    );
    drop(pool.submit(bad()));
    expected_failed += 1;
    let stats = pool.stats();
    assert_eq!(
        (stats.completed, stats.failed, stats.cancelled),
        (1, expected_failed, 0),
        "{stats:?}"
    );

    // After shutdown, a submission is refused, not counted as a job.
    bounded("shutdown", pool.shutdown()).await;
    let e = bounded("a job after shutdown", pool.submit(bad()))
        .await
        .unwrap_err();
    assert!(e.is_shutdown(), "{e:?}");
    assert_eq!(pool.stats().failed, expected_failed);
}
