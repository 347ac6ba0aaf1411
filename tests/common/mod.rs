//! Tasks and helpers shared by the integration tests. Each test binary
//! includes this module, so each registers these tasks in its own registry.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use procpool::{ProcessPoolExecutor, Task};
use serde::{Deserialize, Serialize};

/// A generous bound for anything that should take milliseconds: the
/// machines running the tests are shared and slow.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub async fn pool(workers: usize) -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .workers(workers)
        .build()
        .await
        .expect("the pool should start")
}

/// Awaits `fut`, failing the test (instead of hanging) after [`PATIENCE`].
pub async fn bounded<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(PATIENCE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {PATIENCE:?}"),
    }
}

/// Polls `cond` until it holds, or fails the test after [`PATIENCE`].
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < PATIENCE,
            "{what} did not happen within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn process_alive(pid: u32) -> bool {
    // A zombie still answers kill(0); look at its state instead.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

#[derive(Serialize, Deserialize)]
pub struct Square(pub u64);
impl Task for Square {
    type Output = u64;
    fn run(self) -> u64 {
        self.0 * self.0
    }
}
procpool::register!(Square);

/// Returns the worker's pid.
#[derive(Serialize, Deserialize)]
pub struct Pid;
impl Task for Pid {
    type Output = u32;
    fn run(self) -> u32 {
        std::process::id()
    }
}
procpool::register!(Pid);

/// Where and what the worker is.
#[derive(Serialize, Deserialize)]
pub struct WhoAmI;
#[derive(Serialize, Deserialize, Debug)]
pub struct Identity {
    pub pid: u32,
    pub ppid: u32,
    pub exe: String,
    pub marker_env: Option<String>,
}
impl Task for WhoAmI {
    type Output = Identity;
    fn run(self) -> Identity {
        Identity {
            pid: std::process::id(),
            ppid: std::os::unix::process::parent_id(),
            exe: std::fs::read_link("/proc/self/exe")
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            marker_env: std::env::var("PROCPOOL_WORKER").ok(),
        }
    }
}
procpool::register!(WhoAmI);

/// Sleeps, then returns its pid.
#[derive(Serialize, Deserialize)]
pub struct Sleep(pub u64);
impl Task for Sleep {
    type Output = u32;
    fn run(self) -> u32 {
        std::thread::sleep(Duration::from_millis(self.0));
        std::process::id()
    }
}
procpool::register!(Sleep);

/// Burns CPU for about the given milliseconds; returns (pid, start, end)
/// as milliseconds since the Unix epoch.
#[derive(Serialize, Deserialize)]
pub struct Spin(pub u64);
impl Task for Spin {
    type Output = (u32, u128, u128);
    fn run(self) -> (u32, u128, u128) {
        let now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
        };
        let start = now();
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(self.0) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            std::hint::black_box(x);
        }
        (std::process::id(), start, now())
    }
}
procpool::register!(Spin);

#[derive(Serialize, Deserialize)]
pub struct Panic(pub String);
impl Task for Panic {
    type Output = ();
    fn run(self) {
        panic!("{}", self.0);
    }
}
procpool::register!(Panic);

/// Ways for a worker to die.
#[derive(Serialize, Deserialize, Clone, Copy, Debug)]
pub enum Death {
    Abort,
    Segfault,
    Exit(i32),
    Signal(i32),
}
#[derive(Serialize, Deserialize)]
pub struct Die(pub Death);
impl Task for Die {
    type Output = ();
    fn run(self) {
        eprintln!("about to die by {:?}", self.0);
        match self.0 {
            Death::Abort => std::process::abort(),
            // A real invalid memory access.
            Death::Segfault => unsafe { std::ptr::write_volatile(8usize as *mut u8, 1) },
            Death::Exit(code) => std::process::exit(code),
            Death::Signal(sig) => unsafe {
                libc::raise(sig);
            },
        }
        // A signal that does not kill (not expected here).
        std::thread::sleep(Duration::from_secs(60));
    }
}
procpool::register!(Die);

/// Prints to stdout and stderr in every way a task might, then returns.
#[derive(Serialize, Deserialize)]
pub struct Noisy(pub u32);
impl Task for Noisy {
    type Output = u32;
    fn run(self) -> u32 {
        use std::io::Write;
        println!("println from a task");
        print!("print without a newline ");
        eprintln!("eprintln from a task");
        let raw = b"raw write to fd 1 like a C library\n\x00\xff garbage bytes\n";
        unsafe {
            libc::write(1, raw.as_ptr().cast(), raw.len());
        }
        let _ = std::io::stdout().flush();
        self.0 + 1
    }
}
procpool::register!(Noisy);

/// Returns `n` bytes.
#[derive(Serialize, Deserialize)]
pub struct Bytes(pub usize);
impl Task for Bytes {
    type Output = Vec<u8>;
    fn run(self) -> Vec<u8> {
        vec![0xab; self.0]
    }
}
procpool::register!(Bytes);

/// Echoes its payload.
#[derive(Serialize, Deserialize)]
pub struct Echo(#[serde(with = "serde_bytes_compat")] pub Vec<u8>);
impl Task for Echo {
    type Output = Vec<u8>;
    fn run(self) -> Vec<u8> {
        self.0
    }
}
procpool::register!(Echo);

mod serde_bytes_compat {
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// Not registered anywhere.
#[derive(Serialize, Deserialize)]
pub struct Unregistered;
impl Task for Unregistered {
    type Output = ();
    fn run(self) {}
}

/// A task whose `Serialize` always fails (in the host).
pub struct FailsToSerialize;
impl Serialize for FailsToSerialize {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("FailsToSerialize refuses"))
    }
}
impl<'de> Deserialize<'de> for FailsToSerialize {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Ok(FailsToSerialize)
    }
}
impl Task for FailsToSerialize {
    type Output = ();
    fn run(self) {}
}
procpool::register!(FailsToSerialize);

/// A task that serializes fine but whose `Deserialize` fails (in the
/// worker).
pub struct FailsToDeserialize;
impl Serialize for FailsToDeserialize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(7)
    }
}
impl<'de> Deserialize<'de> for FailsToDeserialize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let _ = u8::deserialize(d)?;
        Err(serde::de::Error::custom("FailsToDeserialize refuses"))
    }
}
impl Task for FailsToDeserialize {
    type Output = ();
    fn run(self) {}
}
procpool::register!(FailsToDeserialize);

/// An output that fails to serialize (in the worker).
#[derive(Serialize, Deserialize)]
pub struct BadOutput;
#[derive(Debug)]
pub struct Unserializable;
impl Serialize for Unserializable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("Unserializable refuses"))
    }
}
impl<'de> Deserialize<'de> for Unserializable {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Ok(Unserializable)
    }
}
impl Task for BadOutput {
    type Output = Unserializable;
    fn run(self) -> Unserializable {
        Unserializable
    }
}
procpool::register!(BadOutput);

/// An output that serializes but fails to deserialize (in the host).
#[derive(Serialize, Deserialize)]
pub struct UndecodableOutput;
#[derive(Debug)]
pub struct Undecodable;
impl Serialize for Undecodable {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(1)
    }
}
impl<'de> Deserialize<'de> for Undecodable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let _ = u8::deserialize(d)?;
        Err(serde::de::Error::custom("Undecodable refuses"))
    }
}
impl Task for UndecodableOutput {
    type Output = Undecodable;
    fn run(self) -> Undecodable {
        Undecodable
    }
}
procpool::register!(UndecodableOutput);

/// Reads an environment variable in the worker.
#[derive(Serialize, Deserialize)]
pub struct EnvVar(pub String);
impl Task for EnvVar {
    type Output = Option<String>;
    fn run(self) -> Option<String> {
        std::env::var(&self.0).ok()
    }
}
procpool::register!(EnvVar);

/// The worker's working directory.
#[derive(Serialize, Deserialize)]
pub struct Cwd;
impl Task for Cwd {
    type Output = String;
    fn run(self) -> String {
        std::env::current_dir()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }
}
procpool::register!(Cwd);

/// Runs until cancelled (polling `procpool::cancelled()`), or for at most
/// the given milliseconds. Returns whether it saw the cancel.
#[derive(Serialize, Deserialize)]
pub struct Cooperative(pub u64);
impl Task for Cooperative {
    type Output = bool;
    fn run(self) -> bool {
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(self.0) {
            if procpool::cancelled() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }
}
procpool::register!(Cooperative);

/// Starts `sleep 300` as a child, writes the child's pid to the file, then
/// sleeps for a minute: killing the worker must kill the child too.
#[derive(Serialize, Deserialize)]
pub struct SpawnGrandchild(pub String);
impl Task for SpawnGrandchild {
    type Output = ();
    fn run(self) {
        let mut child = std::process::Command::new("sleep")
            .arg("300")
            .spawn()
            .expect("sleep should start");
        std::fs::write(&self.0, child.id().to_string()).unwrap();
        std::thread::sleep(Duration::from_secs(60));
        let _ = child.kill();
        let _ = child.wait();
    }
}
procpool::register!(SpawnGrandchild);

/// Appends a line to a file (to see that a detached job ran).
#[derive(Serialize, Deserialize)]
pub struct Touch(pub String);
impl Task for Touch {
    type Output = ();
    fn run(self) {
        std::thread::sleep(Duration::from_millis(100));
        std::fs::write(&self.0, "done").unwrap();
    }
}
procpool::register!(Touch);

/// Allocates, touches and leaks `n` MiB, growing the worker's RSS.
#[derive(Serialize, Deserialize)]
pub struct Leak(pub usize);
impl Task for Leak {
    type Output = ();
    fn run(self) {
        let v = vec![1u8; self.0 << 20];
        std::hint::black_box(&v);
        std::mem::forget(v);
    }
}
procpool::register!(Leak);

/// An initializer: stores a value in the worker; `ReadInit` reads it.
/// Panics instead if the file named by `fail_if_exists` exists.
#[derive(Serialize, Deserialize)]
pub struct Init {
    pub value: u64,
    pub fail_if_exists: Option<String>,
}
pub static INIT_VALUE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
impl Task for Init {
    type Output = ();
    fn run(self) {
        if let Some(path) = &self.fail_if_exists {
            if std::path::Path::new(path).exists() {
                panic!("initializer told to fail by {path}");
            }
        }
        INIT_VALUE.store(self.value, std::sync::atomic::Ordering::SeqCst);
    }
}
procpool::register!(Init);

#[derive(Serialize, Deserialize)]
pub struct ReadInit;
impl Task for ReadInit {
    type Output = u64;
    fn run(self) -> u64 {
        INIT_VALUE.load(std::sync::atomic::Ordering::SeqCst)
    }
}
procpool::register!(ReadInit);

/// Panics if the number is `bad`, otherwise squares it.
#[derive(Serialize, Deserialize)]
pub struct SquareUnless {
    pub n: u64,
    pub bad: u64,
}
impl Task for SquareUnless {
    type Output = u64;
    fn run(self) -> u64 {
        assert_ne!(self.n, self.bad, "refusing {}", self.n);
        self.n * self.n
    }
}
procpool::register!(SquareUnless);

/// A unique temporary path for a test.
pub fn temp_path(name: &str) -> String {
    let p = std::env::temp_dir().join(format!(
        "procpool-test-{}-{}-{name}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    p.display().to_string()
}

/// Returns how many `Ticket` jobs this worker ran before this one.
#[derive(Serialize, Deserialize)]
pub struct Ticket;
pub static TICKETS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
impl Task for Ticket {
    type Output = u64;
    fn run(self) -> u64 {
        TICKETS.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    }
}
procpool::register!(Ticket);

/// Allocates and touches `mb` MiB, then holds it for `hold_ms`.
#[derive(Serialize, Deserialize)]
pub struct Hog {
    pub mb: usize,
    pub hold_ms: u64,
}
impl Task for Hog {
    type Output = ();
    fn run(self) {
        let v = vec![1u8; self.mb << 20];
        std::hint::black_box(&v);
        std::thread::sleep(Duration::from_millis(self.hold_ms));
    }
}
procpool::register!(Hog);

/// Aborts the first time (when the flag file does not exist yet), then
/// returns 7.
#[derive(Serialize, Deserialize)]
pub struct DieOnce(pub String);
impl Task for DieOnce {
    type Output = u64;
    fn run(self) -> u64 {
        if !std::path::Path::new(&self.0).exists() {
            std::fs::write(&self.0, "died").unwrap();
            std::process::abort();
        }
        7
    }
}
procpool::register!(DieOnce);
