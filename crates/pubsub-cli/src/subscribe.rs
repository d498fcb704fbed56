//! `pubsub sub TOPIC...`.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use clap::Args;
use msight_data::json::BytesAs;
use pubsub_core::{blocking::PubSub, validate_topic_name, Config};

use crate::error::CliError;
use crate::output::{write_message, Format};
use crate::settings::parse_duration;
use crate::stats::fmt_duration;

/// Print what arrives on the topics.
#[derive(Debug, Args)]
pub struct SubArgs {
    /// Topics to subscribe to (the backend's wildcards allowed)
    #[arg(required = true, value_name = "TOPIC")]
    pub topics: Vec<String>,

    /// Exit 0 after this many messages
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// Exit 1 if this time passes first (seconds, or with a unit: 500ms, 2m)
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// How to print each message
    #[arg(long, value_enum, default_value_t = Format::Line)]
    pub format: Format,

    /// With --format msight: byte fields (an image) as base64 instead of
    /// their length; each line is then what Python's `Data.to_json()` writes
    #[arg(long)]
    pub base64: bool,
}

pub fn run(args: &SubArgs, config: &Config) -> Result<(), CliError> {
    if args.base64 && args.format != Format::Msight {
        return Err(CliError::Usage(
            "--base64 goes with --format msight".to_string(),
        ));
    }
    for t in &args.topics {
        validate_topic_name(t)?;
    }
    let ps = PubSub::connect(config)?;
    crate::output::warn_if_in_process(&ps, "no other process can publish to it");
    for t in &args.topics {
        ps.subscribe(t.as_str())?;
    }
    // The readiness signal scripts and tests wait for: every subscription is
    // in place at the broker once these lines appear.
    for t in &args.topics {
        eprintln!("subscribed to {t}");
    }
    let result = receive(&ps, args);
    let closed = ps.close();
    result?;
    closed?;
    Ok(())
}

fn receive(ps: &PubSub, args: &SubArgs) -> Result<(), CliError> {
    let deadline = args.timeout.map(|t| Instant::now() + t);
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut received = 0u64;
    loop {
        if args.count.is_some_and(|n| received >= n) {
            return Ok(());
        }
        let msg = match deadline {
            None => Some(ps.recv()?),
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => ps.recv_timeout(left)?,
                _ => None,
            },
        };
        let Some(msg) = msg else {
            let waited = args.timeout.map(fmt_duration).unwrap_or_default();
            return Err(CliError::Failed(match args.count {
                Some(n) => format!("timed out after {waited}: received {received} of {n} messages"),
                None => format!("timed out after {waited}: received {received} messages"),
            }));
        };
        received += 1;
        let bytes = if args.base64 {
            BytesAs::Base64
        } else {
            BytesAs::Length
        };
        let written = write_message(&mut out, args.format, &msg.topic, &msg.payload, bytes)
            .and_then(|()| out.flush());
        match written {
            Ok(()) => {}
            // The reader went away (`pubsub sub x | head -1`): stop quietly.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(CliError::Failed(format!("writing to standard output: {e}"))),
        }
    }
}
