//! Deterministic simulation of the host core.
//!
//! Each seed builds a [`Core`] with random settings and drives it with
//! simulated workers, pipes and time from one seeded RNG: submits (with
//! timeouts, retries, sizes, `map`-like batches), cancels that race a job's
//! dispatch, start and completion, workers that die at any point (before or
//! after a start notice, with results half-written or garbled), slow, hung
//! and silent jobs, external kills, memory samples over the limits, idle
//! timeouts, `max_tasks_per_worker`, start-up failures that come and go,
//! and `shutdown`/`shutdown_now` at any moment. After every step it checks
//! the invariants (see [`World::check_step`] and [`World::check_end`]).
//!
//! `cargo test --lib simulation` runs 10,000 seeds; `PROCPOOL_SIM_SEEDS=n`
//! runs `n`; `PROCPOOL_SIM_SEED=s` replays one, printing its trace.

mod user;
mod worker;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::core::{Action, Control, Core, Input, Settings, WorkerId};
use crate::error::{Error, ExitStatus};
use crate::msg::JobId;

/// SplitMix64: small, fast, and the same on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    /// True with probability `pct`%.
    fn pct(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }

    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

/// How a simulated job behaves in its worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Runs, returns a result; ignores cancels (a blocking task).
    Normal,
    /// Stops soon after a cancel, with a result (checks `cancelled()`).
    Cooperative,
    /// An async task: dropped on cancel, answers `Cancelled`.
    Async,
    /// Panics at the end.
    Panics,
    /// Runs for a very long time and ignores cancels.
    Hangs,
    /// Its worker dies while running it.
    Dies,
    /// Its worker writes a garbled frame (the link drops it).
    Garbles,
}

struct Ledger {
    kind: Kind,
    run: Duration,
    retries: u32,
    /// Its slot: resolved or cancelled (exactly one, at most once).
    resolved: u32,
    cancelled: bool,
    released: u32,
    /// Times a simulated worker really started it.
    starts: u32,
    /// Times its worker died while running it.
    deaths: u32,
    accepted: bool,
}

/// A simulated worker process.
#[derive(Default)]
struct Proc {
    /// Jobs read and not started: (id, sent ahead).
    queue: VecDeque<(JobId, bool)>,
    running: HashSet<JobId>,
    cancelled: HashSet<JobId>,
    /// Its exit is on its way to the host; it does nothing more.
    dead: bool,
}

#[derive(Debug)]
enum Ev {
    ToWorker(WorkerId, Msg),
    ToHost(WorkerId, Input<()>),
    SpawnDone(WorkerId),
    JobDone(WorkerId, JobId),
}

#[derive(Debug)]
enum Msg {
    Job(JobId, bool),
    Control(Control),
    Close,
}

struct World {
    rng: Rng,
    base: Instant,
    /// Simulated time since `base`.
    t: Duration,
    core: Core<()>,
    set: Settings,
    events: BTreeMap<(Duration, u64), Ev>,
    seq: u64,
    /// Per worker, the time of the last delivery each way (pipes are FIFO).
    fifo: HashMap<(WorkerId, bool), Duration>,
    procs: BTreeMap<WorkerId, Proc>,
    jobs: BTreeMap<JobId, Ledger>,
    next_job: u64,
    /// Start-ups fail until then.
    failing_until: Duration,
    initial: usize,
    spawned_ok: u64,
    /// Workers whose exit the core has been told of.
    exited: usize,
    shut_down: bool,
    /// Inputs were handled whose actions are not carried out yet.
    undrained: bool,
    /// Workers sampled over the memory limit (a kill may follow).
    over_memory: HashSet<WorkerId>,
    /// No more races or failures: the end of a run.
    calm: bool,
    trace: Vec<String>,
    keep_trace: bool,
    steps: u64,
}

impl World {
    fn new(seed: u64, keep_trace: bool) -> Self {
        let mut rng = Rng(seed);
        let slots = 1 + rng.below(8) as usize;
        let set = Settings {
            workers: 1 + rng.below(4) as usize,
            min_workers: rng.below(2) as usize,
            slots,
            prefetch: [0, 1, 2, 4, 32, 64][rng.below(6) as usize],
            max_tasks_per_worker: rng.pct(25).then(|| 1 + rng.below(6)),
            max_worker_rss: rng.pct(20).then_some(1000),
            worker_memory_limit: rng.pct(20).then_some(2000),
            idle_timeout: rng.pct(30).then(|| rng.ms(50, 400)),
            job_timeout: rng.pct(25).then(|| rng.ms(20, 300)),
            cancel_grace: rng.ms(10, 200),
            max_startup_failures: 1 + rng.below(4) as u32,
            max_startup_backoff: rng.ms(50, 1000),
        };
        let base = Instant::now();
        let failing_until = if rng.pct(20) {
            rng.ms(0, 3000)
        } else {
            Duration::ZERO
        };
        let mut w = World {
            core: Core::new(set.clone(), base),
            rng,
            base,
            t: Duration::ZERO,
            initial: set.workers,
            set,
            events: BTreeMap::new(),
            seq: 0,
            fifo: HashMap::new(),
            procs: BTreeMap::new(),
            jobs: BTreeMap::new(),
            next_job: 1,
            failing_until,
            spawned_ok: 0,
            exited: 0,
            shut_down: false,
            undrained: false,
            over_memory: HashSet::new(),
            calm: false,
            trace: Vec::new(),
            keep_trace,
            steps: 0,
        };
        w.note(format!("settings {:?}", w.set));
        w
    }

    fn now(&self) -> Instant {
        self.base + self.t
    }

    fn note(&mut self, s: String) {
        if self.keep_trace {
            self.trace.push(format!("{:>8.3?} {s}", self.t));
        }
    }

    fn at(&mut self, after: Duration, ev: Ev) {
        self.seq += 1;
        self.events.insert((self.t + after, self.seq), ev);
    }

    fn input(&mut self, input: Input<()>) -> Result<(), String> {
        self.note(format!("in  {input:?}"));
        if let Input::Exited { .. } = input {
            self.exited += 1;
        }
        self.core.handle(self.now(), input);
        // The driver feeds a batch of inputs before it carries out the
        // actions; so does the simulation, now and then.
        // It carries them out before it waits for anything, so before
        // time moves on (see `world_step`).
        if !self.calm && self.rng.pct(30) {
            self.undrained = true;
            return Ok(());
        }
        self.after_step()
    }

    /// Carries out the core's actions, then checks the invariants.
    fn after_step(&mut self) -> Result<(), String> {
        self.undrained = false;
        let mut failed = Vec::new();
        let mut sent = Vec::new();
        while let Some(a) = self.core.poll_action() {
            self.note(format!("out {a:?}"));
            self.apply(a, &mut failed, &mut sent)?;
        }
        self.check_step(&sent)?;
        for (worker, job) in failed {
            self.input(Input::SendFailed { worker, job })?;
        }
        Ok(())
    }

    fn apply(
        &mut self,
        a: Action<()>,
        failed: &mut Vec<(WorkerId, JobId)>,
        sent: &mut Vec<JobId>,
    ) -> Result<(), String> {
        match a {
            Action::Spawn(w) => {
                let d = self.rng.ms(1, 20);
                self.at(d, Ev::SpawnDone(w));
            }
            Action::SendJob {
                worker, job, ahead, ..
            } => {
                sent.push(job);
                let dead = self.procs.get(&worker).is_none_or(|p| p.dead);
                if dead && self.rng.pct(50) {
                    // Its link already ended.
                    failed.push((worker, job));
                } else {
                    self.pipe(worker, false, Ev::ToWorker(worker, Msg::Job(job, ahead)));
                }
            }
            Action::Send { worker, msg } => {
                self.pipe(worker, false, Ev::ToWorker(worker, Msg::Control(msg)));
            }
            Action::Started { .. } => {}
            Action::Close(w) => self.pipe(w, false, Ev::ToWorker(w, Msg::Close)),
            Action::Kill(w) => {
                // With one job per worker, a kill hits only a job whose
                // handle has its outcome (being stopped), never one that
                // started since. (Over the memory limit, every job in the
                // process shares the blame.)
                if self.set.slots == 1 && !self.over_memory.contains(&w) {
                    // (A process that died already cannot be hit.)
                    let running = self
                        .procs
                        .get(&w)
                        .filter(|p| !p.dead)
                        .map(|p| p.running.clone());
                    for id in running.into_iter().flatten() {
                        let l = self.ledger(id)?;
                        if !l.cancelled && l.resolved == 0 {
                            return Err(format!("killing {w} hits {id}, which nobody stopped"));
                        }
                    }
                }
                self.die(w, ExitStatus::Signal(9), None, true)
            }
            Action::Resolve { job } => {
                if let Some((_, result)) = self.core.take_answer(job) {
                    self.resolve(job, result)?;
                }
            }
            Action::Release { job, result, .. } => {
                if let Some(result) = result {
                    self.resolve(job, result)?;
                }
                let l = self.ledger(job)?;
                l.released += 1;
                if l.released > 1 {
                    return Err(format!("{job} released twice"));
                }
                if l.resolved == 0 && !l.cancelled {
                    return Err(format!("{job} released without an outcome"));
                }
            }
        }
        Ok(())
    }

    /// A result reaches the job's handle (unless the handle was cancelled
    /// first; now and then it is cancelled just before).
    fn resolve(&mut self, job: JobId, result: crate::slot::RawResult) -> Result<(), String> {
        let race = !self.calm && self.rng.pct(3);
        let l = self.ledger(job)?;
        if l.resolved > 0 {
            return Err(format!("{job} resolved twice"));
        }
        if l.released > 0 {
            return Err(format!("{job} resolved after its release"));
        }
        if !l.cancelled && race {
            l.cancelled = true;
            self.note(format!("race: {job}'s handle cancels first"));
            self.cancel_later(job);
        } else if !l.cancelled {
            l.resolved += 1;
        }
        drop(result);
        Ok(())
    }

    fn ledger(&mut self, job: JobId) -> Result<&mut Ledger, String> {
        self.jobs
            .get_mut(&job)
            .ok_or_else(|| format!("the core named {job}, never submitted"))
    }

    /// The handle's cancel reaches the core a moment later.
    fn cancel_later(&mut self, job: JobId) {
        let d = self.rng.ms(0, 3);
        self.seq += 1;
        self.events.insert(
            (self.t + d, self.seq),
            Ev::ToHost(WorkerId(u64::MAX), Input::Cancel(job)),
        );
    }

    fn deliver(&mut self, ev: Ev) -> Result<(), String> {
        match ev {
            Ev::ToWorker(w, msg) => self.worker_msg(w, msg),
            Ev::ToHost(_, input) => self.input(input),
            Ev::JobDone(w, id) => self.job_done(w, id),
            Ev::SpawnDone(w) => {
                let fail = self.t < self.failing_until || (!self.calm && self.rng.pct(3));
                if fail {
                    let e = Error::Spawn {
                        message: "simulated start-up failure".into(),
                    };
                    self.input(Input::Spawned {
                        worker: w,
                        result: Err(e),
                    })
                } else {
                    self.procs.insert(w, Proc::default());
                    self.spawned_ok += 1;
                    self.input(Input::Spawned {
                        worker: w,
                        result: Ok(1000 + w.0 as u32),
                    })
                }
            }
        }
    }

    /// Advances to the next event or timer and handles it; false if there
    /// is none.
    fn world_step(&mut self) -> Result<bool, String> {
        if self.undrained && self.events.keys().next().is_none_or(|k| k.0 > self.t) {
            self.after_step()?;
        }
        let next_ev = self.events.keys().next().copied();
        let next_timer = self.core.poll_timeout().map(|at| at - self.base);
        match (next_ev, next_timer) {
            (None, None) => Ok(false),
            (Some((t, _)), Some(tt)) if tt < t => self.fire(tt),
            (Some(key), _) => {
                let ev = self.events.remove(&key).ok_or("lost an event")?;
                self.t = self.t.max(key.0);
                self.deliver(ev)?;
                Ok(true)
            }
            (None, Some(tt)) => self.fire(tt),
        }
    }

    fn fire(&mut self, at: Duration) -> Result<bool, String> {
        self.t = self.t.max(at);
        self.note("timer".into());
        self.core.handle_timeout(self.now());
        self.after_step()?;
        Ok(true)
    }

    /// The invariants that hold after every step.
    fn check_step(&mut self, sent: &[JobId]) -> Result<(), String> {
        self.steps += 1;
        self.core.check()?;
        let queued = self.core.queued_ids();
        // Jobs leave the queue in order: what was sent in this step came
        // before everything still queued.
        if let (Some(&last), Some(&first)) = (sent.iter().max(), queued.first()) {
            if last > first {
                return Err(format!("sent {last} while {first} waits in the queue"));
            }
        }
        if sent.windows(2).any(|w| w[0] > w[1]) {
            return Err(format!("sent out of order: {sent:?}"));
        }
        let live = self
            .jobs
            .iter()
            .filter(|(_, l)| l.accepted && l.released == 0)
            .count();
        let s = self.core.stats();
        if s.queued + s.running != live {
            return Err(format!(
                "stats say {} queued + {} running, the simulation has {live} jobs in the pool",
                s.queued, s.running
            ));
        }
        let alive = self.procs.len() - self.exited;
        if s.workers_alive != alive {
            return Err(format!(
                "stats say {} workers alive, the simulation has {alive}",
                s.workers_alive
            ));
        }
        // Every start after the first `workers` counts as a respawn (an
        // initial worker that failed to start is replaced by one).
        let extra = self.spawned_ok.checked_sub(s.respawns);
        if extra.is_none_or(|initial| initial > self.initial as u64) {
            return Err(format!(
                "{} workers started, {} counted as respawns",
                self.spawned_ok, s.respawns
            ));
        }
        for (&id, l) in &self.jobs {
            if let Some(starts) = self.core.starts(id) {
                if starts > 1 + l.retries {
                    return Err(format!("the core started {id} {starts} times"));
                }
            }
        }
        Ok(())
    }

    /// At the end: every job has its outcome, exactly once.
    fn check_end(&self) -> Result<(), String> {
        for (id, l) in &self.jobs {
            if !l.accepted {
                continue;
            }
            if l.released != 1 {
                return Err(format!(
                    "{id} was never released ({:?})",
                    self.core.job_state(*id)
                ));
            }
            if u32::from(l.cancelled) + l.resolved != 1 {
                return Err(format!(
                    "{id}: resolved {} times, cancelled {}",
                    l.resolved, l.cancelled
                ));
            }
        }
        if !self.core.is_finished() {
            return Err("the pool never finished after shutdown".into());
        }
        if self.procs.values().any(|p| !p.dead) {
            return Err("a worker process outlived its pool".into());
        }
        Ok(())
    }

    /// Runs until nothing is left to happen (bounded).
    fn settle(&mut self, limit: u64) -> Result<(), String> {
        for _ in 0..limit {
            if !self.world_step()? {
                return Ok(());
            }
        }
        Err(format!("still busy after {limit} more steps"))
    }

    fn run(&mut self, actions: u64) -> Result<(), String> {
        for _ in 0..actions {
            // Let the world move a few steps between user actions.
            for _ in 0..self.rng.below(6) {
                if !self.world_step()? {
                    break;
                }
            }
            self.user_step()?;
        }
        // Start-ups work again; nothing new fails.
        self.failing_until = Duration::ZERO;
        self.calm = true;
        self.after_step()?;
        self.settle(100_000)?;
        if !self.shut_down {
            // Once workers can start again, the pool serves again.
            let probe = JobId(self.next_job);
            self.submit(Some(Kind::Normal))?;
            if let Some(l) = self.jobs.get_mut(&probe) {
                l.run = Duration::from_millis(1);
            }
            self.settle(100_000)?;
            let l = self.jobs.get(&probe).ok_or("the probe vanished")?;
            if l.resolved != 1 {
                return Err("after start-ups work again, a new job did not complete".into());
            }
            self.shut_down = true;
            self.input(Input::Shutdown)?;
        }
        self.settle(100_000)?;
        self.check_end()
    }
}

fn run_seed(seed: u64, keep_trace: bool) -> Result<u64, (String, Vec<String>)> {
    let mut w = World::new(seed, keep_trace);
    let actions = 20 + w.rng.below(80);
    match w.run(actions) {
        Ok(()) => Ok(w.steps),
        Err(e) => Err((e, w.trace)),
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

#[test]
fn simulation() {
    if let Some(seed) = env_u64("PROCPOOL_SIM_SEED") {
        match run_seed(seed, true) {
            Ok(steps) => eprintln!("seed {seed}: ok, {steps} steps"),
            Err((e, trace)) => {
                for line in &trace {
                    eprintln!("{line}");
                }
                panic!("seed {seed}: {e}");
            }
        }
        return;
    }
    let seeds = env_u64("PROCPOOL_SIM_SEEDS").unwrap_or(10_000);
    let first = env_u64("PROCPOOL_SIM_FIRST").unwrap_or(0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let results: Vec<Result<u64, (u64, String)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut steps = 0;
                    let mut seed = first + t;
                    while seed < first + seeds {
                        // `catch_unwind`: a `debug_assert!` in the core
                        // names its seed too.
                        let r = std::panic::catch_unwind(|| run_seed(seed, false));
                        match r {
                            Ok(Ok(n)) => steps += n,
                            Ok(Err((e, _))) => return Err((seed, e)),
                            Err(p) => {
                                let msg = p
                                    .downcast_ref::<String>()
                                    .cloned()
                                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                                    .unwrap_or_default();
                                return Err((seed, format!("panicked: {msg}")));
                            }
                        }
                        seed += threads;
                    }
                    Ok(steps)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Err((u64::MAX, "a thread died".into()))))
            .collect()
    });
    let mut steps = 0;
    for r in results {
        match r {
            Ok(n) => steps += n,
            Err((seed, e)) => panic!(
                "simulation seed {seed} failed: {e}\nreplay it with its trace: \
                 PROCPOOL_SIM_SEED={seed} cargo test --lib simulation -- --nocapture"
            ),
        }
    }
    eprintln!("simulation: {seeds} seeds, {steps} steps checked");
}
