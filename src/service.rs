//! `tower::Service` for the pool (the `tower` cargo feature).

use std::task::{Context, Poll};

use crate::error::Error;
use crate::handle::JobHandle;
use crate::pool::ProcessPoolExecutor;
use crate::task::Task;

/// A pool is a `tower::Service` for every registered task type: `call`
/// submits the task and returns its [`JobHandle`].
///
/// `poll_ready` is ready at once while the pool is open (it fails with
/// [`Error::Shutdown`] after shutdown); queue bounds are enforced by
/// `call`, which resolves the handle with [`Error::Overloaded`]. For
/// backpressure at the service level, compose with tower's layers:
///
/// ```no_run
/// # #[cfg(feature = "tower")] async fn demo(pool: procpool::ProcessPoolExecutor) {
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Work(u64);
/// # impl procpool::Task for Work { type Output = u64; fn run(self) -> u64 { self.0 } }
/// use std::time::Duration;
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// let mut svc = ServiceBuilder::new()
///     .load_shed()
///     .concurrency_limit(8)
///     .timeout(Duration::from_secs(5))
///     .service(pool);
/// let out: u64 = ServiceExt::<Work>::ready(&mut svc)
///     .await
///     .unwrap()
///     .call(Work(7))
///     .await
///     .unwrap();
/// # }
/// ```
///
/// (A timeout layer drops the handle when it fires, which cancels the job.)
impl<T: Task> tower_service::Service<T> for ProcessPoolExecutor {
    type Response = T::Output;
    type Error = Error;
    type Future = JobHandle<T::Output>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.is_shutdown() {
            Poll::Ready(Err(Error::Shutdown))
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn call(&mut self, task: T) -> JobHandle<T::Output> {
        self.submit(task)
    }
}
