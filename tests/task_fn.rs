//! Task fns: `#[procpool::task]` on a plain `fn` or `async fn` generates a
//! registered task struct of the same name, submitted as
//! `pool.submit(name::new(args..))`, here and from another crate.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use procpool::{AsyncTask, Error, ProcessPoolExecutor, SerdeStage, Task};
use procpool_taskfn_fixture::{double_later, join_words};
use support::*;

procpool::init_before_main!();

/// Adds, and says which process did it.
#[procpool::task]
fn add(a: u64, b: u64) -> (u64, u32) {
    (a + b, std::process::id())
}

/// Takes one argument of each of several owned types and describes them.
#[procpool::task]
#[allow(clippy::too_many_arguments)]
pub fn describe(
    name: String,
    count: u32,
    values: Vec<i64>,
    path: PathBuf,
    flag: bool,
    pair: (i8, char),
    maybe: Option<String>,
    table: BTreeMap<String, f64>,
) -> String {
    format!(
        "{name} {count} {values:?} {} {flag} {pair:?} {maybe:?} {table:?}",
        path.display()
    )
}

/// Always panics.
#[procpool::task]
fn explode(why: String) -> u64 {
    panic!("exploded: {why}")
}

/// Returns nothing: writes `text` to `path`.
#[procpool::task]
fn write_file(path: PathBuf, text: String) {
    std::fs::write(path, text).unwrap();
}

/// An argument with a `#[serde]` attribute, which moves to the field.
#[procpool::task]
fn byte_sum(#[serde(with = "serde_bytes")] data: Vec<u8>) -> u64 {
    data.iter().map(|&b| u64::from(b)).sum()
}

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Waits (on the worker's runtime) until `together` of its kind are in
/// flight in this worker at once, then returns the worker's pid. Jobs that
/// could not overlap would wait until the test's bound fails them.
#[procpool::task]
async fn meet(together: usize) -> u32 {
    IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
    while IN_FLIGHT.load(Ordering::SeqCst) < together {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    std::process::id()
}

/// Writes `<dir>/started`, then waits forever holding a guard whose drop
/// writes `<dir>/dropped`: only an async task's future can be dropped.
#[procpool::task]
async fn hold(dir: PathBuf) {
    struct WriteOnDrop(PathBuf);
    impl Drop for WriteOnDrop {
        fn drop(&mut self) {
            std::fs::write(&self.0, "dropped").unwrap();
        }
    }
    let _guard = WriteOnDrop(dir.join("dropped"));
    std::fs::write(dir.join("started"), "").unwrap();
    std::future::pending::<()>().await;
}

/// procpool under another path, as a crate that re-exports it has it.
mod reexported {
    pub use procpool as pool_crate;
}

/// Generated code that names procpool through that path.
#[procpool::task(crate = crate::reexported::pool_crate)]
fn via_reexport(n: u32) -> u32 {
    n + 1
}

/// A value whose serialization always fails.
#[derive(serde::Deserialize)]
struct Unencodable;
impl serde::Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "this value refuses to be encoded",
        ))
    }
}

#[procpool::task]
fn take_unencodable(value: Unencodable) -> u8 {
    let Unencodable = value;
    0
}

#[tokio::test]
async fn a_task_fn_runs_in_a_worker() {
    let pool = pool(1).await;
    let pid = pool.worker_pids()[0];
    let (sum, ran_on) = bounded("a task fn", pool.submit(add::new(2, 3)))
        .await
        .unwrap();
    assert_eq!((sum, ran_on), (5, pid));
    assert_ne!(ran_on, std::process::id());
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn arguments_of_several_owned_types_arrive_intact() {
    let pool = pool(1).await;
    let args = || {
        (
            "name".to_string(),
            7,
            vec![-1, 0, i64::MAX],
            PathBuf::from("/some/path"),
            true,
            (-8, 'λ'),
            Some("maybe".to_string()),
            BTreeMap::from([("pi".to_string(), 3.25), ("e".to_string(), -2.5)]),
        )
    };
    let (a, b, c, d, e, f, g, h) = args();
    let remote = bounded(
        "a task fn with eight arguments",
        pool.submit(describe::new(a, b, c, d, e, f, g, h)),
    )
    .await
    .unwrap();
    let (a, b, c, d, e, f, g, h) = args();
    assert_eq!(remote, describe(a, b, c, d, e, f, g, h));
    assert!(remote.starts_with("name 7 [-1, 0, 9223372036854775807] /some/path true (-8, 'λ')"));
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn the_plain_fn_is_still_callable() {
    assert_eq!(add(20, 22).0, 42);
    assert_eq!(add(20, 22).1, std::process::id());
    // An async task fn stays an async fn.
    assert_eq!(double_later(4, 1).await.0, 8);
    // And the task can be run in this process too, as any task can.
    assert_eq!(Task::run(add::new(1, 1)).0, 2);
}

#[tokio::test]
async fn the_struct_literal_form_builds_the_same_task() {
    let task = add { a: 40, b: 2 };
    assert_eq!((task.a, task.b), (40, 2));
    let pool = pool(1).await;
    let (sum, _) = bounded("a struct-literal task", pool.submit(task))
        .await
        .unwrap();
    assert_eq!(sum, 42);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn the_crate_argument_names_a_reexported_procpool() {
    let pool = pool(1).await;
    let n = bounded(
        "a task fn through a re-export",
        pool.submit(via_reexport::new(1)),
    )
    .await
    .unwrap();
    assert_eq!(n, 2);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn a_task_fn_without_a_return_type_outputs_unit() {
    let path = PathBuf::from(temp_path("write-file"));
    let pool = pool(1).await;
    let job = pool.submit(write_file::new(path.clone(), "written".into()));
    let () = bounded("a unit task fn", job).await.unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "written");
    let _ = std::fs::remove_file(&path);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn a_serde_attribute_on_an_argument_applies_to_its_field() {
    let pool = pool(1).await;
    let sum = bounded(
        "a task fn with serde_bytes",
        pool.submit(byte_sum::new(vec![1, 2, 250])),
    )
    .await
    .unwrap();
    assert_eq!(sum, 253);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn a_panicking_task_fn_fails_its_job_with_panicked() {
    let pool = pool(1).await;
    let pid = pool.worker_pids()[0];
    let e = bounded(
        "a panicking task fn",
        pool.submit(explode::new("on purpose".into())),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, Error::Panicked { message, .. } if message.contains("exploded: on purpose")),
        "{e:?}"
    );
    // The worker survived the panic.
    let (_, ran_on) = bounded("a job after the panic", pool.submit(add::new(0, 0)))
        .await
        .unwrap();
    assert_eq!(ran_on, pid);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn async_task_fns_run_together_with_jobs_per_worker() {
    fn is_async_task<T: AsyncTask>(_: &T) {}
    is_async_task(&meet::new(4));

    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .jobs_per_worker(4)
        .build()
        .await
        .expect("the pool should start");
    let pid = pool.worker_pids()[0];
    // Each job returns only once all four are in flight in the one worker.
    let handles: Vec<_> = (0..4).map(|_| pool.submit(meet::new(4))).collect();
    for h in handles {
        assert_eq!(
            bounded("four overlapping async jobs", h).await.unwrap(),
            pid
        );
    }
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn a_cancelled_async_task_fn_is_dropped_inside_the_worker() {
    let dir = PathBuf::from(temp_path("hold"));
    std::fs::create_dir_all(&dir).unwrap();
    // A blocking task could only be stopped by killing its worker, which
    // this grace period rules out: the drop must come from the runtime.
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .cancel_grace(Duration::from_secs(120))
        .build()
        .await
        .expect("the pool should start");
    let pid = pool.worker_pids()[0];
    let handle = pool.submit(hold::new(dir.clone()));
    eventually("the held job to start", || dir.join("started").exists()).await;
    assert!(handle.cancel(), "the job was running, the cancel must take");
    eventually("the held future to be dropped", || {
        std::fs::read_to_string(dir.join("dropped")).is_ok_and(|s| s == "dropped")
    })
    .await;
    let (_, ran_on) = bounded("a job after the cancel", pool.submit(add::new(0, 0)))
        .await
        .unwrap();
    assert_eq!(ran_on, pid, "the worker was replaced instead of serving on");
    bounded("shutdown", pool.shutdown()).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn task_fns_from_another_crate_run_in_the_pool() {
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .jobs_per_worker(2)
        .build()
        .await
        .expect("the pool should start");
    let pid = pool.worker_pids()[0];
    let words = vec!["task".to_string(), "fns".to_string()];
    let joined = pool.submit(join_words::new(words, "-".into()));
    let doubled = pool.submit(double_later::new(21, 10));
    assert_eq!(
        bounded("a sync task fn of another crate", joined)
            .await
            .unwrap(),
        ("task-fns".to_string(), pid)
    );
    assert_eq!(
        bounded("an async task fn of another crate", doubled)
            .await
            .unwrap(),
        (42, pid)
    );
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn a_task_fn_is_named_by_its_struct_path() {
    assert_eq!(std::any::type_name::<add>(), "task_fn::add");
    assert_eq!(
        std::any::type_name::<join_words>(),
        "procpool_taskfn_fixture::join_words"
    );
    assert_eq!(format!("{:?}", add::new(1, 2)), "add { .. }");

    let pool = pool(1).await;
    let e = bounded(
        "an unencodable task",
        pool.submit(take_unencodable::new(Unencodable)),
    )
    .await
    .unwrap_err();
    match e {
        Error::Serialization {
            stage, type_name, ..
        } => {
            assert_eq!(stage, SerdeStage::EncodeTask);
            assert_eq!(type_name, "task_fn::take_unencodable");
        }
        other => panic!("expected a serialization error, got {other:?}"),
    }
    bounded("shutdown", pool.shutdown()).await;
}
