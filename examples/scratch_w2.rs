use procpool::{ProcessPoolExecutor, Task};
use serde::{Deserialize, Serialize};
use std::time::Instant;
#[derive(Serialize, Deserialize)]
struct Noop(u64);
impl Task for Noop {
    type Output = u64;
    fn run(self) -> u64 {
        self.0 + 1
    }
}
procpool::register!(Noop);
#[tokio::main]
async fn main() {
    procpool::init();
    for prefetch in [0usize, 1, 4, 16, 64] {
        let pool = ProcessPoolExecutor::builder()
            .workers(2)
            .prefetch(prefetch)
            .build()
            .await
            .unwrap();
        let n = 100_000u64;
        let t = Instant::now();
        let hs: Vec<_> = (0..n).map(|i| pool.submit(Noop(i))).collect();
        let submit = t.elapsed();
        for h in hs {
            h.await.unwrap();
        }
        println!(
            "prefetch {prefetch}: {:.0} jobs/s (submit {:.0} ms)",
            n as f64 / t.elapsed().as_secs_f64(),
            submit.as_secs_f64() * 1e3
        );
        pool.shutdown().await;
    }
}
