//! `pubsub check`: effective config, broker info, one round trip.
//!
//! As TOML (the default) it prints the configuration, then a line per
//! step. As JSON, standard output is one JSON document: the configuration
//! with a `check` object holding every step's result, also when one failed.

use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use pubsub_core::{blocking::PubSub, BrokerInfo, Capabilities, Config, Delivery};
use serde::Serialize;

use crate::error::CliError;
use crate::output::say;
use crate::settings::{parse_duration, run_id};
use crate::signals;
use crate::stats::fmt_duration;

/// How `check` prints the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ConfigFormat {
    /// TOML, as in a config file, then a line per step.
    Toml,
    /// One JSON document: the configuration and a `check` object.
    Json,
}

/// Show the effective configuration (secrets redacted), connect, describe
/// the broker, and send one message to ourselves.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// How to print the configuration and the result
    #[arg(long, value_enum, ignore_case = true, default_value_t = ConfigFormat::Toml)]
    pub format: ConfigFormat,

    /// Show the section of every registered backend, not only the chosen one's
    #[arg(long)]
    pub all_sections: bool,

    /// Longest wait for the round-trip message
    #[arg(long, value_name = "SECS", default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// NATS JetStream mode: show the stream of TOPIC, the consumer this
    /// configuration reads it with and those on it, instead of every stream
    /// named like nats.stream (repeat for several topics)
    #[arg(long = "topic", value_name = "TOPIC")]
    pub topics: Vec<String>,
}

/// What `check` found, the `check` object of the JSON document.
#[derive(Debug, Default, Serialize)]
struct Outcome {
    /// Every step succeeded.
    ok: bool,
    connect: Connect,
    server: Option<Server>,
    capabilities: Option<Caps>,
    /// NATS JetStream mode: the account, streams and consumers.
    #[cfg(feature = "nats")]
    #[serde(skip_serializing_if = "Option::is_none")]
    jetstream: Option<pubsub_nats::JetStreamReport>,
    round_trip_seconds: Option<f64>,
    /// Why it failed.
    error: Option<String>,
}

#[derive(Debug, Default, Serialize)]
struct Connect {
    ok: bool,
    backend: String,
    seconds: f64,
}

#[derive(Debug, Serialize)]
struct Server {
    server: Option<String>,
    version: Option<String>,
    address: Option<String>,
    max_payload: Option<usize>,
    tls: bool,
}

#[derive(Debug, Serialize)]
struct Caps {
    groups: bool,
    persistence: bool,
    ordering: bool,
    wildcards: Option<&'static str>,
    max_payload: Option<usize>,
    delivery: &'static str,
    headers: bool,
    manual_ack: bool,
}

/// The JSON document: the configuration, then `check`.
#[derive(Serialize)]
struct Document<'a> {
    #[serde(flatten)]
    config: pubsub_core::config::ConfigView<'a>,
    check: &'a Outcome,
}

pub fn run(args: &CheckArgs, config: &Config) -> Result<(), CliError> {
    // The chosen backend's section alone, unless asked for all.
    let chosen = pubsub_core::registry::lookup(&config.backend)?
        .section()
        .name();
    let view = config.view(if args.all_sections {
        None
    } else {
        Some(std::slice::from_ref(&chosen))
    })?;
    let human = args.format == ConfigFormat::Toml;
    if !args.topics.is_empty() && !jetstream_mode(config)? {
        return Err(CliError::Usage(
            "check --topic: only NATS in JetStream mode has streams to show (backend = \"nats\", nats.mode = \"jetstream\")".into(),
        ));
    }
    if human {
        let text = toml::to_string_pretty(&view)
            .map_err(|e| CliError::Failed(format!("cannot print the configuration: {e}")))?;
        say!("# effective configuration (secrets redacted)");
        say!("{}", text.trim_end());
        say!();
    }
    let mut outcome = Outcome::default();
    let result = check(config, args, human, &mut outcome);
    if let Err(e) = &result {
        outcome.error = Some(e.to_string());
    }
    outcome.ok = result.is_ok();
    if human {
        if result.is_ok() {
            say!("OK");
        }
    } else {
        let doc = Document {
            config: view,
            check: &outcome,
        };
        let text = serde_json::to_string_pretty(&doc)
            .map_err(|e| CliError::Failed(format!("cannot print the result: {e}")))?;
        say!("{text}");
    }
    result
}

/// Connect, describe, round trip; each step's line printed when `human`.
fn check(
    config: &Config,
    args: &CheckArgs,
    human: bool,
    outcome: &mut Outcome,
) -> Result<(), CliError> {
    outcome.connect.backend = config.backend.clone();
    let t0 = Instant::now();
    let connected = PubSub::connect(config);
    outcome.connect.seconds = t0.elapsed().as_secs_f64();
    let ps = match connected {
        Ok(ps) => ps,
        Err(e) => {
            if human {
                // JetStream off: the library names nats.mode.
                let why = if e.kind() == pubsub_core::ErrorKind::InvalidConfig
                    && e.message().starts_with("nats.mode")
                {
                    " (JetStream is not enabled on the server)"
                } else {
                    ""
                };
                say!(
                    "connect:      FAILED after {}{why}",
                    fmt_duration(t0.elapsed())
                );
            }
            return Err(e.into());
        }
    };
    signals::connected();
    outcome.connect.ok = true;
    outcome.connect.backend = ps.backend_name().to_string();
    let info = ps.broker_info();
    let caps = ps.capabilities().clone();
    if human {
        print_broker(&ps, t0.elapsed(), &info, &caps);
    }
    outcome.server = Some(Server {
        server: info.server,
        version: info.version,
        address: info.address,
        max_payload: info.max_payload,
        tls: info.tls,
    });
    outcome.capabilities = Some(Caps {
        groups: caps.groups,
        persistence: caps.persistence,
        ordering: caps.ordering,
        wildcards: caps.wildcards,
        max_payload: caps.max_payload,
        delivery: delivery(&caps),
        headers: caps.headers,
        manual_ack: caps.settle.manual_ack(),
    });

    #[cfg(feature = "nats")]
    if jetstream_mode(config)? {
        match crate::check_jetstream::report(config, &args.topics) {
            Ok(report) => {
                if human {
                    crate::check_jetstream::print(&report);
                }
                outcome.jetstream = Some(report);
            }
            Err(e) => {
                if human {
                    say!("jetstream:    FAILED");
                }
                let _ = ps.close();
                return Err(e);
            }
        }
    }

    let topic = format!("pubsub-check.{}", run_id());
    let result = round_trip(&ps, &topic, args.timeout);
    // The check's own topic is left behind nowhere (a Redis stream).
    let deleted = ps.delete_topic(topic.as_str());
    let closed = ps.close();
    let rtt = result?;
    deleted?;
    closed?;
    outcome.round_trip_seconds = Some(rtt.as_secs_f64());
    if human {
        say!("round trip:   {}", fmt_duration(rtt));
    }
    Ok(())
}

/// Whether the configuration is NATS in JetStream mode.
fn jetstream_mode(config: &Config) -> Result<bool, CliError> {
    #[cfg(feature = "nats")]
    return crate::check_jetstream::enabled(config);
    #[cfg(not(feature = "nats"))]
    {
        let _ = config;
        Ok(false)
    }
}

fn print_broker(ps: &PubSub, took: Duration, info: &BrokerInfo, caps: &Capabilities) {
    say!(
        "connect:      {} backend in {}",
        ps.backend_name(),
        fmt_duration(took)
    );
    let or_unknown = |v: &Option<String>| v.clone().unwrap_or_else(|| "(not reported)".into());
    say!("server:       {}", or_unknown(&info.server));
    say!("version:      {}", or_unknown(&info.version));
    say!("address:      {}", or_unknown(&info.address));
    say!(
        "max payload:  {}",
        or_unknown(&info.max_payload.map(|n| format!("{n} bytes")))
    );
    say!("TLS:          {}", if info.tls { "yes" } else { "no" });
    say!("capabilities: {}", describe(caps));
}

fn delivery(c: &Capabilities) -> &'static str {
    match c.delivery {
        Delivery::AtLeastOnce => "at least once",
        _ => "at most once",
    }
}

fn describe(c: &Capabilities) -> String {
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    format!(
        "groups {}, persistence {}, ordering {}, wildcards {}, max payload {}, delivery {}",
        yes_no(c.groups),
        yes_no(c.persistence),
        yes_no(c.ordering),
        c.wildcards.unwrap_or("none"),
        c.max_payload
            .map_or_else(|| "unknown".to_string(), |n| format!("{n} bytes")),
        delivery(c)
    )
}

/// Subscribe to `topic` (in the configured group, if any), publish to it,
/// and wait for the message.
fn round_trip(ps: &PubSub, topic: &str, timeout: Duration) -> Result<Duration, CliError> {
    let payload = format!("pubsub check {topic}");
    ps.subscribe(topic)?;
    let t0 = Instant::now();
    ps.publish(topic, payload.clone())?;
    ps.flush()?;
    let deadline = t0 + timeout;
    loop {
        if let Some(sig) = signals::stop_requested() {
            return Err(CliError::interrupted(
                sig,
                "connected; the round trip was not finished",
            ));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(CliError::Failed(format!(
                "round trip: the message published to {topic:?} did not come back within {}",
                fmt_duration(timeout)
            )));
        }
        match ps.recv_timeout(left.min(signals::POLL))? {
            Some(m) if m.topic == topic && m.payload == payload.as_bytes() => {
                return Ok(t0.elapsed())
            }
            _ => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pubsub_core::{Secret, Section};

    /// A backend section with a secret, as any backend crate has.
    #[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
    struct Broker {
        user: Option<String>,
        password: Option<Secret>,
    }

    impl Section for Broker {
        const NAME: &'static str = "broker";
    }

    #[test]
    fn config_prints_in_both_formats_without_secrets() {
        let c = Config::default().with_section(Broker {
            user: Some("alice".into()),
            password: Some(Secret::new("hunter2-marker")),
        });
        let view = c.view(Some(&["broker"])).unwrap();
        let texts = [
            toml::to_string_pretty(&view).unwrap(),
            serde_json::to_string_pretty(&view).unwrap(),
        ];
        for text in &texts {
            assert!(!text.contains("hunter2-marker"), "{text}");
            assert!(
                text.contains("<redacted>") && text.contains("alice"),
                "{text}"
            );
            assert!(!text.contains("namespace"), "only [broker]: {text}");
        }
        assert!(texts[0].contains("backend = \"memory\""), "{}", texts[0]);
        assert!(
            texts[0].contains("connect_timeout = \"5s\""),
            "{}",
            texts[0]
        );
    }
}
