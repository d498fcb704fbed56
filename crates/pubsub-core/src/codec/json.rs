//! JSON (serde_json).

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{path_text, with_source, Codec, CodecError};

impl Codec for super::Json {
    fn name(&self) -> &'static str {
        "json"
    }

    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Bytes, CodecError> {
        serde_json::to_vec(value)
            .map(Bytes::from)
            .map_err(CodecError::new)
    }

    fn decode<T: DeserializeOwned>(&self, payload: &Bytes) -> Result<T, CodecError> {
        with_source(payload, || {
            serde_json::from_slice(payload).map_err(|first| {
                let err = located(&first);
                // Decode again, on the slow path only, to learn the field.
                let mut de = serde_json::Deserializer::from_slice(payload);
                match serde_path_to_error::deserialize::<_, T>(&mut de) {
                    Err(e) => err.in_field(path_text(e.path())),
                    Ok(_) => err,
                }
            })
        })
    }
}

/// serde_json's error with its line and column as the location.
fn located(e: &serde_json::Error) -> CodecError {
    let text = e.to_string();
    if e.line() == 0 {
        return CodecError::new(text);
    }
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    CodecError::new(text.strip_suffix(&suffix).unwrap_or(&text)).at(format!(
        "line {} column {}",
        e.line(),
        e.column()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Blob, Json};
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Frame {
        sensor: Option<String>,
        data: Blob,
        ids: Vec<u64>,
    }

    #[test]
    fn round_trip_with_base64_bytes() {
        let f = Frame {
            sensor: None,
            data: Blob::from(&b"x"[..]),
            ids: vec![1, 2],
        };
        let payload = Json.encode(&f).unwrap();
        assert_eq!(
            &payload[..],
            br#"{"sensor":null,"data":"eA==","ids":[1,2]}"#
        );
        assert_eq!(Json.decode::<Frame>(&payload).unwrap(), f);
    }

    #[test]
    fn errors_give_line_column_and_field() {
        let e = Json
            .decode::<Frame>(&Bytes::from_static(
                b"{\"sensor\":null,\n\"data\":\"eA==\",\"ids\":[1,\"two\"]}",
            ))
            .unwrap_err();
        assert_eq!(e.location(), Some("line 2 column 28"), "{e}");
        assert_eq!(e.path(), Some("ids[1]"), "{e}");
        let e = Json
            .decode::<Frame>(&Bytes::from_static(b"{\"sensor\":"))
            .unwrap_err();
        assert!(e.message().contains("EOF"), "{e}");
    }
}
