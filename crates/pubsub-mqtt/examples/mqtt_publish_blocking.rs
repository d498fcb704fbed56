//! Publish ten messages from a plain `fn main()`.
//! `MSIGHT_MQTT_URL=mqtt://127.0.0.1:1883 cargo run -p pubsub-mqtt --example mqtt_publish_blocking`

use pubsub_mqtt::{get_mqtt_config, Topic};

fn main() -> Result<(), pubsub_mqtt::Error> {
    let ps = pubsub_mqtt::connect_blocking(&get_mqtt_config(None)?)?;
    let topic = Topic::new("examples/frames")?;
    for i in 0..10u32 {
        ps.publish(&topic, i.to_be_bytes().to_vec())?; // returns at once; no round trip
    }
    ps.flush()?; // waits until the broker acknowledged everything (QoS 1 by default)
    println!("published {}", ps.stats().published);
    ps.close()
}
