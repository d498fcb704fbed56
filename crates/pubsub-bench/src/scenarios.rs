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
const LOOK: Duration = Duration::from_millis(20);
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
    fn new(t: &Target, scenario: &'static str, size: usize, variant: Variant) -> Sample {
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

    fn rate(mut self, count: u64, elapsed: Duration) -> Sample {
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

fn payload(size: usize) -> Bytes {
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
    let received = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let (received_n, last) = if v == Variant::Blocking {
        let mut subs = Vec::new();
        for _ in 0..subscribers {
            let ps = connect_blocking(t)?;
            ps.subscribe_in(topic.as_str(), group.as_deref())?;
            subs.push(ps);
        }
        let publ = connect_blocking(t)?;
        let t0 = Instant::now();
        let last = std::thread::scope(|scope| {
            let handles: Vec<_> = subs
                .iter()
                .map(|ps| {
                    let received = &received;
                    scope.spawn(move || {
                        let mut last: Option<Instant> = None;
                        let waiting_since = Instant::now();
                        while received.load(Ordering::Relaxed) < count && start.elapsed() < LIMIT {
                            match ps.recv_timeout(LOOK) {
                                Ok(Some(_)) => {
                                    received.fetch_add(1, Ordering::Relaxed);
                                    last = Some(Instant::now());
                                }
                                Ok(None) if last.unwrap_or(waiting_since).elapsed() < IDLE => {}
                                _ => break,
                            }
                        }
                        last
                    })
                })
                .collect();
            for _ in 0..count {
                if publ.publish(topic.as_str(), body.clone()).is_err() {
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
        (received.load(Ordering::Relaxed), last.map(|l| l - t0))
    } else {
        let mut tasks = Vec::new();
        for _ in 0..subscribers {
            let mut c = Conn::connect(t, v).await?;
            c.subscribe(&topic, group.as_deref()).await?;
            let received = received.clone();
            tasks.push(tokio::spawn(async move {
                let mut last: Option<Instant> = None;
                let waiting_since = Instant::now();
                while received.load(Ordering::Relaxed) < count && start.elapsed() < LIMIT {
                    match c.next(LOOK).await {
                        Some(_) => {
                            received.fetch_add(1, Ordering::Relaxed);
                            last = Some(Instant::now());
                        }
                        None if last.unwrap_or(waiting_since).elapsed() < IDLE => {}
                        None => break,
                    }
                }
                c.close().await;
                last
            }));
        }
        let publ = Conn::connect(t, v).await?;
        let t0 = Instant::now();
        for _ in 0..count {
            publ.publish(&topic, body.clone()).await?;
        }
        publ.flush().await?;
        let mut last = None;
        for task in tasks {
            if let Ok(Some(l)) = task.await {
                last = last.max(Some(l));
            }
        }
        publ.close().await;
        (received.load(Ordering::Relaxed), last.map(|l| l - t0))
    };
    s.received = received_n;
    t.cleanup(&topic).await;
    Ok(s.rate(received_n, last.unwrap_or(Duration::from_secs(1))))
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
    let ping = unique("ping");
    let pong = unique("pong");
    let body = payload(16);
    let mut s = Sample::new(t, "rtt", 16, v);
    s.sent = rounds;
    let mut rtts = Vec::with_capacity(rounds as usize);
    if v == Variant::Blocking {
        let ponger = connect_blocking(t)?;
        ponger.subscribe(ping.as_str())?;
        let pinger = connect_blocking(t)?;
        pinger.subscribe(pong.as_str())?;
        let start = Instant::now();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for _ in 0..rounds {
                    match ponger.recv_timeout(IDLE) {
                        Ok(Some(m)) => {
                            if ponger.publish(pong.as_str(), m.payload).is_err() {
                                break;
                            }
                        }
                        _ => break,
                    }
                }
            });
            for _ in 0..rounds {
                if start.elapsed() > LIMIT {
                    break;
                }
                let t0 = Instant::now();
                if pinger.publish(ping.as_str(), body.clone()).is_err() {
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
    } else {
        let mut ponger = Conn::connect(t, v).await?;
        ponger.subscribe(&ping, None).await?;
        let pong_topic = pong.clone();
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
        pinger.subscribe(&pong, None).await?;
        let start = Instant::now();
        for _ in 0..rounds {
            if start.elapsed() > LIMIT {
                break;
            }
            let t0 = Instant::now();
            pinger.publish_now(&ping, body.clone()).await?;
            match pinger.next(IDLE).await {
                Some(_) => rtts.push(t0.elapsed()),
                None => break,
            }
        }
        pinger.close().await;
        let _ = echo.await;
    }
    percentiles(&mut s, rtts);
    Ok(s)
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
