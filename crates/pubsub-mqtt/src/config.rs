//! The `[mqtt]` section: broker address, client id, credentials, QoS,
//! sessions, TLS and limits of the MQTT v5 backend (`pubsub-mqtt`), and the
//! `MSIGHT_MQTT_*` environment variables in the style of the other backends.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use pubsub_core::config::env::{parse_duration, parse_number};
use pubsub_core::config::{redact_url, serialize_redacted_url, Env, EnvSource, Secret, Section};
use pubsub_core::{Error, Result, MAX_TOPIC_LEN};

/// Bytes of an MQTT PUBLISH packet that are not payload, at most: fixed
/// header (5), topic length (2) and topic ([`MAX_TOPIC_LEN`]), packet id (2),
/// properties length (1), rounded up. The largest payload is
/// [`MqttConfig::max_packet_size`] minus this.
pub const MQTT_PACKET_OVERHEAD: usize = MAX_TOPIC_LEN + 16;

/// Largest packet MQTT can carry (its remaining-length field tops out at 256 MiB).
pub const MQTT_MAX_PACKET_SIZE: usize = 268_435_455;

/// Settings of the MQTT v5 backend.
///
/// The broker is `host`:`port`, or `url` when given (`mqtt://host:port`, or
/// `mqtts://host:port` which turns TLS on). Without `session_expiry` every
/// connection starts clean (the broker forgets subscriptions and queued
/// messages when the client goes); with it, the broker keeps the session of
/// this `client_id` for that long, and a subscriber that comes back receives
/// the QoS 1 and 2 messages published while it was away. Brokers cap what
/// they queue per client: mosquitto keeps at most `max_queued_messages`
/// (1,000 by default) and drops the rest.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct MqttConfig {
    /// Broker host name or IP address (default `localhost`); ignored when `url` is set.
    pub host: String,
    /// Broker port (default 1883); ignored when `url` is set.
    pub port: u16,
    /// Broker URL, `mqtt://host:port` or `mqtts://host:port` (TLS). Overrides
    /// `host` and `port`; the port defaults to 1883 (`mqtt`) or 8883 (`mqtts`).
    /// Credentials in it are refused; it is shown redacted.
    #[serde(serialize_with = "serialize_redacted_url")]
    pub url: Option<String>,
    /// MQTT client identifier. When not given, a unique one is generated per
    /// connection (`msight-<random>`). Needed with `session_expiry`, so that
    /// the broker finds the session again.
    pub client_id: Option<String>,
    /// User name (with `password`).
    pub username: Option<String>,
    /// Password (with `username`); never logged or shown.
    pub password: Option<Secret>,
    /// Interval of keep-alive pings (default 30 s; from 5 s to 65535 s).
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Quality of service of publishes and subscriptions: 0 (at most once),
    /// 1 (at least once, default) or 2 (exactly once).
    pub qos: u8,
    /// Publish with the retain flag (default false): the broker then keeps
    /// the last message of each topic for subscribers that come later.
    pub retain: bool,
    /// How long the broker keeps this client's session (subscriptions and
    /// queued messages) after it disconnects. Unset (default): every
    /// connection starts clean. Set: the session is resumed
    /// (`clean_start = false`); give a fixed `client_id` too.
    #[serde(with = "humantime_serde")]
    pub session_expiry: Option<Duration>,
    /// Use TLS. Also implied by an `mqtts://` URL.
    pub tls: bool,
    /// CA certificate (PEM) to verify the broker with, instead of the system roots.
    pub tls_ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS (with `tls_cert`).
    pub tls_key: Option<PathBuf>,
    /// Verify the broker certificate (default true). Turning it off is for tests only.
    pub tls_verify: bool,
    /// Largest MQTT packet sent or accepted, in bytes (default 16 MiB; MQTT's
    /// own limit is 256 MiB). The largest payload is this minus
    /// [`MQTT_PACKET_OVERHEAD`]; a larger one gives `PayloadTooLarge`.
    pub max_packet_size: usize,
    /// First pause before reconnecting after the connection is lost (default 100 ms);
    /// it doubles on every failed attempt up to `reconnect_delay_max`.
    #[serde(with = "humantime_serde")]
    pub reconnect_delay_min: Duration,
    /// Longest pause between reconnect attempts (default 5 s).
    #[serde(with = "humantime_serde")]
    pub reconnect_delay_max: Duration,
    /// Requests (publishes, subscriptions) the client library queues before
    /// `publish` waits for room (default 1,000).
    pub request_channel_capacity: usize,
    /// Most QoS 1 / 2 publishes sent and not yet acknowledged (default 1,000;
    /// the broker's receive maximum applies when lower: mosquitto's default
    /// is 20). The client keeps a slot per possible one, about 200 bytes each.
    pub max_inflight: u16,
}

impl std::fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = self.url.as_deref().map(redact_url);
        f.debug_struct("MqttConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("url", &url)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("keep_alive", &self.keep_alive)
            .field("qos", &self.qos)
            .field("retain", &self.retain)
            .field("session_expiry", &self.session_expiry)
            .field("tls", &self.tls)
            .field("tls_ca_cert", &self.tls_ca_cert)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("tls_verify", &self.tls_verify)
            .field("max_packet_size", &self.max_packet_size)
            .field("reconnect_delay_min", &self.reconnect_delay_min)
            .field("reconnect_delay_max", &self.reconnect_delay_max)
            .field("request_channel_capacity", &self.request_channel_capacity)
            .field("max_inflight", &self.max_inflight)
            .finish()
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            host: "localhost".to_string(),
            port: 1883,
            url: None,
            client_id: None,
            username: None,
            password: None,
            keep_alive: Duration::from_secs(30),
            qos: 1,
            retain: false,
            session_expiry: None,
            tls: false,
            tls_ca_cert: None,
            tls_cert: None,
            tls_key: None,
            tls_verify: true,
            max_packet_size: 16 * 1024 * 1024,
            reconnect_delay_min: Duration::from_millis(100),
            reconnect_delay_max: Duration::from_secs(5),
            request_channel_capacity: 1000,
            max_inflight: 1000,
        }
    }
}

/// The environment variables of the MQTT section, with the config key each sets.
pub const MQTT_ENV: &[(&str, &str)] = &[
    ("MSIGHT_MQTT_HOST", "mqtt.host"),
    ("MSIGHT_MQTT_PORT", "mqtt.port"),
    ("MSIGHT_MQTT_URL", "mqtt.url"),
    ("MSIGHT_MQTT_CLIENT_ID", "mqtt.client_id"),
    ("MSIGHT_MQTT_USERNAME", "mqtt.username"),
    ("MSIGHT_MQTT_PASSWORD", "mqtt.password"),
    ("MSIGHT_MQTT_QOS", "mqtt.qos"),
    ("MSIGHT_MQTT_RETAIN", "mqtt.retain"),
    ("MSIGHT_MQTT_KEEP_ALIVE", "mqtt.keep_alive"),
    ("MSIGHT_MQTT_SESSION_EXPIRY", "mqtt.session_expiry"),
    ("MSIGHT_MQTT_USE_TLS", "mqtt.tls"),
    ("MSIGHT_MQTT_TLS_CA_CERT_FILE", "mqtt.tls_ca_cert"),
    ("MSIGHT_MQTT_TLS_CERT_FILE", "mqtt.tls_cert"),
    ("MSIGHT_MQTT_TLS_KEY_FILE", "mqtt.tls_key"),
    ("MSIGHT_MQTT_TLS_VERIFY", "mqtt.tls_verify"),
];

/// Where the MQTT backend connects, resolved from `url` or `host`/`port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttBroker {
    /// Host name or IP address (without brackets for IPv6).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Whether the connection uses TLS (`tls = true` or an `mqtts://` URL).
    pub tls: bool,
}

impl Section for MqttConfig {
    const NAME: &'static str = "mqtt";
    const ENV: &'static [(&'static str, &'static str)] = MQTT_ENV;

    /// Override fields from the `MSIGHT_MQTT_*` variables (see [`MQTT_ENV`]).
    /// A malformed value is an error that names the variable and the
    /// expected form.
    fn apply_env(&mut self, source: &dyn EnvSource) -> Result<()> {
        let env = Env(source);
        if let Some(v) = source.var("MSIGHT_MQTT_HOST") {
            let host = v.trim();
            if host.chars().any(|c| c.is_whitespace() || c == '/') {
                return Err(Error::config(
                    "MSIGHT_MQTT_HOST",
                    format!("expected a host name or IP address like \"broker.local\" (a URL goes in MSIGHT_MQTT_URL), got {host:?}"),
                ));
            }
            self.host = host.to_string();
        }
        if let Some(v) = source.var("MSIGHT_MQTT_PORT") {
            self.port = parse_port("MSIGHT_MQTT_PORT", &v)?;
        }
        if let Some(v) = source.var("MSIGHT_MQTT_URL") {
            parse_url("MSIGHT_MQTT_URL", v.trim(), false)?;
            self.url = Some(v.trim().to_string());
        }
        env.string("MSIGHT_MQTT_CLIENT_ID", &mut self.client_id);
        env.string("MSIGHT_MQTT_USERNAME", &mut self.username);
        env.secret("MSIGHT_MQTT_PASSWORD", &mut self.password);
        if let Some(v) = source.var("MSIGHT_MQTT_QOS") {
            self.qos = parse_qos("MSIGHT_MQTT_QOS", &v)?;
        }
        env.bool("MSIGHT_MQTT_RETAIN", &mut self.retain)?;
        env.duration("MSIGHT_MQTT_KEEP_ALIVE", &mut self.keep_alive)?;
        if let Some(v) = source.var("MSIGHT_MQTT_SESSION_EXPIRY") {
            self.session_expiry = parse_session_expiry("MSIGHT_MQTT_SESSION_EXPIRY", &v)?;
        }
        env.bool("MSIGHT_MQTT_USE_TLS", &mut self.tls)?;
        env.path("MSIGHT_MQTT_TLS_CA_CERT_FILE", &mut self.tls_ca_cert);
        env.path("MSIGHT_MQTT_TLS_CERT_FILE", &mut self.tls_cert);
        env.path("MSIGHT_MQTT_TLS_KEY_FILE", &mut self.tls_key);
        env.bool("MSIGHT_MQTT_TLS_VERIFY", &mut self.tls_verify)?;
        Ok(())
    }

    /// Checks that need no network: the address, QoS, credentials that go
    /// together, TLS files in pairs, and limits in range. Errors name the key.
    fn validate(&self) -> Result<()> {
        self.broker()?;
        if self.qos > 2 {
            return Err(Error::config(
                "mqtt.qos",
                format!("expected 0, 1 or 2, got {}", self.qos),
            ));
        }
        if let Some(id) = &self.client_id {
            if id.is_empty() || id.chars().any(char::is_control) || id.len() > 65_535 {
                return Err(Error::config(
                    "mqtt.client_id",
                    format!("{id:?} must be 1 to 65535 bytes without control characters"),
                ));
            }
        }
        if self.password.is_some() && self.username.is_none() {
            return Err(Error::config(
                "mqtt.password",
                "a password needs a user name (mqtt.username / MSIGHT_MQTT_USERNAME)",
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            let missing = if self.tls_cert.is_some() {
                "mqtt.tls_key"
            } else {
                "mqtt.tls_cert"
            };
            return Err(Error::config(
                missing,
                "mutual TLS needs both a client certificate (mqtt.tls_cert) and its key (mqtt.tls_key)",
            ));
        }
        validate_limits(self)
    }
}

/// The checks of times and sizes: keep-alive, session expiry, packet size,
/// reconnect delays, in-flight and queue limits.
fn validate_limits(m: &MqttConfig) -> Result<()> {
    if m.keep_alive < Duration::from_secs(5) || m.keep_alive.as_secs() > 65_535 {
        return Err(Error::config(
            "mqtt.keep_alive",
            format!(
                "must be from 5 s to 65535 s (MQTT sends whole seconds; the client library needs at least 5 s), got {:?}",
                m.keep_alive
            ),
        ));
    }
    if let Some(d) = m.session_expiry {
        if d.as_secs() > u64::from(u32::MAX) {
            return Err(Error::config(
                "mqtt.session_expiry",
                format!("must be at most {} s", u32::MAX),
            ));
        }
    }
    let min = MQTT_PACKET_OVERHEAD + 1;
    if !(min..=MQTT_MAX_PACKET_SIZE).contains(&m.max_packet_size) {
        return Err(Error::config(
            "mqtt.max_packet_size",
            format!(
                "must be from {min} to {MQTT_MAX_PACKET_SIZE} bytes, got {}",
                m.max_packet_size
            ),
        ));
    }
    if m.reconnect_delay_min.is_zero() {
        return Err(Error::config(
            "mqtt.reconnect_delay_min",
            "must be more than zero",
        ));
    }
    if m.reconnect_delay_max < m.reconnect_delay_min {
        return Err(Error::config(
            "mqtt.reconnect_delay_max",
            "must not be less than mqtt.reconnect_delay_min",
        ));
    }
    if m.max_inflight == 0 {
        return Err(Error::config("mqtt.max_inflight", "must be at least 1"));
    }
    if m.request_channel_capacity == 0 {
        return Err(Error::config(
            "mqtt.request_channel_capacity",
            "must be at least 1",
        ));
    }
    Ok(())
}

impl MqttConfig {
    /// The broker address: from `url` if set, else `host` and `port`.
    pub fn broker(&self) -> Result<MqttBroker> {
        let Some(url) = &self.url else {
            if self.host.trim().is_empty()
                || self.host.chars().any(|c| c.is_whitespace() || c == '/')
            {
                return Err(Error::config(
                    "mqtt.host",
                    format!(
                        "expected a host name or IP address like \"localhost\", got {:?}",
                        self.host
                    ),
                ));
            }
            if self.port == 0 {
                return Err(Error::config(
                    "mqtt.port",
                    "must be a port number from 1 to 65535",
                ));
            }
            return Ok(MqttBroker {
                host: self.host.trim().to_string(),
                port: self.port,
                tls: self.tls,
            });
        };
        parse_url("mqtt.url", url, self.tls)
    }

    /// The largest payload, by [`MqttConfig::max_packet_size`].
    pub fn max_payload(&self) -> usize {
        self.max_packet_size.saturating_sub(MQTT_PACKET_OVERHEAD)
    }

    /// The session expiry in whole seconds as MQTT sends it, if set and not zero.
    pub fn session_expiry_secs(&self) -> Option<u32> {
        let d = self.session_expiry?;
        let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        (secs > 0).then(|| u32::try_from(secs).unwrap_or(u32::MAX))
    }
}

fn parse_port(name: &str, value: &str) -> Result<u16> {
    let p: u16 = parse_number(name, value).map_err(|_| {
        Error::config(
            name,
            format!(
                "expected a port number from 1 to 65535, got {:?}",
                value.trim()
            ),
        )
    })?;
    if p == 0 {
        return Err(Error::config(
            name,
            "expected a port number from 1 to 65535, got \"0\"",
        ));
    }
    Ok(p)
}

fn parse_qos(name: &str, value: &str) -> Result<u8> {
    match value.trim() {
        "0" => Ok(0),
        "1" => Ok(1),
        "2" => Ok(2),
        other => Err(Error::config(
            name,
            format!("expected 0, 1 or 2, got {other:?}"),
        )),
    }
}

/// A duration (`"1h"`, `"300"` seconds); `0`, `none` or `off` mean no session (clean start).
fn parse_session_expiry(name: &str, value: &str) -> Result<Option<Duration>> {
    let v = value.trim();
    if matches!(v.to_ascii_lowercase().as_str(), "none" | "off") {
        return Ok(None);
    }
    let d = parse_duration(name, v).map_err(|_| {
        Error::config(
            name,
            format!("expected a duration like \"1h\", \"300s\" or a number of seconds (0 or \"none\": clean start), got {v:?}"),
        )
    })?;
    if d.as_secs() > u64::from(u32::MAX) {
        return Err(Error::config(
            name,
            format!("{v:?} is over the MQTT maximum of {} s", u32::MAX),
        ));
    }
    Ok((!d.is_zero()).then_some(d))
}

/// `mqtt://host[:port]` or `mqtts://host[:port]` (also `tcp://`, `ssl://`).
fn parse_url(key: &str, url: &str, tls: bool) -> Result<MqttBroker> {
    let shown = redact_url(url);
    let expected = || {
        Error::config(
            key,
            format!(
                "expected a URL like \"mqtt://host:1883\" or \"mqtts://host:8883\", got {shown:?}"
            ),
        )
    };
    let (scheme, rest) = url.trim().split_once("://").ok_or_else(expected)?;
    let (scheme_tls, default_port) = match scheme.to_ascii_lowercase().as_str() {
        "mqtt" | "tcp" => (false, 1883),
        "mqtts" | "ssl" => (true, 8883),
        _ => {
            return Err(Error::config(
                key,
                format!("unknown URL scheme {scheme:?} in {shown:?}; use mqtt:// or mqtts://"),
            ))
        }
    };
    if rest.contains('@') {
        return Err(Error::config(
            key,
            format!(
                "{shown:?}: put credentials in mqtt.username and mqtt.password, not in the URL"
            ),
        ));
    }
    let hostport = rest.trim_end_matches('/');
    if hostport.contains(['/', '?', '#']) {
        return Err(expected());
    }
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, p) = v6.split_once(']').ok_or_else(expected)?;
        (h, p.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == ',') {
        return Err(expected());
    }
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(Error::config(
                    key,
                    format!("port {p:?} in {shown:?} is not a number from 1 to 65535"),
                ))
            }
        },
    };
    Ok(MqttBroker {
        host: host.to_string(),
        port,
        tls: tls || scheme_tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn defaults() {
        let c = MqttConfig::default();
        c.validate().unwrap();
        assert_eq!(
            c.broker().unwrap(),
            MqttBroker {
                host: "localhost".into(),
                port: 1883,
                tls: false
            }
        );
        assert_eq!(c.qos, 1);
        assert!(!c.retain);
        assert!(c.session_expiry.is_none());
        assert!(c.tls_verify);
        assert_eq!(c.max_payload(), 16 * 1024 * 1024 - MQTT_PACKET_OVERHEAD);
        let mut c2 = c.clone();
        c2.apply_env(&[("UNRELATED", "x")]).unwrap();
        assert_eq!(c, c2);
    }

    #[test]
    fn every_variable_is_read() {
        let env = [
            ("MSIGHT_MQTT_HOST", "broker.example"),
            ("MSIGHT_MQTT_PORT", "1884"),
            ("MSIGHT_MQTT_URL", "mqtts://b2:8884"),
            ("MSIGHT_MQTT_CLIENT_ID", "node-7"),
            ("MSIGHT_MQTT_USERNAME", "alice"),
            ("MSIGHT_MQTT_PASSWORD", "s3cret"),
            ("MSIGHT_MQTT_QOS", "2"),
            ("MSIGHT_MQTT_RETAIN", "yes"),
            ("MSIGHT_MQTT_KEEP_ALIVE", "15s"),
            ("MSIGHT_MQTT_SESSION_EXPIRY", "1h"),
            ("MSIGHT_MQTT_USE_TLS", "true"),
            ("MSIGHT_MQTT_TLS_CA_CERT_FILE", "/ca.pem"),
            ("MSIGHT_MQTT_TLS_CERT_FILE", "/c.pem"),
            ("MSIGHT_MQTT_TLS_KEY_FILE", "/k.pem"),
            ("MSIGHT_MQTT_TLS_VERIFY", "off"),
        ];
        assert_eq!(env.len(), MQTT_ENV.len());
        let mut c = MqttConfig::default();
        c.apply_env(&env).unwrap();
        assert_eq!(c.host, "broker.example");
        assert_eq!(c.port, 1884);
        assert_eq!(c.url.as_deref(), Some("mqtts://b2:8884"));
        assert_eq!(c.client_id.as_deref(), Some("node-7"));
        assert_eq!(c.username.as_deref(), Some("alice"));
        assert_eq!(c.password.as_ref().unwrap().expose(), "s3cret");
        assert_eq!(c.qos, 2);
        assert!(c.retain);
        assert_eq!(c.keep_alive, Duration::from_secs(15));
        assert_eq!(c.session_expiry, Some(Duration::from_secs(3600)));
        assert_eq!(c.session_expiry_secs(), Some(3600));
        assert!(c.tls);
        assert_eq!(c.tls_ca_cert, Some(PathBuf::from("/ca.pem")));
        assert_eq!(c.tls_cert, Some(PathBuf::from("/c.pem")));
        assert_eq!(c.tls_key, Some(PathBuf::from("/k.pem")));
        assert!(!c.tls_verify);
        c.validate().unwrap();
        // The URL wins over host and port.
        assert_eq!(
            c.broker().unwrap(),
            MqttBroker {
                host: "b2".into(),
                port: 8884,
                tls: true
            }
        );
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn host_and_port_without_url() {
        let mut c = MqttConfig::default();
        c.apply_env(&[
            ("MSIGHT_MQTT_HOST", " 10.0.0.5 "),
            ("MSIGHT_MQTT_PORT", "2883"),
        ])
        .unwrap();
        assert_eq!(
            c.broker().unwrap(),
            MqttBroker {
                host: "10.0.0.5".into(),
                port: 2883,
                tls: false
            }
        );
    }

    #[test]
    fn session_expiry_forms() {
        for (v, want) in [
            ("300", Some(300)),
            ("5m", Some(300)),
            ("0.5", Some(1)),
            ("0", None),
            ("none", None),
            ("OFF", None),
        ] {
            let mut c = MqttConfig::default();
            c.apply_env(&[("MSIGHT_MQTT_SESSION_EXPIRY", v)]).unwrap();
            assert_eq!(c.session_expiry_secs(), want, "{v}");
        }
    }

    #[test]
    fn malformed_variables_name_themselves_and_the_form() {
        for (var, value, fragment) in [
            ("MSIGHT_MQTT_PORT", "abc", "port number from 1 to 65535"),
            ("MSIGHT_MQTT_PORT", "70000", "port number from 1 to 65535"),
            ("MSIGHT_MQTT_PORT", "0", "port number from 1 to 65535"),
            ("MSIGHT_MQTT_PORT", "-1", "port number from 1 to 65535"),
            ("MSIGHT_MQTT_QOS", "3", "expected 0, 1 or 2"),
            ("MSIGHT_MQTT_QOS", "one", "expected 0, 1 or 2"),
            ("MSIGHT_MQTT_RETAIN", "maybe", "expected true/false"),
            ("MSIGHT_MQTT_KEEP_ALIVE", "often", "duration like"),
            ("MSIGHT_MQTT_SESSION_EXPIRY", "forever", "duration like"),
            ("MSIGHT_MQTT_SESSION_EXPIRY", "-5", "duration like"),
            (
                "MSIGHT_MQTT_SESSION_EXPIRY",
                "5000000000",
                "MQTT maximum of 4294967295 s",
            ),
            ("MSIGHT_MQTT_USE_TLS", "sure", "expected true/false"),
            ("MSIGHT_MQTT_TLS_VERIFY", "2", "expected true/false"),
            (
                "MSIGHT_MQTT_URL",
                "broker:1883",
                "expected a URL like \"mqtt://host:1883\"",
            ),
            (
                "MSIGHT_MQTT_URL",
                "http://broker:1883",
                "unknown URL scheme \"http\"",
            ),
            (
                "MSIGHT_MQTT_URL",
                "mqtt://broker:0",
                "not a number from 1 to 65535",
            ),
            ("MSIGHT_MQTT_HOST", "mqtt://broker", "MSIGHT_MQTT_URL"),
            ("MSIGHT_MQTT_HOST", "two hosts", "host name or IP address"),
        ] {
            let mut c = MqttConfig::default();
            let e = c.apply_env(&[(var, value)]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig);
            let msg = e.to_string();
            assert!(msg.contains(var) && msg.contains(fragment), "{msg}");
        }
    }

    #[test]
    fn url_forms() {
        for (url, host, port, tls) in [
            ("mqtt://h:1", "h", 1, false),
            ("mqtt://h", "h", 1883, false),
            ("mqtts://h", "h", 8883, true),
            ("MQTTS://h:9/", "h", 9, true),
            ("tcp://127.0.0.1:1883", "127.0.0.1", 1883, false),
            ("ssl://h:1", "h", 1, true),
            ("mqtt://[::1]:1884", "::1", 1884, false),
        ] {
            let c = MqttConfig {
                url: Some(url.into()),
                ..Default::default()
            };
            assert_eq!(
                c.broker().unwrap(),
                MqttBroker {
                    host: host.into(),
                    port,
                    tls
                },
                "{url}"
            );
        }
        // tls = true with an mqtt:// URL still means TLS.
        let c = MqttConfig {
            url: Some("mqtt://h:1".into()),
            tls: true,
            ..Default::default()
        };
        assert!(c.broker().unwrap().tls);
    }

    #[test]
    fn validation_names_the_key() {
        let cases: Vec<(MqttConfig, &str)> = vec![
            (
                MqttConfig {
                    url: Some("http://h:1883".into()),
                    ..Default::default()
                },
                "mqtt.url: unknown URL scheme \"http\"",
            ),
            (
                MqttConfig {
                    url: Some("h:1883".into()),
                    ..Default::default()
                },
                "mqtt.url: expected a URL like \"mqtt://host:1883\"",
            ),
            (
                MqttConfig {
                    url: Some("mqtt://h:99999".into()),
                    ..Default::default()
                },
                "mqtt.url: port \"99999\"",
            ),
            (
                MqttConfig {
                    url: Some("mqtt://u:hunter2@h:1883".into()),
                    ..Default::default()
                },
                "mqtt.url",
            ),
            (
                MqttConfig {
                    port: 0,
                    ..Default::default()
                },
                "mqtt.port",
            ),
            (
                MqttConfig {
                    host: " ".into(),
                    ..Default::default()
                },
                "mqtt.host",
            ),
            (
                MqttConfig {
                    qos: 3,
                    ..Default::default()
                },
                "mqtt.qos: expected 0, 1 or 2, got 3",
            ),
            (
                MqttConfig {
                    client_id: Some(String::new()),
                    ..Default::default()
                },
                "mqtt.client_id",
            ),
            (
                MqttConfig {
                    password: Some(Secret::new("p")),
                    ..Default::default()
                },
                "mqtt.password",
            ),
            (
                MqttConfig {
                    tls_cert: Some("/c".into()),
                    ..Default::default()
                },
                "mqtt.tls_key",
            ),
            (
                MqttConfig {
                    tls_key: Some("/k".into()),
                    ..Default::default()
                },
                "mqtt.tls_cert",
            ),
        ];
        assert_invalid(cases);
    }

    #[test]
    fn limits_validation_names_the_key() {
        let cases: Vec<(MqttConfig, &str)> = vec![
            (
                MqttConfig {
                    keep_alive: Duration::from_secs(4),
                    ..Default::default()
                },
                "mqtt.keep_alive: must be from 5 s",
            ),
            (
                MqttConfig {
                    max_packet_size: 10,
                    ..Default::default()
                },
                "mqtt.max_packet_size",
            ),
            (
                MqttConfig {
                    max_packet_size: 300_000_000,
                    ..Default::default()
                },
                "mqtt.max_packet_size",
            ),
            (
                MqttConfig {
                    reconnect_delay_min: Duration::ZERO,
                    ..Default::default()
                },
                "mqtt.reconnect_delay_min",
            ),
            (
                MqttConfig {
                    reconnect_delay_max: Duration::from_millis(1),
                    ..Default::default()
                },
                "mqtt.reconnect_delay_max",
            ),
            (
                MqttConfig {
                    max_inflight: 0,
                    ..Default::default()
                },
                "mqtt.max_inflight",
            ),
            (
                MqttConfig {
                    request_channel_capacity: 0,
                    ..Default::default()
                },
                "mqtt.request_channel_capacity",
            ),
        ];
        assert_invalid(cases);
    }

    /// Each config fails validation with an error naming its fragment.
    fn assert_invalid(cases: Vec<(MqttConfig, &str)>) {
        for (c, fragment) in cases {
            let e = c.validate().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig);
            assert!(e.to_string().contains(fragment), "{e}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
            assert!(!format!("{c:?}").contains("hunter2"), "{c:?}");
            let json = serde_json::to_string(&c).unwrap();
            assert!(!json.contains("hunter2"), "{json}");
        }
    }

    #[test]
    fn from_a_config_file_section() {
        let c: MqttConfig = serde_json::from_str(
            r#"{"url": "mqtt://b:1", "qos": 0, "session_expiry": "10m", "keep_alive": "5s", "password": "pw", "username": "u"}"#,
        )
        .unwrap();
        assert_eq!(c.qos, 0);
        assert_eq!(c.session_expiry, Some(Duration::from_secs(600)));
        assert_eq!(c.keep_alive, Duration::from_secs(5));
        c.validate().unwrap();
        let shown = serde_json::to_string(&c).unwrap();
        assert!(!shown.contains("\"pw\""), "{shown}");
        let e = serde_json::from_str::<MqttConfig>(r#"{"hostname": "x"}"#).unwrap_err();
        assert!(e.to_string().contains("hostname"), "{e}");
    }
}
