//! The conformance suite on the in-process backend: it proves the suite
//! itself without any broker.

use pubsub_core::MemoryConfig;
use pubsub_core::{BackendFactory, Config};
use pubsub_testkit::conformance::{self, Harness, Suite};

struct Memory {
    namespace: String,
}

#[pubsub_core::async_trait]
impl Harness for Memory {
    fn factory(&self) -> BackendFactory {
        pubsub_core::BackendFactory::of::<pubsub_core::memory::MemoryBackend>()
    }

    fn config(&self) -> Config {
        let mut c = Config::default();
        c.section_mut::<MemoryConfig>().unwrap().namespace = self.namespace.clone();
        c
    }

    fn has_broker(&self) -> bool {
        false
    }

    async fn stop_broker(&mut self) {}

    async fn start_broker(&mut self) {}

    fn dead_config(&self) -> Option<Config> {
        None
    }
}

async fn memory() -> Memory {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    Memory {
        namespace: format!("conformance-{}", N.fetch_add(1, Ordering::Relaxed)),
    }
}

fn main() {
    conformance::main(vec![Suite::new("memory", memory)]);
}
