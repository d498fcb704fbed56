//! The `[mqtt]` config section to [`Options`]: rumqttc's [`MqttOptions`]
//! (session, network, limits, credentials, TLS) and what the backend reads
//! beside them.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{MqttBroker, MqttConfig};
use pubsub_core::tls::TlsFiles;
use pubsub_core::{AckMode, Config, Error, Result};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::MqttOptions;
use rumqttc::{TlsConfiguration, Transport};

/// Everything needed to connect, checked once at connect.
#[derive(Clone)]
pub(crate) struct Options {
    pub mqtt: MqttConfig,
    /// The client library's options.
    pub client_options: MqttOptions,
    /// The broker as shown in errors and logs: `host:port` (no credentials).
    pub shown: String,
    /// Whether the connection uses TLS (`tls = true` or an `mqtts://` URL).
    pub tls: bool,
    /// `mqtt.client_id`, or one generated for this handle.
    pub client_id: String,
    pub qos: QoS,
    /// Whether the broker keeps the session (`mqtt.session_expiry` is set).
    pub persistent: bool,
    pub connect_timeout: Duration,
    pub close_timeout: Duration,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("broker", &self.shown)
            .field("tls", &self.tls)
            .field("client_id", &self.client_id)
            .field("qos", &self.qos)
            .field("persistent", &self.persistent)
            .finish()
    }
}

impl Options {
    /// Build the client options from the common settings and the (checked)
    /// `[mqtt]` section (TLS files are read here, so their errors come
    /// before any network traffic).
    pub fn new(config: &Config, mqtt: MqttConfig) -> Result<Options> {
        let broker = mqtt.broker()?;
        let persistent = mqtt.session_expiry_secs().is_some();
        let qos = qos(mqtt.qos)?;
        if config.ack == AckMode::Manual {
            check_manual_ack(&mqtt, qos)?;
            check_dead_letter_topic(config.dead_letter_topic.as_deref())?;
        }
        let client_id = match &mqtt.client_id {
            Some(id) => id.clone(),
            None => {
                if persistent {
                    tracing::warn!(
                        "mqtt.session_expiry is set without mqtt.client_id: the generated client id changes on every start, so a later start will not find this session"
                    );
                }
                generated_client_id()
            }
        };
        let mut client_options =
            MqttOptions::new(client_id.clone(), broker.host.clone(), broker.port);
        session_and_limits(&mut client_options, config, &mqtt, persistent);
        if config.ack == AckMode::Manual {
            // PUBACK / PUBREC only when the application acks; the broker
            // sends at most max_in_flight unacknowledged messages at once.
            client_options.set_manual_acks(true);
            let window = u16::try_from(config.max_in_flight.max(1)).unwrap_or(u16::MAX);
            client_options.set_receive_maximum(Some(window));
        }
        if let Some(user) = &mqtt.username {
            let pass = mqtt
                .password
                .as_ref()
                .map(|p| p.expose())
                .unwrap_or_default();
            client_options.set_credentials(user.clone(), pass.to_string());
        }
        if broker.tls {
            let tls = pubsub_core::tls::client_config(&tls_files(&mqtt))?;
            client_options.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(tls))));
        } else {
            pubsub_core::tls::warn_files_without_tls(
                &tls_files(&mqtt),
                "set mqtt.tls = true (MSIGHT_MQTT_USE_TLS=true) or use an mqtts:// URL",
            );
        }
        Ok(Options {
            client_options,
            shown: shown_address(&broker),
            tls: broker.tls,
            client_id,
            qos,
            persistent,
            connect_timeout: config.connect_timeout,
            close_timeout: config.close_timeout,
            mqtt,
        })
    }
}

/// Manual ack needs what lets the broker keep a message until it is
/// acknowledged, and send it again to this client after a crash: QoS 1 or
/// 2, a session kept after a disconnect, and a client id that stays the
/// same from one start to the next.
fn check_manual_ack(mqtt: &MqttConfig, qos: QoS) -> Result<()> {
    if qos == QoS::AtMostOnce {
        return Err(Error::config(
            "mqtt.qos",
            "ack = \"manual\" needs QoS 1 or 2: at QoS 0 the broker keeps nothing to deliver again; set mqtt.qos = 1 (MSIGHT_MQTT_QOS)",
        ));
    }
    if mqtt.session_expiry_secs().is_none() {
        return Err(Error::config(
            "mqtt.session_expiry",
            "ack = \"manual\" needs a persistent session, or the broker forgets unacknowledged messages when the connection drops: set mqtt.session_expiry (MSIGHT_MQTT_SESSION_EXPIRY, e.g. \"1h\") and a fixed mqtt.client_id (MSIGHT_MQTT_CLIENT_ID)",
        ));
    }
    if mqtt.client_id.is_none() {
        return Err(Error::config(
            "mqtt.client_id",
            "ack = \"manual\" needs a fixed client id: the broker sends unacknowledged messages again only to the session's client id, and a generated one changes on every start; set mqtt.client_id (MSIGHT_MQTT_CLIENT_ID), one per process",
        ));
    }
    Ok(())
}

/// Dead letters are published: the topic cannot have MQTT wildcards.
fn check_dead_letter_topic(topic: Option<&str>) -> Result<()> {
    match topic {
        Some(t) if t.contains(['+', '#']) => Err(Error::config(
            "dead_letter_topic",
            format!("{t:?}: MQTT cannot publish to a topic with the wildcards `+` or `#`"),
        )),
        _ => Ok(()),
    }
}

/// `mqtt.qos` as rumqttc's level.
fn qos(level: u8) -> Result<QoS> {
    match level {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        2 => Ok(QoS::ExactlyOnce),
        n => Err(Error::config(
            "mqtt.qos",
            format!("expected 0, 1 or 2, got {n}"),
        )),
    }
}

/// A client id no other process is likely to use: `msight-` and 16 hex digits
/// from the process id, the time and a per-process counter, hashed with
/// std's randomly keyed hasher.
fn generated_client_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u64(N.fetch_add(1, Ordering::Relaxed));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(nanos);
    format!("msight-{:016x}", h.finish())
}

/// `host:port`, IPv6 hosts in brackets.
fn shown_address(broker: &MqttBroker) -> String {
    if broker.host.contains(':') {
        format!("[{}]:{}", broker.host, broker.port)
    } else {
        format!("{}:{}", broker.host, broker.port)
    }
}

/// Session, keep-alive, network and size settings.
fn session_and_limits(
    options: &mut MqttOptions,
    config: &Config,
    mqtt: &MqttConfig,
    persistent: bool,
) {
    options.set_keep_alive(mqtt.keep_alive);
    options.set_clean_start(!persistent);
    options.set_session_expiry_interval(mqtt.session_expiry_secs());
    // The whole connect is bounded by connect_timeout in core; this bounds
    // each later reconnect attempt (rumqttc counts whole seconds).
    let secs = config.connect_timeout.as_secs_f64().ceil().max(1.0) as u64;
    options.set_connection_timeout(secs);
    let mut network = rumqttc::NetworkOptions::new();
    network.set_connection_timeout(secs);
    // Small packets (acknowledgements, then the next publish) must not
    // wait for the peer's delayed ACK (Nagle): that costs ~40 ms each.
    network.set_tcp_nodelay(true);
    options.set_network_options(network);
    let max_packet = u32::try_from(mqtt.max_packet_size).unwrap_or(u32::MAX);
    // Raises the incoming limit (rumqttc's default is 10 KiB) and tells
    // the broker not to send more.
    options.set_max_packet_size(Some(max_packet));
    options.set_request_channel_capacity(mqtt.request_channel_capacity);
    // rumqttc allocates a slot per possible in-flight publish up front
    // (65,535 by default: about 14 MB per connection).
    options.set_outgoing_inflight_upper_limit(mqtt.max_inflight);
}

/// The TLS files and switches of the section, for core's TLS setup.
fn tls_files(mqtt: &MqttConfig) -> TlsFiles<'_> {
    TlsFiles {
        section: "mqtt",
        ca_key: "tls_ca_cert",
        cert_key: "tls_cert",
        key_key: "tls_key",
        ca: mqtt.tls_ca_cert.as_deref(),
        cert: mqtt.tls_cert.as_deref(),
        key: mqtt.tls_key.as_deref(),
        verify: mqtt.tls_verify,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pubsub_core::{ErrorKind, Secret};

    #[test]
    fn options_from_config() {
        let c = Config::default();
        let m = MqttConfig {
            url: Some("mqtt://127.0.0.1:1999".into()),
            username: Some("u".into()),
            password: Some(Secret::new("hunter2")),
            session_expiry: Some(Duration::from_secs(60)),
            client_id: Some("fixed".into()),
            ..MqttConfig::default()
        };
        let s = Options::new(&c, m.clone()).unwrap();
        assert_eq!(s.shown, "127.0.0.1:1999");
        assert_eq!(
            s.client_options.broker_address(),
            ("127.0.0.1".to_string(), 1999)
        );
        assert!(!s.client_options.clean_start());
        assert_eq!(s.client_options.session_expiry_interval(), Some(60));
        assert_eq!(s.client_options.client_id(), "fixed");
        assert_eq!(s.client_options.max_packet_size(), Some(16 * 1024 * 1024));
        assert!(s.persistent);
        let m = MqttConfig::default();
        let s = Options::new(&c, m.clone()).unwrap();
        assert!(s.client_options.clean_start());
        assert!(s.client_id.starts_with("msight-"));
        assert_ne!(s.client_id, Options::new(&c, m).unwrap().client_id);
        assert_eq!(s.qos, QoS::AtLeastOnce);
    }

    #[test]
    fn manual_ack_needs_a_persistent_session_and_qos_1() {
        let mut c = Config::default();
        c.ack = AckMode::Manual;
        c.max_in_flight = 70_000;
        let session = MqttConfig {
            session_expiry: Some(Duration::from_secs(60)),
            client_id: Some("fixed".into()),
            ..MqttConfig::default()
        };
        let s = Options::new(&c, session.clone()).unwrap();
        assert!(s.client_options.manual_acks());
        assert_eq!(s.client_options.receive_maximum(), Some(u16::MAX));
        for (m, key) in [
            (
                MqttConfig {
                    qos: 0,
                    ..session.clone()
                },
                "mqtt.qos",
            ),
            (
                MqttConfig {
                    session_expiry: None,
                    ..session.clone()
                },
                "mqtt.session_expiry",
            ),
            (
                MqttConfig {
                    client_id: None,
                    ..session.clone()
                },
                "mqtt.client_id",
            ),
        ] {
            let e = Options::new(&c, m).err().unwrap();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig);
            assert!(e.to_string().contains(&format!("{key}: ")), "{key}: {e}");
            assert!(e.to_string().contains("ack = \"manual\""), "{e}");
        }
        let mut wild = c.clone();
        wild.dead_letter_topic = Some("dead/#".into());
        let e = Options::new(&wild, session.clone()).err().unwrap();
        assert!(e.to_string().contains("dead_letter_topic: "), "{e}");
        // Auto mode: rumqttc acknowledges by itself.
        let s = Options::new(&Config::default(), session).unwrap();
        assert!(!s.client_options.manual_acks());
        assert_eq!(s.client_options.receive_maximum(), None);
    }

    #[test]
    fn missing_tls_files_are_config_errors_naming_the_key() {
        let m = MqttConfig {
            url: Some("mqtts://127.0.0.1:1".into()),
            tls_ca_cert: Some("/nonexistent/ca.pem".into()),
            ..MqttConfig::default()
        };
        let e = Options::new(&Config::default(), m).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        assert!(e.to_string().contains("mqtt.tls_ca_cert"), "{e}");
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }
}
