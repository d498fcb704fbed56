//! `pubsub bench`: throughput and latency of the chosen backend, like `nats bench`.
//!
//! Two phases on topics of their own: latency with one message in flight
//! (publish, wait for it at a subscriber, repeat), then throughput with every
//! publisher sending as fast as the backend accepts while every subscriber
//! counts, timestamps carried in the payload giving the latency under load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use clap::{Args, ValueEnum};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use pubsub_core::{validate_topic_name, AckMode, Config, Error, Message, OverflowPolicy, PubSub};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::CliError;
use crate::output::say;
use crate::settings::{for_connection, isolate_memory_namespace, parse_duration, run_id};
use crate::signals;
use crate::stats::{fmt_duration, mib_per_second, per_second, Latencies};

/// What bench's own subscribers do when their receive buffer is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchOverflow {
    /// Back-pressure: the backend stops reading (the in-process backend
    /// slows the publishers down) instead of dropping, so that a run
    /// measures rather than drops.
    Block,
    /// Drop the oldest buffered message (the library's default).
    DropOldest,
    /// Drop the arriving message.
    DropNewest,
    /// As the config says (`buffer.overflow`, `MSIGHT_PUBSUB_OVERFLOW`).
    Config,
}

/// How long subscribers wait for more after the publishers are done.
const IDLE_AFTER_PUBLISH: Duration = Duration::from_secs(2);

/// Subscribers move the progress bar every this many messages.
const PROGRESS_STEP: u64 = 256;

/// Measure throughput and latency.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Messages to publish, shared among the publishers
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub msgs: u64,

    /// Payload bytes of each message (latency needs at least 8)
    #[arg(long, value_name = "BYTES", default_value_t = 128)]
    pub size: usize,

    /// Publishers, one connection each
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub pubs: u16,

    /// Subscribers, one connection each; with --group they share the
    /// messages, otherwise each receives all of them
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(0..=256))]
    pub subs: u16,

    /// Latency samples with one message in flight (0: skip that phase)
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub latency_samples: u64,

    /// Longest the whole run may take
    #[arg(long, value_name = "SECS", default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Topic prefix (a run id is appended)
    #[arg(long, value_name = "PREFIX", default_value = "pubsub-bench")]
    pub topic_prefix: String,

    /// No progress bars (they are hidden anyway when stderr is not a terminal)
    #[arg(long)]
    pub no_progress: bool,

    /// When a subscriber's receive buffer is full: block (back-pressure,
    /// the default here), drop-oldest, drop-newest, or as the config says.
    /// A run that loses messages exits 1
    #[arg(long, value_enum, ignore_case = true, default_value_t = BenchOverflow::Block)]
    pub overflow: BenchOverflow,
}

pub fn run(args: &BenchArgs, config: Config) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("pubsub-bench")
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(bench(args, config))
}

/// Connections of one run.
struct Handles {
    pubs: Vec<PubSub>,
    subs: Vec<PubSub>,
}

impl Handles {
    /// Whether the subscribers form a group (sharing the messages).
    fn grouped(&self) -> bool {
        self.subs.first().is_some_and(|s| s.group_id().is_some())
    }

    async fn close_subscribers(&self) {
        for ps in &self.subs {
            if let Err(e) = ps.close().await {
                tracing::warn!(error = %e, "closing a bench connection failed");
            }
        }
    }

    async fn close(&self) {
        for ps in self.pubs.iter().chain(&self.subs) {
            if ps.is_closed() {
                continue;
            }
            if let Err(e) = ps.close().await {
                tracing::warn!(error = %e, "closing a bench connection failed");
            }
        }
    }
}

async fn bench(args: &BenchArgs, mut config: Config) -> Result<(), CliError> {
    let run = run_id();
    isolate_memory_namespace(&mut config, "pubsub-bench", &run)?;
    let topic = format!("{}.{run}", args.topic_prefix);
    let latency_topic = format!("{}.{run}.latency", args.topic_prefix);
    validate_topic_name(&latency_topic)?;
    let group = config.group_id.take();
    let mut sub_config = config.clone();
    sub_config.group_id = group.clone();
    sub_config.buffer.overflow = match args.overflow {
        BenchOverflow::Block => OverflowPolicy::Block,
        BenchOverflow::DropOldest => OverflowPolicy::DropOldest,
        BenchOverflow::DropNewest => OverflowPolicy::DropNewest,
        BenchOverflow::Config => config.buffer.overflow,
    };

    let deadline = Instant::now() + args.timeout;
    let mut h = Handles {
        pubs: Vec::new(),
        subs: Vec::new(),
    };
    // Each connection a client identity of its own (see `for_connection`).
    let keep_sessions = sub_config.ack == AckMode::Manual;
    let pub_configs = (1..=args.pubs)
        .map(|n| for_connection(&config, &format!("pub{n}"), &run, false))
        .collect::<Result<Vec<_>, _>>()?;
    let sub_configs = (1..=args.subs)
        .map(|n| for_connection(&sub_config, &format!("sub{n}"), &run, keep_sessions))
        .collect::<Result<Vec<_>, _>>()?;
    let connected = async {
        for c in &pub_configs {
            h.pubs.push(PubSub::connect(c).await?);
        }
        for c in &sub_configs {
            h.subs.push(PubSub::connect(c).await?);
        }
        Ok::<(), Error>(())
    }
    .await;
    let result = match connected {
        Ok(()) => {
            signals::connected();
            tokio::select! {
                r = run_bench(args, &h, &topic, &latency_topic, group.as_deref(), deadline) => r,
                sig = signals::stopped() => Err(CliError::interrupted(sig, "")),
            }
        }
        Err(e) => Err(e.into()),
    };
    // Its own topics are left behind nowhere (Redis streams), also after a
    // failure; the subscribers close first, so that no reader makes a stream again.
    h.close_subscribers().await;
    if let Some(p) = h.pubs.first() {
        for t in [&topic, &latency_topic] {
            if let Err(e) = p.delete_topic(t.as_str()).await {
                tracing::warn!(topic = %t, error = %e, "deleting a bench topic failed");
            }
        }
    }
    h.close().await;
    match result {
        Err(CliError::Interrupted { signal, .. }) => {
            let published: u64 = h.pubs.iter().map(|p| p.stats().published).sum();
            let received: u64 = h.subs.iter().map(|s| s.stats().received).sum();
            Err(CliError::interrupted(
                signal,
                format!("{published} messages published (flushed), {received} received"),
            ))
        }
        other => other,
    }
}

async fn run_bench(
    args: &BenchArgs,
    h: &Handles,
    topic: &str,
    latency_topic: &str,
    group: Option<&str>,
    deadline: Instant,
) -> Result<(), CliError> {
    let backend = h.pubs[0].backend_name();
    if let Some(max) = h.pubs[0].capabilities().max_payload {
        if args.size > max {
            return Err(CliError::Usage(format!(
                "--size {}: over the {backend} backend's max payload of {max} bytes",
                args.size
            )));
        }
    }
    let plural = |n: u16, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let overflow = match h.subs.first().map(|_| args.overflow) {
        Some(BenchOverflow::Block) => ", back-pressure",
        _ => "",
    };
    say!(
        "pubsub bench: {backend} backend, {} msgs of {} B, {}, {}{}{overflow}",
        args.msgs,
        args.size,
        plural(args.pubs, "publisher"),
        plural(args.subs, "subscriber"),
        group.map_or_else(String::new, |g| format!(" in group {g:?}"))
    );

    if args.latency_samples > 0 && !h.subs.is_empty() {
        let mut lat = one_in_flight(&h.pubs[0], &h.subs[0], latency_topic, args, deadline).await?;
        say!(
            "latency, one message in flight ({} samples): {}",
            lat.len(),
            lat.summary()
        );
    }
    throughput(args, h, topic, deadline).await
}

/// Publish one message, wait for it at `sub`, repeat.
async fn one_in_flight(
    publisher: &PubSub,
    sub: &PubSub,
    topic: &str,
    args: &BenchArgs,
    deadline: Instant,
) -> Result<Latencies, CliError> {
    sub.subscribe_in(topic, None).await?;
    let payload = Bytes::from(vec![0x5a; args.size]);
    let mut lat = Latencies::with_capacity(usize::try_from(args.latency_samples).unwrap_or(0));
    for _ in 0..args.latency_samples {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let t0 = Instant::now();
        publisher.publish(topic, payload.clone()).await?;
        match sub.recv_timeout(left).await? {
            Some(m) => {
                lat.record(t0.elapsed());
                settle(m)?;
            }
            None => break,
        }
    }
    sub.unsubscribe(topic).await?;
    Ok(lat)
}

/// What one publisher or subscriber did.
#[derive(Debug, Default)]
struct Side {
    count: u64,
    elapsed: Duration,
    latencies: Latencies,
}

/// Every publisher sends its share as fast as the backend accepts while
/// every subscriber counts; then the table, and an error if the
/// publishers ran out of time.
async fn throughput(
    args: &BenchArgs,
    h: &Handles,
    topic: &str,
    deadline: Instant,
) -> Result<(), CliError> {
    let grouped = h.grouped();
    // Each subscriber receives every message, or the group shares them.
    let expected_received = |sent: u64| {
        if grouped {
            sent
        } else {
            sent * u64::from(args.subs)
        }
    };
    for s in &h.subs {
        s.subscribe(topic).await?;
    }
    let bars = Bars::new(args, expected_received(args.msgs));
    let (mut pubs, mut subs) = send_and_count(args, h, topic, deadline, &bars).await?;
    bars.finish();

    let published: u64 = pubs.iter().map(|s| s.count).sum();
    let received: u64 = subs.iter().map(|s| s.count).sum();
    print_table(args.size, &mut pubs, &mut subs);
    let dropped: u64 = h.subs.iter().map(|s| s.stats().dropped).sum();
    let expected = expected_received(published);
    print_delivery(received, expected, dropped);
    if published < args.msgs {
        return Err(CliError::Failed(format!(
            "bench: timed out after {}: {published} of {} messages published",
            fmt_duration(args.timeout),
            args.msgs
        )));
    }
    if received < expected {
        return Err(CliError::Failed(format!(
            "bench: {} of {expected} messages lost ({dropped} dropped by receive buffers)",
            expected - received
        )));
    }
    Ok(())
}

/// The progress bars of the throughput phase: messages published, and
/// received by all subscribers together.
struct Bars {
    _multi: MultiProgress,
    published: ProgressBar,
    received: ProgressBar,
}

impl Bars {
    fn new(args: &BenchArgs, expected_received: u64) -> Bars {
        let multi = MultiProgress::with_draw_target(if args.no_progress {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        });
        let style =
            ProgressStyle::with_template("{prefix:>9} [{bar:40}] {pos}/{len} {elapsed_precise}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
        let published = multi.add(
            ProgressBar::new(args.msgs)
                .with_style(style.clone())
                .with_prefix("published"),
        );
        let received = multi.add(
            ProgressBar::new(expected_received)
                .with_style(style)
                .with_prefix("received"),
        );
        Bars {
            _multi: multi,
            published,
            received,
        }
    }

    fn finish(&self) {
        self.published.finish_and_clear();
        self.received.finish_and_clear();
    }
}

/// What every task of the throughput phase shares besides its connection.
#[derive(Clone)]
struct Lane {
    topic: String,
    /// Start of the phase: payload timestamps count from here.
    start: Instant,
    deadline: Instant,
    bar: ProgressBar,
}

/// Start the subscribers, then the publishers on their shares of the
/// messages; wait for the publishers, tell the subscribers they are done,
/// and wait for them.
async fn send_and_count(
    args: &BenchArgs,
    h: &Handles,
    topic: &str,
    deadline: Instant,
    bars: &Bars,
) -> Result<(Vec<Side>, Vec<Side>), CliError> {
    let start = Instant::now();
    let lane = |bar: &ProgressBar| Lane {
        topic: topic.to_string(),
        start,
        deadline,
        bar: bar.clone(),
    };
    let (done_tx, done_rx) = watch::channel(false);
    let shared_total = h.grouped().then(|| Arc::new(AtomicU64::new(0)));
    let sub_tasks: Vec<_> = h
        .subs
        .iter()
        .map(|s| {
            tokio::spawn(subscriber(
                s.clone(),
                lane(&bars.received),
                args.msgs,
                shared_total.clone(),
                done_rx.clone(),
            ))
        })
        .collect();
    let n_pubs = u64::from(args.pubs);
    let pub_tasks: Vec<_> = h
        .pubs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let share = args.msgs / n_pubs + u64::from((i as u64) < args.msgs % n_pubs);
            tokio::spawn(publisher(
                p.clone(),
                lane(&bars.published),
                share,
                args.size,
            ))
        })
        .collect();

    let pubs = join_all(pub_tasks).await?;
    let _ = done_tx.send(true);
    let subs = join_all(sub_tasks).await?;
    Ok((pubs, subs))
}

/// The table: a row per publisher and per subscriber when there are
/// several, and a row for all of them.
fn print_table(size: usize, pubs: &mut [Side], subs: &mut [Side]) {
    say!();
    say!(
        "{:<10} {:>12} {:>12} {:>10} {:>10} {:>10}",
        "",
        "msgs",
        "msgs/s",
        "MiB/s",
        "p50",
        "p99"
    );
    print_rows("pub", pubs, size);
    print_rows("sub", subs, size);
}

/// The rows of one kind of side, `name #1`, `name #2`..., when there are
/// several, then the row `name` for all of them (none when there are none).
fn print_rows(name: &str, sides: &mut [Side], size: usize) {
    let several = sides.len() > 1;
    let mut all = Latencies::default();
    for (i, s) in sides.iter_mut().enumerate() {
        if several {
            let label = format!("{name} #{}", i + 1);
            print_row(&label, s.count, s.elapsed, &mut s.latencies, size);
        }
        all.merge(&s.latencies);
    }
    if !sides.is_empty() {
        let count = sides.iter().map(|s| s.count).sum();
        let elapsed = sides.iter().map(|s| s.elapsed).max().unwrap_or_default();
        print_row(name, count, elapsed, &mut all, size);
    }
}

/// One row; `-` for percentiles without samples (publishers take none).
fn print_row(name: &str, count: u64, elapsed: Duration, lat: &mut Latencies, size: usize) {
    let p50 = lat.percentile(50.0).map_or("-".into(), fmt_duration);
    let p99 = lat.percentile(99.0).map_or("-".into(), fmt_duration);
    say!(
        "{name:<10} {count:>12} {:>12.0} {:>10.2} {p50:>10} {p99:>10}",
        per_second(count as f64, elapsed),
        mib_per_second((count as usize * size) as f64, elapsed),
    );
}

/// What arrived of what should have, and what the receive buffers dropped.
fn print_delivery(received: u64, expected: u64, dropped: u64) {
    say!();
    say!(
        "received {received} of {expected}, lost {}, dropped by receive buffers {dropped}",
        expected.saturating_sub(received)
    );
    if dropped > 0 {
        say!(
            "note: receive buffers overflowed and dropped messages; --overflow block (the default) \
             makes a backend that can wait slow the publishers down instead"
        );
    }
}

/// Wait for each task in turn (each bounded).
async fn join_all(tasks: Vec<JoinHandle<Result<Side, Error>>>) -> Result<Vec<Side>, CliError> {
    let mut sides = Vec::with_capacity(tasks.len());
    for t in tasks {
        sides.push(join(t).await?);
    }
    Ok(sides)
}

async fn join(task: JoinHandle<Result<Side, Error>>) -> Result<Side, CliError> {
    match tokio::time::timeout(Duration::from_secs(30), task).await {
        Ok(Ok(r)) => r.map_err(CliError::from),
        Ok(Err(e)) => Err(CliError::Failed(format!("bench task stopped: {e}"))),
        Err(_) => Err(CliError::Failed(
            "bench task did not stop within 30 s".into(),
        )),
    }
}

/// Nanoseconds since `start`, as carried in a payload.
fn stamp(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

async fn publisher(ps: PubSub, lane: Lane, count: u64, size: usize) -> Result<Side, Error> {
    let padding = vec![0x5au8; size.saturating_sub(8)];
    let mut sent = 0;
    while sent < count && Instant::now() < lane.deadline {
        let payload = if size >= 8 {
            let mut b = BytesMut::with_capacity(size);
            b.put_u64(stamp(lane.start));
            b.put_slice(&padding);
            b.freeze()
        } else {
            Bytes::from(vec![0x5a; size])
        };
        ps.publish(lane.topic.as_str(), payload).await?;
        sent += 1;
        lane.bar.inc(1);
    }
    ps.flush().await?;
    Ok(Side {
        count: sent,
        elapsed: lane.start.elapsed(),
        latencies: Latencies::default(),
    })
}

/// With `ack = "manual"`, acknowledge a message once it is counted: the
/// bench then measures at-least-once delivery (without it a backend stops
/// at `max_in_flight` unsettled messages). Nothing to do in auto mode.
fn settle(m: Message) -> Result<(), Error> {
    if m.needs_settling() {
        m.ack()?;
    }
    Ok(())
}

/// Count messages until `expected` arrived (for this subscriber, or in
/// total with a group), the publishers are done and nothing came for
/// [`IDLE_AFTER_PUBLISH`], or the deadline.
async fn subscriber(
    ps: PubSub,
    lane: Lane,
    expected: u64,
    shared_total: Option<Arc<AtomicU64>>,
    done: watch::Receiver<bool>,
) -> Result<Side, Error> {
    let Lane {
        topic,
        start,
        deadline,
        bar,
    } = lane;
    let mut side = Side::default();
    let mut last = start;
    let mut done_at = None;
    let mut pending_progress = 0;
    loop {
        let total = match &shared_total {
            Some(t) => t.load(Ordering::Relaxed),
            None => side.count,
        };
        if total >= expected {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let wait = if *done.borrow() {
            let since = *done_at.get_or_insert(now);
            let idle_left = (last.max(since) + IDLE_AFTER_PUBLISH).saturating_duration_since(now);
            if idle_left.is_zero() {
                break;
            }
            idle_left.min(Duration::from_millis(100))
        } else {
            Duration::from_millis(100)
        };
        let Some(msg) = ps.recv_timeout(wait.min(deadline - now)).await? else {
            continue;
        };
        let ours = msg.topic == topic;
        let sent = msg.payload.get(..8).and_then(|b| b.try_into().ok());
        settle(msg)?;
        if !ours {
            continue; // left over from the latency phase
        }
        last = Instant::now();
        side.count += 1;
        if let Some(t) = &shared_total {
            t.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(sent) = sent {
            let sent = u64::from_be_bytes(sent);
            side.latencies
                .record(Duration::from_nanos(stamp(start).saturating_sub(sent)));
        }
        pending_progress += 1;
        if pending_progress == PROGRESS_STEP {
            bar.inc(pending_progress);
            pending_progress = 0;
        }
        side.elapsed = last - start;
    }
    bar.inc(pending_progress);
    Ok(side)
}
