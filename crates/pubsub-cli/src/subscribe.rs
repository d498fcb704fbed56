//! `pubsub sub TOPIC...`.
//!
//! Messages are written to standard output by a thread of their own, so
//! that the receiving loop keeps listening for signals while a write
//! blocks (a reader that does not read). With `--ack manual` a message is
//! acknowledged only once its output has been written and flushed; when
//! the command ends, for whatever reason, every message it holds and has
//! not written is released for redelivery at once (`nak(0)`), not after
//! `ack_wait`.

use std::io::{self, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use msight_data::json::BytesAs;
use pubsub_core::{blocking::PubSub, validate_topic_name, AckMode, Config, Message};

use crate::error::CliError;
use crate::output::{write_message, Format};
use crate::settings::parse_duration;
use crate::signals;
use crate::stats::fmt_duration;

/// Who acknowledges received messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Ack {
    /// As the config says (`ack`, `MSIGHT_PUBSUB_ACK`; auto by default).
    Config,
    /// A message counts as handled when it is taken.
    Auto,
    /// Each message is acknowledged after its output was written and
    /// flushed; what is not written is released for redelivery.
    Manual,
}

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
    #[arg(long, value_enum, ignore_case = true, default_value_t = Format::Line)]
    pub format: Format,

    /// With --format msight: byte fields (an image) as base64 instead of
    /// their length; each line is then what Python's `Data.to_json()` writes
    #[arg(long)]
    pub base64: bool,

    /// Acknowledge each message after its output is written and flushed
    /// (manual; at least once: a subscriber killed before that loses
    /// nothing), or when taken (auto)
    #[arg(long, value_enum, ignore_case = true, default_value_t = Ack::Config)]
    pub ack: Ack,
}

/// What the receiving loop did.
#[derive(Debug, Default)]
struct Tally {
    received: u64,
    acked: u64,
    /// Taken but not written, and released.
    released: u64,
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
    let mut config = config.clone();
    match args.ack {
        Ack::Config => {}
        Ack::Auto => config.ack = AckMode::Auto,
        Ack::Manual => config.ack = AckMode::Manual,
    }
    let ps = PubSub::connect(&config)?;
    signals::connected();
    crate::output::warn_if_in_process(&ps, "no other process can publish to it");
    let mut tally = Tally::default();
    let result = subscribe_all(&ps, &args.topics).and_then(|()| receive(&ps, args, &mut tally));
    // Whatever happened: release what is held and not written, then close.
    let released = if config.ack == AckMode::Manual {
        release(&ps, config.buffer.capacity.max(config.max_in_flight) + 1)
    } else {
        // Auto mode: what is buffered and not taken stays unacknowledged
        // (Redis streams give it to another member later); taking it here
        // would acknowledge it unwritten.
        0
    };
    let closed = ps.close();
    match result {
        Err(CliError::Interrupted { signal, .. }) => {
            closed?;
            let mut summary = format!("{} messages received", tally.received);
            if config.ack == AckMode::Manual {
                summary.push_str(&format!(
                    ", {} acknowledged, {} released for redelivery",
                    tally.acked,
                    released + tally.released
                ));
            }
            Err(CliError::interrupted(signal, summary))
        }
        other => {
            other?;
            closed?;
            Ok(())
        }
    }
}

fn subscribe_all(ps: &PubSub, topics: &[String]) -> Result<(), CliError> {
    for t in topics {
        ps.subscribe(t.as_str())?;
    }
    // The readiness signal scripts and tests wait for: every subscription is
    // in place at the broker once these lines appear.
    for t in topics {
        eprintln!("subscribed to {t}");
    }
    Ok(())
}

/// Manual ack mode: stop fetching and give back, for redelivery at once,
/// every message the handle holds unsettled (at most `most`). Returns how
/// many were released.
fn release(ps: &PubSub, most: usize) -> u64 {
    if ps.is_closed() {
        return 0;
    }
    for t in ps.subscriptions() {
        if let Err(e) = ps.unsubscribe(t.as_str()) {
            tracing::warn!(topic = %t, error = %e, "unsubscribing failed");
        }
    }
    let mut released = 0;
    // Bounded: the buffer holds at most `most`.
    for _ in 0..most {
        match ps.recv_timeout(Duration::ZERO) {
            Ok(Some(m)) => {
                if m.needs_settling() && nak_now(m) {
                    released += 1;
                }
            }
            _ => break,
        }
    }
    released
}

/// Release `m` for redelivery at once; whether that worked.
fn nak_now(m: Message) -> bool {
    match m.nak(Duration::ZERO) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "releasing a message failed; it is delivered again after ack_wait");
            false
        }
    }
}

fn receive(ps: &PubSub, args: &SubArgs, tally: &mut Tally) -> Result<(), CliError> {
    let deadline = args.timeout.map(|t| Instant::now() + t);
    let bytes = if args.base64 {
        BytesAs::Base64
    } else {
        BytesAs::Length
    };
    let writer = Writer::spawn();
    loop {
        if args.count.is_some_and(|n| tally.received >= n) {
            return Ok(());
        }
        if let Some(sig) = signals::stop_requested() {
            return Err(CliError::interrupted(sig, ""));
        }
        let mut wait = signals::POLL;
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let waited = args.timeout.map(fmt_duration).unwrap_or_default();
                return Err(CliError::Failed(match args.count {
                    Some(n) => format!(
                        "timed out after {waited}: received {} of {n} messages",
                        tally.received
                    ),
                    None => format!(
                        "timed out after {waited}: received {} messages",
                        tally.received
                    ),
                }));
            }
            wait = wait.min(left);
        }
        let Some(msg) = ps.recv_timeout(wait)? else {
            continue;
        };
        tally.received += 1;
        let mut rendered = Vec::new();
        write_message(&mut rendered, args.format, &msg, bytes)
            .map_err(|e| CliError::Failed(format!("formatting a message: {e}")))?;
        match writer.write(rendered) {
            Written::Done => {}
            Written::ReaderGone => {
                // `pubsub sub x | head -1`: stop quietly; not written, so released.
                if msg.needs_settling() {
                    nak_now(msg);
                }
                return Ok(());
            }
            Written::Failed(e) => {
                if msg.needs_settling() {
                    nak_now(msg);
                }
                return Err(CliError::Failed(format!("writing to standard output: {e}")));
            }
            Written::Stopped(sig) => {
                // Not (wholly) written: not settled, released at once.
                if msg.needs_settling() && nak_now(msg) {
                    tally.released += 1;
                }
                return Err(CliError::interrupted(sig, ""));
            }
        }
        if msg.needs_settling() {
            msg.ack()?;
            tally.acked += 1;
        }
    }
}

/// How a write to standard output ended.
enum Written {
    Done,
    ReaderGone,
    Failed(io::Error),
    /// A signal asked to stop while the write was not done.
    Stopped(i32),
}

/// The thread that writes to standard output, one message at a time.
struct Writer {
    jobs: mpsc::SyncSender<Vec<u8>>,
    done: mpsc::Receiver<io::Result<()>>,
}

impl Writer {
    fn spawn() -> Writer {
        let (jobs, job_rx) = mpsc::sync_channel::<Vec<u8>>(1);
        let (done_tx, done) = mpsc::sync_channel(1);
        // Ends when `jobs` is dropped; a write blocked for good ends with the process.
        std::thread::spawn(move || {
            let stdout = io::stdout();
            for bytes in job_rx {
                let mut out = stdout.lock();
                let r = out.write_all(&bytes).and_then(|()| out.flush());
                drop(out);
                if done_tx.send(r).is_err() {
                    return;
                }
            }
        });
        Writer { jobs, done }
    }

    /// Write `bytes` and flush, waiting for it unless a signal asks to stop.
    fn write(&self, bytes: Vec<u8>) -> Written {
        if self.jobs.send(bytes).is_err() {
            return Written::Failed(io::Error::other("the output thread ended"));
        }
        loop {
            match self.done.recv_timeout(signals::POLL) {
                Ok(Ok(())) => return Written::Done,
                Ok(Err(e)) if e.kind() == io::ErrorKind::BrokenPipe => return Written::ReaderGone,
                Ok(Err(e)) => return Written::Failed(e),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Written::Failed(io::Error::other("the output thread ended"))
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(sig) = signals::stop_requested() {
                        return Written::Stopped(sig);
                    }
                }
            }
        }
    }
}
