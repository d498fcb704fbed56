//! Three workers in the queue group `workers` share 30 jobs (async).
//! `MSIGHT_NATS_SERVERS=nats://127.0.0.1:4222 cargo run -p pubsub-nats --example nats_group_async`

use std::time::Duration;

use pubsub_nats::get_nats_config;

#[tokio::main]
async fn main() -> Result<(), pubsub_nats::Error> {
    let config = get_nats_config(Some("workers"))?;
    let mut workers = Vec::new();
    for _ in 0..3 {
        let w = pubsub_nats::connect(&config).await?;
        w.subscribe("examples.jobs").await?;
        workers.push(w);
    }
    let producer = pubsub_nats::connect(&get_nats_config(None)?).await?;
    for job in 0..30u32 {
        producer
            .publish("examples.jobs", job.to_be_bytes().to_vec())
            .await?;
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
    println!("jobs per worker: {counts:?}");
    Ok(())
}
