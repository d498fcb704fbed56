//! The measurements. Every loop is bounded in count and in time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;

use crate::clients::{connect_blocking, BoxError, Conn, Target, Variant};

/// A receiver that sees nothing for this long gives up.
const IDLE: Duration = Duration::from_secs(3);
/// How often a group member that waits looks whether the group is done: a
/// member that gets no more messages stops this soon after the last one
/// arrived elsewhere, not `IDLE` later.
pub const LOOK: Duration = Duration::from_millis(20);
/// No scenario runs longer than this.
const LIMIT: Duration = Duration::from_secs(60);

/// One figure.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub target: String,
    pub scenario: &'static str,
    pub size: usize,
    pub variant: Variant,
    pub sent: u64,
    pub received: u64,
    pub secs: f64,
    pub msgs_per_s: f64,
    pub mb_per_s: f64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub p999_us: Option<f64>,
    pub peak_rss_kib: Option<u64>,
}

impl Sample {
    pub fn new(t: &Target, scenario: &'static str, size: usize, variant: Variant) -> Sample {
        Sample {
            target: t.name(),
            scenario,
            size,
            variant,
            sent: 0,
            received: 0,
            secs: 0.0,
            msgs_per_s: 0.0,
            mb_per_s: 0.0,
            p50_us: None,
            p99_us: None,
            p999_us: None,
            peak_rss_kib: None,
        }
    }

    pub fn rate(mut self, count: u64, elapsed: Duration) -> Sample {
        self.secs = elapsed.as_secs_f64();
        let secs = self.secs.max(1e-9);
        self.msgs_per_s = count as f64 / secs;
        self.mb_per_s = count as f64 * self.size as f64 / secs / 1e6;
        self
    }
}

pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "bench.{prefix}.{}.{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn payload(size: usize) -> Bytes {
    Bytes::from((0..size).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
}

/// Publish `count` messages of `size` bytes, then flush: msgs/s and MB/s.
pub async fn publish(t: &Target, v: Variant, size: usize, count: u64) -> Result<Sample, BoxError> {
    let topic = unique("pub");
    let body = payload(size);
    let mut s = Sample::new(t, "publish", size, v);
    s.sent = count;
    if v == Variant::Blocking {
        let ps = connect_blocking(t)?;
        let t0 = Instant::now();
        for _ in 0..count {
            ps.publish(topic.as_str(), body.clone())?;
        }
        ps.flush()?;
        let el = t0.elapsed();
        ps.close()?;
        t.cleanup(&topic).await;
        return Ok(s.rate(count, el));
    }
    let c = Conn::connect(t, v).await?;
    let t0 = Instant::now();
    for _ in 0..count {
        c.publish(&topic, body.clone()).await?;
    }
    c.flush().await?;
    let el = t0.elapsed();
    c.close().await;
    t.cleanup(&topic).await;
    Ok(s.rate(count, el))
}

/// One publisher to `subscribers` receivers (a group when more than one),
/// every message counted on arrival: received msgs/s from the first publish
/// to the last arrival.
pub async fn end_to_end(
    t: &Target,
    v: Variant,
    size: usize,
    count: u64,
    subscribers: usize,
) -> Result<Sample, BoxError> {
    let scenario = if subscribers == 1 {
        "e2e_1to1"
    } else {
        "e2e_group4"
    };
    let topic = unique("e2e");
    let group = (subscribers > 1).then(|| unique("grp").replace('.', "-"));
    let body = payload(size);
    let mut s = Sample::new(t, scenario, size, v);
    s.sent = count;
    let run = EndToEnd {
        t,
        topic: &topic,
        group: group.as_deref(),
        body,
        count,
        subscribers,
        received: Arc::new(AtomicU64::new(0)),
        start: Instant::now(),
    };
    let last = if v == Variant::Blocking {
        run.blocking()?
    } else {
        run.nonblocking(v).await?
    };
    let received = run.received.load(Ordering::Relaxed);
    s.received = received;
    t.cleanup(&topic).await;
    Ok(s.rate(received, last.unwrap_or(Duration::from_secs(1))))
}

/// What the publisher and the receivers of one end-to-end run share.
struct EndToEnd<'a> {
    t: &'a Target,
    topic: &'a str,
    group: Option<&'a str>,
    body: Bytes,
    count: u64,
    subscribers: usize,
    /// Arrivals at all receivers together.
    received: Arc<AtomicU64>,
    start: Instant,
}

impl EndToEnd<'_> {
    /// Through our blocking API, a thread per receiver. Returns the time
    /// from the first publish to the last arrival.
    fn blocking(&self) -> Result<Option<Duration>, BoxError> {
        let mut subs = Vec::new();
        for _ in 0..self.subscribers {
            let ps = connect_blocking(self.t)?;
            ps.subscribe_in(self.topic, self.group)?;
            subs.push(ps);
        }
        let publ = connect_blocking(self.t)?;
        let t0 = Instant::now();
        let (received, count, start) = (&self.received, self.count, self.start);
        let last = std::thread::scope(|scope| {
            let handles: Vec<_> = subs
                .iter()
                .map(|ps| {
                    scope.spawn(move || {
                        let mut arrivals = Arrivals::new(received.clone(), count, start);
                        while arrivals.want_more() {
                            let Ok(m) = ps.recv_timeout(LOOK) else { break };
                            if !arrivals.note(m.is_some()) {
                                break;
                            }
                        }
                        arrivals.last
                    })
                })
                .collect();
            for _ in 0..self.count {
                if publ.publish(self.topic, self.body.clone()).is_err() {
                    break;
                }
            }
            let _ = publ.flush();
            handles
                .into_iter()
                .filter_map(|h| h.join().ok().flatten())
                .max()
        });
        let _ = publ.close();
        for ps in subs {
            let _ = ps.close();
        }
        Ok(last.map(|l| l - t0))
    }

    /// Through the raw client or our async API, a task per receiver.
    /// Returns the time from the first publish to the last arrival.
    async fn nonblocking(&self, v: Variant) -> Result<Option<Duration>, BoxError> {
        let mut tasks = Vec::new();
        for _ in 0..self.subscribers {
            let mut c = Conn::connect(self.t, v).await?;
            c.subscribe(self.topic, self.group).await?;
            let (received, count, start) = (self.received.clone(), self.count, self.start);
            tasks.push(tokio::spawn(async move {
                let mut arrivals = Arrivals::new(received, count, start);
                while arrivals.want_more() {
                    let arrived = c.next(LOOK).await.is_some();
                    if !arrivals.note(arrived) {
                        break;
                    }
                }
                c.close().await;
                arrivals.last
            }));
        }
        let publ = Conn::connect(self.t, v).await?;
        let t0 = Instant::now();
        for _ in 0..self.count {
            publ.publish(self.topic, self.body.clone()).await?;
        }
        publ.flush().await?;
        let mut last = None;
        for task in tasks {
            if let Ok(Some(l)) = task.await {
                last = last.max(Some(l));
            }
        }
        publ.close().await;
        Ok(last.map(|l| l - t0))
    }
}

/// One receiver of an end-to-end run: it adds each arrival to the shared
/// count and waits on until all arrived, the run's time limit, or `IDLE`
/// without a message.
pub struct Arrivals {
    received: Arc<AtomicU64>,
    count: u64,
    start: Instant,
    waiting_since: Instant,
    /// When this receiver's last message arrived.
    pub last: Option<Instant>,
}

impl Arrivals {
    /// A receiver that starts waiting now.
    pub fn new(received: Arc<AtomicU64>, count: u64, start: Instant) -> Arrivals {
        Arrivals {
            received,
            count,
            start,
            waiting_since: Instant::now(),
            last: None,
        }
    }

    /// Whether to wait for another message.
    pub fn want_more(&self) -> bool {
        self.received.load(Ordering::Relaxed) < self.count && self.start.elapsed() < LIMIT
    }

    /// Count a wait of `LOOK` that brought a message or not; false when
    /// the receiver should give up.
    pub fn note(&mut self, arrived: bool) -> bool {
        if arrived {
            self.received.fetch_add(1, Ordering::Relaxed);
            self.last = Some(Instant::now());
            true
        } else {
            self.last.unwrap_or(self.waiting_since).elapsed() < IDLE
        }
    }
}

fn percentiles(s: &mut Sample, mut rtts: Vec<Duration>) {
    rtts.sort_unstable();
    let at = |q: f64| {
        let i = ((rtts.len() as f64 * q).ceil() as usize).clamp(1, rtts.len()) - 1;
        rtts[i].as_secs_f64() * 1e6
    };
    if !rtts.is_empty() {
        s.p50_us = Some(at(0.50));
        s.p99_us = Some(at(0.99));
        s.p999_us = Some(at(0.999));
    }
    s.received = rtts.len() as u64;
}

/// Ping-pong over two topics, `rounds` round trips, one at a time.
pub async fn round_trip(t: &Target, v: Variant, rounds: u64) -> Result<Sample, BoxError> {
    let run = PingPong {
        ping: unique("ping"),
        pong: unique("pong"),
        body: payload(16),
        rounds,
    };
    let mut s = Sample::new(t, "rtt", 16, v);
    s.sent = rounds;
    let rtts = if v == Variant::Blocking {
        run.blocking(t)?
    } else {
        run.nonblocking(t, v).await?
    };
    percentiles(&mut s, rtts);
    Ok(s)
}

/// A ping-pong run: a pinger sends `body` on `ping` and waits for it on
/// `pong`, where a ponger echoes it.
struct PingPong {
    ping: String,
    pong: String,
    body: Bytes,
    rounds: u64,
}

impl PingPong {
    /// Through our blocking API, the ponger on a thread of its own.
    /// Returns the round-trip times.
    fn blocking(&self, t: &Target) -> Result<Vec<Duration>, BoxError> {
        let mut rtts = Vec::with_capacity(self.rounds as usize);
        let ponger = connect_blocking(t)?;
        ponger.subscribe(self.ping.as_str())?;
        let pinger = connect_blocking(t)?;
        pinger.subscribe(self.pong.as_str())?;
        let start = Instant::now();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for _ in 0..self.rounds {
                    match ponger.recv_timeout(IDLE) {
                        Ok(Some(m)) => {
                            if ponger.publish(self.pong.as_str(), m.payload).is_err() {
                                break;
                            }
                        }
                        _ => break,
                    }
                }
            });
            for _ in 0..self.rounds {
                if start.elapsed() > LIMIT {
                    break;
                }
                let t0 = Instant::now();
                if pinger
                    .publish(self.ping.as_str(), self.body.clone())
                    .is_err()
                {
                    break;
                }
                match pinger.recv_timeout(IDLE) {
                    Ok(Some(_)) => rtts.push(t0.elapsed()),
                    _ => break,
                }
            }
        });
        let _ = pinger.close();
        let _ = ponger.close();
        Ok(rtts)
    }

    /// Through the raw client or our async API, the ponger a task of its
    /// own. Returns the round-trip times.
    async fn nonblocking(&self, t: &Target, v: Variant) -> Result<Vec<Duration>, BoxError> {
        let mut rtts = Vec::with_capacity(self.rounds as usize);
        let mut ponger = Conn::connect(t, v).await?;
        ponger.subscribe(&self.ping, None).await?;
        let (pong_topic, rounds) = (self.pong.clone(), self.rounds);
        let echo = tokio::spawn(async move {
            for _ in 0..rounds {
                match ponger.next(IDLE).await {
                    Some(p) => {
                        if ponger.publish_now(&pong_topic, p).await.is_err() {
                            break;
                        }
                    }
                    None => break,
                }
            }
            ponger.close().await;
        });
        let mut pinger = Conn::connect(t, v).await?;
        pinger.subscribe(&self.pong, None).await?;
        let start = Instant::now();
        for _ in 0..self.rounds {
            if start.elapsed() > LIMIT {
                break;
            }
            let t0 = Instant::now();
            pinger.publish_now(&self.ping, self.body.clone()).await?;
            match pinger.next(IDLE).await {
                Some(_) => rtts.push(t0.elapsed()),
                None => break,
            }
        }
        pinger.close().await;
        let _ = echo.await;
        Ok(rtts)
    }
}

/// Peak resident memory of a subscriber process that does not read while
/// `count` messages of `size` bytes are published to it.
pub async fn slow_subscriber(
    t: &Target,
    v: Variant,
    size: usize,
    count: u64,
) -> Result<Sample, BoxError> {
    use std::io::{BufRead, BufReader, Write};
    let topic = unique("slow");
    let exe = std::env::current_exe()?;
    let spec = serde_json::to_string(&t.spec())?;
    let mut child = std::process::Command::new(exe)
        .args(["slow-subscriber", "--variant", v.label(), "--topic", &topic])
        .args(["--target", &spec])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut out = BufReader::new(child.stdout.take().ok_or("child stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    if line.trim() != "ready" {
        let _ = child.kill();
        return Err(format!("slow subscriber said {line:?}").into());
    }
    let publ = Conn::connect(t, Variant::Raw).await?;
    let body = payload(size);
    for _ in 0..count {
        publ.publish(&topic, body.clone()).await?;
    }
    publ.flush().await?;
    publ.close().await;
    // Let the broker finish delivering before asking for the figure.
    tokio::time::sleep(Duration::from_secs(2)).await;
    child
        .stdin
        .take()
        .ok_or("child stdin")?
        .write_all(b"done\n")?;
    line.clear();
    out.read_line(&mut line)?;
    let _ = child.wait();
    t.cleanup(&topic).await;
    let mut s = Sample::new(t, "slow_rss", size, v);
    s.sent = count;
    for pair in line.split_whitespace().collect::<Vec<_>>().chunks(2) {
        if let [k, val] = pair {
            match *k {
                "rss_kib" => s.peak_rss_kib = val.parse().ok(),
                "received" => s.received = val.parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    Ok(s)
}

/// Peak resident set size of this process (VmHWM), in KiB.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
