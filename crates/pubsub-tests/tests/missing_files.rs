//! A file named in the configuration that does not exist is a configuration
//! error, found before any connect: one case per file key of each backend.
//! The error has kind `InvalidConfig` and names the key and the path.
//!
//! Each case points the backend at a listener of our own that never
//! answers: had the backend connected, the listener would hold the
//! connection (and the error would be a timeout, not a config error).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pubsub_core::{Config, ErrorKind, PubSub, Result};
use pubsub_mqtt::MqttConfig;
use pubsub_nats::NatsConfig;
use pubsub_redis::RedisConfig;

/// A temporary directory with a PEM certificate and key (never parsed as
/// X.509 here) and the path of a file that does not exist.
struct Files {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    missing: PathBuf,
}

fn files() -> Files {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("client.pem");
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let key = dir.path().join("client.key");
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let missing = dir.path().join("no-such-file.pem");
    Files {
        _dir: dir,
        cert,
        key,
        missing,
    }
}

/// A listener that accepts nothing: a connect to it would stay pending.
fn silent_listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

fn config() -> Config {
    let mut c = Config::default();
    c.connect_timeout = Duration::from_secs(3);
    c
}

/// The connect failed with `InvalidConfig` naming `key` and `path`, and
/// nothing connected to `listener`.
#[track_caller]
fn assert_missing(r: Result<PubSub>, key: &str, path: &Path, listener: &TcpListener) {
    let e = r.expect_err("connect must fail");
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
    let msg = e.to_string();
    assert!(msg.contains(key), "the message names {key}: {msg}");
    assert!(
        msg.contains(&path.display().to_string()),
        "the message names {}: {msg}",
        path.display()
    );
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("{key}: the backend connected before checking the file: {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// NATS
// ---------------------------------------------------------------------------

fn nats_config(addr: SocketAddr, change: impl FnOnce(&mut NatsConfig)) -> Config {
    let mut c = config();
    let nats = c.section_mut::<NatsConfig>().unwrap();
    nats.servers = vec![format!("nats://{addr}")];
    change(nats);
    c
}

#[tokio::test]
async fn nats_tls_ca_cert() {
    let (f, (l, addr)) = (files(), silent_listener());
    let c = nats_config(addr, |n| {
        n.tls = true;
        n.tls_ca_cert = Some(f.missing.clone());
    });
    assert_missing(
        pubsub_nats::connect(&c).await,
        "nats.tls_ca_cert",
        &f.missing,
        &l,
    );
}

#[tokio::test]
async fn nats_tls_cert() {
    let (f, (l, addr)) = (files(), silent_listener());
    let c = nats_config(addr, |n| {
        n.tls = true;
        n.tls_verify = false;
        n.tls_cert = Some(f.missing.clone());
        n.tls_key = Some(f.key.clone());
    });
    assert_missing(
        pubsub_nats::connect(&c).await,
        "nats.tls_cert",
        &f.missing,
        &l,
    );
}

#[tokio::test]
async fn nats_tls_key() {
    let (f, (l, addr)) = (files(), silent_listener());
    let c = nats_config(addr, |n| {
        n.tls = true;
        n.tls_verify = false;
        n.tls_cert = Some(f.cert.clone());
        n.tls_key = Some(f.missing.clone());
    });
    assert_missing(
        pubsub_nats::connect(&c).await,
        "nats.tls_key",
        &f.missing,
        &l,
    );
}

#[tokio::test]
async fn nats_user_credentials() {
    let (f, (l, addr)) = (files(), silent_listener());
    let c = nats_config(addr, |n| n.user_credentials = Some(f.missing.clone()));
    assert_missing(
        pubsub_nats::connect(&c).await,
        "nats.user_credentials",
        &f.missing,
        &l,
    );
}

// ---------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------

fn redis_config(addr: SocketAddr, change: impl FnOnce(&mut RedisConfig)) -> Config {
    let mut c = config();
    let redis = c.section_mut::<RedisConfig>().unwrap();
    redis.host = addr.ip().to_string();
    redis.port = addr.port();
    change(redis);
    c
}

#[tokio::test]
async fn redis_tls_ca_cert() {
    let (f, (l, addr)) = (files(), silent_listener());
    let c = redis_config(addr, |r| {
        r.tls = true;
        r.tls_ca_cert = Some(f.missing.clone());
    });
    assert_missing(
        pubsub_redis::connect(&c).await,
        "redis.tls_ca_cert",
        &f.missing,
        &l,
    );
}

#[tokio::test]
async fn redis_tls_cert() {
    let (f, (l, addr)) = (files(), silent_listener());
    let c = redis_config(addr, |r| {
        r.tls = true;
        r.tls_verify = false;
        r.tls_cert = Some(f.missing.clone());
        r.tls_key = Some(f.key.clone());
    });
    assert_missing(
        pubsub_redis::connect(&c).await,
        "redis.tls_cert",
        &f.missing,
        &l,
    );
}

#[tokio::test]
async fn redis_tls_key() {
    let (f, (l, addr)) = (files(), silent_listener());
    let c = redis_config(addr, |r| {
        r.tls = true;
        r.tls_verify = false;
        r.tls_cert = Some(f.cert.clone());
        r.tls_key = Some(f.missing.clone());
    });
    assert_missing(
        pubsub_redis::connect(&c).await,
        "redis.tls_key",
        &f.missing,
        &l,
    );
}

#[tokio::test]
async fn redis_unix_socket_path() {
    let (f, (l, addr)) = (files(), silent_listener());
    let c = redis_config(addr, |r| r.unix_socket_path = Some(f.missing.clone()));
    assert_missing(
        pubsub_redis::connect(&c).await,
        "redis.unix_socket_path",
        &f.missing,
        &l,
    );
}

// ---------------------------------------------------------------------------
// MQTT
// ---------------------------------------------------------------------------

fn mqtt_config(addr: SocketAddr, change: impl FnOnce(&mut MqttConfig)) -> Config {
    let mut c = config();
    let mqtt = c.section_mut::<MqttConfig>().unwrap();
    mqtt.url = Some(format!("mqtts://{addr}"));
    change(mqtt);
    c
}

#[tokio::test]
async fn mqtt_tls_ca_cert() {
    let (f, (l, addr)) = (files(), silent_listener());
    let c = mqtt_config(addr, |m| m.tls_ca_cert = Some(f.missing.clone()));
    assert_missing(
        pubsub_mqtt::connect(&c).await,
        "mqtt.tls_ca_cert",
        &f.missing,
        &l,
    );
}

#[tokio::test]
async fn mqtt_tls_cert() {
    let (f, (l, addr)) = (files(), silent_listener());
    let c = mqtt_config(addr, |m| {
        m.tls_verify = false;
        m.tls_cert = Some(f.missing.clone());
        m.tls_key = Some(f.key.clone());
    });
    assert_missing(
        pubsub_mqtt::connect(&c).await,
        "mqtt.tls_cert",
        &f.missing,
        &l,
    );
}

#[tokio::test]
async fn mqtt_tls_key() {
    let (f, (l, addr)) = (files(), silent_listener());
    let c = mqtt_config(addr, |m| {
        m.tls_verify = false;
        m.tls_cert = Some(f.cert.clone());
        m.tls_key = Some(f.missing.clone());
    });
    assert_missing(
        pubsub_mqtt::connect(&c).await,
        "mqtt.tls_key",
        &f.missing,
        &l,
    );
}
