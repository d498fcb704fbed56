//! Print what arrives on `examples/#` (an MQTT wildcard), seed-style, until
//! 30 seconds pass without a message.
//! `MSIGHT_MQTT_URL=mqtt://127.0.0.1:1883 cargo run -p pubsub-mqtt --example mqtt_subscribe_blocking`

use std::time::Duration;

use pubsub_mqtt::get_mqtt_config;

fn main() -> Result<(), pubsub_mqtt::Error> {
    let ps = pubsub_mqtt::connect_blocking(&get_mqtt_config(None)?)?;
    ps.subscribe("examples/#")?;
    while let Some(msg) = ps.recv_timeout(Duration::from_secs(30))? {
        println!("{}: {} bytes", msg.topic, msg.payload.len());
    }
    ps.close()
}
