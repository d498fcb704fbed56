//! The msight topic registry (`MSIGHT:TOPICS`) against a real
//! `redis-server`, and against the Python original (`msight_core.topics`,
//! msight-core 2.0.0) both ways.

mod common;

use std::time::Duration;

use common::{config_for, config_port, start};
use pubsub_redis::{
    BlockingTopicRegistry, Config, ErrorKind, RedisConfig, RedisMode, Secret, Topic, TopicRegistry,
    TOPICS_KEY,
};
use pubsub_testkit::brokers::{free_port, RedisCluster, RedisServer};
use pubsub_testkit::certs::TestPki;
use pubsub_testkit::python::{run_script, MSIGHT_DATA_PRELUDE};

const IMAGE: &str = "msight_core.data.image.ImageData";

fn topic(name: &str, description: &str) -> Topic {
    Topic::new(name)
        .unwrap()
        .with_description(description)
        .with_data_type(IMAGE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_get_list_and_update() {
    let server = start(RedisServer::start);
    let reg = TopicRegistry::connect(&config_for(&server, RedisMode::PubSub))
        .await
        .unwrap();
    assert_eq!(reg.get("cam.front").await.unwrap(), None);
    let front = topic("cam.front", "front camera");
    reg.register(&front).await.unwrap();
    assert_eq!(reg.get("cam.front").await.unwrap(), Some(front.clone()));
    // Registering again updates, as Python's Topic.register() does.
    let updated = topic("cam.front", "front camera, 30 fps");
    reg.register(&updated).await.unwrap();
    assert_eq!(reg.get("cam.front").await.unwrap(), Some(updated.clone()));
    reg.register(&topic("cam.back", "back camera"))
        .await
        .unwrap();
    let names: Vec<String> = reg
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.unwrap().name().to_string())
        .collect();
    assert_eq!(names, ["cam.back", "cam.front"]);
    // A topic without a data type is refused: Python could not read it.
    let e = reg.register(&Topic::new("x").unwrap()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
}

/// Get-or-register by eight nodes at once: one entry is stored, and every
/// node gets that entry, not its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_or_register_by_many_nodes_at_once_agrees() {
    let server = start(RedisServer::start);
    let config = config_for(&server, RedisMode::PubSub);
    let mut nodes = Vec::new();
    for i in 0..8 {
        let reg = TopicRegistry::connect(&config).await.unwrap();
        nodes.push(tokio::spawn(async move {
            reg.get_or_register(&topic("lidar", &format!("registered by node {i}")))
                .await
                .unwrap()
        }));
    }
    let mut got = Vec::new();
    for n in nodes {
        got.push(n.await.unwrap());
    }
    let stored = TopicRegistry::connect(&config)
        .await
        .unwrap()
        .get("lidar")
        .await
        .unwrap()
        .expect("one entry");
    assert!(got.iter().all(|t| *t == stored), "{got:?} vs {stored:?}");
    println!("stored: {:?}", stored.description());
}

/// A malformed entry is an error naming its topic, and a listing goes on
/// past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_entry_is_reported_not_fatal() {
    let server = start(RedisServer::start);
    let reg = TopicRegistry::connect(&config_for(&server, RedisMode::PubSub))
        .await
        .unwrap();
    reg.register(&topic("good", "fine")).await.unwrap();
    tokio::task::block_in_place(|| server.cli(&["HSET", TOPICS_KEY, "broken", "{not json"]));
    let e = reg.get("broken").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Decode);
    assert!(e.to_string().contains("\"broken\""), "{e}");
    let listing = reg.list().await.unwrap();
    assert_eq!(listing.len(), 2);
    assert!(listing[0]
        .as_ref()
        .unwrap_err()
        .to_string()
        .contains("broken"));
    assert_eq!(listing[1].as_ref().unwrap().name(), "good");
}

#[test]
fn the_blocking_registry_from_a_plain_thread() {
    let server = RedisServer::start();
    let config = config_for(&server, RedisMode::PubSub);
    std::thread::spawn(move || {
        let reg = BlockingTopicRegistry::connect(&config).unwrap();
        let t = topic("radar", "radar");
        assert_eq!(reg.get_or_register(&t).unwrap(), t);
        assert_eq!(reg.get("radar").unwrap(), Some(t));
        assert_eq!(reg.list().unwrap().len(), 1);
    })
    .join()
    .unwrap();
}

/// `Topic.register()` of Python, read by Rust; Rust's entry read by
/// Python's `get_topic` (which imports the data type).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_rust_read_each_others_entries() {
    let server = start(RedisServer::start);
    let port = server.port().to_string();
    let script = format!(
        r#"{MSIGHT_DATA_PRELUDE}
import redis
os.environ["MSIGHT_REDIS_MESSAGE_BROKER_HOST"] = "127.0.0.1"
os.environ["MSIGHT_REDIS_MESSAGE_BROKER_PORT"] = sys.argv[1]
from msight_core.topics import Topic, get_topic
Topic("py.cam", ImageData, "written by Python \u00e9").register()
client = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]))
sys.stdin.read()  # Rust registers its topic, then closes stdin
t = get_topic(client, "rs.cam")
print(t.name, t.data_type.__module__ + "." + t.data_type.__name__, t.description, sep="|")
"#
    );
    let reg = TopicRegistry::connect(&config_for(&server, RedisMode::PubSub))
        .await
        .unwrap();
    reg.register(&topic("rs.cam", "written by Rust ü"))
        .await
        .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        run_script(&script, &[&port], b"", Duration::from_secs(60))
    })
    .await
    .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(out.trim(), format!("rs.cam|{IMAGE}|written by Rust ü"));
    let from_python = reg.get("py.cam").await.unwrap().expect("Python's entry");
    assert_eq!(from_python, topic("py.cam", "written by Python é"));
    let raw = tokio::task::block_in_place(|| server.cli(&["HGET", TOPICS_KEY, "py.cam"]));
    let ours = tokio::task::block_in_place(|| server.cli(&["HGET", TOPICS_KEY, "rs.cam"]));
    println!("Python wrote {}; Rust wrote {}", raw.trim(), ours.trim());
    // The same form: Python's json.dumps, its separators, ASCII only.
    assert!(
        raw.starts_with("{\"name\": \"py.cam\", \"description\": "),
        "{raw}"
    );
    assert!(
        ours.starts_with("{\"name\": \"rs.cam\", \"description\": "),
        "{ours}"
    );
}

/// Register, get and list through `config`: the registry reaches Redis.
async fn registry_round_trip(config: &Config, name: &str) {
    let reg = TopicRegistry::connect(config).await.expect("connect");
    let t = topic(name, "reached");
    reg.register(&t).await.unwrap();
    assert_eq!(reg.get(name).await.unwrap(), Some(t.clone()));
    let other = topic(name, "another node");
    assert_eq!(reg.get_or_register(&other).await.unwrap(), t);
    let listed: Vec<Topic> = reg
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.unwrap())
        .collect();
    assert!(listed.contains(&t), "{listed:?}");
}

/// The registry is configured by the `[redis]` section as the backend is:
/// mutual TLS, a Unix socket (with nothing on the TCP port) and an ACL
/// user, and a three-node cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_reaches_redis_as_the_backend_does() {
    let pki = TestPki::generate();
    let server = start(|| {
        RedisServer::builder()
            .tls(&pki)
            .require_client_cert(true)
            .start()
    });
    let mut c = config_for(&server, RedisMode::PubSub);
    let redis = c.section_mut::<RedisConfig>().unwrap();
    redis.tls = true;
    redis.tls_ca_cert = Some(pki.ca_cert.clone());
    redis.tls_cert = Some(pki.client_cert.clone());
    redis.tls_key = Some(pki.client_key.clone());
    registry_round_trip(&c, "over.tls").await;

    let server = start(|| {
        RedisServer::builder()
            .unix_socket(true)
            .acl_user("alice", "alice-secret")
            .arg("--requirepass")
            .arg("default-secret")
            .start()
    });
    let mut c = config_port(free_port(), RedisMode::PubSub);
    let redis = c.section_mut::<RedisConfig>().unwrap();
    redis.unix_socket_path = Some(server.unix_socket_path().expect("socket").to_path_buf());
    redis.username = Some("alice".into());
    redis.password = Some(Secret::new("alice-secret"));
    registry_round_trip(&c, "over.unix.socket").await;
    // The wrong password is an authentication error, not a registry one.
    c.section_mut::<RedisConfig>().unwrap().password = Some(Secret::new("wrong"));
    let e = TopicRegistry::connect(&c).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");

    let cluster = start(|| RedisCluster::start(3));
    let mut c = Config::default();
    c.backend = "redis".into();
    let redis = c.section_mut::<RedisConfig>().unwrap();
    redis.cluster = true;
    redis.cluster_nodes = cluster.nodes();
    registry_round_trip(&c, "over.cluster").await;
}
