//! Print messages from a plain `fn main()` (blocking API), like the Python
//! original's `listen()` loop; stops after 100 messages.
//!
//! ```text
//! MSIGHT_REDIS_MESSAGE_BROKER_HOST=127.0.0.1 cargo run -p pubsub-redis --example redis_subscribe_blocking
//! ```

fn main() -> pubsub_redis::Result<()> {
    let config = pubsub_redis::Config::load()?;
    let ps = pubsub_redis::connect_blocking(&config)?;
    ps.subscribe("demo.topic")?;
    println!("subscribed to demo.topic");
    for msg in ps.listen()?.take(100) {
        println!("{}: {}", msg.topic, String::from_utf8_lossy(&msg.payload));
    }
    ps.close()
}
