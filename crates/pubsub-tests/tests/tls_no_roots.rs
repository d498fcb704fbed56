//! TLS required but no CA available: no `tls_ca_cert` and a system without
//! trusted roots. Alone in its test binary because it points the process's
//! `SSL_CERT_FILE` / `SSL_CERT_DIR` at empty places.

use pubsub_core::{Config, ErrorKind};
use pubsub_nats::NatsConfig;
use pubsub_redis::RedisConfig;

#[tokio::test]
async fn tls_without_any_ca_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    // This binary has a single test: no other thread reads the environment.
    std::env::set_var("SSL_CERT_FILE", &empty);
    std::env::set_var("SSL_CERT_DIR", dir.path());
    let mut c = Config::default();
    c.backend = "nats".into();
    c.section_mut::<NatsConfig>().unwrap().servers = vec!["tls://127.0.0.1:1".into()];
    let e = pubsub_nats::connect(&c).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Tls, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("nats.tls_ca_cert") && msg.contains("no CA certificate is available"),
        "{msg}"
    );

    let mut c = Config::default();
    c.backend = "redis".into();
    let redis = c.section_mut::<RedisConfig>().unwrap();
    redis.host = "127.0.0.1".into();
    redis.port = 1;
    redis.tls = true;
    let e = pubsub_redis::connect(&c).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Tls, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("redis.tls_ca_cert") && msg.contains("no CA certificate is available"),
        "{msg}"
    );
}
