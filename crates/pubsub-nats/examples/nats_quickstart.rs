//! The five-line tour: connect, subscribe, publish, listen.
//!
//! Runs on the in-process `memory` backend by default, so it needs no broker:
//!
//! ```text
//! cargo run --example nats_quickstart
//! ```
//!
//! Point it at NATS with `MSIGHT_PUBSUB_BACKEND=nats MSIGHT_NATS_SERVERS=nats://127.0.0.1:4222`.

use pubsub_nats::{blocking::PubSub, Config, Topic};

fn main() -> Result<(), pubsub_nats::Error> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    pubsub_nats::register(); // makes `backend = "nats"` available
    let config = Config::load()?; // defaults, $MSIGHT_PUBSUB_CONFIG file, MSIGHT_* variables

    let ps = PubSub::connect(&config)?;
    let topic = Topic::new("quickstart.greetings")?.with_description("hello messages");
    ps.subscribe(&topic)?;
    for i in 1..=5 {
        ps.publish(&topic, format!("hello #{i}"))?;
    }
    ps.flush()?;
    for msg in ps.listen()?.take(5) {
        println!("{}: {}", msg.topic, String::from_utf8_lossy(&msg.payload));
    }
    let stats = ps.stats();
    println!(
        "backend {}: published {}, received {}, dropped {}",
        ps.backend_name(),
        stats.published,
        stats.received,
        stats.dropped
    );
    ps.close()
}
