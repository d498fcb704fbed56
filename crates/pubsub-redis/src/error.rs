//! Mapping redis-rs errors to the library's [`Error`] kinds. Messages name
//! the address (any password replaced by `***`) and never carry credentials.

use pubsub_core::error::{looks_like_tls, source_chain};
use pubsub_core::{Error, ErrorKind};
use redis::RedisError;

/// Server error codes that mean "who you are is not accepted".
const AUTH_CODES: &[&str] = &["WRONGPASS", "NOAUTH", "NOPERM", "AUTH"];

/// The kind of a redis-rs error.
pub(crate) fn kind_of(e: &RedisError) -> ErrorKind {
    let text = e.to_string();
    let upper = text.to_ascii_uppercase();
    if e.kind() == redis::ErrorKind::AuthenticationFailed
        || e.code().is_some_and(|c| AUTH_CODES.contains(&c))
        || upper.contains("WRONGPASS")
        || upper.contains("NOAUTH")
    {
        return ErrorKind::Auth;
    }
    if looks_like_tls(&source_chain(e)) {
        return ErrorKind::Tls;
    }
    if e.is_timeout() {
        return ErrorKind::Timeout;
    }
    if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
        return ErrorKind::Connect;
    }
    if e.kind() == redis::ErrorKind::InvalidClientConfig {
        return ErrorKind::InvalidConfig;
    }
    ErrorKind::Backend
}

/// Whether the error means the connection is gone (worth retrying once it is back).
pub(crate) fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.is_cluster_error()
        || e.code() == Some("LOADING")
        || e.kind() == redis::ErrorKind::ClusterConnectionNotFound
}

/// Whether Redis refused a command for now and takes it later: `LOADING`
/// (reading its data after a restart), `TRYAGAIN`, `CLUSTERDOWN`,
/// `MASTERDOWN`.
pub(crate) fn is_transient(e: &RedisError) -> bool {
    matches!(e.retry_method(), redis::RetryMethod::WaitAndRetry)
}

/// `what` failed against `address` (already redacted).
pub(crate) fn redis_error(address: &str, what: &str, e: RedisError) -> Error {
    let kind = kind_of(&e);
    let hint = match kind {
        ErrorKind::Auth => {
            " (the server refused the credentials: check redis.username / redis.password, MSIGHT_REDIS_MESSAGE_BROKER_USERNAME / _PASSWORD)"
        }
        ErrorKind::Tls => {
            " (TLS failed: check redis.tls_ca_cert, redis.tls_cert, redis.tls_key and that the server speaks TLS)"
        }
        _ => "",
    };
    Error::new(kind, format!("redis {address}: {what}{hint}")).with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_of_redis_errors() {
        let auth = RedisError::from((redis::ErrorKind::AuthenticationFailed, "bad creds"));
        assert_eq!(kind_of(&auth), ErrorKind::Auth);
        let io = RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        ));
        assert_eq!(kind_of(&io), ErrorKind::Connect);
        assert!(is_connection_error(&io));
        let tls = RedisError::from(std::io::Error::other(
            "invalid peer certificate: UnknownIssuer",
        ));
        assert_eq!(kind_of(&tls), ErrorKind::Tls);
        let cfg = RedisError::from((redis::ErrorKind::InvalidClientConfig, "no"));
        assert_eq!(kind_of(&cfg), ErrorKind::InvalidConfig);
        let e = redis_error("redis://u:***@h:1/0", "cannot connect", auth);
        assert_eq!(e.kind(), ErrorKind::Auth);
        assert!(e.to_string().contains("redis://u:***@h:1/0"), "{e}");
        assert!(e.to_string().contains("redis.password"), "{e}");
    }
}
