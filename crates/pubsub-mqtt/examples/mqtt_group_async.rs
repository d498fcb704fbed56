//! Three workers in the group `workers` (an MQTT v5 shared subscription)
//! share 30 jobs with the async API: each job goes to one of them.
//! `MSIGHT_MQTT_URL=mqtt://127.0.0.1:1883 cargo run -p pubsub-mqtt --example mqtt_group_async`

use std::time::Duration;

use pubsub_mqtt::{get_mqtt_config, Topic};

#[tokio::main]
async fn main() -> Result<(), pubsub_mqtt::Error> {
    let config = get_mqtt_config(Some("workers"))?;
    let topic = Topic::new("examples/jobs")?;
    let mut workers = Vec::new();
    for _ in 0..3 {
        let w = pubsub_mqtt::connect(&config).await?;
        w.subscribe(&topic).await?; // joins the group `workers`
        workers.push(w);
    }
    let producer = pubsub_mqtt::connect(&get_mqtt_config(None)?).await?;
    for job in 0..30u32 {
        producer.publish(&topic, job.to_be_bytes().to_vec()).await?;
    }
    producer.flush().await?;
    let counts = futures::future::join_all(workers.iter().map(|w| async move {
        let mut n = 0;
        while let Ok(Some(_job)) = w.recv_timeout(Duration::from_millis(500)).await {
            n += 1;
        }
        n
    }))
    .await;
    for (i, n) in counts.iter().enumerate() {
        println!("worker {i} took {n} jobs");
    }
    Ok(())
}
