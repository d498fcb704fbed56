//! [`Value`]: any MessagePack value, as Python's `msgpack.unpackb` sees
//! it, and [`Number`]: an int or a float, as Python keeps them apart.

use std::fmt;

use pubsub_core::Blob;
use serde::de::{
    self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};

/// Any value a Python msight payload can hold: what `msgpack.unpackb`
/// returns (`None`, `bool`, `int`, `float`, `str`, `bytes`, `list`, `dict`).
///
/// It keeps what is needed to write the same bytes again: integers and
/// floats apart, maps in their order, bytes apart from strings. Fields of
/// the `msight_base` structures whose Python type is free (`poly_box`,
/// `sensor_data`, ...) are `Value`s, and so is every field of a `data_type`
/// this crate does not know ([`UnknownData`](crate::UnknownData)).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Value {
    /// `None` (MessagePack nil, JSON null).
    #[default]
    Nil,
    /// `True` / `False`.
    Bool(bool),
    /// An integer that fits `i64`.
    Int(i64),
    /// An integer above `i64::MAX` (only those: smaller ones are [`Value::Int`]).
    UInt(u64),
    /// A float (Python floats are 64 bits).
    Float(f64),
    /// A string.
    Str(String),
    /// Bytes (MessagePack bin; base64 text in JSON). Decoded from
    /// MessagePack without a copy.
    Bin(Blob),
    /// A list or tuple.
    Array(Vec<Value>),
    /// A dict, in its order.
    Map(Vec<(Value, Value)>),
}

impl Value {
    /// An empty map.
    pub fn map() -> Value {
        Value::Map(Vec::new())
    }

    /// The value under `key` of a map with string keys.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is one that fits `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The number as `f64`, if this is an integer or a float.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::UInt(u) => Some(*u as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// Whether this is nil.
    pub fn is_nil(&self) -> bool {
        matches!(self, Value::Nil)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<Blob> for Value {
    fn from(b: Blob) -> Self {
        Value::Bin(b)
    }
}

impl From<Vec<Value>> for Value {
    fn from(v: Vec<Value>) -> Self {
        Value::Array(v)
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Nil => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::UInt(u) => s.serialize_u64(*u),
            Value::Float(f) => s.serialize_f64(*f),
            Value::Str(t) => s.serialize_str(t),
            Value::Bin(b) => b.serialize(s),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

/// At most this many items are reserved ahead for a list or dict whose
/// length the payload announces (the payload may lie).
pub(crate) const RESERVE_LIMIT: usize = 1024;

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a MessagePack or JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::UInt(v), Value::Int))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }

    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Bin(Blob::from_decoded(v)))
    }

    fn visit_borrowed_bytes<E>(self, v: &'de [u8]) -> Result<Value, E> {
        Ok(Value::Bin(Blob::from_decoded(v)))
    }

    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Bin(v.into()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(RESERVE_LIMIT));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(RESERVE_LIMIT));
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Value::Map(entries))
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

/// Reads a typed value out of a [`Value`] (used when a payload's map must
/// be looked at before its type is known). `human_readable` must be the
/// original deserializer's, so that bytes are read as they were written.
pub(crate) struct ValueDeserializer {
    value: Value,
    human_readable: bool,
}

impl ValueDeserializer {
    pub(crate) fn new(value: Value, human_readable: bool) -> Self {
        ValueDeserializer {
            value,
            human_readable,
        }
    }
}

impl<'de> Deserializer<'de> for ValueDeserializer {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        let hr = self.human_readable;
        match self.value {
            Value::Nil => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Int(i) => visitor.visit_i64(i),
            Value::UInt(u) => visitor.visit_u64(u),
            Value::Float(f) => visitor.visit_f64(f),
            Value::Str(s) => visitor.visit_string(s),
            // `visit_bytes`: a blob of the payload stays a slice of it.
            Value::Bin(b) => visitor.visit_bytes(&b),
            Value::Array(items) => visitor.visit_seq(Items {
                iter: items.into_iter(),
                human_readable: hr,
            }),
            Value::Map(entries) => visitor.visit_map(Entries {
                iter: entries.into_iter(),
                pending: None,
                human_readable: hr,
            }),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.value {
            Value::Nil => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn is_human_readable(&self) -> bool {
        self.human_readable
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de> IntoDeserializer<'de, de::value::Error> for ValueDeserializer {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

struct Items {
    iter: std::vec::IntoIter<Value>,
    human_readable: bool,
}

impl<'de> SeqAccess<'de> for Items {
    type Error = de::value::Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        match self.iter.next() {
            Some(v) => seed
                .deserialize(ValueDeserializer::new(v, self.human_readable))
                .map(Some),
            None => Ok(None),
        }
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct Entries {
    iter: std::vec::IntoIter<(Value, Value)>,
    pending: Option<Value>,
    human_readable: bool,
}

impl<'de> MapAccess<'de> for Entries {
    type Error = de::value::Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        match self.iter.next() {
            Some((k, v)) => {
                self.pending = Some(v);
                seed.deserialize(ValueDeserializer::new(k, self.human_readable))
                    .map(Some)
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let v = self
            .pending
            .take()
            .ok_or_else(|| de::Error::custom("a map value was asked for before its key"))?;
        seed.deserialize(ValueDeserializer::new(v, self.human_readable))
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

/// A number as Python keeps it: an `int` or a `float`. Writing it back
/// writes the same kind, so that a Python payload re-encodes to the same
/// bytes and Python reads back the same type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Number {
    /// A Python `int` (one that fits `i64`).
    Int(i64),
    /// A Python `float`.
    Float(f64),
}

impl Number {
    /// The value as `f64`.
    pub fn as_f64(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        }
    }
}

impl From<f64> for Number {
    fn from(f: f64) -> Self {
        Number::Float(f)
    }
}

impl From<i64> for Number {
    fn from(i: i64) -> Self {
        Number::Int(i)
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Number::Int(i) => write!(f, "{i}"),
            Number::Float(x) => write!(f, "{x}"),
        }
    }
}

impl Serialize for Number {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Number::Int(i) => s.serialize_i64(*i),
            Number::Float(f) => s.serialize_f64(*f),
        }
    }
}

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Number;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_i64<E>(self, v: i64) -> Result<Number, E> {
                Ok(Number::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Number, E> {
                i64::try_from(v)
                    .map(Number::Int)
                    .map_err(|_| E::custom(format_args!("integer {v} is larger than i64::MAX")))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Number, E> {
                Ok(Number::Float(v))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pubsub_core::codec::MsgPack;
    use pubsub_core::{Bytes, Codec};

    #[test]
    fn every_kind_round_trips_to_the_same_bytes() {
        let v = Value::Map(vec![
            ("nil".into(), Value::Nil),
            ("t".into(), true.into()),
            ("neg".into(), Value::Int(-40_000)),
            ("big".into(), Value::UInt(u64::MAX)),
            ("pi".into(), Value::Float(3.25)),
            ("bin".into(), Value::Bin(Blob::from(&b"\x00\x01"[..]))),
            (Value::Int(3), Value::Array(vec![Value::Int(1), "x".into()])),
        ]);
        let bytes = MsgPack.encode(&v).unwrap();
        let back: Value = MsgPack.decode(&bytes).unwrap();
        assert_eq!(back, v);
        assert_eq!(MsgPack.encode(&back).unwrap(), bytes);
        assert_eq!(back.get("neg").and_then(Value::as_i64), Some(-40_000));
        assert_eq!(back.get("pi").and_then(Value::as_f64), Some(3.25));
    }

    #[test]
    fn bytes_are_slices_of_the_payload() {
        let v = Value::Array(vec![Value::Bin(vec![7u8; 4096].into())]);
        let bytes: Bytes = MsgPack.encode(&v).unwrap();
        let back: Value = MsgPack.decode(&bytes).unwrap();
        let Value::Array(items) = back else { panic!() };
        let Value::Bin(b) = &items[0] else { panic!() };
        assert!(b.is_slice_of(&bytes));
    }

    #[test]
    fn numbers_keep_int_and_float_apart() {
        for n in [Number::Int(1), Number::Float(1.0), Number::Int(-5)] {
            let bytes = MsgPack.encode(&n).unwrap();
            assert_eq!(MsgPack.decode::<Number>(&bytes).unwrap(), n);
        }
        assert_ne!(
            MsgPack.encode(&Number::Int(1)).unwrap(),
            MsgPack.encode(&Number::Float(1.0)).unwrap()
        );
        assert!(MsgPack
            .decode::<Number>(&MsgPack.encode(&u64::MAX).unwrap())
            .is_err());
    }
}
