//! Test kit (cargo feature `testkit`): the conformance suite every backend
//! runs, helpers that start real brokers on free loopback ports, and
//! generated TLS certificates.

pub mod alloc;
pub mod brokers;
pub mod certs;
pub mod conformance;
pub mod logs;
pub mod python;

pub use futures::future::BoxFuture;
