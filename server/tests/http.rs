//! Tests of nsqd's HTTP API against an nsqd on loopback: every endpoint of NSQ.md §3.2 with its
//! error paths (nsqd's status codes, `{"message":"..."}` bodies and the `X-NSQ-Content-Type`
//! header), the effects each endpoint has on the engine and on TCP consumers, and the `/stats`
//! document of §3.3 field by field.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::cast_possible_truncation)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BufMut as _;
use common::{
    Client, HttpReply, JSON_CONTENT_TYPE, TestServer, assert_error, assert_ok, http_request,
    ok_json,
};
use protocol::command::Command;
use serde_json::{Value, json};

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap_or_else(|| panic!("not an object: {value}")).keys().cloned().collect()
}

fn key_set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|&n| n.to_owned()).collect()
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// `body` in HTTP/1.1 chunked framing, in chunks of at most `size` bytes.
fn chunked(body: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in body.chunks(size) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// A POST whose body has no Content-Length (chunked), so only its real size can be checked.
async fn post_chunked(server: &TestServer, target: &str, body: &[u8]) -> HttpReply {
    let framed = chunked(body, 4);
    http_request(server.http, "POST", target, &[("Transfer-Encoding", "chunked")], &framed).await
}

/// A POST that announces `announced` bytes but sends only `body`: only a server that refuses
/// by the Content-Length answers before the body is complete.
async fn post_announcing(
    server: &TestServer,
    target: &str,
    announced: usize,
    body: &[u8],
) -> HttpReply {
    let length = announced.to_string();
    let headers = [("Content-Length", length.as_str())];
    let request = http_request(server.http, "POST", target, &headers, body);
    tokio::time::timeout(Duration::from_secs(10), request)
        .await
        .expect("nsqd waited for the body instead of refusing it by its Content-Length")
}

/// A binary `/mpub` body: `[count]([size][data])*`, big-endian, no leading total size.
fn binary_mpub(count: i32, elements: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    out.put_i32(count);
    for element in elements {
        out.put_i32(element.len() as i32);
        out.put_slice(element);
    }
    out
}

/// `/stats?format=json` with more parameters (`query` starts with `&`).
async fn stats_json(server: &TestServer, query: &str) -> Value {
    ok_json(&server.http("GET", &format!("/stats?format=json{query}"), b"").await)
}

/// `GET /config/<option>`.
async fn config(server: &TestServer, option: &str) -> Value {
    ok_json(&server.http("GET", &format!("/config/{option}"), b"").await)
}

fn topic_stats(server: &TestServer, topic: &str) -> engine::stats::TopicStats {
    server.engine.get_topic(topic).unwrap_or_else(|| panic!("no topic {topic}")).stats()
}

fn channel_stats(server: &TestServer, topic: &str, channel: &str) -> engine::stats::ChannelStats {
    let topic = server.engine.get_topic(topic).unwrap_or_else(|| panic!("no topic {topic}"));
    topic.get_channel(channel).unwrap_or_else(|| panic!("no channel {channel}")).stats()
}

/// A connection that sent IDENTIFY (no feature negotiation), SUB and RDY.
async fn identified_consumer(
    server: &TestServer,
    identify: &str,
    topic: &str,
    channel: &str,
    rdy: u64,
) -> Client {
    let mut client = server.connect().await;
    assert_eq!(client.identify(identify).await, "OK");
    client.command(Command::Sub { topic, channel }).await;
    client.expect_ok().await;
    client.command(Command::Rdy(rdy)).await;
    client
}

#[tokio::test]
async fn ping_answers_ok_in_plain_text() {
    // Goal: /ping is nsqd's health check. Method: GET it on a healthy nsqd and expect the plain
    // `OK` of nsqd's PlainText handler (no V1 header); any other method is 405.
    let server = TestServer::start().await;
    let reply = server.http("GET", "/ping", b"").await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "OK"), "{reply:?}");
    assert_eq!(reply.header("X-NSQ-Content-Type"), None);
    assert_error(&server.http("POST", "/ping", b"").await, 405, "METHOD_NOT_ALLOWED");
    server.stop().await;
}

#[tokio::test]
async fn info_reports_nsqd_fields_with_their_types() {
    // Goal: /info has nsqd's exact fields and JSON types, durations as integer nanoseconds.
    // Method: start with non-default limits and compare every field with what was configured.
    let before = unix_now();
    let server = TestServer::start_with(&[
        "--broadcast-address=nsqd.example",
        "--max-heartbeat-interval=45s",
        "--max-output-buffer-size=32768",
        "--max-output-buffer-timeout=2s",
        "--max-deflate-level=4",
    ])
    .await;
    let after = unix_now();
    let info = ok_json(&server.http("GET", "/info", b"").await);
    assert_eq!(
        keys(&info),
        key_set(&[
            "version",
            "broadcast_address",
            "hostname",
            "http_port",
            "tcp_port",
            "start_time",
            "max_heartbeat_interval",
            "max_output_buffer_size",
            "max_output_buffer_timeout",
            "max_deflate_level",
            "topology_zone",
            "topology_region",
        ])
    );
    let start_time = info["start_time"].as_i64().expect("start_time is an integer");
    assert!((before..=after).contains(&start_time), "{start_time} not in {before}..={after}");
    let mut fixed = info.clone();
    fixed["start_time"] = json!(0);
    assert_eq!(
        fixed,
        json!({
            "version": "1.3.0",
            "broadcast_address": "nsqd.example",
            "hostname": server::daemon::hostname(),
            "http_port": server.http.port(),
            "tcp_port": server.tcp.port(),
            "start_time": 0,
            "max_heartbeat_interval": 45_000_000_000_u64,
            "max_output_buffer_size": 32768,
            "max_output_buffer_timeout": 2_000_000_000_u64,
            "max_deflate_level": 4,
            "topology_zone": "",
            "topology_region": "",
        })
    );
    assert_error(&server.http("POST", "/info", b"").await, 405, "METHOD_NOT_ALLOWED");
    server.stop().await;
}

#[tokio::test]
async fn pub_delivers_the_body_to_a_subscribed_consumer() {
    // Goal: /pub publishes its raw body as one message. Method: publish bytes that include a
    // newline and a NUL to a topic with a subscribed consumer, read the message from the TCP
    // connection, and check the topic's counters in the engine.
    let server = TestServer::start().await;
    let mut consumer = server.consumer("orders", "billing", 1).await;
    let body: &[u8] = b"line one\nline two\0end";
    assert_ok(&server.http("POST", "/pub?topic=orders", body).await, "OK");
    let message = consumer.message().await;
    assert_eq!(message.body, body);
    assert_eq!(message.attempts, 1);
    assert_eq!(message.timestamp_ns, server.engine.clock().now_ns());
    let stats = topic_stats(&server, "orders");
    assert_eq!((stats.message_count, stats.message_bytes), (1, body.len() as u64));
    // An escaped topic name is decoded; the first of repeated parameters counts.
    assert_ok(&server.http("POST", "/pub?topic=%6Frders&topic=other", b"second").await, "OK");
    consumer.command(Command::Fin(&message.id)).await;
    assert_eq!(consumer.message().await.body, "second");
    assert!(server.engine.get_topic("other").is_none());
    server.stop().await;
}

#[tokio::test]
async fn pub_with_defer_holds_the_message_until_its_time() {
    // Goal: /pub?defer=<ms> delivers no earlier than the delay. Method: publish a deferred
    // message and then an immediate one; the consumer gets the immediate one first while the
    // channel counts one deferred message; moving the engine clock past the delay delivers it.
    let server = TestServer::start_with(&["--max-req-timeout=10s"]).await;
    let mut consumer = server.consumer("jobs", "workers", 1).await;
    assert_ok(&server.http("POST", "/pub?topic=jobs&defer=5000", b"later").await, "OK");
    assert_ok(&server.http("POST", "/pub?topic=jobs&defer=0", b"now").await, "OK");
    let now = consumer.message().await;
    assert_eq!(now.body, "now");
    let stats = channel_stats(&server, "jobs", "workers");
    assert_eq!((stats.deferred_count, stats.in_flight_count, stats.depth), (1, 1, 0));
    consumer.command(Command::Fin(&now.id)).await;
    server.advance(Duration::from_millis(4999));
    assert_eq!(channel_stats(&server, "jobs", "workers").deferred_count, 1);
    server.advance(Duration::from_millis(1));
    let later = consumer.message().await;
    assert_eq!((later.body.as_ref(), later.attempts), (&b"later"[..], 1));
    // The maximum itself is allowed.
    assert_ok(&server.http("POST", "/pub?topic=jobs&defer=10000", b"max").await, "OK");
    assert_eq!(topic_stats(&server, "jobs").message_count, 3);
    server.stop().await;
}

#[tokio::test]
async fn pub_rejects_bad_requests_with_nsqd_codes() {
    // Goal: every /pub error of nsqd, in nsqd's order (body before query, topic before defer).
    // Method: send each bad request to an nsqd with small limits and check the status, the
    // message, and that nothing was published.
    let server = TestServer::start_with(&["--max-msg-size=10", "--max-req-timeout=10s"]).await;
    // Too big by Content-Length: refused before the body is read.
    let reply = post_announcing(&server, "/pub?topic=t", 11, b"short").await;
    assert_error(&reply, 413, "MSG_TOO_BIG");
    // Too big by the body itself, with no Content-Length; the limit itself is fine.
    assert_error(&post_chunked(&server, "/pub?topic=t", b"01234567890").await, 413, "MSG_TOO_BIG");
    assert_ok(&post_chunked(&server, "/pub?topic=t", b"0123456789").await, "OK");
    // The body is checked before the query.
    assert_error(&server.http("POST", "/pub", b"01234567890").await, 413, "MSG_TOO_BIG");
    assert_error(&server.http("POST", "/pub?topic=%zz", b"").await, 400, "MSG_EMPTY");
    assert_error(&server.http("POST", "/pub?topic=empty", b"").await, 400, "MSG_EMPTY");
    assert!(server.engine.get_topic("empty").is_none(), "MSG_EMPTY comes before the topic");
    for target in ["/pub?topic=%zz", "/pub?topic=t%2", "/pub?topic=t;x=1"] {
        assert_error(&server.http("POST", target, b"x").await, 400, "INVALID_REQUEST");
    }
    assert_error(&server.http("POST", "/pub", b"x").await, 400, "MISSING_ARG_TOPIC");
    assert_error(&server.http("POST", "/pub?channel=t", b"x").await, 400, "MISSING_ARG_TOPIC");
    let long = format!("/pub?topic={}", "a".repeat(65));
    for target in ["/pub?topic=", "/pub?topic=bad!", "/pub?topic=a+b", long.as_str()] {
        assert_error(&server.http("POST", target, b"x").await, 400, "INVALID_TOPIC");
    }
    for defer in ["abc", "1.5", "", "-1", "10001", "99999999999999999999"] {
        let target = format!("/pub?topic=t&defer={defer}");
        assert_error(&server.http("POST", &target, b"x").await, 400, "INVALID_DEFER");
    }
    // nsqd creates the topic before it looks at `defer`.
    let reply = server.http("POST", "/pub?topic=created_anyway&defer=x", b"x").await;
    assert_error(&reply, 400, "INVALID_DEFER");
    assert_eq!(topic_stats(&server, "created_anyway").message_count, 0);
    assert_eq!(topic_stats(&server, "t").message_count, 1);
    server.stop().await;
}

#[tokio::test]
async fn mpub_text_splits_lines_and_skips_empty_ones() {
    // Goal: text /mpub publishes one message per line, strips only the `\n`, skips empty lines
    // and the trailing newline. Method: two text bodies to a topic with a consumer that reads
    // exactly the five expected messages in order; an empty body is OK with no message.
    let server = TestServer::start().await;
    let mut consumer = server.consumer("lines", "reader", 5).await;
    let reply = server.http("POST", "/mpub?topic=lines", b"one\ntwo\n\n\nthree\n").await;
    assert_ok(&reply, "OK");
    assert_eq!(topic_stats(&server, "lines").message_count, 3);
    assert_ok(&server.http("POST", "/mpub?topic=lines&binary=false", b"a\r\nb").await, "OK");
    let mut bodies = Vec::new();
    for _ in 0..5 {
        bodies.push(consumer.message().await.body);
    }
    assert_eq!(bodies, ["one", "two", "three", "a\r", "b"]);
    let stats = topic_stats(&server, "lines");
    assert_eq!((stats.message_count, stats.message_bytes), (5, 3 + 3 + 5 + 2 + 1));
    // An empty body creates the topic and publishes nothing.
    assert_ok(&server.http("POST", "/mpub?topic=quiet", b"").await, "OK");
    assert_ok(&server.http("POST", "/mpub?topic=quiet", b"\n\n").await, "OK");
    assert_eq!(topic_stats(&server, "quiet").message_count, 0);
    server.stop().await;
}

#[tokio::test]
async fn mpub_binary_publishes_counted_messages() {
    // Goal: binary /mpub (`binary=true`, `1`, or any unknown value) decodes
    // `[count]([size][data])*` and keeps newlines inside messages. Method: publish binary
    // bodies and read every message from a consumer.
    let server = TestServer::start().await;
    let mut consumer = server.consumer("bin", "reader", 4).await;
    let body = binary_mpub(2, &[b"first\nline", b"\0second"]);
    assert_ok(&server.http("POST", "/mpub?topic=bin&binary=true", &body).await, "OK");
    let body = binary_mpub(1, &[b"third"]);
    assert_ok(&server.http("POST", "/mpub?topic=bin&binary=1", &body).await, "OK");
    let body = binary_mpub(1, &[b"fourth"]);
    assert_ok(&server.http("POST", "/mpub?topic=bin&binary=yes", &body).await, "OK");
    let mut bodies = Vec::new();
    for _ in 0..4 {
        bodies.push(consumer.message().await.body);
    }
    assert_eq!(bodies, [&b"first\nline"[..], b"\0second", b"third", b"fourth"]);
    assert_eq!(topic_stats(&server, "bin").message_count, 4);
    server.stop().await;
}

#[tokio::test]
async fn mpub_rejects_bad_bodies_with_nsqd_codes() {
    // Goal: every /mpub error of nsqd: BODY_TOO_BIG by Content-Length and by body, text
    // MSG_TOO_BIG, binary BAD_BODY / BAD_MESSAGE (413, the TCP code without `E_`), and the
    // topic errors. Method: send each to an nsqd with small limits; nothing may be published.
    let server = TestServer::start_with(&["--max-msg-size=10", "--max-body-size=30"]).await;
    let reply = post_announcing(&server, "/mpub?topic=t", 31, b"short").await;
    assert_error(&reply, 413, "BODY_TOO_BIG");
    let reply = post_announcing(&server, "/mpub?topic=t&binary=true", 31, b"short").await;
    assert_error(&reply, 413, "BODY_TOO_BIG");
    // The Content-Length is checked before the query, as nsqd does.
    assert_error(&post_announcing(&server, "/mpub", 31, b"short").await, 413, "BODY_TOO_BIG");
    let big = b"0123456789\n0123456789\n012345678".to_vec();
    assert_eq!(big.len(), 31);
    assert_error(&post_chunked(&server, "/mpub?topic=t", &big).await, 413, "BODY_TOO_BIG");
    // One line over --max-msg-size refuses the whole body, the good lines included.
    let reply = server.http("POST", "/mpub?topic=t", b"ok\n01234567890\n").await;
    assert_error(&reply, 413, "MSG_TOO_BIG");
    assert_eq!(topic_stats(&server, "t").message_count, 0);
    let binary: [(Vec<u8>, &str); 8] = [
        (Vec::new(), "BAD_BODY"),
        (vec![0, 0], "BAD_BODY"),
        (binary_mpub(0, &[]), "BAD_BODY"),
        (binary_mpub(-1, &[b"x"]), "BAD_BODY"),
        // (30 - 4) / 5 = 5 messages at most.
        (binary_mpub(6, &[b"a", b"b"]), "BAD_BODY"),
        (binary_mpub(1, &[b""]), "BAD_MESSAGE"),
        (binary_mpub(1, &[b"01234567890"]), "BAD_MESSAGE"),
        (binary_mpub(2, &[b"only one"]), "BAD_MESSAGE"),
    ];
    for (body, message) in binary {
        let reply = server.http("POST", "/mpub?topic=t&binary=true", &body).await;
        assert_error(&reply, 413, message);
    }
    let mut truncated = binary_mpub(1, &[b"abcdef"]);
    truncated.truncate(7);
    let reply = server.http("POST", "/mpub?topic=t&binary=true", &truncated).await;
    assert_error(&reply, 413, "BAD_MESSAGE");
    assert_eq!(topic_stats(&server, "t").message_count, 0);
    assert_error(&server.http("POST", "/mpub", b"x").await, 400, "MISSING_ARG_TOPIC");
    assert_error(&server.http("POST", "/mpub?topic=bad!", b"x").await, 400, "INVALID_TOPIC");
    assert_error(&server.http("POST", "/mpub?topic=%zz", b"x").await, 400, "INVALID_REQUEST");
    assert!(server.engine.get_topic("bad!").is_none());
    server.stop().await;
}

/// A client's entry in `/stats`, its connection time checked and replaced by 0.
#[track_caller]
fn fix_connect_ts(client: &mut Value, range: std::ops::RangeInclusive<i64>) {
    let connect_ts = client["connect_ts"].as_i64().expect("connect_ts is an integer");
    assert!(range.contains(&connect_ts), "connect_ts {connect_ts} not in {range:?}");
    client["connect_ts"] = json!(0);
}

#[tokio::test]
async fn stats_json_matches_nsqd_shape_field_by_field() {
    // Goal: /stats?format=json is nsqd's document: exact key sets, JSON types and values.
    // Method: set up one TCP producer that published, one identified consumer with one message
    // in flight and one message deferred by /pub?defer=, then compare the whole document (the
    // clock-dependent fields checked for range and type first) with what nsqd would answer.
    let before = unix_now();
    let server = TestServer::start().await;
    assert_ok(&server.http("POST", "/topic/create?topic=orders", b"").await, "");
    assert_ok(&server.http("POST", "/channel/create?topic=orders&channel=billing", b"").await, "");
    assert_ok(&server.http("POST", "/pub?topic=orders&defer=60000", b"later").await, "OK");
    let mut producer = server.connect().await;
    producer.command(Command::Pub { topic: "orders", body: b"hello" }).await;
    producer.expect_ok().await;
    let identify =
        r#"{"client_id":"worker-1","hostname":"worker.example","user_agent":"http-test/1.0"}"#;
    let mut consumer = identified_consumer(&server, identify, "orders", "billing", 1).await;
    assert_eq!(consumer.message().await.body, "hello");
    let after = unix_now();

    let mut doc = ok_json(&server.http("GET", "/stats?format=json", b"").await);
    assert_eq!(
        keys(&doc),
        key_set(&["version", "health", "start_time", "topics", "memory", "producers"])
    );
    let start_time = doc["start_time"].as_i64().expect("start_time is an integer");
    assert!((before..=after).contains(&start_time));
    doc["start_time"] = json!(0);
    let memory = &doc["memory"];
    assert_eq!(
        keys(memory),
        key_set(&[
            "heap_objects",
            "heap_idle_bytes",
            "heap_in_use_bytes",
            "heap_released_bytes",
            "gc_pause_usec_100",
            "gc_pause_usec_99",
            "gc_pause_usec_95",
            "next_gc_bytes",
            "gc_total_runs",
        ])
    );
    for (name, value) in memory.as_object().unwrap() {
        assert!(value.is_u64(), "memory.{name} is not an unsigned integer: {value}");
    }
    doc["memory"] = json!({});
    fix_connect_ts(&mut doc["topics"][0]["channels"][0]["clients"][0], before..=after);
    fix_connect_ts(&mut doc["producers"][0], before..=after);

    let consumer_address = consumer.local_addr.to_string();
    let producer_address = producer.local_addr.to_string();
    let no_latency = json!({ "count": 0, "percentiles": null });
    let consumer_json = json!({
        "client_id": "worker-1",
        "hostname": "worker.example",
        "version": "V2",
        "remote_address": consumer_address,
        "state": 3,
        "ready_count": 1,
        "in_flight_count": 1,
        "message_count": 1,
        "finish_count": 0,
        "requeue_count": 0,
        "connect_ts": 0,
        "sample_rate": 0,
        "deflate": false,
        "snappy": false,
        "user_agent": "http-test/1.0",
        "topology_zone": "",
        "topology_region": "",
        "tls": false,
        "tls_cipher_suite": "",
        "tls_version": "",
        "tls_negotiated_protocol": "",
        "tls_negotiated_protocol_is_mutual": false,
    });
    let producer_json = json!({
        "client_id": "127.0.0.1",
        "hostname": "127.0.0.1",
        "version": "V2",
        "remote_address": producer_address,
        "state": 0,
        "ready_count": 0,
        "in_flight_count": 0,
        "message_count": 0,
        "finish_count": 0,
        "requeue_count": 0,
        "connect_ts": 0,
        "sample_rate": 0,
        "deflate": false,
        "snappy": false,
        "user_agent": "",
        "topology_zone": "",
        "topology_region": "",
        "pub_counts": [{ "topic": "orders", "count": 1 }],
        "tls": false,
        "tls_cipher_suite": "",
        "tls_version": "",
        "tls_negotiated_protocol": "",
        "tls_negotiated_protocol_is_mutual": false,
    });
    let channel_json = json!({
        "channel_name": "billing",
        "depth": 0,
        "backend_depth": 0,
        "in_flight_count": 1,
        "deferred_count": 1,
        "message_count": 2,
        "requeue_count": 0,
        "timeout_count": 0,
        "client_count": 1,
        "clients": [consumer_json],
        "paused": false,
        "e2e_processing_latency": no_latency,
    });
    let topic_json = json!({
        "topic_name": "orders",
        "channels": [channel_json],
        "depth": 0,
        "backend_depth": 0,
        "message_count": 2,
        "message_bytes": 10,
        "paused": false,
        "e2e_processing_latency": no_latency,
    });
    let expected = json!({
        "version": "1.3.0",
        "health": "OK",
        "start_time": 0,
        "topics": [topic_json],
        "memory": {},
        "producers": [producer_json],
    });
    assert_eq!(doc, expected, "\nactual:   {doc}\nexpected: {expected}");

    // Without clients: `clients` and `producers` are null, the client count stays.
    let doc = ok_json(&server.http("GET", "/stats?format=json&include_clients=false", b"").await);
    assert_eq!(doc["producers"], Value::Null);
    assert_eq!(doc["topics"][0]["channels"][0]["clients"], Value::Null);
    assert_eq!(doc["topics"][0]["channels"][0]["client_count"], 1);
    // A topic filter naming no topic: `topics` is null, and so is `producers` (nsqd returns
    // before it looks at the producers).
    let doc = ok_json(&server.http("GET", "/stats?format=json&topic=nope", b"").await);
    assert_eq!(
        keys(&doc),
        key_set(&["version", "health", "start_time", "memory", "topics", "producers"])
    );
    assert_eq!((&doc["topics"], &doc["producers"]), (&Value::Null, &Value::Null));
    // Without memory: the key is left out.
    let doc = ok_json(&server.http("GET", "/stats?format=json&include_mem=false", b"").await);
    assert_eq!(keys(&doc), key_set(&["version", "health", "start_time", "topics", "producers"]));
    server.stop().await;
}

#[tokio::test]
async fn stats_filters_select_topics_channels_and_clients() {
    // Goal: /stats's `topic`, `channel`, `include_clients` and `include_mem` parameters select
    // what nsqd selects. Method: three topics (one with no channel), then each filter; topics
    // and channels come sorted by name.
    let server = TestServer::start().await;
    for (topic, channel) in [("zeta", "shared"), ("alpha", "only_alpha"), ("alpha", "shared")] {
        assert_ok(&server.http("POST", &format!("/topic/create?topic={topic}"), b"").await, "");
        let target = format!("/channel/create?topic={topic}&channel={channel}");
        assert_ok(&server.http("POST", &target, b"").await, "");
    }
    assert_ok(&server.http("POST", "/topic/create?topic=empty", b"").await, "");
    let names = |doc: &Value| -> Vec<(String, Vec<String>)> {
        doc["topics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let channels = t["channels"].as_array().unwrap();
                let channels = channels.iter().map(|c| c["channel_name"].as_str().unwrap());
                (t["topic_name"].as_str().unwrap().to_owned(), channels.map(String::from).collect())
            })
            .collect()
    };
    let all = stats_json(&server, "").await;
    let expected_all =
        [("alpha", vec!["only_alpha", "shared"]), ("empty", vec![]), ("zeta", vec!["shared"])];
    let owned = |list: &[(&str, Vec<&str>)]| -> Vec<(String, Vec<String>)> {
        list.iter()
            .map(|(t, cs)| ((*t).to_owned(), cs.iter().map(|c| (*c).to_owned()).collect()))
            .collect()
    };
    assert_eq!(names(&all), owned(&expected_all));
    // Channels with no consumer have an empty client list (not null) by default.
    assert_eq!(all["topics"][0]["channels"][0]["clients"], json!([]));
    assert_eq!(all["topics"][1]["channels"], json!([]));
    // No TCP client published: no producers.
    assert_eq!(all["producers"], Value::Null);
    assert_eq!(
        names(&stats_json(&server, "&topic=zeta").await),
        owned(&[("zeta", vec!["shared"])])
    );
    assert_eq!(
        names(&stats_json(&server, "&channel=shared").await),
        owned(&[("alpha", vec!["shared"]), ("zeta", vec!["shared"])])
    );
    assert_eq!(
        names(&stats_json(&server, "&topic=alpha&channel=only_alpha").await),
        owned(&[("alpha", vec!["only_alpha"])])
    );
    assert_eq!(stats_json(&server, "&topic=zeta&channel=only_alpha").await["topics"], json!([]));
    assert_eq!(stats_json(&server, "&topic=nope").await["topics"], Value::Null);
    // Booleans: `0`/`false` are false, anything else is true.
    for off in ["false", "0"] {
        let doc = stats_json(&server, &format!("&include_clients={off}&include_mem={off}")).await;
        assert_eq!(doc["topics"][0]["channels"][0]["clients"], Value::Null);
        assert!(doc.get("memory").is_none());
    }
    for on in ["true", "1", "maybe"] {
        let doc = stats_json(&server, &format!("&include_clients={on}&include_mem={on}")).await;
        assert_eq!(doc["topics"][0]["channels"][0]["clients"], json!([]));
        assert!(doc["memory"].is_object());
    }
    // Text unless `format=json`.
    let reply = server.http("GET", "/stats?format=xml", b"").await;
    assert_eq!(reply.status, 200);
    assert!(reply.text().starts_with("nsqd v1.3.0"), "{}", reply.text());
    assert_error(&server.http("GET", "/stats?topic=%zz", b"").await, 400, "INVALID_REQUEST");
    assert_error(&server.http("POST", "/stats", b"").await, 405, "METHOD_NOT_ALLOWED");
    server.stop().await;
}

#[tokio::test]
async fn stats_reports_configured_e2e_percentiles() {
    // Goal: with --e2e-processing-latency-percentile, channels and their topic report
    // `{"count":N,"percentiles":[{"quantile":q,"value":ns}]}`. Method: deliver a message, move
    // the engine clock 1.5 s, FIN it, and read the channel's and topic's figures; a topic
    // without channels reports null percentiles, as nsqd does.
    let server = TestServer::start_with(&["--e2e-processing-latency-percentile=0.99"]).await;
    assert_ok(&server.http("POST", "/topic/create?topic=lonely", b"").await, "");
    let mut consumer = server.consumer("timed", "c", 1).await;
    assert_ok(&server.http("POST", "/pub?topic=timed", b"x").await, "OK");
    let message = consumer.message().await;
    let doc = ok_json(&server.http("GET", "/stats?format=json&topic=timed", b"").await);
    assert_eq!(
        doc["topics"][0]["channels"][0]["e2e_processing_latency"],
        json!({ "count": 0, "percentiles": [{ "quantile": 0.99, "value": 0 }] })
    );
    server.advance(Duration::from_millis(1500));
    consumer.command(Command::Fin(&message.id)).await;
    consumer.sync().await;
    let doc = ok_json(&server.http("GET", "/stats?format=json", b"").await);
    // The consumer also published (its sync): as a producer it shows its own counters, as
    // nsqd does.
    let producer = &doc["producers"][0];
    let counters = ["state", "ready_count", "in_flight_count", "message_count", "finish_count"];
    let counters: Vec<&Value> = counters.iter().map(|&name| &producer[name]).collect();
    assert_eq!(counters, [&json!(3), &json!(1), &json!(0), &json!(1), &json!(1)]);
    assert_eq!(producer["pub_counts"], json!([{ "topic": "sync", "count": 1 }]));
    let topics = doc["topics"].as_array().unwrap();
    let lonely = topics.iter().find(|t| t["topic_name"] == "lonely").unwrap();
    assert_eq!(lonely["e2e_processing_latency"], json!({ "count": 0, "percentiles": null }));
    let timed = topics.iter().find(|t| t["topic_name"] == "timed").unwrap();
    for latency in
        [&timed["e2e_processing_latency"], &timed["channels"][0]["e2e_processing_latency"]]
    {
        assert_eq!(keys(latency), key_set(&["count", "percentiles"]));
        assert_eq!(latency["count"], 1);
        let percentiles = latency["percentiles"].as_array().unwrap();
        assert_eq!(percentiles.len(), 1);
        assert_eq!(keys(&percentiles[0]), key_set(&["quantile", "value"]));
        assert_eq!(percentiles[0]["quantile"], 0.99);
        let value = percentiles[0]["value"].as_u64().expect("value in integer nanoseconds");
        assert!((1_500_000_000..=1_520_000_000).contains(&value), "{value}");
    }
    // The text form shows the quantile values as nsqd does (`%0.1f` with a unit).
    let text = server.http("GET", "/stats?topic=timed", b"").await.text();
    assert!(text.contains("msgs: 1        e2e%: 1.5s\n"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn stats_text_lists_topics_channels_and_clients() {
    // Goal: the plain-text /stats has nsqd's lines. Method: an empty nsqd says `None` twice;
    // then a paused topic and channel, a consumer and a producer, each line checked in nsqd's
    // printf layout.
    let server = TestServer::start().await;
    let reply = server.http("GET", "/stats", b"").await;
    assert_ok(&reply, &reply.text());
    assert_ne!(reply.header("Content-Type"), Some(JSON_CONTENT_TYPE), "text, not JSON");
    let text = reply.text();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("nsqd v1.3.0 (built w/"), "{text}");
    assert!(lines[1].starts_with("start_time "), "{text}");
    assert!(lines[2].starts_with("uptime "), "{text}");
    assert!(text.contains("\n\nHealth: OK\n\nMemory:\n   heap_objects             \t"), "{text}");
    assert!(text.ends_with("\nTopics: None\n\nProducers: None\n"), "{text}");

    let mut consumer = server.consumer("orders", "billing", 1).await;
    let mut producer = server.connect().await;
    producer.command(Command::Pub { topic: "orders", body: b"hello" }).await;
    producer.expect_ok().await;
    assert_eq!(consumer.message().await.body, "hello");
    assert_ok(&server.http("POST", "/topic/pause?topic=orders", b"").await, "");
    let target = "/channel/pause?topic=orders&channel=billing";
    assert_ok(&server.http("POST", target, b"").await, "");
    let text = server.http("GET", "/stats?include_mem=false", b"").await.text();
    assert!(!text.contains("Memory:"), "{text}");
    let consumer_port = consumer.local_addr.port();
    let producer_port = producer.local_addr.port();
    let expected_topic =
        "\nTopics:\n*P [orders         ] depth: 0     be-depth: 0     msgs: 1        e2e%: \n";
    assert!(text.contains(expected_topic), "{text}");
    let expected_channel = "   *P [billing                  ] depth: 0     be-depth: 0     inflt: 1    \
         def: 0    re-q: 0     timeout: 0     msgs: 1        e2e%: \n";
    assert!(text.contains(expected_channel), "{text}");
    let expected_client = format!(
        "        [V2 127.0.0.1:{consumer_port:<11}] state: 3 inflt: 1    rdy: 1    fin: 0        \
         re-q: 0        msgs: 1        connected: "
    );
    assert!(text.contains(&expected_client), "{text}");
    let expected_producer = format!(
        "\nProducers:\n   [V2 127.0.0.1:{producer_port:<11}] msgs: 1        topics: orders=1 connected: "
    );
    assert!(text.contains(&expected_producer), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn topic_create_validates_and_creates() {
    // Goal: /topic/create creates a topic (idempotently) and checks its name. Method: create,
    // then find the topic in the engine and in /stats; each bad request gets nsqd's error and
    // creates nothing.
    let server = TestServer::start().await;
    assert_ok(&server.http("POST", "/topic/create?topic=fresh", b"").await, "");
    assert_ok(&server.http("POST", "/topic/create?topic=fresh", b"").await, "");
    assert_ok(&server.http("POST", "/topic/create?topic=temp%23ephemeral", b"").await, "");
    assert!(server.engine.get_topic("fresh").is_some());
    assert!(server.engine.get_topic("temp#ephemeral").unwrap().is_ephemeral());
    let doc = ok_json(&server.http("GET", "/stats?format=json&topic=fresh", b"").await);
    assert_eq!(doc["topics"][0]["topic_name"], "fresh");
    let cases = [
        ("/topic/create?topic=%zz", 400, "INVALID_REQUEST"),
        ("/topic/create", 400, "MISSING_ARG_TOPIC"),
        ("/topic/create?channel=fresh", 400, "MISSING_ARG_TOPIC"),
        ("/topic/create?topic=", 400, "INVALID_TOPIC"),
        ("/topic/create?topic=no%20spaces", 400, "INVALID_TOPIC"),
        ("/topic/create?topic=bad!", 400, "INVALID_TOPIC"),
    ];
    for (target, status, message) in cases {
        assert_error(&server.http("POST", target, b"").await, status, message);
    }
    assert_eq!(server.engine.topics().len(), 2);
    assert_error(
        &server.http("GET", "/topic/create?topic=x", b"").await,
        405,
        "METHOD_NOT_ALLOWED",
    );
    server.stop().await;
}

#[tokio::test]
async fn topic_delete_removes_the_topic_and_its_messages() {
    // Goal: /topic/delete removes a topic with its channels and messages. Method: publish, delete,
    // check the engine and /stats no longer have it, that a second delete is 404, and that a
    // topic created again under the name starts empty.
    let server = TestServer::start().await;
    assert_ok(&server.http("POST", "/topic/create?topic=doomed", b"").await, "");
    assert_ok(&server.http("POST", "/channel/create?topic=doomed&channel=c", b"").await, "");
    assert_ok(&server.http("POST", "/mpub?topic=doomed", b"a\nb\nc").await, "OK");
    assert_eq!(channel_stats(&server, "doomed", "c").depth, 3);
    assert_ok(&server.http("POST", "/topic/delete?topic=doomed", b"").await, "");
    assert!(server.engine.get_topic("doomed").is_none());
    let doc = ok_json(&server.http("GET", "/stats?format=json", b"").await);
    assert_eq!(doc["topics"], json!([]));
    let cases = [
        ("/topic/delete?topic=doomed", 404, "TOPIC_NOT_FOUND"),
        // nsqd does not validate the name here: an invalid one is simply not found.
        ("/topic/delete?topic=bad!", 404, "TOPIC_NOT_FOUND"),
        ("/topic/delete", 400, "MISSING_ARG_TOPIC"),
        ("/topic/delete?topic=%zz", 400, "INVALID_REQUEST"),
    ];
    for (target, status, message) in cases {
        assert_error(&server.http("POST", target, b"").await, status, message);
    }
    let reply = server.http("POST", "/channel/create?topic=doomed&channel=c", b"").await;
    assert_error(&reply, 404, "TOPIC_NOT_FOUND");
    assert_ok(&server.http("POST", "/topic/create?topic=doomed", b"").await, "");
    assert_ok(&server.http("POST", "/channel/create?topic=doomed&channel=c", b"").await, "");
    let stats = topic_stats(&server, "doomed");
    assert_eq!((stats.message_count, stats.depth, stats.channels[0].depth), (0, 0, 0));
    server.stop().await;
}

#[tokio::test]
async fn topic_empty_drops_the_messages_waiting_at_the_topic_only() {
    // Goal: /topic/empty drops what waits at the topic, not what its channels hold. Method:
    // messages published with no channel wait at the topic; empty them and check a channel
    // created afterwards gets nothing; then with a channel holding messages and the topic
    // paused, empty drops only the messages queued at the topic.
    let server = TestServer::start().await;
    assert_ok(&server.http("POST", "/mpub?topic=waiting", b"a\nb").await, "OK");
    assert_eq!(topic_stats(&server, "waiting").depth, 2);
    assert_ok(&server.http("POST", "/topic/empty?topic=waiting", b"").await, "");
    assert_eq!(topic_stats(&server, "waiting").depth, 0);
    assert_ok(&server.http("POST", "/channel/create?topic=waiting&channel=c", b"").await, "");
    assert_eq!(channel_stats(&server, "waiting", "c").depth, 0);

    assert_ok(&server.http("POST", "/pub?topic=waiting", b"in channel").await, "OK");
    assert_ok(&server.http("POST", "/topic/pause?topic=waiting", b"").await, "");
    assert_ok(&server.http("POST", "/pub?topic=waiting", b"at topic").await, "OK");
    let stats = topic_stats(&server, "waiting");
    assert_eq!((stats.depth, stats.channels[0].depth), (1, 1));
    assert_ok(&server.http("POST", "/topic/empty?topic=waiting", b"").await, "");
    assert_eq!(topic_stats(&server, "waiting").depth, 0);
    // After unpausing, the channel still has only its own message: the next one delivered
    // after it is one published later. (Its depth is checked in the ignored test
    // `channel_depth_excludes_what_the_channel_cannot_deliver_yet`.)
    assert_ok(&server.http("POST", "/topic/unpause?topic=waiting", b"").await, "");
    let mut consumer = server.consumer("waiting", "c", 2).await;
    assert_eq!(consumer.message().await.body, "in channel");
    assert_ok(&server.http("POST", "/pub?topic=waiting", b"next").await, "OK");
    assert_eq!(consumer.message().await.body, "next");

    let cases = [
        ("/topic/empty?topic=%zz", 400, "INVALID_REQUEST"),
        ("/topic/empty", 400, "MISSING_ARG_TOPIC"),
        ("/topic/empty?topic=bad!", 400, "INVALID_TOPIC"),
        ("/topic/empty?topic=missing", 404, "TOPIC_NOT_FOUND"),
    ];
    for (target, status, message) in cases {
        assert_error(&server.http("POST", target, b"").await, status, message);
    }
    assert!(server.engine.get_topic("missing").is_none());
    server.stop().await;
}

#[tokio::test]
async fn topic_pause_holds_messages_at_the_topic_until_unpause() {
    // Goal: a paused topic hands nothing to its channels. Method: pause, publish; the message
    // waits at the topic (topic depth 1, channel has nothing) and a consumer made on the engine
    // gets nothing; after unpause the subscribed TCP consumer receives it.
    let server = TestServer::start().await;
    let mut consumer = server.consumer("held", "c", 1).await;
    assert_ok(&server.http("POST", "/topic/pause?topic=held", b"").await, "");
    assert!(topic_stats(&server, "held").paused);
    assert_ok(&server.http("POST", "/pub?topic=held", b"m1").await, "OK");
    let stats = topic_stats(&server, "held");
    assert_eq!((stats.depth, stats.message_count), (1, 1));
    let channel = &stats.channels[0];
    assert_eq!((channel.in_flight_count, channel.message_count), (0, 0));
    let probe = server.engine.get_topic("held").unwrap().get_channel("c").unwrap();
    let probe = probe.subscribe(None).unwrap();
    probe.set_ready(1);
    assert!(probe.next_message().unwrap().is_none(), "a paused topic delivered");
    drop(probe);
    let doc = ok_json(&server.http("GET", "/stats?format=json&topic=held", b"").await);
    assert_eq!(
        (&doc["topics"][0]["paused"], &doc["topics"][0]["depth"]),
        (&json!(true), &json!(1))
    );
    // Pausing twice is fine; unpausing delivers.
    assert_ok(&server.http("POST", "/topic/pause?topic=held", b"").await, "");
    assert_ok(&server.http("POST", "/topic/unpause?topic=held", b"").await, "");
    assert_eq!(consumer.message().await.body, "m1");
    let stats = topic_stats(&server, "held");
    assert_eq!((stats.paused, stats.depth, stats.channels[0].in_flight_count), (false, 0, 1));
    for path in ["/topic/pause", "/topic/unpause"] {
        let cases = [
            (format!("{path}?topic=%zz"), 400, "INVALID_REQUEST"),
            (path.to_owned(), 400, "MISSING_ARG_TOPIC"),
            (format!("{path}?topic=missing"), 404, "TOPIC_NOT_FOUND"),
            // Not validated: an invalid name is simply not found.
            (format!("{path}?topic=bad!"), 404, "TOPIC_NOT_FOUND"),
        ];
        for (target, status, message) in cases {
            assert_error(&server.http("POST", &target, b"").await, status, message);
        }
    }
    assert!(server.engine.get_topic("missing").is_none());
    server.stop().await;
}

#[tokio::test]
async fn channel_create_needs_an_existing_topic() {
    // Goal: /channel/create creates a channel of an existing topic only. Method: a missing
    // topic is 404 and is not created; after /topic/create the channel exists, receives what
    // is published from then on, and creating it again is harmless.
    let server = TestServer::start().await;
    let reply = server.http("POST", "/channel/create?topic=later&channel=c", b"").await;
    assert_error(&reply, 404, "TOPIC_NOT_FOUND");
    assert!(server.engine.get_topic("later").is_none());
    assert_ok(&server.http("POST", "/topic/create?topic=later", b"").await, "");
    assert_ok(&server.http("POST", "/channel/create?topic=later&channel=c", b"").await, "");
    assert_ok(&server.http("POST", "/pub?topic=later", b"x").await, "OK");
    assert_ok(&server.http("POST", "/channel/create?topic=later&channel=c", b"").await, "");
    let stats = channel_stats(&server, "later", "c");
    assert_eq!((stats.depth, stats.message_count), (1, 1));
    let target = "/channel/create?topic=later&channel=temp%23ephemeral";
    assert_ok(&server.http("POST", target, b"").await, "");
    let topic = server.engine.get_topic("later").unwrap();
    assert!(topic.get_channel("temp#ephemeral").unwrap().is_ephemeral());
    server.stop().await;
}

#[tokio::test]
async fn channel_delete_removes_the_channel() {
    // Goal: /channel/delete removes one channel and its messages, not its siblings. Method:
    // two channels with a message each; delete one, check the engine and /stats, delete again
    // for CHANNEL_NOT_FOUND.
    let server = TestServer::start().await;
    assert_ok(&server.http("POST", "/topic/create?topic=t", b"").await, "");
    for channel in ["gone", "kept"] {
        let target = format!("/channel/create?topic=t&channel={channel}");
        assert_ok(&server.http("POST", &target, b"").await, "");
    }
    assert_ok(&server.http("POST", "/pub?topic=t", b"x").await, "OK");
    assert_ok(&server.http("POST", "/channel/delete?topic=t&channel=gone", b"").await, "");
    let topic = server.engine.get_topic("t").unwrap();
    assert!(topic.get_channel("gone").is_none());
    assert_eq!(channel_stats(&server, "t", "kept").depth, 1);
    let doc = ok_json(&server.http("GET", "/stats?format=json&topic=t", b"").await);
    let channels = doc["topics"][0]["channels"].as_array().unwrap();
    assert_eq!(channels.len(), 1);
    assert_eq!(channels[0]["channel_name"], "kept");
    let reply = server.http("POST", "/channel/delete?topic=t&channel=gone", b"").await;
    assert_error(&reply, 404, "CHANNEL_NOT_FOUND");
    server.stop().await;
}

#[tokio::test]
async fn channel_empty_drops_queued_in_flight_and_deferred_messages() {
    // Goal: /channel/empty drops everything the channel holds: unread, in flight and deferred.
    // Method: one deferred, one in flight, two queued; empty; the counters are zero, FIN of
    // the in-flight message fails, nothing comes back after the timeouts pass, and the next
    // published message is the next one delivered.
    let server = TestServer::start().await;
    assert_ok(&server.http("POST", "/topic/create?topic=t", b"").await, "");
    assert_ok(&server.http("POST", "/channel/create?topic=t&channel=c", b"").await, "");
    assert_ok(&server.http("POST", "/pub?topic=t&defer=30000", b"deferred").await, "OK");
    assert_ok(&server.http("POST", "/mpub?topic=t", b"m1\nm2\nm3").await, "OK");
    let mut consumer = server.consumer("t", "c", 1).await;
    let m1 = consumer.message().await;
    assert_eq!(m1.body, "m1");
    let stats = channel_stats(&server, "t", "c");
    assert_eq!((stats.depth, stats.in_flight_count, stats.deferred_count), (2, 1, 1));
    assert_ok(&server.http("POST", "/channel/empty?topic=t&channel=c", b"").await, "");
    let stats = channel_stats(&server, "t", "c");
    assert_eq!((stats.depth, stats.in_flight_count, stats.deferred_count), (0, 0, 0));
    assert_eq!((stats.client_count, stats.consumers[0].in_flight_count), (1, 0));
    consumer.command(Command::Fin(&m1.id)).await;
    let id = String::from_utf8(m1.id.to_vec()).unwrap();
    consumer.expect_error(&format!("E_FIN_FAILED FIN {id} failed ID not in flight")).await;
    // Past the deferral and the 60 s message timeout: nothing returns.
    server.advance(Duration::from_secs(61));
    let stats = channel_stats(&server, "t", "c");
    assert_eq!((stats.depth, stats.in_flight_count, stats.deferred_count), (0, 0, 0));
    assert_eq!((stats.timeout_count, stats.requeue_count), (0, 0));
    assert_ok(&server.http("POST", "/pub?topic=t", b"fresh").await, "OK");
    assert_eq!(consumer.message().await.body, "fresh");
    server.stop().await;
}

#[tokio::test]
async fn channel_pause_stops_delivery_until_unpause() {
    // Goal: a paused channel delivers nothing while its siblings go on. Method: pause one of
    // two channels, publish; the other channel's consumer gets the message, a consumer made on
    // the engine for the paused channel gets nothing; after unpause its TCP consumer gets it.
    let server = TestServer::start().await;
    let mut paused = server.consumer("t", "paused", 1).await;
    let mut live = server.consumer("t", "live", 1).await;
    assert_ok(&server.http("POST", "/channel/pause?topic=t&channel=paused", b"").await, "");
    assert_ok(&server.http("POST", "/pub?topic=t", b"m1").await, "OK");
    assert_eq!(live.message().await.body, "m1");
    let stats = channel_stats(&server, "t", "paused");
    assert_eq!((stats.paused, stats.depth, stats.in_flight_count), (true, 1, 0));
    let probe = server.engine.get_topic("t").unwrap().get_channel("paused").unwrap();
    let probe = probe.subscribe(None).unwrap();
    probe.set_ready(1);
    assert!(probe.next_message().unwrap().is_none(), "a paused channel delivered");
    drop(probe);
    let doc = ok_json(&server.http("GET", "/stats?format=json&topic=t&channel=paused", b"").await);
    assert_eq!(doc["topics"][0]["channels"][0]["paused"], true);
    assert_eq!(doc["topics"][0]["paused"], false);
    assert_ok(&server.http("POST", "/channel/unpause?topic=t&channel=paused", b"").await, "");
    assert_eq!(paused.message().await.body, "m1");
    let stats = channel_stats(&server, "t", "paused");
    assert_eq!((stats.paused, stats.depth, stats.in_flight_count), (false, 0, 1));
    server.stop().await;
}

#[tokio::test]
async fn channel_endpoints_check_their_arguments_in_nsqd_order() {
    // Goal: the five /channel/* endpoints share nsqd's argument checks, in its order: query,
    // topic present, topic valid, channel present, channel valid, topic exists, channel exists.
    // Method: each bad request against each endpoint; nothing may be created.
    let server = TestServer::start().await;
    assert_ok(&server.http("POST", "/topic/create?topic=t", b"").await, "");
    for action in ["create", "delete", "empty", "pause", "unpause"] {
        let path = format!("/channel/{action}");
        let mut cases = vec![
            ("?topic=%zz&channel=c", 400, "INVALID_REQUEST"),
            ("", 400, "MISSING_ARG_TOPIC"),
            ("?channel=c", 400, "MISSING_ARG_TOPIC"),
            ("?topic=bad!", 400, "INVALID_ARG_TOPIC"),
            ("?topic=&channel=c", 400, "INVALID_ARG_TOPIC"),
            ("?topic=missing", 400, "MISSING_ARG_CHANNEL"),
            ("?topic=missing&channel=bad!", 400, "INVALID_ARG_CHANNEL"),
            ("?topic=t&channel=", 400, "INVALID_ARG_CHANNEL"),
            ("?topic=missing&channel=c", 404, "TOPIC_NOT_FOUND"),
        ];
        if action != "create" {
            cases.push(("?topic=t&channel=missing", 404, "CHANNEL_NOT_FOUND"));
        }
        for (query, status, message) in cases {
            let reply = server.http("POST", &format!("{path}{query}"), b"").await;
            assert_error(&reply, status, message);
        }
        let reply = server.http("GET", &format!("{path}?topic=t&channel=c"), b"").await;
        assert_error(&reply, 405, "METHOD_NOT_ALLOWED");
    }
    assert!(server.engine.get_topic("missing").is_none());
    assert!(server.engine.get_topic("t").unwrap().channels().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn config_get_shows_options_as_nsqd_encodes_them() {
    // Goal: GET /config/:opt answers an option by its config name, JSON-encoded as nsqd does:
    // numbers, durations in integer nanoseconds, the log level as nsqd's number (info = 2).
    // Method: start with some non-default options and read them back.
    let server = TestServer::start_with(&["--msg-timeout=45s", "--max-msg-size=2048"]).await;
    let cases = [
        ("mem_queue_size", json!(0)),
        ("msg_timeout", json!(45_000_000_000_u64)),
        ("max_msg_timeout", json!(900_000_000_000_u64)),
        ("max_msg_size", json!(2048)),
        ("max_body_size", json!(5_242_880)),
        ("max_rdy_count", json!(2500)),
        ("log_level", json!(2)),
        ("nsqlookupd_tcp_addresses", json!([])),
        ("e2e_processing_latency_window_time", json!(600_000_000_000_u64)),
        ("deflate", json!(true)),
        ("max_deflate_level", json!(6)),
    ];
    for (option, expected) in cases {
        let reply = server.http("GET", &format!("/config/{option}"), b"").await;
        assert_eq!(ok_json(&reply), expected, "{option}");
    }
    // Config names only: not flag names, not unknown ones.
    for option in ["nope", "max-msg-size", "MaxMsgSize"] {
        let reply = server.http("GET", &format!("/config/{option}"), b"").await;
        assert_error(&reply, 400, "INVALID_OPTION");
    }
    server.stop().await;
}

#[tokio::test]
async fn config_put_log_level_changes_it_and_rejects_bad_values() {
    // Goal: PUT /config/log_level sets the level from a plain-text body and answers the new
    // value; bad values and other options get nsqd's errors and change nothing. Method: PUT,
    // then GET it back, for each case.
    let server = TestServer::start_with(&["--max-msg-size=16"]).await;
    assert_eq!(ok_json(&server.http("PUT", "/config/log_level", b"warn").await), json!(3));
    assert_eq!(config(&server, "log_level").await, json!(3));
    assert_eq!(ok_json(&server.http("PUT", "/config/log_level", b"DEBUG").await), json!(1));
    assert_eq!(config(&server, "log_level").await, json!(1));
    for (body, status) in [(&b"loud"[..], 400), (b"", 413), (b"debugdebugdebugde", 413)] {
        let reply = server.http("PUT", "/config/log_level", body).await;
        assert_error(&reply, status, "INVALID_VALUE");
    }
    assert_eq!(config(&server, "log_level").await, json!(1));
    // Other options cannot be set; the body is checked first, as nsqd does.
    let reply = server.http("PUT", "/config/mem_queue_size", b"5").await;
    assert_error(&reply, 400, "INVALID_OPTION");
    assert_eq!(ok_json(&server.http("GET", "/config/mem_queue_size", b"").await), json!(0));
    assert_error(&server.http("PUT", "/config/nope", b"x").await, 400, "INVALID_OPTION");
    assert_error(&server.http("PUT", "/config/nope", b"").await, 413, "INVALID_VALUE");
    let reply = server.http("POST", "/config/log_level", b"error").await;
    assert_error(&reply, 405, "METHOD_NOT_ALLOWED");
    assert_eq!(config(&server, "log_level").await, json!(1));
    server.stop().await;
}

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_methods_405() {
    // Goal: nsqd's router errors: an unknown path is 404 NOT_FOUND (the pre-1.0 endpoints
    // included), a known path with another method is 405 METHOD_NOT_ALLOWED, both as V1 JSON.
    // Method: request each and check that the removed endpoints did nothing.
    let server = TestServer::start().await;
    for (method, target) in [
        ("GET", "/nope"),
        ("GET", "/"),
        ("POST", "/create_topic?topic=old"),
        ("POST", "/put?topic=old"),
        ("POST", "/mput?topic=old"),
        ("POST", "/topic/list"),
        ("GET", "/pub/extra"),
    ] {
        assert_error(&server.http(method, target, b"x").await, 404, "NOT_FOUND");
    }
    assert!(server.engine.get_topic("old").is_none());
    for (method, target) in [
        ("GET", "/pub?topic=t"),
        ("PUT", "/mpub?topic=t"),
        ("DELETE", "/topic/delete?topic=t"),
        ("PUT", "/stats"),
        ("POST", "/info"),
        ("DELETE", "/config/log_level"),
    ] {
        assert_error(&server.http(method, target, b"").await, 405, "METHOD_NOT_ALLOWED");
    }
    assert!(server.engine.get_topic("t").is_none());
    server.stop().await;
}

#[tokio::test]
async fn channel_depth_excludes_what_the_channel_cannot_deliver_yet() {
    // Goal: channel depth excludes messages held at a paused topic and messages dropped by
    // /topic/empty (NSQ.md §3.3, §8.5), and a DPUB message leaves depth for deferred_count once
    // the channel reaches it (README: until then it is counted in depth). Method: set up each
    // case with a consumer made on the engine (nothing races) and read the channel's stats.
    let server = TestServer::start().await;
    assert_ok(&server.http("POST", "/topic/create?topic=d", b"").await, "");
    assert_ok(&server.http("POST", "/channel/create?topic=d&channel=c", b"").await, "");
    assert_ok(&server.http("POST", "/pub?topic=d&defer=60000", b"later").await, "OK");
    let stats = channel_stats(&server, "d", "c");
    assert_eq!((stats.depth, stats.deferred_count), (1, 0), "not read yet");
    let channel = server.engine.get_topic("d").unwrap().get_channel("c").unwrap();
    let probe = channel.subscribe(None).unwrap();
    probe.set_ready(1);
    assert!(probe.next_message().unwrap().is_none(), "not due");
    let stats = channel_stats(&server, "d", "c");
    assert_eq!((stats.depth, stats.deferred_count), (0, 1), "read and deferred");
    drop(probe);
    // A paused topic keeps the message; a consumer asking for it does not move it to the
    // channel.
    assert_ok(&server.http("POST", "/topic/create?topic=p", b"").await, "");
    assert_ok(&server.http("POST", "/channel/create?topic=p&channel=c", b"").await, "");
    assert_ok(&server.http("POST", "/pub?topic=p", b"in channel").await, "OK");
    assert_ok(&server.http("POST", "/topic/pause?topic=p", b"").await, "");
    assert_ok(&server.http("POST", "/pub?topic=p", b"at topic").await, "OK");
    let channel = server.engine.get_topic("p").unwrap().get_channel("c").unwrap();
    let probe = channel.subscribe(None).unwrap();
    probe.set_ready(2);
    assert_eq!(probe.next_message().unwrap().unwrap().body, "in channel");
    assert!(probe.next_message().unwrap().is_none());
    let stats = topic_stats(&server, "p");
    assert_eq!((stats.depth, stats.channels[0].depth), (1, 0), "held at a paused topic");
    drop(probe);
    // Emptying the paused topic leaves the channel with its own message only.
    assert_ok(&server.http("POST", "/topic/empty?topic=p", b"").await, "");
    let stats = topic_stats(&server, "p");
    assert_eq!((stats.depth, stats.channels[0].depth), (0, 1), "after /topic/empty");
    server.stop().await;
}
