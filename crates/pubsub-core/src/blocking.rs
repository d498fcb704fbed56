//! The blocking API, shaped like the Python original: connect, `subscribe`,
//! `publish`, `listen`. It works from a plain `fn main()`; the I/O runs on a
//! small tokio runtime on background threads, shared by every blocking
//! handle of the process (the Python original ran an event-loop thread per
//! object).
//!
//! Each call runs its future on the calling thread (with the runtime's
//! context entered), so a `publish` costs no thread hop; receiving waits on
//! the buffer directly. Called from inside a tokio runtime it does not panic:
//! it blocks that thread while the background runtime does the I/O.
//!
//! ```
//! use pubsub_core::{blocking::PubSub, Config};
//! let ps = PubSub::connect(&Config::default())?; // the in-process `memory` backend
//! ps.subscribe("camera.front")?;
//! ps.publish("camera.front", &b"frame-1"[..])?;
//! for msg in ps.listen()?.take(1) {
//!     assert_eq!(msg.topic, "camera.front");
//!     assert_eq!(&msg.payload[..], b"frame-1");
//! }
//! ps.close()?;
//! # Ok::<(), pubsub_core::Error>(())
//! ```

use std::fmt;
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;

use crate::backend::{BrokerInfo, Capabilities, Stats};
use crate::client::{recv_result, TopicName};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::inbox::Recv;
use crate::registry::BackendFactory;
use crate::Message;

/// The background runtime shared by blocking handles.
fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pubsub-io")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| {
        Error::new(
            ErrorKind::Backend,
            format!("cannot start the background runtime: {e}"),
        )
    })
}

fn run<F: Future>(fut: F) -> F::Output {
    // `runtime()` succeeded when the handle was made.
    let rt = runtime().expect("runtime started at connect");
    let _guard = rt.enter();
    // `unconstrained`: when the caller is itself a tokio task, its
    // cooperative budget runs out after ~128 channel operations and tokio
    // then answers every poll with "pending, try again"; polled from this
    // loop that would spin forever. Outside tokio it changes nothing.
    block_on(tokio::task::unconstrained(fut))
}

/// Run `fut` on the background runtime of the blocking handles and wait
/// for it, from a plain thread (or, without panicking, from inside another
/// runtime): for the blocking helpers of a backend crate, as
/// `pubsub_redis::BlockingTopicRegistry`. Fails only when the runtime
/// cannot start.
pub fn block_on_runtime<F: Future>(fut: F) -> Result<F::Output> {
    runtime()?;
    Ok(run(fut))
}

/// Wakes the thread that waits in [`block_on`].
struct ThreadWaker(std::thread::Thread);

impl std::task::Wake for ThreadWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.0.unpark();
    }
}

/// Poll `fut` on this thread, parking between polls. Unlike
/// `futures::executor::block_on` it does not refuse to run inside another
/// executor (that refusal is a panic), and it allocates nothing per call:
/// the waker is made once per thread.
fn block_on<F: Future>(fut: F) -> F::Output {
    thread_local! {
        static WAKER: std::task::Waker =
            std::task::Waker::from(std::sync::Arc::new(ThreadWaker(std::thread::current())));
    }
    let mut fut = std::pin::pin!(fut);
    WAKER.with(|waker| {
        let mut cx = std::task::Context::from_waker(waker);
        loop {
            if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return v;
            }
            std::thread::park();
        }
    })
}

/// A blocking connection: every method returns when the operation is done.
/// `Sync`: one handle can be shared by many threads (`Arc<PubSub>` or scoped threads).
pub struct PubSub {
    inner: crate::PubSub,
}

impl fmt::Debug for PubSub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("blocking::PubSub")
            .field("inner", &self.inner)
            .finish()
    }
}

impl PubSub {
    /// Connect to the backend named by `config.backend`; blocks until
    /// connected, or fails within `config.connect_timeout`.
    pub fn connect(config: &Config) -> Result<PubSub> {
        runtime()?;
        Ok(PubSub {
            inner: run(crate::PubSub::connect(config))?,
        })
    }

    /// Connect with backend `B`, whatever `config.backend` says (no
    /// registration needed).
    pub fn connect_to<B: crate::Backend>(config: &Config) -> Result<PubSub> {
        PubSub::connect_with(&BackendFactory::of::<B>(), config)
    }

    /// Connect with the given backend, whatever `config.backend` says.
    pub fn connect_with(factory: &BackendFactory, config: &Config) -> Result<PubSub> {
        runtime()?;
        Ok(PubSub {
            inner: run(crate::PubSub::connect_with(factory, config))?,
        })
    }

    /// Subscribe to `topic`, in the configured `group_id` if there is one.
    pub fn subscribe(&self, topic: impl TopicName) -> Result<()> {
        run(self.inner.subscribe(topic))
    }

    /// Subscribe to `topic` in `group` (`None`: receive every message).
    pub fn subscribe_in(&self, topic: impl TopicName, group: Option<&str>) -> Result<()> {
        run(self.inner.subscribe_in(topic, group))
    }

    /// Stop receiving `topic`.
    pub fn unsubscribe(&self, topic: impl TopicName) -> Result<()> {
        run(self.inner.unsubscribe(topic))
    }

    /// Publish `payload` to `topic`. Returns once the client accepted it;
    /// it does not wait for a network round trip. [`PubSub::flush`] does.
    pub fn publish(&self, topic: impl TopicName, payload: impl Into<Bytes>) -> Result<()> {
        let name = topic.topic_name();
        // While the client's queue has room, the message is handed over on
        // this thread without entering the runtime (about 180 instructions
        // less per message than `run`, which sets up the runtime context).
        match self.inner.publish_now(name, payload.into())? {
            None => Ok(()),
            Some(payload) => run(self.inner.publish_waiting(name, payload)),
        }
    }

    /// Publish with headers; see [`crate::PubSub::publish_with_headers`].
    pub fn publish_with_headers(
        &self,
        topic: impl TopicName,
        headers: crate::Headers,
        payload: impl Into<Bytes>,
    ) -> Result<()> {
        run(self
            .inner
            .publish_with_headers(topic.topic_name(), headers, payload.into()))
    }

    /// Publish `value` to `topic`, encoded with `codec`
    /// ([`MsgPack`](crate::codec::MsgPack), [`Json`](crate::codec::Json), a
    /// [`Format`](crate::Format), ...). A value the codec cannot write is an
    /// [`ErrorKind::Encode`] error and nothing is published.
    pub fn publish_as<T: serde::Serialize + ?Sized>(
        &self,
        topic: impl TopicName,
        value: &T,
        codec: impl crate::Codec,
    ) -> Result<()> {
        let name = topic.topic_name();
        let payload = crate::codec::encode_for(&codec, name, value)?;
        self.publish(name, payload)
    }

    /// Publish `value` to `topic`, encoded with this handle's codec (the
    /// `codec` setting, MessagePack by default: [`PubSub::codec`]).
    pub fn publish_value<T: serde::Serialize + ?Sized>(
        &self,
        topic: impl TopicName,
        value: &T,
    ) -> Result<()> {
        self.publish_as(topic, value, self.inner.codec())
    }

    /// This handle's codec: the `codec` setting of the configuration it
    /// was connected with. Decode with it: `msg.decode::<T>(ps.codec())`.
    pub fn codec(&self) -> crate::Format {
        self.inner.codec()
    }

    /// Delete what the broker keeps of `topic`; see
    /// [`crate::PubSub::delete_topic`].
    pub fn delete_topic(&self, topic: impl TopicName) -> Result<()> {
        run(self.inner.delete_topic(topic))
    }

    /// Wait until everything accepted has been written to the broker.
    pub fn flush(&self) -> Result<()> {
        run(self.inner.flush())
    }

    /// Send what was accepted, end subscriptions, disconnect (bounded by `close_timeout`).
    pub fn close(&self) -> Result<()> {
        run(self.inner.close())
    }

    /// The next message, waiting as long as it takes. Fails with
    /// [`ErrorKind::NotSubscribed`] when no subscription is active and
    /// nothing is buffered, and with [`ErrorKind::Closed`] after close.
    pub fn recv(&self) -> Result<Message> {
        self.inner.check_open()?;
        recv_result(self.inner.inbox().recv_blocking(None))?.ok_or_else(Error::closed)
    }

    /// The next message, or `Ok(None)` if none arrives within `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<Message>> {
        self.inner.check_open()?;
        recv_result(self.inner.inbox().recv_blocking(Some(timeout)))
    }

    /// Iterate over received messages, as `for msg in ps.listen()? { ... }`.
    /// The iteration ends when the handle is closed (from another thread) or
    /// the last subscription is removed. Calling it with no subscription is
    /// an [`ErrorKind::NotSubscribed`] error, not an endless wait.
    pub fn listen(&self) -> Result<Listen<'_>> {
        self.inner.check_open()?;
        self.inner.check_subscribed()?;
        Ok(Listen { ps: self })
    }

    /// Counters: published, received, dropped by overflow, reconnects.
    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// What the backend supports.
    pub fn capabilities(&self) -> &Capabilities {
        self.inner.capabilities()
    }

    /// What the connected broker says about itself.
    pub fn broker_info(&self) -> BrokerInfo {
        self.inner.broker_info()
    }

    /// The backend's name.
    pub fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }

    /// The topics subscribed now.
    pub fn subscriptions(&self) -> Vec<String> {
        self.inner.subscriptions()
    }

    /// Whether [`PubSub::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// The async handle behind this one (same connection and buffer).
    pub fn as_async(&self) -> &crate::PubSub {
        &self.inner
    }
}

impl Drop for PubSub {
    fn drop(&mut self) {
        // Dropping without close: close anyway (bounded by close_timeout),
        // so that accepted messages are sent and the connection ends.
        if !self.inner.is_closed() && self.inner.is_last_handle() {
            if let Err(e) = run(self.inner.close()) {
                if e.kind() != ErrorKind::Closed {
                    tracing::warn!(error = %e, "closing a dropped pub/sub handle failed");
                }
            }
        }
    }
}

/// The iterator returned by [`PubSub::listen`].
#[derive(Debug)]
pub struct Listen<'a> {
    ps: &'a PubSub,
}

impl Iterator for Listen<'_> {
    type Item = Message;
    fn next(&mut self) -> Option<Message> {
        match self.ps.inner.inbox().recv_blocking(None) {
            Recv::Message(m) => Some(m),
            _ => None,
        }
    }
}
