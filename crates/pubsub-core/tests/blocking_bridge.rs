//! The blocking API called from places where a naive bridge panics or
//! spins: a tokio current-thread runtime, a tokio multi-thread worker past
//! its cooperative budget, and another futures executor.

use std::time::Duration;

use pubsub_core::MemoryConfig;
use pubsub_core::{blocking::PubSub, Config};

fn config(ns: &str) -> Config {
    let mut c = Config::default();
    c.section_mut::<MemoryConfig>().unwrap().namespace = format!("bridge-{ns}");
    c
}

fn exercise(ps: &PubSub, n: usize) {
    ps.subscribe("bridge.t").unwrap();
    for i in 0..n {
        ps.publish("bridge.t", i.to_string()).unwrap();
    }
    ps.flush().unwrap();
    for _ in 0..n {
        assert!(ps.recv_timeout(Duration::from_secs(5)).unwrap().is_some());
    }
}

#[tokio::test(flavor = "current_thread")]
async fn inside_a_current_thread_runtime() {
    let ps = PubSub::connect(&config("ct")).unwrap();
    exercise(&ps, 1000);
    ps.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inside_a_multi_thread_worker() {
    let ps = PubSub::connect(&config("mt")).unwrap();
    exercise(&ps, 1000);
    drop(ps); // unclosed: dropping inside the runtime must not panic either
}

#[test]
fn inside_another_futures_executor() {
    futures::executor::block_on(async {
        let ps = PubSub::connect(&config("fx")).unwrap();
        exercise(&ps, 100);
        ps.close().unwrap();
    });
}
