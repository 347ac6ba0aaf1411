//! Tasks that leave traces outside their result: a child process, a file,
//! memory held or leaked.

use std::time::Duration;

use procpool::Task;
use serde::{Deserialize, Serialize};

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
