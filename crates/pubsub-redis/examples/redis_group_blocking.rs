//! A member of a consumer group in streams mode, blocking API.
//!
//! ```text
//! MSIGHT_REDIS_MESSAGE_BROKER_HOST=127.0.0.1 cargo run -p pubsub-redis --example redis_group_blocking
//! ```

use pubsub_redis::RedisConfig;
use pubsub_redis::{OverflowPolicy, RedisMode};

fn main() -> pubsub_redis::Result<()> {
    let mut config = pubsub_redis::Config::load()?;
    config.section_mut::<RedisConfig>().unwrap().mode = RedisMode::Streams;
    config.group_id.get_or_insert_with(|| "demo-workers".into());
    config.buffer.overflow = OverflowPolicy::Block;
    let ps = pubsub_redis::connect_blocking(&config)?;
    ps.subscribe("demo.topic")?;
    println!("member of {:?}", config.group_id);
    for msg in ps.listen()?.take(100) {
        println!("{}: {}", msg.topic, String::from_utf8_lossy(&msg.payload));
    }
    ps.close()
}
