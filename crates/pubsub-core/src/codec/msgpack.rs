//! MessagePack (rmp-serde), the format of the Python nodes.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{path_text, with_source, Codec, CodecError, MAX_DEPTH};

/// A writer that only counts, to size the output exactly before writing it.
struct Count(usize);

impl std::io::Write for Count {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Codec for super::MsgPack {
    fn name(&self) -> &'static str {
        "msgpack"
    }

    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Bytes, CodecError> {
        // Counting first costs one pass over the fields (a large byte
        // string is counted, not copied) and saves copying the output
        // while it grows.
        let mut count = Count(0);
        value
            .serialize(&mut rmp_serde::Serializer::new(&mut count).with_struct_map())
            .map_err(CodecError::new)?;
        let mut out = Vec::with_capacity(count.0);
        value
            .serialize(&mut rmp_serde::Serializer::new(&mut out).with_struct_map())
            .map_err(CodecError::new)?;
        Ok(out.into())
    }

    fn decode<T: DeserializeOwned>(&self, payload: &Bytes) -> Result<T, CodecError> {
        let end = value_len(payload)?;
        if end != payload.len() {
            return Err(CodecError::new(format!(
                "{} bytes follow the value (a payload holds one value)",
                payload.len() - end
            ))
            .at(format!("byte {end}")));
        }
        with_source(payload, || {
            let mut de = rmp_serde::Deserializer::from_read_ref(&payload[..]);
            de.set_max_depth(MAX_DEPTH + 1);
            T::deserialize(&mut de).map_err(|first| {
                // Decode again, on the slow path only, to learn the field.
                let mut de = rmp_serde::Deserializer::from_read_ref(&payload[..]);
                de.set_max_depth(MAX_DEPTH + 1);
                let err = CodecError::new(describe(&first));
                match serde_path_to_error::deserialize::<_, T>(&mut de) {
                    Err(e) => err.in_field(path_text(e.path())),
                    Ok(_) => err,
                }
            })
        })
    }
}

/// rmp-serde's error in words: its type mismatches name a marker
/// (`wrong msgpack marker FixStr(4)`); say what kind of value that is.
fn describe(e: &rmp_serde::decode::Error) -> String {
    match e {
        rmp_serde::decode::Error::TypeMismatch(marker) => {
            let m = format!("{marker:?}");
            let kind =
                match m.trim_end_matches(|c: char| c.is_ascii_digit() || c == '(' || c == ')') {
                    "FixPos" | "FixNeg" | "U8" | "U16" | "U32" | "U64" | "I8" | "I16" | "I32"
                    | "I64" => "an integer",
                    "F32" | "F64" => "a float",
                    "FixStr" | "Str8" | "Str16" | "Str32" => "a string",
                    "Bin8" | "Bin16" | "Bin32" => "bytes",
                    "FixArray" | "Array16" | "Array32" => "an array",
                    "FixMap" | "Map16" | "Map32" => "a map",
                    "Null" => "nil",
                    "True" | "False" => "a boolean",
                    _ => "an extension or reserved value",
                };
            format!("invalid type: {kind} (MessagePack marker {m}) where another type was expected")
        }
        other => other.to_string(),
    }
}

/// The length of the MessagePack value at the start of `buf`, after
/// checking its structure: every marker valid, every length within `buf`,
/// nesting at most [`MAX_DEPTH`]. No allocation beyond the nesting stack;
/// lengths read from the payload are never used to reserve memory.
pub(crate) fn value_len(buf: &[u8]) -> Result<usize, CodecError> {
    let mut pos = 0usize;
    // Items still to read in each open array or map, outermost first.
    let mut open: Vec<u64> = Vec::new();
    let mut left: u64 = 1;
    loop {
        while left == 0 {
            match open.pop() {
                Some(l) => left = l,
                None => return Ok(pos),
            }
        }
        left -= 1;
        let at = pos;
        let Some(&marker) = buf.get(pos) else {
            return Err(CodecError::new(if at == 0 {
                "the payload is empty".to_string()
            } else {
                "the payload ends where a value should start (truncated)".to_string()
            })
            .at(format!("byte {at}")));
        };
        pos += 1;
        let mut read_len = |n: usize| -> Result<u64, CodecError> {
            let bytes = buf.get(pos..pos + n).ok_or_else(|| {
                CodecError::new(format!(
                    "the payload ends inside the header of marker {marker:#04x} (truncated)"
                ))
                .at(format!("byte {at}"))
            })?;
            pos += n;
            Ok(bytes.iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b)))
        };
        // (bytes of data to skip, items inside)
        let (skip, items): (u64, u64) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, 2 * u64::from(marker & 0x0f)),
            0x90..=0x9f => (0, u64::from(marker & 0x0f)),
            0xa0..=0xbf => (u64::from(marker & 0x1f), 0),
            0xc1 => {
                return Err(
                    CodecError::new("0xc1 is not a MessagePack marker").at(format!("byte {at}"))
                )
            }
            0xc4 | 0xd9 => (read_len(1)?, 0),
            0xc5 | 0xda => (read_len(2)?, 0),
            0xc6 | 0xdb => (read_len(4)?, 0),
            0xc7 => (read_len(1)? + 1, 0),
            0xc8 => (read_len(2)? + 1, 0),
            0xc9 => (read_len(4)? + 1, 0),
            0xca | 0xce | 0xd2 => (4, 0),
            0xcb | 0xcf | 0xd3 => (8, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xdc => (0, read_len(2)?),
            0xdd => (0, read_len(4)?),
            0xde => (0, 2 * read_len(2)?),
            0xdf => (0, 2 * read_len(4)?),
        };
        let remaining = (buf.len() - pos) as u64;
        if skip > remaining {
            return Err(CodecError::new(format!(
                "marker {marker:#04x} announces {skip} bytes of data but only {remaining} remain (truncated)"
            ))
            .at(format!("byte {at}")));
        }
        pos += skip as usize;
        if items > 0 {
            if open.len() >= MAX_DEPTH {
                return Err(CodecError::new(format!(
                    "maps and arrays nested more than {MAX_DEPTH} deep"
                ))
                .at(format!("byte {at}")));
            }
            open.push(left);
            left = items;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Blob, MsgPack};
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Frame {
        sensor: String,
        at: f64,
        id: i64,
        image: Option<Blob>,
        size: (u32, u32, u32),
    }

    fn frame(image: Vec<u8>) -> Frame {
        Frame {
            sensor: "cam".into(),
            at: 1.5,
            id: 7,
            image: Some(image.into()),
            size: (2, 3, 3),
        }
    }

    /// The bytes Python's `msgpack.packb({...}, use_bin_type=True)` writes
    /// for the same dict (written out by hand from the spec).
    #[test]
    fn writes_what_python_msgpack_writes() {
        let bytes = MsgPack.encode(&frame(b"\xff\xd8".to_vec())).unwrap();
        let mut want = vec![0x85];
        want.extend(b"\xa6sensor\xa3cam");
        want.extend(b"\xa2at\xcb\x3f\xf8\0\0\0\0\0\0");
        want.extend(b"\xa2id\x07");
        want.extend(b"\xa5image\xc4\x02\xff\xd8");
        want.extend(b"\xa4size\x93\x02\x03\x03");
        assert_eq!(&bytes[..], &want[..]);
        // Smallest integer forms: non-negative ones unsigned, as Python does.
        for (v, want) in [
            (127i64, &b"\x7f"[..]),
            (128, b"\xcc\x80"),
            (-1, b"\xff"),
            (-33, b"\xd0\xdf"),
            (65536, b"\xce\0\x01\0\0"),
            (7533631717965074433, b"\xcf\x68\x8c\xd6\x21\xf1\xec\x90\x01"),
        ] {
            assert_eq!(&MsgPack.encode(&v).unwrap()[..], want, "{v}");
        }
        assert_eq!(&MsgPack.encode(&None::<u8>).unwrap()[..], b"\xc0");
    }

    #[test]
    fn round_trip_shares_the_payload_buffer() {
        let image = vec![0xabu8; 1 << 20];
        let payload = MsgPack.encode(&frame(image.clone())).unwrap();
        let back: Frame = MsgPack.decode(&payload).unwrap();
        assert_eq!(back, frame(image));
        let blob = back.image.unwrap();
        assert!(blob.is_slice_of(&payload), "the image was copied");
    }

    #[test]
    fn errors_say_where() {
        let payload = MsgPack.encode(&frame(vec![1, 2, 3])).unwrap();
        let e = MsgPack
            .decode::<Frame>(&payload.slice(..payload.len() - 5))
            .unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        assert!(e.location().unwrap().starts_with("byte "), "{e}");

        let mut longer = payload.to_vec();
        longer.push(0xc0);
        let e = MsgPack.decode::<Frame>(&longer.into()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "at byte {}: 1 bytes follow the value (a payload holds one value)",
                payload.len()
            )
        );

        #[derive(Debug, Serialize)]
        struct Wrong<'a> {
            sensor: &'a str,
            at: &'a str,
        }
        let wrong = MsgPack
            .encode(&Wrong {
                sensor: "cam",
                at: "noon",
            })
            .unwrap();
        let e = MsgPack.decode::<Frame>(&wrong).unwrap_err();
        assert_eq!(e.path(), Some("at"), "{e}");
        assert!(e.message().contains("invalid type: a string"), "{e}");

        let e = MsgPack
            .decode::<u8>(&Bytes::from_static(b"\xc1"))
            .unwrap_err();
        assert!(e.to_string().contains("0xc1"), "{e}");
        let e = MsgPack.decode::<u8>(&Bytes::new()).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let mut deep = vec![0x91u8; 100_000];
        deep.push(0xc0);
        let e = MsgPack
            .decode::<serde::de::IgnoredAny>(&deep.into())
            .unwrap_err();
        assert!(e.to_string().contains("nested"), "{e}");
        let mut ok = vec![0x91u8; MAX_DEPTH];
        ok.push(0xc0);
        assert_eq!(value_len(&ok).unwrap(), MAX_DEPTH + 1);
    }

    #[test]
    fn huge_announced_lengths_allocate_nothing() {
        // An array of 2^32-1 items, a bin of 4 GiB: both truncated.
        for p in [
            &b"\xdd\xff\xff\xff\xff\x01"[..],
            b"\xc6\xff\xff\xff\xff\x01",
            b"\xdf\xff\xff\xff\xff",
        ] {
            let e = MsgPack
                .decode::<serde::de::IgnoredAny>(&Bytes::copy_from_slice(p))
                .unwrap_err();
            assert!(e.to_string().contains("truncated"), "{e}");
        }
    }
}
