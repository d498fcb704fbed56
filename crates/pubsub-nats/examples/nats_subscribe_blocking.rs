//! Print what arrives on `examples.frames` for 30 seconds.
//! `MSIGHT_NATS_SERVERS=nats://127.0.0.1:4222 cargo run -p pubsub-nats --example nats_subscribe_blocking`

use std::time::{Duration, Instant};

use pubsub_nats::{get_nats_config, Topic};

fn main() -> Result<(), pubsub_nats::Error> {
    let ps = pubsub_nats::connect_blocking(&get_nats_config(None)?)?;
    ps.subscribe(&Topic::new("examples.frames")?)?;
    let end = Instant::now() + Duration::from_secs(30);
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match ps.recv_timeout(left)? {
            Some(msg) => println!("{}: {} bytes", msg.topic, msg.payload.len()),
            None => break,
        }
    }
    ps.close()
}
