//! File descriptors: a worker holds stdin, stdout, stderr and its two
//! channel descriptors, nothing else, even when the host holds descriptors
//! it inherited without close-on-exec (as after `exec 200<file` in a
//! shell); and processes a task starts see only stdin, stdout and stderr.

mod support;

#[path = "support/procfs.rs"]
mod procfs;

use std::collections::BTreeSet;
use std::os::fd::AsRawFd;
use std::sync::OnceLock;

use procfs::protocol_fds;
use procpool::Task;
use serde::{Deserialize, Serialize};
use support::*;

procpool::init_before_main!();

/// Where the host keeps its leaked descriptor.
const LEAKED_FD: i32 = 200;

/// Opens a file at [`LEAKED_FD`] without close-on-exec in this (host)
/// process, once, and returns its path.
fn leak_a_descriptor() -> &'static str {
    static LEAKED: OnceLock<String> = OnceLock::new();
    LEAKED.get_or_init(|| {
        let path = temp_path("leaked-fd");
        std::fs::write(&path, "leaked").unwrap();
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: dup2 only changes the descriptor table. Nothing else in
        // this test binary uses LEAKED_FD; the copy stays open (and, as
        // dup2 makes it, inheritable) for the life of the process.
        let fd = unsafe { libc::dup2(file.as_raw_fd(), LEAKED_FD) };
        assert_eq!(fd, LEAKED_FD);
        // SAFETY: F_GETFD only reads the descriptor's flags.
        let flags = unsafe { libc::fcntl(LEAKED_FD, libc::F_GETFD) };
        assert_eq!(
            flags & libc::FD_CLOEXEC,
            0,
            "the leaked fd must be inheritable"
        );
        drop(file);
        let _ = std::fs::remove_file(&path);
        path
    })
}

/// `(fd, what it refers to)` for the entries of an `ls -ln` of a
/// `/proc/PID/fd` directory, or of that directory itself, except the one
/// descriptor the listing itself has open on the directory.
fn parse_fd_listing(lines: impl Iterator<Item = (i32, String)>) -> Vec<(i32, String)> {
    let mut out: Vec<(i32, String)> = lines
        .filter(|(_, target)| !(target.starts_with("/proc/") && target.ends_with("/fd")))
        .collect();
    out.sort();
    out
}

/// The worker's open descriptors (`(fd, target)`), and which of them are
/// its protocol channel.
#[derive(Serialize, Deserialize)]
struct WorkerFds;
impl Task for WorkerFds {
    type Output = (Vec<(i32, String)>, Vec<i32>);
    fn run(self) -> (Vec<(i32, String)>, Vec<i32>) {
        // Read the links while the directory is open, so that its own
        // descriptor is listed as the directory (and left out).
        let listing = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .map(|e| {
                let fd = e
                    .unwrap()
                    .file_name()
                    .to_str()
                    .unwrap()
                    .parse::<i32>()
                    .unwrap();
                let target = std::fs::read_link(format!("/proc/self/fd/{fd}"))
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                (fd, target)
            })
            .collect::<Vec<_>>();
        let channel = protocol_fds().into_iter().map(|(fd, _)| fd).collect();
        (parse_fd_listing(listing.into_iter()), channel)
    }
}
procpool::register!(WorkerFds);

/// The open descriptors (`(fd, target)`) of an `ls` a task starts, as
/// `ls -ln /proc/self/fd` lists them.
#[derive(Serialize, Deserialize)]
struct ChildFds;
impl Task for ChildFds {
    type Output = Vec<(i32, String)>;
    fn run(self) -> Vec<(i32, String)> {
        let out = std::process::Command::new("ls")
            .args(["-ln", "/proc/self/fd"])
            .output()
            .expect("ls should start");
        assert!(out.status.success(), "ls failed: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let listing = text
            .lines()
            .filter_map(|line| {
                let (left, target) = line.split_once(" -> ")?;
                let fd = left.split_whitespace().last()?.parse().ok()?;
                Some((fd, target.to_owned()))
            })
            .collect::<Vec<_>>();
        parse_fd_listing(listing.into_iter())
    }
}
procpool::register!(ChildFds);

#[tokio::test]
async fn a_worker_holds_only_stdio_and_its_channel() {
    let leaked = leak_a_descriptor();
    let pool = pool(1).await;
    let (fds, channel) = bounded("listing the worker's fds", pool.submit(WorkerFds))
        .await
        .unwrap();
    assert_eq!(channel.len(), 2, "the channel is two pipes: {channel:?}");
    let numbers: BTreeSet<i32> = fds.iter().map(|(fd, _)| *fd).collect();
    let expected: BTreeSet<i32> = [0, 1, 2].into_iter().chain(channel).collect();
    assert_eq!(numbers, expected, "the worker's fds: {fds:?}");
    assert!(
        fds.iter().all(|(_, target)| !target.contains(leaked)),
        "the host's leaked fd reached the worker: {fds:?}"
    );
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn processes_a_task_starts_inherit_only_stdio() {
    let leaked = leak_a_descriptor();
    let pool = pool(1).await;
    let fds = bounded("listing a task's child's fds", pool.submit(ChildFds))
        .await
        .unwrap();
    let numbers: BTreeSet<i32> = fds.iter().map(|(fd, _)| *fd).collect();
    assert_eq!(
        numbers,
        BTreeSet::from([0, 1, 2]),
        "a process started by a task has: {fds:?}"
    );
    assert!(
        fds.iter().all(|(_, target)| !target.contains(leaked)),
        "the host's leaked fd reached a task's process: {fds:?}"
    );
    bounded("shutdown", pool.shutdown()).await;
}
