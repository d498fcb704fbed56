//! The conformance suite against a real `nats-server` started on a free
//! loopback port for each case.

use pubsub_nats::NatsConfig;
use pubsub_nats::{BackendFactory, Config};
use pubsub_testkit::brokers::{free_port, NatsServer};
use pubsub_testkit::conformance::{self, Harness, Suite};

struct Nats {
    server: NatsServer,
}

fn config_for(url: String) -> Config {
    let mut c = Config::default();
    c.backend = "nats".into();
    c.section_mut::<NatsConfig>().unwrap().servers = vec![url];
    c
}

#[pubsub_nats::pubsub_core::async_trait]
impl Harness for Nats {
    fn factory(&self) -> BackendFactory {
        pubsub_core::BackendFactory::of::<pubsub_nats::NatsBackend>()
    }

    fn config(&self) -> Config {
        config_for(self.server.url())
    }

    async fn stop_broker(&mut self) {
        tokio::task::block_in_place(|| self.server.stop());
    }

    async fn start_broker(&mut self) {
        tokio::task::block_in_place(|| self.server.start_again());
    }

    fn dead_config(&self) -> Option<Config> {
        Some(config_for(format!("nats://127.0.0.1:{}", free_port())))
    }
}

async fn nats() -> Nats {
    Nats {
        server: tokio::task::block_in_place(NatsServer::start),
    }
}

fn main() {
    conformance::main(vec![Suite::new("nats", nats)]);
}
