//! No orphans: when the host dies, even by SIGKILL mid-job, its workers
//! exit. The test re-executes this test binary as a host (a helper test
//! that only acts when an environment variable is set), kills it, and
//! watches the workers it reported.

mod support;

#[path = "support/host.rs"]
mod host;
#[path = "support/procfs.rs"]
mod procfs;
#[path = "support/tasks.rs"]
mod tasks;

use std::time::{Duration, Instant};

use host::*;
use procfs::*;
use support::*;
use tasks::*;

procpool::init_before_main!();

const ROLE: &str = "PROCPOOL_TEST_HOST_ROLE";

/// Not a test on its own: the host process for the tests below.
#[tokio::test]
#[ignore = "helper: runs only as the host process of host_orphans tests"]
async fn orphan_host_helper() {
    if std::env::var_os(ROLE).is_none() {
        return;
    }
    let pool = pool(2).await;
    let jobs: Vec<_> = (0..2).map(|_| pool.submit(Sleep(120_000))).collect();
    eventually("both jobs running", || pool.stats().running == 2).await;
    let pids = pool.worker_pids();
    println!("WORKERS {} {}", pids[0], pids[1]);
    tokio::time::sleep(Duration::from_secs(120)).await;
    drop(jobs);
}

fn workers_exit_when_the_host_dies_by(signal: i32) {
    let (mut host, rx) = start_host_helper("orphan_host_helper", &[(ROLE, "1")], "WORKERS ");
    let pids: Vec<u32> = match rx.recv_timeout(PATIENCE) {
        Ok(line) => line["WORKERS ".len()..]
            .split(' ')
            .map(|p| p.parse().unwrap())
            .collect(),
        Err(_) => {
            let _ = host.kill();
            panic!("the host helper did not report its workers");
        }
    };
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|&p| process_alive(p)));
    unsafe {
        libc::kill(host.id() as i32, signal);
    }
    let _ = host.wait();
    let killed = Instant::now();
    while pids.iter().any(|&p| process_alive(p)) {
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "workers {pids:?} outlived their host by 20 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!(
        "workers exited {:.1} ms after the host died by signal {signal}",
        killed.elapsed().as_secs_f64() * 1e3
    );
}

#[test]
fn workers_exit_when_the_host_is_killed_with_sigkill_mid_job() {
    workers_exit_when_the_host_dies_by(libc::SIGKILL);
}

#[test]
fn workers_exit_when_the_host_is_interrupted_with_sigint_mid_job() {
    workers_exit_when_the_host_dies_by(libc::SIGINT);
}
