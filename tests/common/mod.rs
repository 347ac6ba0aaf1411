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

// ---------------------------------------------------------------------------
// Chaos: helpers and hostile tasks for the tests/chaos_*.rs suites.
// ---------------------------------------------------------------------------

/// Set (via `Builder::env`) in the workers of chaos pools. Faults that end a
/// process only fire where it is set, so a fault placed in a serde impl that
/// also runs in the host can never take the test process down.
pub const CHAOS_IN_WORKER: &str = "PROCPOOL_CHAOS_IN_WORKER";

/// Whether this process is a worker of a chaos pool.
pub fn in_worker() -> bool {
    std::env::var_os(CHAOS_IN_WORKER).is_some()
}

/// A builder for a chaos pool: `workers` workers marked with
/// [`CHAOS_IN_WORKER`], their output not forwarded (jobs here print
/// megabytes; the last lines are still kept for `WorkerDied`), and
/// `RUST_BACKTRACE=0` in them: with backtraces on, a panic that kills a
/// worker fills the 20-line stderr tail with frames and pushes out the
/// panic message the tests look for.
pub fn chaos_builder(workers: usize) -> procpool::Builder {
    ProcessPoolExecutor::builder()
        .workers(workers)
        .env(CHAOS_IN_WORKER, "1")
        .env("RUST_BACKTRACE", "0")
        .forward_worker_output(false)
}

pub async fn chaos_pool(workers: usize) -> ProcessPoolExecutor {
    chaos_builder(workers)
        .build()
        .await
        .expect("the chaos pool should start")
}

/// The seed for a chaos run: `PROCPOOL_CHAOS_SEED` if set (to replay a
/// run), otherwise taken from the clock. Printed so a failure can be
/// replayed.
pub fn chaos_seed(test: &str) -> u64 {
    let seed = std::env::var("PROCPOOL_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("{test}: PROCPOOL_CHAOS_SEED={seed}");
    seed
}

/// xorshift64: a tiny deterministic PRNG (no new dependencies).
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        // splitmix64 step, so nearby seeds give unrelated streams; never 0.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        XorShift((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

/// `(state, ppid)` of a process, from `/proc/PID/stat`.
pub fn proc_state(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = stat.rsplit_once(')')?.1.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((state, ppid))
}

/// The live (not zombie) children of `parent`.
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            matches!(proc_state(pid), Some((s, ppid)) if ppid == parent && s != 'Z' && s != 'X')
        })
        .collect();
    out.sort_unstable();
    out
}

/// Sends `sig` to `pid` only if it is still a live child of this process. A
/// pid read from `worker_pids()` may belong to a worker that has been reaped
/// since; this keeps a recycled pid of a stranger from being signalled.
/// Returns whether the signal was sent.
pub fn signal_child(pid: u32, sig: i32) -> bool {
    match proc_state(pid) {
        Some((s, ppid)) if ppid == std::process::id() && s != 'Z' && s != 'X' => unsafe {
            libc::kill(pid as i32, sig) == 0
        },
        _ => false,
    }
}

fn page_size() -> u64 {
    u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

/// Resident set size of a process (`None`: this one), from `statm`.
pub fn rss_bytes(pid: Option<u32>) -> u64 {
    let path = match pid {
        Some(p) => format!("/proc/{p}/statm"),
        None => "/proc/self/statm".to_owned(),
    };
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page_size())
}

/// Peak resident set size (`VmHWM`) of a process (`None`: this one).
pub fn peak_rss_bytes(pid: Option<u32>) -> u64 {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_owned(),
    };
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

pub const MIB: u64 = 1 << 20;

/// Sleeps `micros`, then squares `n`: a small job slow enough for a killer
/// to hit workers while it runs.
#[derive(Serialize, Deserialize)]
pub struct SlowSquare {
    pub n: u64,
    pub micros: u64,
}
impl Task for SlowSquare {
    type Output = u64;
    fn run(self) -> u64 {
        std::thread::sleep(Duration::from_micros(self.micros));
        self.n * self.n
    }
}
procpool::register!(SlowSquare);

/// [`SlowSquare`] as an async task (waits on the worker runtime's timer).
#[derive(Serialize, Deserialize)]
pub struct AsyncSlowSquare {
    pub n: u64,
    pub micros: u64,
}
impl procpool::AsyncTask for AsyncSlowSquare {
    type Output = u64;
    async fn run(self) -> u64 {
        tokio::time::sleep(Duration::from_micros(self.micros)).await;
        self.n * self.n
    }
}
procpool::register!(AsyncSlowSquare);

/// Sleeps, then dies the given way.
#[derive(Serialize, Deserialize)]
pub struct DelayedDeath {
    pub ms: u64,
    pub death: Death,
}
impl Task for DelayedDeath {
    type Output = ();
    fn run(self) {
        std::thread::sleep(Duration::from_millis(self.ms));
        Die(self.death).run()
    }
}
procpool::register!(DelayedDeath);

/// Spins forever without polling `cancelled()`; only a kill stops it.
#[derive(Serialize, Deserialize)]
pub struct SpinForever;
impl Task for SpinForever {
    type Output = ();
    fn run(self) {
        let mut x = 0u64;
        loop {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }
}
procpool::register!(SpinForever);

/// Prints `mib` MiB of lines to stdout and as much to stderr, then one
/// 1 MiB line without a newline to each; returns `mib + 1`.
#[derive(Serialize, Deserialize)]
pub struct Flood(pub u32);
impl Task for Flood {
    type Output = u32;
    fn run(self) -> u32 {
        use std::io::Write;
        let line = format!("{}\n", "flood-line ".repeat(9));
        let chunk = line.repeat((64 * 1024) / line.len());
        let total = u64::from(self.0) * MIB;
        let long = "x".repeat(1 << 20);
        {
            let mut out = std::io::stdout().lock();
            let mut n = 0u64;
            while n < total {
                out.write_all(chunk.as_bytes()).unwrap();
                n += chunk.len() as u64;
            }
            out.write_all(long.as_bytes()).unwrap();
            out.flush().unwrap();
        }
        {
            let mut err = std::io::stderr().lock();
            let mut n = 0u64;
            while n < total {
                err.write_all(chunk.as_bytes()).unwrap();
                n += chunk.len() as u64;
            }
            err.write_all(long.as_bytes()).unwrap();
        }
        self.0 + 1
    }
}
procpool::register!(Flood);

/// The worker's protocol descriptors as a hostile job finds them: pipes at
/// fd 3..64 with close-on-exec set (the worker makes its channel with
/// `F_DUPFD_CLOEXEC`). Inherited descriptors (a make jobserver, say) lack
/// the flag and are left alone. Returns `(fd, writable)`.
pub fn protocol_fds() -> Vec<(i32, bool)> {
    let mut out = Vec::new();
    for fd in 3..64 {
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd, &mut st) } != 0 {
            continue;
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFIFO {
            continue;
        }
        let fd_flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if fd_flags < 0 || fd_flags & libc::FD_CLOEXEC == 0 {
            continue;
        }
        let access = unsafe { libc::fcntl(fd, libc::F_GETFL) } & libc::O_ACCMODE;
        out.push((fd, access == libc::O_WRONLY || access == libc::O_RDWR));
    }
    out
}

/// What a hostile job writes onto the protocol channel.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Garbage {
    /// 0xff bytes: a length prefix far above any maximum frame size.
    Oversized,
    /// A well-formed frame of an unknown kind.
    BadBody,
    /// A well-formed result frame for a job the worker is not running.
    Forged,
    /// A length prefix for a 64 KiB frame that never comes: the job's real
    /// result frame is swallowed as its first bytes. Only a timeout can
    /// resolve this job.
    Stall,
}

impl Garbage {
    pub fn bytes(self) -> Vec<u8> {
        match self {
            Garbage::Oversized => vec![0xff; 64],
            Garbage::BadBody => vec![8, 0, 0, 0, 0xee, 1, 2, 3, 4, 5, 6, 7],
            // Length 2: kind "done" (0x11), job id 0 (never a real job).
            Garbage::Forged => vec![2, 0, 0, 0, 0x11, 0],
            Garbage::Stall => vec![0, 0, 1, 0],
        }
    }
}

/// Writes garbage to every writable protocol pipe, then returns normally.
/// Returns how many descriptors it wrote to.
#[derive(Serialize, Deserialize)]
pub struct Scribble(pub Garbage);
impl Task for Scribble {
    type Output = u32;
    fn run(self) -> u32 {
        let bytes = self.0.bytes();
        let mut hit = 0;
        for (fd, writable) in protocol_fds() {
            if writable
                && unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) }
                    == bytes.len() as isize
            {
                hit += 1;
            }
        }
        eprintln!("scribbled {:?} on {hit} protocol pipe(s)", self.0);
        hit
    }
}
procpool::register!(Scribble);

/// Which protocol descriptors a hostile job closes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    Both,
    Output,
    Input,
}

/// Closes protocol descriptors, then returns normally; returns how many
/// it closed.
#[derive(Serialize, Deserialize)]
pub struct CloseChannel(pub Channel);
impl Task for CloseChannel {
    type Output = u32;
    fn run(self) -> u32 {
        let mut closed = 0;
        for (fd, writable) in protocol_fds() {
            let pick = match self.0 {
                Channel::Both => true,
                Channel::Output => writable,
                Channel::Input => !writable,
            };
            if pick && unsafe { libc::close(fd) } == 0 {
                closed += 1;
            }
        }
        eprintln!("closed {closed} protocol descriptor(s) ({:?})", self.0);
        closed
    }
}
procpool::register!(CloseChannel);

/// Where on a job's trip a fault is injected.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TripPoint {
    /// The task's `Serialize`, in the host.
    EncodeTask,
    /// The task's `Deserialize`, in the worker.
    DecodeTask,
    /// The output's `Serialize`, in the worker.
    EncodeOutput,
    /// The output's `Deserialize`, in the host.
    DecodeOutput,
}

/// What goes wrong there.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    SerdeError,
    Panic,
    Exit(i32),
    Abort,
}

/// Fires `fault`: a serde error is returned as `Err`; a panic, exit or
/// abort happens only inside a chaos worker (elsewhere it is refused with
/// an error, so the host can never be hit). Prints a marker line first so
/// the worker's stderr tail says what happened.
pub fn trip_fault(at: TripPoint, fault: Fault) -> Result<(), String> {
    let what = format!("chaos: {fault:?} at {at:?}");
    match fault {
        Fault::SerdeError => Err(what),
        _ if !in_worker() => Err(format!("{what} refused outside a chaos worker")),
        Fault::Panic => panic!("{what}"),
        Fault::Exit(code) => {
            eprintln!("{what}");
            std::process::exit(code)
        }
        Fault::Abort => {
            eprintln!("{what}");
            std::process::abort()
        }
    }
}

#[derive(Serialize, Deserialize)]
struct TripWire {
    fault: Option<(TripPoint, Fault)>,
    value: u64,
}

/// A task whose serde impls (and those of its output) inject `fault` at
/// one point of the trip. Without a fault it returns `value * 2`.
#[derive(Debug, Clone, Copy)]
pub struct Trip {
    pub fault: Option<(TripPoint, Fault)>,
    pub value: u64,
}

impl Trip {
    pub fn ok(value: u64) -> Self {
        Trip { fault: None, value }
    }
    pub fn at(at: TripPoint, fault: Fault, value: u64) -> Self {
        Trip {
            fault: Some((at, fault)),
            value,
        }
    }
}

fn fire_at(here: TripPoint, fault: Option<(TripPoint, Fault)>) -> Result<(), String> {
    match fault {
        Some((at, f)) if at == here => trip_fault(at, f),
        _ => Ok(()),
    }
}

impl Serialize for Trip {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        fire_at(TripPoint::EncodeTask, self.fault).map_err(serde::ser::Error::custom)?;
        TripWire {
            fault: self.fault,
            value: self.value,
        }
        .serialize(s)
    }
}
impl<'de> Deserialize<'de> for Trip {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = TripWire::deserialize(d)?;
        fire_at(TripPoint::DecodeTask, w.fault).map_err(serde::de::Error::custom)?;
        Ok(Trip {
            fault: w.fault,
            value: w.value,
        })
    }
}

/// The output of [`Trip`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TripOut {
    pub fault: Option<(TripPoint, Fault)>,
    pub value: u64,
}
impl Serialize for TripOut {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        fire_at(TripPoint::EncodeOutput, self.fault).map_err(serde::ser::Error::custom)?;
        TripWire {
            fault: self.fault,
            value: self.value,
        }
        .serialize(s)
    }
}
impl<'de> Deserialize<'de> for TripOut {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = TripWire::deserialize(d)?;
        fire_at(TripPoint::DecodeOutput, w.fault).map_err(serde::de::Error::custom)?;
        Ok(TripOut {
            fault: w.fault,
            value: w.value,
        })
    }
}

impl Task for Trip {
    type Output = TripOut;
    fn run(self) -> TripOut {
        TripOut {
            fault: self.fault,
            value: self.value * 2,
        }
    }
}
procpool::register!(Trip);

#[derive(Deserialize)]
struct BigWire {
    abort_in_worker: bool,
    #[serde(with = "serde_bytes_compat")]
    data: Vec<u8>,
}

struct AsBytes<'a>(&'a [u8]);
impl Serialize for AsBytes<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// A large payload whose worker-side `Deserialize` aborts the worker (once
/// all of it has arrived) if asked to. Returns the payload's length and
/// byte sum.
pub struct BigPayload {
    pub abort_in_worker: bool,
    pub data: Vec<u8>,
}
impl Serialize for BigPayload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&self.abort_in_worker)?;
        t.serialize_element(&AsBytes(&self.data))?;
        t.end()
    }
}
impl<'de> Deserialize<'de> for BigPayload {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = BigWire::deserialize(d)?;
        if w.abort_in_worker {
            trip_fault(TripPoint::DecodeTask, Fault::Abort).map_err(serde::de::Error::custom)?;
        }
        Ok(BigPayload {
            abort_in_worker: w.abort_in_worker,
            data: w.data,
        })
    }
}
impl Task for BigPayload {
    type Output = (u64, u64);
    fn run(self) -> (u64, u64) {
        let sum = self.data.iter().map(|&b| u64::from(b)).sum();
        (self.data.len() as u64, sum)
    }
}
procpool::register!(BigPayload);

/// Marks the workers of one pool so that a killer can find them among the
/// host's children even before their handshake (when `worker_pids()` does
/// not list them yet), without touching other tests' workers.
pub const CHAOS_TAG: &str = "PROCPOOL_CHAOS_TAG";

/// The live children of this process whose environment holds
/// `PROCPOOL_CHAOS_TAG=tag` (a child between fork and exec does not yet).
pub fn tagged_children(tag: &str) -> Vec<u32> {
    let needle = format!("{CHAOS_TAG}={tag}");
    children_of(std::process::id())
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes()))
        })
        .collect()
}

/// The protocol descriptors a hostile job would find (see
/// [`protocol_fds`]).
#[derive(Serialize, Deserialize)]
pub struct ListProtocolFds;
impl Task for ListProtocolFds {
    type Output = Vec<(i32, bool)>;
    fn run(self) -> Vec<(i32, bool)> {
        protocol_fds()
    }
}
procpool::register!(ListProtocolFds);

/// Every live process (any parent) whose environment holds
/// `PROCPOOL_CHAOS_TAG=tag`: finds a dead host's orphaned workers.
pub fn tagged_processes(tag: &str) -> Vec<u32> {
    let needle = format!("{CHAOS_TAG}={tag}");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            process_alive(pid)
                && std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes()))
        })
        .collect();
    out.sort_unstable();
    out
}

/// Prints one line of figures for a chaos test that passed: how many jobs
/// it ran (every one resolved, or the test would have failed) and how many
/// faults it injected. Collect them with `--nocapture | grep CHAOS-FIGURES`.
pub fn figures(test: &str, jobs: u64, faults: u64) {
    eprintln!("CHAOS-FIGURES test={test} jobs={jobs} faults={faults}");
}

/// An initializer that builds per-worker state.
#[derive(Serialize, Deserialize)]
pub struct LoadModel {
    pub weight: u64,
}
pub struct Model {
    pub weight: u64,
    pub uses: std::sync::atomic::AtomicU64,
}
impl Task for LoadModel {
    type Output = ();
    fn run(self) {
        procpool::set_worker_state(Model {
            weight: self.weight,
            uses: std::sync::atomic::AtomicU64::new(0),
        });
    }
}
procpool::register!(LoadModel);

/// Uses the per-worker model: returns (pid, weight, how many tasks used
/// this worker's model before).
#[derive(Serialize, Deserialize)]
pub struct UseModel;
impl Task for UseModel {
    type Output = (u32, u64, u64);
    fn run(self) -> (u32, u64, u64) {
        let model = procpool::worker_state::<Model>().expect("the initializer stored a model");
        let uses = model.uses.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        (std::process::id(), model.weight, uses)
    }
}
procpool::register!(UseModel);

/// Reports progress over `steps` steps of `step_ms` each.
#[derive(Serialize, Deserialize)]
pub struct Steps {
    pub steps: u64,
    pub step_ms: u64,
}
impl Task for Steps {
    type Output = u64;
    fn run(self) -> u64 {
        for i in 1..=self.steps {
            std::thread::sleep(Duration::from_millis(self.step_ms));
            procpool::report_progress_message(i, Some(self.steps), &format!("step {i}"));
        }
        self.steps
    }
}
procpool::register!(Steps);

/// Streams `0..n` (each item padded to `pad` bytes), reporting how many it
/// emitted as progress; writes "stopped N" to `stop_file` if cancelled.
#[derive(Serialize, Deserialize)]
pub struct Numbers {
    pub n: u64,
    pub pad: usize,
    pub stop_file: Option<String>,
}
impl procpool::StreamTask for Numbers {
    type Item = (u64, Vec<u8>);
    type Output = u64;
    fn run(self, items: &mut procpool::Emitter<(u64, Vec<u8>)>) -> u64 {
        let mut sum = 0;
        for i in 0..self.n {
            if !items.emit((i, vec![7; self.pad])) {
                if let Some(path) = &self.stop_file {
                    std::fs::write(path, format!("stopped {i}")).unwrap();
                }
                return sum;
            }
            sum += i;
            procpool::report_progress(i + 1, Some(self.n));
        }
        sum
    }
}
procpool::register_stream!(Numbers);

/// The worker's niceness.
#[derive(Serialize, Deserialize)]
pub struct Niceness;
impl Task for Niceness {
    type Output = i32;
    fn run(self) -> i32 {
        unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
    }
}
procpool::register!(Niceness);

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
