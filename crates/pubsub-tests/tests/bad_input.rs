//! Bad input, table-driven: each case states the input, the error kind it
//! must give and a fragment of the message, and nothing may panic.
//! Broker-dependent cases run against a real `nats-server`.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use futures::FutureExt;
use pubsub_core::testkit::brokers::NatsServer;
use pubsub_core::testkit::certs::TestPki;
use pubsub_core::{blocking, Config, ErrorKind, PubSub, Result, Secret};

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

async fn connect(config: Config) -> Result<()> {
    pubsub_nats::register();
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
    let mut c = Config {
        backend: "nats".into(),
        connect_timeout: Duration::from_secs(3),
        ..Config::default()
    };
    c.nats.servers = vec![url.to_string()];
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
    c.memory.namespace = "bad-input".into();
    c.memory.max_payload = max_payload;
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
            pubsub_nats::register();
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
            pubsub_nats::register();
            let ps = PubSub::connect(&config).await?;
            let r = ps.subscribe(topic).await;
            ps.close().await?;
            r
        }
    })
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_table() {
    let server = tokio::task::block_in_place(|| NatsServer::builder().max_payload(4096).start());
    let url = server.url();
    let pki = TestPki::generate();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    use ErrorKind::*;

    let mut cases = vec![
        // Backend choice.
        env_case(
            &[("MSIGHT_PUBSUB_BACKEND", "kafka")],
            InvalidConfig,
            "registered: memory, nats",
        ),
        env_case(
            &[("MSIGHT_PUBSUB_BACKEND", "mqtt")],
            InvalidConfig,
            "pubsub-mqtt",
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
            |c| c.nats.servers = vec!["http://h:4222".into()],
        ),
        nats_case(
            &url,
            "nats.servers = [\"nats://h:99999\"]",
            InvalidConfig,
            "is not a number from 1 to 65535",
            |c| c.nats.servers = vec!["nats://h:99999".into()],
        ),
        nats_case(
            &url,
            "nats.servers = [\"nats://h:port\"]",
            InvalidConfig,
            "nats.servers[0]",
            |c| c.nats.servers = vec!["nats://h:port".into()],
        ),
        nats_case(
            &url,
            "nats.servers = [\"nats://:4222\"]",
            InvalidConfig,
            "expected a URL",
            |c| c.nats.servers = vec!["nats://:4222".into()],
        ),
        nats_case(
            &url,
            "nats.servers = [\"nats://a b:1\"]",
            InvalidConfig,
            "nats.servers[0]",
            |c| c.nats.servers = vec!["nats://a b:1".into()],
        ),
        nats_case(
            &url,
            "nats.servers = []",
            InvalidConfig,
            "at least one server",
            |c| c.nats.servers.clear(),
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
            Tls,
            "nats.tls_ca_cert: file",
            {
                let p = d.join("nope.pem");
                move |c| {
                    c.nats.tls = true;
                    c.nats.tls_ca_cert = Some(p.clone());
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
                    c.nats.tls = true;
                    c.nats.tls_ca_cert = Some(p.clone());
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
                    c.nats.tls = true;
                    c.nats.tls_ca_cert = Some(ca.clone());
                    c.nats.tls_cert = Some(cert.clone());
                    c.nats.tls_key = Some(key.clone());
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
                    c.nats.tls = true;
                    c.nats.tls_cert = Some(cert.clone());
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
                    c.nats.tls = true;
                    c.nats.tls_ca_cert = Some(ca.clone());
                    c.nats.tls_cert = Some(cert.clone());
                    c.nats.tls_key = Some(cert.clone());
                }
            },
        ),
        // Credentials that cannot go together or cannot be used.
        nats_case(
            &url,
            "nats.password without nats.user",
            InvalidConfig,
            "needs a user",
            |c| c.nats.password = Some(Secret::new("p")),
        ),
        nats_case(
            &url,
            "nats.user_jwt without nats.nkeys_seed",
            InvalidConfig,
            "needs the NKey seed",
            |c| c.nats.user_jwt = Some(Secret::new("j")),
        ),
        nats_case(
            &url,
            "nats.token and nats.user",
            InvalidConfig,
            "choose one authentication method",
            |c| {
                c.nats.token = Some(Secret::new("t"));
                c.nats.user = Some("u".into());
            },
        ),
        nats_case(
            &url,
            "nats.nkeys_seed that is not a seed",
            InvalidConfig,
            "is not a valid NKey seed",
            |c| c.nats.nkeys_seed = Some(Secret::new("SUXXXX")),
        ),
        nats_case(
            &url,
            "nats.user_credentials that does not exist",
            InvalidConfig,
            "nats.user_credentials",
            {
                let p = d.join("none.creds");
                move |c| c.nats.user_credentials = Some(p.clone())
            },
        ),
        nats_case(
            &url,
            "credentials in the URL and nats.token",
            InvalidConfig,
            "another authentication method",
            |c| {
                c.nats.servers = vec!["nats://u:p@127.0.0.1:1".into()];
                c.nats.token = Some(Secret::new("t"));
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
                    let ps = PubSub::connect_with(&pubsub_nats::factory(), &c).await?;
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
                c.memory.namespace.clear();
                PubSub::connect(&c).await.map(|_| ())
            },
        ),
    ];

    assert!(cases.len() >= 40, "{} cases", cases.len());
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
