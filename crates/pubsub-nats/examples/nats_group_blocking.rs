//! Three workers in the queue group `workers` share 30 jobs: each job goes to one of them.
//! `MSIGHT_NATS_SERVERS=nats://127.0.0.1:4222 cargo run -p pubsub-nats --example nats_group_blocking`

use std::time::Duration;

use pubsub_nats::{get_nats_config, Topic};

fn main() -> Result<(), pubsub_nats::Error> {
    let config = get_nats_config(Some("workers"))?;
    let topic = Topic::new("examples.jobs")?;
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let w = pubsub_nats::connect_blocking(&config)?;
            w.subscribe(&topic)?; // joins the group `workers`
            Ok(w)
        })
        .collect::<Result<_, pubsub_nats::Error>>()?;
    let producer = pubsub_nats::connect_blocking(&get_nats_config(None)?)?;
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
