//! Tasks that report progress, or stream items.

use std::time::Duration;

use procpool::Task;
use serde::{Deserialize, Serialize};

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
