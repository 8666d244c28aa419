//! `verify` and `repair` on data directories damaged in every documented way: each test damages
//! a real directory written by the engine, checks what verify reports and its exit code, repairs,
//! checks that a second verify is clean and a second repair does nothing, and that the engine
//! then serves every message outside the damage.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::cast_possible_truncation)]

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use support::*;

/// Repairs, then checks the outcome every damage test shares; returns what `audit` (a channel
/// that had read nothing) delivers afterwards.
fn repair_and_check(data_dir: &Path) -> BTreeSet<u64> {
    let dir = path_str(data_dir);
    let before = snapshot(data_dir);
    let dry = fsck(&["repair", "--dry-run", dir]);
    assert_eq!(code(&dry), 1, "a dry run that would repair exits 1: {}", stdout(&dry));
    assert!(stdout(&dry).contains("would: "), "{}", stdout(&dry));
    assert_eq!(before, snapshot(data_dir), "a dry run changes no byte");
    let repaired = fsck(&["repair", dir]);
    assert_eq!(
        code(&repaired),
        0,
        "repair leaves nothing repairable: {}{}",
        stdout(&repaired),
        String::from_utf8_lossy(&repaired.stderr)
    );
    let (code_after, kinds) = verify_kinds(data_dir);
    assert_eq!(code_after, 0, "verify after repair is clean: {kinds:?}");
    let again = fsck(&["repair", dir]);
    assert_eq!(code(&again), 0);
    assert!(
        stdout(&again).contains("nothing to repair"),
        "a second repair does nothing: {}",
        stdout(&again)
    );
    deliver_all(data_dir, "audit")
}

/// Every file of the directory but sled's, with its bytes (to show a command changed nothing).
fn snapshot(data_dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![data_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("list") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push((path.display().to_string(), std::fs::read(&path).expect("read")));
            }
        }
    }
    out.sort();
    out
}

fn all_except(lost: &[u64]) -> BTreeSet<u64> {
    (0..MESSAGES).filter(|i| !lost.contains(i)).collect()
}

fn position_of(data_dir: &Path, offset: u64) -> (std::path::PathBuf, u64, u64) {
    let (_, path, position, len) = record_positions(data_dir)
        .into_iter()
        .find(|(o, ..)| *o == offset)
        .expect("the record exists");
    (path, position, len)
}

#[test]
fn a_healthy_directory_verifies_clean_and_needs_no_repair() {
    // Goal: no false alarms. Method: verify and repair a freshly written directory with finished,
    // in-flight and deferred messages; nothing is reported, nothing changes.
    let data = tempfile::tempdir().unwrap();
    populate(data.path());
    let before = snapshot(data.path());
    let (code, kinds) = verify_kinds(data.path());
    assert_eq!((code, kinds), (0, vec![]));
    let piped = fsck(&["verify", path_str(data.path())]);
    assert!(
        piped.stderr.is_empty(),
        "no progress bar when not on a terminal: {:?}",
        String::from_utf8_lossy(&piped.stderr)
    );
    let inspect = fsck(&["inspect", path_str(data.path())]);
    assert_eq!(support::code(&inspect), 0);
    assert_eq!(before, snapshot(data.path()), "verify and inspect change no byte");
    let repaired = fsck(&["repair", path_str(data.path())]);
    assert!(stdout(&repaired).contains("nothing to repair"), "{}", stdout(&repaired));
    assert_eq!(deliver_all(data.path(), "audit"), all_except(&[]));
}

#[test]
fn inspect_reports_segments_cursors_and_depths() {
    // Goal: inspect's JSON describes the directory. Method: compare it with what was written.
    let data = tempfile::tempdir().unwrap();
    populate(data.path());
    let output = fsck(&["inspect", "--json", path_str(data.path())]);
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let topic = &value["topics"][0];
    assert_eq!(topic["name"], TOPIC);
    assert_eq!(topic["next_offset"], MESSAGES);
    let records: u64 =
        topic["segments"].as_array().unwrap().iter().map(|s| s["records"].as_u64().unwrap()).sum();
    assert_eq!(records, MESSAGES);
    assert!(topic["segments"].as_array().unwrap().len() >= 3, "small segments: several files");
    let channels = topic["channels"].as_array().unwrap();
    let billing = channels.iter().find(|c| c["name"] == "billing").unwrap();
    assert_eq!(billing["floor"], BILLING_FINISHED);
    assert_eq!(billing["depth"], MESSAGES - BILLING_FINISHED);
    assert_eq!(billing["deferred"], BILLING_DEFERRED);
    assert_eq!(billing["in_flight_at_crash"], BILLING_IN_FLIGHT);
    let audit = channels.iter().find(|c| c["name"] == "audit").unwrap();
    assert_eq!(audit["depth"], MESSAGES);
    assert_eq!(audit["backlog"], MESSAGES);
}

#[test]
fn a_bit_flip_in_a_body_quarantines_that_record_only() {
    // Goal: one damaged body costs one message. Method: flip a bit in the body of record 100.
    let data = tempfile::tempdir().unwrap();
    populate(data.path());
    let (path, position, len) = position_of(data.path(), 100);
    flip_bit(&path, position + len - 3, 2);
    let (code, kinds) = verify_kinds(data.path());
    assert_eq!(code, 1);
    assert_eq!(kinds, vec![("repairable".into(), "damaged-records".into())]);
    let verify_text = stdout(&fsck(&["verify", path_str(data.path())]));
    assert!(
        verify_text.contains(&format!("{} at position {position}", path.display())),
        "{verify_text}"
    );
    assert_eq!(repair_and_check(data.path()), all_except(&[100]));
    let quarantine = data.path().join("quarantine").join(TOPIC);
    let manifest = std::fs::read_to_string(quarantine.join("MANIFEST")).unwrap();
    assert!(manifest.contains(&format!(" {position} {len} 100 101 ")), "{manifest}");
    let name = path.file_name().unwrap().to_str().unwrap();
    let kept = std::fs::read(quarantine.join(format!("{name}@{position:020}.bin"))).unwrap();
    assert_eq!(kept.len() as u64, len, "the damaged record's bytes are kept whole");
}

#[test]
fn a_bit_flip_in_a_length_quarantines_that_record_only() {
    // Goal: a damaged length is caught by the checksum, not trusted. Method: flip a high bit of
    // the body length of record 250.
    let data = tempfile::tempdir().unwrap();
    populate(data.path());
    let (_, position, _) = position_of(data.path(), 250);
    let (path, ..) = position_of(data.path(), 250);
    flip_bit(&path, position + 5, 3);
    let (code, kinds) = verify_kinds(data.path());
    assert_eq!((code, kinds), (1, vec![("repairable".into(), "damaged-records".into())]));
    assert_eq!(repair_and_check(data.path()), all_except(&[250]));
}

#[test]
fn a_damaged_segment_header_is_rewritten_and_no_record_is_lost() {
    // Goal: the name is trusted over a damaged header. Method: flip a bit of the second
    // segment's magic.
    let data = tempfile::tempdir().unwrap();
    populate(data.path());
    let (_, path) = segments(data.path())[1].clone();
    flip_bit(&path, 1, 0);
    let (code, kinds) = verify_kinds(data.path());
    assert_eq!((code, kinds), (1, vec![("repairable".into(), "segment-header".into())]));
    assert_eq!(repair_and_check(data.path()), all_except(&[]));
}

#[test]
fn a_torn_tail_is_truncated_to_the_last_whole_record() {
    // Goal: an unfinished write at the end is cut away, and its bytes kept. Method: cut the last
    // segment in the middle of its last record.
    let data = tempfile::tempdir().unwrap();
    populate(data.path());
    let (path, position, len) = position_of(data.path(), MESSAGES - 1);
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(position + len / 2).unwrap();
    let (code, kinds) = verify_kinds(data.path());
    assert_eq!((code, kinds), (1, vec![("repairable".into(), "torn-tail".into())]));
    assert_eq!(repair_and_check(data.path()), all_except(&[MESSAGES - 1]));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), position, "cut at the last whole record");
}

#[test]
fn a_zeroed_block_loses_only_the_records_it_touched() {
    // Goal: a zeroed 4 KiB block (a lost page) costs the records it overlaps. Method: zero
    // bytes 4096..8192 of the first segment.
    let data = tempfile::tempdir().unwrap();
    populate(data.path());
    let (_, path) = segments(data.path())[0].clone();
    let touched: Vec<u64> = record_positions(data.path())
        .into_iter()
        .filter(|(_, p, pos, len)| *p == path && *pos < 8192 && pos + len > 4096)
        .map(|(o, ..)| o)
        .collect();
    assert!(touched.len() > 10, "{touched:?}");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[4096..8192].fill(0);
    std::fs::write(&path, bytes).unwrap();
    let (code, kinds) = verify_kinds(data.path());
    assert_eq!((code, kinds), (1, vec![("repairable".into(), "damaged-records".into())]));
    assert_eq!(repair_and_check(data.path()), all_except(&touched));
}

#[test]
fn a_deleted_segment_is_reported_as_missing_offsets_and_acknowledged() {
    // Goal: a segment gone from the middle of a log is found and the loss recorded. Method:
    // delete the second segment.
    let data = tempfile::tempdir().unwrap();
    populate(data.path());
    let listing = segments(data.path());
    let (first, path) = listing[1].clone();
    let end = listing[2].0;
    std::fs::remove_file(&path).unwrap();
    let (code, kinds) = verify_kinds(data.path());
    assert_eq!((code, kinds), (1, vec![("repairable".into(), "missing-offsets".into())]));
    let lost: Vec<u64> = (first..end).collect();
    assert_eq!(repair_and_check(data.path()), all_except(&lost));
    let manifest =
        std::fs::read_to_string(data.path().join("quarantine").join(TOPIC).join("MANIFEST"))
            .unwrap();
    assert!(manifest.contains(&format!("missing {first} {end}")), "{manifest}");
    let (_, kinds) = verify_kinds(data.path());
    assert_eq!(
        kinds,
        vec![("note".into(), "acknowledged-loss".into())],
        "the loss stays on record as a note"
    );
}

#[test]
fn a_deleted_first_segment_is_found_through_the_checkpoints_that_need_it() {
    // Goal: checkpoints that refer to a missing segment are found and clamped. Method: delete
    // the oldest segment, which both channels still need.
    let data = tempfile::tempdir().unwrap();
    populate(data.path());
    let listing = segments(data.path());
    std::fs::remove_file(&listing[0].1).unwrap();
    let (code, kinds) = verify_kinds(data.path());
    assert_eq!(code, 1);
    let below = ("repairable".to_owned(), "checkpoint-below-log".to_owned());
    let stray = ("repairable".to_owned(), "deferred-outside-range".to_owned());
    assert_eq!(
        kinds,
        vec![below.clone(), below, stray],
        "one per channel, and billing's deferred messages went with the segment"
    );
    let lost: Vec<u64> = (0..listing[1].0).collect();
    assert_eq!(repair_and_check(data.path()), all_except(&lost));
}

#[test]
fn a_damaged_checkpoint_restarts_its_channel_at_the_oldest_message() {
    // Goal: a damaged sled value costs redeliveries, never messages. Method: overwrite billing's
    // checkpoint with garbage.
    let data = tempfile::tempdir().unwrap();
    populate(data.path());
    {
        let meta = engine::meta::MetaStore::open_sled(&data.path().join("meta")).unwrap();
        meta.put_raw(engine::meta::MetaTree::Channels, b"orders\0billing", b"\x01garbage").unwrap();
        meta.flush().unwrap();
    }
    let (code, kinds) = verify_kinds(data.path());
    assert_eq!(code, 1);
    assert!(kinds.contains(&("repairable".into(), "damaged-meta-value".into())), "{kinds:?}");
    assert_eq!(repair_and_check(data.path()), all_except(&[]));
    assert_eq!(
        deliver_all(data.path(), "billing"),
        all_except(&[]),
        "billing starts over: every message again"
    );
}

#[test]
fn an_unreadable_store_is_set_aside_and_rebuilt_from_the_catalogs() {
    // Goal: losing sled costs redeliveries only. Method: replace the store's files with
    // garbage; repair rebuilds it and keeps the old one.
    let data = tempfile::tempdir().unwrap();
    populate(data.path());
    let meta = data.path().join("meta");
    std::fs::remove_dir_all(&meta).unwrap();
    std::fs::create_dir(&meta).unwrap();
    std::fs::write(meta.join("db"), vec![0xA5; 4096]).unwrap();
    std::fs::write(meta.join("conf"), b"not sled's").unwrap();
    let (code, kinds) = verify_kinds(data.path());
    assert_eq!(code, 1);
    assert_eq!(kinds, vec![("repairable".into(), "meta-unreadable".into())]);
    assert_eq!(repair_and_check(data.path()), all_except(&[]));
    assert_eq!(deliver_all(data.path(), "billing"), all_except(&[]));
    let kept = std::fs::read_dir(data.path())
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().starts_with("meta.broken-"));
    assert!(kept, "the old store is kept");
}

#[test]
fn a_cursor_beyond_the_log_is_clamped() {
    // Goal: a checkpoint that points past the log (its last segment deleted) is fitted to it.
    // Method: delete the last segment; billing's deferred and in-flight messages lie below.
    let data = tempfile::tempdir().unwrap();
    populate(data.path());
    {
        let meta = engine::meta::MetaStore::open_sled(&data.path().join("meta")).unwrap();
        let record = engine::meta::ChannelRecord {
            floor: 0,
            next_read: MESSAGES + 500,
            ..Default::default()
        };
        meta.put_channel(TOPIC, "audit", &record).unwrap();
        meta.flush().unwrap();
    }
    let (code, kinds) = verify_kinds(data.path());
    assert_eq!((code, kinds), (1, vec![("repairable".into(), "cursor-beyond-log".into())]));
    assert_eq!(repair_and_check(data.path()), all_except(&[]));
}

#[test]
fn repair_refuses_a_directory_in_use() {
    // Goal: repair never races a running nsqd. Method: hold the engine open and run repair.
    let data = tempfile::tempdir().unwrap();
    populate(data.path());
    let (engine, _) = engine::Engine::open(data.path(), config()).unwrap();
    let output = fsck(&["repair", path_str(data.path())]);
    assert_eq!(code(&output), 8);
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("lock"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (_, kinds) = verify_kinds(data.path());
    assert!(
        kinds.contains(&("note".into(), "locked".into())),
        "verify says the directory is in use: {kinds:?}"
    );
    engine.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_repair_nsqd_serves_every_message_outside_the_damage() {
    // Goal: the repaired directory is one nsqd runs on. Method: zero a block, repair, start
    // nsqd in-process on loopback over the directory, SUB to a channel that had read nothing and
    // FIN what arrives until every message outside the damage came, each once, bodies intact.
    let data = tempfile::tempdir().unwrap();
    populate(data.path());
    let (_, path) = segments(data.path())[1].clone();
    let touched: Vec<u64> = record_positions(data.path())
        .into_iter()
        .filter(|(_, p, pos, len)| *p == path && *pos < 4096 + 4096 && pos + len > 4096)
        .map(|(o, ..)| o)
        .collect();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[4096..8192].fill(0);
    std::fs::write(&path, bytes).unwrap();
    assert_eq!(code(&fsck(&["repair", path_str(data.path())])), 0);

    let options = server::Options::parse_args([
        "nsqd",
        "--tcp-address=127.0.0.1:0",
        "--http-address=127.0.0.1:0",
        "--mem-queue-size=0",
        &format!("--max-bytes-per-file={}", 16 * 1024),
    ])
    .unwrap();
    let (engine, _) = engine::Engine::open(data.path(), options.engine_config()).unwrap();
    let logs = server::logging::LogControl::fixed(server::logging::LogLevel::Warn);
    let running = server::Nsqd::start(options, std::sync::Arc::new(engine), logs).await.unwrap();
    let address = running.tcp_addr();
    let expected = all_except(&touched);
    let wanted = expected.len();
    let got = tokio::task::spawn_blocking(move || consume(address, wanted)).await.unwrap();
    running.shutdown().await.unwrap();
    assert_eq!(got, expected);
}

/// Subscribes to `orders/audit` over TCP and FINs `count` messages; returns their indexes.
fn consume(address: std::net::SocketAddr, count: usize) -> BTreeSet<u64> {
    use bytes::BytesMut;
    use protocol::command::Command;
    use protocol::frame::{Frame, decode_frame};
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    let mut out = BytesMut::from(&b"  V2"[..]);
    Command::Sub { topic: TOPIC, channel: "audit" }.encode(&mut out);
    Command::Rdy(count as u64).encode(&mut out);
    stream.write_all(&out).unwrap();
    let mut seen = BTreeSet::new();
    let mut buf = BytesMut::new();
    let mut chunk = vec![0u8; 64 * 1024];
    while seen.len() < count {
        match decode_frame(&mut buf, 1 << 20).unwrap() {
            Some(Frame::Message(message)) => {
                let i: u64 = std::str::from_utf8(&message.body[8..12]).unwrap().parse().unwrap();
                assert_eq!(message.body, body(i));
                assert!(seen.insert(i), "message {i} delivered once");
                let mut fin = BytesMut::new();
                Command::Fin(&message.id).encode(&mut fin);
                stream.write_all(&fin).unwrap();
            }
            Some(Frame::Error(error)) => panic!("{}", String::from_utf8_lossy(&error)),
            Some(Frame::Response(_)) => {}
            None => {
                let n = stream.read(&mut chunk).unwrap();
                assert!(n > 0, "nsqd closed the connection after {} messages", seen.len());
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
    seen
}
