//! The conformance suite on the in-process backend: it proves the suite
//! itself without any broker.

use pubsub_core::testkit::conformance::Harness;
use pubsub_core::MemoryConfig;
use pubsub_core::{BackendFactory, Config};

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

    async fn restart_broker(&mut self) -> bool {
        false
    }

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

pubsub_core::conformance_suite!(memory);
