//! `pubsub demo`: the roadside-sensor pipeline.
//!
//! A source publishes frames, msight `ImageData` messages as a Python
//! camera node sends them, on `PREFIX.<run>.frames`; a group of workers
//! (one connection each, all in one group) takes each frame once, computes a
//! checksum of its payload and publishes a result on `PREFIX.<run>.results`;
//! a sink collects the results, checks each checksum against the frame the
//! source made, and reports frames per worker, end-to-end latency,
//! throughput, and lost, duplicated or corrupt frames.
//!
//! With `--ack manual` each worker acknowledges a frame once its result is
//! published; `--kill-worker N` aborts one worker, holding a frame, after
//! N frames (as a crash would: nothing settled, its connection gone), and
//! the frames it held are delivered again to the others after `ack_wait`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use pubsub_core::{validate_topic_name, AckMode, Config, Error, ErrorKind, PubSub};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::CliError;
use crate::frame::{checksum, now_us, synthetic_payload, Frame, FrameResult};
use crate::output::say;
use crate::settings::{
    for_connection, isolate_memory_namespace, parse_duration, parse_rate, run_id,
};
use crate::signals;
use crate::stats::{fmt_duration, mib_per_second, per_second, Latencies, Pacer};
use crate::subscribe::Ack;

/// The workers' group when neither `--group` nor `group_id` names one.
const DEFAULT_GROUP: &str = "pubsub-demo-workers";

/// How long the sink keeps listening after the last expected result, to
/// catch duplicates.
const DUPLICATE_GRACE: Duration = Duration::from_millis(300);

/// How often the sink looks whether a task failed while it waits.
const POLL: Duration = Duration::from_millis(100);

/// The workers' `ack_wait` in manual ack mode when neither `--ack-wait` nor
/// the config sets one (the library's 30 s would outlast the run).
const DEMO_ACK_WAIT: Duration = Duration::from_secs(2);

/// Which backends keep messages for `--ack manual`, said when it is refused.
const MANUAL_BACKENDS: &str = "manual ack needs a backend that keeps messages: nats with nats.mode = \"jetstream\", redis with redis.mode = \"streams\", mqtt at QoS 1 or 2, or memory";

/// Run the sensor pipeline: a source, a group of workers, a sink.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Frames the source publishes
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub frames: u64,

    /// Payload bytes of each frame (after a header of about 40 bytes)
    #[arg(long, value_name = "BYTES", default_value_t = 4096)]
    pub payload_size: usize,

    /// Workers in the group (one connection each)
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: u16,

    /// Frames per second the source publishes; 0: as fast as it can
    #[arg(long, value_name = "FRAMES_PER_SEC", default_value_t = 1000.0, value_parser = parse_rate)]
    pub rate: f64,

    /// Longest the whole run may take
    #[arg(long, value_name = "SECS", default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Sensor name written in every frame
    #[arg(long, default_value = "roadside-cam-01")]
    pub sensor: String,

    /// Topics are PREFIX.RUN.frames and PREFIX.RUN.results, RUN a new id per run
    #[arg(long, value_name = "PREFIX", default_value = "pubsub-demo")]
    pub topic_prefix: String,

    /// How the workers settle frames: manual acknowledges each frame after
    /// its result is published (at least once; the backend must keep
    /// messages: memory, NATS JetStream, Redis streams, MQTT at QoS 1 or 2),
    /// auto when taken
    #[arg(long, value_enum, ignore_case = true, default_value_t = Ack::Config)]
    pub ack: Ack,

    /// With manual ack: abort worker 1 after N frames while it holds the
    /// next (nothing settled, connection gone); its frames go to the others
    #[arg(long, value_name = "N")]
    pub kill_worker: Option<u64>,

    /// With manual ack: the workers' ack_wait [default: the config's, or 2s
    /// when that is the library's 30s]
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    pub ack_wait: Option<Duration>,
}

pub fn run(args: &DemoArgs, config: Config) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("pubsub-demo")
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start the async runtime: {e}")))?;
    let mut report = runtime.block_on(pipeline(args, config))?;
    report.print();
    report.verdict()
}

/// Everything the summary shows.
#[derive(Debug)]
struct Report {
    frames: u64,
    published: u64,
    payload_size: usize,
    per_worker: Vec<u64>,
    processed: u64,
    results: u64,
    lost: u64,
    duplicated: u64,
    corrupt: u64,
    malformed: u64,
    latencies: Latencies,
    elapsed: Duration,
    dropped: u64,
    timed_out: Option<Duration>,
    /// Manual ack: frames delivered again (attempt > 1).
    redelivered: Option<u64>,
    /// The worker killed, and after how many frames.
    killed: Option<(u16, u64)>,
}

struct Pipeline {
    source: PubSub,
    workers: Vec<PubSub>,
    /// Each worker's config, for starting a killed one again.
    worker_configs: Vec<Config>,
    sink: PubSub,
    manual: bool,
}

/// The topics and the workers' group: frames -> group -> results.
struct Route {
    frames: String,
    group: String,
    results: String,
}

impl Pipeline {
    fn handles(&self) -> impl Iterator<Item = &PubSub> {
        std::iter::once(&self.source)
            .chain(self.workers.iter())
            .chain(std::iter::once(&self.sink))
    }

    /// The sink to the results, each worker to the frames.
    async fn subscribe(&self, route: &Route) -> Result<(), Error> {
        self.sink.subscribe_in(&route.results, None).await?;
        for w in &self.workers {
            w.subscribe(&route.frames).await?;
        }
        Ok(())
    }

    /// Close every connection, and delete the run's topics where the broker
    /// keeps them (Redis streams and their groups): the subscribers close
    /// first, so that no reader is left to make a stream again.
    async fn finish(&self, route: &Route) {
        let close = |ps: &PubSub| {
            let ps = ps.clone();
            async move {
                if let Err(e) = ps.close().await {
                    if e.kind() != ErrorKind::Closed {
                        tracing::warn!(error = %e, "closing a demo connection failed");
                    }
                }
            }
        };
        for ps in self.workers.iter().chain(std::iter::once(&self.sink)) {
            close(ps).await;
        }
        for t in [&route.frames, &route.results] {
            if let Err(e) = self.source.delete_topic(t.as_str()).await {
                tracing::warn!(topic = %t, error = %e, "deleting a demo topic failed");
            }
        }
        close(&self.source).await;
    }
}

/// Whether the workers settle manually, and their `ack_wait`.
fn ack_settings(args: &DemoArgs, config: &Config) -> Result<(bool, Duration), CliError> {
    let manual = match args.ack {
        Ack::Config => config.ack == AckMode::Manual,
        Ack::Auto => false,
        Ack::Manual => true,
    };
    if args.kill_worker.is_some() && !manual {
        return Err(CliError::Usage(
            "--kill-worker needs --ack manual: with auto ack the frames a killed worker holds are lost".into(),
        ));
    }
    let ack_wait = args
        .ack_wait
        .unwrap_or(if config.ack_wait == Config::default().ack_wait {
            DEMO_ACK_WAIT
        } else {
            config.ack_wait
        });
    Ok((manual, ack_wait))
}

async fn pipeline(args: &DemoArgs, mut config: Config) -> Result<Report, CliError> {
    let run = run_id();
    isolate_memory_namespace(&mut config, "pubsub-demo", &run)?;
    let (manual, ack_wait) = ack_settings(args, &config)?;
    let route = Route {
        frames: format!("{}.{run}.frames", args.topic_prefix),
        group: config
            .group_id
            .take()
            .unwrap_or_else(|| DEFAULT_GROUP.to_string()),
        results: format!("{}.{run}.results", args.topic_prefix),
    };
    validate_topic_name(&route.frames)?;
    validate_topic_name(&route.results)?;

    // The source and the sink take what arrives; the workers settle.
    config.ack = AckMode::Auto;
    let mut worker_config = config.clone();
    worker_config.group_id = Some(route.group.clone());
    if manual {
        worker_config.ack = AckMode::Manual;
        worker_config.ack_wait = ack_wait;
    }
    // Each connection a client identity of its own; with manual ack, MQTT
    // workers keep their sessions, which hold what they have not acked.
    let worker_configs = (1..=args.workers)
        .map(|n| for_connection(&worker_config, &format!("w{n}"), &run, manual))
        .collect::<Result<Vec<_>, _>>()?;
    let sink = PubSub::connect(&for_connection(&config, "sink", &run, false)?).await?;
    let mut workers = Vec::with_capacity(usize::from(args.workers));
    for c in &worker_configs {
        let worker = PubSub::connect(c).await.map_err(|e| {
            if manual && e.kind() == ErrorKind::InvalidConfig && e.message().contains("ack") {
                CliError::Usage(format!("demo --ack manual: {e}; {MANUAL_BACKENDS}"))
            } else {
                e.into()
            }
        })?;
        workers.push(worker);
    }
    let source = PubSub::connect(&for_connection(&config, "source", &run, false)?).await?;
    let p = Pipeline {
        source,
        workers,
        worker_configs,
        sink,
        manual,
    };
    signals::connected();
    let result = tokio::select! {
        r = run_pipeline(args, &p, &route) => r,
        sig = signals::stopped() => Err(CliError::interrupted(sig, "")),
    };
    p.finish(&route).await;
    match result {
        Err(CliError::Interrupted { signal, .. }) => Err(CliError::interrupted(
            signal,
            format!(
                "{} frames published (flushed), {} results received",
                p.source.stats().published,
                p.sink.stats().received
            ),
        )),
        other => other,
    }
}

async fn run_pipeline(args: &DemoArgs, p: &Pipeline, route: &Route) -> Result<Report, CliError> {
    check_frame_fits(args, &p.source)?;
    p.subscribe(route).await?;
    print_banner(args, p, route);

    // What the sink checks results against.
    let expected: Vec<u64> = (0..args.frames)
        .map(|id| checksum(&synthetic_payload(id, args.payload_size)))
        .collect();
    let deadline = Instant::now() + args.timeout;
    let index = FrameIndex::default();
    let mut tasks = Tasks::spawn(args, p, route, deadline, &index);

    let mut tally = Tally::new(expected, args.payload_size, p.workers.len(), index);
    let timed_out = collect(p, &mut tally, &mut tasks, route, deadline).await?;
    let elapsed = tally.last_at.map_or(Duration::ZERO, |t| t - tasks.started);

    let source_progress = tasks.progress.clone();
    let (processed, killed, redelivered) = tasks.finish().await?;
    let published = source_progress.published.load(Ordering::Acquire);
    // Late duplicates: the workers have flushed; listen a little longer.
    while let Some(m) = p.sink.recv_timeout(DUPLICATE_GRACE).await? {
        tally.add(&m.payload);
    }
    let dropped = p.handles().map(|ps| ps.stats().dropped).sum();
    let redelivered = p.manual.then_some(redelivered);
    Ok(Report {
        frames: args.frames,
        published,
        payload_size: args.payload_size,
        per_worker: tally.per_worker,
        processed,
        results: tally.results,
        lost: published.saturating_sub(tally.distinct),
        duplicated: tally.duplicated,
        corrupt: tally.corrupt,
        malformed: tally.malformed,
        latencies: tally.latencies,
        elapsed,
        dropped,
        // The source stops at the deadline too: if it stopped short, the
        // run timed out even when `collect` saw every published frame first.
        timed_out: (timed_out || published < args.frames).then_some(args.timeout),
        redelivered,
        killed,
    })
}

/// A usage error if a frame would be over the backend's max payload.
fn check_frame_fits(args: &DemoArgs, source: &PubSub) -> Result<(), CliError> {
    let frame_len = Frame::wire_len(&args.sensor, args.payload_size);
    if let Some(max) = source.capabilities().max_payload {
        if frame_len > max {
            return Err(CliError::Usage(format!(
                "--payload-size {}: a frame of {frame_len} bytes is over the {} backend's max payload of {max} bytes",
                args.payload_size,
                source.backend_name()
            )));
        }
    }
    Ok(())
}

/// What runs where, before the summary.
fn print_banner(args: &DemoArgs, p: &Pipeline, route: &Route) {
    let rate = if args.rate > 0.0 {
        format!("{} frames/s", args.rate)
    } else {
        "full speed".to_string()
    };
    say!(
        "pubsub demo: {} backend, {} frames of {} B from sensor {:?} at {rate}",
        p.source.backend_name(),
        args.frames,
        args.payload_size,
        args.sensor
    );
    let n = p.workers.len();
    say!(
        "  {} -> group {:?} ({n} worker{}) -> {} -> sink",
        route.frames,
        route.group,
        if n == 1 { "" } else { "s" },
        route.results
    );
    if p.manual {
        let kill = args
            .kill_worker
            .map(|n| format!("; worker 1 is killed after {n} frames and started again"))
            .unwrap_or_default();
        say!("  workers ack each frame after publishing its result (manual ack){kill}");
    }
    say!();
}

/// How far the source is.
#[derive(Debug, Default)]
struct SourceProgress {
    published: AtomicU64,
    done: AtomicBool,
}

/// The source and the workers, running.
struct Tasks {
    source: JoinHandle<Result<u64, Error>>,
    workers: Vec<WorkerTask>,
    /// The killed worker, started again.
    restarted: Option<WorkerTask>,
    /// Frames the workers were given again (manual ack).
    redelivered: Arc<AtomicU64>,
    /// Raised when a task fails, so the sink stops waiting.
    failed: Arc<AtomicBool>,
    stop: watch::Sender<bool>,
    /// When the source started.
    started: Instant,
    progress: Arc<SourceProgress>,
}

/// A worker task and its count of frames processed.
struct WorkerTask {
    task: JoinHandle<Result<(), Error>>,
    processed: Arc<AtomicU64>,
    /// Worker 1 with `--kill-worker`: told when it holds the frame it dies with.
    dies: Option<(oneshot::Receiver<()>, PubSub)>,
}

impl Tasks {
    /// Start the workers, then the source.
    fn spawn(
        args: &DemoArgs,
        p: &Pipeline,
        route: &Route,
        deadline: Instant,
        index: &FrameIndex,
    ) -> Tasks {
        let failed = Arc::new(AtomicBool::new(false));
        let redelivered = Arc::new(AtomicU64::new(0));
        let (stop, stop_rx) = watch::channel(false);
        let workers = p
            .workers
            .iter()
            .zip(1u16..)
            .map(|(ps, n)| {
                let processed = Arc::new(AtomicU64::new(0));
                let (dies, die_after) = match args.kill_worker.filter(|_| n == 1) {
                    Some(after) => {
                        let (tx, rx) = oneshot::channel();
                        (Some((rx, ps.clone())), Some((after, tx)))
                    }
                    None => (None, None),
                };
                let w = Worker {
                    ps: ps.clone(),
                    n,
                    results_topic: route.results.clone(),
                    processed: processed.clone(),
                    redelivered: redelivered.clone(),
                    die_after,
                };
                WorkerTask {
                    task: tokio::spawn(flag_failure(failed.clone(), w.run(stop_rx.clone()))),
                    processed,
                    dies,
                }
            })
            .collect();
        let started = Instant::now();
        let progress = Arc::new(SourceProgress::default());
        let source = tokio::spawn(flag_failure(
            failed.clone(),
            source(
                p.source.clone(),
                index.clone(),
                route.frames.clone(),
                args.sensor.clone(),
                (args.frames, args.payload_size),
                (args.rate > 0.0).then_some(args.rate),
                deadline,
                progress.clone(),
            ),
        ));
        Tasks {
            source,
            workers,
            restarted: None,
            redelivered,
            failed,
            stop,
            started,
            progress,
        }
    }

    /// Wait for the source, then stop the workers and wait for them.
    /// Returns the frames processed, the worker killed with its count, and
    /// the frames given again.
    async fn finish(self) -> Result<(u64, Option<(u16, u64)>, u64), CliError> {
        join(self.source, "source").await?;
        let _ = self.stop.send(true);
        let mut processed = 0;
        let mut killed = None;
        for (w, n) in self.workers.into_iter().zip(1u16..) {
            let died = match w.dies {
                Some((mut rx, _)) => rx.try_recv().is_ok(),
                None => false,
            };
            if died {
                // Aborted when it died (again here, in case the sink was done first).
                w.task.abort();
                killed = Some((n, w.processed.load(Ordering::Acquire)));
            } else {
                join(w.task, &format!("worker {n}")).await?;
            }
            processed += w.processed.load(Ordering::Acquire);
        }
        if let Some(w) = self.restarted {
            join(w.task, "worker started again").await?;
            processed += w.processed.load(Ordering::Acquire);
        }
        Ok((processed, killed, self.redelivered.load(Ordering::Acquire)))
    }
}

/// The sink: collect until every frame is accounted for (it has a result,
/// or a receive buffer dropped it or its result, counted), a task failed,
/// or time is up. Kills the worker that is to die when it says so.
/// Returns whether time ran out.
async fn collect(
    p: &Pipeline,
    tally: &mut Tally,
    tasks: &mut Tasks,
    route: &Route,
    deadline: Instant,
) -> Result<bool, Error> {
    let mut dying: Vec<usize> = tasks
        .workers
        .iter()
        .enumerate()
        .filter(|(_, w)| w.dies.is_some())
        .map(|(i, _)| i)
        .collect();
    loop {
        if tasks.failed.load(Ordering::Acquire) {
            return Ok(false);
        }
        let published = tasks.progress.published.load(Ordering::Acquire);
        if tasks.progress.done.load(Ordering::Acquire) {
            let dropped: u64 = p.handles().map(|ps| ps.stats().dropped).sum();
            if tally.distinct + dropped >= published {
                return Ok(false);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(true);
        }
        dying.retain(|&i| !tasks.kill_if_due(i, p, route));
        if let Some(m) = p.sink.recv_timeout(left.min(POLL)).await? {
            tally.add(&m.payload);
        }
    }
}

impl Tasks {
    /// If worker `i` said it is to die now: abort its task (the frame it
    /// holds and those buffered are dropped unsettled) and close its
    /// connection, as a crash would, then start it again under the same
    /// identity, as a supervisor would (on MQTT the broker then sends it
    /// what it held, from its session; elsewhere another member takes
    /// those after `ack_wait`). Whether it was killed.
    fn kill_if_due(&mut self, i: usize, p: &Pipeline, route: &Route) -> bool {
        let w = &self.workers[i];
        let Some((rx, ps)) = &w.dies else {
            return true;
        };
        if rx.is_empty() {
            return false;
        }
        w.task.abort();
        let processed = Arc::new(AtomicU64::new(0));
        let again = restart_worker(
            ps.clone(),
            p.worker_configs[i].clone(),
            Worker {
                ps: ps.clone(),
                n: u16::try_from(i + 1).unwrap_or(u16::MAX),
                results_topic: route.results.clone(),
                processed: processed.clone(),
                redelivered: self.redelivered.clone(),
                die_after: None,
            },
            route.frames.clone(),
            self.stop.subscribe(),
        );
        self.restarted = Some(WorkerTask {
            task: tokio::spawn(flag_failure(self.failed.clone(), again)),
            processed,
            dies: None,
        });
        true
    }
}

/// Close the killed worker's connection, then run `worker` again on a new
/// connection with its config, subscribed to `frames`.
async fn restart_worker(
    killed: PubSub,
    config: Config,
    mut worker: Worker,
    frames: String,
    stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    let _ = killed.close().await;
    worker.ps = PubSub::connect(&config).await?;
    worker.ps.subscribe(frames.as_str()).await?;
    let ps = worker.ps.clone();
    let r = worker.run(stop).await;
    let _ = ps.close().await;
    r
}

/// Run `fut`; if it fails, raise `failed` so the sink stops waiting.
async fn flag_failure<T>(
    failed: Arc<AtomicBool>,
    fut: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let r = fut.await;
    if r.is_err() {
        failed.store(true, Ordering::Release);
    }
    r
}

/// Wait for a task (bounded), turning a panic or a hang into an error.
async fn join<T>(task: JoinHandle<Result<T, Error>>, what: &str) -> Result<T, CliError> {
    const JOIN_TIMEOUT: Duration = Duration::from_secs(15);
    match tokio::time::timeout(JOIN_TIMEOUT, task).await {
        Ok(Ok(r)) => r.map_err(CliError::from),
        Ok(Err(e)) => Err(CliError::Failed(format!("demo {what} stopped: {e}"))),
        Err(_) => Err(CliError::Failed(format!(
            "demo {what} did not stop within {}",
            fmt_duration(JOIN_TIMEOUT)
        ))),
    }
}

/// Which frame (0, 1, ...) each msight frame id is: the source notes each
/// frame before it publishes it, the sink looks results up.
type FrameIndex = Arc<Mutex<HashMap<i64, usize>>>;

/// Publish `frames` frames (msight `ImageData`) of `payload_size` bytes at
/// `rate`, then flush; `progress` counts them and says when it is done.
#[allow(clippy::too_many_arguments)]
async fn source(
    ps: PubSub,
    index: FrameIndex,
    topic: String,
    sensor: String,
    (frames, payload_size): (u64, usize),
    rate: Option<f64>,
    deadline: Instant,
    progress: Arc<SourceProgress>,
) -> Result<u64, Error> {
    let mut pacer = Pacer::new(rate);
    let mut published = 0;
    for id in 0..frames {
        pacer.wait().await;
        if Instant::now() >= deadline {
            break;
        }
        let frame = Frame::new(&sensor, synthetic_payload(id, payload_size));
        index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(frame.frame_id, id as usize);
        ps.publish(topic.as_str(), frame.encode()).await?;
        published += 1;
        progress.published.store(published, Ordering::Release);
    }
    ps.flush().await?;
    progress.done.store(true, Ordering::Release);
    Ok(published)
}

/// One worker of the group.
struct Worker {
    ps: PubSub,
    n: u16,
    results_topic: String,
    processed: Arc<AtomicU64>,
    /// Counts the frames given to a worker again.
    redelivered: Arc<AtomicU64>,
    /// Die holding the frame after this many, saying so on the sender.
    die_after: Option<(u64, oneshot::Sender<()>)>,
}

impl Worker {
    /// Take frames until told to stop; publish a result for each, then
    /// (manual ack) acknowledge the frame.
    async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<(), Error> {
        let mut processed = 0;
        loop {
            let msg = tokio::select! {
                biased;
                m = self.ps.recv() => m?,
                _ = stop.wait_for(|s| *s) => break,
            };
            if self
                .die_after
                .as_ref()
                .is_some_and(|(n, _)| processed >= *n)
            {
                // Holding this frame, unsettled: the sink aborts this task.
                if let Some((_, tx)) = self.die_after.take() {
                    let _ = tx.send(());
                }
                let _held = msg;
                let never: std::convert::Infallible = std::future::pending().await;
                match never {}
            }
            if msg.redelivered || msg.attempt > 1 {
                self.redelivered.fetch_add(1, Ordering::Relaxed);
            }
            let Some(frame) = Frame::decode(&msg.payload) else {
                tracing::warn!(worker = self.n, topic = %msg.topic, "not an msight ImageData; ignored");
                if msg.needs_settling() {
                    msg.term()?;
                }
                continue;
            };
            let result = FrameResult {
                frame_id: frame.frame_id,
                capture_us: frame.capture_us,
                worker: self.n,
                payload_len: u32::try_from(frame.payload.len()).unwrap_or(u32::MAX),
                checksum: checksum(&frame.payload),
            };
            self.ps
                .publish(self.results_topic.as_str(), result.encode())
                .await?;
            if msg.needs_settling() {
                msg.ack()?;
            }
            processed += 1;
            self.processed.store(processed, Ordering::Release);
        }
        self.ps.flush().await?;
        Ok(())
    }
}

/// The sink's bookkeeping.
struct Tally {
    index: FrameIndex,
    expected: Vec<u64>,
    payload_size: usize,
    seen: Vec<u32>,
    per_worker: Vec<u64>,
    distinct: u64,
    results: u64,
    duplicated: u64,
    corrupt: u64,
    malformed: u64,
    latencies: Latencies,
    last_at: Option<Instant>,
}

impl Tally {
    fn new(expected: Vec<u64>, payload_size: usize, workers: usize, index: FrameIndex) -> Tally {
        Tally {
            index,
            seen: vec![0; expected.len()],
            latencies: Latencies::with_capacity(expected.len()),
            expected,
            payload_size,
            per_worker: vec![0; workers],
            distinct: 0,
            results: 0,
            duplicated: 0,
            corrupt: 0,
            malformed: 0,
            last_at: None,
        }
    }

    fn add(&mut self, payload: &[u8]) {
        let now = now_us();
        self.results += 1;
        let Some(r) = FrameResult::decode(payload) else {
            self.malformed += 1;
            return;
        };
        let found = self
            .index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&r.frame_id)
            .copied();
        let Some(i) = found.filter(|i| *i < self.seen.len()) else {
            self.malformed += 1;
            return;
        };
        match usize::from(r.worker)
            .checked_sub(1)
            .and_then(|w| self.per_worker.get_mut(w))
        {
            Some(count) => *count += 1,
            None => self.malformed += 1,
        }
        self.seen[i] += 1;
        if self.seen[i] > 1 {
            self.duplicated += 1;
            return;
        }
        self.distinct += 1;
        self.last_at = Some(Instant::now());
        if r.checksum != self.expected[i] || r.payload_len as usize != self.payload_size {
            self.corrupt += 1;
        }
        self.latencies
            .record(Duration::from_micros(now.saturating_sub(r.capture_us)));
    }
}

impl Report {
    fn print(&mut self) {
        for (i, n) in self.per_worker.iter().enumerate() {
            let killed = match self.killed {
                Some((k, after)) if usize::from(k) == i + 1 => {
                    format!(" (killed after {after} frames, holding one, and started again)")
                }
                _ => String::new(),
            };
            say!("worker {:<3}   {n} frames{killed}", i + 1);
        }
        say!(
            "frames:      {} published, {} processed, {} results; lost {}, duplicated {}, corrupt {}",
            self.published,
            self.processed,
            self.results,
            self.lost,
            self.duplicated,
            self.corrupt + self.malformed
        );
        say!(
            "latency:     {} (capture to result at the sink)",
            self.latencies.summary()
        );
        let done = self.latencies.len() as f64;
        say!(
            "throughput:  {:.1} frames/s, {:.2} MiB/s ({} frames in {})",
            per_second(done, self.elapsed),
            mib_per_second(done * self.payload_size as f64, self.elapsed),
            self.latencies.len(),
            fmt_duration(self.elapsed)
        );
        say!("dropped:     {} by receive buffers", self.dropped);
        if let Some(r) = self.redelivered {
            say!(
                "redelivered: {r} frame{} (manual ack: at least once, duplicates allowed)",
                if r == 1 { "" } else { "s" }
            );
        }
        say!(
            "result:      {}",
            if self.problems().is_empty() {
                "OK".to_string()
            } else {
                format!("FAILED ({})", self.problems().join(", "))
            }
        );
    }

    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Some(t) = self.timed_out {
            p.push(format!("timed out after {}", fmt_duration(t)));
        }
        if self.published < self.frames {
            p.push(format!(
                "{} of {} frames published",
                self.published, self.frames
            ));
        }
        // Manual ack is at least once: a frame may come twice, never lost.
        let duplicated = if self.redelivered.is_some() {
            0
        } else {
            self.duplicated
        };
        for (n, what) in [
            (self.lost, "lost"),
            (duplicated, "duplicated"),
            (self.corrupt + self.malformed, "corrupt"),
        ] {
            if n > 0 {
                p.push(format!("{n} {what}"));
            }
        }
        p
    }

    fn verdict(&self) -> Result<(), CliError> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(CliError::Failed(format!("demo: {}", problems.join(", "))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frame `id` (0, 1, ...) has msight frame id `1000 + id` here.
    fn result(id: u64, worker: u16, payload_size: usize) -> Vec<u8> {
        FrameResult {
            frame_id: 1000 + id as i64,
            capture_us: now_us(),
            worker,
            payload_len: payload_size as u32,
            checksum: checksum(&synthetic_payload(id, payload_size)),
        }
        .encode()
        .to_vec()
    }

    #[test]
    fn tally_counts_duplicates_corruption_and_garbage() {
        let expected = (0..4)
            .map(|i| checksum(&synthetic_payload(i, 16)))
            .collect();
        let index = FrameIndex::default();
        index
            .lock()
            .unwrap()
            .extend((0..4).map(|i| (1000 + i as i64, i)));
        let mut t = Tally::new(expected, 16, 2, index);
        t.add(&result(0, 1, 16));
        t.add(&result(1, 2, 16));
        t.add(&result(1, 1, 16)); // duplicate
        let mut bad = FrameResult::decode(&result(2, 1, 16)).unwrap();
        bad.checksum ^= 1;
        t.add(&bad.encode());
        t.add(b"garbage");
        t.add(&result(99, 1, 16)); // a frame id the source never made
        t.add(&result(3, 7, 16)); // unknown worker, still a result for frame 3
        assert_eq!(t.distinct, 4);
        assert_eq!(t.duplicated, 1);
        assert_eq!(t.corrupt, 1);
        assert_eq!(t.malformed, 3);
        assert_eq!(t.per_worker, [3, 1]); // frame 99 counts for no worker
        assert_eq!(t.results, 7);
        assert_eq!(t.latencies.len(), 4);
    }

    #[test]
    fn verdict_fails_on_any_problem() {
        let mut r = Report {
            frames: 10,
            published: 10,
            payload_size: 1,
            per_worker: vec![10],
            processed: 10,
            results: 10,
            lost: 0,
            duplicated: 0,
            corrupt: 0,
            malformed: 0,
            latencies: Latencies::default(),
            elapsed: Duration::from_secs(1),
            dropped: 0,
            timed_out: None,
            redelivered: None,
            killed: None,
        };
        assert!(r.verdict().is_ok());
        r.lost = 2;
        let e = r.verdict().unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().contains("2 lost"), "{e}");
        r.lost = 0;
        r.duplicated = 1;
        assert!(r
            .verdict()
            .unwrap_err()
            .to_string()
            .contains("1 duplicated"));
        r.duplicated = 0;
        r.published = 9;
        assert!(r.verdict().unwrap_err().to_string().contains("9 of 10"));
    }
}
