//! Time as the engine sees it: nanoseconds since the Unix epoch, from a [`Clock`] its owner
//! chooses. nsqd uses [`SystemClock`]; tests use [`ManualClock`] and move time themselves, so
//! that timeouts and deferred deliveries are tested without sleeping.

use std::fmt::Debug;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + Debug {
    /// Nanoseconds since the Unix epoch.
    fn now_ns(&self) -> i64;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ns(&self) -> i64 {
        let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        i64::try_from(since_epoch.as_nanos()).unwrap_or(i64::MAX)
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock {
    now_ns: AtomicI64,
}

impl ManualClock {
    pub fn new(now_ns: i64) -> Self {
        Self { now_ns: AtomicI64::new(now_ns) }
    }

    pub fn advance(&self, by: Duration) {
        self.now_ns.fetch_add(duration_ns(by), Ordering::AcqRel);
    }

    pub fn set(&self, now_ns: i64) {
        self.now_ns.store(now_ns, Ordering::Release);
    }
}

impl Default for ManualClock {
    /// Starts at 2026-01-01T00:00:00Z, so that timestamps look like real ones.
    fn default() -> Self {
        Self::new(1_767_225_600_000_000_000)
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> i64 {
        self.now_ns.load(Ordering::Acquire)
    }
}

/// A duration in nanoseconds, saturating at `i64::MAX` (292 years).
pub fn duration_ns(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}
