//! Dead endpoints for Redis and MQTT, from the async and the blocking API:
//! nothing listening, a port that accepts TCP and never answers, a TLS
//! client at a plain port and a plain client at a TLS port. Each must give
//! an error of the expected kind within the connect timeout (plus a little
//! slack for the blocking bridge). The error messages are printed.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use pubsub_core::{blocking, BackendFactory, Config, Error, ErrorKind, PubSub};
use pubsub_mqtt::MqttConfig;
use pubsub_redis::RedisConfig;
use pubsub_testkit::brokers::{free_port, Mosquitto, RedisServer};
use pubsub_testkit::certs::TestPki;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// What a failing connect may take beyond `connect_timeout`.
const SLACK: Duration = Duration::from_millis(1500);

fn redis(port: u16) -> (BackendFactory, Config) {
    let mut c = Config::default();
    c.backend = "redis".into();
    c.connect_timeout = CONNECT_TIMEOUT;
    let section = c.section_mut::<RedisConfig>().unwrap();
    section.host = "127.0.0.1".into();
    section.port = port;
    (
        pubsub_core::BackendFactory::of::<pubsub_redis::RedisBackend>(),
        c,
    )
}

fn redis_tls(port: u16, pki: &TestPki) -> (BackendFactory, Config) {
    let (f, mut c) = redis(port);
    let section = c.section_mut::<RedisConfig>().unwrap();
    section.tls = true;
    section.tls_ca_cert = Some(pki.ca_cert.clone());
    (f, c)
}

fn mqtt(url: String) -> (BackendFactory, Config) {
    let mut c = Config::default();
    c.backend = "mqtt".into();
    c.connect_timeout = CONNECT_TIMEOUT;
    c.section_mut::<MqttConfig>().unwrap().url = Some(url);
    (
        pubsub_core::BackendFactory::of::<pubsub_mqtt::MqttBackend>(),
        c,
    )
}

fn mqtt_tls(port: u16, pki: &TestPki) -> (BackendFactory, Config) {
    let (f, mut c) = mqtt(format!("mqtts://127.0.0.1:{port}"));
    c.section_mut::<MqttConfig>().unwrap().tls_ca_cert = Some(pki.ca_cert.clone());
    (f, c)
}

/// Connect from the async and the blocking API; both must fail with one of
/// `kinds`, a message holding `fragment`, within `limit`.
async fn fails(
    what: &str,
    (factory, config): (BackendFactory, Config),
    kinds: &[ErrorKind],
    fragment: &str,
    limit: Duration,
) -> Vec<String> {
    let mut failures = Vec::new();
    let mut check = |api: &str, r: Result<(), Error>, took: Duration| match r {
        Ok(()) => failures.push(format!("{what} ({api}): connected")),
        Err(e) => {
            let ok_kind = kinds.contains(&e.kind());
            let ok_time = took <= limit;
            println!(
                "{} {what} ({api}) in {took:?}: {:?}: {e}",
                if ok_kind && ok_time { "ok  " } else { "FAIL" },
                e.kind()
            );
            if !ok_kind {
                failures.push(format!(
                    "{what} ({api}): kind {:?}, want one of {kinds:?}: {e}",
                    e.kind()
                ));
            }
            if !e.to_string().contains(fragment) {
                failures.push(format!("{what} ({api}): message lacks {fragment:?}: {e}"));
            }
            if !ok_time {
                failures.push(format!("{what} ({api}): took {took:?}, limit {limit:?}"));
            }
        }
    };
    let t0 = Instant::now();
    let r = PubSub::connect_with(&factory, &config).await.map(|_| ());
    check("async", r, t0.elapsed());
    let t0 = Instant::now();
    let r = tokio::task::spawn_blocking(move || {
        blocking::PubSub::connect_with(&factory, &config).map(|_| ())
    })
    .await
    .expect("no panic");
    check("blocking", r, t0.elapsed());
    failures
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_and_mqtt_dead_endpoints_fail_clearly_and_in_time() {
    let pki = TestPki::generate();
    let (redis_plain, redis_secure, mqtt_plain, mqtt_secure) = tokio::task::block_in_place(|| {
        (
            RedisServer::start(),
            RedisServer::builder().tls(&pki).start(),
            Mosquitto::start(),
            Mosquitto::builder().tls(&pki, false).start(),
        )
    });
    // Accepts TCP (the kernel completes the handshake) and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let nothing = free_port();
    let in_time = CONNECT_TIMEOUT + SLACK;
    // Refusals and TLS failures need no timer at all.
    let promptly = Duration::from_millis(1500);
    use ErrorKind::*;

    let mut failures = Vec::new();
    for (what, target, kinds, fragment, limit) in [
        (
            "redis: nothing listening",
            redis(nothing),
            &[Connect][..],
            "127.0.0.1",
            promptly,
        ),
        (
            "redis: silent port",
            redis(silent_port),
            &[Timeout][..],
            "",
            in_time,
        ),
        (
            "redis: TLS client at a silent port",
            redis_tls(silent_port, &pki),
            &[Timeout][..],
            "",
            in_time,
        ),
        // Redis reads a ClientHello as an inline command: it answers with
        // an error (then rustls reports a corrupt message) or, with no
        // newline in it, waits for the rest (then the timeout fires).
        (
            "redis: TLS client at a plain port",
            redis_tls(redis_plain.port(), &pki),
            &[Tls, Timeout][..],
            "",
            in_time,
        ),
        (
            "redis: plain client at a TLS port",
            redis(redis_secure.port()),
            &[Connect, Tls][..],
            "TLS",
            promptly,
        ),
        (
            "mqtt: nothing listening",
            mqtt(format!("mqtt://127.0.0.1:{nothing}")),
            &[Connect][..],
            "127.0.0.1",
            promptly,
        ),
        (
            "mqtt: silent port",
            mqtt(format!("mqtt://127.0.0.1:{silent_port}")),
            &[Timeout][..],
            "",
            in_time,
        ),
        (
            "mqtt: TLS client at a silent port",
            mqtt_tls(silent_port, &pki),
            &[Timeout][..],
            "",
            in_time,
        ),
        (
            "mqtt: TLS client at a plain port",
            mqtt_tls(mqtt_plain.port(), &pki),
            &[Tls][..],
            "TLS",
            promptly,
        ),
        (
            "mqtt: plain client at a TLS port",
            mqtt(format!("mqtt://127.0.0.1:{}", mqtt_secure.port())),
            &[Connect, Tls][..],
            "TLS",
            promptly,
        ),
    ] {
        failures.extend(fails(what, target, kinds, fragment, limit).await);
    }
    drop(silent);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
