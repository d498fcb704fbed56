//! The JSON forms: Python's `Data.to_json()` byte for byte, its
//! `from_json()`, and a display form for people (bytes shown by length).

use std::io;

use pubsub_core::codec::{CodecError, Json};
use pubsub_core::{Blob, Bytes, Codec};
use serde::de::DeserializeOwned;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use crate::value::Value;

/// The text `json.dumps(obj)` writes in Python: `", "` and `": "` between
/// items, every character outside printable ASCII as a `\uXXXX` escape
/// (`ensure_ascii`), floats as Python's `repr` (`1.5`, `1e+16`, `1e-05`).
#[derive(Clone, Copy, Debug, Default)]
pub struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_f64<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        w.write_all(python_float_repr(value).as_bytes())
    }

    fn write_f32<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f32) -> io::Result<()> {
        self.write_f64(w, f64::from(value))
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        // serde_json has escaped quotes, backslashes and control
        // characters already; Python also escapes DEL and everything
        // beyond ASCII.
        if fragment.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return w.write_all(fragment.as_bytes());
        }
        for c in fragment.chars() {
            if (' '..='~').contains(&c) {
                w.write_all(&[c as u8])?;
            } else {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(w, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}

/// Python's `repr(float)`: the shortest digits that read back as the same
/// number, in positional notation when the exponent is from -4 to 15
/// (with `.0` when there is no fraction), else as `d.ddde+XX`.
pub fn python_float_repr(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    // Rust's `{:e}` gives the shortest digits that round-trip. When two
    // strings of that length do (the value lies half-way between them),
    // Rust may take either; Python takes the closest to the exact value,
    // ties to even, which is the value correctly rounded to that many
    // digits: `{:.N$e}`, which rounds exactly, half to even.
    let shortest = format!("{v:e}");
    let digit_count = shortest
        .split_once('e')
        .map_or(0, |(m, _)| m.bytes().filter(u8::is_ascii_digit).count());
    let rounded = format!("{v:.prec$e}", prec = digit_count.saturating_sub(1));
    let sci = if rounded.parse::<f64>() == Ok(v) {
        rounded
    } else {
        shortest
    };
    let (mantissa, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("an integer exponent");
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let mut out = String::with_capacity(digits.len() + 8);
    if negative {
        out.push('-');
    }
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', int_len - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
            out.push_str(&digits);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push_str(&format!(
            "e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        ));
    }
    out
}

/// `value` as Python's `Data.to_json()` writes it: `json.dumps` of
/// `to_dict()` with bytes as base64 (`BytesEncoder`). For the msight types
/// the text is the same, byte for byte, as Python's, except for NaN and
/// infinite floats, which serde_json writes as `null` (Python: `NaN`,
/// `Infinity`).
///
/// ```
/// use msight_data::{json, BytesData, SensorData};
/// let mut sensor = SensorData::new("gps");
/// (sensor.capture_timestamp, sensor.creation_timestamp, sensor.frame_id) = (1.5, 2.0, 7);
/// sensor.device_name = None;
/// let text = json::to_json(&BytesData { sensor, data: b"x"[..].into() }).unwrap();
/// assert_eq!(text, r#"{"data_type": "msight_core.data.bytes.BytesData", "sensor_name": "gps", "capture_timestamp": 1.5, "creation_timestamp": 2.0, "frame_id": 7, "device_name": null, "data": "eA=="}"#);
/// ```
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String, CodecError> {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    value.serialize(&mut ser).map_err(CodecError::new)?;
    String::from_utf8(out).map_err(CodecError::new)
}

/// A `T` from its JSON form (Python's `to_json()`; any JSON with the same
/// keys): byte fields are read from base64. Errors say where, as
/// [`Json`]'s do.
pub fn from_json<T: DeserializeOwned>(text: &str) -> Result<T, CodecError> {
    Json.decode(&Bytes::copy_from_slice(text.as_bytes()))
}

/// How [`display`] shows bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BytesAs {
    /// `"<1048576 bytes>"`: the length only.
    #[default]
    Length,
    /// Base64, as `to_json()` writes them.
    Base64,
}

/// `value` (a decoded payload) as one line of Python-style JSON for
/// people, with bytes shown as `bytes` says: a camera message becomes its
/// sensor, timestamps, frame id and `"image": "<51234 bytes>"`. With
/// [`BytesAs::Base64`] the line is what Python's `to_json()` writes.
pub fn display(value: &Value, bytes: BytesAs) -> Result<String, CodecError> {
    to_json(&Shown { value, bytes })
}

struct Shown<'a> {
    value: &'a Value,
    bytes: BytesAs,
}

impl Serialize for Shown<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let shown = |value| Shown {
            value,
            bytes: self.bytes,
        };
        match (self.value, self.bytes) {
            (Value::Bin(b), BytesAs::Length) => s.serialize_str(&format!("<{} bytes>", b.len())),
            (Value::Bin(b), BytesAs::Base64) => Blob::serialize(b, s),
            (Value::Array(items), _) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&shown(item))?;
                }
                seq.end()
            }
            (Value::Map(entries), _) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(&shown(k), &shown(v))?;
                }
                map.end()
            }
            (other, _) => other.serialize(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_as_python_repr() {
        for (v, want) in [
            (1.5, "1.5"),
            (2.0, "2.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1e15, "1000000000000000.0"),
            (123456789012345.6, "123456789012345.6"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (-0.0, "-0.0"),
            (-2.5e300, "-2.5e+300"),
            (1796157769.670249, "1796157769.670249"),
            (0.1, "0.1"),
            (5e-324, "5e-324"),
            // Half-way between two shortest strings: Python rounds to even.
            (805138848010533.2, "805138848010533.2"),
        ] {
            assert_eq!(python_float_repr(v), want, "{v:e}");
        }
    }

    #[test]
    fn strings_escaped_as_python_ensure_ascii() {
        let v = Value::Map(vec![(
            Value::from("k\u{7f}"),
            Value::from("é \"q\" \\ \n\t\u{1} 😀"),
        )]);
        assert_eq!(
            to_json(&v).unwrap(),
            r#"{"k\u007f": "\u00e9 \"q\" \\ \n\t\u0001 \ud83d\ude00"}"#
        );
    }

    #[test]
    fn display_shows_lengths_or_base64() {
        let v = Value::Map(vec![
            ("image".into(), Value::Bin(vec![0u8; 51234].into())),
            (
                "size".into(),
                Value::Array(vec![Value::Int(2), Value::Int(3)]),
            ),
        ]);
        assert_eq!(
            display(&v, BytesAs::Length).unwrap(),
            r#"{"image": "<51234 bytes>", "size": [2, 3]}"#
        );
        let small = Value::Map(vec![("b".into(), Value::Bin(b"x"[..].into()))]);
        assert_eq!(
            display(&small, BytesAs::Base64).unwrap(),
            r#"{"b": "eA=="}"#
        );
    }
}
