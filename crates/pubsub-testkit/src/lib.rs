#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod alloc;
pub mod brokers;
pub mod certs;
pub mod conformance;
pub mod crash;
pub mod logs;
pub mod peer;
pub mod python;

pub use futures::future::BoxFuture;
