//! Workers show the program's name, not `exe`: `ps`, `top`, `pstree` and
//! `pgrep -x` (which read `/proc/PID/comm`) name them like the host, and
//! their command line (`ps -o args`, `/proc/PID/cmdline`) reads
//! `/path/to/program (procpool worker)`. A worker started with
//! `Builder::program` keeps the name it was started under.

mod support;

use std::os::unix::ffi::OsStrExt;

use procpool::ProcessPoolExecutor;
use support::*;

procpool::init_before_main!();

/// The process name the kernel gives a program file: its first 15 bytes.
fn comm_of(file_name: &[u8]) -> String {
    String::from_utf8_lossy(&file_name[..file_name.len().min(15)]).into_owned()
}

fn read_comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap()
        .trim_end_matches('\n')
        .to_owned()
}

fn read_argv(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    raw.split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

#[tokio::test]
async fn a_worker_shows_the_program_name_and_that_it_is_a_worker() {
    let exe = std::env::current_exe().unwrap();
    let name = comm_of(exe.file_name().unwrap().as_bytes());
    assert_ne!(name, "exe");
    let pool = pool(1).await;
    let pids = pool.worker_pids();
    assert_eq!(pids.len(), 1);
    let pid = pids[0];

    assert_eq!(read_comm(pid), name, "the worker's /proc/{pid}/comm");
    // `pgrep -x NAME` compares NAME with comm: the host and its workers
    // answer to the same name.
    assert_eq!(read_comm(std::process::id()), name, "the host's comm");
    let argv = read_argv(pid);
    assert_eq!(
        argv.first().map(String::as_str),
        Some(format!("{} (procpool worker)", exe.display()).as_str()),
        "the worker's command line: {argv:?}"
    );

    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn a_worker_started_under_another_name_keeps_it() {
    let exe = std::env::current_exe().unwrap();
    let dir = temp_path("program-alias");
    std::fs::create_dir(&dir).unwrap();
    let alias = std::path::Path::new(&dir).join("pp-alias-of-the-test-binary");
    std::os::unix::fs::symlink(&exe, &alias).unwrap();
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .program(&alias)
        .build()
        .await
        .expect("the pool should start");
    let pid = pool.worker_pids()[0];

    assert_eq!(read_comm(pid), comm_of(b"pp-alias-of-the-test-binary"));
    let argv = read_argv(pid);
    assert_eq!(
        argv.first().map(String::as_str),
        Some(alias.to_str().unwrap()),
        "the worker's command line: {argv:?}"
    );

    bounded("shutdown", pool.shutdown()).await;
    std::fs::remove_dir_all(&dir).unwrap();
}
