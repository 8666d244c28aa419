//! A channel: a durable cursor into its topic's log, with the messages it has handed out, and
//! the consumers it hands them to. The rules of the cursor are in `queue::state`.
//!
//! A consumer is a [`Consumer`] handle: the server makes one per subscribed connection, sets its
//! RDY count, asks it for messages while it is ready, and passes FIN, REQ and TOUCH through it.
//! Dropping it requeues its in-flight messages at once (NSQ waits for them to time out), and
//! deletes an ephemeral channel whose last consumer it was.
//!
//! Wake-ups: [`Consumer::changed`] resolves when something may have become deliverable (a
//! publish, a requeue, a timeout, an unpause, a delete). The engine's timer fires timeouts and
//! deferred deliveries on time (see `queue::timers`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::duration_ns;
use crate::error::EngineError;
use crate::latency::E2eLatency;
use crate::message_id::parse_message_id;
use crate::meta::{ChannelRecord, MetaStore};
use crate::queue::state::{ChannelState, ConsumerId, Snapshot};
use crate::stats::{ChannelStats, ConsumerStats};
use crate::topic::{Topic, TopicCore};
use crate::{Context, Delivery, MessageError};

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) queue: ChannelState,
    latency: Option<E2eLatency>,
    /// The time this channel asked the engine's timer to fire it at.
    timer_registered: Option<i64>,
    next_consumer: ConsumerId,
    /// A fingerprint of the checkpoint written last, so that an unchanged channel is not written
    /// again. Keeping the record itself held a copy of every in-flight message's attempt count.
    /// Two records that share a fingerprint only make a checkpoint be skipped, which loses no
    /// message: a crash then redelivers more.
    last_written: Option<u64>,
}

/// A channel of a topic. Obtained from [`Topic::channel`].
#[derive(Debug)]
pub struct Channel {
    uid: u64,
    name: String,
    ephemeral: bool,
    core: Arc<TopicCore>,
    topic: Weak<Topic>,
    ctx: Arc<Context>,
    inner: Mutex<Inner>,
    changed: watch::Sender<()>,
    deleted: AtomicBool,
}

impl Channel {
    pub(crate) fn new(
        name: String,
        core: Arc<TopicCore>,
        topic: Weak<Topic>,
        ctx: Arc<Context>,
        queue: ChannelState,
    ) -> Arc<Self> {
        let uid = ctx.next_uid.fetch_add(1, Ordering::Relaxed);
        let now_ns = ctx.clock.now_ns();
        let latency = if ctx.config.e2e_percentiles.is_empty() {
            None
        } else {
            E2eLatency::new(ctx.config.e2e_window, now_ns)
        };
        let channel = Arc::new(Self {
            uid,
            ephemeral: crate::names::is_ephemeral(&name),
            name,
            core,
            topic,
            inner: Mutex::new(Inner {
                queue,
                latency,
                timer_registered: None,
                next_consumer: 1,
                last_written: None,
            }),
            changed: watch::Sender::new(()),
            deleted: AtomicBool::new(false),
            ctx: Arc::clone(&ctx),
        });
        ctx.timers.add_channel(uid, Arc::downgrade(&channel));
        {
            let mut inner = channel.inner();
            channel.reschedule(&mut inner);
        }
        channel
    }

    pub(crate) fn uid(&self) -> u64 {
        self.uid
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn topic_name(&self) -> &str {
        &self.core.name
    }

    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    /// Whether the channel was deleted (its consumers should disconnect).
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    pub fn is_paused(&self) -> bool {
        self.inner().queue.paused
    }

    pub(crate) fn inner(&self) -> MutexGuard<'_, Inner> {
        // Every update of the state completes before the lock is released.
        crate::sync::lock(&self.inner)
    }

    /// Wakes the consumers: something may have become deliverable.
    pub(crate) fn notify(&self) {
        self.changed.send_replace(());
    }

    /// Adds a consumer with the channel's default message timeout, or `msg_timeout` (from
    /// IDENTIFY), which must be within 1 s and `max_msg_timeout`.
    pub fn subscribe(
        self: &Arc<Self>,
        msg_timeout: Option<Duration>,
    ) -> Result<Consumer, EngineError> {
        if self.is_deleted() {
            return Err(EngineError::Exiting(format!("channel {}", self.name)));
        }
        let config = &self.ctx.config;
        let msg_timeout = msg_timeout.unwrap_or(config.msg_timeout);
        if msg_timeout < Duration::from_secs(1) || msg_timeout > config.max_msg_timeout {
            return Err(EngineError::InvalidMsgTimeout {
                requested: msg_timeout,
                max: config.max_msg_timeout,
            });
        }
        let mut inner = self.inner();
        let id = inner.next_consumer;
        inner.next_consumer += 1;
        inner.queue.add_consumer(id, duration_ns(msg_timeout));
        let changed = self.changed.subscribe();
        Ok(Consumer { channel: Arc::clone(self), id, changed })
    }

    /// Pauses delivery: consumers get nothing until [`Channel::unpause`]. Persisted at once.
    pub fn pause(&self) -> Result<(), EngineError> {
        self.set_paused(true)
    }

    pub fn unpause(&self) -> Result<(), EngineError> {
        self.set_paused(false)?;
        self.notify();
        Ok(())
    }

    fn set_paused(&self, paused: bool) -> Result<(), EngineError> {
        self.inner().queue.paused = paused;
        self.persist_now()
    }

    /// Drops every message of the channel: unread, requeued, in flight and deferred (NSQ's
    /// `/channel/empty`). Persisted at once.
    pub fn empty(&self) -> Result<(), EngineError> {
        {
            let mut inner = self.inner();
            inner.queue.empty(self.core.log.next_offset());
            self.reschedule(&mut inner);
        }
        self.persist_now()
    }

    /// Checkpoints this channel now (pause and empty are not left to the next interval).
    fn persist_now(&self) -> Result<(), EngineError> {
        match self.topic.upgrade() {
            Some(topic) => topic.checkpoint_channel(self),
            None => Ok(()),
        }
    }

    /// Fires due timeouts and deferred deliveries, re-arms the timer, wakes consumers.
    pub(crate) fn fire_timers(&self) {
        let now_ns = self.ctx.clock.now_ns();
        let moved = {
            let mut inner = self.inner();
            inner.timer_registered = None;
            let moved = inner.queue.fire_timers(now_ns);
            self.reschedule(&mut inner);
            moved
        };
        if moved > 0 {
            self.notify();
        }
    }

    /// Registers the earliest deadline with the engine's timer when it moved earlier.
    fn reschedule(&self, inner: &mut Inner) {
        if let Some(at_ns) = inner.queue.next_timer_ns()
            && inner.timer_registered.is_none_or(|registered| at_ns < registered)
        {
            inner.timer_registered = Some(at_ns);
            self.ctx.timers.register(self.uid, at_ns);
        }
    }

    /// Writes this channel's checkpoint, limited to offsets below `synced`, unless it is what
    /// was written last. Returns the checkpointed floor.
    pub(crate) fn checkpoint(&self, meta: &MetaStore, synced: u64) -> Result<u64, EngineError> {
        let snapshot = self.inner().queue.snapshot(synced);
        let floor = snapshot.record.floor;
        let written = fingerprint(&snapshot.record);
        let unchanged = !snapshot.clear_deferred
            && snapshot.deferred.is_empty()
            && self.inner().last_written == Some(written);
        if unchanged {
            return Ok(floor);
        }
        match write_snapshot(meta, &self.core.name, &self.name, &snapshot) {
            Ok(()) => {
                self.inner().last_written = Some(written);
                Ok(floor)
            }
            Err(error) => {
                self.inner().queue.snapshot_failed(&snapshot);
                Err(error)
            }
        }
    }

    /// Makes the next checkpoint write everything (the store lost what was written before).
    pub(crate) fn forget_written(&self) {
        let mut inner = self.inner();
        inner.last_written = None;
        inner.queue.mark_all_unwritten();
    }

    /// Drops the unread messages in `range` (the queue of a paused topic being emptied).
    pub(crate) fn skip(&self, range: std::ops::Range<u64>) {
        self.inner().queue.skip(range);
    }

    pub(crate) fn floor(&self) -> u64 {
        self.inner().queue.floor()
    }

    pub(crate) fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
        self.ctx.timers.remove_channel(self.uid);
        self.notify();
    }

    /// The channel's end-to-end latency samples in the window, if measured.
    pub(crate) fn latency_window(&self) -> Option<hdrhistogram::Histogram<u64>> {
        let now_ns = self.ctx.clock.now_ns();
        self.inner().latency.as_mut().map(|latency| latency.window(now_ns))
    }

    /// Counters of the channel and its consumers.
    pub fn stats(&self) -> ChannelStats {
        let now_ns = self.ctx.clock.now_ns();
        let end = self.core.log.next_offset().min(self.core.read_limit());
        let mut inner = self.inner();
        let percentiles = &self.ctx.config.e2e_percentiles;
        let e2e_processing_latency =
            inner.latency.as_mut().map(|latency| latency.quantiles(percentiles, now_ns));
        let queue = &inner.queue;
        let mut consumers: Vec<ConsumerStats> = queue
            .consumers
            .iter()
            .map(|(&id, c)| ConsumerStats {
                id,
                ready_count: c.ready_count,
                in_flight_count: c.in_flight,
                message_count: c.message_count,
                finish_count: c.finish_count,
                requeue_count: c.requeue_count,
                timeout_count: c.timeout_count,
            })
            .collect();
        consumers.sort_unstable_by_key(|c| c.id);
        let depth = queue.depth(end);
        ChannelStats {
            name: self.name.clone(),
            ephemeral: self.ephemeral,
            paused: queue.paused,
            depth,
            backend_depth: depth,
            in_flight_count: queue.in_flight_count(),
            deferred_count: queue.deferred_count(),
            message_count: queue.message_count(end),
            requeue_count: queue.counters.requeue_count,
            timeout_count: queue.counters.timeout_count,
            client_count: consumers.len() as u64,
            consumers,
            floor: queue.floor(),
            next_read: queue.next_read(),
            e2e_processing_latency,
        }
    }

    fn remove_consumer(&self, id: ConsumerId) {
        let (moved, last) = {
            let mut inner = self.inner();
            let moved = inner.queue.remove_consumer(id);
            (moved, inner.queue.consumers.is_empty())
        };
        if moved > 0 {
            self.notify();
        }
        // NSQ: an ephemeral channel goes away with its last consumer.
        if last
            && self.ephemeral
            && !self.is_deleted()
            && let Some(topic) = self.topic.upgrade()
            && let Err(error) = topic.delete_channel(&self.name)
        {
            tracing::debug!(channel = %self.name, %error, "ephemeral channel already gone");
        }
    }

    fn with_message<T>(
        &self,
        id: &[u8],
        op: impl FnOnce(&mut Inner, u64, i64) -> Result<T, MessageError>,
    ) -> Result<T, MessageError> {
        // NSQ only length-checks IDs; one that is not ours is simply not in flight.
        let offset = parse_message_id(id).ok_or(MessageError::NotInFlight)?;
        let now_ns = self.ctx.clock.now_ns();
        let mut inner = self.inner();
        let result = op(&mut inner, offset, now_ns);
        self.reschedule(&mut inner);
        result
    }
}

/// One consumer of a channel (a subscribed connection). Dropping it requeues its in-flight
/// messages.
#[derive(Debug)]
pub struct Consumer {
    channel: Arc<Channel>,
    id: ConsumerId,
    changed: watch::Receiver<()>,
}

impl Consumer {
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn channel(&self) -> &Arc<Channel> {
        &self.channel
    }

    /// RDY: the most messages this consumer may have in flight. `0` stops delivery.
    pub fn set_ready(&self, count: u64) {
        if let Some(state) = self.channel.inner().queue.consumers.get_mut(&self.id) {
            state.ready_count = count;
        }
    }

    pub fn in_flight(&self) -> u64 {
        self.channel.inner().queue.consumers.get(&self.id).map_or(0, |c| c.in_flight)
    }

    /// Whether a message could be delivered now as far as this consumer goes: RDY above its
    /// in-flight count and the channel not paused.
    pub fn is_ready(&self) -> bool {
        let inner = self.channel.inner();
        !inner.queue.paused
            && inner.queue.consumers.get(&self.id).is_some_and(|c| c.in_flight < c.ready_count)
    }

    /// The next message for this consumer, if it is ready and one is due. The message is in
    /// flight until FIN, REQ, or its deadline.
    pub fn next_message(&self) -> Result<Option<Delivery>, EngineError> {
        let mut out = Vec::with_capacity(1);
        self.next_messages(1, &mut out)?;
        Ok(out.pop())
    }

    /// Up to `max` messages for this consumer, as [`Consumer::next_message`] would hand them
    /// out one by one, appended to `out` under one lock of the channel. Returns how many.
    pub fn next_messages(&self, max: usize, out: &mut Vec<Delivery>) -> Result<usize, EngineError> {
        let channel = &self.channel;
        if channel.is_deleted() {
            return Err(EngineError::Exiting(format!("channel {}", channel.name)));
        }
        let now_ns = channel.ctx.clock.now_ns();
        let read_limit = channel.core.read_limit();
        let mut inner = channel.inner();
        let mut taken = 0;
        let mut outcome = Ok(());
        while taken < max {
            match inner.queue.deliver(&channel.core.log, read_limit, self.id, now_ns) {
                Ok(Some(delivery)) => {
                    out.push(delivery);
                    taken += 1;
                }
                Ok(None) => break,
                Err(error) => {
                    outcome = Err(error.into());
                    break;
                }
            }
        }
        channel.reschedule(&mut inner);
        // Messages taken before a read error are in flight: they are handed out, not lost.
        if taken > 0 { Ok(taken) } else { outcome.map(|()| 0) }
    }

    /// FIN: the message is done.
    pub fn finish(&self, id: &[u8]) -> Result<(), MessageError> {
        self.channel
            .with_message(id, |inner, offset, now_ns| self.finish_locked(inner, offset, now_ns))
    }

    /// FIN of several messages under one lock of the channel, in order, as if each were
    /// [`Consumer::finish`]ed. Calls `failed` with the index and error of each that fails.
    pub fn finish_all(
        &self,
        ids: &[[u8; crate::message_id::MESSAGE_ID_LEN]],
        mut failed: impl FnMut(usize, MessageError),
    ) {
        let now_ns = self.channel.ctx.clock.now_ns();
        let mut inner = self.channel.inner();
        for (index, id) in ids.iter().enumerate() {
            let outcome = parse_message_id(id)
                .ok_or(MessageError::NotInFlight)
                .and_then(|offset| self.finish_locked(&mut inner, offset, now_ns));
            if let Err(error) = outcome {
                failed(index, error);
            }
        }
        self.channel.reschedule(&mut inner);
    }

    fn finish_locked(
        &self,
        inner: &mut Inner,
        offset: u64,
        now_ns: i64,
    ) -> Result<(), MessageError> {
        let latency_ns = inner.queue.finish(self.id, offset, now_ns)?;
        if let Some(latency) = &mut inner.latency {
            latency.record(latency_ns, now_ns);
        }
        Ok(())
    }

    /// REQ: deliver the message again, after `delay` (clamped to `max_req_timeout`).
    pub fn requeue(&self, id: &[u8], delay: Duration) -> Result<(), MessageError> {
        let delay = delay.min(self.channel.ctx.config.max_req_timeout);
        self.channel.with_message(id, |inner, offset, now_ns| {
            inner.queue.requeue(self.id, offset, duration_ns(delay), now_ns)
        })?;
        if delay.is_zero() {
            self.channel.notify();
        }
        Ok(())
    }

    /// TOUCH: reset the message's timeout.
    pub fn touch(&self, id: &[u8]) -> Result<(), MessageError> {
        self.channel
            .with_message(id, |inner, offset, now_ns| inner.queue.touch(self.id, offset, now_ns))
    }

    /// Resolves when something may have become deliverable since the last call (or since
    /// subscribing). Check [`Consumer::next_message`] after it.
    pub async fn changed(&mut self) {
        // The sender lives as long as the channel, which this handle keeps alive.
        let _ = self.changed.changed().await;
    }

    /// Another receiver of this consumer's wake-ups, for a task that waits for messages while
    /// another one holds the consumer (a connection's reader and its message pump).
    pub fn listener(&self) -> ChangeListener {
        ChangeListener { changed: self.changed.clone() }
    }

    /// Whether there was a wake-up since the last [`Consumer::changed`]; clears it.
    pub fn take_changed(&mut self) -> bool {
        let changed = self.changed.has_changed().unwrap_or(false);
        self.changed.mark_unchanged();
        changed
    }

    pub fn stats(&self) -> Option<ConsumerStats> {
        self.channel.stats().consumers.into_iter().find(|c| c.id == self.id)
    }
}

/// Wake-ups of one consumer, apart from the [`Consumer`] handle (see [`Consumer::listener`]).
#[derive(Debug)]
pub struct ChangeListener {
    changed: watch::Receiver<()>,
}

impl ChangeListener {
    /// Resolves when something may have become deliverable since the last call.
    pub async fn changed(&mut self) {
        // The sender lives as long as the channel; when it is gone, so is every message.
        if self.changed.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.channel.remove_consumer(self.id);
    }
}

/// A 64-bit hash of a checkpoint.
fn fingerprint(record: &ChannelRecord) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    record.hash(&mut hasher);
    hasher.finish()
}

/// Writes one channel's snapshot: deferred entries first, then the channel record, so that a
/// crash between them leaves deferred entries the record's floor and finished ranges filter.
fn write_snapshot(
    meta: &MetaStore,
    topic: &str,
    channel: &str,
    snapshot: &Snapshot,
) -> Result<(), EngineError> {
    if snapshot.clear_deferred {
        meta.clear_deferred(topic, channel)?;
    }
    meta.update_deferred(topic, channel, snapshot.deferred.iter().copied())?;
    meta.put_channel(topic, channel, &snapshot.record)?;
    Ok(())
}
