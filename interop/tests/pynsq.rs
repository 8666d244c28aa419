//! The official Python client pynsq against our nsqd, connected directly (no lookupd): the
//! script `pynsq_roundtrip.py` publishes with nsq.Writer and consumes with nsq.Reader, in plain
//! TCP and over each upgrade IDENTIFY negotiates (TLS, snappy, DEFLATE, and either compression
//! inside TLS), and these tests check what it reports and what the engine counted.
//!
//! The Python comes from `NSQ_INTEROP_PYTHON` (default `python3`) and must have pynsq and
//! python-snappy installed; `bash .ci/run` makes such a Python in `target/interop-venv` and sets
//! the variable.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::cast_possible_truncation)]

mod common;

use std::time::Duration;

use common::upgrades::{Clients, Compression, Features, Negotiated};
use common::{InteropServer, python};
use tokio::process::Command;

const PUBS: usize = 10;
const MPUB_BATCHES: usize = 3;
const MPUB_SIZE: usize = 10;
const DPUB_MS: u64 = 100;
/// One more PUB of this size: larger than a snappy block (64 KiB), so the upgrades carry it in
/// pieces.
const BIG_BYTES: usize = 200 * 1024;
/// The script's own deadline; the test allows it a little more before killing it.
const SCRIPT_TIMEOUT_SECS: u64 = 30;

/// The size of the large body for a run with `features`, 0 for none.
///
/// Not over snappy: pynsq 0.9.1 cannot receive a snappy chunk split across two reads, as the
/// chunks of a body over 64 KiB come (from any server). Its socket wrapper then raises
/// `socket.error(EWOULDBLOCK)`, an `OSError(11)` that Python 3 does not make a
/// `BlockingIOError`, and tornado takes that for a broken connection ("error on read: 11").
/// tokio-nsq's tests carry the large body over snappy.
fn big_bytes(features: Features) -> usize {
    if features.compression == Some(Compression::Snappy) { 0 } else { BIG_BYTES }
}

/// What the script must have received: each body once at attempts 1 (the large one, if any,
/// by its size), and the requeued body again at attempts 2. Sorted.
fn expected_deliveries(big_bytes: usize) -> Vec<(String, u16)> {
    let mut bodies: Vec<String> = (0..PUBS).map(|i| format!("pub-{i}")).collect();
    bodies.push("requeue-me".to_owned());
    for batch in 0..MPUB_BATCHES {
        bodies.extend((0..MPUB_SIZE).map(|i| format!("mpub-{batch}-{i}")));
    }
    bodies.push("dpub-0".to_owned());
    if big_bytes > 0 {
        bodies.push(format!("big-{big_bytes}"));
    }
    let mut deliveries: Vec<(String, u16)> = bodies.into_iter().map(|b| (b, 1)).collect();
    deliveries.push(("requeue-me".to_owned(), 2));
    deliveries.sort();
    deliveries
}

/// Goal: pynsq's Writer (PUB, MPUB, DPUB) and Reader (max_in_flight 16, FIN, REQ) work against
/// our nsqd with both connections upgraded as `features` asks. Method: run the script against
/// an in-process nsqd, then check the acknowledgements and deliveries it printed, what `/stats`
/// said of its connections while they were open, its exit status, and the engine's counters.
async fn round_trip(features: Features, topic: &str) {
    python::require_pynsq().await;
    let server = InteropServer::start_with_features(features).await;
    let channel = "interop";
    let big = big_bytes(features);
    let pubs = PUBS + 1 + usize::from(big > 0);

    let mut script = Command::new(python::python());
    script
        .arg(python::script("pynsq_roundtrip.py"))
        .arg(format!("--nsqd-tcp={}", server.tcp))
        .arg(format!("--nsqd-http={}", server.http))
        .arg(format!("--topic={topic}"))
        .arg(format!("--channel={channel}"))
        .arg(format!("--pubs={PUBS}"))
        .arg(format!("--mpub-batches={MPUB_BATCHES}"))
        .arg(format!("--mpub-size={MPUB_SIZE}"))
        .arg(format!("--dpub-ms={DPUB_MS}"))
        .arg(format!("--big-bytes={big}"))
        .arg("--max-in-flight=16")
        .arg(format!("--timeout={SCRIPT_TIMEOUT_SECS}"));
    if let Some(pki) = &server.pki {
        script.arg(format!("--tls-ca-file={}", pki.ca_file.display()));
    }
    match features.compression {
        Some(Compression::Snappy) => script.arg("--snappy"),
        Some(Compression::Deflate) => script.arg("--deflate"),
        None => &mut script,
    };
    let (lines, context) = python::run(&mut script, Duration::from_secs(SCRIPT_TIMEOUT_SECS)).await;
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert_eq!(lines.last(), Some(&"DONE"), "{context}");
    let acks = |command: &str| lines.iter().filter(|l| **l == format!("ACK {command}")).count();
    assert_eq!((acks("pub"), acks("mpub"), acks("dpub")), (pubs, MPUB_BATCHES, 1), "{context}");
    let mut deliveries: Vec<(String, u16)> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("RECEIVED "))
        .map(|rest| {
            let (body, attempts) = rest.rsplit_once(' ').expect("RECEIVED <label> <attempts>");
            (body.to_owned(), attempts.parse().expect("attempts"))
        })
        .collect();
    deliveries.sort();
    assert_eq!(deliveries, expected_deliveries(big), "{context}");

    // pynsq asks for TLS 1.2 (ssl.PROTOCOL_TLSv1_2 unless told otherwise).
    let negotiated = Negotiated::expected(features, "TLS1.2");
    let clients: Clients = lines
        .iter()
        .find_map(|l| l.strip_prefix("CLIENTS "))
        .map(|json| serde_json::from_str(json).expect("CLIENTS <json>"))
        .unwrap_or_else(|| panic!("no CLIENTS line:\n{context}"));
    assert_eq!(
        clients,
        Clients { consumers: vec![negotiated.clone()], producers: vec![negotiated] },
        "/stats must show both connections with exactly the upgrades asked for"
    );

    let n = (pubs + MPUB_BATCHES * MPUB_SIZE + 1) as u64;
    let stats = server.channel_stats(topic, channel).expect("the channel exists");
    assert_eq!(
        (stats.depth, stats.in_flight_count, stats.deferred_count),
        (0, 0, 0),
        "the script saw the channel settle; the engine must agree: {stats:?}"
    );
    assert_eq!((stats.message_count, stats.requeue_count, stats.timeout_count), (n, 1, 0));
    let topic_stats = server.engine.get_topic(topic).unwrap().stats();
    assert_eq!((topic_stats.message_count, topic_stats.depth), (n, 0));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pynsq_writer_and_reader_round_trip_pub_mpub_dpub_and_a_requeue() {
    round_trip(Features::PLAIN, "pynsq_roundtrip").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_round_trip_works_over_tls() {
    round_trip(Features::TLS, "pynsq_tls").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_round_trip_works_over_snappy() {
    round_trip(Features::SNAPPY, "pynsq_snappy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_round_trip_works_over_deflate() {
    round_trip(Features::DEFLATE, "pynsq_deflate").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_round_trip_works_over_snappy_inside_tls() {
    round_trip(Features::TLS_SNAPPY, "pynsq_tls_snappy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_round_trip_works_over_deflate_inside_tls() {
    round_trip(Features::TLS_DEFLATE, "pynsq_tls_deflate").await;
}
