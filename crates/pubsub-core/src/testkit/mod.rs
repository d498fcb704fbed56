//! Test kit (cargo feature `testkit`): the conformance suite every backend
//! runs, and helpers that start real brokers on free loopback ports.

pub mod conformance;

pub use futures::future::BoxFuture;
