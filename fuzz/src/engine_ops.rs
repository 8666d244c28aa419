//! `engine_ops`: the engine under an arbitrary sequence of operations on the simulated storage,
//! with I/O failures planted at the Nth operation, checked against a model after every step and
//! after every crash (DESIGN.md §3.4).
//!
//! The engine runs as the engine's model tests run it (`engine/tests/common/mod.rs`): on
//! [`SimStorage`], an in-memory [`MemoryMeta`] and a [`ManualClock`], with `mem_queue_size` 0 and
//! [`SyncPolicy::Always`] (every acknowledged publish is fsynced), small segments, one topic and
//! up to three channels. The input decodes (with `arbitrary`) to a [`Scenario`]: publishes (PUB,
//! MPUB, DPUB, refused ones included), channel creation, consumers (subscribe, take, FIN, REQ,
//! TOUCH, FIN/REQ/TOUCH of IDs they do not own, disconnect), time, checkpoints, clean reopens,
//! crashes (power loss, process kill, torn writes; the meta store keeping any prefix of its
//! unflushed batches), EIO or ENOSPC at the Nth storage operation, a full disk, and a failure of
//! the Nth meta store write.
//!
//! Checked, against the model:
//! - every delivery is of a message whose publish was attempted and not refused, its body,
//!   timestamp, offset and ID intact; never one whose publish failed with an error that says
//!   nothing was kept; never one in flight elsewhere on the channel, finished durably, or not
//!   yet due by its DPUB time (nor its REQ time, until a crash may forget that);
//! - a channel created later never gets a message published before it;
//! - a ready consumer is never refused while an acknowledged message is due on its channel;
//! - FIN, REQ and TOUCH of an owned message succeed; of any other ID they fail;
//! - with nothing planted, nothing fails; with I/O failures planted, a publish fails only with
//!   an I/O error while a failure is pending (or a poisoned log after one fired), and writing
//!   resumes once nothing is pending;
//! - opening never fails except on a planted failure, and then succeeds once it is cleared;
//!   every channel created survives, none appears from nowhere;
//! - after every crash and at the end, once time passes every DPUB and REQ delay: every message
//!   whose publish returned Ok and that was not finished on a channel is delivered again on that
//!   channel, and nothing is delivered twice in one drain.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use engine::clock::{Clock, ManualClock};
use engine::log::{LogConfig, LogError};
use engine::message_id::{message_id, parse_message_id};
use engine::meta::{MemoryMeta, MetaStore};
use engine::storage::{CrashKeep, SimStorage};
use engine::{Consumer, Delivery, Engine, EngineConfig, EngineError, SyncPolicy, Topic};

/// Longest input taken.
pub const MAX_LEN: usize = 4096;
/// Most operations run from one input.
const MAX_OPS: usize = 96;
/// Most messages published from one input.
const MAX_MESSAGES: usize = 384;
/// Consumer slots.
const SLOTS: usize = 4;
/// The slot of the consumer a drain uses.
const DRAIN_SLOT: usize = SLOTS;
const CHANNELS: [&str; 3] = ["a", "b", "c"];
const TOPIC: &str = "t";
const DATA: &str = "/data";
const MAX_BODY_BYTES: u32 = 300;
const MSG_TIMEOUT_NS: i64 = 60_000_000_000;
const MAX_MSG_TIMEOUT_NS: i64 = 15 * 60_000_000_000;
const MAX_REQ_TIMEOUT: Duration = Duration::from_secs(3600);
/// Past every DPUB and REQ delay.
const DRAIN_ADVANCE: Duration = Duration::from_secs(3 * 3600);

/// What an input decodes to: two setup fields, then operations until the input ends (each
/// decoded by `arbitrary`'s derive; see [`scenario`] and [`encode`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// Segment size above the header: small, so that segments roll.
    pub segment_bytes: u16,
    /// Channels created before anything else: 1 to 3.
    pub initial_channels: u8,
    pub ops: Vec<Op>,
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// PUB (one) or MPUB (up to four); bit 15 of `size` makes one body too large.
    Publish {
        count: u8,
        size: u16,
    },
    /// DPUB; a defer over `max_req_timeout` is refused.
    DeferredPublish {
        size: u8,
        defer_ms: u32,
    },
    CreateChannel {
        channel: u8,
    },
    Subscribe {
        slot: u8,
        channel: u8,
        ready: u8,
    },
    Take {
        slot: u8,
    },
    Fin {
        slot: u8,
        pick: u8,
    },
    Req {
        slot: u8,
        pick: u8,
        delay_ms: u32,
    },
    Touch {
        slot: u8,
        pick: u8,
    },
    /// FIN, REQ or TOUCH of an ID the slot does not own: another consumer's, or any bytes.
    Foreign {
        slot: u8,
        pick: u8,
        id: [u8; 16],
        action: u8,
    },
    Disconnect {
        slot: u8,
    },
    Advance {
        ms: u32,
    },
    Checkpoint,
    Reopen,
    Crash {
        kind: CrashKind,
        meta_keep: u8,
    },
    /// EIO, or ENOSPC, at the `nth` storage operation from now.
    Fault {
        nth: u8,
        disk_full: bool,
    },
    /// The `nth` meta store write from now fails.
    MetaFault {
        nth: u8,
    },
    /// The disk fills `free` bytes from now.
    DiskFull {
        free: u16,
    },
    DiskSpace,
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashKind {
    /// Unsynced writes are lost.
    PowerLoss,
    /// Every write stays (kill -9).
    ProcessKill,
    /// Each file keeps `keep` of its unsynced writes, the next one cut at `torn` bytes.
    Torn { keep: u8, torn: u16 },
}

/// Whether to print each step (`NSQ_FUZZ_TRACE=1`), to follow a failing input.
fn tracing() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("NSQ_FUZZ_TRACE").is_some())
}

macro_rules! trace {
    ($($arg:tt)*) => {
        if tracing() {
            eprintln!($($arg)*);
        }
    };
}

/// Decodes an input into its scenario: the setup fields, then one [`Op`] after another until
/// the input ends (at most [`MAX_OPS`]).
pub fn scenario(data: &[u8]) -> Option<Scenario> {
    let mut u = Unstructured::new(data);
    let segment_bytes = u16::arbitrary(&mut u).ok()?;
    let initial_channels = u8::arbitrary(&mut u).ok()?;
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < MAX_OPS {
        ops.push(Op::arbitrary(&mut u).ok()?);
    }
    Some(Scenario { segment_bytes, initial_channels, ops })
}

/// The bytes [`scenario`] decodes to `scenario`, as `arbitrary` 1.x reads them (integers
/// little-endian, a `bool` from a byte's low bit, an enum's variant from a `u32`), for the seed
/// generator to write chosen scenarios. It checks the round trip.
pub fn encode(chosen: &Scenario) -> Vec<u8> {
    /// The `u32` from which the derive picks variant `index` of `count`.
    fn variant(out: &mut Vec<u8>, index: u64, count: u64) {
        let tag = u32::try_from((index << 32).div_ceil(count)).expect("a variant index");
        out.extend_from_slice(&tag.to_le_bytes());
    }
    const OPS: u64 = 18;
    let mut out = Vec::new();
    out.extend_from_slice(&chosen.segment_bytes.to_le_bytes());
    out.push(chosen.initial_channels);
    for op in &chosen.ops {
        match *op {
            Op::Publish { count, size } => {
                variant(&mut out, 0, OPS);
                out.push(count);
                out.extend_from_slice(&size.to_le_bytes());
            }
            Op::DeferredPublish { size, defer_ms } => {
                variant(&mut out, 1, OPS);
                out.push(size);
                out.extend_from_slice(&defer_ms.to_le_bytes());
            }
            Op::CreateChannel { channel } => {
                variant(&mut out, 2, OPS);
                out.push(channel);
            }
            Op::Subscribe { slot, channel, ready } => {
                variant(&mut out, 3, OPS);
                out.extend_from_slice(&[slot, channel, ready]);
            }
            Op::Take { slot } => {
                variant(&mut out, 4, OPS);
                out.push(slot);
            }
            Op::Fin { slot, pick } => {
                variant(&mut out, 5, OPS);
                out.extend_from_slice(&[slot, pick]);
            }
            Op::Req { slot, pick, delay_ms } => {
                variant(&mut out, 6, OPS);
                out.extend_from_slice(&[slot, pick]);
                out.extend_from_slice(&delay_ms.to_le_bytes());
            }
            Op::Touch { slot, pick } => {
                variant(&mut out, 7, OPS);
                out.extend_from_slice(&[slot, pick]);
            }
            Op::Foreign { slot, pick, id, action } => {
                variant(&mut out, 8, OPS);
                out.extend_from_slice(&[slot, pick]);
                out.extend_from_slice(&id);
                out.push(action);
            }
            Op::Disconnect { slot } => {
                variant(&mut out, 9, OPS);
                out.push(slot);
            }
            Op::Advance { ms } => {
                variant(&mut out, 10, OPS);
                out.extend_from_slice(&ms.to_le_bytes());
            }
            Op::Checkpoint => variant(&mut out, 11, OPS),
            Op::Reopen => variant(&mut out, 12, OPS),
            Op::Crash { kind, meta_keep } => {
                variant(&mut out, 13, OPS);
                match kind {
                    CrashKind::PowerLoss => variant(&mut out, 0, 3),
                    CrashKind::ProcessKill => variant(&mut out, 1, 3),
                    CrashKind::Torn { keep, torn } => {
                        variant(&mut out, 2, 3);
                        out.push(keep);
                        out.extend_from_slice(&torn.to_le_bytes());
                    }
                }
                out.push(meta_keep);
            }
            Op::Fault { nth, disk_full } => {
                variant(&mut out, 14, OPS);
                out.extend_from_slice(&[nth, u8::from(disk_full)]);
            }
            Op::MetaFault { nth } => {
                variant(&mut out, 15, OPS);
                out.push(nth);
            }
            Op::DiskFull { free } => {
                variant(&mut out, 16, OPS);
                out.extend_from_slice(&free.to_le_bytes());
            }
            Op::DiskSpace => variant(&mut out, 17, OPS),
        }
    }
    assert_eq!(scenario(&out).as_ref(), Some(chosen), "the encoding decodes to another scenario");
    out
}

pub fn run(data: &[u8]) {
    if data.len() > MAX_LEN {
        return;
    }
    let Some(scenario) = scenario(data) else { return };
    trace!(
        "segment_bytes {} initial_channels {}",
        scenario.segment_bytes, scenario.initial_channels
    );
    let mut world = World::new(&scenario);
    for op in &scenario.ops {
        trace!("{op:?}");
        world.step(*op);
        if tracing() {
            let files: Vec<String> = world
                .storage
                .file_paths()
                .iter()
                .filter(|path| path.extension().is_some_and(|e| e == "seg"))
                .map(|path| {
                    let len = world.storage.contents(path).map_or(0, |c| c.len());
                    format!(
                        "{}:{len}",
                        path.file_stem().map_or_else(String::new, |s| s
                            .to_string_lossy()
                            .trim_start_matches('0')
                            .to_owned())
                    )
                })
                .collect();
            trace!("  storage ops {}, segments {files:?}", world.storage.ops());
        }
    }
    trace!("finish");
    world.finish();
}

/// What became of a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Published {
    /// Returned Ok: durable.
    Acked,
    /// Failed in a way that may have kept it (a poisoned log).
    Maybe,
    /// Refused, or failed with an error that says nothing of the batch was kept.
    NotKept,
}

#[derive(Debug)]
struct Msg {
    len: usize,
    published: Published,
    /// The offset publish returned (acknowledged messages).
    offset: Option<u64>,
    timestamp_ns: i64,
    /// DPUB time; 0 when not deferred.
    dpub_ns: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Pending,
    InFlight {
        slot: usize,
        deadline_ns: i64,
        delivered_ns: i64,
        offset: u64,
    },
    /// Finished after the last checkpoint.
    FinVolatile,
    /// Finished before a successful checkpoint or clean close.
    FinDurable,
    /// Finished, then a crash came before a checkpoint: it may come back.
    MayReturn,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    fate: Fate,
    /// Must be delivered again after a crash unless finished.
    required: bool,
    /// Never delivered before this (DPUB time; REQ time until a crash).
    not_before_min_ns: i64,
    /// Surely deliverable from this on.
    not_before_max_ns: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Existence {
    Absent,
    Live,
    /// Its creation failed: it may exist after the next open.
    Uncertain,
}

#[derive(Debug)]
struct Chan {
    existence: Existence,
    /// Its start is unknown (it came back after a failed creation): any message published may
    /// be delivered on it.
    lenient: bool,
    /// It came back from the store's unflushed state (a reopen without a crash after a failed
    /// close): not durable until the store's flush count passes this.
    unsettled_since: Option<u64>,
    /// By message number.
    entries: BTreeMap<usize, Entry>,
}

struct Slot {
    consumer: Consumer,
    channel: usize,
    ready: u64,
}

struct World {
    storage: SimStorage,
    meta: Arc<MemoryMeta>,
    clock: Arc<ManualClock>,
    config: EngineConfig,
    engine: Option<Engine>,
    msgs: Vec<Msg>,
    chans: [Chan; 3],
    slots: [Option<Slot>; SLOTS],
    /// Storage operation numbers at which a failure is planted.
    faults: Vec<u64>,
    capacity: bool,
    /// The meta store's planted failure: calls so far and the failing one.
    meta_fault: Option<(Arc<AtomicU64>, u64)>,
    /// A planted failure fired (or the disk was limited) since the engine was opened.
    tainted: bool,
    /// Which message each acknowledged offset holds.
    offsets: BTreeMap<u64, usize>,
}

/// The body of message `n`: its number, then filler derived from it.
fn body(n: usize, len: usize) -> Vec<u8> {
    let mut body = format!("{n:06}:").into_bytes();
    let mut i = 0usize;
    while body.len() < len {
        body.push((n.wrapping_mul(31).wrapping_add(i) % 251) as u8);
        i += 1;
    }
    body
}

/// The message number a body names.
fn body_number(body: &[u8]) -> Option<usize> {
    let digits = body.get(..6)?;
    if body.get(6) != Some(&b':') || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn is_poisoned(error: &EngineError) -> bool {
    matches!(error, EngineError::Log(LogError::Poisoned { .. }))
}

impl World {
    fn new(scenario: &Scenario) -> Self {
        let config = EngineConfig {
            mem_queue_size: 0,
            log: LogConfig {
                sync: SyncPolicy::Always,
                max_bytes_per_file: 32 + 48 + u64::from(scenario.segment_bytes % 1024),
                max_body_bytes: MAX_BODY_BYTES,
                ..LogConfig::default()
            },
            max_req_timeout: MAX_REQ_TIMEOUT,
            ..EngineConfig::default()
        };
        let chan = || Chan {
            existence: Existence::Absent,
            lenient: false,
            unsettled_since: None,
            entries: BTreeMap::new(),
        };
        let mut world = Self {
            storage: SimStorage::new(),
            meta: Arc::new(MemoryMeta::new()),
            clock: Arc::new(ManualClock::default()),
            config,
            engine: None,
            msgs: Vec::new(),
            chans: [chan(), chan(), chan()],
            slots: [None, None, None, None],
            faults: Vec::new(),
            capacity: false,
            meta_fault: None,
            tainted: false,
            offsets: BTreeMap::new(),
        };
        world.open();
        let topic = world.engine().topic(TOPIC).expect("creating the topic");
        for (i, name) in
            CHANNELS.iter().enumerate().take(1 + usize::from(scenario.initial_channels % 3))
        {
            topic.channel(name).expect("creating a channel");
            world.chans[i].existence = Existence::Live;
        }
        world
    }

    fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("an open engine")
    }

    fn topic(&self) -> Arc<Topic> {
        self.engine().get_topic(TOPIC).expect("the topic exists")
    }

    fn now(&self) -> i64 {
        self.clock.now_ns()
    }

    /// Notes planted failures that fired.
    fn settle(&mut self) {
        let ops = self.storage.ops();
        let before = self.faults.len();
        self.faults.retain(|&at| at > ops);
        if self.faults.len() < before {
            self.tainted = true;
        }
        if let Some((calls, at)) = &self.meta_fault
            && calls.load(Ordering::Acquire) >= *at
        {
            self.tainted = true;
        }
        self.settle_channels();
    }

    /// Whether a planted failure may fire now.
    fn disturbed(&self) -> bool {
        let meta_pending =
            self.meta_fault.as_ref().is_some_and(|(calls, at)| calls.load(Ordering::Acquire) < *at);
        !self.faults.is_empty() || self.capacity || meta_pending
    }

    fn clear_faults(&mut self) {
        self.storage.clear_faults();
        self.storage.set_capacity(None);
        self.meta.set_io_hook(None);
        self.faults.clear();
        self.capacity = false;
        self.meta_fault = None;
    }

    fn open(&mut self) {
        let disturbed = self.disturbed();
        self.tainted = self.capacity;
        let mut attempt = 0;
        let engine = loop {
            let opened = Engine::open_with(
                DATA,
                self.config.clone(),
                Arc::new(self.storage.clone()),
                MetaStore::in_memory(Arc::clone(&self.meta)),
                self.clock.clone(),
            );
            match opened {
                Ok((engine, report)) => {
                    trace!("  opened: {:?}", report.topics);
                    break engine;
                }
                Err(error) => {
                    assert!(
                        attempt == 0 && disturbed,
                        "opening failed with no failure planted: {error}"
                    );
                    attempt += 1;
                    self.clear_faults();
                }
            }
        };
        self.engine = Some(engine);
        self.settle();
        self.resolve_channels();
    }

    /// The channels the store holds durably: what a crash that loses everything unflushed
    /// would leave.
    fn durable_channels(&self) -> BTreeSet<String> {
        let copy = Arc::new(self.meta.snapshot());
        copy.crash();
        let listed = MetaStore::in_memory(copy).channels(TOPIC).unwrap_or_default();
        listed.into_iter().map(|(name, _)| name).collect()
    }

    /// Marks channels settled once the store holds them durably.
    fn settle_channels(&mut self) {
        let flushes = self.meta.flushes();
        let due = self.chans.iter().any(|c| c.unsettled_since.is_some_and(|since| flushes > since));
        if !due {
            return;
        }
        let durable = self.durable_channels();
        for (i, chan) in self.chans.iter_mut().enumerate() {
            if chan.unsettled_since.is_some_and(|since| flushes > since) {
                chan.unsettled_since = (!durable.contains(CHANNELS[i])).then_some(flushes);
            }
        }
    }

    /// After an open: created channels are there, absent ones are not, uncertain ones are
    /// whatever the store kept. A channel the engine loaded but the store does not hold durably
    /// (it came from the store's unflushed state, on a reopen without a crash after a failed
    /// close) stays unsettled: a crash may still undo it.
    fn resolve_channels(&mut self) {
        let Some(topic) = self.engine().get_topic(TOPIC) else {
            assert!(self.msgs.is_empty() && self.live_channels().is_empty(), "the topic is gone");
            return;
        };
        let flushes = self.meta.flushes();
        let durable = self.durable_channels();
        let pending = self.meta.pending_batches() > 0;
        for (i, name) in CHANNELS.iter().enumerate() {
            let present = topic.get_channel(name).is_some();
            let is_durable = durable.contains(*name);
            let chan = &mut self.chans[i];
            match (chan.existence, present) {
                (Existence::Live, true) => {
                    if chan.unsettled_since.is_none() {
                        assert!(is_durable, "channel {name} is served but no longer stored");
                    }
                    chan.unsettled_since = (!is_durable).then_some(flushes);
                }
                (Existence::Live, false) => {
                    assert!(
                        chan.unsettled_since.is_some(),
                        "channel {name} was created and is gone"
                    );
                    chan.existence = if is_durable || pending {
                        Existence::Uncertain
                    } else {
                        Existence::Absent
                    };
                    chan.unsettled_since = None;
                    chan.entries.clear();
                }
                (Existence::Absent, _) => {
                    assert!(!present, "channel {name} appeared, never created");
                }
                (Existence::Uncertain, true) => {
                    chan.existence = Existence::Live;
                    chan.lenient = true;
                    chan.unsettled_since = (!is_durable).then_some(flushes);
                }
                (Existence::Uncertain, false) => {
                    if !is_durable && !pending {
                        chan.existence = Existence::Absent;
                    }
                }
            }
        }
    }

    fn live_channels(&self) -> Vec<usize> {
        (0..CHANNELS.len()).filter(|&i| self.chans[i].existence == Existence::Live).collect()
    }

    /// The model's timeouts: an in-flight message past its deadline is pending again.
    fn expire(&mut self) {
        let now = self.now();
        for chan in &mut self.chans {
            for entry in chan.entries.values_mut() {
                if let Fate::InFlight { deadline_ns, .. } = entry.fate
                    && deadline_ns <= now
                {
                    entry.fate = Fate::Pending;
                }
            }
        }
    }

    fn fire_timers(&mut self) {
        self.engine().fire_timers();
        self.expire();
    }

    /// A consumer went away: what it had in flight is pending again.
    fn release(&mut self, slot: usize, channel: usize) {
        for entry in self.chans[channel].entries.values_mut() {
            if matches!(entry.fate, Fate::InFlight { slot: s, .. } if s == slot) {
                entry.fate = Fate::Pending;
            }
        }
    }

    fn drop_consumer(&mut self, slot: usize) {
        if let Some(old) = self.slots[slot].take() {
            drop(old.consumer);
            self.release(slot, old.channel);
        }
    }

    fn drop_consumers(&mut self) {
        for slot in 0..SLOTS {
            self.drop_consumer(slot);
        }
    }

    /// Messages in flight to `slot` on `channel`, by message number.
    fn owned(&self, slot: usize, channel: usize) -> Vec<(usize, u64)> {
        let now = self.now();
        self.chans[channel]
            .entries
            .iter()
            .filter_map(|(&n, entry)| match entry.fate {
                Fate::InFlight { slot: s, deadline_ns, offset, .. }
                    if s == slot && deadline_ns > now =>
                {
                    Some((n, offset))
                }
                _ => None,
            })
            .collect()
    }

    fn step(&mut self, op: Op) {
        if matches!(op, Op::Publish { .. } | Op::DeferredPublish { .. })
            && self.msgs.len() + 4 > MAX_MESSAGES
        {
            return;
        }
        match op {
            Op::Publish { count, size } => {
                let count = 1 + usize::from(count % 4);
                let lens: Vec<usize> = (0..count)
                    .map(|i| {
                        if i == 0 && size & 0x8000 != 0 {
                            MAX_BODY_BYTES as usize + 1 + usize::from(size % 64)
                        } else {
                            7 + usize::from(size.wrapping_add(i as u16 * 37) % 220)
                        }
                    })
                    .collect();
                self.publish(&lens, Duration::ZERO);
            }
            Op::DeferredPublish { size, defer_ms } => {
                let defer_ms = match defer_ms >> 30 {
                    0 => defer_ms % 5_000,
                    1 => defer_ms % 200_000,
                    _ => defer_ms % 4_000_000,
                };
                self.publish(&[7 + usize::from(size)], Duration::from_millis(u64::from(defer_ms)));
            }
            Op::CreateChannel { channel } => self.create_channel(usize::from(channel) % 3),
            Op::Subscribe { slot, channel, ready } => {
                let slot = usize::from(slot) % SLOTS;
                self.drop_consumer(slot);
                let live = self.live_channels();
                if live.is_empty() {
                    return;
                }
                let idx = live[usize::from(channel) % live.len()];
                let channel = self.topic().get_channel(CHANNELS[idx]).expect("a live channel");
                let consumer = channel.subscribe(None).expect("subscribing");
                let ready = 1 + u64::from(ready % 4);
                consumer.set_ready(ready);
                self.slots[slot] = Some(Slot { consumer, channel: idx, ready });
            }
            Op::Take { slot } => self.take(usize::from(slot) % SLOTS),
            Op::Fin { slot, pick } => self.act(usize::from(slot) % SLOTS, pick, Action::Fin),
            Op::Req { slot, pick, delay_ms } => {
                let delay = Duration::from_millis(u64::from(delay_ms % 4_000_000));
                self.act(usize::from(slot) % SLOTS, pick, Action::Req(delay));
            }
            Op::Touch { slot, pick } => self.act(usize::from(slot) % SLOTS, pick, Action::Touch),
            Op::Foreign { slot, pick, id, action } => {
                self.foreign(usize::from(slot) % SLOTS, pick, id, action);
            }
            Op::Disconnect { slot } => self.drop_consumer(usize::from(slot) % SLOTS),
            Op::Advance { ms } => {
                let by = if ms & 0x8000_0000 != 0 {
                    Duration::from_secs(2 * 3600)
                } else {
                    Duration::from_millis(u64::from(ms % 120_000))
                };
                self.clock.advance(by);
                self.fire_timers();
            }
            Op::Checkpoint => {
                let disturbed = self.disturbed();
                let result = self.engine().checkpoint();
                self.settle();
                trace!("  {result:?}");
                match result {
                    Ok(()) => self.finishes_durable(),
                    Err(error) => {
                        assert!(
                            disturbed || self.tainted,
                            "checkpoint failed, nothing planted: {error}"
                        );
                    }
                }
            }
            Op::Reopen => self.reopen(),
            Op::Crash { kind, meta_keep } => {
                self.crash(kind, meta_keep);
                self.verify();
            }
            Op::Fault { nth, disk_full } => {
                let n = 1 + u64::from(nth % 24);
                let kind =
                    if disk_full { io::ErrorKind::StorageFull } else { io::ErrorKind::Other };
                self.faults.push(self.storage.ops() + n);
                self.storage.fail_nth_op(n, kind);
            }
            Op::MetaFault { nth } => {
                let calls = Arc::new(AtomicU64::new(0));
                let at = 1 + u64::from(nth % 8);
                let counter = Arc::clone(&calls);
                self.meta.set_io_hook(Some(Arc::new(move || {
                    if counter.fetch_add(1, Ordering::AcqRel) + 1 == at {
                        Err(io::Error::other("planted meta store failure"))
                    } else {
                        Ok(())
                    }
                })));
                self.meta_fault = Some((calls, at));
            }
            Op::DiskFull { free } => {
                let used: u64 = self
                    .storage
                    .file_paths()
                    .iter()
                    .filter_map(|path| self.storage.contents(path))
                    .map(|bytes| bytes.len() as u64)
                    .sum();
                self.storage.set_capacity(Some(used + u64::from(free % 2048)));
                self.capacity = true;
                self.tainted = true;
            }
            Op::DiskSpace => {
                self.storage.set_capacity(None);
                self.capacity = false;
            }
        }
        self.settle();
    }

    fn publish(&mut self, lens: &[usize], defer: Duration) {
        let first = self.msgs.len();
        let bodies: Vec<Vec<u8>> =
            lens.iter().enumerate().map(|(i, &len)| body(first + i, len)).collect();
        let slices: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
        let oversized = bodies.iter().any(|b| b.len() > MAX_BODY_BYTES as usize);
        let disturbed = self.disturbed();
        let now = self.now();
        let result = self.topic().publish(&slices, defer);
        self.settle();
        trace!("  messages {first}..{}: {result:?}", first + bodies.len());
        let dpub_ns = if defer.is_zero() {
            0
        } else {
            now + i64::try_from(defer.as_nanos()).unwrap_or(i64::MAX)
        };
        let published = match &result {
            Ok(range) => {
                assert!(defer <= MAX_REQ_TIMEOUT && !oversized, "a publish to refuse succeeded");
                assert_eq!(range.end - range.start, bodies.len() as u64, "offsets of a publish");
                Published::Acked
            }
            Err(EngineError::InvalidDefer { .. }) => {
                assert!(defer > MAX_REQ_TIMEOUT, "a defer within the limit refused");
                Published::NotKept
            }
            Err(EngineError::Log(LogError::BodyTooLarge { .. })) => {
                assert!(oversized && defer <= MAX_REQ_TIMEOUT, "a body within the limit refused");
                Published::NotKept
            }
            Err(error) => {
                assert!(defer <= MAX_REQ_TIMEOUT && !oversized, "not refused first: {error}");
                if is_poisoned(error) {
                    assert!(disturbed || self.tainted, "a log poisoned with nothing planted");
                    Published::Maybe
                } else {
                    assert!(
                        matches!(
                            error,
                            EngineError::Log(LogError::Io { .. } | LogError::DiskFull { .. })
                        ),
                        "a publish failed with {error}"
                    );
                    assert!(disturbed, "a publish failed with nothing planted: {error}");
                    Published::NotKept
                }
            }
        };
        for (i, b) in bodies.iter().enumerate() {
            let n = first + i;
            let offset = result.as_ref().ok().map(|range| range.start + i as u64);
            if let Some(offset) = offset {
                self.offsets.insert(offset, n);
            }
            self.msgs.push(Msg { len: b.len(), published, offset, timestamp_ns: now, dpub_ns });
            if published == Published::NotKept {
                continue;
            }
            for idx in self.live_channels() {
                let entry = Entry {
                    fate: Fate::Pending,
                    required: published == Published::Acked,
                    not_before_min_ns: dpub_ns,
                    not_before_max_ns: dpub_ns,
                };
                self.chans[idx].entries.insert(n, entry);
            }
        }
    }

    fn create_channel(&mut self, idx: usize) {
        let disturbed = self.disturbed();
        let result = self.topic().channel(CHANNELS[idx]).map(drop);
        self.settle();
        trace!("  channel {}: {result:?}", CHANNELS[idx]);
        let chan = &mut self.chans[idx];
        match result {
            Ok(_) => {
                if chan.existence != Existence::Live {
                    *chan = Chan {
                        existence: Existence::Live,
                        lenient: false,
                        unsettled_since: None,
                        entries: BTreeMap::new(),
                    };
                }
            }
            Err(error) => {
                assert!(chan.existence != Existence::Live, "an existing channel failed: {error}");
                assert!(
                    disturbed || self.tainted,
                    "channel creation failed, nothing planted: {error}"
                );
                chan.existence = Existence::Uncertain;
                chan.lenient = true;
                chan.entries.clear();
            }
        }
    }

    /// Checks one delivery on `channel` to `slot` against the model and records it.
    fn delivered(&mut self, channel: usize, slot: usize, delivery: &Delivery) {
        let now = self.now();
        let Some(n) = body_number(&delivery.body) else {
            panic!("a delivery no publish made: {:?}", delivery.body);
        };
        let Some(msg) = self.msgs.get(n) else {
            panic!("message {n} delivered before it was published");
        };
        assert_ne!(
            msg.published,
            Published::NotKept,
            "message {n}, refused or not kept, delivered"
        );
        assert_eq!(&delivery.body[..], &body(n, msg.len)[..], "the body of message {n}");
        assert_eq!(delivery.timestamp_ns, msg.timestamp_ns, "the timestamp of message {n}");
        assert_eq!(delivery.id, message_id(delivery.offset), "the ID of message {n}");
        assert!(delivery.attempts >= 1);
        if let Some(offset) = msg.offset {
            assert_eq!(delivery.offset, offset, "message {n} moved");
        }
        if let Some(&owner) = self.offsets.get(&delivery.offset) {
            assert_eq!(
                owner, n,
                "offset {} of message {owner} delivered message {n}",
                delivery.offset
            );
        }
        assert!(now >= msg.dpub_ns, "message {n} delivered before its DPUB time");
        trace!("  {} delivered {n} at {} to slot {slot}", CHANNELS[channel], delivery.offset);
        let chan = &mut self.chans[channel];
        let entry = match chan.entries.get_mut(&n) {
            Some(entry) => entry,
            None => {
                assert!(
                    chan.lenient,
                    "message {n}, published before channel {} existed, delivered on it",
                    CHANNELS[channel]
                );
                chan.entries.entry(n).or_insert(Entry {
                    fate: Fate::Pending,
                    required: false,
                    not_before_min_ns: msg.dpub_ns,
                    not_before_max_ns: msg.dpub_ns,
                })
            }
        };
        assert!(
            matches!(entry.fate, Fate::Pending | Fate::MayReturn),
            "message {n} delivered on {} while {:?}",
            CHANNELS[channel],
            entry.fate
        );
        assert!(now >= entry.not_before_min_ns, "message {n} delivered before its REQ time");
        entry.fate = Fate::InFlight {
            slot,
            deadline_ns: now + MSG_TIMEOUT_NS,
            delivered_ns: now,
            offset: delivery.offset,
        };
    }

    fn take(&mut self, slot: usize) {
        let Some(channel) = self.slots[slot].as_ref().map(|s| s.channel) else { return };
        self.fire_timers();
        let ready = (self.owned(slot, channel).len() as u64)
            < self.slots[slot].as_ref().map_or(0, |s| s.ready);
        let result = self.slots[slot].as_ref().map(|s| s.consumer.next_message());
        let delivery = match result {
            Some(Ok(delivery)) => delivery,
            Some(Err(error)) => panic!("taking a message failed: {error}"),
            None => return,
        };
        match delivery {
            Some(delivery) => {
                assert!(ready, "delivered beyond RDY");
                self.delivered(channel, slot, &delivery);
            }
            None if ready => {
                let now = self.now();
                let due = self.chans[channel].entries.iter().find(|(_, e)| {
                    e.required && e.fate == Fate::Pending && e.not_before_max_ns <= now
                });
                assert!(due.is_none(), "a ready consumer was refused while {due:?} is due");
            }
            None => {}
        }
    }

    fn act(&mut self, slot: usize, pick: u8, action: Action) {
        let Some(channel) = self.slots[slot].as_ref().map(|s| s.channel) else { return };
        self.fire_timers();
        let owned = self.owned(slot, channel);
        if owned.is_empty() {
            return;
        }
        let (n, offset) = owned[usize::from(pick) % owned.len()];
        let id = message_id(offset);
        let now = self.now();
        let Some(consumer) = self.slots[slot].as_ref().map(|s| &s.consumer) else { return };
        let result = match action {
            Action::Fin => consumer.finish(&id),
            Action::Req(delay) => consumer.requeue(&id, delay),
            Action::Touch => consumer.touch(&id),
        };
        if let Err(error) = result {
            panic!("{action:?} of message {n}, owned, failed: {error}");
        }
        trace!("  {action:?} {n} on {}", CHANNELS[channel]);
        let Some(entry) = self.chans[channel].entries.get_mut(&n) else { return };
        match action {
            Action::Fin => entry.fate = Fate::FinVolatile,
            Action::Req(delay) => {
                let delay = delay.min(MAX_REQ_TIMEOUT);
                let due = now + i64::try_from(delay.as_nanos()).unwrap_or(i64::MAX);
                entry.fate = Fate::Pending;
                entry.not_before_min_ns = due;
                entry.not_before_max_ns = due;
            }
            Action::Touch => {
                if let Fate::InFlight { slot, delivered_ns, offset, .. } = entry.fate {
                    let deadline_ns = (now + MSG_TIMEOUT_NS).min(delivered_ns + MAX_MSG_TIMEOUT_NS);
                    entry.fate = Fate::InFlight { slot, deadline_ns, delivered_ns, offset };
                }
            }
        }
    }

    /// FIN, REQ or TOUCH of an ID `slot` does not own must fail and change nothing.
    fn foreign(&mut self, slot: usize, pick: u8, raw: [u8; 16], action: u8) {
        let Some(channel) = self.slots[slot].as_ref().map(|s| s.channel) else { return };
        self.fire_timers();
        let id = if pick.is_multiple_of(2) {
            // Another consumer's message on the same channel.
            let others: Vec<u64> = (0..SLOTS)
                .filter(|&other| other != slot)
                .flat_map(|other| self.owned(other, channel))
                .map(|(_, offset)| offset)
                .collect();
            if others.is_empty() {
                return;
            }
            message_id(others[usize::from(pick / 2) % others.len()])
        } else {
            raw
        };
        let mine: BTreeSet<u64> = self.owned(slot, channel).into_iter().map(|(_, o)| o).collect();
        if parse_message_id(&id).is_some_and(|offset| mine.contains(&offset)) {
            return;
        }
        let Some(consumer) = self.slots[slot].as_ref().map(|s| &s.consumer) else { return };
        let result = match action % 3 {
            0 => consumer.finish(&id),
            1 => consumer.requeue(&id, Duration::from_millis(u64::from(action))),
            _ => consumer.touch(&id),
        };
        assert!(
            result.is_err(),
            "FIN/REQ/TOUCH of {:?}, not owned, succeeded",
            String::from_utf8_lossy(&id)
        );
    }

    fn finishes_durable(&mut self) {
        for chan in &mut self.chans {
            for entry in chan.entries.values_mut() {
                if entry.fate == Fate::FinVolatile {
                    entry.fate = Fate::FinDurable;
                }
            }
        }
    }

    /// What a crash (or a failed close) does to the model: unflushed finishes may come back,
    /// REQ delays may be forgotten.
    fn forget_unflushed(&mut self) {
        let dpub: Vec<i64> = self.msgs.iter().map(|m| m.dpub_ns).collect();
        for chan in &mut self.chans {
            for (&n, entry) in &mut chan.entries {
                if entry.fate == Fate::FinVolatile {
                    entry.fate = Fate::MayReturn;
                }
                entry.not_before_min_ns = dpub[n];
            }
        }
    }

    fn reopen(&mut self) {
        self.drop_consumers();
        let disturbed = self.disturbed();
        let Some(engine) = self.engine.take() else { return };
        let closed = engine.close();
        drop(engine);
        self.settle();
        trace!("  close: {closed:?}");
        match closed {
            Ok(()) => self.finishes_durable(),
            Err(error) => {
                assert!(disturbed || self.tainted, "close failed, nothing planted: {error}");
                self.forget_unflushed();
            }
        }
        self.open();
    }

    fn crash(&mut self, kind: CrashKind, meta_keep: u8) {
        self.drop_consumers();
        let Some(engine) = self.engine.take() else { return };
        match kind {
            CrashKind::PowerLoss => self.storage.crash(),
            CrashKind::ProcessKill => {
                self.storage.crash_with(|_, ops| CrashKeep { ops: ops.len(), torn_bytes: 0 });
            }
            CrashKind::Torn { keep, torn } => self.storage.crash_with(|_: &Path, ops| CrashKeep {
                ops: usize::from(keep) % (ops.len() + 1),
                torn_bytes: usize::from(torn),
            }),
        }
        let pending = self.meta.pending_batches();
        self.meta.crash_keeping(usize::from(meta_keep) % (pending + 1));
        engine.halt();
        self.forget_unflushed();
        self.open();
    }

    /// Past every delay, every channel delivers every message it must; then the drain's
    /// messages are handed back.
    fn verify(&mut self) {
        self.drop_consumers();
        self.clock.advance(DRAIN_ADVANCE);
        self.fire_timers();
        let topic = self.topic();
        for idx in self.live_channels() {
            let channel = topic.get_channel(CHANNELS[idx]).expect("a live channel");
            let consumer = channel.subscribe(None).expect("subscribing");
            consumer.set_ready(u64::MAX);
            let mut drained = BTreeSet::new();
            loop {
                match consumer.next_message() {
                    Ok(Some(delivery)) => {
                        self.delivered(idx, DRAIN_SLOT, &delivery);
                        let n = body_number(&delivery.body).unwrap_or(usize::MAX);
                        assert!(drained.insert(n), "message {n} delivered twice in one drain");
                    }
                    Ok(None) => break,
                    Err(error) => panic!("draining failed: {error}"),
                }
            }
            let lost: Vec<usize> = self.chans[idx]
                .entries
                .iter()
                .filter(|(n, e)| e.required && e.fate == Fate::Pending && !drained.contains(n))
                .map(|(&n, _)| n)
                .collect();
            assert!(
                lost.is_empty(),
                "acknowledged, unfinished messages not delivered again on {}: {lost:?}",
                CHANNELS[idx]
            );
            drop(consumer);
            self.release(DRAIN_SLOT, idx);
        }
    }

    fn finish(&mut self) {
        self.settle();
        self.verify();
        self.crash(CrashKind::PowerLoss, 0);
        self.verify();
        self.clear_faults();
        // With nothing planted any more, writing works again after a reopen.
        self.reopen();
        let before = self.msgs.len();
        self.publish(&[7], Duration::ZERO);
        if let Some(msg) = self.msgs.get(before) {
            assert_eq!(msg.published, Published::Acked, "publishing after the failures cleared");
        }
        self.verify();
    }
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Fin,
    Req(Duration),
    Touch,
}
