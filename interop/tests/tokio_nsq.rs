//! The Rust client tokio-nsq 0.14 against our nsqd, connected directly (no lookupd): its
//! producer's PUB, MPUB and DPUB, its consumer's SUB, RDY, FIN and REQ.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::cast_possible_truncation)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{InteropServer, WAIT};
use tokio_nsq::{
    NSQChannel, NSQConfigShared, NSQConsumer, NSQConsumerConfig, NSQConsumerConfigSources,
    NSQEvent, NSQMessage, NSQProducer, NSQProducerConfig, NSQRequeueDelay, NSQTopic,
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

fn shared() -> NSQConfigShared {
    NSQConfigShared::new().set_flush_interval(FLUSH)
}

fn consumer(server: &InteropServer, topic: &Arc<NSQTopic>, channel: &str) -> NSQConsumer {
    show_client_log();
    NSQConsumerConfig::new(Arc::clone(topic), NSQChannel::new(channel).unwrap())
        .set_max_in_flight(8)
        .set_sources(NSQConsumerConfigSources::Daemons(vec![server.tcp.to_string()]))
        .set_shared(shared())
        .build()
}

fn producer(server: &InteropServer) -> NSQProducer {
    show_client_log();
    NSQProducerConfig::new(server.tcp.to_string()).set_shared(shared()).build()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_mpub_and_dpub_from_tokio_nsq_all_reach_its_consumer_and_finish() {
    // Goal: every body tokio-nsq publishes (PUB, MPUB, DPUB) reaches its consumer exactly once
    // and FIN completes it. Method: a subscribed consumer with max_in_flight 8, then a producer
    // waiting for each command's OK; collect every message, finish it, and check the channel's
    // counters in the engine.
    let server = InteropServer::start().await;
    let topic = NSQTopic::new("tokio_nsq_roundtrip").unwrap();
    let mut consumer = consumer(&server, &topic, "interop");
    consumer_healthy(&mut consumer).await;
    let mut producer = producer(&server);
    producer_healthy(&mut producer).await;

    let mut expected = Vec::new();
    for i in 0..10 {
        let body = format!("pub-{i}");
        producer.publish(&topic, body.clone().into_bytes()).await.unwrap();
        producer_ok(&mut producer).await;
        expected.push(body);
    }
    for batch in 0..2 {
        let bodies: Vec<String> = (0..10).map(|i| format!("mpub-{batch}-{i}")).collect();
        let raw = bodies.iter().map(|b| b.clone().into_bytes()).collect();
        producer.publish_multiple(&topic, raw).await.unwrap();
        producer_ok(&mut producer).await;
        expected.extend(bodies);
    }
    let delay = Duration::from_millis(200);
    let deferred_at = Instant::now();
    producer.publish_deferred(&topic, b"dpub-0".to_vec(), delay.as_millis() as u32).await.unwrap();
    producer_ok(&mut producer).await;
    expected.push("dpub-0".to_owned());

    let mut received = BTreeMap::new();
    while received.len() < expected.len() {
        let message = next_message(&mut consumer).await;
        let body = String::from_utf8(message.body.clone()).unwrap();
        assert_eq!(message.attempt, 1, "{body} delivered more than once");
        if body == "dpub-0" {
            let waited = deferred_at.elapsed();
            assert!(waited >= delay, "the DPUB was delivered after {waited:?}, before {delay:?}");
        }
        assert!(received.insert(body.clone(), message.id).is_none(), "{body} delivered twice");
        message.finish().await;
    }
    expected.sort();
    assert_eq!(received.keys().cloned().collect::<Vec<_>>(), expected);

    let n = expected.len() as u64;
    let stats = server
        .wait_for_channel("tokio_nsq_roundtrip", "interop", |s| {
            s.in_flight_count == 0 && s.depth == 0 && s.deferred_count == 0
        })
        .await;
    assert_eq!((stats.message_count, stats.requeue_count, stats.timeout_count), (n, 0, 0));
    let topic_stats = server.engine.get_topic("tokio_nsq_roundtrip").unwrap().stats();
    assert_eq!((topic_stats.message_count, topic_stats.depth), (n, 0));

    drop(producer);
    drop(consumer);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_requeued_by_tokio_nsq_comes_back_with_attempts_2() {
    // Goal: REQ as tokio-nsq sends it puts the message back for another attempt. Method: publish
    // one body, requeue it without delay on its first delivery, expect the same message again
    // with attempts 2, finish it, and check the channel's counters.
    let server = InteropServer::start().await;
    let topic = NSQTopic::new("tokio_nsq_requeue").unwrap();
    let mut consumer = consumer(&server, &topic, "interop");
    consumer_healthy(&mut consumer).await;
    let mut producer = producer(&server);
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
