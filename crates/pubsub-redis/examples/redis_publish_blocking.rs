//! Publish ten messages from a plain `fn main()` (blocking API).
//!
//! ```text
//! MSIGHT_REDIS_MESSAGE_BROKER_HOST=127.0.0.1 cargo run -p pubsub-redis --example redis_publish_blocking
//! ```

fn main() -> pubsub_redis::Result<()> {
    let config = pubsub_redis::Config::load()?;
    let ps = pubsub_redis::connect_blocking(&config)?;
    for i in 0..10 {
        ps.publish("demo.topic", format!("message {i}"))?; // queued, no round trip
    }
    ps.flush()?;
    println!("published 10 messages; stats {:?}", ps.stats());
    ps.close()
}
