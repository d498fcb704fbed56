//! Publish ten messages on your tokio runtime.
//! `MSIGHT_NATS_SERVERS=nats://127.0.0.1:4222 cargo run -p pubsub-nats --example nats_publish_async`

use pubsub_nats::{get_nats_config, Topic};

#[tokio::main]
async fn main() -> Result<(), pubsub_nats::Error> {
    let ps = pubsub_nats::connect(&get_nats_config(None)?).await?;
    let topic = Topic::new("examples.frames")?;
    for i in 0..10u32 {
        ps.publish(&topic, i.to_be_bytes().to_vec()).await?;
    }
    ps.flush().await?;
    println!("published {}", ps.stats().published);
    ps.close().await
}
