//! Counters of topics, channels and consumers: what NSQ's `/stats` reports. Reading them takes
//! each lock briefly and walks no message.

pub use crate::latency::LatencyQuantiles;

#[derive(Debug, Clone, PartialEq)]
pub struct TopicStats {
    pub name: String,
    pub ephemeral: bool,
    pub paused: bool,
    /// Messages at the topic, not yet handed to channels (paused, or no channel).
    pub depth: u64,
    /// The part of `depth` written to the log.
    pub backend_depth: u64,
    /// Messages published since the engine opened.
    pub message_count: u64,
    pub message_bytes: u64,
    /// Published messages that were dropped: an ephemeral topic over its bound, or
    /// memory-queued records whose write failed.
    pub dropped_count: u64,
    /// Channels, sorted by name.
    pub channels: Vec<ChannelStats>,
    /// Over all channels' samples; `None` when the measurement is disabled or the topic has
    /// no channel.
    pub e2e_processing_latency: Option<LatencyQuantiles>,
    pub log: crate::log::LogStats,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChannelStats {
    pub name: String,
    pub ephemeral: bool,
    pub paused: bool,
    /// Messages ready for delivery (in-flight and deferred excluded, as in NSQ).
    pub depth: u64,
    pub backend_depth: u64,
    pub in_flight_count: u64,
    pub deferred_count: u64,
    /// Messages that reached the channel since the engine opened (requeues not counted).
    pub message_count: u64,
    pub requeue_count: u64,
    pub timeout_count: u64,
    pub client_count: u64,
    /// Consumers, sorted by id.
    pub consumers: Vec<ConsumerStats>,
    /// Offset of the oldest message the channel still needs.
    pub floor: u64,
    pub next_read: u64,
    /// `None` when the measurement is disabled.
    pub e2e_processing_latency: Option<LatencyQuantiles>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerStats {
    pub id: u64,
    pub ready_count: u64,
    pub in_flight_count: u64,
    pub message_count: u64,
    pub finish_count: u64,
    pub requeue_count: u64,
    pub timeout_count: u64,
}
