//! A host process for tests that kill their host: this test binary,
//! re-executed to run one ignored helper test.

/// Re-executes this test binary to run only the ignored helper test
/// `helper` (a host process for tests that kill their host), with `envs`.
/// Returns the child and a channel of its stdout lines that start with
/// `prefix`.
pub fn start_host_helper(
    helper: &str,
    envs: &[(&str, &str)],
    prefix: &'static str,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader};
    let mut host = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", helper, "--ignored", "--nocapture"])
        .envs(envs.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = host.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with(prefix) {
                let _ = tx.send(line);
            }
        }
    });
    (host, rx)
}
