//! Every worker is reaped on every path, also in synchronous hosts
//! (`build_blocking`, `blocking_wait`), where the pool's runtime is the only
//! one (defect 10 of the host-core issue). The tests look at this test
//! process's own children, so they run one at a time.

#[path = "support/procfs.rs"]
mod procfs;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use procpool::{Error, ProcessPoolExecutor, Task};
use serde::{Deserialize, Serialize};

procpool::init_before_main!();

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// An initializer that fails in exactly one worker: the one that creates
/// the marker file first.
#[derive(Serialize, Deserialize)]
struct FailFirst(String);

impl Task for FailFirst {
    type Output = ();
    fn run(self) {
        let first = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&self.0)
            .is_ok();
        assert!(!first, "this worker's initializer fails");
    }
}
procpool::register!(FailFirst);

/// An initializer that takes its time once the marker file exists.
#[derive(Serialize, Deserialize)]
struct SlowIfMarked(String);

impl Task for SlowIfMarked {
    type Output = ();
    fn run(self) {
        if std::path::Path::new(&self.0).exists() {
            std::thread::sleep(Duration::from_millis(1500));
        }
    }
}
procpool::register!(SlowIfMarked);

#[derive(Serialize, Deserialize)]
struct Exit;

impl Task for Exit {
    type Output = ();
    fn run(self) {
        std::process::exit(3);
    }
}
procpool::register!(Exit);

fn marker(name: &str) -> String {
    std::env::temp_dir()
        .join(format!("procpool-reaping-{}-{name}", std::process::id()))
        .display()
        .to_string()
}

/// This process's children: (pid, state), zombies included.
fn children() -> Vec<(u32, char)> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| match procfs::proc_state(pid)? {
            (state, ppid) if ppid == me => Some((pid, state)),
            _ => None,
        })
        .collect()
}

/// Waits (bounded) until this process has no children, live or zombie.
fn assert_no_children_left(what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = children();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: children left (pid, state): {left:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_failed_blocking_build_reaps_the_workers_that_started() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let flag = marker("fail-first");
    let _ = std::fs::remove_file(&flag);
    let e = ProcessPoolExecutor::builder()
        .workers(3)
        .forward_worker_output(false)
        .initializer(FailFirst(flag.clone()))
        .build_blocking()
        .unwrap_err();
    let _ = std::fs::remove_file(&flag);
    assert!(matches!(e, Error::Initializer { .. }), "{e:?}");
    assert_no_children_left("after a failed build_blocking");
}

#[test]
fn a_replacement_that_starts_after_shutdown_now_is_reaped() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let flag = marker("slow-init");
    let _ = std::fs::remove_file(&flag);
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .forward_worker_output(false)
        .initializer(SlowIfMarked(flag.clone()))
        .build_blocking()
        .unwrap();
    std::fs::write(&flag, "x").unwrap();
    // The worker dies; its replacement takes 1.5 s to start.
    let e = pool.submit(Exit).blocking_wait().unwrap_err();
    assert!(e.is_worker_died(), "{e}");
    std::thread::sleep(Duration::from_millis(200));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(pool.shutdown_now());
    drop(rt);
    drop(pool);
    let _ = std::fs::remove_file(&flag);
    assert_no_children_left("after shutdown_now during a replacement's start");
}
