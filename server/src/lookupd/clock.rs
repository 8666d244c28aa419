//! The time nsqlookupd judges activity and tombstones by: wall-clock Unix nanoseconds, as NSQ
//! records a peer's last update. A test hands nsqlookupd a [`Clock::manual`] and moves it
//! itself, so producers go inactive and tombstones expire without waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A handle on the time: the system's, or one that moves only when told to. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// `None`: the system clock.
    manual_ns: Option<Arc<AtomicI64>>,
}

impl Clock {
    pub fn system() -> Clock {
        Clock::default()
    }

    /// A clock standing at `now_ns` (Unix nanoseconds) until [`Clock::advance`] moves it.
    pub fn manual(now_ns: i64) -> Clock {
        Clock { manual_ns: Some(Arc::new(AtomicI64::new(now_ns))) }
    }

    /// Unix nanoseconds.
    pub fn now_ns(&self) -> i64 {
        match &self.manual_ns {
            Some(now) => now.load(Ordering::Acquire),
            None => {
                let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
                i64::try_from(since_epoch.as_nanos()).unwrap_or(i64::MAX)
            }
        }
    }

    /// Moves a manual clock forward. The system clock moves by itself and ignores this.
    pub fn advance(&self, by: Duration) {
        if let Some(now) = &self.manual_ns {
            now.fetch_add(nanos(by), Ordering::AcqRel);
        }
    }
}

/// A duration in nanoseconds, saturating at `i64::MAX` (292 years).
pub(crate) fn nanos(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}
