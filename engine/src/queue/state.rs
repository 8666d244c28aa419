//! The state of one channel: a cursor into its topic's log and the messages it has handed out.
//!
//! # The offsets of a channel
//! Every offset of the topic is, for a channel, in exactly one of these places:
//! - below `floor`: finished (or never the channel's: it started later, or the channel was
//!   emptied);
//! - in `finished`: finished, above the floor (FIN arrives in any order);
//! - in `in_flight`: delivered to a consumer, waiting for FIN, REQ, TOUCH or its deadline;
//! - in `deferred`: waiting for its due time (REQ with a delay, or a DPUB record read before
//!   its time);
//! - in `requeued`: due for (re)delivery before anything new is read (REQ 0, a timeout, a
//!   consumer gone, a deferred message come due, or unfinished at the last checkpoint);
//! - at or above `next_read`: not read from the log yet.
//!
//! So the floor only moves over finished offsets, and a crash can only lose the knowledge that
//! something was finished (what came after the last checkpoint), never a message.
//!
//! # Order
//! Dispatch takes the smallest requeued offset first, then reads on. A consumer alone on a
//! channel with RDY 1 therefore sees the log in order, apart from redeliveries.
//!
//! # Time
//! Deadlines and due times are Unix nanoseconds from the engine's clock. Two lazily cleaned
//! min-heaps hold them; an entry counts only while it matches the message's current deadline.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::num::NonZeroU16;

// Offsets are sequential integers chosen by the log, not by clients: a fast hash suits them.
use rustc_hash::FxHashMap as HashMap;

use crate::log::{LogError, LogReader, Record, TopicLog};
use crate::meta::{ChannelRecord, DeferredRecord};

use super::flights::Flights;
use super::ranges::RangeSet;

/// Identifies a consumer within its channel.
pub(crate) type ConsumerId = u64;

/// Why FIN, REQ or TOUCH did nothing. These are outcomes, not failures of the engine: NSQ
/// answers them with a non-fatal `E_FIN_FAILED`, `E_REQ_FAILED` or `E_TOUCH_FAILED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("ID not in flight")]
    NotInFlight,
    #[error("client does not own message")]
    NotOwner,
    #[error("too many deferred messages on the channel")]
    DeferredFull,
}

/// A message handed to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub offset: u64,
    /// The NSQ message ID: the offset as 16 lower-case hex digits.
    pub id: [u8; crate::message_id::MESSAGE_ID_LEN],
    /// Publish time, Unix nanoseconds.
    pub timestamp_ns: i64,
    /// Deliveries so far, this one included.
    pub attempts: u16,
    pub body: bytes::Bytes,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    consumer: ConsumerId,
    deadline_ns: i64,
    delivered_ns: i64,
    timestamp_ns: i64,
    /// Deliveries so far, this one included (kept here, not in `attempts`, while in flight).
    /// Never zero, which lets an empty slot of [`Flights`] cost nothing.
    attempts: NonZeroU16,
}

/// A consumer as its channel sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ConsumerState {
    pub(crate) msg_timeout_ns: i64,
    pub(crate) ready_count: u64,
    pub(crate) in_flight: u64,
    pub(crate) message_count: u64,
    pub(crate) finish_count: u64,
    pub(crate) requeue_count: u64,
    pub(crate) timeout_count: u64,
}

/// Limits that do not change while a channel lives.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_msg_timeout_ns: i64,
    pub(crate) max_deferred: u64,
}

/// What a checkpoint writes for a channel.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) record: ChannelRecord,
    /// Remove every deferred entry before applying `deferred` (the channel was emptied).
    pub(crate) clear_deferred: bool,
    pub(crate) deferred: Vec<(u64, Option<DeferredRecord>)>,
}

/// Counters for stats.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counters {
    pub(crate) message_count: u64,
    pub(crate) requeue_count: u64,
    pub(crate) timeout_count: u64,
}

/// Offsets with a time attached, earliest first; stale entries are skipped by the owner.
type TimeHeap = BinaryHeap<Reverse<(i64, u64)>>;

#[derive(Debug)]
pub(crate) struct ChannelState {
    limits: Limits,
    floor: u64,
    next_read: u64,
    finished: RangeSet,
    requeued: RangeSet,
    in_flight: Flights<InFlight>,
    in_flight_times: TimeHeap,
    deferred: HashMap<u64, i64>,
    deferred_times: TimeHeap,
    /// Delivery attempts of unfinished messages that were delivered at least once and are not
    /// in flight (an in-flight message carries its count in `in_flight`).
    attempts: HashMap<u64, u16>,
    /// Deferred entries changed since the last checkpoint.
    deferred_dirty: HashMap<u64, ()>,
    deferred_cleared: bool,
    reader: Option<LogReader>,
    /// A record read past the read limit (a paused topic), kept for later.
    held: Option<Record>,
    pub(crate) consumers: HashMap<ConsumerId, ConsumerState>,
    pub(crate) paused: bool,
    pub(crate) counters: Counters,
}

impl ChannelState {
    /// A new channel that starts reading at `start`.
    pub(crate) fn new(limits: Limits, start: u64) -> Self {
        Self {
            limits,
            floor: start,
            next_read: start,
            finished: RangeSet::default(),
            requeued: RangeSet::default(),
            in_flight: Flights::default(),
            in_flight_times: TimeHeap::new(),
            deferred: HashMap::default(),
            deferred_times: TimeHeap::new(),
            attempts: HashMap::default(),
            deferred_dirty: HashMap::default(),
            deferred_cleared: false,
            reader: None,
            held: None,
            consumers: HashMap::default(),
            paused: false,
            counters: Counters::default(),
        }
    }

    /// A channel as its checkpoint left it, fitted to the log as it is now: whatever was read
    /// but not finished or deferred is due again.
    pub(crate) fn restore(
        limits: Limits,
        record: &ChannelRecord,
        deferred: impl IntoIterator<Item = (u64, DeferredRecord)>,
        log: &TopicLog,
    ) -> Self {
        let stats = log.stats();
        let next_read = record.next_read.min(stats.next_offset);
        let floor = record.floor.max(stats.oldest_offset).min(next_read);
        let mut state = Self::new(limits, floor);
        state.next_read = next_read;
        state.paused = record.paused;
        state.finished = record.finished.iter().map(|&(start, end)| start..end).collect();
        state.finished.remove_below(floor);
        state.finished.remove_from(stats.next_offset);
        for (offset, entry) in deferred {
            if offset >= floor && offset < next_read && !state.finished.contains(offset) {
                state.deferred.insert(offset, entry.due_ns);
                state.deferred_times.push(Reverse((entry.due_ns, offset)));
                if entry.attempts > 0 {
                    state.attempts.insert(offset, entry.attempts);
                }
            }
        }
        for &(offset, attempts) in &record.attempts {
            if offset >= floor && offset < next_read {
                state.attempts.entry(offset).or_insert(attempts);
            }
        }
        // Everything read and neither finished nor deferred was in flight or requeued.
        state.requeued.insert_range(floor..next_read);
        for range in state.finished.iter() {
            state.requeued.remove_range(range);
        }
        for &offset in state.deferred.keys() {
            state.requeued.remove(offset);
        }
        // Messages delivered once, as ranges; only those still due count.
        for &(start, end) in &record.once {
            for offset in start.max(floor)..end.min(next_read) {
                if state.requeued.contains(offset) {
                    state.attempts.entry(offset).or_insert(1);
                }
            }
        }
        state.advance_floor();
        state
    }

    pub(crate) fn floor(&self) -> u64 {
        self.floor
    }

    pub(crate) fn next_read(&self) -> u64 {
        self.next_read
    }

    pub(crate) fn in_flight_count(&self) -> u64 {
        self.in_flight.len() as u64
    }

    pub(crate) fn deferred_count(&self) -> u64 {
        self.deferred.len() as u64
    }

    /// Messages that reached the channel since it was loaded: read ones, and those waiting to
    /// be read up to `end` (NSQ counts a message when its topic hands it to the channel).
    pub(crate) fn message_count(&self, end: u64) -> u64 {
        self.counters.message_count + end.saturating_sub(self.next_read)
    }

    /// Messages ready for delivery: requeued ones and those not read yet, up to `end`.
    /// Records read ahead and held (past a paused topic's limit) are still at or after
    /// `next_read`, so they are counted once, when they are below `end`; offsets already
    /// finished past `next_read` (dropped by `/topic/empty`) are not counted.
    pub(crate) fn depth(&self, end: u64) -> u64 {
        let unread = end.saturating_sub(self.next_read);
        let skipped = if unread > 0 { self.finished.count_in(self.next_read..end) } else { 0 };
        unread - skipped.min(unread) + self.requeued.len()
    }

    /// The next message for `consumer`, if it is ready for one and one is due: requeued
    /// messages first, then the log from `next_read`, not past `read_limit`.
    pub(crate) fn deliver(
        &mut self,
        log: &TopicLog,
        read_limit: u64,
        consumer: ConsumerId,
        now_ns: i64,
    ) -> Result<Option<Delivery>, LogError> {
        let Some(state) = self.consumers.get(&consumer) else {
            return Ok(None);
        };
        if self.paused || state.in_flight >= state.ready_count {
            return Ok(None);
        }
        let msg_timeout_ns = state.msg_timeout_ns;
        let record = loop {
            if let Some(offset) = self.requeued.pop_first() {
                match log.read_at(offset)? {
                    // Unfinished DPUB records come back here after a crash: still not due.
                    Some(record) if record.deliver_at_ns > now_ns => {
                        self.defer(offset, record.deliver_at_ns);
                    }
                    Some(record) => break record,
                    // Gone: quarantined, or removed by a repair. Nothing is left to deliver,
                    // and no count to keep.
                    None => {
                        self.attempts.remove(&offset);
                        self.mark_finished(offset);
                    }
                }
            } else {
                match self.read_next(log, read_limit, now_ns)? {
                    Some(record) => break record,
                    None => return Ok(None),
                }
            }
        };
        let offset = record.offset;
        let attempts = NonZeroU16::MIN.saturating_add(self.attempts.remove(&offset).unwrap_or(0));
        let deadline_ns = now_ns.saturating_add(msg_timeout_ns);
        let flight = InFlight {
            consumer,
            deadline_ns,
            delivered_ns: now_ns,
            timestamp_ns: record.timestamp_ns,
            attempts,
        };
        self.in_flight.insert(offset, flight);
        self.in_flight_times.push(Reverse((deadline_ns, offset)));
        if let Some(state) = self.consumers.get_mut(&consumer) {
            state.in_flight += 1;
            state.message_count += 1;
        }
        Ok(Some(Delivery {
            offset,
            id: crate::message_id::message_id(offset),
            timestamp_ns: record.timestamp_ns,
            attempts: attempts.get(),
            body: record.body,
        }))
    }

    /// Reads the next record for delivery from the log, deferring those not yet due.
    fn read_next(
        &mut self,
        log: &TopicLog,
        read_limit: u64,
        now_ns: i64,
    ) -> Result<Option<Record>, LogError> {
        loop {
            // Deferred records are held in memory: at the limit, stop reading until some are due.
            if self.deferred.len() as u64 >= self.limits.max_deferred {
                return Ok(None);
            }
            let record = match self.held.take() {
                Some(record) => record,
                None => {
                    if let Some(range) = self.finished.range_of(self.next_read) {
                        self.next_read = range.end;
                        self.reader = None;
                    }
                    let next_read = self.next_read;
                    let reader = self.reader.get_or_insert_with(|| log.reader(next_read));
                    match reader.next()? {
                        Some(record) => record,
                        None => return Ok(None),
                    }
                }
            };
            if record.offset >= read_limit {
                self.held = Some(record);
                return Ok(None);
            }
            let offset = record.offset;
            if offset > self.next_read {
                // A gap: records lost to damage or removed. Nothing there to deliver.
                self.finished.insert_range(self.next_read..offset);
            }
            self.next_read = self.next_read.max(offset + 1);
            self.advance_floor();
            if offset < self.floor || self.finished.contains(offset) {
                continue;
            }
            self.counters.message_count += 1;
            if record.deliver_at_ns > now_ns {
                self.defer(offset, record.deliver_at_ns);
                continue;
            }
            return Ok(Some(record));
        }
    }

    fn take_in_flight(
        &mut self,
        consumer: ConsumerId,
        offset: u64,
    ) -> Result<InFlight, MessageError> {
        match self.in_flight.get(offset) {
            None => Err(MessageError::NotInFlight),
            Some(flight) if flight.consumer != consumer => Err(MessageError::NotOwner),
            Some(_) => {
                let flight = self.in_flight.remove(offset).ok_or(MessageError::NotInFlight)?;
                if let Some(state) = self.consumers.get_mut(&consumer) {
                    state.in_flight = state.in_flight.saturating_sub(1);
                }
                self.compact_times();
                Ok(flight)
            }
        }
    }

    /// FIN: returns the message's end-to-end latency (now − publish time).
    pub(crate) fn finish(
        &mut self,
        consumer: ConsumerId,
        offset: u64,
        now_ns: i64,
    ) -> Result<i64, MessageError> {
        let flight = self.take_in_flight(consumer, offset)?;
        if let Some(state) = self.consumers.get_mut(&consumer) {
            state.finish_count += 1;
        }
        self.mark_finished(offset);
        Ok(now_ns.saturating_sub(flight.timestamp_ns))
    }

    /// REQ: due again at once (`delay_ns <= 0`) or after the delay.
    pub(crate) fn requeue(
        &mut self,
        consumer: ConsumerId,
        offset: u64,
        delay_ns: i64,
        now_ns: i64,
    ) -> Result<(), MessageError> {
        if delay_ns > 0 && self.deferred.len() as u64 >= self.limits.max_deferred {
            // Checked first: a refused REQ leaves the message in flight.
            return match self.in_flight.get(offset) {
                Some(flight) if flight.consumer == consumer => Err(MessageError::DeferredFull),
                Some(_) => Err(MessageError::NotOwner),
                None => Err(MessageError::NotInFlight),
            };
        }
        let flight = self.take_in_flight(consumer, offset)?;
        self.attempts.insert(offset, flight.attempts.get());
        if let Some(state) = self.consumers.get_mut(&consumer) {
            state.requeue_count += 1;
        }
        self.counters.requeue_count += 1;
        if delay_ns > 0 {
            self.defer(offset, now_ns.saturating_add(delay_ns));
        } else {
            self.requeued.insert(offset);
        }
        Ok(())
    }

    /// TOUCH: the deadline moves to now + the consumer's timeout, but never past delivery time +
    /// the maximum message timeout.
    pub(crate) fn touch(
        &mut self,
        consumer: ConsumerId,
        offset: u64,
        now_ns: i64,
    ) -> Result<(), MessageError> {
        let msg_timeout_ns = self.consumers.get(&consumer).map_or(0, |c| c.msg_timeout_ns);
        let max_msg_timeout_ns = self.limits.max_msg_timeout_ns;
        let flight = match self.in_flight.get_mut(offset) {
            None => return Err(MessageError::NotInFlight),
            Some(flight) if flight.consumer != consumer => return Err(MessageError::NotOwner),
            Some(flight) => flight,
        };
        let limit = flight.delivered_ns.saturating_add(max_msg_timeout_ns);
        let deadline_ns = now_ns.saturating_add(msg_timeout_ns).min(limit);
        if deadline_ns != flight.deadline_ns {
            flight.deadline_ns = deadline_ns;
            self.in_flight_times.push(Reverse((deadline_ns, offset)));
            self.compact_times();
        }
        Ok(())
    }

    /// Requeues timed-out messages and releases due deferred ones. Returns how many moved.
    pub(crate) fn fire_timers(&mut self, now_ns: i64) -> u64 {
        let mut moved = 0;
        while let Some(&Reverse((deadline_ns, offset))) = self.in_flight_times.peek() {
            if deadline_ns > now_ns {
                break;
            }
            self.in_flight_times.pop();
            let Some(flight) = self.in_flight.get(offset) else { continue };
            if flight.deadline_ns != deadline_ns {
                continue;
            }
            let (consumer, attempts) = (flight.consumer, flight.attempts);
            self.in_flight.remove(offset);
            self.attempts.insert(offset, attempts.get());
            if let Some(state) = self.consumers.get_mut(&consumer) {
                state.in_flight = state.in_flight.saturating_sub(1);
                state.timeout_count += 1;
            }
            self.counters.timeout_count += 1;
            self.requeued.insert(offset);
            moved += 1;
        }
        while let Some(&Reverse((due_ns, offset))) = self.deferred_times.peek() {
            if due_ns > now_ns {
                break;
            }
            self.deferred_times.pop();
            if self.deferred.get(&offset) != Some(&due_ns) {
                continue;
            }
            self.deferred.remove(&offset);
            self.deferred_dirty.insert(offset, ());
            self.requeued.insert(offset);
            moved += 1;
        }
        moved
    }

    /// The earliest deadline or due time, if any.
    pub(crate) fn next_timer_ns(&mut self) -> Option<i64> {
        while let Some(&Reverse((deadline_ns, offset))) = self.in_flight_times.peek() {
            if self.in_flight.get(offset).is_some_and(|f| f.deadline_ns == deadline_ns) {
                break;
            }
            self.in_flight_times.pop();
        }
        while let Some(&Reverse((due_ns, offset))) = self.deferred_times.peek() {
            if self.deferred.get(&offset) == Some(&due_ns) {
                break;
            }
            self.deferred_times.pop();
        }
        let in_flight = self.in_flight_times.peek().map(|Reverse((t, _))| *t);
        let deferred = self.deferred_times.peek().map(|Reverse((t, _))| *t);
        match (in_flight, deferred) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(crate) fn add_consumer(&mut self, id: ConsumerId, msg_timeout_ns: i64) {
        self.consumers.insert(id, ConsumerState { msg_timeout_ns, ..ConsumerState::default() });
    }

    /// Removes a consumer; its in-flight messages are due again at once. Returns how many.
    pub(crate) fn remove_consumer(&mut self, id: ConsumerId) -> u64 {
        self.consumers.remove(&id);
        let owned = self.in_flight.remove_where(|f| f.consumer == id);
        for &(offset, flight) in &owned {
            self.attempts.insert(offset, flight.attempts.get());
            self.requeued.insert(offset);
        }
        self.compact_times();
        owned.len() as u64
    }

    /// Drops every message of the channel: what was unread up to `end`, requeued, in flight and
    /// deferred. Consumers stay.
    pub(crate) fn empty(&mut self, end: u64) {
        let end = end.max(self.next_read);
        // The unread messages had reached the channel: they stay counted.
        self.counters.message_count += end - self.next_read;
        self.floor = end;
        self.next_read = end;
        self.finished.clear();
        self.requeued.clear();
        self.in_flight.clear();
        self.in_flight_times.clear();
        self.deferred.clear();
        self.deferred_times.clear();
        self.deferred_dirty.clear();
        self.deferred_cleared = true;
        self.attempts.clear();
        self.reader = None;
        self.held = None;
        for state in self.consumers.values_mut() {
            state.in_flight = 0;
        }
    }

    /// Drops the unread messages in `range` (a paused topic's queue being emptied).
    pub(crate) fn skip(&mut self, range: std::ops::Range<u64>) {
        let start = range.start.max(self.next_read);
        if start < range.end {
            self.finished.insert_range(start..range.end);
            if self.held.as_ref().is_some_and(|r| r.offset < range.end) {
                self.held = None;
            }
        }
    }

    /// The checkpoint of this channel, limited to offsets below `synced` (durable in the log).
    /// Marks the deferred changes it carries as written.
    pub(crate) fn snapshot(&mut self, synced: u64) -> Snapshot {
        let next_read = self.next_read.min(synced);
        let floor = self.floor.min(next_read);
        // Finished ranges past `next_read` (dropped by `/topic/empty` on a paused topic) are
        // kept too, up to what is synced: a record a crash could take back must not be marked.
        let finished = self
            .finished
            .iter()
            .filter(|r| r.start < synced)
            .map(|r| (r.start, r.end.min(synced)))
            .collect();
        // Counts of 1, nearly every message in flight, go in as ranges: the record stays small
        // however many messages are in flight. Counts of 0 (never delivered) are left out.
        let mut attempts = Vec::new();
        let mut once = Vec::new();
        let in_flight = self.in_flight.iter().map(|(o, f)| (o, f.attempts.get()));
        let not_in_flight = self
            .attempts
            .iter()
            .filter(|(o, _)| !self.deferred.contains_key(o))
            .map(|(&o, &a)| (o, a));
        for (offset, count) in in_flight.chain(not_in_flight) {
            match count {
                _ if offset >= next_read => {}
                0 => {}
                1 => once.push(offset),
                _ => attempts.push((offset, count)),
            }
        }
        attempts.sort_unstable();
        once.sort_unstable();
        let once = consecutive_ranges(&once);
        let mut deferred = Vec::new();
        self.deferred_dirty.retain(|&offset, ()| {
            if offset >= next_read {
                return true;
            }
            let entry = self.deferred.get(&offset).map(|&due_ns| DeferredRecord {
                due_ns,
                attempts: self.attempts.get(&offset).copied().unwrap_or(0),
            });
            deferred.push((offset, entry));
            false
        });
        let clear_deferred = std::mem::take(&mut self.deferred_cleared);
        let record =
            ChannelRecord { paused: self.paused, floor, next_read, finished, attempts, once };
        Snapshot { record, clear_deferred, deferred }
    }

    /// Makes the next snapshot carry every deferred entry, after clearing the stored ones.
    pub(crate) fn mark_all_unwritten(&mut self) {
        self.deferred_cleared = true;
        for &offset in self.deferred.keys() {
            self.deferred_dirty.insert(offset, ());
        }
    }

    /// Undoes the bookkeeping of a snapshot whose write failed, so the next one carries it.
    pub(crate) fn snapshot_failed(&mut self, snapshot: &Snapshot) {
        self.deferred_cleared |= snapshot.clear_deferred;
        for &(offset, _) in &snapshot.deferred {
            self.deferred_dirty.insert(offset, ());
        }
    }

    fn defer(&mut self, offset: u64, due_ns: i64) {
        self.deferred.insert(offset, due_ns);
        self.deferred_times.push(Reverse((due_ns, offset)));
        self.deferred_dirty.insert(offset, ());
    }

    fn mark_finished(&mut self, offset: u64) {
        if offset >= self.floor {
            self.finished.insert(offset);
            self.advance_floor();
        }
    }

    fn advance_floor(&mut self) {
        if let Some(range) = self.finished.range_of(self.floor) {
            self.floor = range.end;
            self.finished.remove_below(self.floor);
        }
    }

    /// Rebuilds the in-flight heap when stale entries outnumber live ones: those of TOUCH, and
    /// those of messages that left flight behind one that stays (they leave the top only after
    /// it).
    ///
    /// The new heap has room for the stale entries that make it be rebuilt next time, so it
    /// stays in one allocation of about twice the live entries.
    fn compact_times(&mut self) {
        let live = self.in_flight.len();
        if self.in_flight_times.len() > live + live / 2 + 1024 {
            let mut times = Vec::with_capacity(2 * live + 1024);
            times.extend(self.in_flight.iter().map(|(o, f)| Reverse((f.deadline_ns, o))));
            self.in_flight_times = BinaryHeap::from(times);
        }
    }
}

/// Sorted offsets as ranges `[start, end)` of consecutive ones.
fn consecutive_ranges(sorted: &[u64]) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for &offset in sorted {
        match ranges.last_mut() {
            Some((_, end)) if *end == offset => *end += 1,
            _ => ranges.push((offset, offset + 1)),
        }
    }
    ranges
}
