//! Bad input, table-driven: each case states the input, the error kind it
//! must give and a fragment of the message, and nothing may panic.
//! Broker-dependent cases run against a real `nats-server`, `redis-server`
//! and `mosquitto`. Every backend is registered (the registry is global to
//! this test binary), except for the very first case, which runs before.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use futures::FutureExt;
use pubsub_core::MemoryConfig;
use pubsub_core::{blocking, Config, ErrorKind, PubSub, Result, Secret};
use pubsub_mqtt::MqttConfig;
use pubsub_nats::NatsConfig;
use pubsub_redis::RedisConfig;
use pubsub_testkit::brokers::{Mosquitto, NatsServer, RedisServer};
use pubsub_testkit::certs::TestPki;

type Run = Box<dyn Fn() -> Pin<Box<dyn Future<Output = Result<()>> + Send>> + Send + Sync>;

struct Case {
    input: String,
    /// `None`: the input is valid and must succeed (the edge next to a bad one).
    kind: Option<ErrorKind>,
    fragment: &'static str,
    run: Run,
}

fn case<F, Fut>(input: impl Into<String>, kind: ErrorKind, fragment: &'static str, f: F) -> Case
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    Case {
        input: input.into(),
        kind: Some(kind),
        fragment,
        run: Box::new(move || Box::pin(f())),
    }
}

/// A valid input right at a limit: it must succeed.
fn valid(c: Case) -> Case {
    Case { kind: None, ..c }
}

fn env_config(pairs: &[(&str, &str)]) -> Result<Config> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::loader().env(map).no_default_file().load()
}

/// Every backend of the workspace in the registry.
fn register_all() {
    pubsub_nats::register();
    pubsub_redis::register();
    pubsub_mqtt::register();
}

async fn connect(config: Config) -> Result<()> {
    register_all();
    let ps = PubSub::connect(&config).await?;
    ps.close().await
}

/// Env vars, then connect with them (so backend-level checks run too).
fn env_case(
    pairs: &'static [(&'static str, &'static str)],
    kind: ErrorKind,
    fragment: &'static str,
) -> Case {
    let shown = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join(" ");
    case(format!("env {shown}"), kind, fragment, move || async move {
        connect(env_config(pairs)?).await
    })
}

fn file_case(
    dir: &std::path::Path,
    name: &str,
    text: &'static str,
    kind: ErrorKind,
    fragment: &'static str,
) -> Case {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    case(
        format!("file {name}: {text:?}"),
        kind,
        fragment,
        move || {
            let path = path.clone();
            async move { Config::from_file(&path).map(|_| ()) }
        },
    )
}

fn nats_config(url: &str) -> Config {
    let mut c = Config::default();
    c.backend = "nats".into();
    c.connect_timeout = Duration::from_secs(3);
    c.section_mut::<NatsConfig>().unwrap().servers = vec![url.to_string()];
    c
}

/// A config change, then connect to NATS.
fn nats_case(
    url: &str,
    input: impl Into<String>,
    kind: ErrorKind,
    fragment: &'static str,
    change: impl Fn(&mut Config) + Send + Sync + 'static,
) -> Case {
    let url = url.to_string();
    case(input, kind, fragment, move || {
        let mut c = nats_config(&url);
        change(&mut c);
        async move { connect(c).await }
    })
}

fn memory_config(max_payload: usize) -> Config {
    let mut c = Config::default();
    let memory = c.section_mut::<MemoryConfig>().unwrap();
    memory.namespace = "bad-input".into();
    memory.max_payload = max_payload;
    c
}

/// Publish `payload_len` bytes to `topic` on a fresh handle of `config`.
fn publish_case(
    input: impl Into<String>,
    config: Config,
    topic: &'static str,
    payload_len: usize,
    kind: ErrorKind,
    fragment: &'static str,
) -> Case {
    case(input, kind, fragment, move || {
        let config = config.clone();
        async move {
            register_all();
            let ps = PubSub::connect(&config).await?;
            let r = ps.publish(topic, vec![1u8; payload_len]).await;
            ps.close().await?;
            r
        }
    })
}

fn subscribe_case(
    input: impl Into<String>,
    config: Config,
    topic: &'static str,
    kind: ErrorKind,
    fragment: &'static str,
) -> Case {
    case(input, kind, fragment, move || {
        let config = config.clone();
        async move {
            register_all();
            let ps = PubSub::connect(&config).await?;
            let r = ps.subscribe(topic).await;
            ps.close().await?;
            r
        }
    })
}

/// A config change, then connect (any backend).
fn config_case(
    base: Config,
    input: impl Into<String>,
    kind: ErrorKind,
    fragment: &'static str,
    change: impl Fn(&mut Config) + Send + Sync + 'static,
) -> Case {
    case(input, kind, fragment, move || {
        let mut c = base.clone();
        change(&mut c);
        async move { connect(c).await }
    })
}

fn redis_config(port: u16) -> Config {
    let mut c = Config::default();
    c.backend = "redis".into();
    c.connect_timeout = Duration::from_secs(3);
    let redis = c.section_mut::<RedisConfig>().unwrap();
    redis.host = "127.0.0.1".into();
    redis.port = port;
    redis.max_payload = 4096;
    c
}

/// `mqtt.max_packet_size` of the MQTT cases: the largest payload is this
/// minus `MQTT_PACKET_OVERHEAD` (1,040), i.e. 3,056 bytes.
const MQTT_PACKET: usize = 4096;

fn mqtt_config(url: &str) -> Config {
    let mut c = Config::default();
    c.backend = "mqtt".into();
    c.connect_timeout = Duration::from_secs(3);
    let mqtt = c.section_mut::<MqttConfig>().unwrap();
    mqtt.url = Some(url.to_string());
    mqtt.max_packet_size = MQTT_PACKET;
    c
}

/// `recv()` (async) on a fresh handle that never subscribed.
fn recv_unsubscribed_case(input: impl Into<String>, config: Config) -> Case {
    case(
        input,
        ErrorKind::NotSubscribed,
        "call subscribe(topic)",
        move || {
            let config = config.clone();
            async move {
                register_all();
                let ps = PubSub::connect(&config).await?;
                let r = ps.recv().await.map(|_| ());
                ps.close().await?;
                r
            }
        },
    )
}

/// `listen()` (blocking) on a fresh handle that never subscribed.
fn listen_unsubscribed_case(input: impl Into<String>, config: Config) -> Case {
    case(
        input,
        ErrorKind::NotSubscribed,
        "call subscribe(topic)",
        move || {
            let config = config.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    register_all();
                    let ps = blocking::PubSub::connect(&config)?;
                    let r = ps.listen().map(|_| ());
                    ps.close()?;
                    r
                })
                .await
                .expect("no panic")
            }
        },
    )
}

/// One call after `close` (async): it must fail with `Closed`.
fn after_close_case(input: impl Into<String>, config: Config, call: &'static str) -> Case {
    case(input, ErrorKind::Closed, "closed", move || {
        let config = config.clone();
        async move {
            register_all();
            let ps = PubSub::connect(&config).await?;
            ps.subscribe("after.close").await?;
            ps.close().await?;
            match call {
                "publish" => ps.publish("after.close", "x").await,
                "subscribe" => ps.subscribe("after.close.2").await,
                "unsubscribe" => ps.unsubscribe("after.close").await,
                "flush" => ps.flush().await,
                "recv" => ps.recv().await.map(|_| ()),
                other => panic!("unknown call {other}"),
            }
        }
    })
}

/// Subscribe (blocking API) after `close`: `Closed`.
fn blocking_after_close_case(input: impl Into<String>, config: Config) -> Case {
    case(input, ErrorKind::Closed, "closed", move || {
        let config = config.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                register_all();
                let ps = blocking::PubSub::connect(&config)?;
                ps.close()?;
                ps.subscribe("after.close")
            })
            .await
            .expect("no panic")
        }
    })
}

/// Subscribe with an explicit group.
fn group_subscribe_case(
    input: impl Into<String>,
    config: Config,
    group: &'static str,
    kind: ErrorKind,
    fragment: &'static str,
) -> Case {
    case(input, kind, fragment, move || {
        let config = config.clone();
        async move {
            register_all();
            let ps = PubSub::connect(&config).await?;
            let r = ps.subscribe_in("grouped", Some(group)).await;
            ps.close().await?;
            r
        }
    })
}

/// The three TLS file errors of one backend section (a CA file that does
/// not exist, a CA file that is not PEM, a client key that does not match
/// its certificate), each applied by `set(config, ca, cert, key)`.
fn tls_file_cases(
    base: &Config,
    section: &'static str,
    pki: &TestPki,
    dir: &std::path::Path,
    set: fn(&mut Config, PathBuf, Option<(PathBuf, PathBuf)>),
) -> Vec<Case> {
    let missing = dir.join(format!("{section}-nope.pem"));
    let not_pem = write(dir, &format!("{section}-notpem.pem"), "not a certificate");
    let (ca, cert, other_key) = (
        pki.ca_cert.clone(),
        pki.client_cert.clone(),
        pki.other_client_key.clone(),
    );
    let (missing_fragment, not_pem_fragment, key_fragment) = match section {
        "redis" => (
            "redis.tls_ca_cert: file",
            "redis.tls_ca_cert",
            "redis.tls_key: the client key does not match",
        ),
        _ => (
            "mqtt.tls_ca_cert: file",
            "mqtt.tls_ca_cert",
            "mqtt.tls_key: the client key does not match",
        ),
    };
    vec![
        config_case(
            base.clone(),
            format!("{section}.tls_ca_cert = a file that does not exist"),
            ErrorKind::InvalidConfig,
            missing_fragment,
            move |c| set(c, missing.clone(), None),
        ),
        config_case(
            base.clone(),
            format!("{section}.tls_ca_cert = a file that is not PEM"),
            ErrorKind::Tls,
            not_pem_fragment,
            move |c| set(c, not_pem.clone(), None),
        ),
        config_case(
            base.clone(),
            format!("{section}: client key that does not match its certificate"),
            ErrorKind::Tls,
            key_fragment,
            move |c| set(c, ca.clone(), Some((cert.clone(), other_key.clone()))),
        ),
    ]
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_table() {
    let (server, redis, mosquitto) = tokio::task::block_in_place(|| {
        (
            NatsServer::builder().max_payload(4096).start(),
            RedisServer::start(),
            Mosquitto::start(),
        )
    });
    let url = server.url();
    let rport = redis.port();
    let murl = mosquitto.url();
    let pki = TestPki::generate();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    use ErrorKind::*;

    let mut cases = vec![
        // Backend choice. This case must stay first: it runs before any
        // case registers the backends, so `mqtt` is not registered yet.
        case(
            "env MSIGHT_PUBSUB_BACKEND=\"mqtt\" before pubsub_mqtt::register()",
            InvalidConfig,
            "add the crate `pubsub-mqtt`",
            || async {
                let c = env_config(&[("MSIGHT_PUBSUB_BACKEND", "mqtt")])?;
                PubSub::connect(&c).await.map(|_| ())
            },
        ),
        env_case(
            &[("MSIGHT_PUBSUB_BACKEND", "kafka")],
            InvalidConfig,
            "registered: memory, mqtt, nats, redis",
        ),
        env_case(
            &[("MSIGHT_PUBSUB_BACKEND", "nats-jetstream")],
            InvalidConfig,
            "backend: \"nats-jetstream\" is not registered",
        ),
        // Server lists and URLs.
        env_case(
            &[
                ("MSIGHT_PUBSUB_BACKEND", "nats"),
                ("MSIGHT_NATS_SERVERS", "['nats://a:4222'"),
            ],
            InvalidConfig,
            "Python list literal",
        ),
        env_case(
            &[
                ("MSIGHT_PUBSUB_BACKEND", "nats"),
                ("MSIGHT_NATS_SERVERS", "[]"),
            ],
            InvalidConfig,
            "MSIGHT_NATS_SERVERS",
        ),
        env_case(
            &[
                ("MSIGHT_PUBSUB_BACKEND", "nats"),
                ("MSIGHT_NATS_SERVERS", "nats://a:1,,nats://b:2"),
            ],
            InvalidConfig,
            "comma-separated",
        ),
        env_case(
            &[
                ("MSIGHT_PUBSUB_BACKEND", "nats"),
                ("MSIGHT_NATS_SERVERS", "[nats://a:1]"),
            ],
            InvalidConfig,
            "MSIGHT_NATS_SERVERS",
        ),
        nats_case(
            &url,
            "nats.servers = [\"http://h:4222\"]",
            InvalidConfig,
            "unknown URL scheme \"http\"",
            |c| c.section_mut::<NatsConfig>().unwrap().servers = vec!["http://h:4222".into()],
        ),
        nats_case(
            &url,
            "nats.servers = [\"nats://h:99999\"]",
            InvalidConfig,
            "is not a number from 1 to 65535",
            |c| c.section_mut::<NatsConfig>().unwrap().servers = vec!["nats://h:99999".into()],
        ),
        nats_case(
            &url,
            "nats.servers = [\"nats://h:port\"]",
            InvalidConfig,
            "nats.servers[0]",
            |c| c.section_mut::<NatsConfig>().unwrap().servers = vec!["nats://h:port".into()],
        ),
        nats_case(
            &url,
            "nats.servers = [\"nats://:4222\"]",
            InvalidConfig,
            "expected a URL",
            |c| c.section_mut::<NatsConfig>().unwrap().servers = vec!["nats://:4222".into()],
        ),
        nats_case(
            &url,
            "nats.servers = [\"nats://a b:1\"]",
            InvalidConfig,
            "nats.servers[0]",
            |c| c.section_mut::<NatsConfig>().unwrap().servers = vec!["nats://a b:1".into()],
        ),
        nats_case(
            &url,
            "nats.servers = []",
            InvalidConfig,
            "at least one server",
            |c| c.section_mut::<NatsConfig>().unwrap().servers.clear(),
        ),
        // Numbers, booleans, durations.
        env_case(
            &[("MSIGHT_NATS_USE_TLS", "maybe")],
            InvalidConfig,
            "expected true/false",
        ),
        env_case(
            &[("MSIGHT_PUBSUB_BUFFER_CAPACITY", "-5")],
            InvalidConfig,
            "whole number",
        ),
        env_case(
            &[("MSIGHT_PUBSUB_BUFFER_CAPACITY", "99999999999999999999999")],
            InvalidConfig,
            "MSIGHT_PUBSUB_BUFFER_CAPACITY",
        ),
        env_case(
            &[("MSIGHT_PUBSUB_BUFFER_CAPACITY", "0")],
            InvalidConfig,
            "buffer.capacity",
        ),
        env_case(
            &[("MSIGHT_PUBSUB_CONNECT_TIMEOUT", "soon")],
            InvalidConfig,
            "MSIGHT_PUBSUB_CONNECT_TIMEOUT",
        ),
        env_case(
            &[("MSIGHT_PUBSUB_CONNECT_TIMEOUT", "0")],
            InvalidConfig,
            "connect_timeout",
        ),
        env_case(
            &[("MSIGHT_PUBSUB_OVERFLOW", "explode")],
            InvalidConfig,
            "drop_oldest, drop_newest or block",
        ),
        env_case(
            &[("MSIGHT_PUBSUB_GROUP_ID", "a b")],
            InvalidConfig,
            "group_id",
        ),
        // Config files.
        file_case(
            d,
            "syntax.toml",
            "backend = \"nats\"\n[nats\nservers = 1\n",
            InvalidConfig,
            "line 2",
        ),
        file_case(
            d,
            "syntax.yaml",
            "backend: nats\nnats:\n  servers: [a\n  tls: true\n",
            InvalidConfig,
            "line",
        ),
        file_case(
            d,
            "syntax.json",
            "{\"backend\": \"nats\",\n \"nats\": {\"tls\": tru}}",
            InvalidConfig,
            "line 2",
        ),
        file_case(
            d,
            "type.toml",
            "[buffer]\ncapacity = \"many\"\n",
            InvalidConfig,
            "capacity",
        ),
        file_case(
            d,
            "type2.toml",
            "[nats]\ntls = \"sometimes\"\n",
            InvalidConfig,
            "tls",
        ),
        file_case(
            d,
            "unknown.toml",
            "[nats]\nserver = [\"nats://a:1\"]\n",
            InvalidConfig,
            "unknown field `server`",
        ),
        file_case(d, "conf.ini", "x = 1", InvalidConfig, "unknown format"),
        case(
            "file that does not exist",
            InvalidConfig,
            "does not exist",
            {
                let p = d.join("missing.toml");
                move || {
                    let p = p.clone();
                    async move { Config::from_file(&p).map(|_| ()) }
                }
            },
        ),
        // TLS files.
        nats_case(
            &url,
            "nats.tls_ca_cert = a file that does not exist",
            InvalidConfig,
            "nats.tls_ca_cert: file",
            {
                let p = d.join("nope.pem");
                move |c| {
                    let nats = c.section_mut::<NatsConfig>().unwrap();
                    nats.tls = true;
                    nats.tls_ca_cert = Some(p.clone());
                }
            },
        ),
        nats_case(
            &url,
            "nats.tls_ca_cert = a file that is not PEM",
            Tls,
            "holds no PEM certificate",
            {
                let p = write(d, "notpem.pem", "just text");
                move |c| {
                    let nats = c.section_mut::<NatsConfig>().unwrap();
                    nats.tls = true;
                    nats.tls_ca_cert = Some(p.clone());
                }
            },
        ),
        nats_case(
            &url,
            "client key that does not match its certificate",
            Tls,
            "does not match",
            {
                let (ca, cert, key) = (
                    pki.ca_cert.clone(),
                    pki.client_cert.clone(),
                    pki.other_client_key.clone(),
                );
                move |c| {
                    let nats = c.section_mut::<NatsConfig>().unwrap();
                    nats.tls = true;
                    nats.tls_ca_cert = Some(ca.clone());
                    nats.tls_cert = Some(cert.clone());
                    nats.tls_key = Some(key.clone());
                }
            },
        ),
        nats_case(
            &url,
            "client certificate without key",
            InvalidConfig,
            "nats.tls_key",
            {
                let cert = pki.client_cert.clone();
                move |c| {
                    let nats = c.section_mut::<NatsConfig>().unwrap();
                    nats.tls = true;
                    nats.tls_cert = Some(cert.clone());
                }
            },
        ),
        nats_case(
            &url,
            "client key file is a certificate",
            Tls,
            "nats.tls_key",
            {
                let (ca, cert) = (pki.ca_cert.clone(), pki.client_cert.clone());
                move |c| {
                    let nats = c.section_mut::<NatsConfig>().unwrap();
                    nats.tls = true;
                    nats.tls_ca_cert = Some(ca.clone());
                    nats.tls_cert = Some(cert.clone());
                    nats.tls_key = Some(cert.clone());
                }
            },
        ),
        // Credentials that cannot go together or cannot be used.
        nats_case(
            &url,
            "nats.password without nats.user",
            InvalidConfig,
            "needs a user",
            |c| c.section_mut::<NatsConfig>().unwrap().password = Some(Secret::new("p")),
        ),
        nats_case(
            &url,
            "nats.user_jwt without nats.nkeys_seed",
            InvalidConfig,
            "needs the NKey seed",
            |c| c.section_mut::<NatsConfig>().unwrap().user_jwt = Some(Secret::new("j")),
        ),
        nats_case(
            &url,
            "nats.token and nats.user",
            InvalidConfig,
            "choose one authentication method",
            |c| {
                let nats = c.section_mut::<NatsConfig>().unwrap();
                nats.token = Some(Secret::new("t"));
                nats.user = Some("u".into());
            },
        ),
        nats_case(
            &url,
            "nats.nkeys_seed that is not a seed",
            InvalidConfig,
            "is not a valid NKey seed",
            |c| c.section_mut::<NatsConfig>().unwrap().nkeys_seed = Some(Secret::new("SUXXXX")),
        ),
        nats_case(
            &url,
            "nats.user_credentials that does not exist",
            InvalidConfig,
            "nats.user_credentials",
            {
                let p = d.join("none.creds");
                move |c| c.section_mut::<NatsConfig>().unwrap().user_credentials = Some(p.clone())
            },
        ),
        nats_case(
            &url,
            "credentials in the URL and nats.token",
            InvalidConfig,
            "another authentication method",
            |c| {
                let nats = c.section_mut::<NatsConfig>().unwrap();
                nats.servers = vec!["nats://u:p@127.0.0.1:1".into()];
                nats.token = Some(Secret::new("t"));
            },
        ),
        // Topics.
        publish_case(
            "publish to an empty topic (memory)",
            memory_config(1024),
            "",
            1,
            InvalidTopic,
            "must not be empty",
        ),
        publish_case(
            "publish to \"a b\" (memory)",
            memory_config(1024),
            "a b",
            1,
            InvalidTopic,
            "whitespace",
        ),
        publish_case(
            "publish to \"a\\0b\" (memory)",
            memory_config(1024),
            "a\0b",
            1,
            InvalidTopic,
            "control",
        ),
        publish_case(
            "publish to \"a.*\" (nats)",
            nats_config(&url),
            "a.*",
            1,
            InvalidTopic,
            "wildcard",
        ),
        publish_case(
            "publish to \"a.>\" (nats)",
            nats_config(&url),
            "a.>",
            1,
            InvalidTopic,
            "wildcard",
        ),
        publish_case(
            "publish to \"a..b\" (nats)",
            nats_config(&url),
            "a..b",
            1,
            InvalidTopic,
            "token is empty",
        ),
        subscribe_case(
            "subscribe to \"a.>.b\" (nats)",
            nats_config(&url),
            "a.>.b",
            InvalidTopic,
            "last token",
        ),
        subscribe_case(
            "subscribe to a 1,025-byte topic (memory)",
            memory_config(1024),
            Box::leak("t".repeat(1025).into_boxed_str()),
            InvalidTopic,
            "limit is 1024",
        ),
        // Payload sizes.
        valid(publish_case(
            "memory payload exactly memory.max_payload",
            memory_config(1024),
            "p",
            1024,
            PayloadTooLarge,
            "",
        )),
        valid(publish_case(
            "nats payload exactly the server's max_payload",
            nats_config(&url),
            "p",
            4096,
            PayloadTooLarge,
            "",
        )),
        publish_case(
            "memory payload one byte over memory.max_payload",
            memory_config(1024),
            "p",
            1025,
            PayloadTooLarge,
            "limit of 1024 bytes",
        ),
        publish_case(
            "nats payload one byte over the server's max_payload",
            nats_config(&url),
            "p",
            4097,
            PayloadTooLarge,
            "limit of 4096 bytes",
        ),
        // Misuse of the API.
        case(
            "listen() with no subscription (blocking)",
            NotSubscribed,
            "call subscribe(topic)",
            || async {
                tokio::task::spawn_blocking(|| {
                    let ps = blocking::PubSub::connect(&memory_config(1024))?;
                    ps.listen().map(|_| ())
                })
                .await
                .expect("no panic")
            },
        ),
        case(
            "recv() with no subscription (async)",
            NotSubscribed,
            "no subscription is active",
            || async {
                let ps = PubSub::connect(&memory_config(1024)).await?;
                ps.recv().await.map(|_| ())
            },
        ),
        case(
            "unsubscribe from a topic never subscribed",
            NotSubscribed,
            "is not subscribed",
            || async {
                let ps = PubSub::connect(&memory_config(1024)).await?;
                ps.unsubscribe("never").await
            },
        ),
        case("publish after close (nats)", Closed, "closed", {
            let url = url.clone();
            move || {
                let c = nats_config(&url);
                async move {
                    let ps = PubSub::connect_with(&pubsub_core::BackendFactory::of::<pubsub_nats::NatsBackend>(), &c).await?;
                    ps.close().await?;
                    ps.publish("x", "y").await
                }
            }
        }),
        case(
            "subscribe after close (memory, blocking)",
            Closed,
            "closed",
            || async {
                tokio::task::spawn_blocking(|| {
                    let ps = blocking::PubSub::connect(&memory_config(1024))?;
                    ps.close()?;
                    ps.subscribe("x")
                })
                .await
                .expect("no panic")
            },
        ),
        case("close twice", Closed, "closed", || async {
            let ps = PubSub::connect(&memory_config(1024)).await?;
            ps.close().await?;
            ps.close().await
        }),
        case(
            "memory.namespace empty",
            InvalidConfig,
            "memory.namespace",
            || async {
                let mut c = memory_config(1024);
                c.section_mut::<MemoryConfig>().unwrap().namespace.clear();
                PubSub::connect(&c).await.map(|_| ())
            },
        ),
        // ---------------------------------------------------------------
        // Redis.
        // ---------------------------------------------------------------
        env_case(
            &[
                ("MSIGHT_PUBSUB_BACKEND", "redis"),
                ("MSIGHT_REDIS_MESSAGE_BROKER_CLUSTER_NODES", "['a:7000', 'b:7001'"),
            ],
            InvalidConfig,
            "MSIGHT_REDIS_MESSAGE_BROKER_CLUSTER_NODES: expected a Python list literal like \"['host1:6379', 'host2:6379']\"",
        ),
        env_case(
            &[
                ("MSIGHT_PUBSUB_BACKEND", "redis"),
                ("MSIGHT_REDIS_MESSAGE_BROKER_CLUSTER_NODES", "a:7000,,b:7001"),
            ],
            InvalidConfig,
            "comma-separated list like \"host1:6379,host2:6379\"",
        ),
        env_case(
            &[
                ("MSIGHT_PUBSUB_BACKEND", "redis"),
                ("MSIGHT_REDIS_MESSAGE_BROKER_USE_CLUSTER", "true"),
                ("MSIGHT_REDIS_MESSAGE_BROKER_CLUSTER_NODES", "['a:7000', 'b:port']"),
            ],
            InvalidConfig,
            "redis.cluster_nodes[1]: port \"port\"",
        ),
        env_case(
            &[
                ("MSIGHT_PUBSUB_BACKEND", "redis"),
                ("MSIGHT_REDIS_MESSAGE_BROKER_CLUSTER_NODES", "a-host-without-port"),
            ],
            InvalidConfig,
            "expected \"host:port\"",
        ),
        env_case(
            &[
                ("MSIGHT_PUBSUB_BACKEND", "redis"),
                ("MSIGHT_REDIS_MESSAGE_BROKER_PORT", "http"),
            ],
            InvalidConfig,
            "MSIGHT_REDIS_MESSAGE_BROKER_PORT: expected a whole number",
        ),
        env_case(
            &[
                ("MSIGHT_PUBSUB_BACKEND", "redis"),
                ("MSIGHT_REDIS_MESSAGE_BROKER_PORT", "70000"),
            ],
            InvalidConfig,
            "MSIGHT_REDIS_MESSAGE_BROKER_PORT: 70000 is out of range",
        ),
        env_case(
            &[
                ("MSIGHT_PUBSUB_BACKEND", "redis"),
                ("MSIGHT_REDIS_MESSAGE_BROKER_DB", "zero"),
            ],
            InvalidConfig,
            "MSIGHT_REDIS_MESSAGE_BROKER_DB: expected a database number",
        ),
        env_case(
            &[
                ("MSIGHT_PUBSUB_BACKEND", "redis"),
                ("MSIGHT_REDIS_MESSAGE_BROKER_DB", "-1"),
            ],
            InvalidConfig,
            "redis.db: must be 0 or more",
        ),
        env_case(
            &[
                ("MSIGHT_PUBSUB_BACKEND", "redis"),
                ("MSIGHT_REDIS_MESSAGE_BROKER_DB", "99999999999999999999"),
            ],
            InvalidConfig,
            "MSIGHT_REDIS_MESSAGE_BROKER_DB",
        ),
        env_case(
            &[
                ("MSIGHT_PUBSUB_BACKEND", "redis"),
                ("MSIGHT_REDIS_MESSAGE_BROKER_MODE", "queue"),
            ],
            InvalidConfig,
            "expected \"pubsub\" or \"streams\"",
        ),
        // A group id alone connects (a publisher never uses it); the
        // subscription in the group is refused.
        valid(config_case(
            redis_config(rport),
            "group_id = \"g\" in redis pubsub mode, connect only",
            InvalidConfig,
            "",
            |c| c.group_id = Some("g".into()),
        )),
        subscribe_case(
            "group_id = \"g\" in redis pubsub mode, then subscribe",
            {
                let mut c = redis_config(rport);
                c.group_id = Some("g".into());
                c
            },
            "grouped",
            InvalidConfig,
            "set redis.mode = \"streams\"",
        ),
        group_subscribe_case(
            "subscribe_in(topic, Some(group)) in redis pubsub mode",
            redis_config(rport),
            "g",
            InvalidConfig,
            "has no groups",
        ),
        valid(publish_case(
            "redis payload exactly redis.max_payload",
            redis_config(rport),
            "p",
            4096,
            PayloadTooLarge,
            "",
        )),
        publish_case(
            "redis payload one byte over redis.max_payload",
            redis_config(rport),
            "p",
            4097,
            PayloadTooLarge,
            "limit of 4096 bytes",
        ),
        valid(publish_case(
            "redis streams payload exactly redis.max_payload",
            {
                let mut c = redis_config(rport);
                c.section_mut::<RedisConfig>().unwrap().mode = pubsub_redis::RedisMode::Streams;
                c
            },
            "p",
            4096,
            PayloadTooLarge,
            "",
        )),
        publish_case(
            "redis streams payload one byte over redis.max_payload",
            {
                let mut c = redis_config(rport);
                c.section_mut::<RedisConfig>().unwrap().mode = pubsub_redis::RedisMode::Streams;
                c
            },
            "p",
            4097,
            PayloadTooLarge,
            "limit of 4096 bytes",
        ),
        recv_unsubscribed_case("recv() with no subscription (redis, async)", redis_config(rport)),
        listen_unsubscribed_case(
            "listen() with no subscription (redis, blocking)",
            redis_config(rport),
        ),
        after_close_case("publish after close (redis)", redis_config(rport), "publish"),
        after_close_case("flush after close (redis)", redis_config(rport), "flush"),
        blocking_after_close_case("subscribe after close (redis, blocking)", redis_config(rport)),
        // ---------------------------------------------------------------
        // MQTT.
        // ---------------------------------------------------------------
        env_case(
            &[("MSIGHT_PUBSUB_BACKEND", "mqtt"), ("MSIGHT_MQTT_QOS", "3")],
            InvalidConfig,
            "MSIGHT_MQTT_QOS: expected 0, 1 or 2, got \"3\"",
        ),
        env_case(
            &[("MSIGHT_PUBSUB_BACKEND", "mqtt"), ("MSIGHT_MQTT_QOS", "one")],
            InvalidConfig,
            "MSIGHT_MQTT_QOS: expected 0, 1 or 2, got \"one\"",
        ),
        config_case(
            mqtt_config(&murl),
            "mqtt.qos = 3",
            InvalidConfig,
            "mqtt.qos: expected 0, 1 or 2, got 3",
            |c| c.section_mut::<MqttConfig>().unwrap().qos = 3,
        ),
        env_case(
            &[
                ("MSIGHT_PUBSUB_BACKEND", "mqtt"),
                ("MSIGHT_MQTT_URL", "amqp://broker:5672"),
            ],
            InvalidConfig,
            "MSIGHT_MQTT_URL: unknown URL scheme \"amqp\"",
        ),
        env_case(
            &[
                ("MSIGHT_PUBSUB_BACKEND", "mqtt"),
                ("MSIGHT_MQTT_URL", "mqtt://broker:99999"),
            ],
            InvalidConfig,
            "is not a number from 1 to 65535",
        ),
        env_case(
            &[("MSIGHT_PUBSUB_BACKEND", "mqtt"), ("MSIGHT_MQTT_PORT", "mqtt")],
            InvalidConfig,
            "MSIGHT_MQTT_PORT: expected a port number from 1 to 65535",
        ),
        config_case(
            mqtt_config(&murl),
            "mqtt.url = \"ws://127.0.0.1:1\"",
            InvalidConfig,
            "mqtt.url: unknown URL scheme \"ws\"",
            |c| c.section_mut::<MqttConfig>().unwrap().url = Some("ws://127.0.0.1:1".into()),
        ),
        publish_case(
            "publish to \"a/+\" (mqtt)",
            mqtt_config(&murl),
            "a/+",
            1,
            InvalidTopic,
            "wildcards `+` and `#` can be used in subscriptions only",
        ),
        publish_case(
            "publish to \"a/#\" (mqtt)",
            mqtt_config(&murl),
            "a/#",
            1,
            InvalidTopic,
            "wildcards `+` and `#` can be used in subscriptions only",
        ),
        subscribe_case(
            "subscribe to \"a/#/b\" (mqtt)",
            mqtt_config(&murl),
            "a/#/b",
            InvalidTopic,
            "must be the last level",
        ),
        subscribe_case(
            "subscribe to \"a+/b\" (mqtt)",
            mqtt_config(&murl),
            "a+/b",
            InvalidTopic,
            "must fill a whole topic level",
        ),
        valid(publish_case(
            "mqtt payload exactly the limit (max_packet_size 4096 - 1040)",
            mqtt_config(&murl),
            "p",
            MQTT_PACKET - pubsub_mqtt::MQTT_PACKET_OVERHEAD,
            PayloadTooLarge,
            "",
        )),
        publish_case(
            "mqtt payload one byte over the limit",
            mqtt_config(&murl),
            "p",
            MQTT_PACKET - pubsub_mqtt::MQTT_PACKET_OVERHEAD + 1,
            PayloadTooLarge,
            "limit of 3056 bytes",
        ),
        group_subscribe_case(
            "mqtt group with a '/' in it",
            mqtt_config(&murl),
            "a/b",
            InvalidConfig,
            "share name cannot contain",
        ),
        recv_unsubscribed_case("recv() with no subscription (mqtt, async)", mqtt_config(&murl)),
        listen_unsubscribed_case(
            "listen() with no subscription (mqtt, blocking)",
            mqtt_config(&murl),
        ),
        after_close_case("publish after close (mqtt)", mqtt_config(&murl), "publish"),
        after_close_case("unsubscribe after close (mqtt)", mqtt_config(&murl), "unsubscribe"),
        after_close_case("recv after close (mqtt)", mqtt_config(&murl), "recv"),
        blocking_after_close_case("subscribe after close (mqtt, blocking)", mqtt_config(&murl)),
    ];
    cases.extend(tls_file_cases(
        &redis_config(rport),
        "redis",
        &pki,
        d,
        |c, ca, client| {
            let redis = c.section_mut::<RedisConfig>().unwrap();
            redis.tls = true;
            redis.tls_ca_cert = Some(ca);
            if let Some((cert, key)) = client {
                let redis = c.section_mut::<RedisConfig>().unwrap();
                redis.tls_cert = Some(cert);
                redis.tls_key = Some(key);
            }
        },
    ));
    cases.extend(tls_file_cases(
        &mqtt_config(&format!("mqtts://127.0.0.1:{}", mosquitto.port())),
        "mqtt",
        &pki,
        d,
        |c, ca, client| {
            c.section_mut::<MqttConfig>().unwrap().tls_ca_cert = Some(ca);
            if let Some((cert, key)) = client {
                let mqtt = c.section_mut::<MqttConfig>().unwrap();
                mqtt.tls_cert = Some(cert);
                mqtt.tls_key = Some(key);
            }
        },
    ));

    assert!(cases.len() >= 100, "{} cases", cases.len());
    let mut failures = Vec::new();
    for c in cases.drain(..) {
        let outcome = AssertUnwindSafe((c.run)()).catch_unwind().await;
        let verdict = match (outcome, c.kind) {
            (Err(_), _) => Err("panicked".to_string()),
            (Ok(Ok(())), None) => Ok("accepted".to_string()),
            (Ok(Err(e)), None) => Err(format!("a valid input failed: {e}")),
            (Ok(Ok(())), Some(_)) => Err("succeeded".to_string()),
            (Ok(Err(e)), Some(kind)) if e.kind() != kind => {
                Err(format!("kind {:?}: {e}", e.kind()))
            }
            (Ok(Err(e)), Some(_)) if !e.to_string().contains(c.fragment) => {
                Err(format!("message lacks {:?}: {e}", c.fragment))
            }
            (Ok(Err(e)), Some(_)) => Ok(e.to_string()),
        };
        match verdict {
            Ok(what) => println!("ok   {:<60} -> {:?}: {what}", c.input, c.kind),
            Err(why) => failures.push(format!(
                "{} (want {:?} with {:?}): {why}",
                c.input, c.kind, c.fragment
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
