//! Message headers as NATS headers (`HPUB` / `HMSG`), order kept.
//!
//! NATS writes headers as ordered lines of text, but async-nats 0.51 keeps
//! them in a hash map ([`HeaderMap`]): the values of one key stay in order,
//! the order between different keys is lost on both ends. So when the keys
//! of a message are not already in sorted order, the publisher adds one
//! more header, [`HEADER_ORDER`], listing the key of every pair in order
//! (keys have no spaces, so it is the keys joined by spaces), and the
//! receiver puts the pairs back in that order and removes it. Headers from
//! other clients (nats-py, the NATS CLI) come without it: their pairs are
//! given sorted by key, the values of each key in the order sent.
//!
//! NATS trims leading and trailing whitespace of every header value (the
//! server's and every client's parser do), so such a value is refused with
//! [`ErrorKind::InvalidHeader`] instead of arriving changed.

use std::collections::VecDeque;
use std::str::FromStr;

use async_nats::header::{HeaderName, HeaderValue};
use async_nats::HeaderMap;
use pubsub_core::{Error, ErrorKind, Headers, Result};

/// The header that carries the order of the others (when they are not in
/// sorted order); reserved: publishing it yourself is `InvalidHeader`.
pub const HEADER_ORDER: &str = "Msight-Header-Order";

/// `headers` (checked by [`Headers::validate`] already) as NATS headers.
pub(crate) fn to_nats(headers: &Headers) -> Result<HeaderMap> {
    let mut map = HeaderMap::new();
    let mut sorted = true;
    let mut previous: Option<&str> = None;
    for (k, v) in headers.iter() {
        if k.eq_ignore_ascii_case(HEADER_ORDER) {
            return Err(invalid(format!(
                "header {k:?} is reserved: the NATS backend uses it to keep the order of the headers"
            )));
        }
        if v.trim() != v {
            return Err(invalid(format!(
                "header {k:?}: NATS trims leading and trailing whitespace of header values; trim the value {v:?} before publishing"
            )));
        }
        let name =
            HeaderName::from_str(k).map_err(|e| invalid(format!("header key {k:?}: {e}")))?;
        let value = HeaderValue::from_str(v)
            .map_err(|e| invalid(format!("header {k:?}: its value: {e}")))?;
        map.append(name, value);
        sorted &= previous.is_none_or(|p| p <= k);
        previous = Some(k);
    }
    if !sorted {
        let keys: Vec<&str> = headers.iter().map(|(k, _)| k).collect();
        map.insert(HEADER_ORDER, keys.join(" "));
    }
    Ok(map)
}

/// Received NATS headers as [`Headers`], in the order they were published
/// (see the module documentation).
pub(crate) fn from_nats(map: &HeaderMap) -> Headers {
    from_nats_except(map, |_, _| false)
}

/// Headers of a message read from a JetStream stream: the `Nats-Msg-Id`
/// this library added to deduplicate its publishes is removed (one set
/// by the application, or by another client, is kept).
pub(crate) fn from_stream(map: &HeaderMap) -> Headers {
    let own_id = |k: &str, v: &str| {
        k == crate::jetstream::MSG_ID && v.starts_with(crate::jetstream::OWN_ID_PREFIX)
    };
    // Most messages carry that id alone: no allocation for them.
    if map.len() == 1 {
        if let Some((k, vs)) = map.iter().next() {
            if vs.len() == 1 && own_id(k.as_ref(), vs[0].as_str()) {
                return Headers::new();
            }
        }
    }
    from_nats_except(map, own_id)
}

/// [`from_nats`] without the pairs `skip` says.
fn from_nats_except(map: &HeaderMap, skip: impl Fn(&str, &str) -> bool) -> Headers {
    let mut order = None;
    let mut by_key: Vec<(&str, VecDeque<&str>)> = Vec::with_capacity(map.len());
    for (name, values) in map.iter() {
        let key: &str = name.as_ref();
        if key == HEADER_ORDER {
            order = values.first().map(|v| v.as_str());
            continue;
        }
        let values: VecDeque<&str> = values
            .iter()
            .map(|v| v.as_str())
            .filter(|v| !skip(key, v))
            .collect();
        if !values.is_empty() {
            by_key.push((key, values));
        }
    }
    by_key.sort_unstable_by(|a, b| a.0.cmp(b.0));
    if let Some(order) = order {
        if let Some(h) = in_order(order, by_key.clone()) {
            return h;
        }
    }
    by_key
        .into_iter()
        .flat_map(|(k, vs)| vs.into_iter().map(move |v| (k, v)))
        .collect()
}

/// The pairs in the order `order` lists their keys, if it lists each pair
/// exactly once (a relay may have added or removed headers).
fn in_order(order: &str, mut by_key: Vec<(&str, VecDeque<&str>)>) -> Option<Headers> {
    let mut out = Headers::new();
    for key in order.split(' ') {
        let i = by_key.binary_search_by(|(k, _)| (*k).cmp(key)).ok()?;
        out.append(key, by_key[i].1.pop_front()?);
    }
    by_key.iter().all(|(_, vs)| vs.is_empty()).then_some(out)
}

fn invalid(message: String) -> Error {
    Error::new(ErrorKind::InvalidHeader, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(h: &Headers) -> Headers {
        from_nats(&to_nats(h).unwrap())
    }

    #[test]
    fn order_and_repeated_keys_survive_the_hash_map() {
        let h = Headers::from([
            ("trace-id", "7f3a"),
            ("hop", "camera"),
            ("zeta", "1"),
            ("hop", "detector"),
            ("Alpha", "ünïcode\tand a tab"),
            ("hop", ""),
        ]);
        let map = to_nats(&h).unwrap();
        assert!(
            map.get(HEADER_ORDER).is_some(),
            "unsorted keys carry their order"
        );
        // Many maps, so that many hash orders are seen.
        for _ in 0..50 {
            assert_eq!(round_trip(&h), h);
        }
    }

    #[test]
    fn sorted_keys_need_no_order_header() {
        let h = Headers::from([("a", "1"), ("a", "2"), ("b", "3")]);
        let map = to_nats(&h).unwrap();
        assert!(map.get(HEADER_ORDER).is_none());
        assert_eq!(round_trip(&h), h);
    }

    #[test]
    fn headers_of_other_clients_come_sorted_by_key() {
        let mut map = HeaderMap::new();
        map.append("b", "1");
        map.append("a", "2");
        map.append("b", "3");
        assert_eq!(
            from_nats(&map),
            Headers::from([("a", "2"), ("b", "1"), ("b", "3")])
        );
    }

    #[test]
    fn an_order_that_does_not_match_is_ignored() {
        let mut map = HeaderMap::new();
        map.append("b", "1");
        map.append("a", "2");
        map.insert(HEADER_ORDER, "b a a");
        assert_eq!(from_nats(&map), Headers::from([("a", "2"), ("b", "1")]));
        map.insert(HEADER_ORDER, "b");
        assert_eq!(from_nats(&map), Headers::from([("a", "2"), ("b", "1")]));
    }

    #[test]
    fn values_nats_would_change_and_the_reserved_key_are_refused() {
        for bad in [
            Headers::from([("k", " leading")]),
            Headers::from([("k", "trailing\t")]),
            Headers::from([("msight-header-order", "k")]),
        ] {
            let e = to_nats(&bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidHeader, "{bad:?}: {e}");
        }
    }
}
