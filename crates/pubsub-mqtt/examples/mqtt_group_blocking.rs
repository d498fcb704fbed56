//! Three workers in the group `workers` (an MQTT v5 shared subscription,
//! `$share/workers/examples/jobs`) share 30 jobs: each job goes to one of them.
//! `MSIGHT_MQTT_URL=mqtt://127.0.0.1:1883 cargo run -p pubsub-mqtt --example mqtt_group_blocking`

use std::time::Duration;

use pubsub_mqtt::{get_mqtt_config, Topic};

fn main() -> Result<(), pubsub_mqtt::Error> {
    let config = get_mqtt_config(Some("workers"))?;
    let topic = Topic::new("examples/jobs")?;
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let w = pubsub_mqtt::connect_blocking(&config)?;
            w.subscribe(&topic)?; // joins the group `workers`
            Ok(w)
        })
        .collect::<Result<_, pubsub_mqtt::Error>>()?;
    let producer = pubsub_mqtt::connect_blocking(&get_mqtt_config(None)?)?;
    for job in 0..30u32 {
        producer.publish(&topic, job.to_be_bytes().to_vec())?;
    }
    producer.flush()?;
    std::thread::scope(|s| {
        for (i, w) in workers.iter().enumerate() {
            s.spawn(move || {
                let mut n = 0;
                while let Ok(Some(_job)) = w.recv_timeout(Duration::from_millis(500)) {
                    n += 1;
                }
                println!("worker {i} took {n} jobs");
            });
        }
    });
    Ok(())
}
