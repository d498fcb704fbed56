//! A global allocator that counts allocations, for tests that check the
//! publish path allocates nothing of its own. A test binary installs it:
//!
//! ```
//! use pubsub_testkit::alloc::{allocations, Counting};
//!
//! #[global_allocator]
//! static GLOBAL: Counting = Counting;
//!
//! fn main() {
//!     let before = allocations();
//!     let v = std::hint::black_box(vec![1u8; 64]);
//!     assert!(allocations() > before);
//!     drop(v);
//! }
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// The system allocator, counting every allocation and reallocation
/// (process-wide, all threads).
pub struct Counting;

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations so far in this process (with [`Counting`] installed).
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// Allocations per message since `before` (a value of [`allocations`]).
pub fn per_message(before: u64, messages: u64) -> f64 {
    (allocations() - before) as f64 / messages.max(1) as f64
}

/// Allocations per message of `n` publishes of `make()` to `topic` through
/// our async API, flushed every `batch` messages (after `batch` of warm-up):
/// with `batch` below the client's queue, every publish takes the fast path.
pub async fn per_publish(
    ps: &pubsub_core::PubSub,
    topic: &str,
    make: impl Fn() -> pubsub_core::Bytes,
    n: u64,
    batch: u64,
) -> f64 {
    let batch = batch.max(1);
    for _ in 0..batch {
        ps.publish(topic, make()).await.expect("publish");
    }
    ps.flush().await.expect("flush");
    let before = allocations();
    for i in 0..n {
        ps.publish(topic, make()).await.expect("publish");
        if i % batch == batch - 1 {
            ps.flush().await.expect("flush");
        }
    }
    per_message(before, n)
}

/// [`per_publish`] through our blocking API.
pub fn per_publish_blocking(
    ps: &pubsub_core::blocking::PubSub,
    topic: &str,
    make: impl Fn() -> pubsub_core::Bytes,
    n: u64,
    batch: u64,
) -> f64 {
    let batch = batch.max(1);
    for _ in 0..batch {
        ps.publish(topic, make()).expect("publish");
    }
    ps.flush().expect("flush");
    let before = allocations();
    for i in 0..n {
        ps.publish(topic, make()).expect("publish");
        if i % batch == batch - 1 {
            ps.flush().expect("flush");
        }
    }
    per_message(before, n)
}
