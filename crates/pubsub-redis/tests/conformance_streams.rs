//! The conformance suite in `streams` mode (Redis Streams, consumer groups), against a
//! real `redis-server` started on a free loopback port for each case.

mod common;

use pubsub_core::testkit::brokers::{free_port, RedisServer};
use pubsub_core::testkit::conformance::Harness;
use pubsub_redis::{BackendFactory, Config, RedisMode};

const MODE: RedisMode = RedisMode::Streams;

struct Redis {
    server: RedisServer,
}

#[pubsub_redis::pubsub_core::async_trait]
impl Harness for Redis {
    fn factory(&self) -> BackendFactory {
        pubsub_core::BackendFactory::of::<pubsub_redis::RedisBackend>()
    }

    fn config(&self) -> Config {
        common::config_for(&self.server, MODE)
    }

    async fn restart_broker(&mut self) -> bool {
        tokio::task::block_in_place(|| self.server.restart());
        true
    }

    fn dead_config(&self) -> Option<Config> {
        Some(common::config_port(free_port(), MODE))
    }

    fn label(&self) -> String {
        "redis mode=streams".into()
    }
}

async fn redis() -> Redis {
    Redis {
        server: tokio::task::block_in_place(RedisServer::start),
    }
}

pubsub_core::conformance_suite!(redis);
