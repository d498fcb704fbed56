//! The one public error type of the library.

use std::fmt;

/// A boxed error from a client library, kept as [`std::error::Error::source`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, independent of the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A configuration value (file key or environment variable) is missing or malformed.
    InvalidConfig,
    /// A topic name the backend cannot use (empty, whitespace, wildcard on publish, ...).
    InvalidTopic,
    /// The broker could not be reached or the connection was lost.
    Connect,
    /// The broker refused the credentials.
    Auth,
    /// TLS could not be set up (bad CA, certificate, key, or handshake failure).
    Tls,
    /// An operation did not finish within its time limit.
    Timeout,
    /// The handle was closed; every call after `close` fails with this kind.
    Closed,
    /// The payload is larger than the backend accepts.
    PayloadTooLarge,
    /// The backend does not support the requested feature.
    Unsupported,
    /// A header key or value a message cannot carry.
    InvalidHeader,
    /// `listen` / `recv` was called while no subscription is active.
    NotSubscribed,
    /// Any other failure reported by the broker or its client library.
    Backend,
    /// A received payload is not a value of the expected type in the
    /// codec's format: the message names the topic, the type and where
    /// decoding failed (`pubsub_core::codec`).
    Decode,
    /// A value cannot be written in the codec's format (a JSON map whose
    /// keys are not strings, for example).
    Encode,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorKind::InvalidConfig => "invalid configuration",
            ErrorKind::InvalidTopic => "invalid topic",
            ErrorKind::Connect => "connection failed",
            ErrorKind::Auth => "authentication failed",
            ErrorKind::Tls => "TLS error",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Closed => "closed",
            ErrorKind::PayloadTooLarge => "payload too large",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::InvalidHeader => "invalid header",
            ErrorKind::NotSubscribed => "not subscribed",
            ErrorKind::Backend => "backend error",
            ErrorKind::Decode => "decode error",
            ErrorKind::Encode => "encode error",
        };
        f.write_str(s)
    }
}

/// The library's error: a [`ErrorKind`], a message that names the key, variable
/// or value at fault, and the client library's own error as `source`.
///
/// Messages never contain secrets: constructors in this crate take care to
/// redact credentials, and backend crates only pass redacted text.
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<BoxError>,
}

impl Error {
    /// A new error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attach the underlying error.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without the kind prefix.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Shorthand for an [`ErrorKind::InvalidConfig`] error about `key`.
    pub fn config(key: &str, message: impl fmt::Display) -> Self {
        Error::new(ErrorKind::InvalidConfig, format!("{key}: {message}"))
    }

    /// Shorthand for an [`ErrorKind::InvalidTopic`] error about `topic`.
    pub fn topic(topic: &str, message: impl fmt::Display) -> Self {
        Error::new(
            ErrorKind::InvalidTopic,
            format!("topic {:?}: {message}", truncate(topic, 120)),
        )
    }

    /// The error every call returns once the handle is closed.
    pub fn closed() -> Self {
        Error::new(ErrorKind::Closed, "the pub/sub handle is closed")
    }

    /// Whether the kind is `kind`.
    pub fn is(&self, kind: ErrorKind) -> bool {
        self.kind == kind
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(source) = &self.source {
            d.field("source", &source.to_string());
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn std::error::Error + 'static))
    }
}

/// `e` and all its sources in one line: `"a: b: c"`.
pub fn source_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Whether a rustls error is somewhere in `e`'s source chain (tokio-rustls
/// wraps it in an `io::Error`): a TLS failure, whatever the client library
/// calls it.
pub fn has_tls_cause(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
            {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

/// Whether an error text reads like a TLS failure, for client libraries
/// that flatten the rustls error into a message.
pub fn looks_like_tls(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "certificate",
        "tls",
        "handshake",
        "unknownissuer",
        "peer sent no certificates",
        "alert",
    ]
    .iter()
    .any(|k| t.contains(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_has_kind_message_and_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = Error::new(ErrorKind::Connect, "nats://127.0.0.1:1").with_source(io);
        assert_eq!(
            e.to_string(),
            "connection failed: nats://127.0.0.1:1: refused"
        );
        assert!(std::error::Error::source(&e).is_some());
        assert!(e.is(ErrorKind::Connect));
    }

    #[test]
    fn chains_and_tls_causes() {
        let tls = rustls::Error::General("bad cert".into());
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        let e = Error::new(ErrorKind::Connect, "connect").with_source(io);
        assert!(has_tls_cause(&e));
        let chain = source_chain(&e);
        assert!(chain.starts_with("connection failed: connect: "), "{chain}");
        assert!(chain.ends_with("bad cert"), "{chain}");
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(!has_tls_cause(&plain));
        assert!(looks_like_tls("invalid peer certificate: UnknownIssuer"));
        assert!(!looks_like_tls("connection refused"));
    }

    #[test]
    fn long_topic_is_truncated_in_message() {
        let long = "x".repeat(500);
        let e = Error::topic(&long, "too long");
        assert!(e.message().len() < 200, "{}", e.message());
    }
}
