//! Helpers shared by the engine's integration tests.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use engine::NewRecord;
use engine::log::{LogConfig, Record, RecoveryReport, TopicLog};
use engine::storage::Storage;

/// The body of the `i`-th test record: distinct, of varying length, and self-describing.
pub fn body(i: u64) -> Vec<u8> {
    let len = (i % 7) as usize * 13;
    let mut body = format!("record-{i}:").into_bytes();
    body.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, len));
    body
}

pub fn new_record(body: &[u8]) -> NewRecord<'_> {
    NewRecord { timestamp_ns: 1_700_000_000_000_000_000, deliver_at_ns: 0, body }
}

/// Records with the given bodies, as an append takes them.
pub fn new_records(bodies: &[Vec<u8>]) -> Vec<NewRecord<'_>> {
    bodies.iter().map(|b| new_record(b)).collect()
}

/// Appends records `first..first + count` one batch at a time.
pub fn append_range(log: &TopicLog, first: u64, count: u64) {
    let bodies: Vec<Vec<u8>> = (first..first + count).map(body).collect();
    let range = log.append(&new_records(&bodies)).expect("append");
    assert_eq!(range, first..first + count, "offsets are dense and continue the log");
}

/// Every record from `from` on.
pub fn read_all(log: &TopicLog, from: u64) -> Vec<Record> {
    let mut reader = log.reader(from);
    let mut records = Vec::new();
    while let Some(record) = reader.next().expect("read") {
        records.push(record);
    }
    records
}

/// Asserts `records` are exactly the test records with the given offsets, bodies intact.
pub fn assert_records(records: &[Record], offsets: impl IntoIterator<Item = u64>) {
    let offsets: Vec<u64> = offsets.into_iter().collect();
    let got: Vec<u64> = records.iter().map(|r| r.offset).collect();
    assert_eq!(got, offsets);
    for record in records {
        assert_eq!(record.body, body(record.offset), "body of offset {}", record.offset);
    }
}

pub fn open(
    storage: &Arc<dyn Storage>,
    dir: &Path,
    config: LogConfig,
) -> (TopicLog, RecoveryReport) {
    TopicLog::open(Arc::clone(storage), dir, config).expect("open")
}

pub fn topic_dir() -> PathBuf {
    PathBuf::from("/data/topics/t")
}

/// Segment files of a log directory, sorted by name (and so by offset).
pub fn segment_paths(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    paths.sort();
    paths
}

/// An engine on simulated storage, an in-memory meta store and a clock the test moves. The three
/// outlive the engines opened on them, so a test can crash and reopen.
pub struct Harness {
    pub storage: engine::storage::SimStorage,
    pub meta: Arc<engine::meta::MemoryMeta>,
    pub clock: Arc<engine::clock::ManualClock>,
    pub config: engine::EngineConfig,
}

pub const DATA: &str = "/data";

impl Harness {
    /// Memory queue off (every publish written before it returns), fsync on every append.
    pub fn new() -> Self {
        let config = engine::EngineConfig {
            mem_queue_size: 0,
            log: LogConfig { sync: engine::SyncPolicy::Always, ..LogConfig::default() },
            ..engine::EngineConfig::default()
        };
        Self::with_config(config)
    }

    pub fn with_config(config: engine::EngineConfig) -> Self {
        Self {
            storage: engine::storage::SimStorage::new(),
            meta: Arc::new(engine::meta::MemoryMeta::new()),
            clock: Arc::new(engine::clock::ManualClock::default()),
            config,
        }
    }

    pub fn open(&self) -> engine::Engine {
        engine::Engine::open_with(
            DATA,
            self.config.clone(),
            Arc::new(self.storage.clone()),
            engine::meta::MetaStore::in_memory(Arc::clone(&self.meta)),
            self.clock.clone(),
        )
        .unwrap()
        .0
    }

    /// Kills `engine` as a power loss would: unsynced file data and unflushed metadata are lost.
    pub fn crash(&self, engine: engine::Engine) {
        self.storage.crash();
        self.meta.crash();
        engine.halt();
    }

    pub fn advance(&self, by: std::time::Duration) {
        self.clock.advance(by);
    }
}

/// Publishes one message per body.
pub fn publish(topic: &engine::Topic, bodies: &[&str]) -> std::ops::Range<u64> {
    let bodies: Vec<&[u8]> = bodies.iter().map(|b| b.as_bytes()).collect();
    topic.publish(&bodies, std::time::Duration::ZERO).unwrap()
}

/// Takes every message the consumer may have now, as strings.
pub fn take_all(consumer: &engine::Consumer) -> Vec<engine::Delivery> {
    std::iter::from_fn(|| consumer.next_message().unwrap()).collect()
}

/// Takes every message the consumer may have now and FINs each; returns how many.
pub fn finish_all(consumer: &engine::Consumer) -> usize {
    let deliveries = take_all(consumer);
    for delivery in &deliveries {
        consumer.finish(&delivery.id).unwrap();
    }
    deliveries.len()
}

pub fn text(delivery: &engine::Delivery) -> String {
    String::from_utf8(delivery.body.to_vec()).unwrap()
}

pub fn texts(deliveries: &[engine::Delivery]) -> Vec<String> {
    deliveries.iter().map(text).collect()
}

/// A consumer with RDY `ready`.
pub fn consumer(channel: &Arc<engine::Channel>, ready: u64) -> engine::Consumer {
    let consumer = channel.subscribe(None).unwrap();
    consumer.set_ready(ready);
    consumer
}

/// The `main` of a test that runs itself as a child (`harness = false`): answers `--list`, skips
/// when a filter names another test, and returns the seed to use: from `seed_var`, or the clock.
/// Prints the seed so a failing run can be reproduced.
pub fn self_test_seed(name: &str, seed_var: &str) -> Option<u64> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("{name}: test");
        return None;
    }
    if args.iter().any(|a| !a.starts_with('-') && !name.contains(a.as_str())) {
        return None;
    }
    let seed = std::env::var(seed_var).ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
            as u64
    });
    println!("{name}: seed {seed} ({seed_var}={seed} reproduces)");
    Some(seed)
}

/// The next number of a xorshift generator (never zero when seeded non-zero).
pub fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}
