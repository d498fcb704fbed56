//! The conformance suite against a real `nats-server` started on a free
//! loopback port for each case: core NATS (`nats`), and JetStream
//! (`nats.mode = "jetstream"`, the server started with `-js` and its store
//! in the case's own directory) in auto ack mode (`jetstream`) and with
//! every client in manual ack mode (`jetstream_manual`).

use pubsub_nats::{AckMode, BackendFactory, Config, NatsConfig, NatsMode};
use pubsub_testkit::brokers::{free_port, NatsServer};
use pubsub_testkit::conformance::{self, Harness, Suite};

struct Nats {
    server: NatsServer,
    mode: NatsMode,
    ack: AckMode,
}

fn config_for(url: String, mode: NatsMode, ack: AckMode) -> Config {
    let mut c = Config::default();
    c.backend = "nats".into();
    c.ack = ack;
    let nats = c.section_mut::<NatsConfig>().unwrap();
    nats.servers = vec![url];
    nats.mode = mode;
    c
}

#[pubsub_nats::pubsub_core::async_trait]
impl Harness for Nats {
    fn factory(&self) -> BackendFactory {
        pubsub_core::BackendFactory::of::<pubsub_nats::NatsBackend>()
    }

    fn config(&self) -> Config {
        config_for(self.server.url(), self.mode, self.ack)
    }

    async fn stop_broker(&mut self) {
        tokio::task::block_in_place(|| self.server.stop());
    }

    async fn start_broker(&mut self) {
        tokio::task::block_in_place(|| self.server.start_again());
    }

    fn dead_config(&self) -> Option<Config> {
        Some(config_for(
            format!("nats://127.0.0.1:{}", free_port()),
            self.mode,
            self.ack,
        ))
    }

    fn label(&self) -> String {
        match (self.mode, self.ack) {
            (NatsMode::Core, _) => "nats".into(),
            (_, AckMode::Manual) => "nats jetstream, ack = manual".into(),
            _ => "nats jetstream".into(),
        }
    }
}

async fn nats() -> Nats {
    Nats {
        server: tokio::task::block_in_place(NatsServer::start),
        mode: NatsMode::Core,
        ack: AckMode::Auto,
    }
}

async fn jetstream(ack: AckMode) -> Nats {
    Nats {
        server: tokio::task::block_in_place(NatsServer::start_jetstream),
        mode: NatsMode::JetStream,
        ack,
    }
}

fn main() {
    conformance::main(vec![
        Suite::new("nats", nats),
        Suite::new("jetstream", || jetstream(AckMode::Auto)),
        Suite::new("jetstream_manual", || jetstream(AckMode::Manual)),
    ]);
}
