//! Raw-bytes tests of TCP protocol V2 against an nsqd on loopback: every command, and every
//! error of NSQ.md §2.3–2.4 with nsqd's exact code, text and fatality.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::cast_possible_truncation)]

mod common;

use common::TestServer;
use protocol::command::Command;
use protocol::frame::Frame;

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
