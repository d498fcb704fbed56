#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
// The front page shows a test program with `harness = false`: its `main` is the point.
#![allow(clippy::needless_doctest_main)]

pub mod alloc;
pub mod brokers;
pub mod certs;
pub mod conformance;
pub mod crash;
pub mod logs;
pub mod peer;
pub mod python;

pub use futures::future::BoxFuture;
