//! In a binary built with `panic = "abort"`, a panicking task still fails
//! its job with `Error::Panicked` (message and location), not
//! `WorkerDied`, and the pool replaces the worker: the next job succeeds,
//! and so do jobs that were waiting behind the panicking one.
//!
//! The test binary itself unwinds, so this builds the small host in
//! `tests/fixtures/panic-abort` (a workspace member that depends on procpool
//! alone, so a cold build compiles only procpool's dependencies) with the
//! `panic-abort` profile, into its own target directory under `target/` so
//! it does not wait for the lock of the one `cargo test` holds, and runs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

procpool::init_before_main!();

/// A cold build of the example and its dependencies on a busy machine.
const BUILD_PATIENCE: Duration = Duration::from_secs(30 * 60);
/// Running the example: a pool of one worker, two jobs.
const RUN_PATIENCE: Duration = Duration::from_secs(120);

/// Runs `cmd` to completion within `patience`, killing it otherwise;
/// returns its status and stdout.
fn run(mut cmd: Command, what: &str, patience: Duration) -> (std::process::ExitStatus, String) {
    let out_path = std::env::temp_dir().join(format!(
        "procpool-panic-abort-{}-{}.out",
        std::process::id(),
        what.replace(' ', "-")
    ));
    let out = std::fs::File::create(&out_path).unwrap();
    let mut child = cmd
        .stdout(Stdio::from(out))
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: could not start: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > patience {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {patience:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    (status, stdout)
}

fn cargo() -> Option<PathBuf> {
    // `cargo test` tells its tests which cargo runs them.
    let cargo = std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from);
    Command::new(&cargo)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()
        .filter(|s| s.success())
        .map(|_| cargo)
}

#[test]
fn a_panic_in_an_abort_build_is_reported_as_a_panic_and_the_worker_replaced() {
    let Some(cargo) = cargo() else {
        eprintln!(
            "\n\n*** SKIPPED a_panic_in_an_abort_build_is_reported_as_a_panic_and_the_worker_\
             replaced: `cargo` is not on PATH, so the panic = \"abort\" example cannot be built \
             ***\n\n"
        );
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = root.join("target").join("panic-abort");
    let mut build = Command::new(&cargo);
    build
        .current_dir(root)
        .args([
            "build",
            "--profile",
            "panic-abort",
            "--package",
            "procpool-panic-abort-fixture",
            "--bin",
            "panic_abort",
        ])
        .arg("--target-dir")
        .arg(&target);
    let started = Instant::now();
    let (status, _) = run(build, "building the example", BUILD_PATIENCE);
    assert!(status.success(), "building the panic-abort fixture failed");
    eprintln!(
        "the panic-abort example built in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let exe = target.join("panic-abort").join("panic_abort");
    let (status, stdout) = run(Command::new(&exe), "the example", RUN_PATIENCE);
    assert!(
        status.success(),
        "the example failed: {status}; it printed:\n{stdout}"
    );
    let line = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{stdout}"))
            .to_owned()
    };
    assert_eq!(
        line("panic strategy: "),
        "abort",
        "the example must abort on panics"
    );

    let first = line("first: ");
    let rest = first
        .strip_prefix("panicked location=")
        .unwrap_or_else(|| panic!("the panicking job should fail with Panicked, got: {first}"));
    let (location, message) = rest.split_once(" message=").expect("location and message");
    let panic_line = message
        .strip_prefix("abort boom (line ")
        .and_then(|l| l.strip_suffix(')'))
        .unwrap_or_else(|| panic!("unexpected panic message {message:?}"));
    assert!(
        location.starts_with(&format!(
            "tests/fixtures/panic-abort/src/main.rs:{panic_line}:"
        )),
        "the location {location} should be the example's panic, at line {panic_line}"
    );

    assert_eq!(
        line("second: "),
        "ok 42",
        "the next job runs on a replacement worker"
    );
    assert_eq!(
        line("queued behind: "),
        "panicked=true ok=3",
        "jobs sent ahead to a worker that aborts run on its replacement"
    );
    assert_eq!(line("respawns: "), "2", "each aborted worker was replaced");
}
