//! `cargo xtask bench`: each backend's raw client library, our async API and
//! our blocking API, measured side by side in one run on brokers this
//! program starts on loopback ports. Prints a table of ratios ours / raw and
//! writes every figure to a JSON file.

mod clients;
mod codec;
mod jetstream;
mod manual_ack;
mod raw;
mod scenarios;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pubsub_core::memory::MemoryBackend;
use pubsub_core::{BackendFactory, Config, MemoryConfig};
use pubsub_mqtt::{MqttBackend, MqttConfig};
use pubsub_nats::{NatsBackend, NatsConfig};
use pubsub_redis::{RedisBackend, RedisConfig, RedisMode};
use pubsub_testkit::brokers::{Mosquitto, NatsServer, RedisServer};

use clients::{BoxError, RawKind, Target, Variant};
use scenarios::Sample;

#[derive(Parser, Debug)]
#[command(
    about = "Side-by-side benchmark of raw clients and the pub/sub library's async and blocking APIs"
)]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Backends to measure (comma-separated): memory, nats (core NATS),
    /// jetstream (NATS with nats.mode = "jetstream": publish and e2e_ack
    /// only), redis (both modes), mqtt (QoS 0 and 1).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "memory,nats,jetstream,redis,mqtt"
    )]
    backends: Vec<String>,
    /// Payload sizes in bytes for publish and end-to-end throughput.
    #[arg(long, value_delimiter = ',', default_value = "128,16384,1048576")]
    sizes: Vec<usize>,
    /// Most messages per throughput run (small payloads); larger payloads
    /// send at most `--bytes` in total.
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// Byte budget per throughput run.
    #[arg(long, default_value_t = 128 << 20)]
    bytes: u64,
    /// Round trips for the latency test.
    #[arg(long, default_value_t = 5_000)]
    rtt: u64,
    /// Messages of 1 KiB published to a subscriber that does not read.
    #[arg(long, default_value_t = 200_000)]
    slow: u64,
    /// Where to write every figure.
    #[arg(long, default_value = "target/bench.json")]
    json: std::path::PathBuf,
    /// Measure only these scenarios (publish, e2e_1to1, e2e_group4, e2e_ack,
    /// e2e_ack_each, rtt, slow_rss).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Also write the table with a description of the machine, as Markdown.
    #[arg(long)]
    markdown: Option<std::path::PathBuf>,
    /// Rounds per figure: the variants take turns, round after round, and
    /// the table shows each one's median (the machine's noise hits all alike).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// JetStream: the raw publisher sends a `Nats-Msg-Id` header with every
    /// message, as ours does (which the stream deduplicates on); without
    /// it, none.
    #[arg(long)]
    jetstream_raw_msg_id: bool,
    /// Measure only these variants (raw, async, blocking): for profiling one
    /// of them alone.
    #[arg(long, value_delimiter = ',')]
    variants: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Encode and decode of msight messages (ImageData with a 16 KiB and a
    /// 1 MiB image, DetectionResultsData with 50 objects): Rust's
    /// msight-data beside Python's serialize() / Data.deserialize() of the
    /// same values, in the same run. Needs the Python venv of `cargo xtask
    /// install-brokers`.
    Codec {
        /// Rounds per figure; the table shows the median.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Where to write the figures.
        #[arg(long, default_value = "target/bench-codec.json")]
        json: std::path::PathBuf,
    },
    /// (internal) A subscriber that never reads; prints its peak RSS when told.
    #[command(hide = true)]
    SlowSubscriber {
        #[arg(long)]
        variant: String,
        #[arg(long)]
        topic: String,
        /// The target: backend and mode, config and raw client, as JSON.
        #[arg(long)]
        target: String,
    },
}

fn main() {
    let args = Args::parse();
    let result = match &args.cmd {
        Some(Cmd::SlowSubscriber {
            variant,
            topic,
            target,
        }) => slow_subscriber_child(variant, topic, target),
        Some(Cmd::Codec { rounds, json }) => codec::run(*rounds, json),
        None => run(&args),
    };
    if let Err(e) = result {
        eprintln!("bench: error: {e}");
        std::process::exit(1);
    }
}

/// Brokers kept alive for the whole run.
#[derive(Default)]
struct Brokers {
    _nats: Option<NatsServer>,
    _jetstream: Option<NatsServer>,
    _redis: Option<RedisServer>,
    _mqtt: Option<Mosquitto>,
}

/// The targets of `--backends`, each broker started once and kept alive.
fn targets(args: &Args) -> Result<(Vec<Target>, Brokers), BoxError> {
    let mut out = Vec::new();
    let mut brokers = Brokers::default();
    for b in &args.backends {
        match b.as_str() {
            "memory" => out.push(memory_target()?),
            "nats" => {
                let server = NatsServer::builder().max_payload(8 << 20).start();
                out.push(nats_target(&server)?);
                brokers._nats = Some(server);
            }
            "jetstream" => {
                let (server, target) = jetstream::start(args.jetstream_raw_msg_id)?;
                out.push(target);
                brokers._jetstream = Some(server);
            }
            "redis" => {
                let server = RedisServer::start();
                out.extend(redis_targets(&server)?);
                brokers._redis = Some(server);
            }
            "mqtt" => {
                // Like our client, the broker sends without Nagle's delay.
                let server = Mosquitto::builder().config("set_tcp_nodelay true").start();
                out.extend(mqtt_targets(&server)?);
                brokers._mqtt = Some(server);
            }
            other => {
                return Err(format!(
                    "unknown backend {other:?} (known: memory, nats, jetstream, redis, mqtt)"
                )
                .into())
            }
        }
    }
    for t in &mut out {
        bench_buffer(&mut t.config);
    }
    Ok((out, brokers))
}

fn memory_target() -> Result<Target, BoxError> {
    let mut config = Config::default();
    config.section_mut::<MemoryConfig>()?.namespace = format!("bench-{}", std::process::id());
    Ok(Target {
        groups: true,
        backend: "memory",
        mode: "in-process",
        factory: BackendFactory::of::<MemoryBackend>(),
        config,
        raw: None,
    })
}

fn nats_target(server: &NatsServer) -> Result<Target, BoxError> {
    let mut config = Config::default();
    config.section_mut::<NatsConfig>()?.servers = vec![server.url()];
    Ok(Target {
        groups: true,
        backend: "nats",
        mode: "core",
        factory: BackendFactory::of::<NatsBackend>(),
        config,
        raw: Some(RawKind::Nats {
            servers: vec![server.url()],
        }),
    })
}

/// Redis in both modes: `PUBLISH`, and streams (the one with groups).
fn redis_targets(server: &RedisServer) -> Result<Vec<Target>, BoxError> {
    let mut out = Vec::new();
    for (mode, streams) in [("pubsub", false), ("streams", true)] {
        let mut config = Config::default();
        let redis = config.section_mut::<RedisConfig>()?;
        redis.port = server.port();
        redis.host = "127.0.0.1".into();
        redis.mode = if streams {
            RedisMode::Streams
        } else {
            RedisMode::PubSub
        };
        let (maxlen, read_count) = (redis.stream_maxlen, redis.stream_read_count);
        out.push(Target {
            groups: streams,
            backend: "redis",
            mode,
            factory: BackendFactory::of::<RedisBackend>(),
            raw: Some(RawKind::Redis {
                url: server.url(),
                streams,
                maxlen,
                read_count,
            }),
            config,
        });
    }
    Ok(out)
}

/// MQTT at QoS 0 and 1.
fn mqtt_targets(server: &Mosquitto) -> Result<Vec<Target>, BoxError> {
    let mut out = Vec::new();
    for qos in [0u8, 1] {
        let mut config = Config::default();
        let mqtt = config.section_mut::<MqttConfig>()?;
        mqtt.host = "127.0.0.1".into();
        mqtt.port = server.port();
        mqtt.qos = qos;
        out.push(Target {
            groups: true,
            backend: "mqtt",
            mode: if qos == 0 { "qos0" } else { "qos1" },
            factory: BackendFactory::of::<MqttBackend>(),
            raw: Some(RawKind::Mqtt {
                host: "127.0.0.1".into(),
                port: server.port(),
                qos,
            }),
            config,
        });
    }
    Ok(out)
}

/// Receive like the raw client does: a deep buffer that applies back-pressure
/// instead of dropping, so throughput figures compare like with like.
fn bench_buffer(config: &mut Config) {
    config.buffer.capacity = 65_536;
    config.buffer.max_bytes = 1 << 30;
    config.buffer.overflow = pubsub_core::OverflowPolicy::Block;
}

fn count_for(args: &Args, size: usize) -> u64 {
    (args.bytes / size.max(1) as u64).clamp(50, args.messages)
}

fn wanted(args: &Args, scenario: &str) -> bool {
    args.only.is_empty() || args.only.iter().any(|o| o == scenario)
}

/// The runtime of the async measurements (and of the child process).
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// Plan every measurement, take them in turn, then print the table and
/// write the figures.
fn run(args: &Args) -> Result<(), BoxError> {
    let (targets, _brokers) = targets(args)?;
    let rt = runtime()?;
    let plan = plan(args, &targets);
    let bar = progress_bar(plan.len());
    let started = Instant::now();
    let samples: Vec<Sample> = plan
        .iter()
        .filter_map(|step| measure_step(args, &rt, step, &bar))
        .collect();
    bar.finish_and_clear();
    let table = table(&medians(&samples));
    let took = started.elapsed().as_secs_f64();
    println!("{table}\n(run took {took:.0} s)");
    if let Some(path) = &args.markdown {
        write_markdown(args, path, &table, took)?;
    }
    write_json(args, &samples)?;
    Ok(())
}

/// One measurement: a scenario on a target, at a size, through one API.
struct Step<'a> {
    target: &'a Target,
    scenario: &'static str,
    size: usize,
    variant: Variant,
}

/// Every measurement of the run, in order: per target, each wanted
/// scenario and size, round after round, the variants taking turns.
fn plan<'a>(args: &Args, targets: &'a [Target]) -> Vec<Step<'a>> {
    let rounds = args.rounds.max(1);
    let mut plan = Vec::new();
    for target in targets {
        let variants = variants(args, target);
        let mut add = |scenario: &'static str, size: usize, times: usize| {
            for _ in 0..times {
                plan.extend(variants.iter().map(|&variant| Step {
                    target,
                    scenario,
                    size,
                    variant,
                }));
            }
        };
        // JetStream: publish (PubAcks awaited) and manual ack only.
        let js = jetstream::is_target(target);
        for &size in &args.sizes {
            for scenario in ["publish", "e2e_1to1", "e2e_group4"] {
                if wanted(args, scenario)
                    && (target.groups || scenario != "e2e_group4")
                    && (!js || scenario == "publish")
                {
                    add(scenario, size, rounds);
                }
            }
            for scenario in manual_ack::scenarios(target) {
                if wanted(args, scenario) {
                    add(scenario, size, rounds);
                }
            }
        }
        if wanted(args, "rtt") && !js {
            add("rtt", 16, rounds);
        }
        // The slow subscriber is a child process: measured against raw clients.
        if target.raw.is_some() && !js && wanted(args, "slow_rss") && args.slow > 0 {
            add("slow_rss", 1024, 1);
        }
    }
    plan
}

/// The variants measured on `t`: raw when it has a raw client, and those
/// `--variants` names.
fn variants(args: &Args, t: &Target) -> Vec<Variant> {
    let variants: Vec<Variant> = if t.raw.is_some() {
        vec![Variant::Raw, Variant::Async, Variant::Blocking]
    } else {
        vec![Variant::Async, Variant::Blocking]
    };
    variants
        .into_iter()
        .filter(|v| args.variants.is_empty() || args.variants.iter().any(|w| w == v.label()))
        .collect()
}

fn progress_bar(len: usize) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Take one measurement under the progress bar; a failure is reported
/// there and gives no sample.
fn measure_step(
    args: &Args,
    rt: &tokio::runtime::Runtime,
    step: &Step,
    bar: &ProgressBar,
) -> Option<Sample> {
    let what = format!(
        "{} {} {} B {}",
        step.target.name(),
        step.scenario,
        step.size,
        step.variant.label()
    );
    bar.set_message(what.clone());
    let sample = match measure(args, rt, step) {
        Ok(s) => Some(s),
        Err(e) => {
            bar.suspend(|| eprintln!("{what}: {e}"));
            None
        }
    };
    bar.inc(1);
    sample
}

/// A scenario's future.
type Measurement<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Sample, BoxError>> + 'a>>;

/// Run one step's scenario.
fn measure(args: &Args, rt: &tokio::runtime::Runtime, step: &Step) -> Result<Sample, BoxError> {
    let &Step {
        target: t,
        scenario,
        size,
        variant: v,
    } = step;
    // The blocking API is measured as users call it: from a plain
    // thread, not from inside a runtime.
    let block_on = |f: Measurement<'_>| {
        if v == Variant::Blocking {
            // Only the scenario's own set-up and clean-up (Redis
            // commands) use this runtime; the blocking calls run on
            // this plain thread.
            let _context = rt.enter();
            futures::executor::block_on(f)
        } else {
            rt.block_on(f)
        }
    };
    match scenario {
        "publish" => block_on(Box::pin(scenarios::publish(
            t,
            v,
            size,
            count_for(args, size),
        ))),
        "e2e_1to1" | "e2e_group4" => {
            let subscribers = if scenario == "e2e_1to1" { 1 } else { 4 };
            let count = count_for(args, size) / 2;
            block_on(Box::pin(scenarios::end_to_end(
                t,
                v,
                size,
                count,
                subscribers,
            )))
        }
        manual_ack::ACK | manual_ack::ACK_EACH => block_on(Box::pin(manual_ack::end_to_end(
            t,
            v,
            scenario,
            size,
            count_for(args, size) / 2,
        ))),
        "rtt" => block_on(Box::pin(scenarios::round_trip(t, v, args.rtt))),
        _ => rt.block_on(scenarios::slow_subscriber(t, v, size, args.slow)),
    }
}

/// The table with the date, the command and the machine, as Markdown.
fn write_markdown(
    args: &Args,
    path: &std::path::Path,
    table: &str,
    took: f64,
) -> Result<(), BoxError> {
    let command: Vec<String> = std::env::args().skip(1).collect();
    let text = format!(
        "## Run of {}\n\nCommand: `cargo xtask bench {}` ({} rounds per figure, medians shown; {took:.0} s)\n\n{}\n\n{table}",
        first_line_of("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        command.join(" "),
        args.rounds,
        machine(),
    );
    std::fs::write(path, text)?;
    println!("table and machine description: {}", path.display());
    Ok(())
}

/// Every sample, every round, as JSON.
fn write_json(args: &Args, samples: &[Sample]) -> Result<(), BoxError> {
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(samples)?)?;
    println!("every figure: {}", args.json.display());
    Ok(())
}

/// The headline figure of a sample: throughput, p50 latency or peak memory.
fn metric(s: &Sample) -> f64 {
    match s.scenario {
        "rtt" => s.p50_us.unwrap_or(f64::MAX),
        "slow_rss" => s.peak_rss_kib.unwrap_or(0) as f64,
        _ => s.msgs_per_s,
    }
}

/// One sample per (target, scenario, size, variant): the round with the median figure.
fn medians(samples: &[Sample]) -> Vec<Sample> {
    let mut groups: BTreeMap<(String, &'static str, usize, &'static str), Vec<&Sample>> =
        BTreeMap::new();
    for s in samples {
        groups
            .entry((s.target.clone(), s.scenario, s.size, s.variant.label()))
            .or_default()
            .push(s);
    }
    groups
        .into_values()
        .map(|mut g| {
            g.sort_by(|a, b| metric(a).total_cmp(&metric(b)));
            g[g.len() / 2].clone()
        })
        .collect()
}

fn fmt_rate(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M/s", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} k/s", x / 1e3)
    } else {
        format!("{x:.0} /s")
    }
}

fn table(samples: &[Sample]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut rows: BTreeMap<(String, &'static str, usize), BTreeMap<&'static str, &Sample>> =
        BTreeMap::new();
    for s in samples {
        rows.entry((s.target.clone(), s.scenario, s.size))
            .or_default()
            .insert(s.variant.label(), s);
    }
    out.push_str(
        "| target | scenario | size | raw | async | blocking | async/raw | blocking/raw |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|\n");
    for ((target, scenario, size), by) in &rows {
        let value = |v: &str| -> Option<f64> {
            by.get(v).and_then(|s| match *scenario {
                "rtt" => s.p50_us,
                "slow_rss" => s.peak_rss_kib.map(|k| k as f64),
                _ => Some(s.msgs_per_s),
            })
        };
        let show = |v: &str| -> String {
            let Some(s) = by.get(v) else {
                return "-".into();
            };
            match *scenario {
                "rtt" => format!(
                    "p50 {:.0} / p99 {:.0} / p99.9 {:.0} µs",
                    s.p50_us.unwrap_or(f64::NAN),
                    s.p99_us.unwrap_or(f64::NAN),
                    s.p999_us.unwrap_or(f64::NAN)
                ),
                "slow_rss" => format!(
                    "{:.1} MiB peak, {} kept",
                    s.peak_rss_kib.unwrap_or(0) as f64 / 1024.0,
                    s.received
                ),
                _ => {
                    let lost = if s.received > 0 && s.received < s.sent {
                        format!(" ({} of {} arrived)", s.received, s.sent)
                    } else {
                        String::new()
                    };
                    format!("{} {:.0} MB/s{lost}", fmt_rate(s.msgs_per_s), s.mb_per_s)
                }
            }
        };
        let ratio = |v: &str| -> String {
            match (value(v), value("raw")) {
                (Some(o), Some(r)) if r > 0.0 => match *scenario {
                    "rtt" => format!("{:+.1} µs", o - r),
                    _ => format!("{:.2}", o / r),
                },
                _ => "-".into(),
            }
        };
        let _ = writeln!(
            out,
            "| {target} | {scenario} | {} | {} | {} | {} | {} | {} |",
            human_size(*size),
            show("raw"),
            show("async"),
            show("blocking"),
            ratio("async"),
            ratio("blocking")
        );
    }
    out
}

/// The first line a command prints, or `"unknown"`.
fn first_line_of(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// What the figures were measured on.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown")
        .trim()
        .to_string();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .map_or(0.0, |k| k / 1024.0 / 1024.0);
    let nats = pubsub_testkit::brokers::try_find_binary("nats-server")
        .map(|p| first_line_of(&p.to_string_lossy(), &["--version"]))
        .unwrap_or_else(|| "not installed".into());
    format!(
        "- CPU: {model}, {cores} cores available\n- memory: {mem_gib:.0} GiB\n- kernel: {}\n- compiler: {}\n- brokers: {nats}\n- load average at the end of the run: {}",
        first_line_of("uname", &["-sr"]),
        first_line_of("rustc", &["--version"]),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

fn human_size(n: usize) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1024 && n.is_multiple_of(1024) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

/// The child process of the slow-subscriber measurement: subscribe, never
/// read, report peak RSS when the parent writes a line. Ours uses the
/// documented default buffer (10,000 messages, `drop_oldest`).
fn slow_subscriber_child(variant: &str, topic: &str, target: &str) -> Result<(), BoxError> {
    let spec: clients::TargetSpec = serde_json::from_str(target)?;
    let mut t = spec.into_target()?;
    t.config.buffer = pubsub_core::BufferConfig::default();
    let rt = runtime()?;
    let wait_parent = || {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
    };
    let report = |received: u64| {
        println!(
            "rss_kib {} received {received}",
            scenarios::peak_rss_kib().unwrap_or(0)
        );
    };
    let kept = |s: pubsub_core::Stats| s.received - s.dropped;
    match variant {
        "raw" | "async" => {
            let v = if variant == "raw" {
                Variant::Raw
            } else {
                Variant::Async
            };
            let mut conn = rt.block_on(clients::Conn::connect(&t, v))?;
            rt.block_on(conn.subscribe(topic, None))?;
            println!("ready");
            wait_parent();
            match &conn {
                clients::Conn::Ours(ps) => report(kept(ps.stats())),
                _ => report(0),
            }
            let _context = rt.enter();
            drop(conn);
        }
        _ => {
            let ps = clients::connect_blocking(&t)?;
            ps.subscribe(topic)?;
            println!("ready");
            wait_parent();
            report(kept(ps.stats()));
        }
    }
    std::thread::sleep(Duration::from_millis(10));
    Ok(())
}
