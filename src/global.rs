//! The default pool: one lazily built [`ProcessPoolExecutor`] per process,
//! shared by everything in it, in the spirit of rayon's global pool.

use std::sync::{Mutex, OnceLock};

use crate::error::Error;
use crate::pool::{Builder, ProcessPoolExecutor};

/// The global pool, once built.
static GLOBAL: OnceLock<ProcessPoolExecutor> = OnceLock::new();

/// Held while the global pool is being built, so that it is built once
/// (a build that failed leaves `GLOBAL` empty, and the next call tries
/// again).
static BUILDING: Mutex<()> = Mutex::new(());

/// Builds the global pool with `builder` unless it exists: `Ok(None)` if
/// it already existed (the builder is not used).
fn init(builder: impl FnOnce() -> Builder) -> Result<Option<&'static ProcessPoolExecutor>, Error> {
    if GLOBAL.get().is_some() {
        return Ok(None);
    }
    // A panic while holding the lock (in this function: none is expected)
    // leaves nothing half done: `GLOBAL` is set only after a build.
    let _building = BUILDING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if GLOBAL.get().is_some() {
        return Ok(None);
    }
    let pool = build_off_runtime(builder())?;
    Ok(Some(GLOBAL.get_or_init(|| pool)))
}

/// Builds a pool on a thread of its own and waits for it: the caller may be
/// a tokio runtime's thread (even a `current_thread` one), where
/// [`Builder::build_blocking`] must not run. The pool's workers belong to
/// its own long-lived thread, not to this short-lived one.
fn build_off_runtime(builder: Builder) -> Result<ProcessPoolExecutor, Error> {
    let spawned = std::thread::Builder::new()
        .name("procpool-global-build".into())
        .spawn(move || builder.build_blocking());
    let thread = spawned.map_err(|e| Error::Spawn {
        message: format!("could not start a thread to build the global pool: {e}"),
    })?;
    thread.join().unwrap_or_else(|_| {
        Err(Error::Spawn {
            message: "the thread building the global pool panicked".into(),
        })
    })
}

impl ProcessPoolExecutor {
    /// The process's default pool, built on first use: with the settings
    /// given to [`Builder::build_global`] if that was called first,
    /// otherwise with the default [`Builder`] (one worker per CPU). Every
    /// later call returns the same pool; it lives as long as the process.
    ///
    /// It is meant for small programs and test suites that would otherwise
    /// each keep a pool in a static of their own. Like any pool, it runs on
    /// a thread of its own, so it can be used from any tokio runtime (many
    /// `#[tokio::test]`s in one binary, each with its own runtime, share
    /// it), and from synchronous code with [`JobHandle::blocking_wait`](crate::JobHandle::blocking_wait).
    ///
    /// The first call **blocks** the calling thread until the workers are
    /// up (a few milliseconds per worker, plus any
    /// [initializer](Builder::initializer)); calls made meanwhile from
    /// other threads wait for the same build. It is built on a helper
    /// thread, so a first call from inside a runtime (even a
    /// `current_thread` one) is fine. Later calls do not block.
    ///
    /// The global pool is never dropped, so its workers live until the
    /// process exits; they then exit too (they see their pipes close, and
    /// on Linux the parent-death signal is a backup).
    /// [`shutdown`](Self::shutdown) on it shuts it for good: later calls
    /// return the shut pool, and submitting to it fails with
    /// [`Error::Shutdown`]. There is no second global pool.
    ///
    /// The binary must call [`init()`](crate::init) first (or use
    /// [`init_before_main!`](crate::init_before_main)), as for any pool.
    ///
    /// ```
    /// use procpool::{ProcessPoolExecutor, Task};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Double(u64);
    ///
    /// impl Task for Double {
    ///     type Output = u64;
    ///     fn run(self) -> u64 { self.0 * 2 }
    /// }
    /// procpool::register!(Double);
    ///
    /// fn main() {
    ///     procpool::init();
    ///     // Optional: configure it before its first use.
    ///     ProcessPoolExecutor::builder().workers(2).build_global().unwrap();
    ///     // From synchronous code...
    ///     let pool = ProcessPoolExecutor::global();
    ///     assert_eq!(pool.submit(Double(4)).blocking_wait().unwrap(), 8);
    ///     // ...and from any runtime: the same pool and workers.
    ///     let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    ///     let out = rt.block_on(async { ProcessPoolExecutor::global().submit(Double(21)).await });
    ///     assert_eq!(out.unwrap(), 42);
    ///     assert_eq!(ProcessPoolExecutor::global().worker_pids(), pool.worker_pids());
    /// }
    /// ```
    ///
    /// # Panics
    ///
    /// Panics, with the build error's message, if the pool has to be built
    /// and cannot be (see [`Builder::build`] for the errors, such as
    /// [`Error::MissingInit`]). Use [`try_global`](Self::try_global) to
    /// handle that error instead.
    pub fn global() -> &'static ProcessPoolExecutor {
        match Self::try_global() {
            Ok(pool) => pool,
            Err(e) => panic!("could not build the global procpool pool: {e}"),
        }
    }

    /// [`global`](Self::global), returning the build error instead of
    /// panicking. A failed build leaves no global pool: the next call
    /// tries again. Blocks like `global` on first use.
    ///
    /// # Errors
    ///
    /// As [`Builder::build`], if the pool has to be built and cannot be.
    pub fn try_global() -> Result<&'static ProcessPoolExecutor, Error> {
        if let Some(pool) = GLOBAL.get() {
            return Ok(pool);
        }
        init(Builder::default)?;
        GLOBAL.get().ok_or_else(|| Error::Spawn {
            message: "the global pool was not set after its build".into(),
        })
    }
}

impl Builder {
    /// Builds the process's default pool, the one
    /// [`ProcessPoolExecutor::global`] returns, with these settings (as
    /// rayon's `ThreadPoolBuilder::build_global`). Call it once, before
    /// anything uses the global pool, typically at the start of `main`.
    ///
    /// Blocks the calling thread until the workers are up (it builds on a
    /// helper thread, so calling it from inside a tokio runtime is fine).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if the global pool already exists (it was built by
    /// an earlier `build_global` or by a first use of
    /// [`global`](ProcessPoolExecutor::global)); otherwise as
    /// [`build`](Self::build).
    pub fn build_global(self) -> Result<&'static ProcessPoolExecutor, Error> {
        match init(move || self)? {
            Some(pool) => Ok(pool),
            None => Err(Error::Config {
                message: "the global pool already exists (built by an earlier build_global or \
                          by a first use of ProcessPoolExecutor::global), so these settings \
                          cannot apply; call build_global once, before anything uses the \
                          global pool"
                    .into(),
            }),
        }
    }
}
