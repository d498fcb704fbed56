//! A member of a consumer group in streams mode (async): start several, then
//! run the `publish` example with `MSIGHT_REDIS_MESSAGE_BROKER_MODE=streams`;
//! each message goes to one member.
//!
//! ```text
//! MSIGHT_REDIS_MESSAGE_BROKER_HOST=127.0.0.1 cargo run -p pubsub-redis --example redis_group_async
//! ```

use std::time::Duration;

use pubsub_redis::RedisConfig;
use pubsub_redis::{OverflowPolicy, RedisMode};

#[tokio::main]
async fn main() -> pubsub_redis::Result<()> {
    let mut config = pubsub_redis::Config::load()?;
    config.section_mut::<RedisConfig>().unwrap().mode = RedisMode::Streams;
    config.group_id.get_or_insert_with(|| "demo-workers".into());
    config.buffer.overflow = OverflowPolicy::Block;
    let ps = pubsub_redis::connect(&config).await?;
    ps.subscribe("demo.topic").await?;
    println!("member of {:?}", ps.group_id());
    // Taking a message acknowledges it.
    while let Some(msg) = ps.recv_timeout(Duration::from_secs(60)).await? {
        println!("{}: {}", msg.topic, String::from_utf8_lossy(&msg.payload));
    }
    ps.close().await
}
