//! `pubsub check` in NATS JetStream mode: the account's limits and usage,
//! and the streams and consumers the configuration uses, as
//! [`pubsub_nats::jetstream_report`] reads them from the server.

use pubsub_core::Config;
use pubsub_nats::{JetStreamReport, NatsConfig, NatsMode, StreamReport};

use crate::error::CliError;
use crate::output::say;

/// Whether `config` is NATS in JetStream mode.
pub fn enabled(config: &Config) -> Result<bool, CliError> {
    if config.backend != "nats" {
        return Ok(false);
    }
    Ok(config.section::<NatsConfig>()?.mode == NatsMode::JetStream)
}

/// The report, read through a connection of its own.
pub fn report(config: &Config, topics: &[String]) -> Result<JetStreamReport, CliError> {
    Ok(pubsub_core::blocking::block_on_runtime(
        pubsub_nats::jetstream_report(config, topics),
    )??)
}

/// The report as lines under the other steps of `check`.
pub fn print(r: &JetStreamReport) {
    let a = &r.account;
    let of = |used: String, max: i64, fmt: &dyn Fn(u64) -> String| {
        if max < 0 {
            used
        } else {
            format!("{used} of {}", fmt(max as u64))
        }
    };
    let count = |n: u64| n.to_string();
    say!(
        "jetstream:    account uses memory {}, storage {}, streams {}, consumers {}",
        of(bytes(a.memory), a.max_memory, &bytes),
        of(bytes(a.storage), a.max_storage, &bytes),
        of(count(a.streams), a.max_streams, &count),
        of(count(a.consumers), a.max_consumers, &count),
    );
    let limit = |max: i64, fmt: &dyn Fn(u64) -> String| {
        if max < 0 {
            "none".to_string()
        } else {
            fmt(max as u64)
        }
    };
    say!(
        "              limits: memory {}, storage {}, streams {}, consumers {}, ack pending {}{}",
        limit(a.max_memory, &bytes),
        limit(a.max_storage, &bytes),
        limit(a.max_streams, &count),
        limit(a.max_consumers, &count),
        limit(a.max_ack_pending, &count),
        a.domain
            .as_ref()
            .map(|d| format!("; domain {d:?}"))
            .unwrap_or_default()
    );
    say!(
        "              API: {} requests, {} errors",
        a.api_requests,
        a.api_errors
    );
    for t in &r.topics {
        let stream = match (&t.stream, &t.would_create) {
            (Some(s), _) => format!("stream {s:?}"),
            (None, Some(p)) => format!(
                "no stream yet (the first publish or subscribe creates {:?} capturing {})",
                p.name,
                p.subjects.join(", ")
            ),
            (None, None) => "no stream".to_string(),
        };
        let consumer = match (&t.consumer, &t.consumer_named_by) {
            (Some(c), by) => format!(
                "consumer {c:?} (from {}){}",
                by.as_deref().unwrap_or("the configuration"),
                if t.consumer_exists {
                    ""
                } else {
                    ", not created yet"
                }
            ),
            (None, _) => "an ephemeral consumer per subscription".to_string(),
        };
        say!("topic:        {} -> {stream}; {consumer}", t.topic);
    }
    let n = r.streams.len() + r.streams_not_shown;
    if r.topics.is_empty() {
        say!(
            "streams:      {n} named like nats.stream = {:?}",
            r.stream_template
        );
    } else {
        say!("streams:      {n} capturing the topics");
    }
    for s in &r.streams {
        print_stream(s, !r.topics.is_empty());
    }
    if r.streams_not_shown > 0 {
        say!("  ... and {} more streams (not shown)", r.streams_not_shown);
    }
}

fn print_stream(s: &StreamReport, of_topics: bool) {
    let max = |v: i64, fmt: &dyn Fn(u64) -> String| {
        if v < 0 {
            "no limit".to_string()
        } else {
            fmt(v as u64)
        }
    };
    let age = if s.max_age_seconds > 0.0 {
        seconds(s.max_age_seconds)
    } else {
        "no limit".to_string()
    };
    say!(
        "  stream {}: subjects {}; {} storage, {} replica{}, {} retention; max age {age}, max bytes {}, max msgs {}, discard {}",
        s.name,
        s.subjects.join(", "),
        s.storage,
        s.replicas,
        if s.replicas == 1 { "" } else { "s" },
        s.retention,
        max(s.max_bytes, &bytes),
        max(s.max_msgs, &|n| n.to_string()),
        s.discard
    );
    say!(
        "    holds {}, {} (sequences {}..{}), {}{}",
        plural(s.messages, "message"),
        bytes(s.bytes),
        s.first_seq,
        s.last_seq,
        plural(s.consumer_count, "consumer"),
        if of_topics {
            format!(
                ", {} of them reading the topics",
                s.consumers.len() + s.consumers_not_shown
            )
        } else {
            String::new()
        }
    );
    for c in &s.consumers {
        say!(
            "    consumer {} ({}) on {}: deliver {}, ack {}, ack_wait {}, max_deliver {}, max_ack_pending {}; pending {}, unacked {}, redelivered {}, waiting pulls {}",
            c.name,
            if c.durable { "durable" } else { "ephemeral" },
            if c.filter_subject.is_empty() {
                "the whole stream"
            } else {
                c.filter_subject.as_str()
            },
            c.deliver_policy,
            c.ack_policy,
            seconds(c.ack_wait_seconds),
            max(c.max_deliver, &|n| n.to_string()),
            max(c.max_ack_pending, &|n| n.to_string()),
            c.num_pending,
            c.num_ack_pending,
            c.num_redelivered,
            c.num_waiting
        );
    }
    if s.consumers_not_shown > 0 {
        say!(
            "    ... and {} more consumers (not shown)",
            s.consumers_not_shown
        );
    }
}

/// A span as `1d 2h 3m 4.5s`, the parts that are not zero.
fn seconds(s: f64) -> String {
    if !s.is_finite() || s <= 0.0 {
        return "0s".to_string();
    }
    let whole = s.trunc() as u64;
    let mut out = Vec::new();
    for (n, unit) in [
        (whole / 86_400, "d"),
        (whole % 86_400 / 3_600, "h"),
        (whole % 3_600 / 60, "m"),
    ] {
        if n > 0 {
            out.push(format!("{n}{unit}"));
        }
    }
    let rest = (s - (whole - whole % 60) as f64) * 1000.0;
    if rest.round() > 0.0 || out.is_empty() {
        out.push(format!("{}s", rest.round() / 1000.0));
    }
    out.join(" ")
}

/// `1 message`, `2 messages`.
fn plural(n: u64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// Bytes as B, KiB, MiB or GiB.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::{bytes, seconds};

    #[test]
    fn spans() {
        assert_eq!(seconds(86_400.0), "1d");
        assert_eq!(seconds(30.0), "30s");
        assert_eq!(seconds(0.25), "0.25s");
        assert_eq!(seconds(3_661.5), "1h 1m 1.5s");
        assert_eq!(seconds(0.0), "0s");
        assert_eq!(seconds(f64::NAN), "0s");
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(1 << 30), "1.0 GiB");
        assert_eq!(bytes(u64::MAX), "16.0 EiB");
    }
}
