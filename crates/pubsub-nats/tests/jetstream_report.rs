//! `jetstream_report` (what `pubsub check` shows of JetStream) and
//! `delete_topic` in JetStream mode, against a real `nats-server -js`: the
//! account, the streams named like `nats.stream` and their consumers, a
//! topic's stream and consumer; deleting a topic purges its messages and
//! deletes the consumers reading it; the report refuses core mode and a
//! server without JetStream, naming `nats.mode`.

mod common;

use common::{js_config, unique};
use pubsub_nats::{jetstream_report, Config, ErrorKind, NatsConfig, NatsMode};
use pubsub_testkit::brokers::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_shows_streams_and_consumers_and_delete_topic_clears_them() {
    let server = tokio::task::block_in_place(NatsServer::start_jetstream);
    let topic = unique("rep", "cam");
    let mut c = js_config(vec![server.url()]);
    c.group_id = Some("grp".into());
    let ps = pubsub_nats::connect(&c).await.unwrap();
    ps.subscribe(topic.as_str()).await.unwrap();
    for i in 0..3u8 {
        ps.publish(topic.as_str(), vec![i]).await.unwrap();
    }
    ps.flush().await.unwrap();
    let consumer = format!("grp_{}", topic.replace('.', "_"));

    let r = jetstream_report(&c, &[]).await.unwrap();
    assert_eq!(r.account.streams, 1, "{r:#?}");
    assert_eq!(r.account.consumers, 1, "{r:#?}");
    assert_eq!(r.stream_template, "msight_{token}");
    assert_eq!(r.streams.len(), 1, "{r:#?}");
    let s = &r.streams[0];
    assert_eq!(s.name, "msight_rep");
    assert_eq!(s.subjects, ["rep", "rep.>"]);
    assert_eq!((s.messages, s.last_seq, s.consumer_count), (3, 3, 1));
    assert_eq!(s.consumers[0].name, consumer);
    assert!(s.consumers[0].durable);
    assert_eq!(s.consumers[0].filter_subject, topic);

    let other = "elsewhere.topic".to_string();
    let r = jetstream_report(&c, &[topic.clone(), other.clone()])
        .await
        .unwrap();
    assert_eq!(r.topics[0].stream.as_deref(), Some("msight_rep"));
    assert_eq!(r.topics[0].consumer.as_deref(), Some(consumer.as_str()));
    assert_eq!(r.topics[0].consumer_named_by.as_deref(), Some("group_id"));
    assert!(r.topics[0].consumer_exists);
    assert_eq!(r.topics[1].stream, None);
    let planned = r.topics[1].would_create.as_ref().unwrap();
    assert_eq!(planned.name, "msight_elsewhere");
    assert_eq!(planned.subjects, ["elsewhere", "elsewhere.>"]);
    assert_eq!(r.streams.len(), 1, "only the stream that exists: {r:#?}");

    // Purged and its consumer deleted, even while subscribed (the
    // subscription ends first, so nothing makes the consumer again).
    ps.delete_topic(topic.as_str()).await.unwrap();
    let r = jetstream_report(&c, std::slice::from_ref(&topic))
        .await
        .unwrap();
    assert!(!r.topics[0].consumer_exists, "{r:#?}");
    let s = &r.streams[0];
    assert_eq!((s.messages, s.consumer_count), (0, 0), "{s:#?}");
    ps.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_refuses_core_mode_and_a_server_without_jetstream() {
    let server = tokio::task::block_in_place(NatsServer::start);
    let mut c: Config = js_config(vec![server.url()]);
    let e = jetstream_report(&c, &[]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
    assert!(
        e.to_string().contains("nats.mode") && e.to_string().contains("-js"),
        "{e}"
    );

    c.section_mut::<NatsConfig>().unwrap().mode = NatsMode::Core;
    let e = jetstream_report(&c, &[]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
    assert!(e.to_string().contains("nats.mode"), "{e}");

    c.section_mut::<NatsConfig>().unwrap().mode = NatsMode::JetStream;
    let e = jetstream_report(&c, &["a..b".to_string()])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidTopic, "{e}");
    assert!(e.to_string().contains("a..b"), "{e}");
}
