//! The initializer's own bound: `handshake_timeout` bounds only the
//! handshake, and `initializer_timeout` (none by default) the initializer.

mod support;

#[path = "support/procfs.rs"]
mod procfs;
#[path = "support/tasks.rs"]
mod tasks;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use procfs::*;
use procpool::{Error, ProcessPoolExecutor, Task};
use serde::{Deserialize, Serialize};
use support::*;
use tasks::*;

procpool::init_before_main!();

/// An initializer that sleeps.
#[derive(Serialize, Deserialize)]
struct SlowInit {
    ms: u64,
}
impl Task for SlowInit {
    type Output = ();
    fn run(self) {
        std::thread::sleep(Duration::from_millis(self.ms));
    }
}
procpool::register!(SlowInit);

#[tokio::test]
async fn a_slow_initializer_does_not_count_against_the_handshake_timeout() {
    // The initializer takes longer than the whole handshake timeout, which
    // is still generous for the handshake itself on a loaded machine.
    let pool = bounded(
        "build",
        ProcessPoolExecutor::builder()
            .workers(1)
            .handshake_timeout(Duration::from_secs(3))
            .initializer(SlowInit { ms: 5_000 })
            .build(),
    )
    .await
    .expect("a slow initializer must not fail as a missing handshake");
    assert_eq!(bounded("a job", pool.submit(Square(7))).await.unwrap(), 49);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn an_initializer_over_its_timeout_fails_build_and_its_worker_is_gone() {
    // Tag the pool's workers, and watch this process's children for them
    // while `build()` runs, to learn their pids.
    let tag = format!("slow-init-{}", std::process::id());
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let watcher = {
        let (tag, stop, seen) = (tag.clone(), stop.clone(), seen.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                seen.lock().unwrap().extend(tagged_children(&tag));
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let e = bounded(
        "build",
        ProcessPoolExecutor::builder()
            .workers(1)
            .env(CHAOS_TAG, &tag)
            .initializer_timeout(Duration::from_millis(300))
            .initializer(SlowInit { ms: 5_000 })
            .build(),
    )
    .await
    .expect_err("an initializer over its timeout must fail build");
    stop.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    assert!(matches!(e, Error::Initializer { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("initializer_timeout"), "{text}");
    assert!(text.contains("300ms"), "{text}");
    assert!(text.contains("SlowInit"), "{text}");

    // The worker was killed and reaped before build() returned: not alive,
    // not a zombie child, not an orphan anywhere.
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "the watcher never saw the worker");
    let me = std::process::id();
    for pid in &seen {
        assert!(
            !matches!(proc_state(*pid), Some((_, ppid)) if ppid == me),
            "the worker {pid} is still a child of the host: {:?}",
            proc_state(*pid)
        );
    }
    assert_eq!(tagged_processes(&tag), Vec::<u32>::new());
}
