//! Ways to reach Redis: TLS with generated certificates (mutual TLS), a
//! Unix socket (taking precedence over TCP), an ACL user, a password-only
//! server, a wrong password, and a config from the Python original's
//! environment variables through the registry.

mod common;

use std::time::{Duration, Instant};

use common::{config_for, config_port, recv_n, start, unique};
use pubsub_redis::RedisConfig;
use pubsub_redis::{Config, ErrorKind, PubSub, RedisMode, Secret};
use pubsub_testkit::brokers::{free_port, RedisServer};
use pubsub_testkit::certs::TestPki;

const WAIT: Duration = Duration::from_secs(20);

/// Subscribe, publish from a second handle, receive: the config works.
async fn round_trip(c: &Config) {
    let sub = pubsub_redis::connect(c).await.expect("connect subscriber");
    let publ = pubsub_redis::connect(c).await.expect("connect publisher");
    let topic = unique("rt");
    sub.subscribe(&topic).await.expect("subscribe");
    publ.publish(&topic, &b"\x00hello\xff"[..]).await.unwrap();
    publ.flush().await.unwrap();
    let got = recv_n(&sub, 1, WAIT).await;
    assert_eq!(
        got.len(),
        1,
        "message through {:?}",
        c.section::<RedisConfig>().unwrap().mode
    );
    assert_eq!(&got[0].payload[..], b"\x00hello\xff");
    publ.close().await.unwrap();
    sub.close().await.unwrap();
}

fn tls_config(server: &RedisServer, pki: &TestPki, mode: RedisMode) -> Config {
    let mut c = config_for(server, mode);
    let redis = c.section_mut::<RedisConfig>().unwrap();
    redis.tls = true;
    redis.tls_ca_cert = Some(pki.ca_cert.clone());
    redis.tls_cert = Some(pki.client_cert.clone());
    redis.tls_key = Some(pki.client_key.clone());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_generated_certificates() {
    let pki = TestPki::generate();
    let server = start(|| {
        RedisServer::builder()
            .tls(&pki)
            .require_client_cert(true)
            .start()
    });
    for mode in [RedisMode::PubSub, RedisMode::Streams] {
        round_trip(&tls_config(&server, &pki, mode)).await;
    }
    let ps = pubsub_redis::connect(&tls_config(&server, &pki, RedisMode::PubSub))
        .await
        .unwrap();
    let info = ps.broker_info();
    assert!(info.tls && info.version.is_some(), "{info:?}");
    assert!(info.address.unwrap().starts_with("rediss://127.0.0.1:"));
    // tls_verify = false: no CA at all, the test CA is in no trust store.
    let mut c = tls_config(&server, &pki, RedisMode::PubSub);
    let redis = c.section_mut::<RedisConfig>().unwrap();
    redis.tls_ca_cert = None;
    redis.tls_verify = false;
    round_trip(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_failures_are_tls_errors_that_name_the_key() {
    let pki = TestPki::generate();
    let server = start(|| {
        RedisServer::builder()
            .tls(&pki)
            .require_client_cert(true)
            .start()
    });
    // A CA that did not sign the server certificate.
    let mut c = tls_config(&server, &pki, RedisMode::PubSub);
    c.section_mut::<RedisConfig>().unwrap().tls_ca_cert = Some(pki.other_ca_cert.clone());
    let e = pubsub_redis::connect(&c).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Tls, "{e}");
    // A missing CA file.
    let mut c = tls_config(&server, &pki, RedisMode::PubSub);
    c.section_mut::<RedisConfig>().unwrap().tls_ca_cert = Some(pki.dir().join("nope.pem"));
    let e = pubsub_redis::connect(&c).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
    assert!(e.to_string().contains("redis.tls_ca_cert"), "{e}");
    // A key that does not belong to the certificate.
    let mut c = tls_config(&server, &pki, RedisMode::PubSub);
    c.section_mut::<RedisConfig>().unwrap().tls_key = Some(pki.other_client_key.clone());
    let e = pubsub_redis::connect(&c).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Tls);
    assert!(e.to_string().contains("redis.tls_key"), "{e}");
    // A certificate without its key is a config error naming the key.
    let mut c = tls_config(&server, &pki, RedisMode::PubSub);
    c.section_mut::<RedisConfig>().unwrap().tls_key = None;
    let e = pubsub_redis::connect(&c).await.unwrap_err();
    assert!(e.to_string().contains("redis.tls_key"), "{e}");
    // Plain TCP to a TLS port fails in time.
    let mut c = config_for(&server, RedisMode::PubSub);
    c.connect_timeout = Duration::from_secs(2);
    let t0 = Instant::now();
    let e = pubsub_redis::connect(&c).await.unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(4), "{e}");
}

/// TLS on against a plain Redis: a TLS error at once, saying the port
/// speaks plain Redis, as NATS and MQTT fail at once (issue 16, item 14);
/// not `connect_timeout` (5 s) and then "timed out". Several tries, since
/// whether Redis answers a client hello at all depends on its random bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_against_a_plain_server_fails_at_once_with_a_tls_error() {
    let server = start(RedisServer::start);
    for _ in 0..5 {
        let mut c = config_for(&server, RedisMode::PubSub);
        c.section_mut::<RedisConfig>().unwrap().tls = true;
        c.section_mut::<RedisConfig>().unwrap().tls_verify = false;
        let t0 = Instant::now();
        let e = pubsub_redis::connect(&c).await.unwrap_err();
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(2), "took {took:?}: {e}");
        assert_eq!(e.kind(), ErrorKind::Tls, "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("redis.tls = false") && msg.contains(&format!(":{}", server.port())),
            "{msg}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_takes_precedence_over_tcp() {
    let server = start(|| RedisServer::builder().unix_socket(true).start());
    let path = server.unix_socket_path().expect("socket").to_path_buf();
    for mode in [RedisMode::PubSub, RedisMode::Streams] {
        // Nothing listens on the TCP port: only the socket can work.
        let mut c = config_port(free_port(), mode);
        c.section_mut::<RedisConfig>().unwrap().unix_socket_path = Some(path.clone());
        round_trip(&c).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_user_and_password() {
    let server = start(|| {
        RedisServer::builder()
            .acl_user("alice", "alice-secret")
            .arg("--requirepass")
            .arg("default-secret")
            .start()
    });
    for mode in [RedisMode::PubSub, RedisMode::Streams] {
        let mut c = config_for(&server, mode);
        let redis = c.section_mut::<RedisConfig>().unwrap();
        redis.username = Some("alice".into());
        redis.password = Some(Secret::new("alice-secret"));
        round_trip(&c).await;
    }
    // Password only: the `default` user.
    let mut c = config_for(&server, RedisMode::PubSub);
    c.section_mut::<RedisConfig>().unwrap().password = Some(Secret::new("default-secret"));
    round_trip(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_password_is_an_auth_error_at_once() {
    let server = start(|| {
        RedisServer::builder()
            .acl_user("alice", "right")
            .arg("--requirepass")
            .arg("default-right")
            .start()
    });
    let mut c = config_for(&server, RedisMode::PubSub);
    let redis = c.section_mut::<RedisConfig>().unwrap();
    redis.username = Some("alice".into());
    redis.password = Some(Secret::new("wrong-password-marker"));
    let t0 = Instant::now();
    let e = pubsub_redis::connect(&c).await.unwrap_err();
    let took = t0.elapsed();
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let shown = format!("{e} {e:?}");
    assert!(!shown.contains("wrong-password-marker"), "{shown}");
    assert!(shown.contains("127.0.0.1"), "names the address: {shown}");
    // Blocking API, same answer.
    let c2 = c.clone();
    let e = tokio::task::spawn_blocking(move || pubsub_redis::connect_blocking(&c2).unwrap_err())
        .await
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
    // No password at all on a server that wants one.
    let c = config_for(&server, RedisMode::Streams);
    let e = pubsub_redis::connect(&c).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_from_the_python_environment_variables_through_the_registry() {
    let server = start(|| RedisServer::builder().acl_user("bob", "pw").start());
    pubsub_redis::register();
    let port = server.port().to_string();
    let env = [
        ("MSIGHT_PUBSUB_BACKEND", "redis"),
        ("MSIGHT_REDIS_MESSAGE_BROKER_HOST", "127.0.0.1"),
        ("MSIGHT_REDIS_MESSAGE_BROKER_PORT", port.as_str()),
        ("MSIGHT_REDIS_MESSAGE_BROKER_DB", "2"),
        ("MSIGHT_REDIS_MESSAGE_BROKER_USERNAME", "bob"),
        ("MSIGHT_REDIS_MESSAGE_BROKER_PASSWORD", "pw"),
        ("MSIGHT_REDIS_MESSAGE_BROKER_USE_TLS", "false"),
        ("MSIGHT_REDIS_MESSAGE_BROKER_MODE", "streams"),
        ("MSIGHT_PUBSUB_GROUP_ID", "env-group"),
    ];
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let c = Config::loader()
        .no_default_file()
        .env(env.into_iter().collect::<std::collections::HashMap<_, _>>())
        .load()
        .unwrap();
    assert_eq!(c.section::<RedisConfig>().unwrap().db, 2);
    let ps = PubSub::connect(&c).await.unwrap();
    assert_eq!(ps.backend_name(), "redis");
    assert!(ps.capabilities().groups);
    let topic = unique("env");
    ps.subscribe(&topic).await.unwrap();
    ps.publish(&topic, "x").await.unwrap();
    ps.flush().await.unwrap();
    assert_eq!(recv_n(&ps, 1, WAIT).await.len(), 1);
    // The stream lives in database 2, with the group from the environment.
    let groups = server.cli(&[
        "--user", "bob", "--pass", "pw", "-n", "2", "XINFO", "GROUPS", &topic,
    ]);
    assert!(groups.contains("env-group"), "{groups}");
}
