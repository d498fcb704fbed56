//! The pull consumer of a subscription: a durable one named after the
//! group (shared by its members) or after `nats.consumer`, or an ephemeral
//! one. Created when missing, checked when present, and the config the
//! server answers with is compared with what was asked (ADR-34: a server
//! that ignores a field, as nats-server 2.9 ignores `filter_subjects`,
//! must not be trusted to have applied it).
//!
//! `ack_wait` and `max_in_flight` are the consumer's AckWait and
//! MaxAckPending; its MaxDeliver is `max_deliver + 1`: the last delivery
//! goes to the library, which gives the message up (dead letter, or
//! discarded) instead of handing it to the application, so that a message
//! is dead-lettered even when the process that held it last died.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, Info, ReplayPolicy};
use pubsub_core::{Error, Result};
use serde_json::json;

use super::api::{is_not_found, is_transient, Api, RETRIES, RETRY_PAUSE};
use super::Settings;
use crate::config::{bad_name, DeliverFrom};

/// An ephemeral consumer is deleted by the server after this long without
/// a pull request (its process died); a live subscription always has one.
pub(crate) const EPHEMERAL_INACTIVE: Duration = Duration::from_secs(60);

/// What a subscription asks of its consumer.
#[derive(Clone, Debug)]
pub(crate) struct ConsumerSpec {
    pub stream: String,
    /// The durable name; `None` for an ephemeral consumer.
    pub durable: Option<String>,
    /// Why the durable has its name, for messages: the config key.
    pub named_by: &'static str,
    pub filter: String,
    pub ack_wait: Duration,
    /// The server's MaxDeliver: `max_deliver + 1`.
    pub max_deliver: i64,
    pub max_ack_pending: i64,
}

/// A consumer on the server, as created or found.
#[derive(Clone, Debug)]
pub(crate) struct Consumer {
    pub stream: String,
    pub name: String,
    pub durable: bool,
    /// The stream sequence it had delivered last when found or made (for
    /// a new consumer reading new messages: the stream's last sequence).
    pub delivered: u64,
}

impl ConsumerSpec {
    /// The consumer of `topic` (on `stream`), for `group` or a plain subscription.
    pub fn new(
        settings: &Settings,
        stream: &str,
        topic: &str,
        group: Option<&str>,
    ) -> Result<ConsumerSpec> {
        let (durable, named_by) = match (group, &settings.nats.consumer) {
            (Some(g), _) => (Some(durable_name(g, topic)), "group_id"),
            (None, Some(c)) => (Some(durable_name(c, topic)), "nats.consumer"),
            (None, None) => (None, ""),
        };
        if let Some(d) = &durable {
            if let Some(why) = bad_name(d) {
                return Err(Error::config(
                    named_by,
                    format!("the consumer name {d:?} made from it {why}"),
                ));
            }
        }
        Ok(ConsumerSpec {
            stream: stream.to_string(),
            durable,
            named_by,
            filter: topic.to_string(),
            ack_wait: settings.ack_wait,
            max_deliver: i64::from(settings.max_deliver.max(1)) + 1,
            max_ack_pending: settings.max_in_flight.max(1) as i64,
        })
    }

    /// The consumer config to create, starting at `deliver`.
    pub fn config(&self, deliver: DeliverPolicy) -> pull::Config {
        pull::Config {
            durable_name: self.durable.clone(),
            description: Some("msight pubsub".to_string()),
            deliver_policy: deliver,
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_deliver: self.max_deliver,
            filter_subject: self.filter.clone(),
            replay_policy: ReplayPolicy::Instant,
            max_ack_pending: self.max_ack_pending,
            inactive_threshold: if self.durable.is_some() {
                Duration::ZERO
            } else {
                EPHEMERAL_INACTIVE
            },
            ..Default::default()
        }
    }

    fn what(&self) -> String {
        match &self.durable {
            Some(d) => format!("consumer {d:?} of stream {:?}", self.stream),
            None => format!("an ephemeral consumer of stream {:?}", self.stream),
        }
    }
}

/// A durable name made of `base` and the topic, so that one group (or one
/// `nats.consumer`) can read several topics of a stream: `.` becomes `_`,
/// the wildcards `*` and `>` become `any` and `all`.
pub(crate) fn durable_name(base: &str, topic: &str) -> String {
    let topic: Vec<&str> = topic
        .split('.')
        .map(|t| match t {
            "*" => "any",
            ">" => "all",
            t => t,
        })
        .collect();
    format!("{base}_{}", topic.join("_")).replace(['.', '*', '>'], "_")
}

/// The deliver policy of the configuration.
pub(crate) fn configured_deliver(settings: &Settings) -> DeliverPolicy {
    let n = &settings.nats;
    match n.deliver_policy {
        DeliverFrom::New => DeliverPolicy::New,
        DeliverFrom::All => DeliverPolicy::All,
        DeliverFrom::Last => DeliverPolicy::Last,
        DeliverFrom::LastPerSubject => DeliverPolicy::LastPerSubject,
        DeliverFrom::ByStartSequence => DeliverPolicy::ByStartSequence {
            start_sequence: n.deliver_start_sequence.unwrap_or(1),
        },
        DeliverFrom::ByStartTime => {
            match n
                .deliver_start_time
                .as_deref()
                .map(async_nats::datetime::parse_rfc3339)
            {
                Some(Ok(start_time)) => DeliverPolicy::ByStartTime { start_time },
                // Checked by the config's validation already.
                _ => DeliverPolicy::New,
            }
        }
    }
}

/// The consumer `spec` asks for: found and checked, or created (starting at
/// `deliver`) and checked against the answer.
pub(crate) async fn ensure(
    api: &Api,
    spec: &ConsumerSpec,
    deliver: DeliverPolicy,
) -> Result<Consumer> {
    if let Some(d) = &spec.durable {
        let subject = format!("CONSUMER.INFO.{}.{d}", spec.stream);
        match api.request::<Info>(&subject, &json!({})).await? {
            Ok(info) => {
                check(spec, &info, None)?;
                return Ok(found(spec, info));
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(api.server_error(&spec.what(), e)),
        }
    }
    let asked = spec.config(deliver);
    let subject = match &spec.durable {
        Some(d) => format!("CONSUMER.DURABLE.CREATE.{}.{d}", spec.stream),
        None => format!("CONSUMER.CREATE.{}", spec.stream),
    };
    let body = json!({ "stream_name": spec.stream, "config": asked });
    let mut created = api.request::<Info>(&subject, &body).await?;
    for _ in 1..RETRIES {
        match &created {
            Err(e) if is_transient(e) => {
                tokio::time::sleep(RETRY_PAUSE).await;
                created = api.request::<Info>(&subject, &body).await?;
            }
            _ => break,
        }
    }
    match created {
        Ok(info) => {
            check(spec, &info, Some(&asked))?;
            tracing::debug!(stream = %spec.stream, consumer = %info.name, filter = %spec.filter, "nats jetstream: consumer created");
            Ok(found(spec, info))
        }
        // Made meanwhile by another member of the group: check it as found.
        Err(e) if spec.durable.is_some() && matches!(e.error_code().0, 10013 | 10148 | 10105) => {
            let d = spec.durable.as_deref().unwrap_or_default();
            let info = api
                .call::<Info>(
                    &spec.what(),
                    &format!("CONSUMER.INFO.{}.{d}", spec.stream),
                    &json!({}),
                )
                .await?;
            check(spec, &info, None)?;
            Ok(found(spec, info))
        }
        Err(e) => Err(api.server_error(&format!("creating {}", spec.what()), e)),
    }
}

fn found(spec: &ConsumerSpec, info: Info) -> Consumer {
    Consumer {
        stream: spec.stream.clone(),
        durable: spec.durable.is_some(),
        delivered: info.delivered.stream_sequence,
        name: info.name,
    }
}

/// The consumer the server has against what this handle asks; `created`:
/// the config sent to make it (then the start position is compared too).
fn check(spec: &ConsumerSpec, info: &Info, created: Option<&pull::Config>) -> Result<()> {
    let got = &info.config;
    let name = &info.name;
    let key = |k: &'static str| if spec.durable.is_some() { k } else { "nats" };
    let mismatch = |key: &str, field: &str, has: String, asks: String| {
        let why = if created.is_some() {
            "the server did not apply what was asked (an older server ignores fields it does not know)".to_string()
        } else {
            format!(
                "members of a group, and restarts of a named consumer, must ask for the same; change {key}, or delete the consumer (nats consumer rm {} {name})",
                spec.stream
            )
        };
        Error::config(
            key,
            format!(
                "consumer {name:?} of stream {:?} has {field} {has}, this handle asks for {asks}: {why}",
                spec.stream
            ),
        )
    };
    if got.deliver_subject.is_some() {
        return Err(Error::config(
            key(spec.named_by),
            format!(
                "consumer {name:?} of stream {:?} is a push consumer; this library reads through pull consumers: use another name",
                spec.stream
            ),
        ));
    }
    if got.filter_subject != spec.filter {
        return Err(mismatch(
            key(spec.named_by),
            "filter subject",
            format!("{:?}", got.filter_subject),
            format!("{:?} (the topic)", spec.filter),
        ));
    }
    if got.ack_policy != AckPolicy::Explicit {
        return Err(mismatch(
            key(spec.named_by),
            "ack policy",
            format!("{:?}", got.ack_policy),
            "Explicit".into(),
        ));
    }
    let show = |d: Duration| humantime_serde::re::humantime::format_duration(d).to_string();
    if got.ack_wait != spec.ack_wait {
        return Err(mismatch(
            key("ack_wait"),
            "ack_wait",
            show(got.ack_wait),
            show(spec.ack_wait),
        ));
    }
    if got.max_deliver != spec.max_deliver {
        return Err(mismatch(
            key("max_deliver"),
            "max_deliver",
            format!("{} (max_deliver + 1)", got.max_deliver),
            format!(
                "{} (max_deliver {} + 1)",
                spec.max_deliver,
                spec.max_deliver - 1
            ),
        ));
    }
    if got.max_ack_pending != spec.max_ack_pending {
        return Err(mismatch(
            key("max_in_flight"),
            "max_ack_pending",
            got.max_ack_pending.to_string(),
            format!("{} (max_in_flight)", spec.max_ack_pending),
        ));
    }
    if let Some(asked) = created {
        if got.deliver_policy != asked.deliver_policy {
            return Err(mismatch(
                "nats.deliver_policy",
                "deliver policy",
                format!("{:?}", got.deliver_policy),
                format!("{:?}", asked.deliver_policy),
            ));
        }
        if asked.durable_name.is_none() && got.inactive_threshold != asked.inactive_threshold {
            return Err(mismatch(
                "nats",
                "inactive_threshold",
                show(got.inactive_threshold),
                show(asked.inactive_threshold),
            ));
        }
    }
    Ok(())
}

/// Delete a consumer (an ephemeral one at unsubscribe or close); best effort.
pub(crate) async fn delete(api: &Api, c: &Consumer) {
    let subject = format!("CONSUMER.DELETE.{}.{}", c.stream, c.name);
    if let Err(e) = api.request::<serde_json::Value>(&subject, &json!({})).await {
        tracing::debug!(consumer = %c.name, error = %e, "nats jetstream: deleting the consumer failed");
    }
}

/// Whether the consumer is still on the server (`Ok(false)`: it is gone).
pub(crate) async fn exists(api: &Api, c: &Consumer) -> Result<bool> {
    let subject = format!("CONSUMER.INFO.{}.{}", c.stream, c.name);
    match api.request::<Info>(&subject, &json!({})).await? {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(api.server_error("consumer info", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::durable_name;

    #[test]
    fn durable_names_hold_group_and_topic() {
        assert_eq!(
            durable_name("workers", "sensors.camera"),
            "workers_sensors_camera"
        );
        assert_eq!(durable_name("w", "a.*.b"), "w_a_any_b");
        assert_eq!(durable_name("w", "a.>"), "w_a_all");
        assert_eq!(durable_name("w", "a"), "w_a");
    }
}
