//! The official Python client pynsq against our nsqd, connected directly (no lookupd): the
//! script `pynsq_roundtrip.py` publishes with nsq.Writer and consumes with nsq.Reader, and this
//! test checks what it reports and what the engine counted.
//!
//! The Python comes from `NSQ_INTEROP_PYTHON` (default `python3`) and must have pynsq installed;
//! `bash .ci/run` makes such a Python in `target/interop-venv` and sets the variable.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::cast_possible_truncation)]

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::InteropServer;
use tokio::process::Command;

const PUBS: usize = 10;
const MPUB_BATCHES: usize = 3;
const MPUB_SIZE: usize = 10;
const DPUB_MS: u64 = 100;
/// The script's own deadline; the test allows it a little more before killing it.
const SCRIPT_TIMEOUT_SECS: u64 = 30;

fn python() -> String {
    std::env::var("NSQ_INTEROP_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("pynsq_roundtrip.py")
}

/// Fails the test, with the way to fix it, unless the interpreter can import pynsq.
async fn require_pynsq(python: &str) {
    let help = "pynsq is needed for this test: run `bash .ci/run`, which installs it into \
                target/interop-venv and sets NSQ_INTEROP_PYTHON; after that, \
                `NSQ_INTEROP_PYTHON=$PWD/target/interop-venv/bin/python cargo test -p nsq-interop` \
                also works alone. Or point NSQ_INTEROP_PYTHON at any Python with \
                `pip install pynsq==0.9.1`.";
    let probe = Command::new(python)
        .args(["-c", "import nsq, tornado; print(nsq.__version__, tornado.version)"])
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(Duration::from_secs(30), probe).await {
        Ok(Ok(output)) => output,
        Ok(Err(error)) => panic!("cannot run Python {python:?} ({error}). {help}"),
        Err(_) => panic!("Python {python:?} did not answer within 30 s. {help}"),
    };
    assert!(
        output.status.success(),
        "Python {python:?} cannot `import nsq`: {}\n{help}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

/// What the script must have received: each body once at attempts 1, and the requeued body
/// again at attempts 2. Sorted.
fn expected_deliveries() -> Vec<(String, u16)> {
    let mut bodies: Vec<String> = (0..PUBS).map(|i| format!("pub-{i}")).collect();
    bodies.push("requeue-me".to_owned());
    for batch in 0..MPUB_BATCHES {
        bodies.extend((0..MPUB_SIZE).map(|i| format!("mpub-{batch}-{i}")));
    }
    bodies.push("dpub-0".to_owned());
    let mut deliveries: Vec<(String, u16)> = bodies.into_iter().map(|b| (b, 1)).collect();
    deliveries.push(("requeue-me".to_owned(), 2));
    deliveries.sort();
    deliveries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pynsq_writer_and_reader_round_trip_pub_mpub_dpub_and_a_requeue() {
    // Goal: pynsq's Writer (PUB, MPUB, DPUB) and Reader (max_in_flight 16, FIN, REQ) work
    // against our nsqd. Method: run the script against an in-process nsqd, then check the
    // acknowledgements and deliveries it printed, its exit status, and the engine's counters.
    let python = python();
    require_pynsq(&python).await;
    let server = InteropServer::start().await;
    let (topic, channel) = ("pynsq_roundtrip", "interop");

    let run = Command::new(&python)
        .arg(script())
        .arg(format!("--nsqd-tcp={}", server.tcp))
        .arg(format!("--nsqd-http={}", server.http))
        .arg(format!("--topic={topic}"))
        .arg(format!("--channel={channel}"))
        .arg(format!("--pubs={PUBS}"))
        .arg(format!("--mpub-batches={MPUB_BATCHES}"))
        .arg(format!("--mpub-size={MPUB_SIZE}"))
        .arg(format!("--dpub-ms={DPUB_MS}"))
        .arg("--max-in-flight=16")
        .arg(format!("--timeout={SCRIPT_TIMEOUT_SECS}"))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(SCRIPT_TIMEOUT_SECS + 15), run)
        .await
        .expect("the script outlived its own timeout")
        .expect("run the script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let context = format!("--- stdout ---\n{stdout}--- stderr ---\n{stderr}");
    assert!(output.status.success(), "the script failed ({}):\n{context}", output.status);

    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.last(), Some(&"DONE"), "{context}");
    let acks = |command: &str| lines.iter().filter(|l| **l == format!("ACK {command}")).count();
    assert_eq!((acks("pub"), acks("mpub"), acks("dpub")), (PUBS + 1, MPUB_BATCHES, 1), "{context}");
    let mut deliveries: Vec<(String, u16)> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("RECEIVED "))
        .map(|rest| {
            let (body, attempts) = rest.rsplit_once(' ').expect("RECEIVED <body> <attempts>");
            (body.to_owned(), attempts.parse().expect("attempts"))
        })
        .collect();
    deliveries.sort();
    assert_eq!(deliveries, expected_deliveries(), "{context}");

    let n = (PUBS + 1 + MPUB_BATCHES * MPUB_SIZE + 1) as u64;
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
