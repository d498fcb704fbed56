//! Print what arrives on `examples/#` (an MQTT wildcard) as a `Stream`, for 30 seconds.
//! `MSIGHT_MQTT_URL=mqtt://127.0.0.1:1883 cargo run -p pubsub-mqtt --example mqtt_subscribe_async`

use std::time::Duration;

use futures::StreamExt;
use pubsub_mqtt::get_mqtt_config;

#[tokio::main]
async fn main() -> Result<(), pubsub_mqtt::Error> {
    let ps = pubsub_mqtt::connect(&get_mqtt_config(None)?).await?;
    ps.subscribe("examples/#").await?;
    let mut messages = ps.messages()?;
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(msg) = messages.next().await {
            println!("{}: {} bytes", msg.topic, msg.payload.len());
        }
    })
    .await;
    ps.close().await
}
