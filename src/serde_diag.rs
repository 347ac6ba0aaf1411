//! What went wrong when a value failed to serialize or deserialize: the
//! serde message and the field path where it happened.
//!
//! postcard keeps only the kind of a serde error ("Serde Serialization
//! Error"), not its text, and never the path. So on the failure path only,
//! the value is serialized again into a serializer that writes nothing and
//! keeps the first error's message, under `serde_path_to_error` for the
//! path (`files[3].path: path contains invalid UTF-8 characters`); a
//! failed decode is run again under `serde_path_to_error` for its path.
//! The happy path never comes here. A leaf module: it imports nothing of
//! the crate.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde::ser;

/// The message for `value`, which failed to encode with postcard error
/// `e`: the serde message at its field path, or `e`'s text if serializing
/// again does not fail.
pub(crate) fn encode_failure<T: Serialize + ?Sized>(value: &T, e: &postcard::Error) -> String {
    let diag = catch_unwind(AssertUnwindSafe(|| {
        serde_path_to_error::serialize(value, Sink)
    }));
    match diag {
        Ok(Err(d)) => at(d.path(), &d.inner().0),
        Ok(Ok(())) | Err(_) => e.to_string(),
    }
}

/// The message for `bytes`, which failed to decode as `T` with postcard
/// error `e`: the error at the path where decoding stopped (postcard
/// decodes a struct as a sequence, so a field shows as its position:
/// `files[3][1]`).
pub(crate) fn decode_failure<T: DeserializeOwned>(bytes: &[u8], e: &postcard::Error) -> String {
    let diag = catch_unwind(AssertUnwindSafe(|| {
        let mut de = postcard::Deserializer::from_bytes(bytes);
        serde_path_to_error::deserialize::<_, T>(&mut de).map(drop)
    }));
    match diag {
        Ok(Err(d)) => at(d.path(), &e.to_string()),
        Ok(Ok(())) | Err(_) => e.to_string(),
    }
}

/// `message`, prefixed with `path` unless it is the root.
fn at(path: &serde_path_to_error::Path, message: &str) -> String {
    if path.iter().next().is_none() {
        message.to_owned()
    } else {
        format!("{path}: {message}")
    }
}

/// A serializer error that keeps its message.
#[derive(Debug)]
struct Diag(String);

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Diag {}

impl ser::Error for Diag {
    fn custom<M: fmt::Display>(msg: M) -> Self {
        Diag(msg.to_string())
    }
}

/// The sequences and maps postcard refuses: their length must be known
/// before their first element.
fn unknown_length() -> Diag {
    Diag(
        "a sequence or map of unknown length, which postcard cannot encode (its length must be \
         known up front: collect it into a Vec or a map first)"
            .into(),
    )
}

/// A serializer that accepts what postcard accepts and writes nothing.
struct Sink;

type R = Result<(), Diag>;

impl ser::Serializer for Sink {
    type Ok = ();
    type Error = Diag;
    type SerializeSeq = Sink;
    type SerializeTuple = Sink;
    type SerializeTupleStruct = Sink;
    type SerializeTupleVariant = Sink;
    type SerializeMap = Sink;
    type SerializeStruct = Sink;
    type SerializeStructVariant = Sink;

    fn is_human_readable(&self) -> bool {
        // As postcard: types that serialize differently for humans take
        // the same branch here as in the real encoding.
        false
    }

    fn serialize_bool(self, _: bool) -> R {
        Ok(())
    }
    fn serialize_i8(self, _: i8) -> R {
        Ok(())
    }
    fn serialize_i16(self, _: i16) -> R {
        Ok(())
    }
    fn serialize_i32(self, _: i32) -> R {
        Ok(())
    }
    fn serialize_i64(self, _: i64) -> R {
        Ok(())
    }
    fn serialize_i128(self, _: i128) -> R {
        Ok(())
    }
    fn serialize_u8(self, _: u8) -> R {
        Ok(())
    }
    fn serialize_u16(self, _: u16) -> R {
        Ok(())
    }
    fn serialize_u32(self, _: u32) -> R {
        Ok(())
    }
    fn serialize_u64(self, _: u64) -> R {
        Ok(())
    }
    fn serialize_u128(self, _: u128) -> R {
        Ok(())
    }
    fn serialize_f32(self, _: f32) -> R {
        Ok(())
    }
    fn serialize_f64(self, _: f64) -> R {
        Ok(())
    }
    fn serialize_char(self, _: char) -> R {
        Ok(())
    }
    fn serialize_str(self, _: &str) -> R {
        Ok(())
    }
    fn serialize_bytes(self, _: &[u8]) -> R {
        Ok(())
    }
    fn serialize_none(self) -> R {
        Ok(())
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> R {
        value.serialize(self)
    }
    fn serialize_unit(self) -> R {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> R {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> R {
        Ok(())
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, value: &T) -> R {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> R {
        value.serialize(self)
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Sink, Diag> {
        len.map(|_| Sink).ok_or_else(unknown_length)
    }
    fn serialize_tuple(self, _: usize) -> Result<Sink, Diag> {
        Ok(Sink)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Sink, Diag> {
        Ok(Sink)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Sink, Diag> {
        Ok(Sink)
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Sink, Diag> {
        len.map(|_| Sink).ok_or_else(unknown_length)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Sink, Diag> {
        Ok(Sink)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Sink, Diag> {
        Ok(Sink)
    }
}

impl ser::SerializeSeq for Sink {
    type Ok = ();
    type Error = Diag;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> R {
        value.serialize(Sink)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeTuple for Sink {
    type Ok = ();
    type Error = Diag;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> R {
        value.serialize(Sink)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeTupleStruct for Sink {
    type Ok = ();
    type Error = Diag;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> R {
        value.serialize(Sink)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeTupleVariant for Sink {
    type Ok = ();
    type Error = Diag;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> R {
        value.serialize(Sink)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeMap for Sink {
    type Ok = ();
    type Error = Diag;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> R {
        key.serialize(Sink)
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> R {
        value.serialize(Sink)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeStruct for Sink {
    type Ok = ();
    type Error = Diag;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, _: &'static str, value: &T) -> R {
        value.serialize(Sink)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeStructVariant for Sink {
    type Ok = ();
    type Error = Diag;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, _: &'static str, value: &T) -> R {
        value.serialize(Sink)
    }
    fn end(self) -> R {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Fails;

    impl Serialize for Fails {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(ser::Error::custom("no thanks"))
        }
    }

    #[derive(Serialize)]
    struct File {
        name: String,
        bad: Option<Fails>,
    }

    #[derive(Serialize)]
    struct Files {
        files: Vec<File>,
        by_name: BTreeMap<String, u32>,
    }

    #[test]
    fn a_custom_error_keeps_its_message_and_path() {
        let value = Files {
            files: vec![
                File {
                    name: "a".into(),
                    bad: None,
                },
                File {
                    name: "b".into(),
                    bad: Some(Fails),
                },
            ],
            by_name: BTreeMap::new(),
        };
        let e = postcard::to_stdvec(&value).unwrap_err();
        assert_eq!(
            encode_failure(&value, &e),
            "files[1].bad: no thanks",
            "postcard said {e}"
        );
        // At the root: the message alone.
        let e = postcard::to_stdvec(&Fails).unwrap_err();
        assert_eq!(encode_failure(&Fails, &e), "no thanks");
    }

    #[test]
    fn without_a_diagnosis_postcard_s_message_stays() {
        let e = postcard::Error::SerializeBufferFull;
        assert_eq!(encode_failure(&1u8, &e), e.to_string());
    }

    #[test]
    fn a_decode_failure_names_the_field() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Two {
            a: u8,
            b: String,
        }
        // `a`, then a string of length 3 with invalid UTF-8.
        let bytes = [1u8, 3, 0xff, 0xfe, 0xfd];
        let e = postcard::from_bytes::<Two>(&bytes).unwrap_err();
        let message = decode_failure::<Two>(&bytes, &e);
        // postcard decodes a struct as a sequence, so the path has the
        // field's position, not its name.
        assert!(message.starts_with("[1]: "), "{message}");
        assert!(message.ends_with(&e.to_string()), "{message}");
    }
}
