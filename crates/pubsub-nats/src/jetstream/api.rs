//! The JetStream JSON API (`$JS.API.*`) as this backend uses it: one
//! request, the server's answer or its error, and the failures mapped to
//! the library's errors (JetStream not enabled names `nats.mode`).

use std::time::Duration;

use async_nats::jetstream::context::{RequestError, RequestErrorKind};
use async_nats::jetstream::response::Response;
use async_nats::jetstream::{self, Context};
use pubsub_core::{Error, ErrorKind, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Requests to the JetStream API of the connected account.
#[derive(Clone, Debug)]
pub(crate) struct Api {
    context: Context,
    /// The servers, as shown in messages.
    shown: String,
}

/// The server's error for a request, with its code and description.
pub(crate) type ServerError = jetstream::Error;

impl Api {
    /// Requests bounded by `timeout` each.
    pub fn new(client: async_nats::Client, timeout: Duration, shown: String) -> Api {
        let context = jetstream::context::ContextBuilder::new()
            .timeout(timeout)
            .build(client);
        Api { context, shown }
    }

    /// `$JS.API.<subject>` with `body`: the answer, or the server's error
    /// for it (`Ok(Err(..))`); a request that got no answer is `Err`.
    pub async fn request<T: DeserializeOwned>(
        &self,
        subject: &str,
        body: &impl Serialize,
    ) -> Result<std::result::Result<T, ServerError>> {
        match self
            .context
            .request::<_, _, Response<T>>(subject.to_string(), body)
            .await
        {
            Ok(Response::Ok(v)) => Ok(Ok(v)),
            Ok(Response::Err { error }) => Ok(Err(error)),
            Err(e) => Err(self.request_error(subject, e)),
        }
    }

    /// [`Api::request`] where a server error is an error too, described as `what`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        what: &str,
        subject: &str,
        body: &impl Serialize,
    ) -> Result<T> {
        self.request(subject, body)
            .await?
            .map_err(|e| self.server_error(what, e))
    }

    /// The servers, as shown in messages.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// A server error answering `what`, as a `Backend` error.
    pub fn server_error(&self, what: &str, e: ServerError) -> Error {
        Error::new(
            ErrorKind::Backend,
            format!(
                "nats jetstream {}: {what}: the server refused: {e}",
                self.shown
            ),
        )
        .with_source(Box::new(e))
    }

    fn request_error(&self, subject: &str, e: RequestError) -> Error {
        match e.kind() {
            RequestErrorKind::NoResponders => not_enabled(&self.shown),
            RequestErrorKind::TimedOut => Error::new(
                ErrorKind::Timeout,
                format!(
                    "nats jetstream {}: no answer to $JS.API.{subject} (the JetStream cluster may be electing a leader, or the server is away)",
                    self.shown
                ),
            )
            .with_source(Box::new(e)),
            _ => Error::new(
                ErrorKind::Connect,
                format!("nats jetstream {}: $JS.API.{subject} failed", self.shown),
            )
            .with_source(Box::new(e)),
        }
    }
}

/// JetStream is not enabled for the account (no one answers its API).
pub(crate) fn not_enabled(shown: &str) -> Error {
    Error::config(
        "nats.mode",
        format!(
            "\"jetstream\": the server {shown} does not answer the JetStream API: JetStream is not enabled there (start nats-server with -js, or a jetstream {{}} block, and give the account JetStream), or use nats.mode = \"core\""
        ),
    )
}

/// Whether `e` may pass by itself: JetStream temporarily unavailable, no
/// leader yet, or (in a cluster that just started, whose members do not
/// know each other's JetStream yet) no peers for placement.
pub(crate) fn is_transient(e: &ServerError) -> bool {
    matches!(e.error_code().0, 10008 | 10009 | 10005) || e.code() == 503
}

/// How often, and how far apart, a request refused for a passing reason
/// ([`is_transient`]) is sent again.
pub(crate) const RETRIES: u32 = 5;
/// See [`RETRIES`].
pub(crate) const RETRY_PAUSE: Duration = Duration::from_millis(400);

/// Whether `e` says the stream or consumer asked for does not exist.
pub(crate) fn is_not_found(e: &ServerError) -> bool {
    e.code() == 404
}
