//! `nsq-fsck replay`: archives made by the engine's retention, replayed by the binary into a
//! fresh data directory and into a running nsqd, with filters, pacing and damage.

// A failed unwrap in a test is a failed assertion; the lint guards library code against input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::cast_possible_truncation)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::clock::ManualClock;
use engine::log::{LogConfig, list_segments};
use engine::meta::MetaStore;
use engine::storage::FsStorage;
use engine::{Engine, EngineConfig};
use server::logging::{LogControl, LogLevel};
use server::{Nsqd, Options};

const TOPIC: &str = "t";
/// Messages published; about four per segment.
const COUNT: u64 = 40;

fn body(i: u64) -> Vec<u8> {
    format!("body-{i:015}").into_bytes()
}

/// 2026-01-01T00:00:00Z in Unix nanoseconds.
const START_NS: i64 = 1_767_225_600_000_000_000;

/// Publish time of message `i`: one a minute from 2026-01-01T00:00:00Z.
fn published_ns(i: u64) -> i64 {
    START_NS + i as i64 * 60_000_000_000
}

/// A topic whose consumed segments were archived by retention.
struct Archived {
    _root: tempfile::TempDir,
    data: PathBuf,
    archive: PathBuf,
    /// First offset of the segment retention kept: every offset below it is archived.
    archived_below: u64,
}

impl Archived {
    /// Publishes [`COUNT`] messages (message `i` at [`published_ns`]`(i)`), FINs them all on a
    /// channel, and checkpoints, so that retention archives every segment but the last.
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        let archive = root.path().join("archive");
        let config = EngineConfig {
            mem_queue_size: 0,
            log: LogConfig { max_bytes_per_file: 32 + 4 * (32 + 20), ..LogConfig::default() },
            archive_dir: Some(archive.clone()),
            ..EngineConfig::default()
        };
        let clock = Arc::new(ManualClock::new(START_NS));
        let meta = MetaStore::open_sled(&data.join(engine::META_DIR_NAME)).unwrap();
        let (engine, _) =
            Engine::open_with(&data, config, Arc::new(FsStorage), meta, clock.clone()).unwrap();
        let topic = engine.topic(TOPIC).unwrap();
        let channel = topic.channel("c").unwrap();
        for i in 0..COUNT {
            clock.set(published_ns(i));
            topic.publish(&[&body(i)], Duration::ZERO).unwrap();
        }
        let consumer = channel.subscribe(None).unwrap();
        consumer.set_ready(COUNT);
        while let Some(delivery) = consumer.next_message().unwrap() {
            consumer.finish(&delivery.id).unwrap();
        }
        engine.checkpoint().unwrap();
        engine.close().unwrap();
        let segments = list_segments(&FsStorage, &data.join("topics").join(TOPIC)).unwrap();
        assert_eq!(segments.segments.len(), 1, "retention kept only the last segment");
        let archived_below = segments.segments[0].0;
        assert!(archived_below >= COUNT / 2, "most messages archived");
        Self { _root: root, data, archive, archived_below }
    }

    fn path(&self, name: &str) -> PathBuf {
        self._root.path().join(name)
    }
}

fn fsck(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nsq-fsck")).args(args).output().unwrap()
}

fn text(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status,
        stdout(output),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The bodies of the topic's records in the data directory `dir`, in offset order.
fn bodies_in(dir: &Path) -> Vec<Vec<u8>> {
    let (engine, _) = Engine::open(dir, EngineConfig::default()).unwrap();
    let bodies = bodies_of(&engine);
    engine.close().unwrap();
    bodies
}

fn bodies_of(engine: &Engine) -> Vec<Vec<u8>> {
    let Some(topic) = engine.get_topic(TOPIC) else { return Vec::new() };
    let mut reader = topic.log().reader(0);
    let mut bodies = Vec::new();
    while let Some(record) = reader.next().unwrap() {
        bodies.push(record.body.to_vec());
    }
    bodies
}

fn bodies(offsets: std::ops::Range<u64>) -> Vec<Vec<u8>> {
    offsets.map(body).collect()
}

#[test]
fn replay_into_a_fresh_data_dir_republishes_every_archived_message_exactly_once() {
    // Goal: the archive -> replay round trip loses and duplicates nothing. Method: archive a
    // topic through the engine's retention, replay the archive path into a new data directory,
    // then open it and compare the topic's records with what was published.
    let archived = Archived::new();
    let fresh = archived.path("fresh");
    let output =
        fsck(&["replay", text(&archived.archive), "--topic", TOPIC, "--into", text(&fresh)]);
    assert_success(&output);
    assert!(stdout(&output).contains(&format!("replayed {} messages", archived.archived_below)));
    assert!(stdout(&output).contains("damaged ranges: 0"));
    assert_eq!(bodies_in(&fresh), bodies(0..archived.archived_below));
}

#[test]
fn a_segment_found_in_two_sources_is_replayed_once() {
    // Goal: a segment both archived and still present (a crash between the archive and the
    // removal) or named twice is replayed once. Method: give the archive path and the topic's
    // archive directory, the same files, as two sources.
    let archived = Archived::new();
    let fresh = archived.path("fresh");
    let topic_archive = archived.archive.join(TOPIC);
    let output = fsck(&[
        "replay",
        text(&archived.archive),
        text(&topic_archive),
        "--topic",
        TOPIC,
        "--into",
        text(&fresh),
    ]);
    assert_success(&output);
    let copies = format!("already replayed from another copy: {}", archived.archived_below);
    assert!(stdout(&output).contains(&copies), "{}", stdout(&output));
    assert_eq!(bodies_in(&fresh), bodies(0..archived.archived_below));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_to_a_running_nsqd_from_archive_and_live_segments_republishes_each_message_once() {
    // Goal: republishing over TCP (IDENTIFY, MPUB batches) delivers the topic's whole history
    // once, with the archive and the live segments read together. Method: start nsqd in-process
    // on loopback, replay archive + data directory with small batches, stop nsqd, read its log.
    let archived = Archived::new();
    let dest = archived.path("nsqd-data");
    let options = Options::parse_args([
        "nsqd",
        "--tcp-address=127.0.0.1:0",
        "--http-address=127.0.0.1:0",
        "--mem-queue-size=0",
    ])
    .unwrap();
    let (engine, _) = Engine::open(&dest, options.engine_config()).unwrap();
    let engine = Arc::new(engine);
    let running =
        Nsqd::start(options, Arc::clone(&engine), LogControl::fixed(LogLevel::Warn)).await.unwrap();
    let address = running.tcp_addr().to_string();
    let (archive, data) = (archived.archive.clone(), archived.data.clone());
    let output = tokio::task::spawn_blocking(move || {
        let (archive, data) = (text(&archive), text(&data));
        fsck(&[
            "replay",
            archive,
            data,
            "--topic",
            TOPIC,
            "--nsqd-tcp-address",
            &address,
            "--batch-size=7",
        ])
    })
    .await
    .unwrap();
    running.shutdown().await.unwrap();
    assert_success(&output);
    assert!(stdout(&output).contains(&format!("replayed {COUNT} messages in 6 batches")));
    assert_eq!(bodies_of(&engine), bodies(0..COUNT));
}

#[test]
fn offset_filters_take_from_inclusive_to_exclusive() {
    // Goal: --from-offset is inclusive and --to-offset exclusive, across archive boundaries,
    // and files wholly outside the range are not read. Method: replay offsets 5..15 into a new
    // data directory and compare; count a range with --dry-run.
    let archived = Archived::new();
    let fresh = archived.path("fresh");
    let archive = text(&archived.archive);
    let output = fsck(&[
        "replay",
        archive,
        "--topic",
        TOPIC,
        "--from-offset=5",
        "--to-offset=15",
        "--into",
        text(&fresh),
    ]);
    assert_success(&output);
    assert_eq!(bodies_in(&fresh), bodies(5..15));
    let report = stdout(&output);
    assert!(report.contains("replayed 10 messages"), "{report}");
    assert!(report.contains("skipped by filter: 2;"), "offsets 4 and 15: {report}");
    assert!(report.contains("outside the offset range, not read: 6"), "{report}");

    let output = fsck(&["replay", archive, "--topic", TOPIC, "--from-offset=3", "--dry-run"]);
    assert_success(&output);
    let expected = format!("replayed {} messages", archived.archived_below - 3);
    assert!(stdout(&output).contains(&expected), "{}", stdout(&output));
}

#[test]
fn time_filters_select_by_publish_time_since_inclusive_until_exclusive() {
    // Goal: --since and --until select by the record's publish time. Method: messages were
    // published one a minute from 2026-01-01T00:00:00Z; replay [00:10, 00:20) and compare.
    let archived = Archived::new();
    let fresh = archived.path("fresh");
    let output = fsck(&[
        "replay",
        text(&archived.archive),
        "--topic",
        TOPIC,
        "--since=2026-01-01T00:10:00Z",
        "--until=2026-01-01T00:20:00Z",
        "--into",
        text(&fresh),
    ]);
    assert_success(&output);
    assert_eq!(bodies_in(&fresh), bodies(10..20));
    let skipped = format!("skipped by filter: {}", archived.archived_below - 10);
    assert!(stdout(&output).contains(&skipped), "{}", stdout(&output));
}

#[test]
fn rate_holds_the_replay_to_the_given_messages_per_second() {
    // Goal: --rate is wired to the pacer (whose schedule is unit-tested on a fake clock).
    // Method: 20 messages at 50/s cannot take less than 19/50 s; a lower bound, never flaky.
    let archived = Archived::new();
    let fresh = archived.path("fresh");
    let started = Instant::now();
    let output = fsck(&[
        "replay",
        text(&archived.archive),
        "--topic",
        TOPIC,
        "--to-offset=20",
        "--rate=50",
        "--into",
        text(&fresh),
    ]);
    let elapsed = started.elapsed();
    assert_success(&output);
    assert!(elapsed >= Duration::from_millis(19 * 1000 / 50), "took only {elapsed:?}");
    assert_eq!(bodies_in(&fresh), bodies(0..20));
}

#[test]
fn a_corrupt_archive_is_listed_with_its_name_and_everything_else_is_replayed() {
    // Goal: damage does not stop a replay: the corrupt archive is skipped, named with its
    // position, the exit status is 1, and every other archived message is replayed. Method:
    // flip a byte inside the zstd frame of the second archive.
    let archived = Archived::new();
    let topic_archive = archived.archive.join(TOPIC);
    let mut names: Vec<PathBuf> =
        std::fs::read_dir(&topic_archive).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    let damaged = &names[1];
    let mut bytes = std::fs::read(damaged).unwrap();
    let at = 64 + (bytes.len() - 64) / 2;
    bytes[at] ^= 0x10;
    std::fs::write(damaged, &bytes).unwrap();
    let (lost_from, lost_to) = {
        let header = engine::archive::ArchiveHeader::decode(&bytes).unwrap();
        (header.first_offset, header.end_offset)
    };

    let fresh = archived.path("fresh");
    let output =
        fsck(&["replay", text(&archived.archive), "--topic", TOPIC, "--into", text(&fresh)]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = stdout(&output);
    assert!(report.contains("damaged ranges: 1"), "{report}");
    assert!(report.contains(&format!("{} at position 64", damaged.display())), "{report}");
    let expected: Vec<Vec<u8>> = (0..archived.archived_below)
        .filter(|o| !(lost_from..lost_to).contains(o))
        .map(body)
        .collect();
    assert_eq!(bodies_in(&fresh), expected);
}

#[test]
fn a_data_dir_held_by_a_running_nsqd_is_refused() {
    // Goal: --into never writes into a data directory another process owns. Method: hold the
    // destination open with an engine (its lock) while the binary tries; nothing is published.
    let archived = Archived::new();
    let held = archived.path("held");
    let (engine, _) = Engine::open(&held, EngineConfig::default()).unwrap();
    let output =
        fsck(&["replay", text(&archived.archive), "--topic", TOPIC, "--into", text(&held)]);
    assert_eq!(output.status.code(), Some(8));
    assert!(String::from_utf8_lossy(&output.stderr).contains("locked"), "{output:?}");
    assert!(bodies_of(&engine).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_from_nsqd_stops_the_replay_with_its_text() {
    // Goal: an E_* answer aborts the replay and says what nsqd said. Method: an nsqd whose
    // --max-msg-size is below the archived bodies' size refuses the first batch.
    let archived = Archived::new();
    let options = Options::parse_args([
        "nsqd",
        "--tcp-address=127.0.0.1:0",
        "--http-address=127.0.0.1:0",
        "--mem-queue-size=0",
        "--max-msg-size=10",
    ])
    .unwrap();
    let (engine, _) = Engine::open(archived.path("nsqd-data"), options.engine_config()).unwrap();
    let engine = Arc::new(engine);
    let running =
        Nsqd::start(options, Arc::clone(&engine), LogControl::fixed(LogLevel::Warn)).await.unwrap();
    let address = running.tcp_addr().to_string();
    let archive = archived.archive.clone();
    let output = tokio::task::spawn_blocking(move || {
        fsck(&["replay", text(&archive), "--topic", TOPIC, "--nsqd-tcp-address", &address])
    })
    .await
    .unwrap();
    running.shutdown().await.unwrap();
    assert_eq!(output.status.code(), Some(8));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("E_BAD_MESSAGE"), "{stderr}");
    assert!(bodies_of(&engine).is_empty());
}
