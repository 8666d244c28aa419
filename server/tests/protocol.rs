//! Raw-bytes tests of TCP protocol V2 against an nsqd on loopback: every command, and every
//! error of NSQ.md §2.3–2.4 with nsqd's exact code, text and fatality.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::cast_possible_truncation)]

mod common;

use bytes::BytesMut;
use common::TestServer;
use protocol::command::Command;
use protocol::frame::Frame;
use tokio::time::{Duration, Instant};

#[tokio::test]
async fn a_published_message_reaches_a_ready_consumer_and_fin_completes_it() {
    // Goal: the basic round trip. Method: PUB, SUB, RDY, read the message frame, FIN it, and
    // check the channel's counters through the engine.
    let server = TestServer::start().await;
    server.publish("orders", b"hello").await;
    let mut consumer = server.consumer("orders", "billing", 1).await;
    let message = consumer.message().await;
    assert_eq!(message.body, "hello");
    assert_eq!(message.attempts, 1);
    assert_eq!(&message.id, b"0000000000000000");
    consumer.command(Command::Fin(&message.id)).await;
    consumer.sync().await;
    let stats = server.engine.get_topic("orders").unwrap().get_channel("billing").unwrap().stats();
    assert_eq!((stats.in_flight_count, stats.depth, stats.message_count), (0, 0, 1));
    server.stop().await;
}

#[tokio::test]
async fn a_bad_magic_gets_e_bad_protocol_and_a_close() {
    let server = TestServer::start().await;
    let mut client = server.connect_raw().await;
    client.send(b"  V1").await;
    match client.next_frame().await {
        Some(Frame::Error(body)) => assert_eq!(body, "E_BAD_PROTOCOL"),
        other => panic!("{other:?}"),
    }
    assert!(client.next_frame().await.is_none());
    server.stop().await;
}

/// A client that has sent IDENTIFY with `json` and got its reply.
async fn identified(server: &TestServer, json: &str) -> common::Client {
    let mut client = server.connect().await;
    client.identify(json).await;
    client
}

#[tokio::test]
async fn identify_answers_ok_without_feature_negotiation_and_json_with_it() {
    // Goal: IDENTIFY's two reply forms and the negotiated values. Method: identify plainly,
    // then with feature_negotiation and custom values, and read the JSON keys back.
    let server = TestServer::start().await;
    let mut plain = server.connect().await;
    assert_eq!(plain.identify(r#"{"client_id":"a","feature_negotiation":false}"#).await, "OK");

    let mut client = server.connect().await;
    let body = client
        .identify(
            r#"{"feature_negotiation":true,"msg_timeout":5000,"output_buffer_size":128,
                "output_buffer_timeout":100,"sample_rate":10,"heartbeat_interval":2000,
                "tls_v1":true,"unknown_key":[1,2]}"#,
        )
        .await;
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    // Exactly nsqd's keys: those of IdentifyResponse, which the protocol crate pins to NSQ's.
    let keys = |value: &serde_json::Value| -> Vec<String> {
        let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
        keys.sort_unstable();
        keys
    };
    let nsqds = serde_json::to_value(protocol::identify::IdentifyResponse::default()).unwrap();
    assert_eq!(keys(&json), keys(&nsqds));
    assert_eq!(json["max_rdy_count"], 2500);
    assert_eq!(json["version"], "1.3.0");
    assert_eq!(json["max_msg_timeout"], 900_000);
    assert_eq!(json["msg_timeout"], 5000);
    assert_eq!(json["output_buffer_size"], 128);
    assert_eq!(json["output_buffer_timeout"], 100);
    assert_eq!(json["sample_rate"], 10);
    assert_eq!(json["deflate_level"], 6);
    // TLS is not configured on this server: no upgrade follows, and the connection works on.
    assert_eq!((json["tls_v1"].as_bool(), json["snappy"].as_bool()), (Some(false), Some(false)));
    assert_eq!(json["auth_required"], false);
    client.sync().await;

    let mut defaults = server.connect().await;
    let body = defaults.identify(r#"{"feature_negotiation":true}"#).await;
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["msg_timeout"], 60_000);
    assert_eq!(json["output_buffer_size"], 16_384);
    assert_eq!(json["output_buffer_timeout"], 250);
    server.stop().await;
}

#[tokio::test]
async fn identify_errors_are_fatal_with_nsqds_texts() {
    // Goal: every IDENTIFY failure of NSQ.md §2.3/2.5. Method: one connection per bad input,
    // each expecting its error frame and the close.
    let server = TestServer::start_with(&["--max-body-size=100"]).await;
    let identify = |json: &str| Command::Identify(json.as_bytes()).to_bytes().to_vec();
    let cases: [(Vec<u8>, &str); 9] = [
        (b"IDENTIFY\n\x00\x00\x00\x00".to_vec(), "E_BAD_BODY IDENTIFY invalid body size 0"),
        (b"IDENTIFY\n\xff\xff\xff\xff".to_vec(), "E_BAD_BODY IDENTIFY invalid body size -1"),
        (b"IDENTIFY\n\x00\x00\x00\x65".to_vec(), "E_BAD_BODY IDENTIFY body too big 101 > 100"),
        (identify("{x}"), "E_BAD_BODY IDENTIFY failed to decode JSON body"),
        (
            identify(r#"{"heartbeat_interval":999}"#),
            "E_BAD_BODY IDENTIFY heartbeat interval (999) is invalid",
        ),
        (
            identify(r#"{"output_buffer_size":63}"#),
            "E_BAD_BODY IDENTIFY output buffer size (63) is invalid",
        ),
        (
            identify(r#"{"output_buffer_timeout":10}"#),
            "E_BAD_BODY IDENTIFY output buffer timeout (10) is invalid",
        ),
        (identify(r#"{"sample_rate":100}"#), "E_BAD_BODY IDENTIFY sample rate (100) is invalid"),
        (identify(r#"{"msg_timeout":999}"#), "E_BAD_BODY IDENTIFY msg timeout (999) is invalid"),
    ];
    for (bytes, error) in cases {
        let mut client = server.connect().await;
        client.send(&bytes).await;
        client.expect_fatal(error).await;
    }
    let mut subscribed = server.consumer("t", "c", 0).await;
    subscribed.command(Command::Identify(b"{}")).await;
    subscribed.expect_fatal("E_INVALID cannot IDENTIFY in current state").await;
    server.stop().await;
}

#[tokio::test]
async fn auth_without_an_auth_server_is_refused() {
    // Goal: AUTH's checks before the auth server is consulted. Method: wrong parameter count,
    // then a well-formed AUTH on a server with no auth configured.
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    client.send(b"AUTH secret\n").await;
    client.expect_fatal("E_INVALID AUTH invalid number of parameters").await;
    let mut client = server.connect().await;
    client.command(Command::Auth(b"secret")).await;
    client.expect_fatal("E_AUTH_DISABLED AUTH disabled").await;
    let mut client = server.connect().await;
    client.send(b"AUTH\n\x00\x00\x00\x00").await;
    client.expect_fatal("E_BAD_BODY AUTH invalid body size 0").await;
    let mut subscribed = server.consumer("t", "c", 0).await;
    subscribed.command(Command::Auth(b"secret")).await;
    subscribed.expect_fatal("E_INVALID cannot AUTH in current state").await;
    server.stop().await;
}

#[tokio::test]
async fn sub_errors_are_fatal_with_nsqds_texts() {
    // Goal: SUB's checks in nsqd's order. Method: one connection per failure.
    let server = TestServer::start().await;
    let cases: [(&[u8], &str); 5] = [
        (b"SUB t\n", "E_INVALID SUB insufficient number of parameters"),
        (b"SUB bad/topic c\n", "E_BAD_TOPIC SUB topic name \"bad/topic\" is not valid"),
        (b"SUB t bad*channel\n", "E_BAD_CHANNEL SUB channel name \"bad*channel\" is not valid"),
        (b"SUB  c\n", "E_BAD_TOPIC SUB topic name \"\" is not valid"),
        (
            format!("SUB {} c\n", "a".repeat(65)).as_bytes().to_vec().leak(),
            &*format!("E_BAD_TOPIC SUB topic name \"{}\" is not valid", "a".repeat(65)).leak(),
        ),
    ];
    for (bytes, error) in cases {
        let mut client = server.connect().await;
        client.send(bytes).await;
        client.expect_fatal(error).await;
    }
    let mut no_heartbeats = identified(&server, r#"{"heartbeat_interval":-1}"#).await;
    no_heartbeats.command(Command::Sub { topic: "t", channel: "c" }).await;
    no_heartbeats.expect_fatal("E_INVALID cannot SUB with heartbeats disabled").await;

    let mut twice = server.consumer("t", "c", 0).await;
    twice.command(Command::Sub { topic: "t", channel: "c" }).await;
    twice.expect_fatal("E_INVALID cannot SUB in current state").await;
    server.stop().await;
}

#[tokio::test]
async fn max_channel_consumers_refuses_the_next_subscriber() {
    // Goal: --max-channel-consumers. Method: limit 1, subscribe twice to one channel, and once
    // to another channel, which is not limited by the first.
    let server = TestServer::start_with(&["--max-channel-consumers=1"]).await;
    let _first = server.consumer("t", "c", 0).await;
    let mut second = server.connect().await;
    second.command(Command::Sub { topic: "t", channel: "c" }).await;
    second.expect_fatal("E_SUB_FAILED SUB failed consumers for t:c exceeds limit of 1").await;
    let _other = server.consumer("t", "d", 0).await;
    server.stop().await;
}

#[tokio::test]
async fn pub_errors_are_fatal_with_nsqds_texts() {
    // Goal: PUB's checks, and that an oversized body is refused from its size field alone.
    // Method: one connection per failure; the too-big case sends no body at all.
    let server = TestServer::start_with(&["--max-msg-size=10"]).await;
    let cases: [(&[u8], &str); 6] = [
        (b"PUB\n", "E_INVALID PUB insufficient number of parameters"),
        (b"PUB bad/topic\n", "E_BAD_TOPIC PUB topic name \"bad/topic\" is not valid"),
        (b"PUB t\n\x00\x00\x00\x00", "E_BAD_MESSAGE PUB invalid message body size 0"),
        (b"PUB t\n\xff\xff\xff\xfe", "E_BAD_MESSAGE PUB invalid message body size -2"),
        (b"PUB t\n\x00\x00\x00\x0b", "E_BAD_MESSAGE PUB message too big 11 > 10"),
        (b"PUB t\n\x7f\xff\xff\xff", "E_BAD_MESSAGE PUB message too big 2147483647 > 10"),
    ];
    for (bytes, error) in cases {
        let mut client = server.connect().await;
        client.send(bytes).await;
        client.expect_fatal(error).await;
    }
    // A body cut short by the client's close fails to read.
    let mut client = server.connect().await;
    client.send(b"PUB t\n\x00\x00\x00\x05abc").await;
    client.shutdown_write().await;
    client.expect_fatal("E_BAD_MESSAGE PUB failed to read message body").await;
    assert!(server.engine.get_topic("t").is_none(), "nothing was published");
    server.stop().await;
}

#[tokio::test]
async fn mpub_publishes_all_or_nothing() {
    // Goal: MPUB's happy path and its errors. Method: a good MPUB, then bad counts, element
    // sizes and body sizes, checking the topic's message count moved only for the good one.
    let server = TestServer::start_with(&["--max-msg-size=10", "--max-body-size=100"]).await;
    let mut client = server.connect().await;
    let bodies: [&[u8]; 3] = [b"a", b"bb", b"ccc"];
    client.command(Command::Mpub { topic: "m", bodies: &bodies }).await;
    client.expect_ok().await;
    let count = || server.engine.get_topic("m").unwrap().stats().message_count;
    assert_eq!(count(), 3);

    let cases: [(&[u8], &str); 8] = [
        (b"MPUB\n", "E_INVALID MPUB insufficient number of parameters"),
        (b"MPUB bad/t\n", "E_BAD_TOPIC E_BAD_TOPIC MPUB topic name \"bad/t\" is not valid"),
        (b"MPUB m\n\x00\x00\x00\x00", "E_BAD_BODY MPUB invalid body size 0"),
        (b"MPUB m\n\x00\x00\x00\x65", "E_BAD_BODY MPUB body too big 101 > 100"),
        (b"MPUB m\n\x00\x00\x00\x04\x00\x00\x00\x00", "E_BAD_BODY MPUB invalid message count 0"),
        (
            b"MPUB m\n\x00\x00\x00\x0a\x00\x00\x00\x01\x00\x00\x00\x00xx",
            "E_BAD_MESSAGE MPUB invalid message(0) body size 0",
        ),
        (
            b"MPUB m\n\x00\x00\x00\x13\x00\x00\x00\x01\x00\x00\x00\x0b01234567890",
            "E_BAD_MESSAGE MPUB message too big 11 > 10",
        ),
        (
            b"MPUB m\n\x00\x00\x00\x0e\x00\x00\x00\x02\x00\x00\x00\x01a\x00\x00\x00\x00\x00",
            "E_BAD_MESSAGE MPUB invalid message(1) body size 0",
        ),
    ];
    for (bytes, error) in cases {
        let mut client = server.connect().await;
        client.send(bytes).await;
        client.expect_fatal(error).await;
    }
    assert_eq!(count(), 3, "no failed MPUB published anything");
    server.stop().await;
}

#[tokio::test]
async fn dpub_defers_delivery_until_its_time() {
    // Goal: DPUB's checks and its delay. Method: bad timeouts fail; a good DPUB is invisible
    // until the engine clock passes the delay, then it is delivered.
    let server = TestServer::start_with(&["--max-req-timeout=10s"]).await;
    let cases: [(&[u8], &str); 5] = [
        (b"DPUB t\n", "E_INVALID DPUB insufficient number of parameters"),
        (b"DPUB bad/t 5\n", "E_BAD_TOPIC DPUB topic name \"bad/t\" is not valid"),
        (b"DPUB t -5\n", "E_INVALID DPUB could not parse timeout -5"),
        (b"DPUB t 10001\n", "E_INVALID DPUB timeout 10001 out of range 0-10000"),
        (b"DPUB t 5\n\x00\x00\x00\x00", "E_BAD_MESSAGE DPUB invalid message body size 0"),
    ];
    for (bytes, error) in cases {
        let mut client = server.connect().await;
        client.send(bytes).await;
        client.expect_fatal(error).await;
    }
    let mut consumer = server.consumer("t", "c", 1).await;
    consumer.sync().await;
    let mut producer = server.connect().await;
    producer.command(Command::Dpub { topic: "t", defer_ms: 10_000, body: b"later" }).await;
    producer.expect_ok().await;
    producer.command(Command::Pub { topic: "t", body: b"now" }).await;
    producer.expect_ok().await;
    let first = consumer.message().await;
    assert_eq!(first.body, "now", "the deferred message waits");
    consumer.command(Command::Fin(&first.id)).await;
    let channel = server.engine.get_topic("t").unwrap().get_channel("c").unwrap();
    assert_eq!(channel.stats().deferred_count, 1);
    server.advance(Duration::from_secs(10));
    assert_eq!(consumer.message().await.body, "later");
    server.stop().await;
}

#[tokio::test]
async fn rdy_is_a_window_of_messages_in_flight() {
    // Goal: RDY N keeps at most N in flight, refilled by FIN, and RDY 0 stops delivery.
    // Method: publish 5, RDY 2, count deliveries as FINs free the window.
    let server = TestServer::start().await;
    for i in 0..5u8 {
        server.publish("w", &[b'0' + i]).await;
    }
    let mut consumer = server.consumer("w", "c", 2).await;
    let a = consumer.message().await;
    let b = consumer.message().await;
    assert_eq!((&a.body[..], &b.body[..]), (&b"0"[..], &b"1"[..]));
    consumer.sync().await;
    let channel = server.engine.get_topic("w").unwrap().get_channel("c").unwrap();
    assert_eq!(channel.stats().in_flight_count, 2, "no third message beyond RDY 2");
    // Sending RDY 2 again is not a new credit.
    consumer.command(Command::Rdy(2)).await;
    consumer.sync().await;
    assert_eq!(channel.stats().in_flight_count, 2);
    consumer.command(Command::Fin(&a.id)).await;
    assert_eq!(consumer.message().await.body, "2");
    consumer.command(Command::Rdy(0)).await;
    consumer.command(Command::Fin(&b.id)).await;
    consumer.sync().await;
    assert_eq!(channel.stats().in_flight_count, 1, "RDY 0 delivers nothing more");
    assert_eq!(channel.stats().depth, 2);
    server.stop().await;
}

#[tokio::test]
async fn rdy_errors_are_fatal_with_nsqds_texts() {
    // Goal: RDY's state and range checks. Method: RDY before SUB, unparsable, above the max.
    let server = TestServer::start_with(&["--max-rdy-count=100"]).await;
    let mut client = server.connect().await;
    client.command(Command::Rdy(1)).await;
    client.expect_fatal("E_INVALID cannot RDY in current state").await;
    let mut client = server.consumer("t", "c", 0).await;
    client.send(b"RDY x\n").await;
    client.expect_fatal("E_INVALID RDY could not parse count x").await;
    let mut client = server.consumer("t", "c", 0).await;
    client.send(b"RDY -1\n").await;
    client.expect_fatal("E_INVALID RDY could not parse count -1").await;
    let mut client = server.consumer("t", "c", 101).await;
    client.expect_fatal("E_INVALID RDY count 101 out of range 0-100").await;
    // RDY with no count means 1.
    server.publish("t", b"x").await;
    server.publish("t", b"y").await;
    let mut client = server.consumer("t", "c", 0).await;
    client.send(b"RDY\n").await;
    client.message().await;
    client.sync().await;
    let channel = server.engine.get_topic("t").unwrap().get_channel("c").unwrap();
    assert_eq!(channel.stats().in_flight_count, 1);
    server.stop().await;
}

#[tokio::test]
async fn fin_req_touch_failures_keep_the_connection() {
    // Goal: the only non-fatal errors. Method: FIN, REQ and TOUCH an unknown ID and another
    // consumer's message; the connection keeps working after each.
    let server = TestServer::start().await;
    server.publish("t", b"x").await;
    let mut owner = server.consumer("t", "c", 1).await;
    let message = owner.message().await;
    let mut other = server.consumer("t", "c", 1).await;
    let unknown = b"00000000000000ff";
    let id = String::from_utf8_lossy(&message.id).into_owned();
    other.command(Command::Fin(unknown)).await;
    other.expect_error("E_FIN_FAILED FIN 00000000000000ff failed ID not in flight").await;
    other.command(Command::Fin(&message.id)).await;
    other.expect_error(&format!("E_FIN_FAILED FIN {id} failed client does not own message")).await;
    other.command(Command::Req { id: &message.id, timeout_ms: 0 }).await;
    other.expect_error(&format!("E_REQ_FAILED REQ {id} failed client does not own message")).await;
    other.command(Command::Touch(unknown)).await;
    other.expect_error("E_TOUCH_FAILED TOUCH 00000000000000ff failed ID not in flight").await;
    other.sync().await;
    owner.command(Command::Fin(&message.id)).await;
    owner.command(Command::Fin(&message.id)).await;
    owner.expect_error(&format!("E_FIN_FAILED FIN {id} failed ID not in flight")).await;
    owner.sync().await;
    server.stop().await;
}

#[tokio::test]
async fn fins_arriving_together_are_applied_in_order_and_each_failure_is_reported() {
    // Goal: FINs that arrive in one read are applied together, but exactly as one by one: each
    // failure gets its error in order, and all are applied before the next command runs.
    // Method: three messages in flight; one write of FIN a, FIN of an unknown ID, FIN c, FIN a
    // again, then a PUB whose OK must come after both errors.
    let server = TestServer::start().await;
    for body in [b"a", b"b", b"c"] {
        server.publish("t", body).await;
    }
    let mut consumer = server.consumer("t", "c", 3).await;
    let (a, b, c) = (consumer.message().await, consumer.message().await, consumer.message().await);
    let unknown = b"00000000000000ff";
    let mut batch = BytesMut::new();
    for id in [&a.id, unknown, &c.id, &a.id] {
        Command::Fin(id).encode(&mut batch);
    }
    Command::Pub { topic: "sync", body: b"." }.encode(&mut batch);
    consumer.send(&batch).await;
    consumer.expect_error("E_FIN_FAILED FIN 00000000000000ff failed ID not in flight").await;
    let a_id = String::from_utf8_lossy(&a.id).into_owned();
    consumer.expect_error(&format!("E_FIN_FAILED FIN {a_id} failed ID not in flight")).await;
    consumer.expect_ok().await;
    let channel = server.engine.get_topic("t").unwrap().get_channel("c").unwrap();
    let stats = channel.stats();
    assert_eq!((stats.in_flight_count, stats.depth), (1, 0), "only b is left, in flight");
    consumer.command(Command::Fin(&b.id)).await;
    consumer.sync().await;
    assert_eq!(channel.stats().in_flight_count, 0);
    server.stop().await;
}

#[tokio::test]
async fn a_thousand_fins_in_one_write_all_apply() {
    // Goal: more FINs in one read than are applied at once (256) are all applied, and the
    // window they free is refilled. Method: 1,000 in flight, all FINs in one write, then the
    // next 1,000 arrive and are finished the same way.
    let server = TestServer::start().await;
    let bodies: Vec<Vec<u8>> = (0..2_000u32).map(|i| i.to_string().into_bytes()).collect();
    let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
    let mut publisher = server.connect().await;
    publisher.command(Command::Mpub { topic: "t", bodies: &refs }).await;
    publisher.expect_ok().await;
    let mut consumer = server.consumer("t", "c", 1_000).await;
    let channel = server.engine.get_topic("t").unwrap().get_channel("c").unwrap();
    for round in 0..2 {
        let mut batch = BytesMut::new();
        for i in 0..1_000 {
            let message = consumer.message().await;
            assert_eq!(message.body, bodies[round * 1_000 + i]);
            Command::Fin(&message.id).encode(&mut batch);
        }
        consumer.send(&batch).await;
    }
    consumer.sync().await;
    let stats = channel.stats();
    assert_eq!((stats.in_flight_count, stats.depth), (0, 0));
    server.stop().await;
}

#[tokio::test]
async fn fin_req_touch_cls_argument_and_state_errors_are_fatal() {
    // Goal: the fatal checks of the message commands. Method: one connection per failure.
    let server = TestServer::start().await;
    for (bytes, error) in [
        (&b"FIN 0000000000000000\n"[..], "E_INVALID cannot FIN in current state"),
        (b"REQ 0000000000000000 0\n", "E_INVALID cannot REQ in current state"),
        (b"TOUCH 0000000000000000\n", "E_INVALID cannot TOUCH in current state"),
        (b"CLS\n", "E_INVALID cannot CLS in current state"),
        (b"HELLO\n", "E_INVALID invalid command HELLO"),
        (b"\n", "E_INVALID invalid command "),
        (b"nop\n", "E_INVALID invalid command nop"),
    ] {
        let mut client = server.connect().await;
        client.send(bytes).await;
        client.expect_fatal(error).await;
    }
    for (bytes, error) in [
        (&b"FIN\n"[..], "E_INVALID FIN insufficient number of params"),
        (b"FIN 123\n", "E_INVALID invalid message ID"),
        (b"REQ 0000000000000000\n", "E_INVALID REQ insufficient number of params"),
        (b"REQ 0000000000000000 -1\n", "E_INVALID REQ could not parse timeout -1"),
        (b"REQ 12345678901234567 0\n", "E_INVALID invalid message ID"),
        (b"TOUCH\n", "E_INVALID TOUCH insufficient number of params"),
        (b"TOUCH x\n", "E_INVALID invalid message ID"),
    ] {
        let mut client = server.consumer("t", "c", 0).await;
        client.send(bytes).await;
        client.expect_fatal(error).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn req_redelivers_now_or_after_its_delay() {
    // Goal: REQ 0 redelivers at once with attempts 2; REQ with a delay waits for the clock,
    // and a delay above --max-req-timeout is clamped, not refused.
    let server = TestServer::start_with(&["--max-req-timeout=60s"]).await;
    server.publish("t", b"x").await;
    let mut consumer = server.consumer("t", "c", 1).await;
    let first = consumer.message().await;
    consumer.command(Command::Req { id: &first.id, timeout_ms: 0 }).await;
    let second = consumer.message().await;
    assert_eq!((second.id, second.attempts), (first.id, 2));
    consumer.command(Command::Req { id: &second.id, timeout_ms: 3_600_000 }).await;
    consumer.sync().await;
    let channel = server.engine.get_topic("t").unwrap().get_channel("c").unwrap();
    assert_eq!(channel.stats().deferred_count, 1);
    server.advance(Duration::from_secs(59));
    consumer.sync().await;
    assert_eq!(channel.stats().deferred_count, 1, "not due before the clamped minute");
    server.advance(Duration::from_secs(1));
    let third = consumer.message().await;
    assert_eq!((third.id, third.attempts), (first.id, 3));
    assert_eq!(channel.stats().requeue_count, 2);
    server.stop().await;
}

#[tokio::test]
async fn an_unfinished_message_times_out_and_touch_extends_it() {
    // Goal: msg_timeout from IDENTIFY, TOUCH resetting it, and redelivery after a timeout.
    // Method: msg_timeout 10 s; TOUCH at 8 s; still in flight at 16 s; redelivered at 18 s.
    let server = TestServer::start().await;
    server.publish("t", b"x").await;
    let mut consumer = identified(&server, r#"{"msg_timeout":10000}"#).await;
    consumer.command(Command::Sub { topic: "t", channel: "c" }).await;
    consumer.expect_ok().await;
    consumer.command(Command::Rdy(1)).await;
    let first = consumer.message().await;
    server.advance(Duration::from_secs(8));
    consumer.command(Command::Touch(&first.id)).await;
    consumer.sync().await;
    server.advance(Duration::from_secs(8));
    consumer.sync().await;
    let channel = server.engine.get_topic("t").unwrap().get_channel("c").unwrap();
    assert_eq!((channel.stats().in_flight_count, channel.stats().timeout_count), (1, 0));
    server.advance(Duration::from_secs(2));
    let again = consumer.message().await;
    assert_eq!((again.id, again.attempts), (first.id, 2));
    assert_eq!(channel.stats().timeout_count, 1);
    server.stop().await;
}

#[tokio::test]
async fn cls_answers_close_wait_and_stops_delivery_but_allows_fin() {
    // Goal: CLS. Method: a consumer with one message in flight sends CLS, gets CLOSE_WAIT, is
    // sent nothing more (RDY is ignored), and may still FIN what it holds.
    let server = TestServer::start().await;
    server.publish("t", b"a").await;
    server.publish("t", b"b").await;
    let mut consumer = server.consumer("t", "c", 1).await;
    let message = consumer.message().await;
    consumer.command(Command::Cls).await;
    assert_eq!(consumer.response().await, "CLOSE_WAIT");
    consumer.command(Command::Rdy(5)).await;
    consumer.command(Command::Fin(&message.id)).await;
    consumer.sync().await;
    let channel = server.engine.get_topic("t").unwrap().get_channel("c").unwrap();
    let stats = channel.stats();
    assert_eq!((stats.in_flight_count, stats.depth), (0, 1));
    consumer.command(Command::Cls).await;
    consumer.expect_fatal("E_INVALID cannot CLS in current state").await;
    server.stop().await;
}

#[tokio::test]
async fn a_disconnect_requeues_in_flight_messages_at_once() {
    // Goal: messages in flight to a consumer that goes away go to another at once (NSQ waits
    // for their timeout). Method: consumer A takes the message and drops; B receives it
    // without the clock moving.
    let server = TestServer::start().await;
    server.publish("t", b"x").await;
    let mut a = server.consumer("t", "c", 1).await;
    let first = a.message().await;
    let mut b = server.consumer("t", "c", 1).await;
    b.sync().await;
    drop(a);
    let again = b.message().await;
    assert_eq!((again.id, again.attempts), (first.id, 2));
    server.stop().await;
}

#[tokio::test]
async fn each_message_goes_to_one_consumer_of_a_channel_and_to_every_channel() {
    // Goal: channel fan-out and consumer sharing. Method: two channels, two consumers on the
    // first; 20 messages; the first channel's consumers split them, the second gets all.
    let server = TestServer::start().await;
    let mut a1 = server.consumer("t", "one", 20).await;
    let mut a2 = server.consumer("t", "one", 20).await;
    let mut b = server.consumer("t", "two", 20).await;
    for client in [&mut a1, &mut a2, &mut b] {
        client.sync().await;
    }
    let mut producer = server.connect().await;
    let bodies: Vec<Vec<u8>> = (0..20).map(|i| format!("m{i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
    producer.command(Command::Mpub { topic: "t", bodies: &refs }).await;
    producer.expect_ok().await;
    let mut seen_two = Vec::new();
    for _ in 0..20 {
        seen_two.push(b.message().await.body);
    }
    assert_eq!(seen_two, bodies, "one consumer alone sees the log's order");
    let channel = server.engine.get_topic("t").unwrap().get_channel("one").unwrap();
    let mut seen_one = std::collections::BTreeSet::new();
    let (mut from_a1, mut from_a2) = (0, 0);
    while seen_one.len() < 20 {
        tokio::select! {
            m = a1.message() => { from_a1 += 1; assert!(seen_one.insert(m.body)); }
            m = a2.message() => { from_a2 += 1; assert!(seen_one.insert(m.body)); }
        }
    }
    assert_eq!(from_a1 + from_a2, 20);
    assert_eq!(channel.stats().in_flight_count, 20, "each delivered once");
    server.stop().await;
}

#[tokio::test]
async fn deleting_a_channel_closes_its_consumers() {
    // Goal: nsqd closes the connections of a deleted channel. Method: delete through the
    // engine (as /channel/delete does) and expect the close.
    let server = TestServer::start().await;
    let mut consumer = server.consumer("t", "c", 1).await;
    consumer.sync().await;
    server.engine.get_topic("t").unwrap().delete_channel("c").unwrap();
    consumer.expect_closed().await;
    server.stop().await;
}

#[tokio::test]
async fn a_line_over_16_kib_closes_the_connection_without_an_error_frame() {
    // Goal: NSQ's line limit. Method: 16 KiB of a command name without a newline.
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    client.send(&vec![b'A'; protocol::MAX_LINE_BYTES + 1]).await;
    assert!(client.next_frame().await.is_none());
    server.stop().await;
}

#[tokio::test]
async fn a_misbehaving_connection_does_not_disturb_another() {
    // Goal: isolation. Method: while a consumer waits, another connection sends garbage and an
    // absurd body size; the consumer still receives what is published afterwards.
    let server = TestServer::start().await;
    let mut consumer = server.consumer("t", "c", 1).await;
    consumer.sync().await;
    let mut bad = server.connect().await;
    bad.send(b"PUB t\n\xff\xff\xff\xff\x00\x01\x02").await;
    bad.expect_fatal("E_BAD_MESSAGE PUB invalid message body size -1").await;
    let mut bad = server.connect().await;
    bad.send(b"\x00\x01\x02\x03\xff\n").await;
    bad.expect_fatal("E_INVALID invalid command \u{0}\u{1}\u{2}\u{3}\u{fffd}").await;
    server.publish("t", b"fine").await;
    assert_eq!(consumer.message().await.body, "fine");
    server.stop().await;
}

#[tokio::test]
async fn nop_and_crlf_lines_are_accepted() {
    // Goal: NOP has no reply and a `\r\n` line ending works. Method: NOP then PUB with CRLF.
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    client.send(b"NOP\r\nPUB t\r\n\x00\x00\x00\x01x").await;
    client.expect_ok().await;
    server.stop().await;
}

#[tokio::test]
async fn sample_rate_delivers_part_and_drops_the_rest() {
    // Goal: IDENTIFY sample_rate. Method: rate 50 over 200 messages; some but not all arrive,
    // and the rest are dropped for this channel (not left waiting).
    let server = TestServer::start().await;
    let topic = server.engine.topic("t").unwrap();
    let bodies: Vec<Vec<u8>> = (0..200).map(|i| format!("{i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
    topic.publish(&refs, Duration::ZERO).unwrap();
    let mut consumer = identified(&server, r#"{"sample_rate":50}"#).await;
    consumer.command(Command::Sub { topic: "t", channel: "c" }).await;
    consumer.expect_ok().await;
    consumer.command(Command::Rdy(200)).await;
    let channel = topic.get_channel("c").unwrap();
    let mut received = 0;
    loop {
        let stats = channel.stats();
        if stats.depth == 0 && received == stats.in_flight_count {
            break;
        }
        consumer.message().await;
        received += 1;
    }
    assert!(received > 0 && received < 200, "received {received} of 200");
    server.stop().await;
}

/// Reads the next frame and checks it is a heartbeat; returns when it came.
async fn heartbeat(client: &mut common::Client) -> Instant {
    match client.next_frame().await {
        Some(Frame::Response(body)) => assert_eq!(body, protocol::HEARTBEAT),
        other => panic!("expected a heartbeat, got {other:?}"),
    }
    Instant::now()
}

#[tokio::test(start_paused = true)]
async fn heartbeats_tick_on_a_fixed_period_and_silence_closes_the_connection() {
    // Goal: heartbeats every interval whatever the traffic, and a close after two intervals
    // without a command. Method: paused time; heartbeat_interval 1 s; answer one heartbeat
    // with NOP, then stay silent.
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let start = Instant::now();
    assert_eq!(client.identify(r#"{"heartbeat_interval":1000}"#).await, "OK");
    let first = heartbeat(&mut client).await;
    assert_eq!(first - start, Duration::from_secs(1));
    client.command(Command::Nop).await;
    let second = heartbeat(&mut client).await;
    assert_eq!(second - start, Duration::from_secs(2), "traffic does not move the ticker");
    client.expect_closed().await;
    let closed = Instant::now() - start;
    assert!(
        closed >= Duration::from_secs(3) && closed < Duration::from_millis(3100),
        "closed {closed:?} after start; the last command was at 1 s"
    );
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_identifies_gets_the_default_heartbeat_of_30_seconds() {
    // Goal: nsqd's default heartbeat interval (half its 60 s client timeout) and read deadline.
    // Method: paused time; a bare connection; heartbeat at 30 s, close at 60 s.
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let start = Instant::now();
    assert_eq!(heartbeat(&mut client).await - start, Duration::from_secs(30));
    client.expect_closed().await;
    let closed = Instant::now() - start;
    assert!(closed >= Duration::from_secs(60) && closed < Duration::from_secs(61), "{closed:?}");
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn heartbeats_can_be_disabled() {
    // Goal: heartbeat_interval -1 turns off heartbeats and the read deadline. Method: paused
    // time; nothing arrives for 10 minutes and the connection still works.
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    assert_eq!(client.identify(r#"{"heartbeat_interval":-1}"#).await, "OK");
    let quiet = tokio::time::timeout(Duration::from_secs(600), client.next_frame()).await;
    assert!(quiet.is_err(), "no frame, no close: {quiet:?}");
    client.command(Command::Pub { topic: "t", body: b"x" }).await;
    client.expect_ok().await;
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn messages_wait_in_the_output_buffer_until_its_timer_unless_rdy_is_filled() {
    // Goal: output buffering. Method: paused time; a consumer with RDY 10 and a 1 s buffer
    // timeout gets a lone message when the timer fires; one with RDY 1 gets it at once (a
    // client that is no longer ready is flushed).
    let server = TestServer::start().await;
    let topic = server.engine.topic("t").unwrap();
    let mut buffered = identified(&server, r#"{"output_buffer_timeout":1000}"#).await;
    let start = Instant::now();
    buffered.command(Command::Sub { topic: "t", channel: "buffered" }).await;
    buffered.expect_ok().await;
    buffered.command(Command::Rdy(10)).await;
    let mut eager = identified(&server, r#"{"output_buffer_timeout":1000}"#).await;
    eager.command(Command::Sub { topic: "t", channel: "eager" }).await;
    eager.expect_ok().await;
    eager.command(Command::Rdy(1)).await;
    eager.sync().await;
    buffered.sync().await;
    let published = Instant::now();
    topic.publish(&[b"x"], Duration::ZERO).unwrap();
    eager.message().await;
    assert_eq!(Instant::now(), published, "flushed at once");
    buffered.message().await;
    assert_eq!(Instant::now() - start, Duration::from_secs(1), "flushed by the timer");
    server.stop().await;
}

#[tokio::test]
async fn publishing_to_an_exiting_topic_fails_with_the_publish_error() {
    // Goal: E_PUB_FAILED, E_MPUB_FAILED, E_DPUB_FAILED and HTTP 503 EXITING. Method: close the
    // engine under the running server (its topics are then exiting) and publish each way.
    let server = TestServer::start().await;
    server.publish("t", b"before").await;
    server.engine.close().unwrap();
    let bodies: [&[u8]; 1] = [b"x"];
    for (command, error) in [
        (Command::Pub { topic: "t", body: b"x" }, "E_PUB_FAILED PUB failed exiting"),
        (Command::Mpub { topic: "t", bodies: &bodies }, "E_MPUB_FAILED MPUB failed exiting"),
        (
            Command::Dpub { topic: "t", defer_ms: 1, body: b"x" },
            "E_DPUB_FAILED DPUB failed exiting",
        ),
    ] {
        let mut client = server.connect().await;
        client.command(command).await;
        client.expect_fatal(error).await;
    }
    let reply = server.http("POST", "/pub?topic=t", b"x").await;
    assert_eq!((reply.status, reply.text()), (503, r#"{"message":"EXITING"}"#.to_owned()));
    server.stop().await;
}
