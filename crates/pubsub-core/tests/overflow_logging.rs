//! Overflow is logged once when a burst starts and once when it ends, not
//! once per dropped message, even when the reader keeps taking a message
//! now and then while the buffer stays nearly full.

use std::sync::Arc;

use pubsub_core::{BufferConfig, Counters, Inbox, Message, OverflowPolicy, Recv};
use pubsub_testkit::logs;

#[tokio::test]
async fn one_warning_per_burst() {
    logs::capture();
    let config = BufferConfig {
        capacity: 10,
        max_bytes: 1 << 20,
        overflow: OverflowPolicy::DropNewest,
    };
    let inbox = Inbox::new(&config, Arc::new(Counters::default()));
    inbox.set_subscribed(true);
    let msg = || Message::new("overflow.log", vec![0u8; 16]);
    // Fill, then a reader slightly slower than the arrivals: take one, two arrive.
    for _ in 0..10 {
        inbox.deliver(msg()).await;
    }
    for _ in 0..100 {
        assert!(matches!(inbox.recv().await, Recv::Message(_)));
        inbox.deliver(msg()).await;
        inbox.deliver(msg()).await;
    }
    let dropped = inbox.counters().snapshot().dropped;
    assert_eq!(dropped, 100);
    // The reader catches up below half the buffer: the burst ends.
    for _ in 0..8 {
        assert!(matches!(inbox.recv().await, Recv::Message(_)));
    }
    inbox.deliver(msg()).await;

    let text = logs::captured();
    let started = text.matches("receive buffer full").count();
    let ended = text.matches("receive buffer has room again").count();
    assert_eq!((started, ended), (1, 1), "{text}");
    assert!(text.contains("100 messages were dropped"), "{text}");
}
