//! `pubsub pub TOPIC [MESSAGE]`.

use std::ffi::OsString;
use std::io::{self, BufRead, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use clap::Args;
use msight_data::Data;
use pubsub_core::codec::MsgPack;
use pubsub_core::{blocking::PubSub, validate_topic_name, Bytes, Codec, Config, Headers};

use crate::error::CliError;
use crate::settings::parse_rate;
use crate::signals;
use crate::stats::Pacer;

/// Publish one message, a file, or each line of standard input.
#[derive(Debug, Args)]
pub struct PubArgs {
    /// Topic to publish to
    pub topic: String,

    /// The message; without it (and without --file or --msight-json) each
    /// line of standard input is one message, sent as it is read
    #[arg(conflicts_with_all = ["file", "msight_json"])]
    pub message: Option<OsString>,

    /// Send this file's bytes as one message
    #[arg(long, value_name = "PATH", conflicts_with = "msight_json")]
    pub file: Option<PathBuf>,

    /// Read msight messages in their JSON form (Python's `Data.to_json()`:
    /// an object with a "data_type", bytes in base64) from PATH, or from
    /// standard input with "-", and publish each in the msight MessagePack
    /// form (Python's `Data.serialize()`). Several objects may follow each
    /// other; sensor fields left out get Python's defaults (now, a new frame id)
    #[arg(long, value_name = "PATH")]
    pub msight_json: Option<PathBuf>,

    /// Send each message this many times
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,

    /// At most this many messages per second; 0 (the default): no limit
    #[arg(long, value_name = "MSGS_PER_SEC", value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// A header of every message, KEY=VALUE; repeat it for more (kept in
    /// order; a key may repeat). Backends without headers refuse it
    #[arg(long = "header", value_name = "KEY=VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("{text:?}: write a header as KEY=VALUE")),
    }
}

pub fn run(args: &PubArgs, config: &Config) -> Result<(), CliError> {
    validate_topic_name(&args.topic)?;
    let fixed: Option<Vec<Bytes>> = match (&args.message, &args.file, &args.msight_json) {
        (Some(m), _, _) => Some(vec![Bytes::from(m.clone().into_encoded_bytes())]),
        (None, Some(path), _) => {
            Some(vec![Bytes::from(std::fs::read(path).map_err(|e| {
                CliError::Usage(format!("--file {}: {e}", path.display()))
            })?)])
        }
        (None, None, Some(path)) => Some(msight_payloads(path)?),
        (None, None, None) => None,
    };
    let headers: Headers = args.headers.iter().cloned().collect();
    headers
        .validate()
        .map_err(|e| CliError::Usage(format!("--header: {}", e.message())))?;
    let from_stdin = fixed.is_none();
    let ps = PubSub::connect(config)?;
    signals::connected();
    tracing::info!(backend = ps.backend_name(), topic = %args.topic, "connected");
    crate::output::warn_if_in_process(&ps, "no other process receives these messages");
    if from_stdin && io::stdin().is_terminal() {
        eprintln!(
            "reading messages from standard input, one per line; end with Ctrl-D \
             (or give MESSAGE, --file or --msight-json)"
        );
    }
    let mut pacer = Pacer::new(args.rate);
    let mut sent = 0u64;
    let mut send = |payload: &Bytes| -> Result<(), CliError> {
        for _ in 0..args.count {
            if let Some(sig) = signals::sleep(pacer.next_delay()) {
                return Err(CliError::interrupted(sig, ""));
            }
            if headers.is_empty() {
                ps.publish(args.topic.as_str(), payload.clone())?;
            } else {
                ps.publish_with_headers(args.topic.as_str(), headers.clone(), payload.clone())?;
            }
            sent += 1;
        }
        Ok(())
    };
    let result = match &fixed {
        Some(payloads) => payloads.iter().try_for_each(&mut send),
        None => each_stdin_line(|line| send(&line)),
    };
    // Whatever happened, send what was accepted and disconnect.
    let closed = ps.flush().and_then(|()| ps.close());
    if let Err(CliError::Interrupted { signal, .. }) = result {
        closed?;
        return Err(CliError::interrupted(
            signal,
            format!(
                "{} messages published to {} (flushed)",
                ps.stats().published,
                args.topic
            ),
        ));
    }
    result?;
    closed?;
    let stats = ps.stats();
    if stats.published != sent {
        return Err(CliError::Failed(format!(
            "{sent} messages sent but {} accepted",
            stats.published
        )));
    }
    if from_stdin && sent == 0 {
        eprintln!("no input: 0 messages published to {}", args.topic);
    }
    tracing::info!(messages = sent, topic = %args.topic, "published and flushed");
    Ok(())
}

/// The msight MessagePack payloads of the JSON objects in `path` (`-`:
/// standard input).
fn msight_payloads(path: &Path) -> Result<Vec<Bytes>, CliError> {
    let shown = path.display();
    let text = if path == Path::new("-") {
        let mut text = Vec::new();
        io::stdin()
            .read_to_end(&mut text)
            .map_err(|e| CliError::Failed(format!("reading standard input: {e}")))?;
        text
    } else {
        std::fs::read(path).map_err(|e| CliError::Usage(format!("--msight-json {shown}: {e}")))?
    };
    let mut payloads = Vec::new();
    for data in serde_json::Deserializer::from_slice(&text).into_iter::<Data>() {
        let data = data.map_err(|e| CliError::Usage(format!("--msight-json {shown}: {e}")))?;
        let payload = MsgPack
            .encode(&data)
            .map_err(|e| CliError::Usage(format!("--msight-json {shown}: {e}")))?;
        payloads.push(payload);
    }
    if payloads.is_empty() {
        return Err(CliError::Usage(format!(
            "--msight-json {shown}: no JSON object in it"
        )));
    }
    Ok(payloads)
}

/// Call `f` with each line of standard input, without its line ending
/// (`\n` or `\r\n`), as it is read. The lines are read by a thread of
/// their own, so that a signal stops the command while it waits for input.
fn each_stdin_line(mut f: impl FnMut(Bytes) -> Result<(), CliError>) -> Result<(), CliError> {
    let (tx, lines) = mpsc::sync_channel::<io::Result<Option<Bytes>>>(64);
    // Ends at the end of the input; blocked on a read, it ends with the process.
    std::thread::spawn(move || {
        let stdin = io::stdin();
        let mut input = stdin.lock();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let line = match input.read_until(b'\n', &mut buf) {
                Ok(0) => Ok(None),
                Ok(_) => {
                    if buf.last() == Some(&b'\n') {
                        buf.pop();
                        if buf.last() == Some(&b'\r') {
                            buf.pop();
                        }
                    }
                    Ok(Some(Bytes::copy_from_slice(&buf)))
                }
                Err(e) => Err(e),
            };
            let last = !matches!(line, Ok(Some(_)));
            if tx.send(line).is_err() || last {
                return;
            }
        }
    });
    loop {
        match lines.recv_timeout(signals::POLL) {
            Ok(Ok(Some(line))) => f(line)?,
            Ok(Ok(None)) | Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
            Ok(Err(e)) => return Err(CliError::Failed(format!("reading standard input: {e}"))),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some(sig) = signals::stop_requested() {
                    return Err(CliError::interrupted(sig, ""));
                }
            }
        }
    }
}
