//! At least once, proven by a crash: a group member in a process of its
//! own holds unsettled messages and is killed with `SIGKILL`; the other
//! member must get every one of them.
//!
//! A backend crate calls [`member_killed_loses_nothing`] from a `#[test]`
//! of the same name as its first argument: the test program runs again as
//! the child (see [`crate::peer`]), which takes the test's role from the
//! environment.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pubsub_core::{blocking, AckMode, BackendFactory, Config, PubSub};

use crate::peer::{child_role, spawn_self};

const CONFIG_VAR: &str = "PUBSUB_TESTKIT_CRASH_CONFIG";
const TOPIC_VAR: &str = "PUBSUB_TESTKIT_CRASH_TOPIC";
const GROUP: &str = "crash-workers";
const TOTAL: u32 = 2_000;

/// What a crash run measured.
#[derive(Debug)]
pub struct CrashReport {
    /// Messages the killed member held unsettled when it was killed.
    pub held_by_the_killed: usize,
    /// Messages the survivor received twice or more (at least once).
    pub duplicates: usize,
    /// From the kill to the last held message arriving at the survivor.
    pub redelivered_within: Duration,
}

/// Run the crash scenario from the `#[test]` named `test`, with the config
/// `config()` makes (its `ack_wait` short, e.g. 1 s, for a quick
/// redelivery; it may start a broker, since it is called in the parent
/// only); the child, the same test run again, plays the member that is
/// killed and gets the config from the parent. In the
/// parent: a survivor joins the group, 2,000 messages are published, the
/// child takes its share and settles none; once it holds 50, it is killed
/// with `SIGKILL`. Every message must reach the survivor.
///
/// # Panics
/// When a message is lost, or anything fails or takes too long.
pub fn member_killed_loses_nothing(
    test: &str,
    factory: BackendFactory,
    config: impl FnOnce() -> Config,
) -> Option<CrashReport> {
    if child_role().as_deref() == Some("member") {
        hold_until_killed(&factory);
        return None;
    }
    let mut config = config();
    config.ack = AckMode::Manual;
    config.group_id = Some(GROUP.to_string());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    Some(rt.block_on(survive(test, &factory, config)))
}

/// The child: blocking API, takes messages and settles none.
fn hold_until_killed(factory: &BackendFactory) {
    let config: Config = serde_json::from_str(&std::env::var(CONFIG_VAR).expect("config"))
        .expect("the parent's config");
    let topic = std::env::var(TOPIC_VAR).expect("topic");
    let ps = blocking::PubSub::connect_with(factory, &config).expect("child connect");
    ps.subscribe(topic.as_str()).expect("child subscribe");
    println!("ready");
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(m) = ps.recv_timeout(Duration::from_millis(100)).expect("recv") {
            println!(
                "held {}",
                u32::from_be_bytes(m.payload[..4].try_into().expect("seq"))
            );
            held.push(m);
        }
    }
}

async fn survive(test: &str, factory: &BackendFactory, config: Config) -> CrashReport {
    let topic = format!("crash.{}.{}", std::process::id(), test);
    let json = serde_json::to_string(&config).expect("config as JSON");
    let mut child = spawn_self(test, "member", &[(CONFIG_VAR, &json), (TOPIC_VAR, &topic)]);
    let survivor = PubSub::connect_with(factory, &config)
        .await
        .expect("connect");
    child.line_with("ready", Duration::from_secs(30));
    survivor.subscribe(topic.as_str()).await.expect("subscribe");
    let mut plain = config.clone();
    plain.ack = AckMode::Auto;
    plain.group_id = None;
    let publ = PubSub::connect_with(factory, &plain)
        .await
        .expect("connect publisher");
    for i in 0..TOTAL {
        publ.publish(topic.as_str(), i.to_be_bytes().to_vec())
            .await
            .expect("publish");
    }
    publ.flush().await.expect("flush");

    let mut got: BTreeMap<u32, usize> = BTreeMap::new();
    let take = |m: pubsub_core::Message, got: &mut BTreeMap<u32, usize>| {
        *got.entry(u32::from_be_bytes(m.payload[..4].try_into().expect("seq")))
            .or_insert(0) += 1;
        m.ack().expect("ack");
    };
    // Until the child holds 50 (it reports each), the survivor works on.
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while held.len() < 50 && Instant::now() < deadline {
        while let Some(line) = child.try_line(Duration::from_millis(1)) {
            if let Some(at) = line.find("held ") {
                held.push(
                    line[at + 5..]
                        .trim()
                        .parse::<u32>()
                        .expect("a sequence number"),
                );
            }
        }
        if let Some(m) = survivor
            .recv_timeout(Duration::from_millis(20))
            .await
            .expect("recv")
        {
            take(m, &mut got);
        }
    }
    assert!(
        held.len() >= 50,
        "the child held only {} messages",
        held.len()
    );
    child.kill();
    let killed_at = Instant::now();
    let limit = config.ack_wait * 10 + Duration::from_secs(30);
    while got.len() < TOTAL as usize && killed_at.elapsed() < limit {
        if let Some(m) = survivor
            .recv_timeout(Duration::from_millis(200))
            .await
            .expect("recv")
        {
            take(m, &mut got);
        }
    }
    let redelivered_within = killed_at.elapsed();
    let missing: Vec<u32> = (0..TOTAL).filter(|i| !got.contains_key(i)).collect();
    let held_missing: Vec<&u32> = held.iter().filter(|i| missing.contains(i)).collect();
    assert!(
        missing.is_empty(),
        "{} of {TOTAL} lost ({} of them held by the killed member), e.g. {:?}",
        missing.len(),
        held_missing.len(),
        &missing[..missing.len().min(10)]
    );
    let report = CrashReport {
        held_by_the_killed: held.len(),
        duplicates: got.values().filter(|n| **n > 1).count(),
        redelivered_within,
    };
    println!(
        "member killed with SIGKILL: {report:?}; survivor {:?}",
        survivor.stats()
    );
    survivor.close().await.expect("close");
    report
}
