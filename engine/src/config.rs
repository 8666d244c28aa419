//! The engine's settings, named and defaulted after nsqd's flags.

use std::path::PathBuf;
use std::time::Duration;

use crate::log::LogConfig;

/// NSQ's `--mem-queue-size` default.
pub const DEFAULT_MEM_QUEUE_SIZE: u64 = 10_000;
/// NSQ's `--msg-timeout` default.
pub const DEFAULT_MSG_TIMEOUT: Duration = Duration::from_secs(60);
/// NSQ's `--max-msg-timeout` default.
pub const DEFAULT_MAX_MSG_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// NSQ's `--max-req-timeout` default.
pub const DEFAULT_MAX_REQ_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// How often channel progress is checkpointed by default.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// Deferred messages one channel may hold (each costs about 64 bytes of memory).
pub const DEFAULT_MAX_DEFERRED_PER_CHANNEL: u64 = 1_000_000;
/// NSQ's `--e2e-processing-latency-window-time` default.
pub const DEFAULT_E2E_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Segment size of ephemeral topics, whose logs live in memory.
pub const EPHEMERAL_BYTES_PER_FILE: u64 = 1024 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Segment size, body limit and fsync policy of every topic log.
    pub log: LogConfig,
    /// `--mem-queue-size`: messages per topic that may be acknowledged before they are written
    /// (lost on a crash, as in NSQ). `0`: written before acknowledged. It also bounds what an
    /// ephemeral topic or channel holds (at least 1).
    pub mem_queue_size: u64,
    /// `--msg-timeout`: how long a delivered message may stay in flight.
    pub msg_timeout: Duration,
    /// `--max-msg-timeout`: the largest per-consumer timeout, and how far TOUCH may extend.
    pub max_msg_timeout: Duration,
    /// `--max-req-timeout`: REQ delays are clamped to it; longer DPUB delays are refused.
    pub max_req_timeout: Duration,
    /// How often channel progress is checkpointed (also at close).
    pub checkpoint_interval: Duration,
    pub max_deferred_per_channel: u64,
    /// `--e2e-processing-latency-percentile`: empty disables the measurement.
    pub e2e_percentiles: Vec<f64>,
    /// `--e2e-processing-latency-window-time`.
    pub e2e_window: Duration,
    /// `--archive-path`: where retention archives the segments it removes
    /// (`<archive_dir>/<topic>/`, FORMAT.md §8); `None` deletes them. Ephemeral topics are never
    /// archived.
    pub archive_dir: Option<PathBuf>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            log: LogConfig::default(),
            mem_queue_size: DEFAULT_MEM_QUEUE_SIZE,
            msg_timeout: DEFAULT_MSG_TIMEOUT,
            max_msg_timeout: DEFAULT_MAX_MSG_TIMEOUT,
            max_req_timeout: DEFAULT_MAX_REQ_TIMEOUT,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            max_deferred_per_channel: DEFAULT_MAX_DEFERRED_PER_CHANNEL,
            e2e_percentiles: Vec::new(),
            e2e_window: DEFAULT_E2E_WINDOW,
            archive_dir: None,
        }
    }
}
