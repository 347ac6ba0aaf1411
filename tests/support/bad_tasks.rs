//! Tasks that cannot make the round trip: one not registered, and ones
//! whose task or output fails to serialize or deserialize.

use procpool::Task;
use serde::{Deserialize, Serialize};

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
