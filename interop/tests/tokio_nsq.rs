//! The Rust client tokio-nsq 0.14 against our nsqd, connected directly (no lookupd): its
//! producer's PUB, MPUB and DPUB, its consumer's SUB, RDY, FIN and REQ; in plain TCP, and over
//! each upgrade IDENTIFY negotiates (TLS, snappy, DEFLATE, and either compression inside TLS).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::cast_possible_truncation)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::upgrades::{Clients, Compression, Features, Negotiated};
use common::{InteropServer, WAIT};
use tokio_nsq::{
    NSQChannel, NSQConfigShared, NSQConfigSharedCompression, NSQConfigSharedTLS, NSQConsumer,
    NSQConsumerConfig, NSQConsumerConfigSources, NSQDeflateLevel, NSQEvent, NSQMessage,
    NSQProducer, NSQProducerConfig, NSQRequeueDelay, NSQTopic,
};

/// Shows tokio-nsq's warnings and errors (why it dropped a connection, which error frame it got)
/// in a failed test's output.
struct ClientLog;

impl log::Log for ClientLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            eprintln!("{} {}: {}", record.level(), record.target(), record.args());
        }
    }

    fn flush(&self) {}
}

fn show_client_log() {
    static LOG: ClientLog = ClientLog;
    if log::set_logger(&LOG).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
}

/// tokio-nsq buffers its writes and flushes them on this interval (250 ms by default).
const FLUSH: Duration = Duration::from_millis(5);

/// tokio-nsq's settings for a connection that asks for `features`. TLS is required (tokio-nsq
/// then drops a connection whose server does not offer it) and trusts only the test CA, for
/// the name `localhost` in the server's certificate.
fn shared(server: &InteropServer, features: Features) -> NSQConfigShared {
    let mut shared = NSQConfigShared::new().set_flush_interval(FLUSH);
    match features.compression {
        Some(Compression::Snappy) => {
            shared = shared.set_compression(NSQConfigSharedCompression::Snappy);
        }
        Some(Compression::Deflate) => {
            let level = NSQDeflateLevel::new(6).unwrap();
            shared = shared.set_compression(NSQConfigSharedCompression::Deflate(level));
        }
        None => {}
    }
    if features.tls {
        let pki = server.pki.as_ref().expect("a server started with TLS");
        let mut config = rustls_for_tokio_nsq::ClientConfig::new();
        config.root_store.add(&rustls_for_tokio_nsq::Certificate(pki.ca_der.clone())).unwrap();
        let tls = NSQConfigSharedTLS::new("localhost")
            .set_required(true)
            .set_client_config(Arc::new(config));
        shared = shared.set_tls(tls);
    }
    shared
}

fn consumer(
    server: &InteropServer,
    features: Features,
    topic: &Arc<NSQTopic>,
    channel: &str,
) -> NSQConsumer {
    show_client_log();
    NSQConsumerConfig::new(Arc::clone(topic), NSQChannel::new(channel).unwrap())
        .set_max_in_flight(8)
        .set_sources(NSQConsumerConfigSources::Daemons(vec![server.tcp.to_string()]))
        .set_shared(shared(server, features))
        .build()
}

fn producer(server: &InteropServer, features: Features) -> NSQProducer {
    show_client_log();
    NSQProducerConfig::new(server.tcp.to_string()).set_shared(shared(server, features)).build()
}

/// The next event of a producer, within [`WAIT`].
async fn producer_event(producer: &mut NSQProducer) -> NSQEvent {
    tokio::time::timeout(WAIT, producer.consume())
        .await
        .expect("no producer event in time")
        .expect("tokio-nsq gave up on the connection (the reason is in its log above)")
}

/// Waits for the producer's handshake (IDENTIFY) to complete.
async fn producer_healthy(producer: &mut NSQProducer) {
    match producer_event(producer).await {
        NSQEvent::Healthy() => {}
        other => panic!("expected the producer to become healthy, got {other:?}"),
    }
}

/// Waits for the acknowledgement (`OK`) of one publish command.
async fn producer_ok(producer: &mut NSQProducer) {
    match producer_event(producer).await {
        NSQEvent::Ok() => {}
        other => panic!("expected OK for a publish, got {other:?}"),
    }
}

/// Waits for the consumer's handshake (IDENTIFY, then SUB answered OK) to complete.
async fn consumer_healthy(consumer: &mut NSQConsumer) {
    let event = tokio::time::timeout(WAIT, consumer.consume())
        .await
        .expect("the consumer never became healthy")
        .expect("tokio-nsq gave up on the connection (the reason is in its log above)");
    match event {
        NSQEvent::Healthy() => {}
        other => panic!("expected the consumer to become healthy, got {other:?}"),
    }
}

/// The next message, within [`WAIT`]; any other event (a connection failing) is a failure.
async fn next_message(consumer: &mut NSQConsumer) -> NSQMessage {
    let event = tokio::time::timeout(WAIT, consumer.consume())
        .await
        .expect("no message in time")
        .expect("tokio-nsq gave up on the connection (the reason is in its log above)");
    match event {
        NSQEvent::Message(message) => message,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// A body larger than a snappy block (64 KiB) and than any one read or write of either side, so
/// the upgrades carry it in pieces. Random letters: compression shrinks it little.
const BIG_BODY_BYTES: usize = 200 * 1024;

/// The bodies the round trip publishes: by PUB, by MPUB (in batches), and the large one.
fn round_trip_bodies() -> (Vec<String>, Vec<Vec<String>>, Vec<u8>) {
    let pubs = (0..10).map(|i| format!("pub-{i}")).collect();
    let mpubs =
        (0..2).map(|batch| (0..10).map(|i| format!("mpub-{batch}-{i}")).collect()).collect();
    let mut random = fastrand::Rng::with_seed(7);
    let big = (0..BIG_BODY_BYTES).map(|_| random.u8(b'a'..=b'z')).collect();
    (pubs, mpubs, big)
}

/// Goal: every body tokio-nsq publishes (PUB, MPUB, DPUB, and one larger than a snappy block)
/// reaches its consumer exactly once and FIN completes it, with both connections upgraded as
/// `features` asks. Method: a subscribed consumer with max_in_flight 8, then a producer waiting
/// for each command's OK; collect and finish every message, check in `/stats` (both clients
/// still connected) that each got exactly the upgrades asked for, and check the channel's
/// counters in the engine.
async fn round_trip(features: Features, topic_name: &str) {
    let server = InteropServer::start_with_features(features).await;
    let topic = NSQTopic::new(topic_name).unwrap();
    let mut consumer = consumer(&server, features, &topic, "interop");
    consumer_healthy(&mut consumer).await;
    let mut producer = producer(&server, features);
    producer_healthy(&mut producer).await;

    let (pubs, mpubs, big) = round_trip_bodies();
    let mut labels: HashMap<Vec<u8>, String> = HashMap::new();
    for body in &pubs {
        producer.publish(&topic, body.clone().into_bytes()).await.unwrap();
        producer_ok(&mut producer).await;
        labels.insert(body.clone().into_bytes(), body.clone());
    }
    if features.compression == Some(Compression::Deflate) {
        // tokio-nsq's DEFLATE writer (async-compression 0.3.15) flushes no more than its 8 KiB
        // output buffer holds: the rest of a large PUB waits in its compressor for the client's
        // next write (the NOP answering a heartbeat, 30 s on). So over DEFLATE the large body
        // goes in over HTTP, and comes out through the consumer's DEFLATE stream all the same;
        // pynsq's tests carry a large PUB over DEFLATE.
        server.http_publish(topic_name, &big).await;
    } else {
        producer.publish(&topic, big.clone()).await.unwrap();
        producer_ok(&mut producer).await;
    }
    labels.insert(big, format!("big ({BIG_BODY_BYTES} bytes)"));
    for batch in mpubs {
        let raw = batch.iter().map(|b| b.clone().into_bytes()).collect();
        producer.publish_multiple(&topic, raw).await.unwrap();
        producer_ok(&mut producer).await;
        labels.extend(batch.into_iter().map(|b| (b.clone().into_bytes(), b)));
    }
    let delay = Duration::from_millis(200);
    let deferred_at = Instant::now();
    producer.publish_deferred(&topic, b"dpub-0".to_vec(), delay.as_millis() as u32).await.unwrap();
    producer_ok(&mut producer).await;
    labels.insert(b"dpub-0".to_vec(), "dpub-0".to_owned());

    let mut received = BTreeMap::new();
    while received.len() < labels.len() {
        let message = next_message(&mut consumer).await;
        let Some(label) = labels.get(&message.body) else {
            let start = String::from_utf8_lossy(&message.body[..message.body.len().min(40)]);
            panic!("an unexpected body of {} bytes: {start:?}", message.body.len());
        };
        assert_eq!(message.attempt, 1, "{label} delivered more than once");
        if label == "dpub-0" {
            let waited = deferred_at.elapsed();
            assert!(waited >= delay, "the DPUB was delivered after {waited:?}, before {delay:?}");
        }
        assert!(received.insert(label.clone(), message.id).is_none(), "{label} delivered twice");
        message.finish().await;
    }
    let mut expected: Vec<&String> = labels.values().collect();
    expected.sort();
    assert_eq!(received.keys().collect::<Vec<_>>(), expected);

    // rustls 0.19 and our server both prefer TLS 1.3.
    let negotiated = Negotiated::expected(features, "TLS1.3");
    let clients = server.clients(topic_name, "interop").await;
    assert_eq!(
        clients,
        Clients { consumers: vec![negotiated.clone()], producers: vec![negotiated] },
        "/stats must show both connections with exactly the upgrades asked for"
    );

    let n = labels.len() as u64;
    let stats = server
        .wait_for_channel(topic_name, "interop", |s| {
            s.in_flight_count == 0 && s.depth == 0 && s.deferred_count == 0
        })
        .await;
    assert_eq!((stats.message_count, stats.requeue_count, stats.timeout_count), (n, 0, 0));
    let topic_stats = server.engine.get_topic(topic_name).unwrap().stats();
    assert_eq!((topic_stats.message_count, topic_stats.depth), (n, 0));

    drop(producer);
    drop(consumer);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_mpub_and_dpub_from_tokio_nsq_all_reach_its_consumer_and_finish() {
    round_trip(Features::PLAIN, "tokio_nsq_roundtrip").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_round_trip_works_over_tls() {
    round_trip(Features::TLS, "tokio_nsq_tls").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_round_trip_works_over_snappy() {
    round_trip(Features::SNAPPY, "tokio_nsq_snappy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_round_trip_works_over_deflate() {
    round_trip(Features::DEFLATE, "tokio_nsq_deflate").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_round_trip_works_over_snappy_inside_tls() {
    round_trip(Features::TLS_SNAPPY, "tokio_nsq_tls_snappy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_round_trip_works_over_deflate_inside_tls() {
    round_trip(Features::TLS_DEFLATE, "tokio_nsq_tls_deflate").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_requeued_by_tokio_nsq_comes_back_with_attempts_2() {
    // Goal: REQ as tokio-nsq sends it puts the message back for another attempt. Method: publish
    // one body, requeue it without delay on its first delivery, expect the same message again
    // with attempts 2, finish it, and check the channel's counters.
    let server = InteropServer::start().await;
    let topic = NSQTopic::new("tokio_nsq_requeue").unwrap();
    let mut consumer = consumer(&server, Features::PLAIN, &topic, "interop");
    consumer_healthy(&mut consumer).await;
    let mut producer = producer(&server, Features::PLAIN);
    producer_healthy(&mut producer).await;
    producer.publish(&topic, b"again".to_vec()).await.unwrap();
    producer_ok(&mut producer).await;

    let first = next_message(&mut consumer).await;
    assert_eq!((first.body.as_slice(), first.attempt), (&b"again"[..], 1));
    let id = first.id;
    first.requeue(NSQRequeueDelay::NoDelay).await;

    let second = next_message(&mut consumer).await;
    assert_eq!((second.body.as_slice(), second.attempt), (&b"again"[..], 2));
    assert_eq!(second.id, id, "the requeued delivery is the same message");
    second.finish().await;

    let stats = server
        .wait_for_channel("tokio_nsq_requeue", "interop", |s| {
            s.in_flight_count == 0 && s.depth == 0 && s.deferred_count == 0
        })
        .await;
    assert_eq!((stats.message_count, stats.requeue_count, stats.timeout_count), (1, 1, 0));

    drop(producer);
    drop(consumer);
    server.stop().await;
}
