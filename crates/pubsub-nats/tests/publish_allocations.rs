//! Heap allocations per publish, counted by a global allocator: our async
//! and blocking APIs against the raw async-nats client on the same server.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use pubsub_core::testkit::brokers::NatsServer;
use pubsub_nats::Config;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const N: u64 = 20_000;

fn per_message(before: u64) -> f64 {
    (ALLOCS.load(Ordering::Relaxed) - before) as f64 / N as f64
}

#[test]
fn allocations_per_publish() {
    let server = NatsServer::start();
    let payload = Bytes::from(vec![7u8; 128]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut config = Config::default();
    config.nats.servers = vec![server.url()];

    let (raw, ours_async) = rt.block_on(async {
        let raw = async_nats::connect(server.url()).await.unwrap();
        for _ in 0..1000 {
            raw.publish("alloc.raw", payload.clone()).await.unwrap();
        }
        raw.flush().await.unwrap();
        let before = ALLOCS.load(Ordering::Relaxed);
        for _ in 0..N {
            raw.publish("alloc.raw", payload.clone()).await.unwrap();
        }
        let raw_per = per_message(before);
        raw.flush().await.unwrap();

        let ps = pubsub_nats::connect(&config).await.unwrap();
        for _ in 0..1000 {
            ps.publish("alloc.ours", payload.clone()).await.unwrap();
        }
        ps.flush().await.unwrap();
        let before = ALLOCS.load(Ordering::Relaxed);
        for _ in 0..N {
            ps.publish("alloc.ours", payload.clone()).await.unwrap();
        }
        let ours_per = per_message(before);
        ps.close().await.unwrap();
        (raw_per, ours_per)
    });

    let ps = pubsub_nats::connect_blocking(&config).unwrap();
    for _ in 0..1000 {
        ps.publish("alloc.blocking", payload.clone()).unwrap();
    }
    ps.flush().unwrap();
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..N {
        ps.publish("alloc.blocking", payload.clone()).unwrap();
    }
    let blocking = per_message(before);
    ps.close().unwrap();

    println!(
        "allocations per publish of a 128-byte payload (whole process, all threads): raw async-nats {raw:.2}, ours async {ours_async:.2}, ours blocking {blocking:.2}"
    );
    // The payload is shared (`Bytes`), so none of these copy it.
    assert!(
        ours_async <= raw + 0.05,
        "async adds allocations: {ours_async:.2} vs raw {raw:.2}"
    );
    assert!(
        blocking <= raw + 0.05,
        "blocking adds allocations: {blocking:.2} vs raw {raw:.2}"
    );
}
