//! Mapping async-nats errors to the library's [`Error`] kinds. Messages name
//! the servers (passwords in URLs removed) and never carry credentials.

use pubsub_core::error::{has_tls_cause, looks_like_tls, source_chain};
use pubsub_core::{Error, ErrorKind};

/// A failed connect to the servers `shown` (passwords removed).
pub(crate) fn connect_error(shown: &str, e: async_nats::ConnectError) -> Error {
    use async_nats::ConnectErrorKind as K;
    let text = source_chain(&e);
    let (kind, what) = match e.kind() {
        K::AuthorizationViolation | K::Authentication => (
            ErrorKind::Auth,
            "the server refused the credentials (authorization violation)",
        ),
        K::Tls => (ErrorKind::Tls, "TLS setup or handshake failed"),
        K::TimedOut => (ErrorKind::Timeout, "timed out"),
        K::Io if has_tls_cause(&e) || looks_like_tls(&text) => {
            (ErrorKind::Tls, "TLS handshake failed")
        }
        K::Io | K::Dns | K::MaxReconnects => (ErrorKind::Connect, "cannot connect"),
        K::ServerParse => (ErrorKind::InvalidConfig, "nats.servers: cannot parse"),
    };
    Error::new(kind, format!("nats: {what} ({shown})")).with_source(Box::new(e))
}

/// A failed publish.
pub(crate) fn publish_error(topic: &str, e: async_nats::PublishError) -> Error {
    use async_nats::client::PublishErrorKind as K;
    let kind = match e.kind() {
        K::MaxPayloadExceeded => ErrorKind::PayloadTooLarge,
        K::InvalidSubject => ErrorKind::InvalidTopic,
        K::Send => ErrorKind::Connect,
    };
    Error::new(kind, format!("nats: publish to {topic:?} failed")).with_source(Box::new(e))
}

/// Any other failure of an operation `what` on `topic`.
pub(crate) fn op_error(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::new(ErrorKind::Connect, format!("nats: {what} failed")).with_source(Box::new(e))
}
