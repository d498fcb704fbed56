//! The conformance suite in both modes, against a real `redis-server`
//! started on a free loopback port for each case: `pubsub`
//! (PUBLISH/SUBSCRIBE, as the Python original) and `streams` (Redis
//! Streams, consumer groups; the server keeps its data in an append-only
//! file synced on every write, so that a restart loses nothing it took).

mod common;

use pubsub_redis::{BackendFactory, Config, RedisBackend, RedisMode};
use pubsub_testkit::brokers::{free_port, RedisServer};
use pubsub_testkit::conformance::{self, Harness, Suite};

struct Redis {
    server: RedisServer,
    mode: RedisMode,
}

#[pubsub_redis::pubsub_core::async_trait]
impl Harness for Redis {
    fn factory(&self) -> BackendFactory {
        BackendFactory::of::<RedisBackend>()
    }

    fn config(&self) -> Config {
        common::config_for(&self.server, self.mode)
    }

    async fn stop_broker(&mut self) {
        tokio::task::block_in_place(|| self.server.stop());
    }

    async fn start_broker(&mut self) {
        tokio::task::block_in_place(|| self.server.start_again());
    }

    fn dead_config(&self) -> Option<Config> {
        Some(common::config_port(free_port(), self.mode))
    }

    fn label(&self) -> String {
        format!("redis mode={:?}", self.mode).to_lowercase()
    }
}

async fn pubsub() -> Redis {
    Redis {
        server: tokio::task::block_in_place(RedisServer::start),
        mode: RedisMode::PubSub,
    }
}

async fn streams() -> Redis {
    let server = tokio::task::block_in_place(|| {
        RedisServer::builder()
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .start()
    });
    Redis {
        server,
        mode: RedisMode::Streams,
    }
}

fn main() {
    conformance::main(vec![
        Suite::new("pubsub", pubsub),
        Suite::new("streams", streams),
    ]);
}
