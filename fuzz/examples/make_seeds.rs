//! Writes the seed corpus of every fuzz target into `fuzz/seeds/<target>/`, from the project's
//! own encoders, then runs every seed through its target; or, with `--check [PATH...]`, only
//! runs inputs through their targets without libFuzzer (every seed by default; a file under
//! `seeds/<target>/`, `corpus/<target>/` or `artifacts/<target>/` goes to that target).
//!
//! ```text
//! cargo run --example make_seeds                 # regenerate fuzz/seeds/
//! cargo run --example make_seeds -- --check      # replay every seed
//! cargo run --example make_seeds -- --check artifacts/v2_command/crash-...
//! ```

use std::path::{Path, PathBuf};

use bytes::BytesMut;
use engine::archive::{ArchiveHeader, archive_file_name};
use engine::format::{RecordRef, SegmentHeader, encode_record, segment_file_name};
use engine::meta::codec::MetaValue;
use engine::meta::{ChannelRecord, DeferredRecord, TopicRecord};
use protocol::command::Command;
use protocol::compression::{Compression, Compressor};
use protocol::frame::{FrameType, put_frame, put_message};
use protocol::lookup::{LookupCommand, put_response};

type Seeds = Vec<(&'static str, Vec<u8>)>;

fn record(offset: u64, deliver_at_ns: i64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let record = RecordRef { offset, timestamp_ns: 1_767_225_600_000_000_000, deliver_at_ns, body };
    encode_record(&record, &mut out);
    out
}

fn with_mode(mode: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![mode];
    out.extend_from_slice(bytes);
    out
}

fn record_frame() -> Seeds {
    let mut two = record(7, 0, b"hello");
    two.extend(record(8, 1_767_225_601_000_000_000, b""));
    let mut too_long = record(1, 0, b"x");
    too_long[4..8].copy_from_slice(&(64u32 * 1024 * 1024 + 1).to_le_bytes());
    let archive = ArchiveHeader {
        first_offset: 1000,
        end_offset: 1010,
        segment_len: 4096,
        frame_len: 512,
        record_count: 10,
        segment_crc: 0xDEAD_BEEF,
    };
    vec![
        ("records", with_mode(0, &two)),
        ("record-resealed", with_mode(1, &record(3, 0, b"body bytes"))),
        ("record-cut", with_mode(0, &record(3, 0, b"body bytes")[..20])),
        ("record-too-long", with_mode(0, &too_long)),
        ("segment-header", with_mode(2, &SegmentHeader { first_offset: 1000 }.encode())),
        ("archive-header", with_mode(4, &archive.encode())),
        ("segment-name", with_mode(0, segment_file_name(1000).as_bytes())),
        ("archive-name", with_mode(0, archive_file_name(1000).as_bytes())),
        ("message-id", with_mode(0, b"000000000000002a")),
    ]
}

/// A segment_recovery input: flags, offset byte, gap byte, content.
fn segment_input(flags: u8, offset: u8, gap: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![flags, offset, gap];
    out.extend_from_slice(content);
    out
}

fn segment_recovery() -> Seeds {
    let mut records = Vec::new();
    for (i, body) in [&b"first"[..], b"", b"third record"].into_iter().enumerate() {
        records.extend(record(5 + i as u64, 0, body));
    }
    let mut damaged = records.clone();
    damaged[32 + 40] ^= 0x10;
    let torn = &records[..records.len() - 3];
    // Built mode: record ops (op, len, step, body), junk, a flip and a cut.
    let built = [
        0, 3, 0, b'a', b'b', b'c', //
        4, 0, 0, //
        0x10, 2, 5, b'x', b'y', //
        1, 4, 0xFF, 0xFF, 0xFF, 0xFF, //
        0, 1, 0, b'z',
    ];
    let damaged_built = [0, 3, 0, b'a', b'b', b'c', 0, 2, 0, b'd', b'e', 2, 40, 0, 0, 3, 70, 0];
    vec![
        ("clean", segment_input(1, 5, 0, &records)),
        ("torn-tail", segment_input(1, 5, 0, torn)),
        ("damaged-middle", segment_input(1, 5, 0, &damaged)),
        ("no-header", segment_input(0, 5, 0, &records)),
        ("older-segment", segment_input(5, 5, 2, &damaged)),
        ("short-file", segment_input(0, 0, 0, b"NSQRSSEG")),
        ("built", segment_input(3, 9, 0, &built)),
        ("built-damaged", segment_input(3, 0, 0, &damaged_built)),
        ("built-near-max", segment_input(11, 2, 0, &built)),
    ]
}

fn checkpoint_value() -> Seeds {
    let channel = MetaValue::Channel(ChannelRecord {
        paused: true,
        floor: 7,
        next_read: 100,
        finished: vec![(9, 20), (30, 31)],
        attempts: vec![(8, 3), (25, 2)],
        once: vec![(21, 25), (40, 99)],
    });
    // The version 1 layout, still read.
    let v1 = engine::meta::codec::ChannelRecordV1 {
        paused: false,
        floor: 7,
        next_read: 100,
        finished: vec![(9, 20)],
        attempts: vec![(8, 3), (25, 1)],
    };
    let v1 = engine::meta::codec::encode(&v1).expect("encoding a record");
    let topic = MetaValue::Topic(TopicRecord { paused_at: Some(5), orphan_floor: 3 });
    let deferred =
        MetaValue::Deferred(DeferredRecord { due_ns: 1_767_225_600_000_000_000, attempts: 2 });
    let encode = |value: &MetaValue| value.encode().expect("encoding a record");
    let (topic, channel, deferred) = (encode(&topic), encode(&channel), encode(&deferred));
    vec![
        ("topic", with_mode(0, &topic)),
        ("channel", with_mode(1, &channel)),
        ("deferred", with_mode(2, &deferred)),
        ("channel-archive", with_mode(4 | 1, &channel[5..])),
        ("channel-v1", with_mode(1, &v1)),
        ("channel-v1-archive", with_mode(16 | 4 | 1, &v1[5..])),
        ("any-tree", with_mode(3, &channel)),
        (
            "built-channel",
            with_mode(
                8 | 1,
                &[
                    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
                    23, 24, 25, 26, 27, 28, 29, 30,
                ],
            ),
        ),
    ]
}

fn commands(list: &[Command<'_>]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    for command in list {
        command.encode(&mut buf);
    }
    buf.to_vec()
}

fn v2_command() -> Seeds {
    let id = b"000000000000002a";
    let bodies: [&[u8]; 3] = [b"one", b"two", b"three"];
    let session = commands(&[
        Command::Identify(br#"{"client_id":"c","heartbeat_interval":30000,"msg_timeout":60000}"#),
        Command::Pub { topic: "t", body: b"hello" },
        Command::Mpub { topic: "t", bodies: &bodies },
        Command::Dpub { topic: "t", defer_ms: 1500, body: b"later" },
        Command::Sub { topic: "t", channel: "c" },
        Command::Rdy(10),
        Command::Fin(id),
        Command::Req { id, timeout_ms: 1000 },
        Command::Touch(id),
        Command::Nop,
        Command::Cls,
        Command::Rdy(0),
    ]);
    let mut compressed = Vec::new();
    for (name, json, compression) in [
        ("snappy", &br#"{"feature_negotiation":true,"snappy":true}"#[..], Compression::Snappy),
        (
            "deflate",
            &br#"{"feature_negotiation":true,"deflate":true,"deflate_level":3}"#[..],
            Compression::Deflate { level: 3 },
        ),
    ] {
        let mut stream = commands(&[Command::Identify(json)]);
        let rest =
            commands(&[Command::Sub { topic: "t", channel: "c" }, Command::Rdy(1), Command::Nop]);
        let mut compressor = Compressor::new(compression);
        stream.extend_from_slice(compressor.compress(&rest).expect("compressing"));
        compressed.push((name, stream));
    }
    let mut frames = BytesMut::new();
    put_frame(&mut frames, FrameType::Response, b"OK");
    put_frame(&mut frames, FrameType::Error, b"E_INVALID cannot SUB in current state");
    put_message(&mut frames, 1_767_225_600_000_000_000, 1, id, b"hello");
    let mut seeds = vec![
        ("session", with_mode(0, &session)),
        (
            "small-limits",
            with_mode(2, &commands(&[Command::Pub { topic: "t", body: &[b'x'; 120] }])),
        ),
        ("tls-required", with_mode(4, &commands(&[Command::Nop]))),
        ("auth", with_mode(0, &commands(&[Command::Auth(b"secret")]))),
        ("bad-line", with_mode(0, b"SUB t\r\nPUB b:d\n")),
        ("client-frames", with_mode(1, &frames)),
    ];
    for (name, stream) in compressed {
        seeds.push((name, with_mode(0, &stream)));
    }
    if let Some((_, stream)) = seeds.iter().find(|(name, _)| *name == "snappy").cloned() {
        seeds.push(("snappy-trickle", with_mode(3 << 3, &stream[1..])));
    }
    seeds
}

fn lookupd_command() -> Seeds {
    let identity = br#"{"broadcast_address":"h","hostname":"h","tcp_port":4150,"http_port":4151,"version":"1.3.0"}"#;
    let mut session = BytesMut::new();
    for command in [
        LookupCommand::Ping,
        LookupCommand::Identify(identity),
        LookupCommand::Register { topic: "t", channel: None },
        LookupCommand::Register { topic: "t", channel: Some("c") },
        LookupCommand::Unregister { topic: "t", channel: Some("c") },
        LookupCommand::Ping,
    ] {
        command.encode(&mut session);
    }
    let mut replies = BytesMut::new();
    put_response(&mut replies, br#"{"tcp_port":4160,"http_port":4161,"version":"1.3.0","broadcast_address":"h","hostname":"h"}"#);
    put_response(&mut replies, b"OK");
    put_response(&mut replies, b"E_INVALID client must IDENTIFY");
    vec![
        ("session", with_mode(0, &session)),
        ("unidentified", with_mode(0, b"REGISTER t c\n")),
        ("replies", with_mode(1, &replies)),
    ]
}

/// Chosen scenarios, encoded so that they decode to exactly these operations.
fn engine_ops() -> Seeds {
    use nsq_fuzz::engine_ops::{CrashKind, Op, Scenario, encode};
    let scenario = |segment_bytes, initial_channels, ops: Vec<Op>| {
        encode(&Scenario { segment_bytes, initial_channels, ops })
    };
    let publish = |count, size| Op::Publish { count, size };
    let take = |slot| Op::Take { slot };
    let power_loss = Op::Crash { kind: CrashKind::PowerLoss, meta_keep: 0 };
    vec![
        (
            "consume-and-crash",
            scenario(
                200,
                1,
                vec![
                    publish(2, 10),
                    publish(0, 90),
                    Op::Subscribe { slot: 0, channel: 0, ready: 2 },
                    take(0),
                    take(0),
                    take(0),
                    Op::Fin { slot: 0, pick: 0 },
                    Op::Req { slot: 0, pick: 0, delay_ms: 500 },
                    Op::Checkpoint,
                    take(0),
                    Op::Touch { slot: 0, pick: 0 },
                    Op::Advance { ms: 61_000 },
                    power_loss,
                    Op::Subscribe { slot: 1, channel: 1, ready: 3 },
                    take(1),
                    Op::Fin { slot: 1, pick: 0 },
                    Op::Reopen,
                    publish(1, 5),
                ],
            ),
        ),
        (
            "faults-and-full-disk",
            scenario(
                100,
                0,
                vec![
                    publish(0, 30),
                    Op::Fault { nth: 0, disk_full: false },
                    publish(1, 30),
                    Op::Fault { nth: 4, disk_full: true },
                    publish(3, 150),
                    Op::DiskFull { free: 100 },
                    publish(3, 60),
                    Op::DiskSpace,
                    publish(0, 60),
                    Op::Crash { kind: CrashKind::ProcessKill, meta_keep: 0 },
                    publish(0, 20),
                ],
            ),
        ),
        (
            "deferred-and-requeued",
            scenario(
                500,
                2,
                vec![
                    Op::DeferredPublish { size: 10, defer_ms: 1_000 },
                    Op::DeferredPublish { size: 20, defer_ms: 0x8000_0000 | 3_900_000 },
                    publish(0, 10),
                    Op::Subscribe { slot: 2, channel: 2, ready: 3 },
                    take(2),
                    take(2),
                    Op::Advance { ms: 2_000 },
                    take(2),
                    Op::Req { slot: 2, pick: 1, delay_ms: 5_000 },
                    Op::Checkpoint,
                    Op::Crash { kind: CrashKind::Torn { keep: 1, torn: 20 }, meta_keep: 1 },
                    Op::Subscribe { slot: 2, channel: 0, ready: 1 },
                    take(2),
                ],
            ),
        ),
        (
            "channels-and-meta-faults",
            scenario(
                300,
                0,
                vec![
                    Op::MetaFault { nth: 0 },
                    Op::CreateChannel { channel: 2 },
                    publish(1, 40),
                    Op::Reopen,
                    Op::CreateChannel { channel: 1 },
                    publish(1, 40),
                    Op::Subscribe { slot: 0, channel: 1, ready: 2 },
                    Op::Subscribe { slot: 1, channel: 1, ready: 2 },
                    take(0),
                    take(1),
                    Op::Foreign { slot: 0, pick: 0, id: *b"0000000000000000", action: 0 },
                    Op::Foreign { slot: 1, pick: 1, id: *b"000000000000000z", action: 2 },
                    Op::MetaFault { nth: 2 },
                    Op::Checkpoint,
                    Op::Crash { kind: CrashKind::PowerLoss, meta_keep: 3 },
                ],
            ),
        ),
        (
            "refused-publishes",
            scenario(
                64,
                0,
                vec![
                    publish(2, 0x8000),
                    Op::DeferredPublish { size: 1, defer_ms: 0x8000_0000 | 3_999_999 },
                    publish(3, 219),
                    Op::Subscribe { slot: 3, channel: 0, ready: 3 },
                    take(3),
                    Op::Disconnect { slot: 3 },
                    power_loss,
                ],
            ),
        ),
        (
            // A failed directory fsync while rolling once left an empty segment that a later
            // roll made durable, hiding an acknowledged record after a power loss.
            "regression-stale-segment-after-failed-create",
            scenario(
                32896,
                128,
                vec![
                    publish(5, 1285),
                    publish(5, 1317),
                    publish(5, 1285),
                    Op::Fault { nth: 207, disk_full: true },
                    publish(5, 1285),
                    publish(5, 1285),
                    publish(5, 39),
                ],
            ),
        ),
    ]
}

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds")
}

/// Runs `path` through the target its directory names.
fn check_file(path: &Path) {
    let target = path
        .parent()
        .and_then(Path::file_name)
        .and_then(|name| name.to_str())
        .unwrap_or_default()
        .to_owned();
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    assert!(nsq_fuzz::run_target(&target, &data), "no target {target:?} for {}", path.display());
    println!("ok {} ({} bytes)", path.display(), data.len());
}

fn all_seeds() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    for (target, _) in nsq_fuzz::TARGETS {
        let dir = seeds_dir().join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        paths.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()));
    }
    paths.sort();
    paths
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--check") {
        let paths: Vec<PathBuf> = if args.len() > 1 {
            args[1..].iter().map(PathBuf::from).collect()
        } else {
            all_seeds()
        };
        for path in paths {
            check_file(&path);
        }
        return;
    }
    let all: [(&str, Seeds); 6] = [
        ("record_frame", record_frame()),
        ("segment_recovery", segment_recovery()),
        ("checkpoint_value", checkpoint_value()),
        ("v2_command", v2_command()),
        ("lookupd_command", lookupd_command()),
        ("engine_ops", engine_ops()),
    ];
    for (target, seeds) in all {
        // Files this does not write (inputs of fixed findings, `regression-*`, and other inputs
        // saved from runs) are kept as they are.
        let dir = seeds_dir().join(target);
        std::fs::create_dir_all(&dir).expect("creating the seeds directory");
        let max = nsq_fuzz::TARGETS.iter().find(|(t, _)| *t == target).map_or(0, |(_, max)| *max);
        for (name, data) in seeds {
            assert!(data.len() <= max, "seed {target}/{name} is over the target's input limit");
            std::fs::write(dir.join(name), &data).expect("writing a seed");
        }
    }
    for path in all_seeds() {
        check_file(&path);
    }
}
