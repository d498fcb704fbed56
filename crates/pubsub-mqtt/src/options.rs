//! The `[mqtt]` config section to rumqttc's [`MqttOptions`].

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{MqttBroker, MqttConfig};
use pubsub_core::tls::TlsFiles;
use pubsub_core::{Config, Error, ErrorKind, Result};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::MqttOptions;
use rumqttc::{TlsConfiguration, Transport};

/// Everything the backend needs, checked, from one [`Config`].
#[derive(Clone)]
pub(crate) struct Settings {
    pub options: MqttOptions,
    pub broker: MqttBroker,
    /// `host:port`, for messages (no credentials).
    pub address: String,
    pub client_id: String,
    pub qos: QoS,
    pub retain: bool,
    pub persistent: bool,
    pub max_packet_size: usize,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub channel_capacity: usize,
    pub connect_timeout: Duration,
    pub close_timeout: Duration,
}

pub(crate) fn qos(level: u8) -> Result<QoS> {
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
pub(crate) fn generated_client_id() -> String {
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

impl Settings {
    /// Build the client options from the common settings and the (checked)
    /// `[mqtt]` section (TLS files are read here, so their errors come
    /// before any network traffic).
    pub fn from_config(config: &Config, m: &MqttConfig) -> Result<Settings> {
        let broker = m.broker()?;
        let address = if broker.host.contains(':') {
            format!("[{}]:{}", broker.host, broker.port)
        } else {
            format!("{}:{}", broker.host, broker.port)
        };
        let persistent = m.session_expiry_secs().is_some();
        let client_id = match &m.client_id {
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
        let mut options = MqttOptions::new(client_id.clone(), broker.host.clone(), broker.port);
        options.set_keep_alive(m.keep_alive);
        options.set_clean_start(!persistent);
        options.set_session_expiry_interval(m.session_expiry_secs());
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
        let max_packet = u32::try_from(m.max_packet_size).unwrap_or(u32::MAX);
        // Raises the incoming limit (rumqttc's default is 10 KiB) and tells
        // the broker not to send more.
        options.set_max_packet_size(Some(max_packet));
        options.set_request_channel_capacity(m.request_channel_capacity);
        // rumqttc allocates a slot per possible in-flight publish up front
        // (65,535 by default: about 14 MB per connection).
        options.set_outgoing_inflight_upper_limit(m.max_inflight);
        if let Some(user) = &m.username {
            let pass = m.password.as_ref().map(|p| p.expose()).unwrap_or_default();
            options.set_credentials(user.clone(), pass.to_string());
        }
        if broker.tls {
            let files = TlsFiles {
                section: "mqtt",
                ca_key: "tls_ca_cert",
                cert_key: "tls_cert",
                key_key: "tls_key",
                ca: m.tls_ca_cert.as_deref(),
                cert: m.tls_cert.as_deref(),
                key: m.tls_key.as_deref(),
                verify: m.tls_verify,
            };
            let tls = pubsub_core::tls::client_config(&files)?;
            options.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(tls))));
        } else if m.tls_ca_cert.is_some() || m.tls_cert.is_some() {
            tracing::warn!(
                "mqtt.tls_ca_cert / mqtt.tls_cert are set but TLS is off: set mqtt.tls = true (MSIGHT_MQTT_USE_TLS) or use an mqtts:// URL"
            );
        }
        Ok(Settings {
            options,
            address,
            client_id,
            qos: qos(m.qos)?,
            retain: m.retain,
            persistent,
            max_packet_size: m.max_packet_size,
            reconnect_min: m.reconnect_delay_min,
            reconnect_max: m.reconnect_delay_max,
            channel_capacity: m.request_channel_capacity,
            connect_timeout: config.connect_timeout,
            close_timeout: config.close_timeout,
            broker,
        })
    }
}

/// Errors of a topic name or filter for MQTT, `None` when fine.
pub(crate) fn check_filter(filter: &str) -> Result<()> {
    for level in filter.split('/') {
        if level.len() > 1 && level.contains(['+', '#']) {
            return Err(Error::topic(
                filter,
                "MQTT wildcards `+` and `#` must fill a whole topic level (e.g. \"a/+/c\", \"a/#\")",
            ));
        }
    }
    if let Some(pos) = filter.find('#') {
        if pos != filter.len() - 1 {
            return Err(Error::topic(
                filter,
                "the MQTT wildcard `#` must be the last level (e.g. \"sensors/#\")",
            ));
        }
    }
    if filter.starts_with("$share/") {
        return Err(Error::new(
            ErrorKind::InvalidTopic,
            format!("topic {filter:?}: use group_id for shared subscriptions instead of a $share/ filter"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pubsub_core::Secret;

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
        let s = Settings::from_config(&c, &m).unwrap();
        assert_eq!(s.address, "127.0.0.1:1999");
        assert_eq!(s.options.broker_address(), ("127.0.0.1".to_string(), 1999));
        assert!(!s.options.clean_start());
        assert_eq!(s.options.session_expiry_interval(), Some(60));
        assert_eq!(s.options.client_id(), "fixed");
        assert_eq!(s.options.max_packet_size(), Some(16 * 1024 * 1024));
        assert!(s.persistent);
        let m = MqttConfig::default();
        let s = Settings::from_config(&c, &m).unwrap();
        assert!(s.options.clean_start());
        assert!(s.client_id.starts_with("msight-"));
        assert_ne!(
            s.client_id,
            Settings::from_config(&c, &m).unwrap().client_id
        );
        assert_eq!(s.qos, QoS::AtLeastOnce);
    }

    #[test]
    fn missing_tls_files_are_tls_errors_naming_the_key() {
        let m = MqttConfig {
            url: Some("mqtts://127.0.0.1:1".into()),
            tls_ca_cert: Some("/nonexistent/ca.pem".into()),
            ..MqttConfig::default()
        };
        let e = Settings::from_config(&Config::default(), &m).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::Tls);
        assert!(e.to_string().contains("mqtt.tls_ca_cert"), "{e}");
    }

    #[test]
    fn filters() {
        for ok in ["a", "a/b", "a/+/c", "a/#", "#", "+", "+/+"] {
            check_filter(ok).unwrap();
        }
        for bad in ["a/b#", "a/#/c", "a+/b", "$share/g/a"] {
            assert_eq!(
                check_filter(bad).unwrap_err().kind(),
                ErrorKind::InvalidTopic,
                "{bad}"
            );
        }
    }
}
