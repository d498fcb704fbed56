//! What the commands write on standard output.

/// `println!` that ignores a closed standard output (`pubsub check | head`)
/// instead of panicking; the exit code still tells what happened.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
pub(crate) use say;

use std::io::{self, Write};

use base64::Engine as _;
use clap::ValueEnum;
use msight_data::json::BytesAs;
use msight_data::Value;
use pubsub_core::codec::MsgPack;
use pubsub_core::{Bytes, Codec, Message};

/// Output format of `pubsub sub`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The payload as text and a newline; invalid UTF-8 bytes are written `\xNN`.
    Line,
    /// The payload bytes alone, nothing between messages.
    Raw,
    /// The payload as one line of lowercase hex.
    Hex,
    /// One JSON object per line: {"topic", "len", "payload_base64",
    /// "headers" (a list of [key, value] pairs, in order), "id" (the
    /// broker's, or null), "attempt" (1 the first time)}.
    Json,
    /// Each msight message (MessagePack, as Python's `Data.serialize()`
    /// writes it) as one line of its JSON form; byte fields as
    /// `"<N bytes>"`, or base64 with --base64 (then the line is Python's
    /// `to_json()`). Other payloads are reported on standard error.
    Msight,
}

/// `pub` and `sub` talk to other processes; the in-process `memory`
/// backend cannot reach them, which a newcomer may not expect.
pub fn warn_if_in_process(ps: &pubsub_core::blocking::PubSub, consequence: &str) {
    if ps.backend_name() == "memory" {
        eprintln!(
            "note: the memory backend lives inside this process; {consequence} \
             (choose a broker with --backend or MSIGHT_PUBSUB_BACKEND)"
        );
    }
}

/// Write one message in `format`; with [`Format::Msight`], byte fields as `bytes` says.
pub fn write_message(
    out: &mut dyn Write,
    format: Format,
    msg: &Message,
    bytes: BytesAs,
) -> io::Result<()> {
    let (topic, payload) = (msg.topic.as_str(), &msg.payload);
    match format {
        Format::Msight => match msight_line(payload, bytes) {
            Ok(line) => {
                out.write_all(line.as_bytes())?;
                out.write_all(b"\n")
            }
            Err(why) => {
                eprintln!(
                    "{topic}: not an msight message ({} bytes): {why}",
                    payload.len()
                );
                Ok(())
            }
        },
        Format::Raw => out.write_all(payload),
        Format::Line => {
            for chunk in payload.utf8_chunks() {
                out.write_all(chunk.valid().as_bytes())?;
                for b in chunk.invalid() {
                    write!(out, "\\x{b:02x}")?;
                }
            }
            out.write_all(b"\n")
        }
        Format::Hex => {
            let mut line = String::with_capacity(payload.len() * 2 + 1);
            for b in payload {
                line.push(char::from(HEX[usize::from(b >> 4)]));
                line.push(char::from(HEX[usize::from(b & 0xf)]));
            }
            line.push('\n');
            out.write_all(line.as_bytes())
        }
        Format::Json => {
            let object = JsonMessage {
                topic,
                len: payload.len(),
                payload_base64: base64::engine::general_purpose::STANDARD.encode(payload),
                headers: msg.headers.iter().collect(),
                id: msg.id.as_deref(),
                attempt: msg.attempt,
            };
            serde_json::to_writer(&mut *out, &object)?;
            out.write_all(b"\n")
        }
    }
}

/// The JSON form of the msight message in `payload`.
fn msight_line(payload: &Bytes, bytes: BytesAs) -> Result<String, String> {
    let value: Value = MsgPack.decode(payload).map_err(|e| e.to_string())?;
    if value.get("data_type").and_then(Value::as_str).is_none() {
        return Err("a MessagePack value without a data_type".into());
    }
    msight_data::json::display(&value, bytes).map_err(|e| e.to_string())
}

/// One line of `--format json`, fields in this order.
#[derive(serde::Serialize)]
struct JsonMessage<'a> {
    topic: &'a str,
    len: usize,
    payload_base64: String,
    headers: Vec<(&'a str, &'a str)>,
    id: Option<&'a str>,
    attempt: u32,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    fn render(format: Format, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let msg = Message::new("t.x", Bytes::copy_from_slice(payload));
        write_message(&mut out, format, &msg, BytesAs::Length).unwrap();
        out
    }

    #[test]
    fn msight_messages_as_json_lines() {
        use msight_data::{ImageData, SensorData};
        let mut sensor = SensorData::new("cam");
        (
            sensor.capture_timestamp,
            sensor.creation_timestamp,
            sensor.frame_id,
        ) = (1.5, 2.0, 7);
        sensor.device_name = None;
        let img = ImageData::new(sensor, vec![0u8; 3000], [30, 100, 1]);
        let payload = MsgPack.encode(&img).unwrap();
        let line = String::from_utf8(render(Format::Msight, &payload)).unwrap();
        assert_eq!(
            line,
            "{\"data_type\": \"msight_core.data.image.ImageData\", \"sensor_name\": \"cam\", \
             \"capture_timestamp\": 1.5, \"creation_timestamp\": 2.0, \"frame_id\": 7, \
             \"device_name\": null, \"image\": \"<3000 bytes>\", \"is_encoded\": true, \
             \"detection_results\": null, \"size\": [30, 100, 1]}\n"
        );
        let mut out = Vec::new();
        let msg = Message::new("t", payload.clone());
        write_message(&mut out, Format::Msight, &msg, BytesAs::Base64).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert_eq!(line.trim_end(), msight_data::json::to_json(&img).unwrap());
        // Not msight: nothing on standard output.
        assert!(render(Format::Msight, b"plain text").is_empty());
        assert!(render(Format::Msight, &MsgPack.encode(&[1, 2]).unwrap()).is_empty());
    }

    #[test]
    fn each_format() {
        let p = b"hi\xff\x00!";
        assert_eq!(render(Format::Raw, p), p);
        assert_eq!(render(Format::Line, p), b"hi\\xff\0!\n");
        assert_eq!(render(Format::Line, "π ok".as_bytes()), "π ok\n".as_bytes());
        assert_eq!(render(Format::Hex, p), b"6869ff0021\n");
        assert_eq!(render(Format::Hex, b""), b"\n");
        let json: serde_json::Value = serde_json::from_slice(&render(Format::Json, p)).unwrap();
        assert_eq!(json["topic"], "t.x");
        assert_eq!(json["len"], 5);
        assert_eq!(json["payload_base64"], "aGn/ACE=");
        assert_eq!(
            render(Format::Json, b""),
            b"{\"topic\":\"t.x\",\"len\":0,\"payload_base64\":\"\",\"headers\":[],\"id\":null,\"attempt\":1}\n"
        );
        // Headers in order (a key may repeat), the broker's id, the attempt.
        let mut h = pubsub_core::Headers::new();
        h.append("trace", "7f")
            .append("hop", "a")
            .append("hop", "b");
        let msg = Message::new("t.y", Bytes::from_static(b"x"))
            .with_headers(h)
            .with_id("1700-0")
            .with_attempt(3);
        let mut out = Vec::new();
        write_message(&mut out, Format::Json, &msg, BytesAs::Length).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"topic\":\"t.y\",\"len\":1,\"payload_base64\":\"eA==\",\"headers\":[[\"trace\",\"7f\"],[\"hop\",\"a\"],[\"hop\",\"b\"]],\"id\":\"1700-0\",\"attempt\":3}\n"
        );
    }
}
