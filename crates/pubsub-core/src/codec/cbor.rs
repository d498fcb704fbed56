//! CBOR (ciborium).

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{with_source, Codec, CodecError, Tracked, FAILED_AT, MAX_DEPTH};

impl Codec for super::Cbor {
    fn name(&self) -> &'static str {
        "cbor"
    }

    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Bytes, CodecError> {
        let mut out = Vec::new();
        ciborium::into_writer(value, &mut out)
            .map(|()| Bytes::from(out))
            .map_err(|e| CodecError::new(describe_ser(&e)))
    }

    fn decode<T: DeserializeOwned>(&self, payload: &Bytes) -> Result<T, CodecError> {
        with_source(payload, || {
            let mut rest: &[u8] = payload;
            match ciborium::de::from_reader_with_recursion_limit::<T, _>(&mut rest, MAX_DEPTH) {
                Ok(v) if rest.is_empty() => Ok(v),
                Ok(_) => Err(CodecError::new(format!(
                    "{} bytes follow the value (a payload holds one value)",
                    rest.len()
                ))
                .at(format!("byte {}", payload.len() - rest.len()))),
                Err(first) => {
                    let mut err = CodecError::new(describe(&first));
                    if let Some(at) = offset(&first) {
                        err = err.at(format!("byte {at}"));
                    }
                    // Decode again, on the slow path only, to learn the field.
                    FAILED_AT.with(|f| f.borrow_mut().take());
                    let mut rest: &[u8] = payload;
                    let _ = ciborium::de::from_reader_with_recursion_limit::<Tracked<T>, _>(
                        &mut rest, MAX_DEPTH,
                    );
                    match FAILED_AT.with(|f| f.borrow_mut().take()) {
                        Some(path) => Err(err.in_field(path)),
                        None => Err(err),
                    }
                }
            }
        })
    }
}

fn offset<T>(e: &ciborium::de::Error<T>) -> Option<usize> {
    match e {
        ciborium::de::Error::Syntax(at) => Some(*at),
        ciborium::de::Error::Semantic(at, _) => *at,
        _ => None,
    }
}

fn describe<T>(e: &ciborium::de::Error<T>) -> String {
    match e {
        ciborium::de::Error::Io(_) => "the payload ends inside a value (truncated)".to_string(),
        ciborium::de::Error::Syntax(_) => "not well-formed CBOR".to_string(),
        ciborium::de::Error::Semantic(_, text) => text.clone(),
        ciborium::de::Error::RecursionLimitExceeded => {
            format!("maps and arrays nested more than {MAX_DEPTH} deep")
        }
    }
}

fn describe_ser<T: std::fmt::Debug>(e: &ciborium::ser::Error<T>) -> String {
    match e {
        ciborium::ser::Error::Value(text) => text.clone(),
        ciborium::ser::Error::Io(io) => format!("{io:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Blob, Cbor};
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Frame {
        sensor: Option<String>,
        data: Blob,
        at: f64,
    }

    #[test]
    fn round_trip_with_a_large_byte_string() {
        let f = Frame {
            sensor: Some("cam".into()),
            data: Blob::from(vec![5u8; 100_000]),
            at: 2.5,
        };
        let payload = Cbor.encode(&f).unwrap();
        assert_eq!(Cbor.decode::<Frame>(&payload).unwrap(), f);
        let e = Cbor
            .decode::<Frame>(&payload.slice(..payload.len() - 3))
            .unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        let mut longer = payload.to_vec();
        longer.push(0xf6);
        let e = Cbor.decode::<Frame>(&longer.into()).unwrap_err();
        assert!(e.to_string().contains("1 bytes follow"), "{e}");
    }

    #[test]
    fn type_errors_name_the_field() {
        #[derive(Serialize)]
        struct Wrong {
            sensor: u8,
        }
        let payload = Cbor.encode(&Wrong { sensor: 3 }).unwrap();
        let e = Cbor.decode::<Frame>(&payload).unwrap_err();
        assert_eq!(e.path(), Some("sensor"), "{e}");
    }
}
