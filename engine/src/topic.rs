//! A topic: its log, its channels, and NSQ's topic-level rules.
//!
//! - **No channel, no loss.** While a topic has no channel, its messages stay; its first channel
//!   starts at the oldest of them, later channels at the end of the log (NSQ: the topic pump does
//!   not run without channels, so the backlog waits for the first one).
//! - **Pause** stops handing messages to channels at the offset where the pause began: channels
//!   keep delivering what they had (their requeues included), new messages wait at the topic.
//!   **Empty** drops what waits at the topic: everything when there is no channel, the messages
//!   since the pause when paused, nothing otherwise (channels' queues are theirs, as in NSQ).
//! - **Memory queue** (`--mem-queue-size` N > 0): a publish is acknowledged once queued for the
//!   log's next write, up to N records; the engine's background thread writes them. At 0 the
//!   publish returns once written (fsynced under `--sync-every=1`).
//! - **Ephemeral** topics (`#ephemeral`) keep their log in memory, are never in the metadata
//!   store, hold at most `max(mem-queue-size, 1)` undelivered messages (more are dropped, as NSQ
//!   drops them) and go away with their last channel.

use crate::changes::Change;
use crate::sync::lock;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use crate::catalog::{CATALOG_FILE_NAME, Catalog};
use crate::channel::Channel;
use crate::clock::duration_ns;
use crate::error::EngineError;
use crate::latency::LatencyQuantiles;
use crate::log::{NewRecord, SegmentArchiver, TopicLog};
use crate::meta::{ChannelRecord, MetaStore, TopicRecord};
use crate::names::{is_ephemeral, is_valid_name};
use crate::queue::state::{ChannelState, Limits};
use crate::stats::TopicStats;
use crate::storage::Storage;
use crate::{Context, EngineInner};

const NOT_PAUSED: u64 = u64::MAX;

/// What channels need of their topic.
#[derive(Debug)]
pub(crate) struct TopicCore {
    pub(crate) name: String,
    pub(crate) log: TopicLog,
    /// The offset a paused topic stopped at; `NOT_PAUSED` otherwise.
    paused_at: AtomicU64,
}

impl TopicCore {
    /// Channels read no record at or above this.
    pub(crate) fn read_limit(&self) -> u64 {
        self.paused_at.load(Ordering::Acquire)
    }
}

/// A topic. Obtained from [`crate::Engine::topic`].
#[derive(Debug)]
pub struct Topic {
    core: Arc<TopicCore>,
    ctx: Arc<Context>,
    ephemeral: bool,
    /// `None` for an ephemeral topic.
    meta: Option<MetaStore>,
    storage: Arc<dyn Storage>,
    engine: Weak<EngineInner>,
    channels: RwLock<BTreeMap<String, Arc<Channel>>>,
    /// Also serializes channel creation and deletion.
    state: Mutex<TopicRecord>,
    message_count: AtomicU64,
    message_bytes: AtomicU64,
    dropped_count: AtomicU64,
    exiting: AtomicBool,
}

pub(crate) struct TopicParts {
    pub(crate) name: String,
    pub(crate) log: TopicLog,
    pub(crate) ctx: Arc<Context>,
    pub(crate) meta: Option<MetaStore>,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) engine: Weak<EngineInner>,
    pub(crate) record: TopicRecord,
}

impl Topic {
    /// A topic with its channels restored from the metadata store.
    pub(crate) fn open(parts: TopicParts) -> Result<Arc<Self>, EngineError> {
        let TopicParts { name, log, ctx, meta, storage, engine, record } = parts;
        let core = Arc::new(TopicCore {
            name: name.clone(),
            log,
            paused_at: AtomicU64::new(record.paused_at.unwrap_or(NOT_PAUSED)),
        });
        let mut restored = Vec::new();
        if let Some(meta) = &meta {
            for (channel, channel_record) in meta.channels(&name)? {
                let channel_record = channel_record.unwrap_or_else(|error| {
                    tracing::error!(
                        topic = %name, %channel, %error,
                        "damaged checkpoint: the channel starts over at its oldest retained message"
                    );
                    ChannelRecord::default()
                });
                let mut deferred = Vec::new();
                meta.for_each_deferred(&name, &channel, &mut |offset, entry| {
                    deferred.push((offset, entry));
                })?;
                let state =
                    ChannelState::restore(limits(&ctx), &channel_record, deferred, &core.log);
                restored.push((channel, state));
            }
        }
        let topic = Arc::new_cyclic(|weak: &Weak<Topic>| {
            let channels = restored
                .into_iter()
                .map(|(channel, state)| {
                    let created = Channel::new(
                        channel.clone(),
                        Arc::clone(&core),
                        weak.clone(),
                        Arc::clone(&ctx),
                        state,
                    );
                    (channel, created)
                })
                .collect();
            Topic {
                ephemeral: is_ephemeral(&name),
                core,
                ctx,
                meta,
                storage,
                engine,
                channels: RwLock::new(channels),
                state: Mutex::new(record),
                message_count: AtomicU64::new(0),
                message_bytes: AtomicU64::new(0),
                dropped_count: AtomicU64::new(0),
                exiting: AtomicBool::new(false),
            }
        });
        Ok(topic)
    }

    pub fn name(&self) -> &str {
        &self.core.name
    }

    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    pub fn is_paused(&self) -> bool {
        self.core.read_limit() != NOT_PAUSED
    }

    /// Whether the topic was deleted or the engine is closing: publishes are refused.
    pub fn is_exiting(&self) -> bool {
        self.exiting.load(Ordering::Acquire)
    }

    pub fn log(&self) -> &TopicLog {
        &self.core.log
    }

    /// Publishes `bodies`, delivered no earlier than `defer` from now (DPUB; zero for PUB and
    /// MPUB). Returns their offsets. A defer above `max_req_timeout` is refused, as NSQ does.
    pub fn publish(&self, bodies: &[&[u8]], defer: Duration) -> Result<Range<u64>, EngineError> {
        if self.is_exiting() {
            return Err(EngineError::Exiting(format!("topic {}", self.name())));
        }
        let max = self.ctx.config.max_req_timeout;
        if defer > max {
            return Err(EngineError::InvalidDefer { requested: defer, max });
        }
        let now_ns = self.ctx.clock.now_ns();
        let deliver_at_ns =
            if defer.is_zero() { 0 } else { now_ns.saturating_add(duration_ns(defer)) };
        let records: Vec<NewRecord<'_>> = bodies
            .iter()
            .map(|body| NewRecord { timestamp_ns: now_ns, deliver_at_ns, body })
            .collect();
        let log = &self.core.log;
        let count = records.len() as u64;
        if self.ephemeral && self.ephemeral_backlog() + count > self.ephemeral_bound() {
            self.dropped_count.fetch_add(count, Ordering::Relaxed);
            let next = log.next_offset();
            return Ok(next..next);
        }
        let mem_queue_size = self.ctx.config.mem_queue_size;
        let (range, written) = if mem_queue_size > 0 && !self.ephemeral {
            match log.append_queued(&records, mem_queue_size)? {
                Some(range) => {
                    self.ctx.timers.wakeup.wake();
                    (range, false)
                }
                None => (self.append(&records)?, true),
            }
        } else {
            (self.append(&records)?, true)
        };
        self.message_count.fetch_add(count, Ordering::Relaxed);
        let bytes: usize = bodies.iter().map(|b| b.len()).sum();
        self.message_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        if written {
            self.notify_channels();
        }
        Ok(range)
    }

    /// Writes to the log now; its outcome is the engine's health (NSQ's `SetHealth`).
    fn append(&self, records: &[NewRecord<'_>]) -> Result<Range<u64>, EngineError> {
        let outcome = self.core.log.append(records).map_err(EngineError::from);
        self.ctx.health.record(&outcome);
        outcome
    }

    fn ephemeral_bound(&self) -> u64 {
        self.ctx.config.mem_queue_size.max(1)
    }

    /// Undelivered messages of an ephemeral topic: behind its slowest channel, or all of them.
    fn ephemeral_backlog(&self) -> u64 {
        let next = self.core.log.next_offset();
        next.saturating_sub(self.live_floor())
    }

    /// The lowest floor of the channels as they are now, or where a first channel would start.
    fn live_floor(&self) -> u64 {
        let channels = self.channels();
        match channels.iter().map(|c| c.floor()).min() {
            Some(floor) => floor,
            None => lock(&self.state).orphan_floor.max(self.core.log.stats().oldest_offset),
        }
    }

    /// Writes records queued by the memory queue, then wakes the channels. Returns whether
    /// there were any.
    pub(crate) fn write_queued(&self) -> Result<bool, EngineError> {
        let written = self.core.log.write_queued()?;
        if written {
            self.notify_channels();
        }
        Ok(written)
    }

    pub(crate) fn notify_channels(&self) {
        for channel in self.read_channels().values() {
            channel.notify();
        }
    }

    fn read_channels(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Channel>>> {
        crate::sync::read(&self.channels)
    }

    fn write_channels(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Channel>>> {
        crate::sync::write(&self.channels)
    }

    /// The channel `name`, created if it does not exist (SUB and `/channel/create`).
    pub fn channel(self: &Arc<Self>, name: &str) -> Result<Arc<Channel>, EngineError> {
        if let Some(channel) = self.get_channel(name) {
            return Ok(channel);
        }
        let mut created = self.create_channels(&[name])?;
        created.pop().ok_or_else(|| EngineError::InvalidChannelName(name.to_owned()))
    }

    /// The channels `names`, those missing created together: when the topic has no channel
    /// yet, every one of them starts at the backlog the first channel would get (nsqd's
    /// channels pre-created from nsqlookupd all see the messages published before them).
    pub fn create_channels(
        self: &Arc<Self>,
        names: &[&str],
    ) -> Result<Vec<Arc<Channel>>, EngineError> {
        if let Some(bad) = names.iter().find(|name| !is_valid_name(name)) {
            return Err(EngineError::InvalidChannelName((*bad).to_owned()));
        }
        if self.is_exiting() {
            return Err(EngineError::Exiting(format!("topic {}", self.name())));
        }
        if self.meta.is_some() && names.iter().any(|name| !is_ephemeral(name)) {
            // The start offset goes into the checkpoint: it must not name a record a crash
            // could take back.
            self.core.log.sync()?;
        }
        let state = lock(&self.state);
        let log_stats = self.core.log.stats();
        let start = if self.read_channels().is_empty() {
            state.orphan_floor.max(log_stats.oldest_offset)
        } else {
            log_stats.next_offset
        };
        let mut channels = Vec::with_capacity(names.len());
        let mut created = Vec::new();
        let mut failed = None;
        for &name in names {
            if let Some(channel) = self.get_channel(name) {
                channels.push(channel);
                continue;
            }
            let channel = Channel::new(
                name.to_owned(),
                Arc::clone(&self.core),
                Arc::downgrade(self),
                Arc::clone(&self.ctx),
                ChannelState::new(limits(&self.ctx), start),
            );
            self.write_channels().insert(name.to_owned(), Arc::clone(&channel));
            let durable = self.meta.is_some() && !is_ephemeral(name);
            if durable && let Err(error) = self.persist_channel_list(&state, Some(&channel)) {
                self.write_channels().remove(name);
                channel.mark_deleted();
                failed = Some(error);
                break;
            }
            created.push(name);
            channels.push(channel);
        }
        drop(state);
        for name in created {
            self.ctx.observers.notify(Change::ChannelCreated {
                topic: self.name().to_owned(),
                channel: name.to_owned(),
            });
        }
        match failed {
            Some(error) => Err(error),
            None => Ok(channels),
        }
    }

    pub fn get_channel(&self, name: &str) -> Option<Arc<Channel>> {
        self.read_channels().get(name).cloned()
    }

    /// The channels, sorted by name.
    pub fn channels(&self) -> Vec<Arc<Channel>> {
        self.read_channels().values().cloned().collect()
    }

    /// Deletes a channel and its progress. Its consumers see [`Channel::is_deleted`]. An
    /// ephemeral topic goes away with its last channel.
    pub fn delete_channel(&self, name: &str) -> Result<(), EngineError> {
        let mut state = lock(&self.state);
        let Some(channel) = self.write_channels().remove(name) else {
            return Err(EngineError::ChannelNotFound {
                topic: self.name().to_owned(),
                channel: name.to_owned(),
            });
        };
        channel.mark_deleted();
        self.ctx.observers.notify(Change::ChannelDeleted {
            topic: self.name().to_owned(),
            channel: name.to_owned(),
        });
        let last = self.read_channels().is_empty();
        if last {
            // What arrives from now on waits for the next first channel.
            state.orphan_floor = self.core.log.next_offset();
        }
        if let Some(meta) = &self.meta {
            if !channel.is_ephemeral() {
                meta.remove_channel(self.name(), name)?;
            }
            self.persist_channel_list(&state, None)?;
        }
        drop(state);
        if last
            && self.ephemeral
            && let Some(engine) = self.engine.upgrade()
        {
            engine.remove_ephemeral_topic(self);
        }
        Ok(())
    }

    /// Stops handing new messages to channels (`/topic/pause`). Persisted at once.
    pub fn pause(&self) -> Result<(), EngineError> {
        let mut state = lock(&self.state);
        if state.paused_at.is_none() {
            let at = self.core.log.next_offset();
            state.paused_at = Some(at);
            self.core.paused_at.store(at, Ordering::Release);
        }
        self.persist_topic(&state)
    }

    pub fn unpause(&self) -> Result<(), EngineError> {
        let mut state = lock(&self.state);
        state.paused_at = None;
        self.core.paused_at.store(NOT_PAUSED, Ordering::Release);
        self.persist_topic(&state)?;
        drop(state);
        self.notify_channels();
        Ok(())
    }

    /// Drops the messages waiting at the topic (`/topic/empty`); see the module documentation.
    pub fn empty(&self) -> Result<(), EngineError> {
        self.core.log.write_queued()?;
        let mut state = lock(&self.state);
        let end = self.core.log.next_offset();
        let channels = self.channels();
        if channels.is_empty() {
            state.orphan_floor = end;
        } else if let Some(paused_at) = state.paused_at {
            for channel in &channels {
                channel.skip(paused_at..end);
            }
            state.paused_at = Some(end);
            self.core.paused_at.store(end, Ordering::Release);
        }
        self.persist_topic(&state)
    }

    /// Counters of the topic and its channels.
    pub fn stats(&self) -> TopicStats {
        let log = self.core.log.stats();
        let live = self.channels();
        let channels: Vec<_> = live.iter().map(|c| c.stats()).collect();
        let windows: Vec<_> = live.iter().filter_map(|c| c.latency_window()).collect();
        let e2e_processing_latency =
            LatencyQuantiles::merged(&windows, &self.ctx.config.e2e_percentiles);
        let state = lock(&self.state).clone();
        let backend_depth = if channels.is_empty() {
            log.next_offset.saturating_sub(state.orphan_floor.max(log.oldest_offset))
        } else if let Some(paused_at) = state.paused_at {
            log.next_offset.saturating_sub(paused_at)
        } else {
            0
        };
        TopicStats {
            name: self.name().to_owned(),
            ephemeral: self.ephemeral,
            paused: state.paused_at.is_some(),
            depth: backend_depth + log.queued_records,
            backend_depth,
            message_count: self.message_count.load(Ordering::Relaxed),
            message_bytes: self.message_bytes.load(Ordering::Relaxed),
            dropped_count: self.dropped_count.load(Ordering::Relaxed) + log.lost_records,
            channels,
            e2e_processing_latency,
            log,
        }
    }

    /// Checkpoints every durable channel and the topic. Returns the offset below which no
    /// checkpointed channel needs the log, for retention once the store is flushed.
    pub(crate) fn checkpoint(&self) -> Result<Option<u64>, EngineError> {
        let Some(meta) = &self.meta else {
            return Ok(None);
        };
        let log = &self.core.log;
        log.sync()?;
        let synced = log.stats().synced_offset;
        let state = lock(&self.state).clone();
        let mut floor = None::<u64>;
        let mut any_channel = false;
        for channel in self.channels() {
            any_channel = true;
            let channel_floor = if channel.is_ephemeral() {
                // Not checkpointed, and pins at most the memory queue's worth of the log.
                let bound = self.ephemeral_bound();
                channel.floor().max(log.next_offset().saturating_sub(bound))
            } else {
                channel.checkpoint(meta, synced)?
            };
            floor = Some(floor.map_or(channel_floor, |f| f.min(channel_floor)));
        }
        if !any_channel {
            floor = Some(state.orphan_floor.min(synced));
        }
        // The topic record is written whenever it changes (pause, empty, channel list).
        Ok(floor)
    }

    /// Checkpoints one channel now, and flushes the store.
    pub(crate) fn checkpoint_channel(&self, channel: &Channel) -> Result<(), EngineError> {
        let Some(meta) = &self.meta else {
            return Ok(());
        };
        if channel.is_ephemeral() || channel.is_deleted() {
            return Ok(());
        }
        self.core.log.sync()?;
        channel.checkpoint(meta, self.core.log.stats().synced_offset)?;
        self.persist_channel_list(&lock(&self.state), None)
    }

    /// Deletes (or archives and deletes) the segments below `floor`.
    pub(crate) fn apply_retention(
        &self,
        floor: u64,
        archiver: Option<&dyn SegmentArchiver>,
    ) -> Result<(), EngineError> {
        let removed = self.core.log.remove_below(floor, archiver)?;
        for segment in removed {
            tracing::debug!(topic = %self.name(), segment = %segment.path.display(), "segment retired");
        }
        Ok(())
    }

    /// Retention of an ephemeral topic, by its channels' live floors.
    pub(crate) fn trim_ephemeral(&self) -> Result<(), EngineError> {
        if self.ephemeral {
            let floor = self.live_floor();
            self.apply_retention(floor, None)?;
        }
        Ok(())
    }

    pub(crate) fn mark_exiting(&self) {
        self.exiting.store(true, Ordering::Release);
    }

    pub(crate) fn mark_deleted(&self) {
        self.mark_exiting();
        for channel in std::mem::take(&mut *self.write_channels()).into_values() {
            channel.mark_deleted();
        }
    }

    /// For a store reopened after an error: writes the topic record again, removes channels
    /// the store still has and the topic does not, and makes every channel's next checkpoint a
    /// full one.
    pub(crate) fn rewrite_meta(&self) -> Result<(), EngineError> {
        let Some(meta) = &self.meta else {
            return Ok(());
        };
        let channels = self.channels();
        for (name, _) in meta.channels(self.name())? {
            if !channels.iter().any(|c| c.name() == name) {
                meta.remove_channel(self.name(), &name)?;
            }
        }
        for channel in &channels {
            channel.forget_written();
        }
        let state = lock(&self.state).clone();
        meta.put_topic(self.name(), &state)?;
        Ok(())
    }

    fn persist_topic(&self, state: &TopicRecord) -> Result<(), EngineError> {
        if let Some(meta) = &self.meta {
            meta.put_topic(self.name(), state)?;
            self.write_catalog(state)?;
            meta.flush()?;
        }
        Ok(())
    }

    /// Persists the channel list (and `created`'s starting checkpoint) in the store and the
    /// catalog, then flushes the store.
    fn persist_channel_list(
        &self,
        state: &TopicRecord,
        created: Option<&Arc<Channel>>,
    ) -> Result<(), EngineError> {
        let Some(meta) = &self.meta else {
            return Ok(());
        };
        if let Some(channel) = created {
            channel.checkpoint(meta, self.core.log.stats().synced_offset)?;
        }
        meta.put_topic(self.name(), state)?;
        self.write_catalog(state)?;
        meta.flush()?;
        Ok(())
    }

    /// Writes the catalog: the topic's durable channels and pause states, for
    /// `nsq-fsck rebuild-meta` should the metadata store be lost.
    fn write_catalog(&self, state: &TopicRecord) -> Result<(), EngineError> {
        let catalog = Catalog {
            topic: self.name().to_owned(),
            paused: state.paused_at.is_some(),
            channels: self
                .channels()
                .iter()
                .filter(|channel| !channel.is_ephemeral())
                .map(|channel| (channel.name().to_owned(), channel.is_paused()))
                .collect(),
        };
        let dir = self.core.log.dir();
        catalog.write(&*self.storage, dir).map_err(|source| EngineError::Io {
            op: "write catalog",
            path: dir.join(CATALOG_FILE_NAME),
            source,
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        self.core.log.dir()
    }
}

pub(crate) fn limits(ctx: &Context) -> Limits {
    Limits {
        max_msg_timeout_ns: duration_ns(ctx.config.max_msg_timeout),
        max_deferred: ctx.config.max_deferred_per_channel,
    }
}
