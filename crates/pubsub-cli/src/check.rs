//! `pubsub check`: effective config, broker info, one round trip.

use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use pubsub_core::{blocking::PubSub, Capabilities, Config, Delivery};

use crate::error::CliError;
use crate::output::say;
use crate::settings::{parse_duration, run_id};
use crate::stats::fmt_duration;

/// How `check` prints the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ConfigFormat {
    /// TOML, as in a config file.
    Toml,
    /// JSON.
    Json,
}

/// Show the effective configuration (secrets redacted), connect, describe
/// the broker, and send one message to ourselves.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// How to print the configuration
    #[arg(long, value_enum, default_value_t = ConfigFormat::Toml)]
    pub format: ConfigFormat,

    /// Longest wait for the round-trip message
    #[arg(long, value_name = "SECS", default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
}

pub fn run(args: &CheckArgs, config: &Config) -> Result<(), CliError> {
    say!("# effective configuration (secrets redacted)");
    say!("{}", render_config(config, args.format)?);
    say!();

    let t0 = Instant::now();
    let ps = match PubSub::connect(config) {
        Ok(ps) => ps,
        Err(e) => {
            say!("connect:      FAILED after {}", fmt_duration(t0.elapsed()));
            return Err(e.into());
        }
    };
    say!(
        "connect:      {} backend in {}",
        ps.backend_name(),
        fmt_duration(t0.elapsed())
    );
    let info = ps.broker_info();
    let or_unknown = |v: Option<String>| v.unwrap_or_else(|| "(not reported)".to_string());
    say!("server:       {}", or_unknown(info.server));
    say!("version:      {}", or_unknown(info.version));
    say!("address:      {}", or_unknown(info.address));
    say!(
        "max payload:  {}",
        or_unknown(info.max_payload.map(|n| format!("{n} bytes")))
    );
    say!("TLS:          {}", if info.tls { "yes" } else { "no" });
    say!("capabilities: {}", describe(ps.capabilities()));

    let result = round_trip(&ps, args.timeout);
    let closed = ps.close();
    let rtt = result?;
    closed?;
    say!("round trip:   {}", fmt_duration(rtt));
    say!("OK");
    Ok(())
}

fn render_config(config: &Config, format: ConfigFormat) -> Result<String, CliError> {
    let text = match format {
        ConfigFormat::Toml => toml::to_string_pretty(config).map_err(|e| e.to_string()),
        ConfigFormat::Json => serde_json::to_string_pretty(config).map_err(|e| e.to_string()),
    };
    text.map(|t| t.trim_end().to_string())
        .map_err(|e| CliError::Failed(format!("cannot print the configuration: {e}")))
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
        match c.delivery {
            Delivery::AtLeastOnce => "at least once",
            _ => "at most once",
        }
    )
}

/// Subscribe to a new topic (in the configured group, if any), publish to
/// it, and wait for the message.
fn round_trip(ps: &PubSub, timeout: Duration) -> Result<Duration, CliError> {
    let id = run_id();
    let topic = format!("pubsub-check.{id}");
    let payload = format!("pubsub check {id}");
    ps.subscribe(topic.as_str())?;
    let t0 = Instant::now();
    ps.publish(topic.as_str(), payload.clone())?;
    ps.flush()?;
    let deadline = t0 + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match ps.recv_timeout(left)? {
            Some(m) if m.topic == topic && m.payload == payload.as_bytes() => {
                return Ok(t0.elapsed())
            }
            Some(_) => continue,
            None => {
                return Err(CliError::Failed(format!(
                    "round trip: the message published to {topic:?} did not come back within {}",
                    fmt_duration(timeout)
                )))
            }
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
        for format in [ConfigFormat::Toml, ConfigFormat::Json] {
            let text = render_config(&c, format).unwrap();
            assert!(!text.contains("hunter2-marker"), "{text}");
            assert!(
                text.contains("<redacted>") && text.contains("alice"),
                "{text}"
            );
        }
        let toml_text = render_config(&c, ConfigFormat::Toml).unwrap();
        assert!(toml_text.contains("backend = \"memory\""), "{toml_text}");
        assert!(
            toml_text.contains("connect_timeout = \"5s\""),
            "{toml_text}"
        );
    }
}
