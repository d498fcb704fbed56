//! Publish ten messages from a plain `fn main()`.
//! `MSIGHT_NATS_SERVERS=nats://127.0.0.1:4222 cargo run -p pubsub-nats --example nats_publish_blocking`

use pubsub_nats::{get_nats_config, Topic};

fn main() -> Result<(), pubsub_nats::Error> {
    let ps = pubsub_nats::connect_blocking(&get_nats_config(None)?)?;
    let topic = Topic::new("examples.frames")?;
    for i in 0..10u32 {
        ps.publish(&topic, i.to_be_bytes().to_vec())?; // returns at once; no round trip
    }
    ps.flush()?; // waits until the server has everything
    println!("published {}", ps.stats().published);
    ps.close()
}
