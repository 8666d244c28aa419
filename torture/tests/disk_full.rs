#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::cast_possible_truncation)]
//! Disk full (DESIGN.md §3.4 item 6): nsqd on a small filesystem fills it; publishes fail with
//! the protocol's error (`E_PUB_FAILED`/`E_MPUB_FAILED`, fatal as every PUB error is in NSQ;
//! HTTP 500 `{"message":"INTERNAL_ERROR"}`), nothing acknowledged is lost, and publishing
//! resumes once space is freed, without a restart.
//!
//! Method: a tmpfs of [`MOUNT_BYTES`] holds a filler file and nsqd's data directory
//! (`--mem-queue-size=0`, so `OK` means written; small segments, so filling crosses many rolls).
//! A publisher sends self-checking bodies (sequence number, payload derived from it, CRC:
//! [`sequenced_body`]) by PUB and MPUB until the disk is full, then tops the last page off with
//! the smallest bodies, and probes a segment roll with a body larger than a segment has room
//! for. While full it checks the error frames and that nsqd closes the connection after them,
//! HTTP `/pub` and `/mpub`, a new topic and a new channel, and a channel checkpoint that makes
//! sled (the metadata store) fail with ENOSPC: nsqd must stay up through all of it. Then the
//! filler is deleted and publishing must resume in the same process. Then the disk is filled
//! once more, nsqd is killed with SIGKILL while full and restarted on the full disk (it may
//! refuse to start, but only cleanly, saying why), space is freed, nsqd restarted, and a
//! consumer drains the channel: every acknowledged message arrives intact, nothing that was
//! never published appears, only messages delivered before the crash come twice, and nothing
//! is left over.
//!
//! A second test covers what goes through sled: sled refuses every write after its first
//! ENOSPC until it is reopened, so the engine reopens it and writes its state again; new
//! topics, channel checkpoints and so retention must work again once space has returned.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::BufMut;
use protocol::command::Command;
use protocol::frame::Frame;
use torture::diskfull::{
    HttpResponse, MountError, TmpfsMount, check_sequenced_body, http, sequenced_body,
};
use torture::hostile::{End, RawConn};
use torture::{Launcher, NsqdProcess};

/// Size of the tmpfs: small, so that filling it takes a second or two in a debug build.
const MOUNT_BYTES: u64 = 12 << 20;
/// The filler file deleted to make space again.
const FILLER_BYTES: usize = 3 << 20;
/// `--max-bytes-per-file`: many segments, so filling crosses many rolls.
const SEGMENT_BYTES: u64 = 256 << 10;
/// A body larger than what a segment with a record in it has room for: publishing it rolls.
const ROLL_PROBE_BYTES: usize = 300 << 10;
const TOPIC: &str = "full";
const CHANNEL: &str = "c";
/// Any single step that waits on nsqd.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// What was published: sequence number to body length, acknowledged or failed.
#[derive(Debug, Default)]
struct Ledger {
    next_seq: u64,
    acked: BTreeMap<u64, usize>,
    /// Sent and answered with an error. Such a message may appear (as in NSQ, an error does not
    /// promise it was not written); this engine truncates a failed write, so none should.
    failed: BTreeSet<u64>,
}

impl Ledger {
    fn next(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    fn record(&mut self, seq: u64, len: usize, outcome: &Outcome) {
        match outcome {
            Outcome::Ok => self.acked.insert(seq, len),
            Outcome::Error { .. } => self.failed.insert(seq).then_some(0),
        };
    }
}

/// The outcome of one publish command.
#[derive(Debug)]
enum Outcome {
    Ok,
    /// An error frame, and whether nsqd closed the connection after it.
    Error {
        text: String,
        closed: bool,
    },
}

fn flags() -> Vec<String> {
    vec!["--mem-queue-size=0".into(), format!("--max-bytes-per-file={SEGMENT_BYTES}")]
}

async fn step<T>(what: &str, work: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP_TIMEOUT, work).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: no answer within {STEP_TIMEOUT:?}"),
    }
}

/// Sends one publish command and reads its answer; after an error, whether the connection
/// was closed (it must be: every PUB/MPUB error is fatal in NSQ).
async fn publish(conn: &mut RawConn, command: Command<'_>) -> Outcome {
    conn.command(command).await.expect("sending a publish");
    match conn.next_reply(STEP_TIMEOUT).await {
        Ok(Frame::Response(body)) if body == "OK" => Outcome::Ok,
        Ok(Frame::Error(text)) => {
            let after = conn.next_reply(STEP_TIMEOUT).await;
            let closed = matches!(after, Err(End::Eof | End::Reset));
            Outcome::Error { text: String::from_utf8_lossy(&text).into_owned(), closed }
        }
        other => panic!("unexpected reply to a publish: {other:?}"),
    }
}

async fn pub_one(conn: &mut RawConn, ledger: &mut Ledger, len: usize) -> Outcome {
    let seq = ledger.next();
    let body = sequenced_body(seq, len);
    let outcome = publish(conn, Command::Pub { topic: TOPIC, body: &body }).await;
    ledger.record(seq, body.len(), &outcome);
    outcome
}

async fn mpub(conn: &mut RawConn, ledger: &mut Ledger, lens: &[usize]) -> Outcome {
    let bodies: Vec<(u64, Vec<u8>)> = lens
        .iter()
        .map(|&len| {
            let seq = ledger.next();
            (seq, sequenced_body(seq, len))
        })
        .collect();
    let slices: Vec<&[u8]> = bodies.iter().map(|(_, b)| b.as_slice()).collect();
    let outcome = publish(conn, Command::Mpub { topic: TOPIC, bodies: &slices }).await;
    for (seq, body) in &bodies {
        ledger.record(*seq, body.len(), &outcome);
    }
    outcome
}

fn assert_failed(outcome: &Outcome, code: &str, what: &str) {
    match outcome {
        Outcome::Error { text, closed } => {
            assert!(text.starts_with(&format!("{code} ")), "{what}: expected {code}, got {text:?}");
            assert!(closed, "{what}: {code} is fatal in NSQ, but the connection stayed open");
        }
        Outcome::Ok => panic!("{what}: expected {code}, got OK"),
    }
}

async fn open(nsqd: &NsqdProcess) -> RawConn {
    step("connect", RawConn::connect(nsqd.tcp(), true)).await.expect("connecting to nsqd")
}

/// Sends a command that must be answered `OK`.
async fn expect_ok(conn: &mut RawConn, command: Command<'_>, what: &str) {
    conn.command(command).await.unwrap();
    let reply = conn.next_reply(STEP_TIMEOUT).await;
    assert!(matches!(&reply, Ok(Frame::Response(ok)) if ok == "OK"), "{what}: {reply:?}");
}

/// Publishes (PUB and MPUB, 0.5-4 KiB bodies) until the disk is full, then fills what is
/// left of the last page with the smallest bodies until three in a row fail. Returns the
/// first failure.
async fn fill(nsqd: &NsqdProcess, ledger: &mut Ledger, rng: &mut fastrand::Rng) -> Outcome {
    let mut conn = open(nsqd).await;
    let started = Instant::now();
    let first_failure = loop {
        assert!(started.elapsed() < STEP_TIMEOUT * 3, "the disk never filled up");
        if rng.u8(..4) == 0 {
            let lens: Vec<usize> = (0..rng.usize(2..24)).map(|_| rng.usize(500..3000)).collect();
            let outcome = mpub(&mut conn, ledger, &lens).await;
            if let Outcome::Error { .. } = &outcome {
                assert_failed(&outcome, "E_MPUB_FAILED", "MPUB on a full disk");
                break outcome;
            }
        } else {
            let outcome = pub_one(&mut conn, ledger, rng.usize(1000..4000)).await;
            if let Outcome::Error { .. } = &outcome {
                assert_failed(&outcome, "E_PUB_FAILED", "PUB on a full disk");
                break outcome;
            }
        }
    };
    let mut failures_in_a_row = 0;
    let mut conn = open(nsqd).await;
    while failures_in_a_row < 3 {
        match pub_one(&mut conn, ledger, 12).await {
            Outcome::Ok => failures_in_a_row = 0,
            outcome => {
                assert_failed(&outcome, "E_PUB_FAILED", "a small PUB on a full disk");
                failures_in_a_row += 1;
                conn = open(nsqd).await;
            }
        }
    }
    first_failure
}

fn segment_files(data: &Path, topic: &str) -> Vec<(PathBuf, u64)> {
    let dir = data.join("topics").join(topic);
    let mut files: Vec<(PathBuf, u64)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".seg"))
        .map(|entry| (entry.path(), entry.metadata().unwrap().len()))
        .collect();
    files.sort();
    files
}

fn assert_http_internal_error(response: &HttpResponse, what: &str) {
    assert_eq!(
        (response.status, response.text().as_str()),
        (500, r#"{"message":"INTERNAL_ERROR"}"#),
        "{what}"
    );
}

fn binary_mpub(bodies: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    out.put_u32(bodies.len() as u32);
    for body in bodies {
        out.put_u32(body.len() as u32);
        out.extend_from_slice(body);
    }
    out
}

/// Everything that must fail cleanly while the disk is full.
async fn check_while_full(nsqd: &mut NsqdProcess, data: &Path, ledger: &mut Ledger) {
    let mut conn = open(nsqd).await;
    let outcome = pub_one(&mut conn, ledger, 2000).await;
    assert_failed(&outcome, "E_PUB_FAILED", "PUB while full");
    let mut conn = open(nsqd).await;
    let outcome = mpub(&mut conn, ledger, &[100, 2000, 3000]).await;
    assert_failed(&outcome, "E_MPUB_FAILED", "MPUB while full");

    // A roll: the new segment cannot be created, and nothing of it stays behind.
    let before = segment_files(data, TOPIC);
    let mut conn = open(nsqd).await;
    let outcome = pub_one(&mut conn, ledger, ROLL_PROBE_BYTES).await;
    assert_failed(&outcome, "E_PUB_FAILED", "a PUB that rolls the segment while full");
    let next_segment = format!("{:020}.seg", ledger.acked.len());
    if let Outcome::Error { text, .. } = &outcome {
        assert!(text.contains(&next_segment), "the roll probe failed elsewhere: {text}");
    }
    assert_eq!(segment_files(data, TOPIC), before, "a failed roll left segment files changed");

    // HTTP: 500 with NSQ's error body.
    let http_addr = nsqd.http();
    let seq = ledger.next();
    let body = sequenced_body(seq, 2000);
    ledger.failed.insert(seq);
    let response = http(http_addr, "POST", &format!("/pub?topic={TOPIC}"), &body).await.unwrap();
    assert_http_internal_error(&response, "/pub while full");
    let seq = ledger.next();
    let body = sequenced_body(seq, 1500);
    ledger.failed.insert(seq);
    let path = format!("/mpub?topic={TOPIC}&binary=true");
    let response = http(http_addr, "POST", &path, &binary_mpub(&[&body])).await.unwrap();
    assert_http_internal_error(&response, "/mpub while full");
    // NSQ's health is the outcome of the last write: /ping says NOK with the error.
    let ping = http(http_addr, "GET", "/ping", b"").await.unwrap();
    assert_eq!(ping.status, 500, "/ping while full: {:?}", ping.text());
    assert!(ping.text().starts_with("NOK - "), "/ping while full: {:?}", ping.text());

    // New metadata: a topic needs a segment file, a channel its catalog file (and both sled).
    let mut conn = open(nsqd).await;
    let body = sequenced_body(u64::MAX, 100);
    let outcome = publish(&mut conn, Command::Pub { topic: "new_while_full", body: &body }).await;
    assert_failed(&outcome, "E_PUB_FAILED", "PUB to a new topic while full");
    let mut conn = open(nsqd).await;
    conn.command(Command::Sub { topic: TOPIC, channel: "new_channel" }).await.unwrap();
    match conn.next_reply(STEP_TIMEOUT).await {
        Ok(Frame::Error(text)) if text.starts_with(b"E_SUB_FAILED ") => {}
        other => panic!("SUB to a new channel while full: expected E_SUB_FAILED, got {other:?}"),
    }
    let path = format!("/channel/create?topic={TOPIC}&channel=other");
    let created = http(http_addr, "POST", &path, b"").await.unwrap();
    assert_http_internal_error(&created, "/channel/create while full");
    assert!(nsqd.is_running(), "nsqd died while full:\n{}", nsqd.last_log_lines());
}

/// Publishes again after space was freed: PUB (retried for a bounded time, should nsqd need
/// a moment), then 20 PUBs, an MPUB of 10 and an HTTP /pub that must all succeed.
async fn publish_after_freeing(nsqd: &NsqdProcess, ledger: &mut Ledger, what: &str) -> u32 {
    let deadline = Instant::now() + STEP_TIMEOUT;
    let mut pace = tokio::time::interval(Duration::from_millis(100));
    let mut conn = open(nsqd).await;
    let mut attempts = 0;
    loop {
        attempts += 1;
        match pub_one(&mut conn, ledger, 3000).await {
            Outcome::Ok => break,
            outcome => {
                assert!(
                    Instant::now() < deadline,
                    "{what}: publishing did not resume after space was freed: {outcome:?}\n{}",
                    nsqd.last_log_lines()
                );
                pace.tick().await;
                conn = open(nsqd).await;
            }
        }
    }
    for _ in 0..20 {
        assert!(matches!(pub_one(&mut conn, ledger, 2500).await, Outcome::Ok), "{what}: PUB");
    }
    assert!(matches!(mpub(&mut conn, ledger, &[1000; 10]).await, Outcome::Ok), "{what}: MPUB");
    let seq = ledger.next();
    let body = sequenced_body(seq, 1234);
    let response = http(nsqd.http(), "POST", &format!("/pub?topic={TOPIC}"), &body).await.unwrap();
    assert_eq!((response.status, response.text().as_str()), (200, "OK"), "{what}: /pub");
    ledger.acked.insert(seq, body.len());
    attempts
}

/// A consumer of [`TOPIC`] that checks every body and FINs (or REQs) it.
struct Consumer {
    conn: RawConn,
    /// Sequence number and attempts of every delivery, in order.
    got: Vec<(u64, u16)>,
}

impl Consumer {
    async fn subscribe(addr: SocketAddr, channel: &str, rdy: u64) -> Self {
        let mut conn = step("connect", RawConn::connect(addr, true)).await.unwrap();
        expect_ok(&mut conn, Command::Sub { topic: TOPIC, channel }, "SUB").await;
        conn.command(Command::Rdy(rdy)).await.unwrap();
        Self { conn, got: Vec::new() }
    }

    /// Receives one message within `wait`, checks it is intact, FINs it or REQs it after
    /// `requeue_ms`; `None` if none came.
    async fn receive_within(&mut self, wait: Duration, requeue_ms: Option<u64>) -> Option<u64> {
        let message = match self.conn.next_reply(wait).await {
            Ok(Frame::Message(message)) => message,
            Err(End::TimedOut) => return None,
            other => panic!("unexpected frame while consuming: {other:?}"),
        };
        let seq = check_sequenced_body(&message.body).unwrap_or_else(|| {
            panic!("a damaged body of {} bytes, id {:?}", message.body.len(), message.id)
        });
        let command = match requeue_ms {
            Some(timeout_ms) => Command::Req { id: &message.id, timeout_ms },
            None => Command::Fin(&message.id),
        };
        self.conn.command(command).await.unwrap();
        self.got.push((seq, message.attempts));
        Some(seq)
    }

    /// Receives one message (it must come within [`STEP_TIMEOUT`]).
    async fn receive(&mut self, requeue_ms: Option<u64>) -> u64 {
        let seq = self.receive_within(STEP_TIMEOUT, requeue_ms).await;
        seq.unwrap_or_else(|| panic!("no message within {STEP_TIMEOUT:?}"))
    }

    /// Receives until every one of `wanted` arrived.
    async fn receive_all(&mut self, wanted: &BTreeSet<u64>) {
        let mut missing = wanted.clone();
        while !missing.is_empty() {
            let seq = self.receive(None).await;
            missing.remove(&seq);
        }
    }

    /// Receives whatever else is still in the channel, until nsqd reports it empty: nothing
    /// queued, in flight or deferred.
    async fn receive_rest(&mut self, http_addr: SocketAddr) {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let stats = channel_stats(http_addr).await;
            let counts = ["depth", "in_flight_count", "deferred_count"].map(|k| stats[k].clone());
            if counts.iter().all(|v| v.as_u64() == Some(0)) {
                return;
            }
            assert!(Instant::now() < deadline, "the channel does not empty: {stats}");
            // What is left is in flight to this consumer, or will be.
            self.receive_within(Duration::from_secs(1), None).await;
        }
    }
}

async fn channel_stats(http_addr: SocketAddr) -> serde_json::Value {
    let path = format!("/stats?format=json&topic={TOPIC}&channel={CHANNEL}");
    let response = http(http_addr, "GET", &path, b"").await.unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    let stats: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    stats["topics"][0]["channels"]
        .as_array()
        .and_then(|channels| channels.iter().find(|c| c["channel_name"] == CHANNEL))
        .cloned()
        .unwrap_or_else(|| panic!("no channel {CHANNEL} in {stats}"))
}

/// Writes zeros to `path` until the filesystem is full.
fn fill_the_rest(path: &Path) {
    use std::io::Write as _;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0x5au8; 64 << 10];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
}

/// Waits (bounded) until nsqd's recent log has a line containing `needle`.
async fn wait_for_log(nsqd: &NsqdProcess, needle: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut pace = tokio::time::interval(Duration::from_millis(50));
    while Instant::now() < deadline {
        if nsqd.last_log_lines().contains(needle) {
            return true;
        }
        pace.tick().await;
    }
    false
}

/// Whether this runs on CI (`CI` set, and not to `false` or `0`), where skipping is a failure.
fn on_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"))
}

/// A tmpfs with a filler file and an empty data directory; `None` (and a message) when
/// mounting is not permitted here and `CI` is not set.
fn mount(tmp: &Path, filler_bytes: usize) -> Option<(TmpfsMount, PathBuf, PathBuf)> {
    let mountpoint = tmp.join("mnt");
    std::fs::create_dir(&mountpoint).unwrap();
    let mount = match TmpfsMount::mount(&mountpoint, MOUNT_BYTES) {
        Ok(mount) => mount,
        Err(MountError::NotPermitted(why)) if !on_ci() => {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs here ({why}). Run as root; with CI set this is a \
                 failure."
            );
            return None;
        }
        Err(error) => panic!("mounting a tmpfs on {}: {error:?}", mountpoint.display()),
    };
    let filler = mount.dir().join("filler");
    std::fs::write(&filler, vec![0xa5u8; filler_bytes]).unwrap();
    let data = mount.dir().join("data");
    std::fs::create_dir(&data).unwrap();
    Some((mount, filler, data))
}

async fn create_channel(nsqd: &NsqdProcess) {
    for path in [
        format!("/topic/create?topic={TOPIC}"),
        format!("/channel/create?topic={TOPIC}&channel={CHANNEL}"),
    ] {
        let response = http(nsqd.http(), "POST", &path, b"").await.unwrap();
        assert_eq!(response.status, 200, "{path}: {}", response.text());
    }
}

/// Makes a channel checkpoint write to sled while the disk is full: a consumer REQs
/// messages with a delay, so the next checkpoint must store deferred entries. Returns what it
/// received; panics if sled did not fail.
async fn make_sled_fail(nsqd: &NsqdProcess) -> Vec<(u64, u16)> {
    let mut consumer = Consumer::subscribe(nsqd.tcp(), CHANNEL, 300).await;
    for _ in 0..300 {
        consumer.receive(Some(3000)).await;
    }
    let failed = wait_for_log(nsqd, "checkpoint failed", Duration::from_secs(10)).await;
    assert!(failed, "no checkpoint failed on the full disk:\n{}", nsqd.last_log_lines());
    consumer.got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_fails_publishes_cleanly_and_recovers_without_restart() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    // Declared first, dropped last: nsqd is killed before the tmpfs is unmounted.
    let Some((_mount, filler, data)) = mount(tmp.path(), FILLER_BYTES) else { return };
    let launcher = Launcher::embedded(env!("CARGO_BIN_EXE_nsq-torture"));
    let mut nsqd = launcher.start(&data, &flags()).unwrap();
    create_channel(&nsqd).await;
    let mut rng = fastrand::Rng::with_seed(0x00d1_5cf0);
    let mut ledger = Ledger::default();

    // 1. Full: clean failures, nsqd up, sled failing too.
    let first = fill(&nsqd, &mut ledger, &mut rng).await;
    let segments = segment_files(&data, TOPIC).len();
    eprintln!(
        "full after {} acknowledged messages in {segments} segments; first failure: {first:?}",
        ledger.acked.len()
    );
    assert!(segments > 10, "only {segments} segments: the fill crossed too few rolls");
    check_while_full(&mut nsqd, &data, &mut ledger).await;
    let before_crash = make_sled_fail(&nsqd).await;
    assert!(nsqd.is_running(), "nsqd died when sled failed:\n{}", nsqd.last_log_lines());

    // 2. Space returns: publishing resumes in the same process.
    std::fs::remove_file(&filler).unwrap();
    let attempts = publish_after_freeing(&nsqd, &mut ledger, "after freeing space").await;
    eprintln!("publishing resumed at attempt {attempts} after space was freed");
    let ping = http(nsqd.http(), "GET", "/ping", b"").await.unwrap();
    assert_eq!((ping.status, ping.text()), (200, "OK".to_owned()), "/ping after a good write");

    // 3. Full again, SIGKILL, restart on the full disk.
    fill_the_rest(&filler);
    fill(&nsqd, &mut ledger, &mut rng).await;
    nsqd.kill9().unwrap();
    let nsqd = match launcher.start(&data, &flags()) {
        Ok(mut nsqd) => {
            eprintln!("nsqd started on the full disk");
            let mut conn = open(&nsqd).await;
            let outcome = pub_one(&mut conn, &mut ledger, 2000).await;
            assert_failed(&outcome, "E_PUB_FAILED", "PUB after a restart on a full disk");
            assert!(nsqd.is_running());
            std::fs::remove_file(&filler).unwrap();
            nsqd
        }
        Err(error) => {
            // Refusing is allowed (nsqd too must write to start), but cleanly and saying why.
            let error = format!("{error:#}");
            eprintln!("nsqd refused to start on the full disk: {error}");
            assert!(error.contains("No space left on device"), "an unclear refusal: {error}");
            std::fs::remove_file(&filler).unwrap();
            launcher.start(&data, &flags()).unwrap()
        }
    };
    publish_after_freeing(&nsqd, &mut ledger, "after the restart").await;
    // What failed to be created while full left nothing in the way.
    let mut conn = open(&nsqd).await;
    let body = sequenced_body(u64::MAX, 100);
    let outcome = publish(&mut conn, Command::Pub { topic: "new_while_full", body: &body }).await;
    assert!(matches!(outcome, Outcome::Ok), "the topic that failed while full: {outcome:?}");
    let mut conn = open(&nsqd).await;
    let sub = Command::Sub { topic: TOPIC, channel: "new_channel" };
    expect_ok(&mut conn, sub, "SUB to the channel that failed while full").await;
    drop(conn);

    // 4. Drain the channel: every acknowledged message intact, nothing never published, and
    // duplicates only of what was delivered before the crash.
    let mut consumer = Consumer::subscribe(nsqd.tcp(), CHANNEL, 500).await;
    let wanted: BTreeSet<u64> = ledger.acked.keys().copied().collect();
    consumer.receive_all(&wanted).await;
    consumer.receive_rest(nsqd.http()).await;
    let delivered_before: BTreeSet<u64> = before_crash.iter().map(|(seq, _)| *seq).collect();
    let mut seen = BTreeSet::new();
    let mut failed_but_delivered = 0;
    for &(seq, attempts) in &consumer.got {
        let acked = ledger.acked.contains_key(&seq);
        assert!(acked || ledger.failed.contains(&seq), "message {seq} was never published");
        failed_but_delivered += usize::from(!acked);
        let again = !seen.insert(seq);
        assert!(
            !again || delivered_before.contains(&seq),
            "message {seq} delivered twice (attempts {attempts}), not delivered before the crash"
        );
    }
    eprintln!(
        "{} acknowledged, {} failed publishes; drained {} deliveries, all acknowledged ones \
         intact; {failed_but_delivered} failed ones delivered; took {:?}",
        ledger.acked.len(),
        ledger.failed.len(),
        consumer.got.len(),
        started.elapsed()
    );
    let status = nsqd.terminate().unwrap();
    assert!(status.success(), "nsqd did not exit cleanly: {status}");
}

/// The contract's "writing resumes when space returns", for what goes through sled: after
/// sled's first ENOSPC every sled write fails until the store is reopened (sled keeps the error
/// as a global error); without the reopen a new topic could not be created, channel
/// checkpoints would keep failing, and retention, which follows checkpoints, would never free
/// the consumed segments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_writes_resume_when_space_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((_mount, filler, data)) = mount(tmp.path(), FILLER_BYTES) else { return };
    let launcher = Launcher::embedded(env!("CARGO_BIN_EXE_nsq-torture"));
    let nsqd = launcher.start(&data, &flags()).unwrap();
    create_channel(&nsqd).await;
    let mut rng = fastrand::Rng::with_seed(0x5_1ed);
    let mut ledger = Ledger::default();
    fill(&nsqd, &mut ledger, &mut rng).await;
    make_sled_fail(&nsqd).await;
    std::fs::remove_file(&filler).unwrap();

    // A new topic: bounded retries.
    let deadline = Instant::now() + STEP_TIMEOUT;
    let mut pace = tokio::time::interval(Duration::from_millis(100));
    loop {
        pace.tick().await;
        let mut conn = open(&nsqd).await;
        let body = sequenced_body(u64::MAX, 100);
        let outcome = publish(&mut conn, Command::Pub { topic: "after_full", body: &body }).await;
        if matches!(outcome, Outcome::Ok) {
            break;
        }
        assert!(Instant::now() < deadline, "no new topic after space returned: {outcome:?}");
    }
    // Checkpoints and retention: once everything is FINished, the consumed segments go.
    let mut consumer = Consumer::subscribe(nsqd.tcp(), CHANNEL, 500).await;
    consumer.receive_all(&ledger.acked.keys().copied().collect()).await;
    consumer.receive_rest(nsqd.http()).await;
    let deadline = Instant::now() + STEP_TIMEOUT;
    let mut pace = tokio::time::interval(Duration::from_millis(100));
    while segment_files(&data, TOPIC).len() > 1 {
        assert!(
            Instant::now() < deadline,
            "consumed segments were not removed: {} left\n{}",
            segment_files(&data, TOPIC).len(),
            nsqd.last_log_lines()
        );
        pace.tick().await;
    }
}
