//! Print what arrives on `examples.>` (a wildcard) as a `Stream`, for 30 seconds.
//! `MSIGHT_NATS_SERVERS=nats://127.0.0.1:4222 cargo run -p pubsub-nats --example nats_subscribe_async`

use std::time::Duration;

use futures::StreamExt;
use pubsub_nats::get_nats_config;

#[tokio::main]
async fn main() -> Result<(), pubsub_nats::Error> {
    let ps = pubsub_nats::connect(&get_nats_config(None)?).await?;
    ps.subscribe("examples.>").await?;
    let mut messages = ps.messages()?;
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(msg) = messages.next().await {
            println!("{}: {} bytes", msg.topic, msg.payload.len());
        }
    })
    .await;
    ps.close().await
}
