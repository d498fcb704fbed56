//! Message headers as MQTT v5 user properties: an ordered list of UTF-8
//! key/value pairs in which a key may repeat, carried as they are.
//!
//! MQTT strings "should not" contain control characters or Unicode
//! non-characters, and a receiver may close the connection over them:
//! mosquitto 2.0.11 does, for a tab in a user property value ("Malformed
//! UTF-8"), dropping the publisher's connection. Such headers are refused
//! with [`ErrorKind::InvalidHeader`] before anything is sent.

use pubsub_core::{Error, ErrorKind, Headers, Result};
use rumqttc::v5::mqttbytes::v5::PublishProperties;

/// `headers` (checked by [`Headers::validate`] already) as the properties
/// of a PUBLISH, and the bytes they add to the packet.
pub(crate) fn to_properties(headers: &Headers) -> Result<(PublishProperties, usize)> {
    let mut user_properties = Vec::with_capacity(headers.len());
    let mut size = 0;
    for (k, v) in headers.iter() {
        if let Some(c) = v.chars().find(|&c| !mqtt_char(c)) {
            return Err(Error::new(
                ErrorKind::InvalidHeader,
                format!(
                    "header {k:?}: MQTT user properties cannot carry the character {c:?} (control characters, tab included, and Unicode non-characters are refused by brokers)"
                ),
            ));
        }
        // Property id, then two length-prefixed strings.
        size += 1 + 2 + k.len() + 2 + v.len();
        user_properties.push((k.to_string(), v.to_string()));
    }
    let properties = PublishProperties {
        user_properties,
        ..PublishProperties::default()
    };
    Ok((properties, size))
}

/// The user properties of a received PUBLISH as [`Headers`], in order.
pub(crate) fn from_properties(properties: Option<PublishProperties>) -> Headers {
    match properties {
        Some(p) if !p.user_properties.is_empty() => p.user_properties.into_iter().collect(),
        _ => Headers::new(),
    }
}

/// Whether MQTT brokers accept `c` in a UTF-8 string: no control
/// characters (C0, DEL, C1) and no non-characters (mosquitto's rule).
fn mqtt_char(c: char) -> bool {
    let n = c as u32;
    !(c.is_control() || (0xFDD0..=0xFDEF).contains(&n) || n & 0xFFFE == 0xFFFE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_repeated_keys_are_kept() {
        let h = Headers::from([("b", "1"), ("a", "ünï"), ("b", "2"), ("empty", "")]);
        let (p, size) = to_properties(&h).unwrap();
        // 5 bytes of framing per pair, then the key and value bytes.
        assert_eq!(size, 7 + 11 + 7 + 10);
        assert_eq!(from_properties(Some(p)), h);
        assert!(from_properties(None).is_empty());
    }

    #[test]
    fn characters_brokers_refuse_are_refused() {
        for v in ["a\tb", "\u{FFFE}", "x\u{FDD0}", "\u{1FFFF}"] {
            let e = to_properties(&Headers::from([("k", v)])).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidHeader, "{v:?}");
        }
        to_properties(&Headers::from([("k", "spaces, ünïcode, 中文 and 🚗")])).unwrap();
    }
}
