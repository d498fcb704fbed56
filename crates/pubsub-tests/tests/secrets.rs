//! Secrets of the Redis and MQTT backends never reach a log, an error or a
//! `Debug` / serialised config. Every password is a unique marker; the
//! backends connect with the right ones (proven by a round trip) and with
//! wrong ones (an `Auth` error), from the async and the blocking API, from
//! config fields, environment variables and URLs that carry `user:pass@`.
//! Everything `tracing` logs at every level is captured (one global
//! subscriber: this test binary has a single test), and every error's
//! `Display`, `Debug` and source chain is kept; no marker may appear.
//! NATS has the same test in `pubsub-nats/tests/auth.rs`.

use std::collections::HashMap;
use std::fmt::Debug;
use std::time::{Duration, Instant};

use pubsub_core::{blocking, Config, ErrorKind, PubSub, Result, Secret};
use pubsub_mqtt::MqttConfig;
use pubsub_redis::RedisConfig;
use pubsub_testkit::brokers::{Mosquitto, RedisServer};
use pubsub_testkit::logs;

const REDIS_ALICE: &str = "redis-alice-marker-5e81";
const REDIS_DEFAULT: &str = "redis-default-marker-0b4d";
const REDIS_WRONG: &str = "redis-wrong-marker-c7a2";
const REDIS_ENV: &str = "redis-env-marker-93f0";
const REDIS_NODE: &str = "redis-node-marker-2d6b";
const REDIS_NODE_ENV: &str = "redis-node-env-marker-71ce";
const MQTT_RIGHT: &str = "mqtt-right-marker-4a19";
const MQTT_WRONG: &str = "mqtt-wrong-marker-e302";
const MQTT_ENV: &str = "mqtt-env-marker-6fd7";
const MQTT_URL: &str = "mqtt-url-marker-18b5";
const MQTT_URL_ENV: &str = "mqtt-url-env-marker-ad40";
const NATS_LIST_ENV: &str = "nats-list-env-marker-39e6";

const MARKERS: &[&str] = &[
    REDIS_ALICE,
    REDIS_DEFAULT,
    REDIS_WRONG,
    REDIS_ENV,
    REDIS_NODE,
    REDIS_NODE_ENV,
    MQTT_RIGHT,
    MQTT_WRONG,
    MQTT_ENV,
    MQTT_URL,
    MQTT_URL_ENV,
    NATS_LIST_ENV,
];

/// Everything shown to a user: configs, errors, handles.
#[derive(Default)]
struct Shown(String);

impl Shown {
    fn config(&mut self, c: &Config) {
        self.0.push_str(&format!(
            "{c:?}\n{c:#?}\n{}\n",
            serde_json::to_string(c).expect("a config serialises")
        ));
    }

    fn debug(&mut self, d: &dyn Debug) {
        self.0.push_str(&format!("{d:?}\n"));
    }

    /// An error's Display, Debug and every source in its chain.
    fn error(&mut self, e: &pubsub_core::Error) {
        self.0.push_str(&format!("{e}\n{e:?}\n{e:#?}\n"));
        let mut cur = std::error::Error::source(e);
        while let Some(s) = cur {
            self.0.push_str(&format!("{s}\n{s:?}\n"));
            cur = s.source();
        }
    }

    fn result<T>(&mut self, r: &Result<T>) {
        if let Err(e) = r {
            self.error(e);
        }
    }
}

fn env_config(pairs: &[(&str, &str)]) -> Result<Config> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::loader().env(map).no_default_file().load()
}

/// Connect, subscribe, publish, receive the message back, close.
async fn round_trip(shown: &mut Shown, config: &Config, topic: &str) -> Result<()> {
    shown.config(config);
    let ps = PubSub::connect(config).await;
    shown.result(&ps);
    let ps = ps?;
    shown.debug(&ps);
    shown.debug(&ps.broker_info());
    ps.subscribe(topic).await?;
    ps.publish(topic, "secret-free").await?;
    let m = ps.recv_timeout(Duration::from_secs(10)).await?;
    assert!(m.is_some(), "{}: the message comes back", ps.backend_name());
    ps.close().await
}

/// A connect that must be refused with `kind`, promptly, from the async
/// and the blocking API.
async fn refused(shown: &mut Shown, config: &Config, kind: ErrorKind) {
    shown.config(config);
    let t0 = Instant::now();
    let e = PubSub::connect(config)
        .await
        .expect_err("wrong credentials are refused");
    assert_eq!(e.kind(), kind, "{e}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    shown.error(&e);
    let c = config.clone();
    let e = tokio::task::spawn_blocking(move || blocking::PubSub::connect(&c))
        .await
        .expect("no panic")
        .expect_err("wrong credentials are refused (blocking)");
    assert_eq!(e.kind(), kind, "{e}");
    shown.error(&e);
}

fn redis_config(server: &RedisServer) -> Config {
    let mut c = Config::default();
    c.backend = "redis".into();
    c.connect_timeout = Duration::from_secs(3);
    let redis = c.section_mut::<RedisConfig>().unwrap();
    redis.host = "127.0.0.1".into();
    redis.port = server.port();
    c
}

fn mqtt_config(broker: &Mosquitto) -> Config {
    let mut c = Config::default();
    c.backend = "mqtt".into();
    c.connect_timeout = Duration::from_secs(3);
    let mqtt = c.section_mut::<MqttConfig>().unwrap();
    mqtt.url = Some(broker.url());
    mqtt.reconnect_delay_max = Duration::from_millis(300);
    c
}

async fn redis_cases(shown: &mut Shown) {
    let mut server = tokio::task::block_in_place(|| {
        RedisServer::builder()
            .acl_user("alice", REDIS_ALICE)
            .arg("--requirepass")
            .arg(REDIS_DEFAULT)
            .start()
    });
    let port = server.port().to_string();

    // ACL user, both modes; then the `default` user by password alone.
    for mode in [
        pubsub_redis::RedisMode::PubSub,
        pubsub_redis::RedisMode::Streams,
    ] {
        let mut c = redis_config(&server);
        let redis = c.section_mut::<RedisConfig>().unwrap();
        redis.mode = mode;
        redis.username = Some("alice".into());
        redis.password = Some(Secret::new(REDIS_ALICE));
        round_trip(shown, &c, "secrets.redis")
            .await
            .expect("ACL user with the right password");
        c.section_mut::<RedisConfig>().unwrap().password = Some(Secret::new(REDIS_WRONG));
        refused(shown, &c, ErrorKind::Auth).await;
    }
    let mut c = redis_config(&server);
    c.section_mut::<RedisConfig>().unwrap().password = Some(Secret::new(REDIS_DEFAULT));
    round_trip(shown, &c, "secrets.redis.default")
        .await
        .expect("default user with the right password");
    c.section_mut::<RedisConfig>().unwrap().password = Some(Secret::new(REDIS_WRONG));
    refused(shown, &c, ErrorKind::Auth).await;

    // From the Python original's environment variables.
    let c = env_config(&[
        ("MSIGHT_PUBSUB_BACKEND", "redis"),
        ("MSIGHT_REDIS_MESSAGE_BROKER_HOST", "127.0.0.1"),
        ("MSIGHT_REDIS_MESSAGE_BROKER_PORT", port.as_str()),
        ("MSIGHT_REDIS_MESSAGE_BROKER_USERNAME", "alice"),
        ("MSIGHT_REDIS_MESSAGE_BROKER_PASSWORD", REDIS_ENV),
    ])
    .expect("a valid environment");
    refused(shown, &c, ErrorKind::Auth).await;

    // Credentials in cluster node addresses, well-formed or not, from the
    // config and from the environment.
    for node in [
        format!("redis://alice:{REDIS_NODE}@127.0.0.1:{port}"),
        format!("alice:{REDIS_NODE}@127.0.0.1:{port}"),
        format!("redis://alice:{REDIS_NODE}@127.0.0.1:bad"),
    ] {
        let mut c = redis_config(&server);
        let redis = c.section_mut::<RedisConfig>().unwrap();
        redis.cluster = true;
        redis.cluster_nodes = vec![node];
        shown.config(&c);
        let r = PubSub::connect(&c).await.map(|_| ());
        shown.result(&r);
        let e = r.expect_err("credentials in a node address are refused");
        assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
    }
    for value in [
        format!("['redis://alice:{REDIS_NODE_ENV}@127.0.0.1:{port}'"),
        format!("redis://alice:{REDIS_NODE_ENV}@127.0.0.1:{port},,b:1"),
        format!("['redis://alice:{REDIS_NODE_ENV}@127.0.0.1:{port}']"),
    ] {
        let r = env_config(&[
            ("MSIGHT_PUBSUB_BACKEND", "redis"),
            ("MSIGHT_REDIS_MESSAGE_BROKER_USE_CLUSTER", "true"),
            ("MSIGHT_REDIS_MESSAGE_BROKER_CLUSTER_NODES", value.as_str()),
        ]);
        let r = match r {
            Ok(c) => {
                shown.config(&c);
                PubSub::connect(&c).await.map(|_| ())
            }
            Err(e) => Err(e),
        };
        shown.result(&r);
        assert!(r.is_err(), "{value}");
    }

    // A connection lost and found again logs, without the password.
    let mut c = redis_config(&server);
    let redis = c.section_mut::<RedisConfig>().unwrap();
    redis.username = Some("alice".into());
    redis.password = Some(Secret::new(REDIS_ALICE));
    let ps = PubSub::connect(&c).await.expect("connect");
    ps.subscribe("secrets.redis.restart")
        .await
        .expect("subscribe");
    tokio::task::block_in_place(|| server.restart());
    let t0 = Instant::now();
    let mut back = false;
    while t0.elapsed() < Duration::from_secs(15) {
        let _ = ps.publish("secrets.redis.restart", "again").await;
        if let Ok(Some(_)) = ps.recv_timeout(Duration::from_millis(300)).await {
            back = true;
            break;
        }
    }
    assert!(back, "the redis handle came back after the restart");
    shown.debug(&ps);
    let r = ps.close().await;
    shown.result(&r);
}

async fn mqtt_cases(shown: &mut Shown) {
    let mut broker = tokio::task::block_in_place(|| {
        Mosquitto::builder()
            .password_file("alice", MQTT_RIGHT)
            .start()
    });
    let port = broker.port().to_string();

    for qos in [0, 1] {
        let mut c = mqtt_config(&broker);
        let mqtt = c.section_mut::<MqttConfig>().unwrap();
        mqtt.qos = qos;
        mqtt.username = Some("alice".into());
        mqtt.password = Some(Secret::new(MQTT_RIGHT));
        round_trip(shown, &c, "secrets/mqtt")
            .await
            .expect("the right password");
        c.section_mut::<MqttConfig>().unwrap().password = Some(Secret::new(MQTT_WRONG));
        refused(shown, &c, ErrorKind::Auth).await;
    }

    // From the environment.
    let url = broker.url();
    let c = env_config(&[
        ("MSIGHT_PUBSUB_BACKEND", "mqtt"),
        ("MSIGHT_MQTT_URL", url.as_str()),
        ("MSIGHT_MQTT_USERNAME", "alice"),
        ("MSIGHT_MQTT_PASSWORD", MQTT_ENV),
    ])
    .expect("a valid environment");
    refused(shown, &c, ErrorKind::Auth).await;

    // Credentials in the URL are refused, without echoing them.
    for url in [
        format!("mqtt://alice:{MQTT_URL}@127.0.0.1:{port}"),
        format!("mqtt://alice:{MQTT_URL}@127.0.0.1:bad"),
        format!("http://alice:{MQTT_URL}@127.0.0.1:{port}"),
    ] {
        let mut c = mqtt_config(&broker);
        c.section_mut::<MqttConfig>().unwrap().url = Some(url.clone());
        shown.config(&c);
        let r = PubSub::connect(&c).await.map(|_| ());
        shown.result(&r);
        let e = r.expect_err(&url);
        assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
    }
    for url in [
        format!("mqtt://alice:{MQTT_URL_ENV}@127.0.0.1:{port}"),
        format!("mqtt://alice:{MQTT_URL_ENV}@127.0.0.1:{port}/x?y"),
        format!("alice:{MQTT_URL_ENV}@127.0.0.1:{port}"),
    ] {
        let r = env_config(&[
            ("MSIGHT_PUBSUB_BACKEND", "mqtt"),
            ("MSIGHT_MQTT_URL", url.as_str()),
        ]);
        shown.result(&r);
        assert!(r.is_err(), "{url}");
    }

    // A connection lost and found again logs, without the password.
    let mut c = mqtt_config(&broker);
    let mqtt = c.section_mut::<MqttConfig>().unwrap();
    mqtt.username = Some("alice".into());
    mqtt.password = Some(Secret::new(MQTT_RIGHT));
    let ps = PubSub::connect(&c).await.expect("connect");
    ps.subscribe("secrets/mqtt/restart")
        .await
        .expect("subscribe");
    tokio::task::block_in_place(|| broker.restart());
    let t0 = Instant::now();
    let mut back = false;
    while t0.elapsed() < Duration::from_secs(15) {
        let _ = ps.publish("secrets/mqtt/restart", "again").await;
        if let Ok(Some(_)) = ps.recv_timeout(Duration::from_millis(300)).await {
            back = true;
            break;
        }
    }
    assert!(back, "the MQTT handle came back after the restart");
    shown.debug(&ps);
    let r = ps.close().await;
    shown.result(&r);
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_and_mqtt_secrets_never_reach_logs_errors_or_debug() {
    logs::capture();
    pubsub_redis::register();
    pubsub_mqtt::register();
    pubsub_nats::register();
    let mut shown = Shown::default();
    redis_cases(&mut shown).await;
    mqtt_cases(&mut shown).await;
    // A malformed server list with credentials (core's list parser, shared
    // with the Redis cluster nodes).
    let r = env_config(&[
        ("MSIGHT_PUBSUB_BACKEND", "nats"),
        (
            "MSIGHT_NATS_SERVERS",
            format!("['nats://alice:{NATS_LIST_ENV}@127.0.0.1:4222'").as_str(),
        ),
    ]);
    shown.result(&r);
    assert!(r.is_err());

    let logs = logs::captured();
    assert!(!logs.is_empty(), "logs were captured");
    let mut leaks = Vec::new();
    for m in MARKERS {
        for l in logs.lines().filter(|l| l.contains(m)).take(3) {
            leaks.push(format!("log: {l}"));
        }
        for l in shown.0.lines().filter(|l| l.contains(m)).take(3) {
            leaks.push(format!("shown: {l}"));
        }
    }
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
    println!(
        "checked {} markers against {} bytes of logs and {} bytes of errors/Debug/JSON",
        MARKERS.len(),
        logs.len(),
        shown.0.len()
    );
}
