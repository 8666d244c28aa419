#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::cast_possible_truncation)]
//! Hostile clients (DESIGN.md §4): random and mutated commands, oversized frames, slow partial
//! frames, RDY storms, thousands of idle connections and abrupt disconnects against one live
//! nsqd. It stays up, its memory stays bounded, hostile connections get the protocol errors NSQ
//! would send where that is checkable, and a well-behaved client beside them keeps working.
//!
//! Method: nsqd runs as a child process, so its memory and sockets can be read from `/proc`.
//! 1. Declared sizes of 1 GiB (PUB, DPUB, MPUB, IDENTIFY) and 2 GB (HTTP), bodies never sent:
//!    the error comes back without them, and nsqd's peak virtual size shows none was allocated.
//! 2. [`IDLE_CONNECTIONS`] idle connections, held to the end: a third without the magic, a third
//!    after it, a third stalled inside a command. And [`DEAF_CONSUMERS`] consumers that
//!    subscribe with the largest RDY to large messages and never read, held through shutdown.
//! 3. A good publisher and consumer on their own topic, through both rounds below.
//! 4. Two rounds, seeded and bounded in count, of everything at once: garbage after (and
//!    instead of) the magic; valid commands with one mutated; the exact error cases of NSQ.md
//!    §2.3 (each expected error text checked, and the hang-up after fatal ones); slow senders (a
//!    byte every few ms) that must get their OK, and stalled ones that nsqd must drop after two
//!    heartbeats; RDY storms on subscribed connections that then leave by a fatal RDY, by CLS or
//!    by a reset; consumers that vanish with messages in flight; snappy and DEFLATE connections
//!    sending garbage, compression bombs and mutated commands. After each round a clean
//!    consumer must get every message of the dropped and stormed channels (but those FINished)
//!    well before `--msg-timeout` (5 minutes here): in-flight messages went back to their
//!    channel at the disconnect.
//!
//! At the end: every good message was delivered within [`DELIVERY_BOUND`]; nsqd's peak RSS
//! stayed under [`rss_bound`] and the second round did not grow it by more than
//! [`ROUND_GROWTH_BOUND`]; every socket but the deaf consumers' was closed; SIGTERM stops nsqd
//! with exit status 0. Waiting is on conditions with deadlines (frames, EOF, socket counts),
//! never on sleeps.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BufMut;
use protocol::ErrorCode;
use protocol::command::Command;
use protocol::compression::{Compression, Compressor};
use protocol::frame::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;
use torture::hostile::{
    Drained, End, RawConn, frame_error_code, garbage, mutate, open_files_limit, open_sockets,
    proc_status_bytes, valid_command,
};
use torture::{Conn, Launcher, NsqdProcess};

const SEED: u64 = 0x4057_11e5;
/// Idle connections held open for the whole run (fewer if the descriptor limit is low).
const IDLE_CONNECTIONS: usize = 2400;
const GOOD_TOPIC: &str = "good";
const GOOD_CHANNEL: &str = "ch";
/// Where hostile publishers and subscribers play.
const HOSTILE_TOPIC: &str = "hostile";
const DROP_CHANNEL: &str = "d";
const DROP_MESSAGES: u64 = 300;
const STORM_CHANNELS: usize = 3;
const STORM_MESSAGES: u64 = 300;
/// Consumers that never read, held through nsqd's shutdown.
const DEAF_CONSUMERS: usize = 4;
const DEAF_TOPIC: &str = "deaf";
/// How long SIGTERM may take with deaf consumers connected: a closing connection gives its
/// client 1 s to take what is buffered, well inside nsqd's 10 s `SHUTDOWN_GRACE`, which a
/// write blocked on a deaf client must not use up.
const TERMINATE_BOUND: Duration = Duration::from_secs(5);
/// nsqd's defaults, named here because the oversized cases are built around them.
const MAX_MSG_SIZE: u64 = 1_048_576;
const MAX_BODY_SIZE: u64 = 5_242_880;
const MAX_RDY: u64 = 2500;
/// Every good message must be delivered this soon after it was published.
const DELIVERY_BOUND: Duration = Duration::from_secs(10);
/// How long nsqd may take to answer or hang up on one hostile connection.
const REPLY_WAIT: Duration = Duration::from_secs(15);
/// A bound on each whole phase.
const PHASE_TIMEOUT: Duration = Duration::from_secs(90);

/// What the hostile workloads saw: error codes by workload, and anything wrong.
#[derive(Debug, Default)]
struct Tally {
    codes: BTreeMap<String, BTreeMap<&'static str, usize>>,
    ends: BTreeMap<String, BTreeMap<String, usize>>,
    problems: Vec<String>,
}

type SharedTally = Arc<Mutex<Tally>>;

/// One round of hostile clients: its seed, and the topics it plays on (the same each round).
#[derive(Debug)]
struct Round {
    index: u64,
    addr: SocketAddr,
    http: SocketAddr,
    seed: u64,
    drop_topic: String,
    storm_topic: String,
    tally: SharedTally,
    finned: Finned,
}

fn note(tally: &SharedTally, workload: &str, drained: &Drained) {
    let mut tally = tally.lock().unwrap();
    for code in drained.error_codes() {
        *tally.codes.entry(workload.to_owned()).or_default().entry(code.as_str()).or_default() += 1;
    }
    let end = match &drained.end {
        End::BadFrame(_) | End::Io(_) => "other",
        End::Eof => "eof",
        End::Reset => "reset",
        End::TimedOut => "timed out",
    };
    *tally.ends.entry(workload.to_owned()).or_default().entry(end.to_owned()).or_default() += 1;
    for frame in &drained.frames {
        if let Frame::Error(text) = frame
            && frame_error_code(frame).is_none()
        {
            tally.problems.push(format!("{workload}: an error frame without a code: {text:?}"));
        }
    }
    match &drained.end {
        End::Eof | End::Reset => {}
        End::TimedOut => tally
            .problems
            .push(format!("{workload}: nsqd did not hang up within {REPLY_WAIT:?}: {drained:?}")),
        End::BadFrame(e) => tally.problems.push(format!("{workload}: nsqd sent garbage: {e}")),
        End::Io(e) => tally.problems.push(format!("{workload}: {e}")),
    }
}

fn problem(tally: &SharedTally, text: String) {
    tally.lock().unwrap().problems.push(text);
}

fn big_endian(value: u32) -> [u8; 4] {
    let mut field = Vec::with_capacity(4);
    field.put_u32(value);
    [field[0], field[1], field[2], field[3]]
}

/// Runs `count` tasks made by `make`, at most `parallel` at a time.
async fn bounded<F, Fut>(count: usize, parallel: usize, make: F)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    for i in 0..count {
        if tasks.len() >= parallel {
            tasks.join_next().await.unwrap().unwrap();
        }
        tasks.spawn(make(i));
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Idle connections

#[derive(Debug)]
struct Idle {
    conns: Vec<RawConn>,
    opened: Instant,
}

async fn open_idle(addr: SocketAddr, count: usize) -> Idle {
    let opened = Instant::now();
    let mut conns = Vec::with_capacity(count);
    for i in 0..count {
        let mut conn = RawConn::connect(addr, i % 3 != 0).await.expect("an idle connection");
        if i % 3 == 2 {
            // Stalled inside a command: the line and half of the size.
            conn.send(b"PUB idle\n\x00\x00").await.unwrap();
        }
        conns.push(conn);
    }
    Idle { conns, opened }
}

// ---------------------------------------------------------------------------------------------
// The good client

#[derive(Debug, Default)]
struct GoodReport {
    published: u64,
    delivered: u64,
    max_latency: Duration,
    late: Vec<(u64, Duration)>,
}

/// Publishes sequence numbers on [`GOOD_TOPIC`] at a steady pace until `stop` turns true (and at
/// least 100 are out), then 20 more; returns when each was sent (keyed by sequence number).
async fn good_publisher(
    addr: SocketAddr,
    mut stop: watch::Receiver<bool>,
    sent: Arc<Mutex<HashMap<u64, Instant>>>,
    total: watch::Sender<Option<u64>>,
) {
    // RawConn, not Conn: its reads answer heartbeats and then look at what is already buffered.
    let mut conn = RawConn::connect(addr, true).await.unwrap();
    let mut pace = tokio::time::interval(Duration::from_millis(15));
    let mut seq = 0u64;
    let mut after_stop = None;
    while after_stop != Some(0) {
        pace.tick().await;
        if after_stop.is_none() && *stop.borrow_and_update() && seq >= 100 {
            after_stop = Some(20);
        }
        let batch: Vec<u64> = if seq % 10 == 9 { (seq..seq + 5).collect() } else { vec![seq] };
        let bodies: Vec<Vec<u8>> = batch.iter().map(|s| format!("good {s}").into_bytes()).collect();
        let now = Instant::now();
        sent.lock().unwrap().extend(batch.iter().map(|s| (*s, now)));
        let slices: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
        let command = if batch.len() == 1 {
            Command::Pub { topic: GOOD_TOPIC, body: slices[0] }
        } else {
            Command::Mpub { topic: GOOD_TOPIC, bodies: &slices }
        };
        conn.command(command).await.unwrap();
        let reply = conn.next_reply(DELIVERY_BOUND).await;
        assert!(matches!(&reply, Ok(Frame::Response(ok)) if ok == "OK"), "good {seq}: {reply:?}");
        seq += batch.len() as u64;
        after_stop = after_stop.map(|n: u64| n.saturating_sub(1));
    }
    total.send(Some(seq)).unwrap();
}

/// Consumes [`GOOD_TOPIC`] and FINs every message, until every published one arrived.
async fn good_consumer(
    addr: SocketAddr,
    sent: Arc<Mutex<HashMap<u64, Instant>>>,
    mut total: watch::Receiver<Option<u64>>,
) -> GoodReport {
    let mut conn = RawConn::connect(addr, true).await.unwrap();
    conn.command(Command::Sub { topic: GOOD_TOPIC, channel: GOOD_CHANNEL }).await.unwrap();
    let reply = conn.next_reply(DELIVERY_BOUND).await;
    assert!(matches!(&reply, Ok(Frame::Response(ok)) if ok == "OK"), "good SUB: {reply:?}");
    conn.command(Command::Rdy(100)).await.unwrap();
    let mut report = GoodReport::default();
    let mut seen = BTreeSet::new();
    let mut progress = Instant::now();
    loop {
        if let Some(total) = *total.borrow_and_update()
            && seen.len() as u64 == total
        {
            report.published = total;
            break;
        }
        // Short reads, so that the end of publishing is noticed; a cancelled read loses
        // nothing.
        let message = match conn.next_reply(Duration::from_millis(100)).await {
            Ok(Frame::Message(message)) => message,
            Err(End::TimedOut) if progress.elapsed() < DELIVERY_BOUND => continue,
            other => panic!(
                "the good consumer got no message for {:?} ({} of {:?} so far): {other:?}",
                progress.elapsed(),
                seen.len(),
                *total.borrow()
            ),
        };
        progress = Instant::now();
        let received = Instant::now();
        conn.command(Command::Fin(&message.id)).await.unwrap();
        let text = String::from_utf8_lossy(&message.body).into_owned();
        let seq: u64 = text.strip_prefix("good ").and_then(|s| s.parse().ok()).unwrap();
        if !seen.insert(seq) {
            continue; // a redelivery; none is expected, but it is not a loss
        }
        report.delivered += 1;
        let sent_at = sent.lock().unwrap().get(&seq).copied().unwrap();
        let latency = received.saturating_duration_since(sent_at);
        report.max_latency = report.max_latency.max(latency);
        if latency > DELIVERY_BOUND {
            report.late.push((seq, latency));
        }
    }
    report
}

// ---------------------------------------------------------------------------------------------
// Hostile workloads

/// Random bytes after the magic (they must get E_INVALID-like errors and a hang-up), and
/// instead of it (E_BAD_PROTOCOL).
async fn garbage_clients(round: Arc<Round>, count: usize) {
    let (addr, tally, seed) = (round.addr, Arc::clone(&round.tally), round.seed);
    bounded(count, 16, |i| {
        let tally = Arc::clone(&tally);
        async move {
            let mut rng = fastrand::Rng::with_seed(seed ^ 0x6a7b ^ i as u64);
            let magic = i % 4 != 0;
            let Ok(mut conn) = RawConn::connect(addr, magic).await else {
                return problem(&tally, format!("garbage {i}: connect failed"));
            };
            let len = rng.usize(1..6000);
            let mut bytes = garbage(&mut rng, len);
            if !magic && bytes.len() >= 4 && &bytes[..4] == protocol::MAGIC_V2 {
                bytes[0] = b'x';
            }
            let _ = conn.send(&bytes).await;
            let _ = conn.shutdown_write().await;
            let drained = conn.drain(REPLY_WAIT).await;
            let workload = if magic { "garbage" } else { "garbage (no magic)" };
            if !magic && bytes.len() >= 4 {
                let codes = drained.error_codes();
                if codes != [ErrorCode::BadProtocol] && drained.end != End::Reset {
                    problem(&tally, format!("bad magic {:?}: got {drained:?}", &bytes[..4]));
                }
            }
            note(&tally, workload, &drained);
        }
    })
    .await;
}

/// Valid commands with one of them mutated (bits flipped, bytes inserted or deleted, sizes
/// made extreme, tails cut).
async fn mutated_clients(round: Arc<Round>, count: usize) {
    let (addr, tally, seed) = (round.addr, Arc::clone(&round.tally), round.seed);
    bounded(count, 16, |i| {
        let tally = Arc::clone(&tally);
        async move {
            let mut rng = fastrand::Rng::with_seed(seed ^ 0x3717 ^ i as u64);
            let Ok(mut conn) = RawConn::connect(addr, true).await else {
                return problem(&tally, format!("mutated {i}: connect failed"));
            };
            let commands = rng.usize(1..4);
            let mutated = rng.usize(..commands);
            let mut bytes = Vec::new();
            for c in 0..commands {
                let command = valid_command(&mut rng, HOSTILE_TOPIC, "m");
                if c == mutated {
                    bytes.extend(mutate(&mut rng, &command));
                } else {
                    bytes.extend(command);
                }
            }
            let _ = conn.send(&bytes).await;
            let _ = conn.shutdown_write().await;
            let drained = conn.drain(REPLY_WAIT).await;
            note(&tally, "mutated", &drained);
        }
    })
    .await;
}

/// One exact case: `bytes` after the magic must get exactly the error frames whose texts
/// start with `expected`, and then a hang-up when the last one is fatal. The body of a
/// declared size is never sent: the answer must come without it (nsqd would otherwise wait
/// for it until its 60 s read deadline, well past [`REPLY_WAIT`]).
async fn expect_errors(
    addr: SocketAddr,
    tally: &SharedTally,
    name: &str,
    magic: bool,
    bytes: &[u8],
    expected: &[&str],
) {
    let Ok(mut conn) = RawConn::connect(addr, magic).await else {
        return problem(tally, format!("{name}: connect failed"));
    };
    conn.send(bytes).await.unwrap();
    let mut errors = Vec::new();
    while errors.len() < expected.len() {
        match conn.next_reply(REPLY_WAIT).await {
            Ok(Frame::Error(text)) => errors.push(String::from_utf8_lossy(&text).into_owned()),
            // The OK of a SUB before the command under test.
            Ok(Frame::Response(ok)) if ok == "OK" => {}
            Ok(other) => errors.push(format!("(not an error: {other:?})")),
            Err(end) => {
                errors.push(format!("(connection ended: {end:?})"));
                break;
            }
        }
    }
    let matches = errors.len() == expected.len()
        && errors.iter().zip(expected).all(|(got, want)| got.starts_with(want));
    if !matches {
        problem(tally, format!("{name}: expected {expected:?}, got {errors:?}"));
        return;
    }
    let last_fatal = expected
        .last()
        .and_then(|t| ErrorCode::parse(t.as_bytes()))
        .is_some_and(ErrorCode::is_fatal);
    if last_fatal {
        // Fatal: nsqd hangs up, though the client is still connected and silent.
        let rest = conn.drain(REPLY_WAIT).await;
        if !rest.closed_by_server() || !rest.error_codes().is_empty() {
            problem(tally, format!("{name}: after a fatal error: {rest:?}"));
        }
    }
    let mut tally = tally.lock().unwrap();
    let codes = tally.codes.entry("exact cases".to_owned()).or_default();
    for text in expected {
        let code = ErrorCode::parse(text.as_bytes()).map_or("?", ErrorCode::as_str);
        *codes.entry(code).or_default() += 1;
    }
}

/// Declared sizes far over the limits (never followed by the body), and the other exact
/// protocol errors of NSQ.md §2.3/2.4. Each case runs `repeat` times, 8 at a time.
async fn exact_cases(round: Arc<Round>, repeat: usize) {
    let (addr, tally) = (round.addr, Arc::clone(&round.tally));
    let gib = 1u32 << 30;
    let mut cases: Vec<(String, bool, Vec<u8>, Vec<String>)> = Vec::new();
    let mut case = |name: &str, magic: bool, bytes: Vec<u8>, expected: &[&str]| {
        let expected = expected.iter().map(|s| (*s).to_owned()).collect();
        cases.push((name.to_owned(), magic, bytes, expected));
    };
    let with_size = |line: &str, size: u32| -> Vec<u8> {
        let mut bytes = line.as_bytes().to_vec();
        bytes.extend(big_endian(size));
        bytes
    };
    case(
        "PUB declaring 1 GiB",
        true,
        with_size("PUB hostile\n", gib),
        &["E_BAD_MESSAGE PUB message too big 1073741824 > 1048576"],
    );
    case(
        "PUB declaring max-msg-size + 1",
        true,
        with_size("PUB hostile\n", MAX_MSG_SIZE as u32 + 1),
        &["E_BAD_MESSAGE PUB message too big"],
    );
    case(
        "DPUB declaring 1 GiB",
        true,
        with_size("DPUB hostile 10\n", gib),
        &["E_BAD_MESSAGE DPUB message too big"],
    );
    case(
        "PUB of size 0",
        true,
        with_size("PUB hostile\n", 0),
        &["E_BAD_MESSAGE PUB invalid message body size 0"],
    );
    case(
        "PUB of size -1",
        true,
        with_size("PUB hostile\n", u32::MAX),
        &["E_BAD_MESSAGE PUB invalid message body size -1"],
    );
    case("MPUB declaring 1 GiB", true, with_size("MPUB hostile\n", gib), &["E_BAD_BODY"]);
    case(
        "MPUB declaring max-body-size + 1",
        true,
        with_size("MPUB hostile\n", MAX_BODY_SIZE as u32 + 1),
        &["E_BAD_BODY"],
    );
    let mut huge_count = with_size("MPUB hostile\n", 8);
    huge_count.extend(big_endian(0x7fff_ffff));
    huge_count.extend(big_endian(1));
    case("MPUB with 2^31-1 messages", true, huge_count, &["E_BAD_BODY MPUB invalid message count"]);
    let mut big_element = with_size("MPUB hostile\n", 12);
    big_element.extend(big_endian(1));
    big_element.extend(big_endian(MAX_MSG_SIZE as u32 + 1));
    big_element.extend(b"abcd");
    case("MPUB element over max-msg-size", true, big_element, &["E_BAD_MESSAGE"]);
    case("IDENTIFY declaring 1 GiB", true, with_size("IDENTIFY\n", gib), &["E_BAD_BODY"]);
    let mut bad_json = with_size("IDENTIFY\n", 5);
    bad_json.extend(b"{nope");
    case("IDENTIFY with bad JSON", true, bad_json, &["E_BAD_BODY"]);
    case("bad magic", false, b"  V1".to_vec(), &["E_BAD_PROTOCOL"]);
    case("unknown command", true, b"WAT now\n".to_vec(), &["E_INVALID invalid command WAT"]);
    case("RDY before SUB", true, b"RDY 10\n".to_vec(), &["E_INVALID cannot RDY in current state"]);
    case(
        "RDY above max-rdy-count",
        true,
        format!("SUB {HOSTILE_TOPIC} x\nRDY {}\n", MAX_RDY + 1).into_bytes(),
        &["E_INVALID RDY count 2501 out of range 0-2500"],
    );
    case(
        "RDY not a number",
        true,
        format!("SUB {HOSTILE_TOPIC} x\nRDY -1\n").into_bytes(),
        &["E_INVALID"],
    );
    case("SUB bad topic", true, b"SUB bad!topic c\n".to_vec(), &["E_BAD_TOPIC"]);
    case("SUB bad channel", true, b"SUB hostile bad!channel\n".to_vec(), &["E_BAD_CHANNEL"]);
    case("PUB bad topic", true, b"PUB bad!topic\n".to_vec(), &["E_BAD_TOPIC"]);
    case(
        "SUB twice",
        true,
        format!("SUB {HOSTILE_TOPIC} x\nSUB {HOSTILE_TOPIC} y\n").into_bytes(),
        &["E_INVALID cannot SUB in current state"],
    );
    case(
        "FIN with a short id",
        true,
        format!("SUB {HOSTILE_TOPIC} x\nFIN 1234\n").into_bytes(),
        &["E_INVALID"],
    );
    // Not fatal: the connection stays, so the second FIN gets its own error.
    case(
        "FIN of unknown ids",
        true,
        format!("SUB {HOSTILE_TOPIC} x\nFIN 00000000deadbeef\nFIN 00000000deadbeee\n").into_bytes(),
        &["E_FIN_FAILED", "E_FIN_FAILED"],
    );
    let cases = Arc::new(cases);
    bounded(cases.len() * repeat, 8, |i| {
        let tally = Arc::clone(&tally);
        let cases = Arc::clone(&cases);
        async move {
            let (name, magic, bytes, expected) = &cases[i % cases.len()];
            let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
            expect_errors(addr, &tally, name, *magic, bytes, &expected).await;
        }
    })
    .await;
}

/// HTTP publishes declaring 2 GB that is never sent: 413 at once.
async fn oversized_http(round: Arc<Round>, repeat: usize) {
    let (addr, tally) = (round.http, Arc::clone(&round.tally));
    for i in 0..repeat {
        let (path, want) = if i % 2 == 0 {
            ("/pub?topic=hostile", r#"{"message":"MSG_TOO_BIG"}"#)
        } else {
            ("/mpub?topic=hostile", r#"{"message":"BODY_TOO_BIG"}"#)
        };
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 2000000000\r\n\
             Connection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        let read = tokio::time::timeout(REPLY_WAIT, stream.read_to_end(&mut raw)).await;
        let text = String::from_utf8_lossy(&raw);
        if read.is_err() || !text.starts_with("HTTP/1.1 413") || !text.ends_with(want) {
            problem(&tally, format!("{path} declaring 2 GB: {read:?} {text:?}"));
        }
    }
}

/// Commands sent a byte at a time, a few ms apart: they must work. And connections that stall
/// inside a command after IDENTIFY set a 1 s heartbeat: nsqd must hang up on them after two
/// heartbeat intervals.
async fn slow_clients(round: Arc<Round>, count: usize) {
    let (addr, tally) = (round.addr, Arc::clone(&round.tally));
    bounded(count, count, |i| {
        let tally = Arc::clone(&tally);
        async move {
            let mut conn = RawConn::connect(addr, true).await.unwrap();
            if i % 4 == 3 {
                let identify = br#"{"heartbeat_interval":1000}"#;
                conn.command(Command::Identify(identify)).await.unwrap();
                match conn.next_reply(REPLY_WAIT).await {
                    Ok(Frame::Response(ok)) if ok == "OK" => {}
                    other => return problem(&tally, format!("stalled IDENTIFY: {other:?}")),
                }
                conn.send(b"PUB hostile\n\x00\x00").await.unwrap();
                let started = Instant::now();
                // Heartbeats arrive meanwhile and are not answered; only the hang-up counts.
                let drained = conn.drain(REPLY_WAIT).await;
                let waited = started.elapsed();
                if !drained.closed_by_server() || waited < Duration::from_millis(1500) {
                    problem(&tally, format!("stalled after {waited:?}: {drained:?}"));
                }
                note(&tally, "stalled", &drained);
                return;
            }
            let mut bytes = Vec::new();
            if i % 2 == 0 {
                bytes.extend_from_slice(&Command::Identify(br#"{"client_id":"slow"}"#).to_bytes());
            }
            let body = vec![b's'; 200];
            bytes.extend_from_slice(&Command::Pub { topic: HOSTILE_TOPIC, body: &body }.to_bytes());
            let mut pace = tokio::time::interval(Duration::from_millis(3));
            for byte in &bytes {
                pace.tick().await;
                conn.send(std::slice::from_ref(byte)).await.unwrap();
            }
            let replies = usize::from(i % 2 == 0) + 1;
            for _ in 0..replies {
                match conn.next_reply(REPLY_WAIT).await {
                    Ok(Frame::Response(ok)) if ok == "OK" => {}
                    other => return problem(&tally, format!("slow sender {i}: {other:?}")),
                }
            }
            let mut tally = tally.lock().unwrap();
            *tally.codes.entry("slow".to_owned()).or_default().entry("OK").or_default() += 1;
        }
    })
    .await;
}

/// Connections that negotiate snappy or DEFLATE and then send what is not a compressed
/// stream, a compression bomb (megabytes of one byte, no newline, from a few KiB), or mutated
/// commands compressed: nsqd must hang up, having buffered no more than a command line.
async fn compressed_clients(round: Arc<Round>, count: usize) {
    let (addr, tally, seed) = (round.addr, Arc::clone(&round.tally), round.seed);
    bounded(count, 8, |i| {
        let tally = Arc::clone(&tally);
        async move {
            let mut rng = fastrand::Rng::with_seed(seed ^ 0xc0de ^ i as u64);
            let (compression, identify): (Compression, &[u8]) = if i % 2 == 0 {
                (Compression::Snappy, br#"{"feature_negotiation":true,"snappy":true}"#)
            } else {
                let identify = br#"{"feature_negotiation":true,"deflate":true,"deflate_level":6}"#;
                (Compression::Deflate { level: 6 }, identify)
            };
            let mut conn = RawConn::connect(addr, true).await.unwrap();
            conn.command(Command::Identify(identify)).await.unwrap();
            match conn.next_reply(REPLY_WAIT).await {
                Ok(Frame::Response(json)) if json.starts_with(b"{") => {}
                other => return problem(&tally, format!("compressed IDENTIFY: {other:?}")),
            }
            let mut compressor = Compressor::new(compression);
            let (kind, bytes) = match i % 3 {
                0 => {
                    let len = rng.usize(16..4096);
                    ("compressed: garbage", garbage(&mut rng, len))
                }
                1 => {
                    let bomb = vec![b'A'; 8 << 20];
                    ("compressed: bomb", compressor.compress(&bomb).unwrap().to_vec())
                }
                _ => {
                    let command = valid_command(&mut rng, HOSTILE_TOPIC, "z");
                    let command = mutate(&mut rng, &command);
                    ("compressed: mutated", compressor.compress(&command).unwrap().to_vec())
                }
            };
            // nsqd may hang up before it has read everything.
            let _ = conn.send(&bytes).await;
            let _ = conn.shutdown_write().await;
            let (end, _) = conn.drain_raw(REPLY_WAIT).await;
            note(&tally, kind, &Drained { frames: Vec::new(), end });
        }
    })
    .await;
}

/// Subscribers that send RDY in storms (hundreds of counts, up to the maximum), read some of
/// what comes, FIN some of it, and then leave: by a fatal RDY, by CLS, or by a reset.
async fn rdy_storms(round: Arc<Round>, count: usize) {
    bounded(count, count, |i| {
        let round = Arc::clone(&round);
        async move {
            let (addr, tally, topic) = (round.addr, &round.tally, round.storm_topic.as_str());
            let mut rng = fastrand::Rng::with_seed(round.seed ^ 0x57025 ^ i as u64);
            let channel = format!("s{}", i % STORM_CHANNELS);
            let mut conn = RawConn::connect(addr, true).await.unwrap();
            conn.command(Command::Sub { topic, channel: &channel }).await.unwrap();
            match conn.next_reply(REPLY_WAIT).await {
                Ok(Frame::Response(ok)) if ok == "OK" => {}
                other => return problem(tally, format!("storm SUB: {other:?}")),
            }
            for _ in 0..4 {
                let mut storm = Vec::new();
                for _ in 0..rng.usize(50..200) {
                    let count = if rng.bool() { rng.u64(..=MAX_RDY) } else { rng.u64(..3) };
                    storm.extend_from_slice(&Command::Rdy(count).to_bytes());
                }
                conn.send(&storm).await.unwrap();
                // Take what arrives for a moment, FIN about half of it.
                while let Ok(frame) = conn.next_reply(Duration::from_millis(20)).await {
                    match frame {
                        Frame::Message(message) if rng.bool() => {
                            finned_now(&round.finned, topic, &channel, &message.body);
                            conn.command(Command::Fin(&message.id)).await.unwrap();
                        }
                        Frame::Message(_) => {}
                        other => {
                            return problem(tally, format!("storm {i}: unexpected {other:?}"));
                        }
                    }
                }
            }
            match i % 3 {
                0 => {
                    conn.command(Command::Rdy(MAX_RDY + 1 + rng.u64(..1_000_000))).await.unwrap();
                    let drained = conn.drain(REPLY_WAIT).await;
                    let codes = drained.error_codes();
                    if codes != [ErrorCode::Invalid] {
                        problem(tally, format!("RDY over the maximum: {drained:?}"));
                    }
                    note(tally, "RDY storm (fatal RDY)", &drained);
                }
                1 => {
                    conn.command(Command::Cls).await.unwrap();
                    loop {
                        match conn.next_reply(REPLY_WAIT).await {
                            Ok(Frame::Response(r)) if r == protocol::CLOSE_WAIT => break,
                            Ok(Frame::Message(_)) => {}
                            other => return problem(tally, format!("storm CLS: {other:?}")),
                        }
                    }
                    drop(conn);
                }
                _ => conn.abort(),
            }
        }
    })
    .await;
}

/// Consumers that take messages and vanish without FIN: some after reading a few whole
/// messages, some halfway through a frame, some after half a FIN; half with a reset.
async fn droppers(round: Arc<Round>, count: usize) {
    bounded(count, 6, |i| {
        let round = Arc::clone(&round);
        async move {
            let (addr, tally, topic) = (round.addr, &round.tally, round.drop_topic.as_str());
            let mut rng = fastrand::Rng::with_seed(round.seed ^ 0xd209 ^ i as u64);
            let mut conn = RawConn::connect(addr, true).await.unwrap();
            conn.command(Command::Sub { topic, channel: DROP_CHANNEL }).await.unwrap();
            match conn.next_reply(REPLY_WAIT).await {
                Ok(Frame::Response(ok)) if ok == "OK" => {}
                other => return problem(tally, format!("dropper SUB: {other:?}")),
            }
            conn.command(Command::Rdy(rng.u64(1..40))).await.unwrap();
            for _ in 0..rng.usize(..6) {
                match conn.next_reply(Duration::from_millis(200)).await {
                    Ok(Frame::Message(message)) if rng.u8(..4) == 0 => {
                        finned_now(&round.finned, topic, DROP_CHANNEL, &message.body);
                        conn.command(Command::Fin(&message.id)).await.unwrap();
                    }
                    Ok(_) | Err(End::TimedOut) => {}
                    Err(end) => return problem(tally, format!("dropper {i}: {end:?}")),
                }
            }
            if i % 3 == 1 {
                conn.send(b"FIN 0000").await.unwrap();
            }
            if i % 2 == 0 { conn.abort() } else { drop(conn) }
        }
    })
    .await;
}

/// Publishes the messages numbered `numbers`, of about `len` bytes, to `topic` (MPUB in
/// batches).
async fn seed_topic(addr: SocketAddr, topic: &str, numbers: Range<u64>, len: usize) {
    let mut conn = Conn::open(addr).await.unwrap();
    let pad = "x".repeat(len);
    let bodies: Vec<Vec<u8>> = numbers.map(|n| format!("{pad} {n}").into_bytes()).collect();
    for chunk in bodies.chunks(50) {
        let slices: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
        conn.expect_ok(Command::Mpub { topic, bodies: &slices }).await.unwrap();
    }
}

/// Messages (by number) that hostile consumers sent FIN for, by channel: they may or may not
/// come back (a FIN just before a reset may never be read).
type Finned = Arc<Mutex<BTreeMap<String, BTreeSet<u64>>>>;

/// The number at the end of a seeded message's body.
fn message_number(body: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(body);
    text.rsplit(' ').next().and_then(|s| s.parse().ok()).unwrap()
}

fn finned_now(finned: &Finned, topic: &str, channel: &str, body: &[u8]) {
    let key = format!("{topic}/{channel}");
    finned.lock().unwrap().entry(key).or_default().insert(message_number(body));
}

/// Subscribes to `topic`/`channel` and FINs until every one of `numbers` not in `finned`
/// arrived; panics if that takes longer than `within`.
async fn drain_channel(
    addr: SocketAddr,
    http: SocketAddr,
    topic: &str,
    channel: &str,
    numbers: Range<u64>,
    finned: &Finned,
    within: Duration,
) {
    let key = format!("{topic}/{channel}");
    let finned = finned.lock().unwrap().get(&key).cloned().unwrap_or_default();
    let wanted: BTreeSet<u64> = numbers.filter(|n| !finned.contains(n)).collect();
    let started = Instant::now();
    let mut conn = Conn::open(addr).await.unwrap();
    conn.expect_ok(Command::Sub { topic, channel }).await.unwrap();
    conn.send(Command::Rdy(200)).await.unwrap();
    let mut seen = BTreeSet::new();
    while !wanted.is_subset(&seen) {
        let left = within.saturating_sub(started.elapsed());
        let frame = tokio::time::timeout(left, conn.frame()).await;
        let Ok(Ok(Frame::Message(message))) = frame else {
            let missing: Vec<u64> = wanted.difference(&seen).copied().take(20).collect();
            let stats = format!("/stats?format=json&topic={topic}&channel={channel}");
            let stats = torture::http::request(http, "GET", &stats).await;
            let stats = stats.map(|(_, body)| String::from_utf8_lossy(&body).into_owned());
            eprintln!("{topic}/{channel} stats: {stats:?}");
            panic!(
                "{topic}/{channel}: {} of the {} messages not FINished by hostile clients \
                 within {within:?} (missing, first 20: {missing:?}); last: {frame:?}",
                wanted.intersection(&seen).count(),
                wanted.len()
            );
        };
        conn.send(Command::Fin(&message.id)).await.unwrap();
        seen.insert(message_number(&message.body));
    }
}

// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Memory {
    rss: u64,
    hwm: u64,
    vm_peak: u64,
}

fn memory(nsqd: &NsqdProcess) -> Memory {
    let pid = nsqd.pid();
    Memory {
        rss: proc_status_bytes(pid, "VmRSS").unwrap(),
        hwm: proc_status_bytes(pid, "VmHWM").unwrap(),
        vm_peak: proc_status_bytes(pid, "VmPeak").unwrap(),
    }
}

const MIB: u64 = 1 << 20;

/// The bound on nsqd's peak RSS. Its RSS before any client, plus 32 KiB for each idle
/// connection (measured: 16 KiB, nsqd's 16 KiB command reader, as in NSQ; socket buffers are
/// the kernel's), plus 96 MiB for the rest: about a hundred hostile connections at a time,
/// each of which may make nsqd hold a body of up to max-body-size (5 MiB) that it sends in part
/// (measured: under 20 MiB), the memory queues of the seeded topics (10 MiB), and allocator
/// slack. One declared 1 GiB body read into memory breaks it.
fn rss_bound(baseline: u64, idle: usize) -> u64 {
    baseline + idle as u64 * 32 * 1024 + 96 * MIB
}

/// Growth of nsqd's RSS allowed from the first round of hostile clients to the end of the
/// second, identical in size: memory that stays with closed connections shows up here.
const ROUND_GROWTH_BOUND: u64 = 16 * MIB;

/// Waits until nsqd holds at least (`at_least`) or at most (`!at_least`) `count` sockets.
async fn wait_for_descriptors(nsqd: &NsqdProcess, count: usize, at_least: bool) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut pace = tokio::time::interval(Duration::from_millis(50));
    loop {
        let open = open_sockets(nsqd.pid()).unwrap();
        if (at_least && open >= count) || (!at_least && open <= count) {
            return open;
        }
        assert!(
            Instant::now() < deadline,
            "nsqd has {open} sockets open, waiting for {} {count}",
            if at_least { "at least" } else { "at most" }
        );
        pace.tick().await;
    }
}

async fn create_channel(http: SocketAddr, topic: &str, channel: &str) {
    for path in [
        format!("/topic/create?topic={topic}"),
        format!("/channel/create?topic={topic}&channel={channel}"),
    ] {
        let (status, _) = torture::http::request(http, "POST", &path).await.unwrap();
        assert_eq!(status, 200, "{path}");
    }
}

/// One round: seeds its topics, runs every hostile workload at once, then checks that what
/// the droppers and storms had in flight is back in its channels.
async fn hostile_round(round: Arc<Round>) {
    let (addr, http) = (round.addr, round.http);
    // The channels exist before their messages, so each gets every one (a later channel of a
    // topic would start at its end). The dropped messages are large, so that nsqd is in the
    // middle of writing when a dropper goes.
    create_channel(http, &round.drop_topic, DROP_CHANNEL).await;
    for channel in 0..STORM_CHANNELS {
        create_channel(http, &round.storm_topic, &format!("s{channel}")).await;
    }
    // Each round numbers its messages apart from the others'.
    let first = round.index * 1_000_000;
    seed_topic(addr, &round.drop_topic, first..first + DROP_MESSAGES, 32 * 1024).await;
    seed_topic(addr, &round.storm_topic, first..first + STORM_MESSAGES, 100).await;

    let mut hostile = JoinSet::new();
    hostile.spawn(garbage_clients(Arc::clone(&round), 300));
    hostile.spawn(mutated_clients(Arc::clone(&round), 800));
    hostile.spawn(exact_cases(Arc::clone(&round), 4));
    hostile.spawn(oversized_http(Arc::clone(&round), 20));
    hostile.spawn(slow_clients(Arc::clone(&round), 24));
    hostile.spawn(rdy_storms(Arc::clone(&round), 24));
    hostile.spawn(droppers(Arc::clone(&round), 60));
    hostile.spawn(compressed_clients(Arc::clone(&round), 30));
    let all = async {
        while let Some(done) = hostile.join_next().await {
            done.unwrap();
        }
    };
    tokio::time::timeout(PHASE_TIMEOUT, all).await.expect("hostile clients still running");

    // Back long before --msg-timeout (5 min) could have brought them back.
    let back = Duration::from_secs(20);
    let drop_topic = round.drop_topic.as_str();
    let numbers = first..first + DROP_MESSAGES;
    drain_channel(addr, http, drop_topic, DROP_CHANNEL, numbers, &round.finned, back).await;
    for channel in 0..STORM_CHANNELS {
        let (topic, channel) = (round.storm_topic.as_str(), format!("s{channel}"));
        let numbers = first..first + STORM_MESSAGES;
        drain_channel(addr, http, topic, &channel, numbers, &round.finned, back).await;
    }
}

/// Declared sizes of 1 GiB (TCP) and 2 GB (HTTP), never sent, against an nsqd of its own that
/// has a single malloc arena (`MALLOC_ARENA_MAX=1`), so that its peak virtual size moves only
/// when something large is allocated, even if never touched. Returns nsqd's memory before and
/// after.
async fn oversized_alone(tally: &SharedTally) -> (Memory, Memory) {
    let data = tempfile::tempdir().unwrap();
    let launcher = Launcher {
        program: "env".into(),
        prefix_args: vec![
            "MALLOC_ARENA_MAX=1".into(),
            env!("CARGO_BIN_EXE_nsq-torture").into(),
            "nsqd".into(),
        ],
    };
    let nsqd = launcher.start(data.path(), &[]).unwrap();
    let round = Arc::new(Round {
        index: 0,
        addr: nsqd.tcp(),
        http: nsqd.http(),
        seed: SEED,
        drop_topic: String::new(),
        storm_topic: String::new(),
        tally: Arc::clone(tally),
        finned: Finned::default(),
    });
    let before = memory(&nsqd);
    let gib = big_endian(1 << 30);
    for line in ["PUB hostile\n", "DPUB hostile 10\n", "MPUB hostile\n", "IDENTIFY\n"] {
        for _ in 0..5 {
            let mut conn = RawConn::connect(round.addr, true).await.unwrap();
            conn.send(line.as_bytes()).await.unwrap();
            conn.send(&gib).await.unwrap();
            let drained = conn.drain(REPLY_WAIT).await;
            assert!(
                drained.closed_by_server() && drained.error_codes().len() == 1,
                "{line:?} declaring 1 GiB: {drained:?}"
            );
        }
    }
    oversized_http(Arc::clone(&round), 10).await;
    let after = memory(&nsqd);
    let status = nsqd.terminate().unwrap();
    assert!(status.success(), "{status}");
    (before, after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_leave_nsqd_and_a_good_client_unharmed() {
    let started = Instant::now();
    let data = tempfile::tempdir().unwrap();
    let launcher = Launcher::embedded(env!("CARGO_BIN_EXE_nsq-torture"));
    let mut nsqd = launcher.start(data.path(), &["--msg-timeout=5m".to_owned()]).unwrap();
    let (addr, http) = (nsqd.tcp(), nsqd.http());
    let base_fds = open_sockets(nsqd.pid()).unwrap();
    let base = memory(&nsqd);
    let tally: SharedTally = Arc::default();
    let finned = Finned::default();
    let round = |index: u64| {
        Arc::new(Round {
            index,
            addr,
            http,
            seed: SEED ^ (index << 32),
            // The same topics every round, so that memory a topic keeps is not counted as growth.
            drop_topic: "dropped".to_owned(),
            storm_topic: "storm".to_owned(),
            tally: Arc::clone(&tally),
            finned: Arc::clone(&finned),
        })
    };

    // Oversized declared sizes, alone.
    let (alone_before, alone_after) = oversized_alone(&tally).await;
    let (vm_before, vm_after) = (alone_before.vm_peak, alone_after.vm_peak);
    assert!(
        vm_after < vm_before + 256 * MIB && alone_after.hwm < alone_before.rss + 64 * MIB,
        "nsqd's peak virtual size grew from {} to {} MiB (peak RSS from {} to {} MiB) while \
         refusing 1 GiB bodies",
        vm_before / MIB,
        vm_after / MIB,
        alone_before.rss / MIB,
        alone_after.hwm / MIB
    );

    // Idle connections, held to the end. Both processes need a descriptor for each.
    let limit = open_files_limit().unwrap_or(1024) as usize;
    let idle_count = IDLE_CONNECTIONS.min(limit.saturating_sub(800));
    if idle_count < IDLE_CONNECTIONS {
        eprintln!("only {idle_count} idle connections: the open-files limit is {limit}");
    }
    let mut idle = open_idle(addr, idle_count).await;
    wait_for_descriptors(&nsqd, base_fds + idle_count, true).await;
    let with_idle = memory(&nsqd);

    // Deaf consumers: each on its own channel, with the largest RDY, offered 6 MiB (more than
    // a socket's buffers hold with a small receive buffer) and reading none of it, so that
    // nsqd's writes to them block; held until nsqd is stopped.
    for channel in 0..DEAF_CONSUMERS {
        create_channel(http, DEAF_TOPIC, &format!("c{channel}")).await;
    }
    seed_topic(addr, DEAF_TOPIC, 0..200, 32 * 1024).await;
    let mut deaf = Vec::new();
    for channel in 0..DEAF_CONSUMERS {
        let mut conn = RawConn::connect_small(addr, 4096).await.unwrap();
        let channel = format!("c{channel}");
        conn.command(Command::Sub { topic: DEAF_TOPIC, channel: &channel }).await.unwrap();
        conn.command(Command::Rdy(MAX_RDY)).await.unwrap();
        deaf.push(conn);
    }

    // The good client, through both rounds.
    let sent = Arc::new(Mutex::new(HashMap::new()));
    let (stop, stop_rx) = watch::channel(false);
    let (total_tx, total_rx) = watch::channel(None);
    let publisher = tokio::spawn(good_publisher(addr, stop_rx, Arc::clone(&sent), total_tx));
    let consumer = tokio::spawn(good_consumer(addr, Arc::clone(&sent), total_rx));

    hostile_round(round(1)).await;
    assert!(nsqd.is_running(), "nsqd died:\n{}", nsqd.last_log_lines());
    let after_first = memory(&nsqd);
    hostile_round(round(2)).await;
    assert!(nsqd.is_running(), "nsqd died:\n{}", nsqd.last_log_lines());
    let after_second = memory(&nsqd);

    stop.send(true).unwrap();
    tokio::time::timeout(PHASE_TIMEOUT, publisher).await.unwrap().unwrap();
    let good = tokio::time::timeout(PHASE_TIMEOUT, consumer).await.unwrap().unwrap();

    // The idle connections are all still open: nsqd hangs up on a silent client only after two
    // heartbeat intervals (60 s), and on a missing magic after 60 s.
    let idle_age = idle.opened.elapsed();
    let closed: usize = idle.conns.iter_mut().map(|c| usize::from(!c.is_open_now())).sum();
    if idle_age < Duration::from_secs(55) {
        assert_eq!(closed, 0, "{closed} idle connections were closed after {idle_age:?}");
    }
    drop(idle);
    // Every connection's socket is closed, but the deaf ones'.
    let end_fds = wait_for_descriptors(&nsqd, base_fds + DEAF_CONSUMERS, false).await;
    let end = memory(&nsqd);

    let tally = tally.lock().unwrap();
    eprintln!("hostile clients, error codes received: {:#?}", tally.codes);
    eprintln!("hostile clients, how nsqd ended their connections: {:#?}", tally.ends);
    eprintln!(
        "good client: {} published, {} delivered, max latency {:?}",
        good.published, good.delivered, good.max_latency
    );
    eprintln!(
        "nsqd RSS: {} MiB at start, {} MiB with {idle_count} idle connections, {} MiB after \
         round 1, {} MiB after round 2, {} MiB at the end; peak {} MiB (bound {} MiB); \
         VmPeak {} -> {} MiB around the 1 GiB declarations; sockets {base_fds} -> {end_fds}",
        base.rss / MIB,
        with_idle.rss / MIB,
        after_first.rss / MIB,
        after_second.rss / MIB,
        end.rss / MIB,
        end.hwm / MIB,
        rss_bound(base.rss, idle_count) / MIB,
        vm_before / MIB,
        vm_after / MIB,
    );
    eprintln!("total {:?}", started.elapsed());
    assert!(
        tally.problems.is_empty(),
        "{} problems:\n{}",
        tally.problems.len(),
        tally.problems.join("\n")
    );
    assert_eq!(good.delivered, good.published, "the good client lost messages");
    assert!(good.late.is_empty(), "good messages delivered late: {:?}", good.late);
    for (workload, want) in [
        ("garbage", ErrorCode::Invalid),
        ("garbage (no magic)", ErrorCode::BadProtocol),
        ("mutated", ErrorCode::Invalid),
        ("mutated", ErrorCode::BadMessage),
        ("mutated", ErrorCode::BadBody),
    ] {
        let got = tally.codes.get(workload).and_then(|codes| codes.get(want.as_str()));
        assert!(got.is_some_and(|n| *n > 0), "{workload}: never got {want}");
    }
    let slow_ok = tally.codes.get("slow").and_then(|codes| codes.get("OK")).copied();
    assert_eq!(slow_ok, Some(2 * 18), "slow senders that got their OK");
    assert!(
        end.hwm < rss_bound(base.rss, idle_count),
        "nsqd's peak RSS {} MiB is over the bound {} MiB",
        end.hwm / MIB,
        rss_bound(base.rss, idle_count) / MIB
    );
    assert!(
        after_second.rss < after_first.rss + ROUND_GROWTH_BOUND,
        "nsqd's RSS grew from {} to {} MiB in a second, identical round",
        after_first.rss / MIB,
        after_second.rss / MIB
    );

    assert!(nsqd.is_running(), "nsqd died:\n{}", nsqd.last_log_lines());
    let stopping = Instant::now();
    let status = nsqd.terminate().unwrap();
    let stopped = stopping.elapsed();
    eprintln!("SIGTERM with {DEAF_CONSUMERS} deaf consumers connected: exited in {stopped:?}");
    assert!(status.success(), "nsqd did not exit cleanly on SIGTERM: {status}");
    assert!(stopped < TERMINATE_BOUND, "nsqd took {stopped:?} to stop");
    drop(deaf);
}
