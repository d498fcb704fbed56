//! Percentiles, human-readable numbers, and pacing at a fixed rate.

use std::time::{Duration, Instant};

/// Latency samples in nanoseconds, summarised by nearest-rank percentiles.
#[derive(Debug, Default, Clone)]
pub struct Latencies {
    nanos: Vec<u64>,
    sorted: bool,
}

impl Latencies {
    /// Room for `n` samples.
    pub fn with_capacity(n: usize) -> Self {
        Latencies {
            nanos: Vec::with_capacity(n),
            sorted: true,
        }
    }

    /// Add one sample.
    pub fn record(&mut self, d: Duration) {
        self.nanos
            .push(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        self.sorted = false;
    }

    /// Add every sample of `other`.
    pub fn merge(&mut self, other: &Latencies) {
        self.nanos.extend_from_slice(&other.nanos);
        self.sorted = false;
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.nanos.len()
    }

    /// The `p`-th percentile (0 < p <= 100), nearest rank; `None` without samples.
    pub fn percentile(&mut self, p: f64) -> Option<Duration> {
        if self.nanos.is_empty() {
            return None;
        }
        if !self.sorted {
            self.nanos.sort_unstable();
            self.sorted = true;
        }
        let n = self.nanos.len();
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        let i = rank.clamp(1, n) - 1;
        Some(Duration::from_nanos(self.nanos[i]))
    }

    /// `p50 …, p99 …, max …`, or `no samples`.
    pub fn summary(&mut self) -> String {
        match (
            self.percentile(50.0),
            self.percentile(99.0),
            self.percentile(100.0),
        ) {
            (Some(p50), Some(p99), Some(max)) => format!(
                "p50 {}, p99 {}, max {}",
                fmt_duration(p50),
                fmt_duration(p99),
                fmt_duration(max)
            ),
            _ => "no samples".to_string(),
        }
    }
}

/// `850 µs`, `1.23 ms`, `2.500 s`.
pub fn fmt_duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 10.0 {
        format!("{us:.1} µs")
    } else if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.3} s", us / 1e6)
    }
}

/// `count` per second over `elapsed` (0 when nothing elapsed).
pub fn per_second(count: f64, elapsed: Duration) -> f64 {
    let s = elapsed.as_secs_f64();
    if s > 0.0 {
        count / s
    } else {
        0.0
    }
}

/// Mebibytes per second.
pub fn mib_per_second(bytes: f64, elapsed: Duration) -> f64 {
    per_second(bytes, elapsed) / (1024.0 * 1024.0)
}

/// Spaces out events at `rate` per second on an absolute schedule (no drift).
#[derive(Debug)]
pub struct Pacer {
    start: Instant,
    interval: Option<Duration>,
    n: u32,
}

impl Pacer {
    /// `None`: no limit.
    pub fn new(rate: Option<f64>) -> Self {
        Pacer {
            start: Instant::now(),
            interval: rate
                .filter(|r| r.is_finite() && *r > 0.0)
                .and_then(|r| Duration::try_from_secs_f64(1.0 / r).ok()),
            n: 0,
        }
    }

    /// How long to wait before the next event (zero when it is due).
    pub fn next_delay(&mut self) -> Duration {
        let Some(interval) = self.interval else {
            return Duration::ZERO;
        };
        let due = self.start + interval.saturating_mul(self.n);
        self.n = self.n.saturating_add(1);
        due.saturating_duration_since(Instant::now())
    }

    /// Sleep (async) until the next event is due.
    pub async fn wait(&mut self) {
        let d = self.next_delay();
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut l = Latencies::default();
        assert_eq!(l.percentile(50.0), None);
        assert_eq!(l.summary(), "no samples");
        for ms in (1..=100).rev() {
            l.record(Duration::from_millis(ms));
        }
        assert_eq!(l.percentile(50.0), Some(Duration::from_millis(50)));
        assert_eq!(l.percentile(99.0), Some(Duration::from_millis(99)));
        assert_eq!(l.percentile(100.0), Some(Duration::from_millis(100)));
        assert_eq!(l.percentile(0.1), Some(Duration::from_millis(1)));
        let mut one = Latencies::default();
        one.record(Duration::from_micros(7));
        assert_eq!(one.percentile(99.0), Some(Duration::from_micros(7)));
        l.merge(&one);
        assert_eq!(l.len(), 101);
        assert_eq!(l.percentile(0.1), Some(Duration::from_micros(7)));
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(fmt_duration(Duration::from_micros(850)), "850 µs");
        assert_eq!(fmt_duration(Duration::from_nanos(420)), "0.4 µs");
        assert_eq!(fmt_duration(Duration::from_micros(1234)), "1.23 ms");
        assert_eq!(fmt_duration(Duration::from_millis(2500)), "2.500 s");
    }

    #[test]
    fn pacer_keeps_the_rate() {
        let mut unlimited = Pacer::new(None);
        assert!(unlimited.next_delay().is_zero());
        let mut p = Pacer::new(Some(100.0));
        let t0 = Instant::now();
        for _ in 0..6 {
            std::thread::sleep(p.next_delay());
        }
        let e = t0.elapsed();
        // Events 0..=5 at 10 ms spacing: the sixth is due at 50 ms.
        assert!(e >= Duration::from_millis(45), "{e:?}");
        assert!(e < Duration::from_secs(2), "{e:?}");
    }
}
