//! Print the messages of a topic as they arrive (async), for 60 s at most.
//!
//! ```text
//! MSIGHT_REDIS_MESSAGE_BROKER_HOST=127.0.0.1 cargo run -p pubsub-redis --example redis_subscribe_async
//! ```

use std::time::Duration;

#[tokio::main]
async fn main() -> pubsub_redis::Result<()> {
    let config = pubsub_redis::Config::load()?;
    let ps = pubsub_redis::connect(&config).await?;
    ps.subscribe("demo.topic").await?;
    println!("subscribed to demo.topic");
    while let Some(msg) = ps.recv_timeout(Duration::from_secs(60)).await? {
        println!("{}: {}", msg.topic, String::from_utf8_lossy(&msg.payload));
    }
    ps.close().await
}
