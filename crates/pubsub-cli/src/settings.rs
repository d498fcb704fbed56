//! Options every command shares, and how they become a [`Config`]:
//! the library's loader (defaults, the file, `MSIGHT_*` variables), then the
//! command line, then validation.

use std::hash::BuildHasher;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args};
use pubsub_core::{Config, MemoryConfig};

use crate::error::CliError;

/// The backend and its settings, as the library takes them.
#[derive(Debug, Args)]
pub struct Common {
    /// Backend: memory, nats, redis or mqtt (those compiled in), any case
    /// [default: MSIGHT_PUBSUB_BACKEND, else `backend` of the config file,
    /// else memory]
    #[arg(
        long,
        global = true,
        value_name = "NAME",
        help_heading = "Backend and logging"
    )]
    pub backend: Option<String>,

    /// Config file (TOML, YAML or JSON) [default: $MSIGHT_PUBSUB_CONFIG]
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        help_heading = "Backend and logging"
    )]
    pub config: Option<PathBuf>,

    /// Group of this node's subscriptions (each message goes to one member)
    #[arg(
        long,
        global = true,
        value_name = "NAME",
        help_heading = "Backend and logging"
    )]
    pub group: Option<String>,

    /// Log to stderr: -v info, -vv debug, -vvv trace (default: warnings, or RUST_LOG)
    #[arg(short, long, global = true, action = ArgAction::Count, help_heading = "Backend and logging")]
    pub verbose: u8,
}

impl Common {
    /// Load the config with the library's loader, apply `--backend` and
    /// `--group`, validate, and check that the backend is registered.
    pub fn load_config(&self) -> Result<Config, CliError> {
        let mut loader = Config::loader();
        if let Some(path) = &self.config {
            loader = loader.file(path);
        }
        let mut config = loader.load()?;
        if let Some(backend) = &self.backend {
            config.backend = backend.trim().to_ascii_lowercase();
        }
        if let Some(group) = &self.group {
            if group.is_empty() || group.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(CliError::Usage(format!(
                    "--group {group:?}: must be non-empty, without whitespace or control characters"
                )));
            }
            config.group_id = Some(group.clone());
        }
        config.validate()?;
        // An unknown backend is a configuration error, reported before any work.
        pubsub_core::registry::lookup(&config.backend)?;
        Ok(config)
    }
}

/// Give this run a `memory` namespace of its own (`<prefix>-<run>`) unless
/// one was configured, so that runs in one process never see each other's
/// messages.
pub fn isolate_memory_namespace(
    config: &mut Config,
    prefix: &str,
    run: &str,
) -> Result<(), CliError> {
    let memory = config.section_mut::<MemoryConfig>()?;
    if memory.namespace == MemoryConfig::default().namespace {
        memory.namespace = format!("{prefix}-{run}");
    }
    Ok(())
}

/// How long a demo or bench connection's MQTT session outlives it when the
/// command keeps sessions (manual ack) and none is configured.
#[cfg(feature = "mqtt")]
pub const SESSION_EXPIRY: Duration = Duration::from_secs(60);

/// The config of one of the several connections a command opens, `role`
/// naming it (`source`, `sink`, `w1`, `pub2` ...): identities the broker
/// holds per client are made distinct, since two connections under one
/// MQTT client id throw each other off, and two Redis stream readers under
/// one consumer name share their pending entries. A configured
/// `mqtt.client_id` or `redis.stream_consumer` becomes `<it>-<role>`. With
/// `keep_session` (manual ack on MQTT, where the broker keeps what a client
/// has not acknowledged in its session), a client id is made if none is
/// configured (`pubsub-<run>-<role>`, the same for a client started again in
/// that role) and `mqtt.session_expiry` defaults to 60 s.
// Without the mqtt and redis features there is nothing to change.
#[allow(unused_mut, unused_variables)]
pub fn for_connection(
    config: &Config,
    role: &str,
    run: &str,
    keep_session: bool,
) -> Result<Config, CliError> {
    let mut c = config.clone();
    match c.backend.as_str() {
        #[cfg(feature = "mqtt")]
        "mqtt" => {
            let mqtt = c.section_mut::<pubsub_mqtt::MqttConfig>()?;
            mqtt.client_id = match (&mqtt.client_id, keep_session) {
                (Some(id), _) => Some(format!("{id}-{role}")),
                (None, true) => Some(format!("pubsub-{run}-{role}")),
                (None, false) => None,
            };
            if keep_session && mqtt.session_expiry.is_none() {
                mqtt.session_expiry = Some(SESSION_EXPIRY);
            }
        }
        #[cfg(feature = "redis")]
        "redis" => {
            let redis = c.section_mut::<pubsub_redis::RedisConfig>()?;
            if let Some(name) = &redis.stream_consumer {
                redis.stream_consumer = Some(format!("{name}-{role}"));
            }
        }
        _ => {}
    }
    Ok(c)
}

/// A duration on the command line: a number of seconds (`30`, `2.5`) or a
/// number with a unit (`250ms`, `30s`, `2m`, `1h`, `500us`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration; write e.g. 30, 2.5, 250ms, 30s or 2m"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?}; use us, ms, s, m or h"
            ))
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

/// A rate per second, with one meaning for every command: a positive
/// number, or `0` for no limit (as fast as the backend accepts).
pub fn parse_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r.abs()),
        _ => Err(format!(
            "{text:?} is not a rate; write a number per second, or 0 for no limit"
        )),
    }
}

/// Eight hex digits, different for every run, for topic and namespace names.
pub fn run_id() -> String {
    let seed = (std::process::id(), std::time::SystemTime::now());
    let h = std::collections::hash_map::RandomState::new().hash_one(seed);
    format!("{:08x}", h as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_with_and_without_units() {
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2.5").unwrap(), Duration::from_millis(2500));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration(" 1h ").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("500us").unwrap(), Duration::from_micros(500));
        for bad in ["", "soon", "5 parsecs", "-1", "1e400", "1.2.3"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rates_are_positive_or_zero_for_no_limit() {
        assert_eq!(parse_rate("100").unwrap(), 100.0);
        assert_eq!(parse_rate("0.5").unwrap(), 0.5);
        assert_eq!(parse_rate("0").unwrap(), 0.0);
        assert_eq!(parse_rate("-0").unwrap(), 0.0);
        for bad in ["-3", "fast", "inf", "NaN", "-0.5"] {
            assert!(parse_rate(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn run_ids_differ() {
        let a = run_id();
        assert_eq!(a.len(), 8);
        assert_ne!(a, run_id());
    }
}
