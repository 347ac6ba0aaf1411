//! Faults injected at each point of a job's trip: in the task's and the
//! output's serde impls, in the host or in a chaos worker.
//!
//! Uses `chaos` and `tasks` (include `support/chaos.rs` and
//! `support/tasks.rs` as `mod chaos;` and `mod tasks;` too).

use procpool::Task;
use serde::{Deserialize, Serialize};

use crate::chaos::in_worker;
use crate::tasks::serde_bytes_compat;

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
