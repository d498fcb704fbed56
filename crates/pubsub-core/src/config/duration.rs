//! Durations in a config document, written as text: `"5s"`, `"250ms"`,
//! `"1m 30s"` (humantime). Use with `#[serde(with =
//! "pubsub_core::config::duration")]`: it writes what `humantime_serde`
//! writes, and a number where a duration belongs is an error that says it
//! is a number and shows how to write it (`connect_timeout = 5` ->
//! write `"5s"`), not "invalid value: string".

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

/// Write `d` as humantime text (`"5s"`).
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    humantime_serde::serialize(d, s)
}

/// Read a duration from text; a number is refused with the text to write.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor)
}

struct DurationVisitor;

fn number<E: de::Error>(n: impl fmt::Display) -> E {
    E::custom(format!(
        "the number {n} is not a duration: write it as text with a unit, \"{n}s\" for {n} seconds (or \"{n}ms\")"
    ))
}

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration written as text, like \"5s\", \"250ms\" or \"1m 30s\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        humantime_serde::re::humantime::parse_duration(v.trim()).map_err(|_| {
            E::custom(format!(
                "{v:?} is not a duration; write it like \"5s\", \"250ms\" or \"1m 30s\""
            ))
        })
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        Err(number(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Err(number(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        Err(number(v))
    }
}
