//! Publish ten messages with the async API.
//! `MSIGHT_MQTT_URL=mqtt://127.0.0.1:1883 cargo run -p pubsub-mqtt --example mqtt_publish_async`

use pubsub_mqtt::{get_mqtt_config, Topic};

#[tokio::main]
async fn main() -> Result<(), pubsub_mqtt::Error> {
    let ps = pubsub_mqtt::connect(&get_mqtt_config(None)?).await?;
    let topic = Topic::new("examples/frames")?;
    for i in 0..10u32 {
        ps.publish(&topic, i.to_be_bytes().to_vec()).await?; // no round trip per message
    }
    ps.flush().await?; // waits for the broker's acknowledgements
    println!("published {}", ps.stats().published);
    ps.close().await
}
