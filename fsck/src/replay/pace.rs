//! `--rate`: messages per second, as a schedule rather than a bucket. Message `i` (from 0) is
//! due `i / rate` seconds after the first, and a batch is sent when its last message is due, so
//! `n` messages take at least `(n - 1) / rate` seconds and no burst ever runs ahead of the
//! schedule. The clock is a trait so that tests check the schedule without sleeping.

use std::time::{Duration, Instant};

/// Time as the pacer sees it.
pub(crate) trait PaceClock {
    /// Time since some fixed start.
    fn now(&mut self) -> Duration;
    fn sleep(&mut self, duration: Duration);
}

/// The real clock.
#[derive(Debug)]
pub(crate) struct SystemPaceClock {
    start: Instant,
}

impl SystemPaceClock {
    pub(crate) fn new() -> Self {
        Self { start: Instant::now() }
    }
}

impl PaceClock for SystemPaceClock {
    fn now(&mut self) -> Duration {
        self.start.elapsed()
    }

    fn sleep(&mut self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

/// Holds batches back to `rate` messages per second; `rate` 0 never waits.
#[derive(Debug)]
pub(crate) struct Pacer<C> {
    rate: u64,
    clock: C,
    /// When message 0 was released.
    start: Option<Duration>,
    released: u64,
}

impl<C: PaceClock> Pacer<C> {
    pub(crate) fn new(rate: u64, clock: C) -> Self {
        Self { rate, clock, start: None, released: 0 }
    }

    /// Largest batch that keeps sends about ten a second at this rate (`limit` when unlimited).
    pub(crate) fn batch_records(&self, limit: usize) -> usize {
        match self.rate {
            0 => limit,
            rate => usize::try_from(rate / 10).unwrap_or(usize::MAX).clamp(1, limit.max(1)),
        }
    }

    /// Waits until the last of the next `count` messages is due, then counts them released.
    pub(crate) fn release(&mut self, count: u64) {
        if self.rate == 0 || count == 0 {
            return;
        }
        let now = self.clock.now();
        let start = *self.start.get_or_insert(now);
        let last = self.released + count - 1;
        let due = start.saturating_add(offset_of(last, self.rate));
        if let Some(wait) = due.checked_sub(now).filter(|wait| !wait.is_zero()) {
            self.clock.sleep(wait);
        }
        self.released += count;
    }
}

/// When message `index` is due after message 0, at `rate` per second.
fn offset_of(index: u64, rate: u64) -> Duration {
    let nanos = u128::from(index) * 1_000_000_000 / u128::from(rate);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock that moves only when the pacer sleeps, and records when each batch went out.
    #[derive(Debug, Default)]
    struct FakeClock {
        now: Duration,
        slept: Duration,
    }

    impl PaceClock for &mut FakeClock {
        fn now(&mut self) -> Duration {
            self.now
        }

        fn sleep(&mut self, duration: Duration) {
            self.now += duration;
            self.slept += duration;
        }
    }

    #[test]
    fn n_messages_take_at_least_n_minus_one_over_rate_and_never_run_ahead() {
        // Goal: the schedule holds for any batching: message i never goes out before i / rate.
        // Method: release 1000 messages at 200/s in batches of varying size on a fake clock
        // that only moves when the pacer sleeps; check each batch's send time against its last
        // message's due time, and the total.
        let mut clock = FakeClock::default();
        let mut sent = 0u64;
        let mut sizes = [1u64, 7, 20, 3, 50].into_iter().cycle();
        let mut send_times = Vec::new();
        {
            let mut pacer = Pacer::new(200, &mut clock);
            while sent < 1000 {
                let batch = sizes.next().unwrap_or(1).min(1000 - sent);
                pacer.release(batch);
                sent += batch;
                send_times.push((sent - 1, pacer.clock.now));
            }
        }
        for (last, at) in send_times {
            assert!(at >= Duration::from_millis(last * 5), "message {last} sent at {at:?}");
        }
        assert_eq!(clock.now, Duration::from_millis(999 * 5), "no more waiting than needed");
    }

    #[test]
    fn rate_zero_never_waits_and_batches_follow_the_rate() {
        // Goal: --rate 0 means unlimited, and batches stay small enough to pace smoothly.
        // Method: release many messages at rate 0 on the fake clock; ask for batch sizes.
        let mut clock = FakeClock::default();
        let mut pacer = Pacer::new(0, &mut clock);
        pacer.release(1_000_000);
        assert_eq!(pacer.batch_records(500), 500);
        assert_eq!(clock.slept, Duration::ZERO);
        let clock = FakeClock::default();
        assert_eq!(Pacer::new(5, clock).batch_records(500), 1);
        assert_eq!(Pacer::new(1000, FakeClock::default()).batch_records(500), 100);
        assert_eq!(Pacer::new(1_000_000, FakeClock::default()).batch_records(500), 500);
    }

    impl PaceClock for FakeClock {
        fn now(&mut self) -> Duration {
            self.now
        }

        fn sleep(&mut self, duration: Duration) {
            self.now += duration;
            self.slept += duration;
        }
    }
}
