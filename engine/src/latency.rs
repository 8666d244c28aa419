//! End-to-end processing latency (publish to FIN), as NSQ's `e2e_processing_latency` reports it:
//! quantiles over a sliding window, kept as two histograms that each cover half the window.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::clock::duration_ns;

/// Highest latency recorded exactly; larger samples are clamped to it (about 10 days).
const MAX_LATENCY_NS: u64 = 1 << 50;
const SIGNIFICANT_DIGITS: u8 = 2;

/// Quantiles of the samples in the window.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyQuantiles {
    pub count: u64,
    /// `(quantile, nanoseconds)` for each requested quantile.
    pub percentiles: Vec<(f64, u64)>,
}

#[derive(Debug)]
pub(crate) struct E2eLatency {
    half_window_ns: i64,
    /// When `current` started covering samples.
    current_start_ns: i64,
    current: Histogram<u64>,
    previous: Histogram<u64>,
}

impl E2eLatency {
    pub(crate) fn new(window: Duration, now_ns: i64) -> Option<Self> {
        let histogram = || Histogram::new_with_max(MAX_LATENCY_NS, SIGNIFICANT_DIGITS).ok();
        Some(Self {
            half_window_ns: (duration_ns(window) / 2).max(1),
            current_start_ns: now_ns,
            current: histogram()?,
            previous: histogram()?,
        })
    }

    fn rotate(&mut self, now_ns: i64) {
        let elapsed = now_ns.saturating_sub(self.current_start_ns);
        if elapsed >= 2 * self.half_window_ns {
            self.previous.reset();
            self.current.reset();
            self.current_start_ns = now_ns;
        } else if elapsed >= self.half_window_ns {
            std::mem::swap(&mut self.previous, &mut self.current);
            self.current.reset();
            self.current_start_ns += self.half_window_ns;
        }
    }

    pub(crate) fn record(&mut self, latency_ns: i64, now_ns: i64) {
        self.rotate(now_ns);
        let value = u64::try_from(latency_ns).unwrap_or(0).min(MAX_LATENCY_NS);
        self.current.saturating_record(value);
    }

    /// The samples of the window, in one histogram.
    pub(crate) fn window(&mut self, now_ns: i64) -> Histogram<u64> {
        self.rotate(now_ns);
        let mut merged = self.previous.clone();
        // Both have the same bounds, so adding cannot fail.
        let _ = merged.add(&self.current);
        merged
    }

    pub(crate) fn quantiles(&mut self, quantiles: &[f64], now_ns: i64) -> LatencyQuantiles {
        LatencyQuantiles::of(&self.window(now_ns), quantiles)
    }
}

impl LatencyQuantiles {
    pub(crate) fn of(histogram: &Histogram<u64>, quantiles: &[f64]) -> Self {
        LatencyQuantiles {
            count: histogram.len(),
            percentiles: quantiles.iter().map(|&q| (q, histogram.value_at_quantile(q))).collect(),
        }
    }

    /// The quantiles over the windows of several channels together (a topic's figure).
    pub(crate) fn merged<'a>(
        windows: impl IntoIterator<Item = &'a Histogram<u64>>,
        quantiles: &[f64],
    ) -> Option<Self> {
        let mut windows = windows.into_iter();
        let mut merged = windows.next()?.clone();
        for window in windows {
            // Same bounds everywhere, so adding cannot fail.
            let _ = merged.add(window);
        }
        Some(Self::of(&merged, quantiles))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_leave_the_window_after_it_passes() {
        // Goal: quantiles cover the last window only. Method: record, move time by halves of the
        // window, and read the count and the median.
        let window = Duration::from_secs(10);
        let mut latency = E2eLatency::new(window, 0).unwrap();
        for ms in 1..=100 {
            latency.record(ms * 1_000_000, 0);
        }
        let q = latency.quantiles(&[0.5], 0);
        assert_eq!(q.count, 100);
        let median = q.percentiles[0].1;
        assert!((49_000_000..=51_000_000).contains(&median), "{median}");
        // Half a window later the samples are in the older half: still counted.
        assert_eq!(latency.quantiles(&[0.5], 5_000_000_000).count, 100);
        // A full window later they are gone.
        assert_eq!(latency.quantiles(&[0.5], 10_000_000_000).count, 0);
    }
}
