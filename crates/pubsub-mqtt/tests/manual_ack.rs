//! Manual ack mode against a real mosquitto (2.0.11 here), beyond the
//! conformance cases: refused without what it needs, the blocking API, what
//! a closed handle's session keeps, and a group member killed with SIGKILL
//! while it holds unacknowledged messages.
//!
//! What MQTT does with the unacknowledged messages of a shared-subscription
//! member that goes away (measured on mosquitto 2.0.11): they stay in its
//! session and go to no other member; the broker sends them again, DUP
//! set, when the same client id connects again. While the session is kept,
//! the broker also goes on giving that member its share of new messages,
//! which wait in the session. So nothing is lost as long as the member (its
//! client id) comes back within `session_expiry`; a member that never comes
//! back takes its share with it when its session expires.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{config_for, seq, seq_of, unique};
use pubsub_mqtt::pubsub_core::{dead_letter, AckMode, Headers};
use pubsub_mqtt::{Config, ErrorKind, MqttConfig};
use pubsub_testkit::brokers::Mosquitto;
use pubsub_testkit::peer::{child_role, spawn_self};

const WAIT: Duration = Duration::from_secs(20);

/// A manual-ack config for `url` with a persistent session as `client_id`.
fn manual(url: &str, qos: u8, client_id: &str) -> Config {
    let mut c = config_for(url, qos);
    c.ack = AckMode::Manual;
    let mqtt = c.section_mut::<MqttConfig>().unwrap();
    mqtt.session_expiry = Some(Duration::from_secs(300));
    mqtt.client_id = Some(client_id.to_string());
    mqtt.reconnect_delay_max = Duration::from_millis(200);
    c
}

fn client_id(role: &str) -> String {
    format!(
        "{role}-{}-{}",
        std::process::id(),
        unique("id").replace('/', "-")
    )
}

/// Without QoS ≥ 1, a session kept after disconnect and a fixed client id,
/// `ack = "manual"` is refused at connect, naming the key to set, in both
/// APIs; with them it connects and declares how it settles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_without_a_persistent_session_and_qos_1() {
    let broker = common::start_broker();
    let good = manual(&broker.url(), 1, &client_id("refused"));
    type Spoil = fn(&mut MqttConfig);
    let cases: [(&str, Spoil); 3] = [
        ("mqtt.qos", |m| m.qos = 0),
        ("mqtt.session_expiry", |m| m.session_expiry = None),
        ("mqtt.client_id", |m| m.client_id = None),
    ];
    for (key, spoil) in cases {
        let mut c = good.clone();
        spoil(c.section_mut::<MqttConfig>().unwrap());
        let e = pubsub_mqtt::connect(&c).await.expect_err(key);
        assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
        assert!(e.to_string().contains(&format!("{key}: ")), "{key}: {e}");
        let e = tokio::task::block_in_place(|| pubsub_mqtt::connect_blocking(&c)).expect_err(key);
        assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
    }
    let ps = pubsub_mqtt::connect(&good)
        .await
        .expect("manual ack with a session");
    let s = &ps.capabilities().settle;
    use pubsub_mqtt::pubsub_core::Support::{Emulated, Native};
    assert_eq!(
        (s.ack, s.nak, s.in_progress, s.term),
        (Native, Emulated, Emulated, Emulated)
    );
    assert_eq!(
        (s.redeliver_after_ack_wait, s.dead_letter),
        (Emulated, Emulated)
    );
    ps.close().await.expect("close");
}

/// The blocking API from a plain thread: ack, nak, term to the dead-letter
/// topic; the messages left unsettled when the handle closes stay in the
/// broker's session and come back, DUP set, when the same client id
/// connects again; what was acked does not.
#[test]
fn blocking_api_settles_and_the_session_keeps_what_was_not() {
    let broker = Mosquitto::start();
    let id = client_id("blocking");
    let topic = unique("work");
    let dlq = unique("dlq");
    let mut config = manual(&broker.url(), 1, &id);
    config.dead_letter_topic = Some(dlq.clone());
    config.ack_wait = Duration::from_secs(30);
    let plain = config_for(&broker.url(), 1);
    let dead = pubsub_mqtt::connect_blocking(&plain).expect("connect dead-letter reader");
    dead.subscribe(&dlq).expect("subscribe dlq");
    let sub = pubsub_mqtt::connect_blocking(&config).expect("connect manual");
    sub.subscribe(&topic).expect("subscribe");
    let publ = pubsub_mqtt::connect_blocking(&plain).expect("connect publisher");
    for i in 0..10u32 {
        let h = Headers::from([("n", i.to_string())]);
        publ.publish_with_headers(&topic, h, seq(i))
            .expect("publish");
    }
    publ.flush().expect("flush");

    let mut held = Vec::new();
    let mut naked = 0;
    let mut acked_after_nak = false;
    let deadline = Instant::now() + WAIT;
    while (held.len() < 2 || !acked_after_nak) && Instant::now() < deadline {
        let Some(m) = sub.recv_timeout(Duration::from_secs(1)).expect("recv") else {
            continue;
        };
        assert!(m.needs_settling());
        assert_eq!(m.headers.get("n"), Some(seq_of(&m).to_string().as_str()));
        match seq_of(&m) {
            6 if m.attempt == 1 => {
                naked += 1;
                m.nak(Duration::from_millis(200)).expect("nak");
            }
            6 => {
                assert!(m.redelivered);
                assert_eq!(m.attempt, 2);
                m.ack().expect("ack after nak");
                acked_after_nak = true;
            }
            7 => m.term().expect("term"),
            8 | 9 => held.push(m),
            _ => m.ack().expect("ack"),
        }
    }
    assert_eq!((held.len(), naked, acked_after_nak), (2, 1, true));
    let letter = dead
        .recv_timeout(WAIT)
        .expect("recv")
        .expect("the dead letter");
    assert_eq!(seq_of(&letter), 7);
    assert_eq!(letter.headers.get(dead_letter::REASON), Some("term"));
    assert_eq!(letter.headers.get(dead_letter::TOPIC), Some(topic.as_str()));
    assert_eq!(letter.headers.get(dead_letter::ATTEMPTS), Some("1"));
    assert_eq!(letter.headers.get("n"), Some("7"), "its own headers kept");
    let stats = sub.stats();
    assert_eq!(
        (stats.acked, stats.redelivered, stats.dead_lettered),
        (7, 1, 1),
        "{stats:?}"
    );
    sub.close().expect("close");
    let e = held.pop().unwrap().ack().expect_err("ack after close");
    assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
    drop(held);

    // The same client id: the broker sends what was not acked, and only that.
    let t0 = Instant::now();
    let again = pubsub_mqtt::connect_blocking(&config).expect("connect again");
    again.subscribe(&topic).expect("subscribe again");
    let mut back = BTreeMap::new();
    while back.len() < 2 && t0.elapsed() < WAIT {
        if let Some(m) = again.recv_timeout(Duration::from_secs(1)).expect("recv") {
            assert!(m.redelivered, "DUP set: {m:?}");
            assert_eq!(m.attempt, 2, "a message first seen with DUP counts 2");
            back.insert(seq_of(&m), m.headers.get("n").map(str::to_string));
            m.ack().expect("ack");
        }
    }
    println!(
        "the unsettled messages came back {:?} after connecting again",
        t0.elapsed()
    );
    assert_eq!(
        back,
        BTreeMap::from([(8, Some("8".into())), (9, Some("9".into()))]),
        "exactly the unacked ones, headers kept"
    );
    assert!(
        again
            .recv_timeout(Duration::from_millis(500))
            .expect("recv")
            .is_none(),
        "nothing else: acked and dead-lettered messages do not come back"
    );
    assert_eq!(again.stats().redelivered, 2);
    again.close().expect("close");
    let third = pubsub_mqtt::connect_blocking(&config).expect("connect a third time");
    third.subscribe(&topic).expect("subscribe a third time");
    assert!(
        third
            .recv_timeout(Duration::from_millis(500))
            .expect("recv")
            .is_none(),
        "the acks of the second handle reached the broker"
    );
}

/// The roles of the crash test's child process.
const MEMBER: &str = "member";

/// A group member in its own process holds every message it gets without
/// settling it until it is killed with SIGKILL; the other member acks all
/// it gets. mosquitto then gives the killed member's messages to no one
/// else (also its share of what is published while it is dead), and sends
/// them all, DUP set, when its client id connects again: zero lost, the
/// held ones delivered twice, counted as redelivered.
#[test]
fn group_member_killed_holding_messages_loses_none_qos1() {
    killed_member_loses_none("group_member_killed_holding_messages_loses_none_qos1", 1);
}

/// The same at QoS 2: the PUBREC is what is held back.
#[test]
fn group_member_killed_holding_messages_loses_none_qos2() {
    killed_member_loses_none("group_member_killed_holding_messages_loses_none_qos2", 2);
}

fn killed_member_loses_none(test: &str, qos: u8) {
    if child_role().as_deref() == Some(MEMBER) {
        return hold_until_killed();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let broker = Mosquitto::start();
    let topic = unique("crash");
    let group = format!("workers{}", std::process::id());
    let a_id = client_id("crash-a");
    let a_config = manual(&broker.url(), qos, &a_id);
    let url = broker.url();
    let qos_text = qos.to_string();
    let mut child = spawn_self(
        test,
        MEMBER,
        &[
            ("CRASH_URL", &url),
            ("CRASH_QOS", &qos_text),
            ("CRASH_CLIENT_ID", &a_id),
            ("CRASH_TOPIC", &topic),
            ("CRASH_GROUP", &group),
        ],
    );
    child.line_with("ready", WAIT);

    rt.block_on(async {
        let mut b_config = manual(&url, qos, &client_id("crash-b"));
        b_config.group_id = Some(group.clone());
        let b = pubsub_mqtt::connect(&b_config).await.expect("connect b");
        b.subscribe(&topic).await.expect("subscribe b");
        let publ = pubsub_mqtt::connect(&config_for(&url, qos))
            .await
            .expect("connect publisher");
        const N: u32 = 200;
        for i in 0..N {
            publ.publish(&topic, seq(i)).await.expect("publish");
        }
        publ.flush().await.expect("flush");

        // Until A (in the child) holds and B has acked all N between them.
        let mut at_b: BTreeMap<u32, u32> = BTreeMap::new();
        let mut held = Vec::new();
        let deadline = Instant::now() + WAIT;
        while (held.len() + at_b.len()) < N as usize && Instant::now() < deadline {
            take_acking(&b, &mut at_b, Duration::from_millis(50)).await;
            while let Some(line) = child.try_line(Duration::from_millis(1)) {
                if let Some(s) = line.strip_prefix("held ") {
                    held.push(s.parse::<u32>().expect("a sequence number"));
                }
            }
        }
        assert_eq!(held.len() + at_b.len(), N as usize, "the group shared all");
        assert!(!held.is_empty() && !at_b.is_empty(), "both members got some");
        child.kill();
        let killed = Instant::now();

        // While A is dead: B gets none of what A held; of new messages, A's
        // session still gets its share, waiting for it.
        const M: u32 = 100;
        for i in N..N + M {
            publ.publish(&topic, seq(i)).await.expect("publish");
        }
        publ.flush().await.expect("flush");
        let quiet = Instant::now() + Duration::from_secs(2);
        while Instant::now() < quiet {
            take_acking(&b, &mut at_b, Duration::from_millis(100)).await;
        }
        let to_b_while_dead = at_b.keys().filter(|s| **s >= N).count();
        assert!(
            held.iter().all(|s| !at_b.contains_key(s)),
            "a killed member's unacknowledged messages went to another member"
        );

        // A's client id connects again: its session sends everything it held.
        let reconnect = Instant::now();
        let mut a2_config = a_config.clone();
        a2_config.group_id = Some(group.clone());
        let a2 = pubsub_mqtt::connect(&a2_config).await.expect("connect a again");
        a2.subscribe(&topic).await.expect("subscribe a again");
        let mut at_a2: BTreeMap<u32, u32> = BTreeMap::new();
        let mut held_back_after = None;
        let deadline = Instant::now() + WAIT;
        while at_a2.len() + at_b.len() < (N + M) as usize && Instant::now() < deadline {
            let mut wait = Duration::from_millis(50);
            while let Some(m) = a2.recv_timeout(wait).await.expect("recv a2") {
                wait = Duration::from_millis(1);
                let s = seq_of(&m);
                if held.contains(&s) {
                    assert!(m.redelivered, "a held message comes back with DUP: {m:?}");
                    assert_eq!(m.attempt, 2);
                }
                *at_a2.entry(s).or_default() += 1;
                m.ack().expect("ack a2");
                if held_back_after.is_none() && held.iter().all(|h| at_a2.contains_key(h)) {
                    held_back_after = Some(reconnect.elapsed());
                }
            }
            take_acking(&b, &mut at_b, Duration::from_millis(1)).await;
        }
        let all: std::collections::BTreeSet<u32> = at_b.keys().chain(at_a2.keys()).copied().collect();
        let lost: Vec<u32> = (0..N + M).filter(|s| !all.contains(s)).collect();
        let twice = at_b.values().chain(at_a2.values()).filter(|n| **n > 1).count()
            + at_a2.keys().filter(|s| at_b.contains_key(s)).count();
        let duplicates = held.len() + twice;
        println!(
            "qos {qos}: A held {} of {N} when killed; B got {to_b_while_dead} of the {M} published while A was dead, the rest waited in A's session; \
             A's client id connected again {:?} after the kill and had all it held back {:?} after connecting; \
             lost {}, delivered twice {duplicates} (the {} held, then {twice} more); A again: {:?}; B: {:?}",
            held.len(),
            reconnect.duration_since(killed),
            held_back_after,
            lost.len(),
            held.len(),
            a2.stats(),
            b.stats(),
        );
        assert!(lost.is_empty(), "lost: {lost:?}");
        assert!(held_back_after.is_some(), "everything A held came back");
        assert_eq!(twice, 0, "nothing but what A held was delivered twice");
        assert_eq!(a2.stats().redelivered as usize, held.len(), "{:?}", a2.stats());
        a2.close().await.expect("close a2");
        b.close().await.expect("close b");
    });
}

/// Take what `b` has now (waiting at most `wait` for the first), acking it.
async fn take_acking(b: &pubsub_mqtt::PubSub, seen: &mut BTreeMap<u32, u32>, wait: Duration) {
    let mut wait = wait;
    for _ in 0..1000 {
        let Some(m) = b.recv_timeout(wait).await.expect("recv b") else {
            return;
        };
        *seen.entry(seq_of(&m)).or_default() += 1;
        m.ack().expect("ack b");
        wait = Duration::from_millis(1);
    }
}

/// The child: a group member that prints each message it gets and never
/// settles any, until it is killed (or, bounded, after two minutes).
fn hold_until_killed() {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is set by the parent"));
    let qos: u8 = var("CRASH_QOS").parse().expect("CRASH_QOS");
    let mut config = manual(&var("CRASH_URL"), qos, &var("CRASH_CLIENT_ID"));
    config.group_id = Some(var("CRASH_GROUP"));
    // Never redelivered locally while it waits to be killed.
    config.ack_wait = Duration::from_secs(600);
    let ps = pubsub_mqtt::connect_blocking(&config).expect("child: connect");
    ps.subscribe(var("CRASH_TOPIC")).expect("child: subscribe");
    // On a line of its own: libtest has printed "test <name> ... " without
    // a line break.
    println!("\nready");
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if let Some(m) = ps
            .recv_timeout(Duration::from_millis(200))
            .expect("child: recv")
        {
            println!("held {}", seq_of(&m));
            held.push(m);
        }
    }
}

/// Messages held unsettled across a restart of a broker with persistence:
/// after the reconnect the broker sends them again (same packet ids, DUP);
/// the handle, which still holds them, does not deliver them twice, and
/// the application's acks of the deliveries it has settle them on the
/// broker: the client id connecting again later gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_across_a_broker_restart_are_settled_once() {
    pubsub_testkit::logs::capture();
    let mut broker = tokio::task::block_in_place(|| Mosquitto::builder().persistence(true).start());
    let id = client_id("restart");
    let config = manual(&broker.url(), 1, &id);
    let topic = unique("restart");
    let sub = pubsub_mqtt::connect(&config).await.expect("connect");
    sub.subscribe(&topic).await.expect("subscribe");
    let publ = pubsub_mqtt::connect(&config_for(&broker.url(), 1))
        .await
        .expect("connect publisher");
    for i in 0..10 {
        publ.publish(&topic, seq(i)).await.expect("publish");
    }
    publ.flush().await.expect("flush");
    publ.close().await.expect("close publisher");
    let held = common::recv_n(&sub, 10, WAIT).await;
    assert_eq!(held.len(), 10);

    tokio::task::block_in_place(|| broker.restart());
    let deadline = Instant::now() + WAIT;
    while sub.stats().reconnects == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sub.stats().reconnects, 1, "reconnected");
    // Until the broker has sent every held message again (on a loaded
    // machine that can take more than a second), and a little after.
    let resent = || {
        pubsub_testkit::logs::captured()
            .matches("a message this handle still holds was sent again")
            .count()
    };
    let deadline = Instant::now() + WAIT;
    let mut quiet_after = 0;
    while quiet_after < 5 && Instant::now() < deadline {
        assert!(
            sub.recv_timeout(Duration::from_millis(200))
                .await
                .expect("recv")
                .is_none(),
            "the broker's resends of messages the handle holds are not delivered twice"
        );
        if resent() >= 10 {
            quiet_after += 1;
        }
    }
    assert_eq!(
        resent(),
        10,
        "the broker sent every held message again; logs:\n{}",
        pubsub_testkit::logs::captured()
    );
    for m in held {
        m.ack().expect("ack after the restart");
    }
    // Closed right after the acks: they must reach the broker (before the
    // close read its connection to the end, about one run in eight lost
    // one of them to the reset of a socket dropped with unread data).
    sub.close().await.expect("close");
    let again = pubsub_mqtt::connect(&config).await.expect("connect again");
    again.subscribe(&topic).await.expect("subscribe again");
    let extra = again
        .recv_timeout(Duration::from_secs(1))
        .await
        .expect("recv");
    assert!(
        extra.is_none(),
        "the acks sent after the restart settled every message on the broker; got {:?}; logs:\n{}",
        extra
            .as_ref()
            .map(|m| (seq_of(m), m.attempt, m.redelivered)),
        pubsub_testkit::logs::captured()
    );
    assert_eq!(sub.stats().acked, 10);
}
