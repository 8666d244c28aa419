//! `nsq-fsck import-nsq`: Go nsqd data directories written byte for byte as go-diskqueue writes
//! them (NSQ.md §7), imported, then read back through the engine and the report.

// A failed unwrap in a test is a failed assertion; the lint guards library code against input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::big_endian_bytes)]

use std::path::{Path, PathBuf};
use std::process::Command;

use engine::{Engine, EngineConfig};

/// A Go message timestamp: distinct per body, so a test can tell it was kept.
fn timestamp_of(body: &str) -> i64 {
    1_600_000_000_000_000_000 + body.bytes().map(i64::from).sum::<i64>() * 1_000
}

/// One record as go-diskqueue stores it: `[u32 BE 26 + n][i64 BE ts][u16 BE attempts][16 B hex
/// ID][body]`.
fn go_record(body: &str, attempts: u16) -> Vec<u8> {
    let mut record = Vec::new();
    record.extend_from_slice(&(26 + u32::try_from(body.len()).unwrap()).to_be_bytes());
    record.extend_from_slice(&timestamp_of(body).to_be_bytes());
    record.extend_from_slice(&attempts.to_be_bytes());
    record.extend_from_slice(b"0a1b2c3d4e5f6789");
    record.extend_from_slice(body.as_bytes());
    record
}

/// A Go nsqd data path under construction.
struct GoDir {
    _temp: tempfile::TempDir,
    path: PathBuf,
}

impl GoDir {
    fn new(nsqd_dat: &str) -> Self {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().to_path_buf();
        std::fs::write(path.join("nsqd.dat"), nsqd_dat).unwrap();
        Self { _temp: temp, path }
    }

    fn data_file(&self, queue: &str, number: u64) -> PathBuf {
        self.path.join(format!("{queue}.diskqueue.{number:06}.dat"))
    }

    /// Writes data file `number` of `queue` with `records`; returns each record's position and
    /// the file's size.
    fn write_file(&self, queue: &str, number: u64, records: &[(&str, u16)]) -> (Vec<u64>, u64) {
        let mut bytes = Vec::new();
        let mut positions = Vec::new();
        for &(body, attempts) in records {
            positions.push(bytes.len() as u64);
            bytes.extend(go_record(body, attempts));
        }
        std::fs::write(self.data_file(queue, number), &bytes).unwrap();
        (positions, bytes.len() as u64)
    }

    fn append_raw(&self, path: &Path, raw: &[u8]) {
        let mut bytes = std::fs::read(path).unwrap();
        bytes.extend_from_slice(raw);
        std::fs::write(path, bytes).unwrap();
    }

    fn write_meta(&self, queue: &str, depth: i64, read: (u64, u64), write: (u64, u64)) {
        let text = format!("{depth}\n{},{}\n{},{}\n", read.0, read.1, write.0, write.1);
        std::fs::write(self.path.join(format!("{queue}.diskqueue.meta.dat")), text).unwrap();
    }
}

/// The source of most tests:
/// - topic `orders` with channels `billing` (paused) and `audit`;
/// - its own queue over three files, the first partly read (`t0` consumed);
/// - `billing`: one file with an attempted message, and a `.bad` file (two records, then junk);
/// - `audit`: one file with a corrupt length between `a1` and `a2`, `a1` attempted.
struct Fixture {
    go: GoDir,
    corrupt_file: PathBuf,
    corrupt_position: u64,
    bad_file: PathBuf,
}

fn fixture() -> Fixture {
    let go = GoDir::new(
        r#"{"topics":[{"name":"orders","paused":false,"channels":[
            {"name":"billing","paused":true},{"name":"audit","paused":false}]}],
            "version":"1.3.0"}"#,
    );
    let (positions, _) = go.write_file("orders", 0, &[("t0", 0), ("t1", 0)]);
    go.write_file("orders", 1, &[("t2", 0)]);
    let (_, end) = go.write_file("orders", 2, &[("t3", 0), ("t4", 0)]);
    go.write_meta("orders", 4, (0, positions[1]), (2, end));

    let (_, end) = go.write_file("orders:billing", 3, &[("b0", 2), ("b1", 0)]);
    go.write_meta("orders:billing", 2, (3, 0), (3, end));
    let bad_file = go.path.join("orders:billing.diskqueue.000002.dat.bad");
    let mut bad = go_record("bad0", 1);
    bad.extend(go_record("bad1", 0));
    bad.extend_from_slice(&[0, 0, 0, 3, 9, 9, 9]);
    std::fs::write(&bad_file, bad).unwrap();

    let (_, end) = go.write_file("orders:audit", 0, &[("a0", 0), ("a1", 5)]);
    let corrupt_file = go.data_file("orders:audit", 0);
    go.append_raw(&corrupt_file, &5u32.to_be_bytes());
    go.append_raw(&corrupt_file, &go_record("a2-lost", 0));
    let size = std::fs::metadata(&corrupt_file).unwrap().len();
    go.write_meta("orders:audit", 3, (0, 0), (0, size));
    Fixture { go, corrupt_file, corrupt_position: end, bad_file }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn import(source: &Path, target: &Path, extra: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_nsq-fsck"))
        .arg("import-nsq")
        .arg(source)
        .arg("--into")
        .arg(target)
        .args(extra)
        .output()
        .unwrap();
    Run {
        code: output.status.code().unwrap(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

fn open(target: &Path) -> Engine {
    Engine::open(target, EngineConfig::default()).unwrap().0
}

/// Everything a channel delivers now (unpaused first), FINed, as `(body, attempts, timestamp)`
/// sorted by body.
fn drain(engine: &Engine, topic: &str, channel: &str) -> Vec<(String, u16, i64)> {
    let channel = engine.get_topic(topic).unwrap().get_channel(channel).unwrap();
    channel.unpause().unwrap();
    let consumer = channel.subscribe(None).unwrap();
    consumer.set_ready(1000);
    let mut got = Vec::new();
    while let Some(delivery) = consumer.next_message().unwrap() {
        consumer.finish(&delivery.id).unwrap();
        let body = String::from_utf8(delivery.body.to_vec()).unwrap();
        got.push((body, delivery.attempts, delivery.timestamp_ns));
    }
    got.sort();
    got
}

/// What a channel should get: each body with its next attempt (Go's count + 1) and timestamp.
fn expected(messages: &[(&str, u16)]) -> Vec<(String, u16, i64)> {
    let mut expected: Vec<_> =
        messages.iter().map(|&(b, a)| (b.to_owned(), a + 1, timestamp_of(b))).collect();
    expected.sort();
    expected
}

const TOPIC_PENDING: [(&str, u16); 4] = [("t1", 0), ("t2", 0), ("t3", 0), ("t4", 0)];

fn with_topic(own: &[(&'static str, u16)]) -> Vec<(&'static str, u16)> {
    own.iter().copied().chain(TOPIC_PENDING).collect()
}

#[test]
fn each_channel_gets_its_own_pending_messages_and_the_topics_nothing_else() {
    // Goal: the mapping of Go's queues onto one log: a channel gets exactly its unread messages
    // plus the topic's unread ones, with attempts and timestamps kept; what Go had consumed
    // (`t0`), what lies after a corrupt length (`a2-lost`) and a `.bad` file are not imported.
    // Method: import the fixture, drain each channel through the engine.
    let f = fixture();
    let target = tempfile::tempdir().unwrap();
    let run = import(&f.go.path, target.path(), &[]);
    assert_eq!(run.code, 1, "imported with losses: {}{}", run.stdout, run.stderr);

    let engine = open(target.path());
    let topic = engine.get_topic("orders").unwrap();
    assert!(!topic.is_paused());
    assert!(topic.get_channel("billing").unwrap().is_paused());
    assert!(!topic.get_channel("audit").unwrap().is_paused());
    let billing = with_topic(&[("b0", 2), ("b1", 0)]);
    assert_eq!(drain(&engine, "orders", "billing"), expected(&billing));
    let audit = with_topic(&[("a0", 0), ("a1", 5)]);
    assert_eq!(drain(&engine, "orders", "audit"), expected(&audit));
}

#[test]
fn the_report_names_the_corrupt_record_the_bad_file_and_what_each_queue_gave() {
    // Goal: the report says what was read and what was lost, with file and position, in text
    // and in JSON. Method: import the fixture twice, once with --json.
    let f = fixture();
    let target = tempfile::tempdir().unwrap();
    let text = import(&f.go.path, target.path(), &[]).stdout;
    let corrupt = format!("{} at position {}", f.corrupt_file.display(), f.corrupt_position);
    assert!(text.contains(&corrupt), "{text}");
    assert!(text.contains("invalid record length 5"), "{text}");
    assert!(text.contains(&format!("{}: .bad file: not imported", f.bad_file.display())), "{text}");
    assert!(text.contains("Message IDs changed"), "{text}");

    let target = tempfile::tempdir().unwrap();
    let run = import(&f.go.path, target.path(), &["--json"]);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["message_ids_changed"], true);
    let topic = &report["topics"][0];
    assert_eq!(
        (topic["topic"].as_str(), topic["status"].as_str()),
        (Some("orders"), Some("imported"))
    );
    assert_eq!(topic["messages"], 8);
    let queue = |name: &str| {
        topic["queues"].as_array().unwrap().iter().find(|q| q["queue"] == name).unwrap().clone()
    };
    let own = queue("orders");
    assert_eq!(own["messages"], 4);
    assert_eq!(own["files_read"].as_array().unwrap().len(), 3, "several data files");
    assert_eq!(own["files_read"][0]["from_position"], 6 + 26, "after the consumed t0");
    let audit = queue("orders:audit");
    assert_eq!(audit["messages"], 2);
    let loss = &audit["findings"][0];
    assert_eq!(loss["severity"], "loss");
    assert_eq!(loss["file"], f.corrupt_file.to_str().unwrap());
    assert_eq!(loss["position"], f.corrupt_position);
    let billing = queue("orders:billing");
    assert_eq!(
        (billing["messages"].as_u64(), billing["bad_files_found"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(billing["paused"], true);
    assert_eq!(billing["attempts_kept"], 1);
}

#[test]
fn include_bad_imports_a_bad_file_up_to_its_first_invalid_record() {
    // Goal: with --include-bad, the records of a `.bad` file before its damage go to the queue
    // the file is named for, and the damage is reported. Method: import the fixture with the
    // flag, drain billing (which now gets bad0 and bad1) and audit (which does not).
    let f = fixture();
    let target = tempfile::tempdir().unwrap();
    let run = import(&f.go.path, target.path(), &["--include-bad", "--json"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let billing = report["topics"][0]["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "orders:billing")
        .unwrap()
        .clone();
    let bad_read = billing["files_read"].as_array().unwrap().iter().find(|f| f["bad"] == true);
    assert_eq!(bad_read.unwrap()["messages"], 2);
    let bad_damage = billing["findings"].as_array().unwrap().iter().any(|finding| {
        finding["file"] == f.bad_file.to_str().unwrap()
            && finding["position"] == 2 * (4 + 26 + "badN".len())
    });
    assert!(bad_damage, "{billing:#}");

    let engine = open(target.path());
    let billing = with_topic(&[("bad0", 1), ("bad1", 0), ("b0", 2), ("b1", 0)]);
    assert_eq!(drain(&engine, "orders", "billing"), expected(&billing));
    let audit = with_topic(&[("a0", 0), ("a1", 5)]);
    assert_eq!(drain(&engine, "orders", "audit"), expected(&audit));
}

#[test]
fn a_paused_topic_holds_its_own_messages_and_a_topic_without_channels_keeps_them() {
    // Goal: pause states and orphan messages survive the import, and ephemeral names in
    // nsqd.dat are skipped with a note. Method: import a paused topic with one channel and a
    // topic with `"channels": null`; check what is delivered before and after unpausing, and
    // what a first channel gets.
    let go = GoDir::new(
        r#"{"topics":[{"name":"events","paused":true,"channels":[{"name":"c","paused":false},
            {"name":"tmp#ephemeral","paused":false}]},
            {"name":"lonely","paused":false,"channels":null}],"version":"1.3.0"}"#,
    );
    let (_, end) = go.write_file("events", 0, &[("e0", 0), ("e1", 0)]);
    go.write_meta("events", 2, (0, 0), (0, end));
    let (_, end) = go.write_file("events:c", 0, &[("c0", 0)]);
    go.write_meta("events:c", 1, (0, 0), (0, end));
    let (_, end) = go.write_file("lonely", 7, &[("l0", 0), ("l1", 0)]);
    go.write_meta("lonely", 2, (7, 0), (7, end));
    let target = tempfile::tempdir().unwrap();
    let run = import(&go.path, target.path(), &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("tmp#ephemeral"), "{}", run.stdout);

    let engine = open(target.path());
    let events = engine.get_topic("events").unwrap();
    assert!(events.is_paused());
    assert!(events.get_channel("tmp#ephemeral").is_none());
    assert_eq!(drain(&engine, "events", "c"), expected(&[("c0", 0)]));
    events.unpause().unwrap();
    assert_eq!(drain(&engine, "events", "c"), expected(&[("e0", 0), ("e1", 0)]));

    let lonely = engine.get_topic("lonely").unwrap();
    assert!(lonely.channels().is_empty());
    lonely.channel("first").unwrap();
    assert_eq!(drain(&engine, "lonely", "first"), expected(&[("l0", 0), ("l1", 0)]));
}

#[test]
fn a_stale_meta_file_is_salvaged_to_the_end_and_a_missing_one_imports_nothing_unless_asked() {
    // Goal: Go's crash rules: a meta file behind the data is read past to the end of the write
    // file; a queue without a meta file is empty, as Go would have it, unless
    // --salvage-without-meta. Method: one topic of each kind, imported with and without the flag.
    let go = GoDir::new(
        r#"{"topics":[{"name":"stale","paused":false,"channels":[]},
            {"name":"nometa","paused":false,"channels":[]}],"version":"1.3.0"}"#,
    );
    let (positions, _) = go.write_file("stale", 0, &[("s0", 0), ("s1", 0), ("s2", 0)]);
    go.write_meta("stale", 1, (0, positions[1]), (0, positions[2]));
    go.write_file("nometa", 0, &[("n0", 0)]);

    let target = tempfile::tempdir().unwrap();
    let run = import(&go.path, target.path(), &[]);
    assert_eq!(run.code, 1, "the queue without a meta file is a loss: {}", run.stdout);
    assert!(run.stdout.contains("meta file older than the data"), "{}", run.stdout);
    assert!(run.stdout.contains("no meta file"), "{}", run.stdout);
    let engine = open(target.path());
    engine.get_topic("stale").unwrap().channel("c").unwrap();
    assert_eq!(drain(&engine, "stale", "c"), expected(&[("s1", 0), ("s2", 0)]));
    engine.get_topic("nometa").unwrap().channel("c").unwrap();
    assert_eq!(drain(&engine, "nometa", "c"), expected(&[]));
    drop(engine);

    let target = tempfile::tempdir().unwrap();
    let run = import(&go.path, target.path(), &["--salvage-without-meta"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    let engine = open(target.path());
    engine.get_topic("nometa").unwrap().channel("c").unwrap();
    assert_eq!(drain(&engine, "nometa", "c"), expected(&[("n0", 0)]));
}

#[test]
fn an_existing_topic_is_refused_untouched_and_the_others_are_imported() {
    // Goal: an import never merges into a topic of the target. Method: create `orders` with a
    // message of its own in the target, import a source with `orders` and `events`; expect exit
    // 2, `orders` as it was, `events` imported.
    let go = GoDir::new(
        r#"{"topics":[{"name":"orders","paused":false,"channels":null},
            {"name":"events","paused":false,"channels":null}],"version":"1.3.0"}"#,
    );
    for queue in ["orders", "events"] {
        let (_, end) = go.write_file(queue, 0, &[("x", 0)]);
        go.write_meta(queue, 1, (0, 0), (0, end));
    }
    let target = tempfile::tempdir().unwrap();
    {
        let engine = open(target.path());
        let orders = engine.topic("orders").unwrap();
        orders.publish(&[b"mine"], std::time::Duration::ZERO).unwrap();
        engine.close().unwrap();
    }
    let run = import(&go.path, target.path(), &[]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("topic orders: NOT IMPORTED: exists in the target"),
        "{}",
        run.stdout
    );
    let engine = open(target.path());
    let orders = engine.get_topic("orders").unwrap();
    orders.channel("c").unwrap();
    let mine: Vec<String> = drain(&engine, "orders", "c").into_iter().map(|m| m.0).collect();
    assert_eq!(mine, ["mine"]);
    engine.get_topic("events").unwrap().channel("c").unwrap();
    assert_eq!(drain(&engine, "events", "c"), expected(&[("x", 0)]));
}

#[test]
fn a_target_held_by_a_running_nsqd_is_refused() {
    // Goal: the import never writes under a live engine. Method: hold the target open in this
    // process while the binary runs; expect exit 8 naming the lock, and no topic afterwards.
    let f = fixture();
    let target = tempfile::tempdir().unwrap();
    let engine = open(target.path());
    let run = import(&f.go.path, target.path(), &[]);
    assert_eq!(run.code, 8, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("locked"), "{}", run.stderr);
    drop(engine);
    // Read from a copy: sled's threads may still hold the store's lock for a moment after drop.
    let audit = engine::check::audit_copy(&target.path().join(engine::META_DIR_NAME)).unwrap();
    assert!(audit.topics.is_empty(), "no topic written: {:?}", audit.topics);
}

#[test]
fn a_source_held_by_a_running_go_nsqd_is_refused() {
    // Goal: a Go nsqd still writing its queues is not read half-way. Method: take the exclusive
    // flock Go nsqd takes on its data path, run the import; expect exit 8 and no target written.
    let f = fixture();
    let held = std::fs::File::open(&f.go.path).unwrap();
    held.lock().unwrap();
    let target = tempfile::tempdir().unwrap();
    let run = import(&f.go.path, &target.path().join("data"), &[]);
    assert_eq!(run.code, 8, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("a Go nsqd is running"), "{}", run.stderr);
    assert!(!target.path().join("data").exists());
}
