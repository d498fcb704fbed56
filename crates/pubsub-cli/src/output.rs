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

/// Output format of `pubsub sub`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The payload as text and a newline; invalid UTF-8 bytes are written `\xNN`.
    Line,
    /// The payload bytes alone, nothing between messages.
    Raw,
    /// The payload as one line of lowercase hex.
    Hex,
    /// One JSON object per line: {"topic", "len", "payload_base64"}.
    Json,
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

/// Write one message in `format`.
pub fn write_message(
    out: &mut dyn Write,
    format: Format,
    topic: &str,
    payload: &[u8],
) -> io::Result<()> {
    match format {
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
            };
            serde_json::to_writer(&mut *out, &object)?;
            out.write_all(b"\n")
        }
    }
}

/// One line of `--format json`, fields in this order.
#[derive(serde::Serialize)]
struct JsonMessage<'a> {
    topic: &'a str,
    len: usize,
    payload_base64: String,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    fn render(format: Format, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_message(&mut out, format, "t.x", payload).unwrap();
        out
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
            b"{\"topic\":\"t.x\",\"len\":0,\"payload_base64\":\"\"}\n"
        );
    }
}
