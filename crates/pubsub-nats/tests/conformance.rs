//! The conformance suite against a real `nats-server` started on a free
//! loopback port for each case.

use pubsub_core::testkit::brokers::{free_port, NatsServer};
use pubsub_core::testkit::conformance::Harness;
use pubsub_nats::NatsConfig;
use pubsub_nats::{BackendFactory, Config};

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

    async fn restart_broker(&mut self) -> bool {
        tokio::task::block_in_place(|| self.server.restart());
        true
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

pubsub_core::conformance_suite!(nats);
