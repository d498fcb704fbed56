//! Publish ten messages (async).
//!
//! ```text
//! MSIGHT_REDIS_MESSAGE_BROKER_HOST=127.0.0.1 cargo run -p pubsub-redis --example redis_publish_async
//! ```
//! Set `MSIGHT_REDIS_MESSAGE_BROKER_MODE=streams` for Redis Streams.

#[tokio::main]
async fn main() -> pubsub_redis::Result<()> {
    let config = pubsub_redis::Config::load()?;
    let ps = pubsub_redis::connect(&config).await?;
    for i in 0..10 {
        ps.publish("demo.topic", format!("message {i}")).await?;
    }
    ps.flush().await?;
    println!("published 10 messages; stats {:?}", ps.stats());
    ps.close().await
}
