//! Tasks about the worker process itself: what and where it is, and the
//! state it keeps between jobs (initializers, counters, worker state).

use procpool::Task;
use serde::{Deserialize, Serialize};

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
