#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod backend;
pub mod blocking;
mod client;
pub mod codec;
pub mod config;
pub mod error;
mod flight;
pub mod inbox;
pub mod memory;
mod message;
pub mod registry;
pub mod sync;
pub mod tls;
mod topic;

pub use backend::{
    Backend, BackendContext, BrokerInfo, Capabilities, Counters, Delivery, PubSubBackend,
    SettleSupport, Stats, Support, TopicCache, TryPublish,
};
pub use bytes::Bytes;
pub use client::{MessageStream, PubSub, TopicName};
pub use codec::{Blob, Codec, Format};
pub use config::{AckMode, BufferConfig, Config, OverflowPolicy, Secret, Section};
pub use error::{BoxError, Error, ErrorKind, Result};
pub use flight::{InFlight, Permit};
pub use inbox::{Inbox, Recv};
pub use memory::MemoryConfig;
pub use message::{dead_letter, Headers, Message, Settle};
pub use registry::{register, registered, BackendFactory};
pub use topic::{validate_topic_name, Topic, MAX_TOPIC_LEN};

/// Re-exported so backend crates and users share one `async_trait`.
pub use async_trait::async_trait;
