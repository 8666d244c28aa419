//! `nsq-bench`: an end-to-end benchmark of an nsqd over protocol V2, with the knobs and output
//! lines of NSQ's `bench/bench_writer` and `bench/bench_reader` (so results compare line for
//! line), plus both sides at once, several topics and channels, a fixed message count, a paced
//! publish rate and publish-to-delivery latency.
//!
//! Latency: every body of at least 8 bytes starts with the publisher's wall-clock time in
//! nanoseconds (little-endian), written just before the batch is sent; a reader subtracts it from
//! its own clock when the read that brought the message returns. Both ends use the system's
//! realtime clock, so a writer and a reader in different processes on one machine compare
//! (across machines, only as well as their clocks agree). Bodies whose stamp is zero (NSQ's own
//! bench_writer sends zeroed bodies) count for throughput and not for latency. Paced runs stamp
//! at the moment of sending, so a publisher that falls behind its schedule does not show the
//! wait in the figures (no coordinated-omission correction).

pub mod conn;
pub mod reader;
pub mod writer;

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime};

use anyhow::anyhow;
use hdrhistogram::Histogram;

pub use reader::{ReaderPlan, Shared};
pub use writer::{PubCommand, WriterPlan};

/// When a side stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// After this long (`--runfor`).
    After(Duration),
    /// Once this many messages are published, or received over all readers (`--count`).
    Count(u64),
}

impl Stop {
    pub fn deadline(self, began: Instant) -> Option<Instant> {
        match self {
            Stop::After(runfor) => Some(began + runfor),
            Stop::Count(_) => None,
        }
    }

    pub fn count(self) -> Option<u64> {
        match self {
            Stop::After(_) => None,
            Stop::Count(count) => Some(count),
        }
    }

    /// Each of `n` connections' share of a count (the first ones take the remainder).
    pub fn split(self, n: usize) -> Vec<Option<u64>> {
        let n64 = n as u64;
        (0..n64)
            .map(|i| self.count().map(|count| count / n64 + u64::from(i < count % n64)))
            .collect()
    }
}

/// The body stamp: publish time in nanoseconds since the Unix epoch.
pub mod stamp {
    use std::time::{SystemTime, UNIX_EPOCH};

    pub const LEN: usize = 8;

    pub fn now_ns() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
    }

    pub fn now() -> [u8; LEN] {
        now_ns().to_le_bytes()
    }

    /// The stamp of a body, if it has a non-zero one.
    pub fn read(body: &[u8]) -> Option<u64> {
        let stamp = u64::from_le_bytes(body.get(..LEN)?.try_into().ok()?);
        (stamp != 0).then_some(stamp)
    }
}

/// Publish-to-delivery latencies, in nanoseconds.
#[derive(Debug, Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    pub fn new() -> Self {
        // 1 µs to 1 hour at 3 significant digits; the bounds are valid, so this cannot fail.
        #[allow(clippy::expect_used)]
        let histogram = Histogram::new_with_bounds(1_000, 3_600_000_000_000, 3)
            .expect("valid histogram bounds");
        Latency(histogram)
    }

    pub fn record(&mut self, nanos: u64) {
        self.0.saturating_record(nanos.max(1_000));
    }

    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    pub fn samples(&self) -> u64 {
        self.0.len()
    }

    /// The latency at `quantile` (0.5 for the median), or `None` without samples.
    pub fn at(&self, quantile: f64) -> Option<Duration> {
        (self.samples() > 0).then(|| Duration::from_nanos(self.0.value_at_quantile(quantile)))
    }

    /// `latency: p50 1.234ms - p99 … - p99.9 … - max … - N samples`, or `None` without samples.
    pub fn line(&self) -> Option<String> {
        let mut line = String::from("latency:");
        for (name, quantile) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999), ("max", 1.0)] {
            let _ = write!(line, " {name} {:.3}ms -", self.at(quantile)?.as_secs_f64() * 1e3);
        }
        let _ = write!(line, " {} samples", self.samples());
        Some(line)
    }
}

/// What one side did.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    pub messages: u64,
    pub duration: Duration,
    pub size: usize,
}

impl Throughput {
    pub fn ops_per_second(&self) -> f64 {
        self.messages as f64 / self.duration.as_secs_f64()
    }

    /// bench_writer's and bench_reader's last line, after the log prefix:
    /// `duration: 10.000146s - 38.162mb/s - 200071.213ops/s - 4.998us/op`.
    pub fn line(&self) -> String {
        let seconds = self.duration.as_secs_f64();
        let mb = self.messages as f64 * self.size as f64 / seconds / 1024.0 / 1024.0;
        // Go divides whole microseconds by the count.
        let us_per_op = self.duration.as_micros() as f64 / self.messages as f64;
        format!(
            "duration: {} - {mb:.3}mb/s - {:.3}ops/s - {us_per_op:.3}us/op",
            go_duration(self.duration),
            self.ops_per_second()
        )
    }
}

/// A duration as Go's `time.Duration.String` prints it: `10.000146s`, `1m30.5s`, `250ms`, `12µs`.
pub fn go_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        let (unit, scale) = match nanos {
            0..1_000 => ("ns", 1),
            1_000..1_000_000 => ("µs", 1_000),
            _ => ("ms", 1_000_000),
        };
        return format!("{}{unit}", decimal(nanos, scale));
    }
    let hours = nanos / 3_600_000_000_000;
    let minutes = nanos / 60_000_000_000 % 60;
    let seconds = decimal(nanos % 60_000_000_000, 1_000_000_000);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, _) => format!("{minutes}m{seconds}s"),
        _ => format!("{hours}h{minutes}m{seconds}s"),
    }
}

/// `value / scale` with the fraction's trailing zeros dropped.
fn decimal(value: u128, scale: u128) -> String {
    let whole = value / scale;
    let fraction = value % scale;
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = scale.ilog10() as usize;
    let fraction = format!("{fraction:0digits$}");
    format!("{whole}.{}", fraction.trim_end_matches('0'))
}

/// A log line as Go's `log` package prints it with bench_writer's prefix:
/// `[bench_writer] 2026/11/22 02:30:00 duration: …` (the time in UTC).
pub fn log_line(prefix: &str, text: &str) -> String {
    let time = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let time = time.trim_end_matches('Z').replace('-', "/").replace('T', " ");
    format!("[{prefix}] {time} {text}")
}

/// What a run measured.
#[derive(Debug)]
pub struct Outcome {
    pub writer: Option<Throughput>,
    pub reader: Option<Throughput>,
    pub latency: Latency,
}

/// Connects every reader, then every writer, starts them together and waits for both sides.
/// Either plan may be absent.
pub fn run(
    writer: Option<&WriterPlan>,
    reader: Option<&ReaderPlan>,
    size: usize,
) -> anyhow::Result<Outcome> {
    let readers = reader.map(ReaderPlan::connect).transpose()?.unwrap_or_default();
    let writers = writer.map(WriterPlan::connect).transpose()?.unwrap_or_default();
    let start = Barrier::new(readers.len() + writers.len() + 1);
    let shared = Arc::new(Shared::default());
    std::thread::scope(|scope| {
        let writer_threads: Vec<_> = writers
            .into_iter()
            .filter_map(|w| writer.map(|plan| (w, plan)))
            .map(|(w, plan)| {
                let (start, shared) = (&start, &shared);
                scope.spawn(move || {
                    let outcome = w.run(plan, start);
                    if outcome.is_err() {
                        // Readers waiting for a count that will never come stop too.
                        shared.done.store(true, Ordering::Relaxed);
                    }
                    outcome
                })
            })
            .collect();
        let reader_threads: Vec<_> = readers
            .into_iter()
            .filter_map(|r| reader.map(|plan| (r, plan)))
            .map(|(r, plan)| {
                let (start, shared) = (&start, &shared);
                scope.spawn(move || r.run(plan, start, shared))
            })
            .collect();
        start.wait();
        let began = Instant::now();
        let mut published = 0;
        let mut first_error = None;
        for thread in writer_threads {
            match thread.join().map_err(|_| anyhow!("a writer thread panicked")).and_then(|r| r) {
                Ok(count) => published += count,
                Err(error) => first_error = first_error.or(Some(error)),
            }
        }
        let wrote = began.elapsed();
        let mut received = 0;
        let mut latency = Latency::new();
        for thread in reader_threads {
            match thread.join().map_err(|_| anyhow!("a reader thread panicked")).and_then(|r| r) {
                Ok(outcome) => {
                    received += outcome.received;
                    latency.merge(&outcome.latency);
                }
                Err(error) => first_error = first_error.or(Some(error)),
            }
        }
        let read = began.elapsed();
        if let Some(error) = first_error {
            return Err(error);
        }
        Ok(Outcome {
            writer: writer.map(|_| Throughput { messages: published, duration: wrote, size }),
            reader: reader.map(|_| Throughput { messages: received, duration: read, size }),
            latency,
        })
    })
}

/// `name` when there is one, else `name0` … `name{count-1}`.
pub fn names(name: &str, count: usize) -> Vec<String> {
    if count == 1 {
        vec![name.to_owned()]
    } else {
        (0..count).map(|i| format!("{name}{i}")).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn durations_print_as_go_prints_them() {
        assert_eq!(go_duration(Duration::from_nanos(10_000_146_000)), "10.000146s");
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_millis(90_500)), "1m30.5s");
        assert_eq!(go_duration(Duration::from_secs(3_600 + 2)), "1h0m2s");
        assert_eq!(go_duration(Duration::from_micros(250_000)), "250ms");
        assert_eq!(go_duration(Duration::from_nanos(1_500)), "1.5µs");
        assert_eq!(go_duration(Duration::from_nanos(999)), "999ns");
        assert_eq!(go_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn the_throughput_line_is_bench_writers() {
        let line =
            Throughput { messages: 2_000_000, duration: Duration::from_secs(10), size: 200 }.line();
        assert_eq!(line, "duration: 10s - 38.147mb/s - 200000.000ops/s - 5.000us/op");
    }

    #[test]
    fn counts_split_over_connections_add_up() {
        let shares = Stop::Count(10).split(4);
        assert_eq!(shares, [Some(3), Some(3), Some(2), Some(2)]);
        assert_eq!(Stop::After(Duration::from_secs(1)).split(2), [None, None]);
    }

    #[test]
    fn stamps_round_trip_and_zero_bodies_have_none() {
        let mut body = vec![0u8; 200];
        assert_eq!(stamp::read(&body), None);
        assert_eq!(stamp::read(&body[..4]), None);
        body[..8].copy_from_slice(&stamp::now());
        let sent = stamp::read(&body).unwrap();
        assert!(stamp::now_ns() >= sent);
    }

    #[test]
    fn latency_percentiles_come_from_the_samples() {
        let mut latency = Latency::new();
        assert_eq!(latency.line(), None);
        for micros in 1..=1000 {
            latency.record(micros * 1_000);
        }
        let p50 = latency.at(0.5).unwrap().as_micros();
        let p99 = latency.at(0.99).unwrap().as_micros();
        assert!((499..=501).contains(&p50), "{p50}");
        assert!((989..=991).contains(&p99), "{p99}");
        assert!(latency.line().unwrap().ends_with("1000 samples"));
    }
}
