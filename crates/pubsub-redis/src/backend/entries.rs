//! Stream entries as this backend writes and reads them: the payload in
//! the field `payload` (what a Python peer reads), each header in a field
//! `header:<key>` after it, in order (a key may repeat). Replies are parsed
//! from the raw value, since redis-rs' typed stream replies keep the fields
//! in a map, which would lose their order and repeated keys.

use bytes::Bytes;
use pubsub_core::Headers;
use redis::{Cmd, Value};

use super::PAYLOAD_FIELD;

/// The prefix of the field of a header.
pub const HEADER_PREFIX: &str = "header:";

/// Append the fields of `payload` and `headers` to an `XADD` command.
pub(super) fn add_fields(cmd: &mut Cmd, payload: &[u8], headers: &Headers) {
    cmd.arg(PAYLOAD_FIELD).arg(payload);
    for (k, v) in headers.iter() {
        cmd.arg(format!("{HEADER_PREFIX}{k}")).arg(v);
    }
}

/// One entry of a stream reply.
#[derive(Debug)]
pub(super) struct Entry {
    pub id: String,
    /// `None` for an entry whose body is gone (trimmed by `MAXLEN`), as a
    /// claim or a read of pending entries reports it.
    pub body: Option<Body>,
}

#[derive(Debug, PartialEq)]
pub(super) struct Body {
    pub payload: Bytes,
    pub headers: Headers,
}

/// The entries of an `XREAD` / `XREADGROUP` reply (of one stream or more).
pub(super) fn read_reply(v: Value) -> Vec<Entry> {
    let streams = match v {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut kv) if kv.len() == 2 => kv.pop(),
                _ => None,
            })
            .collect(),
        Value::Map(streams) => streams.into_iter().map(|(_, entries)| entries).collect(),
        _ => Vec::new(),
    };
    streams.into_iter().flat_map(entries).collect()
}

/// The entries of a list of `[id, fields]` (as `XRANGE` and `XCLAIM`
/// reply, and each stream of a read reply).
pub(super) fn entries(v: Value) -> Vec<Entry> {
    let Value::Array(list) = v else {
        return Vec::new();
    };
    list.into_iter().filter_map(entry).collect()
}

fn entry(v: Value) -> Option<Entry> {
    let Value::Array(mut parts) = v else {
        return None;
    };
    if parts.len() != 2 {
        return None;
    }
    let fields = parts.pop()?;
    let id = text(parts.pop()?)?;
    Some(Entry {
        id,
        body: body(fields),
    })
}

/// The payload and headers of an entry's fields. Field names are compared
/// as they came, without a `String` each (this runs for every entry read).
fn body(fields: Value) -> Option<Body> {
    let mut payload = None;
    let mut headers = Headers::new();
    let mut others = Vec::new();
    let mut field = |k: Value, v: Value| -> Option<()> {
        let key = field_name(&k)?;
        if key == PAYLOAD_FIELD.as_bytes() && payload.is_none() {
            payload = Some(bytes(v)?);
        } else if let Some(h) = key.strip_prefix(HEADER_PREFIX.as_bytes()) {
            let value = String::from_utf8_lossy(&bytes(v)?).into_owned();
            headers.append(String::from_utf8_lossy(h), value);
        } else {
            others.push(v);
        }
        Some(())
    };
    match fields {
        Value::Array(flat) => {
            let mut it = flat.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                field(k, v)?;
            }
        }
        Value::Map(pairs) => {
            for (k, v) in pairs {
                field(k, v)?;
            }
        }
        _ => return None,
    }
    // An entry written by another program with a single field: its value.
    let payload = match payload {
        Some(p) => p,
        None if others.len() == 1 && headers.is_empty() => bytes(others.pop()?)?,
        None => return None,
    };
    Some(Body { payload, headers })
}

/// The bytes of a field name (a string of any RESP kind).
fn field_name(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes()),
        _ => None,
    }
}

fn bytes(v: Value) -> Option<Bytes> {
    match v {
        Value::BulkString(b) => Some(Bytes::from(b)),
        Value::SimpleString(s) => Some(Bytes::from(s.into_bytes())),
        Value::VerbatimString { text, .. } => Some(Bytes::from(text.into_bytes())),
        _ => None,
    }
}

fn text(v: Value) -> Option<String> {
    bytes(v).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// The `[next-start, entries, deleted ids]` reply of `XAUTOCLAIM`.
pub(super) fn autoclaim_reply(v: Value) -> Option<(String, Vec<Entry>, Vec<String>)> {
    let Value::Array(mut parts) = v else {
        return None;
    };
    if parts.len() < 2 {
        return None;
    }
    let deleted = if parts.len() >= 3 {
        match parts.remove(2) {
            Value::Array(ids) => ids.into_iter().filter_map(text).collect(),
            _ => Vec::new(),
        }
    } else {
        Vec::new()
    };
    let claimed = entries(parts.remove(1));
    let next = text(parts.remove(0))?;
    Some((next, claimed, deleted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn fields_keep_order_and_repeated_keys() {
        let e = Value::Array(vec![
            bulk("1-1"),
            Value::Array(vec![
                bulk("payload"),
                Value::BulkString(vec![0, 255, 1]),
                bulk("header:hop"),
                bulk("camera"),
                bulk("header:trace"),
                bulk("7f"),
                bulk("header:hop"),
                bulk("detector"),
            ]),
        ]);
        let reply = Value::Array(vec![Value::Array(vec![bulk("s"), Value::Array(vec![e])])]);
        let got = read_reply(reply);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id, "1-1");
        let body = got[0].body.as_ref().unwrap();
        assert_eq!(&body.payload[..], [0, 255, 1]);
        assert_eq!(
            body.headers,
            Headers::from([("hop", "camera"), ("trace", "7f"), ("hop", "detector")])
        );
    }

    #[test]
    fn resp3_maps_a_single_foreign_field_and_trimmed_entries() {
        let e = Value::Array(vec![
            bulk("2-0"),
            Value::Map(vec![(bulk("data"), bulk("from elsewhere"))]),
        ]);
        let gone = Value::Array(vec![bulk("3-0"), Value::Nil]);
        let reply = Value::Map(vec![(bulk("s"), Value::Array(vec![e, gone]))]);
        let got = read_reply(reply);
        assert_eq!(
            &got[0].body.as_ref().unwrap().payload[..],
            b"from elsewhere"
        );
        assert_eq!(got[1].id, "3-0");
        assert!(got[1].body.is_none(), "a trimmed entry has no body");
        let (next, claimed, deleted) = autoclaim_reply(Value::Array(vec![
            bulk("0-0"),
            Value::Array(vec![]),
            Value::Array(vec![bulk("4-0")]),
        ]))
        .unwrap();
        assert_eq!(
            (next.as_str(), claimed.len(), deleted),
            ("0-0", 0, vec!["4-0".to_string()])
        );
    }
}
