//! [`Secret`] and the redaction of credentials in URLs and free text.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A secret string (password, token, seed, JWT). Its `Debug`, `Display` and
/// `Serialize` output is `"<redacted>"`; [`Secret::expose`] gives the value.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value itself; pass it to the client library, never to a log.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// `url` with the password of any `user:password@` part replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            if userinfo.contains(':') {
                format!("{user}:***@{host}")
            } else {
                format!("***@{host}")
            }
        }
        None => authority.to_string(),
    };
    match scheme {
        Some(s) => format!("{s}://{authority}{tail}"),
        None => format!("{authority}{tail}"),
    }
}

/// Serialise an optional URL with its password replaced by `***`.
pub fn serialize_redacted_url<S: serde::Serializer>(
    url: &Option<String>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match url {
        Some(u) => s.serialize_some(&redact_url(u)),
        None => s.serialize_none(),
    }
}

/// `text` (for example a malformed list of addresses, echoed in an error)
/// with the credentials of every `user:password@` or `token@` part replaced
/// by `***`. The credentials of a part start after its `scheme://`, or else
/// after the last quote, bracket, comma or whitespace before its `@`.
pub fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('@') {
        let before = &rest[..at];
        let start = match before.rfind("://") {
            Some(i) => i + 3,
            // Past the whole separator: it may be a multi-byte whitespace.
            None => before
                .char_indices()
                .rev()
                .find(|(_, c)| matches!(c, '\'' | '"' | '[' | ',') || c.is_whitespace())
                .map(|(i, c)| i + c.len_utf8())
                .unwrap_or(0),
        };
        let userinfo = &before[start..];
        out.push_str(&before[..start]);
        match userinfo.split_once(':') {
            Some((user, _)) => {
                out.push_str(user);
                out.push_str(":***");
            }
            None => out.push_str("***"),
        }
        out.push('@');
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
    out
}

/// Serialise a list of URLs with passwords replaced by `***`.
pub fn serialize_redacted_urls<S: serde::Serializer>(
    urls: &[String],
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(urls.iter().map(|u| redact_url(u)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_userinfo_handles_multibyte_separators() {
        // U+00A0 (no-break space) is whitespace of two bytes.
        assert_eq!(redact_userinfo("a\u{a0}u:pw@h"), "a\u{a0}u:***@h");
        assert_eq!(redact_userinfo("K <x\u{a0}tok@h:1"), "K <x\u{a0}***@h:1");
        assert_eq!(
            redact_userinfo("['u:p@h:1', 't@g:2']"),
            "['u:***@h:1', '***@g:2']"
        );
    }

    #[test]
    fn redact_userinfo_in_free_text() {
        for (text, want) in [
            (
                "['nats://u:pw1@a:1', 'nats://tok2@b:2']",
                "['nats://u:***@a:1', 'nats://***@b:2']",
            ),
            ("u:pw3@h:1,,x", "u:***@h:1,,x"),
            ("got \"redis://:pw4@h:1\"", "got \"redis://:***@h:1\""),
            ("no credentials here", "no credentials here"),
            ("a:b@c@d", "a:***@***@d"),
        ] {
            assert_eq!(redact_userinfo(text), want, "{text}");
        }
    }
}
