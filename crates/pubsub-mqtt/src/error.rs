//! rumqttc errors and MQTT reason codes to [`ErrorKind`]s. Messages name the
//! broker address and the reason, never the password (rumqttc's errors do
//! not hold credentials, and the address is shown without any).

use pubsub_core::error::has_tls_cause;
use pubsub_core::{Error, ErrorKind};
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, SubscribeReasonCode, UnsubAckReason};
use rumqttc::v5::mqttbytes::Error as MqttBytesError;
use rumqttc::v5::{ConnectionError, StateError};

/// The kind of a CONNACK refusal: credentials and permissions are `Auth`,
/// anything else `Connect`.
pub(crate) fn connack_kind(code: ConnectReturnCode) -> ErrorKind {
    match code {
        ConnectReturnCode::BadUserNamePassword
        | ConnectReturnCode::NotAuthorized
        | ConnectReturnCode::BadAuthenticationMethod
        | ConnectReturnCode::Banned => ErrorKind::Auth,
        _ => ErrorKind::Connect,
    }
}

fn connack_hint(code: ConnectReturnCode) -> &'static str {
    match code {
        ConnectReturnCode::BadUserNamePassword => {
            "; check mqtt.username and mqtt.password (MSIGHT_MQTT_USERNAME / MSIGHT_MQTT_PASSWORD)"
        }
        ConnectReturnCode::NotAuthorized => {
            "; the broker does not allow this client (credentials, client certificate or ACL)"
        }
        ConnectReturnCode::ClientIdentifierNotValid => "; check mqtt.client_id",
        ConnectReturnCode::UnsupportedProtocolVersion => "; the broker does not speak MQTT v5",
        _ => "",
    }
}

fn io_kind(io: &std::io::Error) -> ErrorKind {
    if has_tls_cause(io) {
        ErrorKind::Tls
    } else if io.kind() == std::io::ErrorKind::TimedOut {
        ErrorKind::Timeout
    } else {
        ErrorKind::Connect
    }
}

/// An error of the event loop while connecting to or talking with `broker`
/// (`host:port`, no credentials).
pub(crate) fn connection_error(e: ConnectionError, broker: &str, tls: bool) -> Error {
    describe(e, broker, tls, false)
}

/// The error of the first connect: like [`connection_error`], and a plain
/// client that was hung up on (a TLS-only listener sends no answer to what
/// is not TLS) is told about TLS.
pub(crate) fn first_connection_error(e: ConnectionError, broker: &str, tls: bool) -> Error {
    describe(e, broker, tls, true)
}

fn describe(e: ConnectionError, broker: &str, tls: bool, first: bool) -> Error {
    let refused = matches!(&e, ConnectionError::ConnectionRefused(_))
        || matches!(&e, ConnectionError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused);
    let (kind, mut what) = match &e {
        ConnectionError::ConnectionRefused(code)
        | ConnectionError::MqttState(StateError::ConnFail { reason: code }) => (
            connack_kind(*code),
            format!(
                "the MQTT broker at {broker} refused the connection: {code:?}{}",
                connack_hint(*code)
            ),
        ),
        ConnectionError::Tls(_) => (
            ErrorKind::Tls,
            format!("TLS with the MQTT broker at {broker} failed"),
        ),
        ConnectionError::Timeout(_) => (
            ErrorKind::Timeout,
            format!("the MQTT broker at {broker} did not answer CONNECT in time"),
        ),
        ConnectionError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => (
            ErrorKind::Connect,
            format!("nothing accepts connections at {broker} (is the MQTT broker running?)"),
        ),
        ConnectionError::Io(io) => (
            io_kind(io),
            format!("cannot reach the MQTT broker at {broker}"),
        ),
        ConnectionError::MqttState(StateError::Io(io))
        | ConnectionError::MqttState(StateError::Deserialization(MqttBytesError::Io(io))) => {
            let kind = io_kind(io);
            let what = if kind == ErrorKind::Tls {
                format!("the MQTT broker at {broker} ended the TLS session (does it require a client certificate, signed by a CA it trusts? see mqtt.tls_cert / mqtt.tls_key)")
            } else {
                format!("the connection to the MQTT broker at {broker} failed")
            };
            (kind, what)
        }
        ConnectionError::MqttState(StateError::ConnectionAborted) if tls => (
            ErrorKind::Tls,
            format!("the MQTT broker at {broker} closed the TLS connection (a client certificate it does not accept, or none when it requires one?)"),
        ),
        ConnectionError::MqttState(StateError::ServerDisconnect { reason_code, .. }) => (
            ErrorKind::Connect,
            format!("the MQTT broker at {broker} disconnected this client: {reason_code:?}"),
        ),
        ConnectionError::MqttState(_) => (
            ErrorKind::Connect,
            format!("the connection to the MQTT broker at {broker} failed"),
        ),
        ConnectionError::NotConnAck(_) => (
            ErrorKind::Connect,
            format!("the server at {broker} did not answer CONNECT with CONNACK (is it an MQTT v5 broker?)"),
        ),
        ConnectionError::RequestsDone => (ErrorKind::Closed, "the MQTT client was closed".to_string()),
    };
    let kind = if kind == ErrorKind::Connect && has_tls_cause(&e) {
        ErrorKind::Tls
    } else {
        kind
    };
    if first && !tls && !refused && kind == ErrorKind::Connect {
        what.push_str(
            "; if the broker serves TLS only, use an mqtts:// URL or mqtt.tls = true (MSIGHT_MQTT_USE_TLS)",
        );
    }
    Error::new(kind, what).with_source(e)
}

/// A refused subscription: `None` when every code is a success.
pub(crate) fn suback_error(filter: &str, codes: &[SubscribeReasonCode]) -> Option<Error> {
    let bad = codes
        .iter()
        .find(|c| !matches!(c, SubscribeReasonCode::Success(_)))?;
    let kind = match bad {
        SubscribeReasonCode::NotAuthorized => ErrorKind::Auth,
        SubscribeReasonCode::TopicFilterInvalid => ErrorKind::InvalidTopic,
        SubscribeReasonCode::SharedSubscriptionsNotSupported
        | SubscribeReasonCode::WildcardSubscriptionsNotSupported
        | SubscribeReasonCode::SubscriptionIdNotSupported => ErrorKind::Unsupported,
        _ => ErrorKind::Backend,
    };
    Some(Error::new(
        kind,
        format!("the MQTT broker refused the subscription to {filter:?}: {bad:?}"),
    ))
}

/// A refused unsubscribe: `None` for success (or when nothing was subscribed).
pub(crate) fn unsuback_error(filter: &str, codes: &[UnsubAckReason]) -> Option<Error> {
    let bad = codes.iter().find(|c| {
        !matches!(
            c,
            UnsubAckReason::Success | UnsubAckReason::NoSubscriptionExisted
        )
    })?;
    let kind = match bad {
        UnsubAckReason::NotAuthorized => ErrorKind::Auth,
        UnsubAckReason::TopicFilterInvalid => ErrorKind::InvalidTopic,
        _ => ErrorKind::Backend,
    };
    Some(Error::new(
        kind,
        format!("the MQTT broker refused to unsubscribe {filter:?}: {bad:?}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_kinds() {
        let e = connection_error(
            ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword),
            "127.0.0.1:1883",
            false,
        );
        assert_eq!(e.kind(), ErrorKind::Auth);
        assert!(e.to_string().contains("MSIGHT_MQTT_PASSWORD"), "{e}");
        let e = connection_error(
            ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized),
            "h:1",
            false,
        );
        assert_eq!(e.kind(), ErrorKind::Auth);
        let e = connection_error(
            ConnectionError::ConnectionRefused(ConnectReturnCode::ServerUnavailable),
            "h:1",
            false,
        );
        assert_eq!(e.kind(), ErrorKind::Connect);
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = connection_error(ConnectionError::Io(refused), "h:1", false);
        assert_eq!(e.kind(), ErrorKind::Connect);
        assert!(e.to_string().contains("h:1"), "{e}");
        let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed");
        let e = first_connection_error(ConnectionError::Io(eof), "h:1", false);
        assert_eq!(e.kind(), ErrorKind::Connect);
        assert!(e.to_string().contains("mqtts://"), "{e}");
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = first_connection_error(ConnectionError::Io(refused), "h:1", false);
        assert!(!e.to_string().contains("mqtts://"), "{e}");
        let tls = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let e = connection_error(ConnectionError::Io(tls), "h:1", true);
        assert_eq!(e.kind(), ErrorKind::Tls);
    }

    #[test]
    fn subscription_reason_codes() {
        assert!(suback_error(
            "a",
            &[SubscribeReasonCode::Success(
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce
            )]
        )
        .is_none());
        let e = suback_error("a/#", &[SubscribeReasonCode::NotAuthorized]).unwrap();
        assert_eq!(e.kind(), ErrorKind::Auth);
        let e = suback_error(
            "$share/g/a",
            &[SubscribeReasonCode::SharedSubscriptionsNotSupported],
        )
        .unwrap();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(unsuback_error("a", &[UnsubAckReason::NoSubscriptionExisted]).is_none());
        assert_eq!(
            unsuback_error("a", &[UnsubAckReason::NotAuthorized])
                .unwrap()
                .kind(),
            ErrorKind::Auth
        );
    }
}
