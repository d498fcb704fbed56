//! Headers, and the settling of messages in manual ack mode, for every
//! backend that claims them. A backend that cannot keep a message until it
//! is settled refuses `ack = "manual"` at connect; its cases are skipped
//! with the reason it gives.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pubsub_core::{dead_letter, AckMode, Config, ErrorKind, Headers, Message, PubSub, Support};

use super::{connect, connect_cfg, seq, seq_of, take_n, unique, Harness, Outcome, WAIT};

/// Headers arrive with the message, in order, repeated keys kept; the
/// received message carries the broker's id where the backend claims ids.
pub async fn headers_arrive_in_order(h: &mut dyn Harness) -> Outcome {
    let sub = connect(h).await;
    if !sub.capabilities().headers {
        return Outcome::Skipped("backend declares no headers".into());
    }
    let publ = connect(h).await;
    let topic = unique("headers");
    sub.subscribe(&topic).await.expect("subscribe");
    let headers = Headers::from([
        ("trace-id", "7f3a"),
        ("hop", "camera"),
        ("hop", "detector"),
        ("note", "spaces and ünïcode"),
    ]);
    publ.publish_with_headers(&topic, headers.clone(), "with headers")
        .await
        .expect("publish with headers");
    publ.publish(&topic, "without").await.expect("publish");
    publ.flush().await.expect("flush");
    let got = take_n(&sub, 2, WAIT).await;
    assert_eq!(got.len(), 2, "messages received");
    let with = got
        .iter()
        .find(|m| &m.payload[..] == b"with headers")
        .expect("the message with headers");
    assert_eq!(with.headers, headers, "headers unchanged, in order");
    let without = got
        .iter()
        .find(|m| &m.payload[..] == b"without")
        .expect("the message without");
    assert!(without.headers.is_empty(), "{:?}", without.headers);
    if sub.capabilities().message_ids {
        assert!(
            with.id.is_some() && without.id.is_some(),
            "ids: {:?} {:?}",
            with.id,
            without.id
        );
        assert_ne!(with.id, without.id, "ids differ");
    }
    assert_eq!((with.attempt, with.redelivered), (1, false));
    // A tab passes `Headers::validate`, but MQTT brokers refuse control
    // characters in user properties: it is carried unchanged, or refused
    // with `InvalidHeader` before anything is sent; either way the
    // connection goes on.
    let tabbed = Headers::from([("note", "a\ttab")]);
    let tab_kept = match publ
        .publish_with_headers(&topic, tabbed.clone(), "tab")
        .await
    {
        Ok(()) => true,
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::InvalidHeader, "{e}");
            false
        }
    };
    publ.publish(&topic, "after").await.expect("publish after");
    publ.flush().await.expect("flush");
    let got = take_n(&sub, 1 + usize::from(tab_kept), WAIT).await;
    if tab_kept {
        assert_eq!(&got[0].payload[..], b"tab");
        assert_eq!(got[0].headers, tabbed, "a tab arrives unchanged");
    }
    assert_eq!(
        got.last().map(|m| &m.payload[..]),
        Some(&b"after"[..]),
        "the connection goes on"
    );
    Outcome::Passed
}

/// A backend or mode without headers refuses to publish them, with an
/// `Unsupported` error, instead of dropping them silently.
pub async fn headers_refused_where_unsupported(h: &mut dyn Harness) -> Outcome {
    let publ = connect(h).await;
    if publ.capabilities().headers {
        return Outcome::Skipped("backend has headers".into());
    }
    let e = publ
        .publish_with_headers(unique("no-headers"), Headers::from([("k", "v")]), "x")
        .await
        .expect_err("headers on a backend without them");
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("headers"), "{e}");
    // Bad headers are refused before anything is sent, whatever the backend.
    let e = publ
        .publish_with_headers(unique("bad"), Headers::from([("a:b", "v")]), "x")
        .await
        .expect_err("a key with ':'");
    assert_eq!(e.kind(), ErrorKind::InvalidHeader, "{e}");
    Outcome::Passed
}

/// In auto mode a message is settled when taken: `ack` does nothing, the
/// other settle operations are `Unsupported`; a copy cannot settle.
pub async fn settling_in_auto_mode(h: &mut dyn Harness) -> Outcome {
    let mut auto = h.config();
    auto.ack = AckMode::Auto;
    let sub = connect_cfg(h, auto).await;
    let topic = unique("auto");
    sub.subscribe(&topic).await.expect("subscribe");
    for i in 0..3 {
        sub.publish(&topic, seq(i)).await.expect("publish");
    }
    sub.flush().await.expect("flush");
    let mut got = take_n(&sub, 3, WAIT).await.into_iter();
    let (a, b, c) = (
        got.next().unwrap(),
        got.next().unwrap(),
        got.next().unwrap(),
    );
    assert!(!a.needs_settling());
    assert!(b.in_progress().unwrap_err().is(ErrorKind::Unsupported));
    a.ack().expect("ack in auto mode does nothing");
    let e = b.nak(Duration::ZERO).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("manual"), "{e}");
    assert!(c.term().unwrap_err().is(ErrorKind::Unsupported));
    Outcome::Passed
}

/// A config for a manual-ack handle of the harness.
fn manual(h: &dyn Harness, tune: impl FnOnce(&mut Config)) -> Config {
    let mut c = h.config();
    c.ack = AckMode::Manual;
    tune(&mut c);
    c
}

/// Connect in manual ack mode, or the reason the backend refuses it.
async fn connect_manual(h: &dyn Harness, config: Config) -> Result<PubSub, Outcome> {
    match PubSub::connect_with(&h.factory(), &config).await {
        Ok(ps) => Ok(ps),
        Err(e) if e.kind() == ErrorKind::InvalidConfig => {
            Err(Outcome::Skipped(format!("no manual ack: {e}")))
        }
        Err(e) => panic!("connect in manual ack mode [{}]: {e}", h.label()),
    }
}

macro_rules! manual_or_skip {
    ($h:expr, $config:expr) => {
        match connect_manual($h, $config).await {
            Ok(ps) => ps,
            Err(skipped) => return skipped,
        }
    };
}

async fn recv_one(ps: &PubSub, within: Duration, what: &str) -> Message {
    ps.recv_timeout(within)
        .await
        .expect("recv")
        .unwrap_or_else(|| panic!("{what}: nothing within {within:?}"))
}

/// A message settled with `ack` is not delivered again; one dropped
/// without settling is, after `ack_wait`, with its attempt counted.
pub async fn unsettled_is_redelivered_after_ack_wait(h: &mut dyn Harness) -> Outcome {
    let ack_wait = Duration::from_millis(800);
    let sub = manual_or_skip!(h, manual(h, |c| c.ack_wait = ack_wait));
    if !sub
        .capabilities()
        .settle
        .redeliver_after_ack_wait
        .is_supported()
    {
        return Outcome::Skipped("backend does not redeliver after ack_wait".into());
    }
    let topic = unique("ack-wait");
    sub.subscribe(&topic).await.expect("subscribe");
    let publ = connect(h).await;
    publ.publish(&topic, seq(1)).await.expect("publish");
    publ.publish(&topic, seq(2)).await.expect("publish");
    publ.flush().await.expect("flush");
    let first = recv_one(&sub, WAIT, "first delivery").await;
    let second = recv_one(&sub, WAIT, "second message").await;
    assert!(first.needs_settling());
    assert_eq!((first.attempt, first.redelivered), (1, false));
    let (kept, dropped) = if seq_of(&first) == 1 {
        (first, second)
    } else {
        (second, first)
    };
    kept.ack().expect("ack");
    let dropped_seq = seq_of(&dropped);
    let t0 = Instant::now();
    drop(dropped);
    let again = recv_one(&sub, ack_wait * 10, "redelivery after ack_wait").await;
    let after = t0.elapsed();
    assert_eq!(seq_of(&again), dropped_seq, "the unsettled one comes back");
    assert_eq!((again.attempt, again.redelivered), (2, true));
    assert!(
        after >= ack_wait / 2,
        "redelivered after {after:?}, ack_wait {ack_wait:?}"
    );
    again.ack().expect("ack");
    assert!(
        sub.recv_timeout(ack_wait * 2)
            .await
            .expect("recv")
            .is_none(),
        "nothing more after both were acked"
    );
    let stats = sub.stats();
    assert_eq!((stats.acked, stats.redelivered), (2, 1), "{stats:?}");
    println!("redelivered {after:?} after the drop (ack_wait {ack_wait:?})");
    Outcome::Passed
}

/// `nak(delay)` delivers again no earlier than the delay, attempt counted.
pub async fn nak_with_delay_redelivers_no_earlier(h: &mut dyn Harness) -> Outcome {
    let sub = manual_or_skip!(h, manual(h, |c| c.ack_wait = Duration::from_secs(30)));
    if !sub.capabilities().settle.nak.is_supported() {
        return Outcome::Skipped("backend has no nak".into());
    }
    let topic = unique("nak");
    sub.subscribe(&topic).await.expect("subscribe");
    sub.publish(&topic, seq(7)).await.expect("publish");
    sub.flush().await.expect("flush");
    let delay = Duration::from_millis(600);
    let mut attempts = Vec::new();
    let mut m = recv_one(&sub, WAIT, "first delivery").await;
    for _ in 0..2 {
        attempts.push(m.attempt);
        let t0 = Instant::now();
        m.nak(delay).expect("nak");
        m = recv_one(&sub, WAIT, "delivery after nak").await;
        let took = t0.elapsed();
        assert!(
            took >= delay,
            "redelivered after {took:?}, before the nak delay {delay:?}"
        );
        println!("nak({delay:?}): redelivered after {took:?}");
    }
    attempts.push(m.attempt);
    assert_eq!(attempts, [1, 2, 3], "attempts");
    assert_eq!(seq_of(&m), 7);
    m.ack().expect("ack");
    Outcome::Passed
}

/// Dead letters: a dead-letter subscriber (plain, auto) and a manual
/// subscriber of `topic` with `max_deliver` and `dead_letter_topic` set.
async fn dead_letter_setup(
    h: &dyn Harness,
    max_deliver: u32,
) -> Result<(PubSub, PubSub, String, String), Outcome> {
    let topic = unique("work");
    let dlq = unique("dlq");
    let config = manual(h, |c| {
        c.max_deliver = max_deliver;
        c.dead_letter_topic = Some(dlq.clone());
        c.ack_wait = Duration::from_secs(30);
    });
    let sub = connect_manual(h, config).await?;
    if !sub.capabilities().settle.dead_letter.is_supported() {
        return Err(Outcome::Skipped("backend has no dead letter".into()));
    }
    let dead = connect(h).await;
    dead.subscribe(&dlq)
        .await
        .expect("subscribe to the dead letters");
    sub.subscribe(&topic).await.expect("subscribe");
    Ok((sub, dead, topic, dlq))
}

fn assert_dead_letter(m: &Message, topic: &str, reason: &str, attempts: u32) {
    let h = &m.headers;
    assert_eq!(h.get(dead_letter::REASON), Some(reason), "{h:?}");
    assert_eq!(h.get(dead_letter::TOPIC), Some(topic), "{h:?}");
    assert_eq!(
        h.get(dead_letter::ATTEMPTS),
        Some(attempts.to_string().as_str()),
        "{h:?}"
    );
    assert!(
        h.get(dead_letter::ID).is_some_and(|id| !id.is_empty()),
        "{h:?}"
    );
}

/// A message nak'ed every time goes to the dead-letter topic after exactly
/// `max_deliver` deliveries, with headers saying why; the messages behind
/// it keep flowing meanwhile.
pub async fn max_deliver_then_dead_letter(h: &mut dyn Harness) -> Outcome {
    const MAX: u32 = 3;
    let (sub, dead, topic, _) = match dead_letter_setup(h, MAX).await {
        Ok(s) => s,
        Err(skipped) => return skipped,
    };
    let publ = connect(h).await;
    let poison = Headers::from([("kind", "poison")]);
    if sub.capabilities().headers {
        publ.publish_with_headers(&topic, poison.clone(), seq(0))
            .await
            .expect("publish");
    } else {
        publ.publish(&topic, seq(0)).await.expect("publish");
    }
    for i in 1..=20 {
        publ.publish(&topic, seq(i)).await.expect("publish");
    }
    publ.flush().await.expect("flush");
    let mut poison_attempts = Vec::new();
    let mut good = BTreeMap::new();
    let deadline = Instant::now() + WAIT;
    while (good.len() < 20 || poison_attempts.len() < MAX as usize) && Instant::now() < deadline {
        let Some(m) = sub
            .recv_timeout(Duration::from_millis(500))
            .await
            .expect("recv")
        else {
            continue;
        };
        if seq_of(&m) == 0 {
            poison_attempts.push(m.attempt);
            m.nak(Duration::from_millis(50)).expect("nak");
        } else {
            *good.entry(seq_of(&m)).or_insert(0) += 1;
            m.ack().expect("ack");
        }
    }
    assert_eq!(good.len(), 20, "the messages behind the poison arrived");
    assert_eq!(
        poison_attempts,
        [1, 2, 3],
        "delivered exactly max_deliver times"
    );
    let letter = recv_one(&dead, WAIT, "the dead letter").await;
    assert_eq!(seq_of(&letter), 0);
    assert_dead_letter(&letter, &topic, "max_deliver", MAX);
    if sub.capabilities().headers {
        assert_eq!(
            letter.headers.get("kind"),
            Some("poison"),
            "its own headers kept"
        );
    }
    assert!(
        sub.recv_timeout(Duration::from_millis(500))
            .await
            .expect("recv")
            .is_none(),
        "not delivered again after the dead letter"
    );
    assert_eq!(sub.stats().dead_lettered, 1, "{:?}", sub.stats());
    Outcome::Passed
}

/// `term` sends a message straight to the dead letter.
pub async fn term_goes_to_dead_letter(h: &mut dyn Harness) -> Outcome {
    let (sub, dead, topic, _) = match dead_letter_setup(h, 5).await {
        Ok(s) => s,
        Err(skipped) => return skipped,
    };
    if !sub.capabilities().settle.term.is_supported() {
        return Outcome::Skipped("backend has no term".into());
    }
    sub.publish(&topic, seq(9)).await.expect("publish");
    sub.flush().await.expect("flush");
    let m = recv_one(&sub, WAIT, "the message").await;
    m.term().expect("term");
    let letter = recv_one(&dead, WAIT, "the dead letter").await;
    assert_eq!(seq_of(&letter), 9);
    assert_dead_letter(&letter, &topic, "term", 1);
    assert!(
        sub.recv_timeout(Duration::from_millis(500))
            .await
            .expect("recv")
            .is_none(),
        "a termed message is not delivered again"
    );
    Outcome::Passed
}

/// Without a dead-letter topic, a message given up is discarded and counted.
pub async fn given_up_without_dead_letter_is_discarded_and_counted(h: &mut dyn Harness) -> Outcome {
    let sub = manual_or_skip!(h, manual(h, |c| c.max_deliver = 2));
    if !sub.capabilities().settle.term.is_supported() {
        return Outcome::Skipped("backend has no term".into());
    }
    let topic = unique("discard");
    sub.subscribe(&topic).await.expect("subscribe");
    sub.publish(&topic, seq(1)).await.expect("publish");
    sub.publish(&topic, seq(2)).await.expect("publish");
    sub.flush().await.expect("flush");
    for _ in 0..2 {
        let m = recv_one(&sub, WAIT, "message").await;
        m.term().expect("term");
    }
    let deadline = Instant::now() + WAIT;
    while sub.stats().discarded < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sub.stats().discarded, 2, "{:?}", sub.stats());
    assert!(sub
        .recv_timeout(Duration::from_millis(300))
        .await
        .expect("recv")
        .is_none());
    Outcome::Passed
}

/// A handler slower than `ack_wait` that says `in_progress` is not
/// delivered the message again while it works.
pub async fn in_progress_holds_off_redelivery(h: &mut dyn Harness) -> Outcome {
    let ack_wait = Duration::from_millis(600);
    let sub = manual_or_skip!(h, manual(h, |c| c.ack_wait = ack_wait));
    if sub.capabilities().settle.in_progress == Support::Unsupported {
        return Outcome::Skipped("backend has no in_progress".into());
    }
    let topic = unique("progress");
    sub.subscribe(&topic).await.expect("subscribe");
    sub.publish(&topic, seq(3)).await.expect("publish");
    sub.flush().await.expect("flush");
    let m = recv_one(&sub, WAIT, "the message").await;
    // Work for four times ack_wait, saying so twice per ack_wait.
    for _ in 0..8 {
        assert!(
            sub.recv_timeout(ack_wait / 2)
                .await
                .expect("recv")
                .is_none(),
            "redelivered while in progress"
        );
        m.in_progress().expect("in_progress");
    }
    m.ack().expect("ack");
    assert!(sub
        .recv_timeout(ack_wait * 2)
        .await
        .expect("recv")
        .is_none());
    assert_eq!(sub.stats().redelivered, 0);
    Outcome::Passed
}

/// With `max_in_flight = K`, at most K unsettled messages are held; the
/// next arrives when one is settled, and nothing is dropped meanwhile.
pub async fn max_in_flight_bounds_unsettled_messages(h: &mut dyn Harness) -> Outcome {
    const K: usize = 5;
    let sub = manual_or_skip!(h, manual(h, |c| c.max_in_flight = K));
    let topic = unique("in-flight");
    sub.subscribe(&topic).await.expect("subscribe");
    let publ = connect(h).await;
    let publisher = {
        let (publ, topic) = (publ.clone(), topic.clone());
        tokio::spawn(async move {
            for i in 0..30 {
                publ.publish(&topic, seq(i)).await.expect("publish");
            }
            publ.flush().await.expect("flush");
        })
    };
    // Held unsettled (recv_n would acknowledge them).
    let mut held = Vec::with_capacity(K);
    for _ in 0..K {
        held.push(recv_one(&sub, WAIT, "a message within max_in_flight").await);
    }
    assert!(
        sub.recv_timeout(Duration::from_millis(500))
            .await
            .expect("recv")
            .is_none(),
        "more than max_in_flight unsettled messages"
    );
    let mut seen: Vec<u32> = held.iter().map(seq_of).collect();
    while seen.len() < 30 {
        held.remove(0).ack().expect("ack");
        let next = recv_one(&sub, WAIT, "the next after a settle").await;
        seen.push(seq_of(&next));
        held.push(next);
        assert!(held.len() <= K);
    }
    for m in held {
        m.ack().expect("ack");
    }
    publisher.await.expect("publisher");
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 30, "every message, none dropped");
    assert_eq!(sub.stats().dropped, 0);
    Outcome::Passed
}

/// A group member that goes away holding unsettled messages (closed here;
/// the backend crates kill a process): the other member gets every one.
pub async fn group_member_gone_its_messages_go_to_another(h: &mut dyn Harness) -> Outcome {
    let ack_wait = Duration::from_millis(700);
    let config = manual(h, |c| c.ack_wait = ack_wait);
    let a = manual_or_skip!(h, config.clone());
    if !a.capabilities().groups {
        return Outcome::Skipped("backend declares no groups".into());
    }
    if let Some(why) = h.gone_member_keeps_its_messages() {
        return Outcome::Skipped(why);
    }
    let b = connect_cfg(h, config).await;
    let topic = unique("gone");
    let group = unique("workers").replace('.', "-");
    a.subscribe_in(&topic, Some(&group))
        .await
        .expect("subscribe a");
    b.subscribe_in(&topic, Some(&group))
        .await
        .expect("subscribe b");
    let publ = connect(h).await;
    for i in 0..20 {
        publ.publish(&topic, seq(i)).await.expect("publish");
    }
    publ.flush().await.expect("flush");
    // A takes what it gets and never settles it; B acks everything.
    let mut at_a = Vec::new();
    let mut at_b = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while at_a.len() + at_b.len() < 20 && Instant::now() < deadline {
        if let Some(m) = a
            .recv_timeout(Duration::from_millis(20))
            .await
            .expect("recv")
        {
            at_a.push(m);
        }
        while let Some(m) = b
            .recv_timeout(Duration::from_millis(20))
            .await
            .expect("recv")
        {
            *at_b.entry(seq_of(&m)).or_insert(0) += 1;
            m.ack().expect("ack");
        }
    }
    assert!(!at_a.is_empty(), "the group shared the messages");
    let held: Vec<u32> = at_a.iter().map(seq_of).collect();
    a.close().await.expect("close a");
    let e = at_a.pop().unwrap().ack().expect_err("ack after close");
    assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
    drop(at_a);
    let deadline = Instant::now() + ack_wait * 20;
    while held.iter().any(|s| !at_b.contains_key(s)) && Instant::now() < deadline {
        if let Some(m) = b
            .recv_timeout(Duration::from_millis(100))
            .await
            .expect("recv")
        {
            assert!(m.redelivered || !held.contains(&seq_of(&m)), "{m:?}");
            *at_b.entry(seq_of(&m)).or_insert(0) += 1;
            m.ack().expect("ack");
        }
    }
    let lost: Vec<&u32> = held.iter().filter(|s| !at_b.contains_key(s)).collect();
    assert!(
        lost.is_empty(),
        "held by the member that went away, never redelivered: {lost:?}"
    );
    assert_eq!(at_b.len(), 20, "every message reached the remaining member");
    println!(
        "{} messages held by the closed member came to the other",
        held.len()
    );
    Outcome::Passed
}
