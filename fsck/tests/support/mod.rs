//! A data directory with known contents, ways to damage it, and ways to read it back.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use engine::log::{LogConfig, SegmentItem, SegmentReader, SyncPolicy, list_segments};
use engine::storage::{FsStorage, Storage};
use engine::{Engine, EngineConfig};

pub const TOPIC: &str = "orders";
/// Messages published.
pub const MESSAGES: u64 = 1000;
/// `billing` finished the messages below this...
pub const BILLING_FINISHED: u64 = 50;
/// ...holds these in flight when the engine stops...
pub const BILLING_IN_FLIGHT: u64 = 10;
/// ...and deferred these for an hour.
pub const BILLING_DEFERRED: u64 = 5;

pub fn body(i: u64) -> Vec<u8> {
    format!("message-{i:04}-{}", "x".repeat((i % 50) as usize)).into_bytes()
}

pub fn config() -> EngineConfig {
    EngineConfig {
        log: LogConfig {
            max_bytes_per_file: 16 * 1024,
            sync: SyncPolicy::Always,
            ..LogConfig::default()
        },
        mem_queue_size: 0,
        ..EngineConfig::default()
    }
}

/// Publishes [`MESSAGES`] to [`TOPIC`] with channels `audit` (reads nothing) and `billing`
/// (finishes some, holds some in flight, defers some), and closes the engine.
pub fn populate(data_dir: &Path) {
    let (engine, _) = Engine::open(data_dir, config()).expect("open");
    let topic = engine.topic(TOPIC).expect("topic");
    let audit = topic.channel("audit").expect("audit");
    let billing = topic.channel("billing").expect("billing");
    let _ = audit;
    for i in 0..MESSAGES {
        topic.publish(&[&body(i)], Duration::ZERO).expect("publish");
    }
    let consumer = billing.subscribe(None).expect("subscribe");
    consumer.set_ready(1000);
    let wanted = BILLING_FINISHED + BILLING_IN_FLIGHT + BILLING_DEFERRED;
    for n in 0..wanted {
        let delivery = consumer.next_message().expect("next").expect("a message");
        if n < BILLING_FINISHED {
            consumer.finish(&delivery.id).expect("finish");
        } else if n >= BILLING_FINISHED + BILLING_IN_FLIGHT {
            consumer.requeue(&delivery.id, Duration::from_secs(3600)).expect("requeue");
        }
    }
    engine.checkpoint().expect("checkpoint");
    engine.close().expect("close");
    drop(consumer);
}

/// The segment files of the topic, in offset order.
pub fn segments(data_dir: &Path) -> Vec<(u64, PathBuf)> {
    list_segments(&FsStorage, &topic_dir(data_dir)).expect("list").segments
}

pub fn topic_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(engine::TOPICS_DIR_NAME).join(TOPIC)
}

/// Offset to (segment, file position, record length) of every valid record.
pub fn record_positions(data_dir: &Path) -> Vec<(u64, PathBuf, u64, u64)> {
    let listing = segments(data_dir);
    let mut out = Vec::new();
    for (index, (first, path)) in listing.iter().enumerate() {
        let file = FsStorage.open(path, false).expect("open");
        let len = file.len().expect("len");
        let limit = listing.get(index + 1).map(|(f, _)| *f);
        let mut reader = SegmentReader::new(Arc::clone(&file), *first, len, limit);
        while let Some(item) = reader.next().expect("scan") {
            if let SegmentItem::Record { position, len_bytes, record } = item {
                out.push((record.offset, path.clone(), position, len_bytes));
            }
        }
    }
    out
}

/// Flips bit `bit` of the byte at `position` of `path`.
pub fn flip_bit(path: &Path, position: u64, bit: u8) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[position as usize] ^= 1 << bit;
    std::fs::write(path, bytes).expect("write");
}

/// Runs the nsq-fsck binary.
pub fn fsck(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_nsq-fsck"))
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("run nsq-fsck")
}

pub fn code(output: &Output) -> i32 {
    output.status.code().expect("exited")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The kinds of `verify --json`'s findings with the given severity.
pub fn verify_kinds(data_dir: &Path) -> (i32, Vec<(String, String)>) {
    let output = fsck(&["verify", "--json", path_str(data_dir)]);
    let value: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", stdout(&output)));
    let kinds = value["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["severity"].as_str().unwrap_or("").to_owned(),
                f["kind"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    (code(&output), kinds)
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Every message channel `channel` delivers when the data directory is opened again.
pub fn deliver_all(data_dir: &Path, channel: &str) -> BTreeSet<u64> {
    let (engine, _) =
        Engine::open(data_dir, config()).expect("nsqd's engine opens the repaired directory");
    let topic = engine.topic(TOPIC).expect("topic");
    let channel = topic.channel(channel).expect("channel");
    let consumer = channel.subscribe(None).expect("subscribe");
    consumer.set_ready(u64::from(u32::MAX));
    let mut seen = BTreeSet::new();
    while let Some(delivery) = consumer.next_message().expect("next") {
        let i = std::str::from_utf8(&delivery.body[8..12])
            .expect("utf-8")
            .parse::<u64>()
            .expect("index");
        assert_eq!(delivery.body, body(i), "the body of message {i} is intact");
        assert!(seen.insert(i), "message {i} delivered once");
    }
    drop(consumer);
    engine.close().expect("close");
    seen
}
