//! The IDENTIFY upgrades of NSQ.md §2.5 against an nsqd on loopback: TLS, snappy and deflate,
//! alone and layered, with certificates made by the test; client certificate policies;
//! `--tls-required` on TCP and HTTP; the HTTPS listener; and what happens to a connection
//! whose compressed stream is corrupt.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::cast_possible_truncation)]

mod common;

use common::pki::Pki;
use common::{Client, TestServer, https_request};
use protocol::command::Command;
use protocol::compression::{Compression, Compressor};
use serde_json::Value;
use tokio_rustls::TlsConnector;

async fn tls_server(pki: &Pki, extra: &[&str]) -> TestServer {
    let mut flags = pki.server_flags();
    flags.extend(extra.iter().map(|f| (*f).to_owned()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    TestServer::start_with(&flags).await
}

/// This connection's entry in `/stats` (producers and consumers alike).
async fn client_stats(server: &TestServer, client: &Client) -> Value {
    let stats = server.http("GET", "/stats?format=json", b"").await.json();
    let address = client.local_addr.to_string();
    let producers = stats["producers"].as_array().into_iter().flatten();
    let consumers = stats["topics"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|topic| topic["channels"].as_array().into_iter().flatten())
        .flat_map(|channel| channel["clients"].as_array().into_iter().flatten());
    producers
        .chain(consumers)
        .find(|c| c["remote_address"] == address.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("no client {address} in {stats}"))
}

/// A client connected and upgraded as `features` (IDENTIFY JSON fields) ask.
async fn upgraded(server: &TestServer, features: &str, tls: Option<&TlsConnector>) -> Client {
    let mut client = server.connect().await;
    let json = format!(r#"{{"feature_negotiation":true{features}}}"#);
    client.negotiate(&json, tls).await;
    client
}

#[tokio::test]
async fn every_combination_carries_large_messages_and_mpub_batches() {
    // Goal: plain, TLS, snappy, deflate, TLS+snappy and TLS+deflate each carry a 1 MiB PUB
    // and an MPUB batch both ways, and /stats shows the features in use. Method: one producer
    // and one consumer per combination on one TLS-enabled server.
    let pki = Pki::new();
    let server = tls_server(&pki, &[]).await;
    let connector = pki.connector(None);
    let large: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let small: Vec<Vec<u8>> = (0..50).map(|i| format!("batch-{i}").into_bytes()).collect();
    let cases = [
        ("plain", "", false, None),
        ("tls", r#","tls_v1":true"#, true, None),
        ("snappy", r#","snappy":true"#, false, Some("snappy")),
        ("deflate", r#","deflate":true,"deflate_level":1"#, false, Some("deflate")),
        ("tls-snappy", r#","tls_v1":true,"snappy":true"#, true, Some("snappy")),
        ("tls-deflate", r#","tls_v1":true,"deflate":true"#, true, Some("deflate")),
    ];
    for (name, features, tls, compression) in cases {
        let mut producer = upgraded(&server, features, Some(&connector)).await;
        producer.command(Command::Pub { topic: name, body: &large }).await;
        producer.expect_ok().await;
        let mut bodies: Vec<&[u8]> = small.iter().map(Vec::as_slice).collect();
        bodies.insert(25, &large);
        producer.command(Command::Mpub { topic: name, bodies: &bodies }).await;
        producer.expect_ok().await;

        let mut consumer = upgraded(&server, features, Some(&connector)).await;
        consumer.command(Command::Sub { topic: name, channel: "c" }).await;
        consumer.expect_ok().await;
        consumer.command(Command::Rdy(100)).await;
        let mut expected: Vec<&[u8]> = vec![&large];
        expected.extend(&bodies);
        for (i, want) in expected.iter().enumerate() {
            let message = consumer.message().await;
            assert!(message.body == *want, "{name}: message {i} differs");
            consumer.command(Command::Fin(&message.id)).await;
        }
        consumer.sync().await;

        for client in [&producer, &consumer] {
            let stats = client_stats(&server, client).await;
            assert_eq!(stats["tls"], tls, "{name}: {stats}");
            assert_eq!(stats["snappy"], compression == Some("snappy"), "{name}: {stats}");
            assert_eq!(stats["deflate"], compression == Some("deflate"), "{name}: {stats}");
            if tls {
                assert_eq!(stats["tls_version"], "TLS1.3", "{name}");
                assert!(stats["tls_cipher_suite"].as_str().unwrap().starts_with("TLS_"));
            } else {
                assert_eq!(stats["tls_version"], "", "{name}");
            }
        }
        let channel = server.engine.get_topic(name).unwrap().get_channel("c").unwrap().stats();
        let counts = (channel.message_count, channel.in_flight_count, channel.depth);
        assert_eq!(counts, (expected.len() as u64, 0, 0), "{name}");
    }
    server.stop().await;
}

#[tokio::test]
async fn the_answer_names_what_was_negotiated() {
    // Goal: NSQ.md §2.5's rules: deflate_level is min(requested or 6, --max-deflate-level);
    // features the server turns off are answered false and not applied; snappy with deflate
    // is E_IDENTIFY_FAILED; TLS is answered false without a certificate.
    let server = TestServer::start_with(&["--max-deflate-level=3", "--snappy=false"]).await;
    for (request, level) in [(r#","deflate_level":9"#, 3), (r#","deflate_level":2"#, 2), ("", 3)] {
        let json = format!(r#"{{"feature_negotiation":true,"deflate":true{request}}}"#);
        let mut client = server.connect().await;
        let answer = client.negotiate(&json, None).await;
        assert_eq!(
            (answer["deflate"].as_bool(), answer["deflate_level"].as_i64()),
            (Some(true), Some(level))
        );
        assert_eq!(answer["max_deflate_level"], 3);
        client.sync().await;
    }
    let mut client = server.connect().await;
    let answer =
        client.negotiate(r#"{"feature_negotiation":true,"snappy":true,"tls_v1":true}"#, None).await;
    assert_eq!(
        (answer["snappy"].as_bool(), answer["tls_v1"].as_bool()),
        (Some(false), Some(false))
    );
    client.sync().await;
    server.stop().await;

    let server = TestServer::start().await;
    let mut client = server.connect().await;
    client
        .command(Command::Identify(br#"{"feature_negotiation":true,"snappy":true,"deflate":true}"#))
        .await;
    client
        .expect_fatal("E_IDENTIFY_FAILED cannot enable both deflate and snappy compression")
        .await;
    server.stop().await;
}

#[tokio::test]
async fn commands_sent_behind_identify_reach_the_new_layer() {
    // Goal: bytes the server read ahead of an upgrade are decompressed, not lost or read as
    // plain text. Method: send IDENTIFY and a compressed PUB in one write, before reading the
    // answer; then expect the JSON, the upgrade OK and the PUB's OK.
    let server = TestServer::start().await;
    for compression in [Compression::Snappy, Compression::Deflate { level: 6 }] {
        let features = match compression {
            Compression::Snappy => r#"{"feature_negotiation":true,"snappy":true}"#,
            Compression::Deflate { .. } => r#"{"feature_negotiation":true,"deflate":true}"#,
        };
        let mut bytes = Command::Identify(features.as_bytes()).to_bytes().to_vec();
        let publish = Command::Pub { topic: "ahead", body: b"behind identify" }.to_bytes();
        bytes.extend_from_slice(Compressor::new(compression).compress(&publish).unwrap());
        let mut client = server.connect().await;
        client.send(&bytes).await;
        let answer: Value = serde_json::from_slice(&client.response().await).unwrap();
        assert_eq!(answer[compression.name()], true);
        client.start_compression(compression);
        client.expect_ok().await;
        client.expect_ok().await;
    }
    let depth = server.engine.get_topic("ahead").unwrap().stats().depth;
    assert_eq!(depth, 2);
    server.stop().await;
}

#[tokio::test]
async fn a_corrupt_compressed_stream_closes_only_its_connection() {
    // Goal: garbage where a compressed stream is expected ends that connection without an
    // error frame (nsqd's read fails), and other connections carry on.
    let server = TestServer::start().await;
    let mut bystander = upgraded(&server, r#","deflate":true"#, None).await;
    for features in [r#","snappy":true"#, r#","deflate":true"#] {
        let mut victim = upgraded(&server, features, None).await;
        victim.send_raw(b"\x07\xff\xff\xff this is not compressed at all\n").await;
        victim.expect_closed().await;
    }
    bystander.command(Command::Pub { topic: "still", body: b"here" }).await;
    bystander.expect_ok().await;
    server.stop().await;
}

#[tokio::test]
async fn tls_required_refuses_everything_but_identify_until_the_upgrade() {
    // Goal: --tls-required=true: TCP commands before TLS are fatal E_INVALID with nsqd's
    // text; plain HTTP answers 403 naming the HTTPS port, which serves the API.
    let pki = Pki::new();
    let server = tls_server(&pki, &["--tls-required"]).await;
    let connector = pki.connector(None);

    let mut client = server.connect().await;
    client.command(Command::Pub { topic: "t", body: b"x" }).await;
    client.expect_fatal("E_INVALID cannot PUB in current state (TLS required)").await;

    let mut client = server.connect().await;
    client.negotiate(r#"{"feature_negotiation":true}"#, None).await;
    client.command(Command::Nop).await;
    client.expect_fatal("E_INVALID cannot NOP in current state (TLS required)").await;

    let mut client = upgraded(&server, r#","tls_v1":true"#, Some(&connector)).await;
    client.sync().await;

    let https = server.https.expect("https listener");
    let plain = server.http("GET", "/ping", b"").await;
    assert_eq!(plain.status, 403);
    assert_eq!(
        plain.text(),
        format!(r#"{{"message": "TLS_REQUIRED", "https_port": {}}}"#, https.port())
    );
    assert_eq!(plain.header("X-NSQ-Content-Type"), Some("nsq; version=1.0"));
    let secure = https_request(https, &connector, "GET", "/ping").await.unwrap();
    assert_eq!((secure.status, secure.text().as_str()), (200, "OK"));
    let info = https_request(https, &connector, "GET", "/info").await.unwrap();
    assert_eq!(info.json()["tcp_port"], server.tcp.port());
    server.stop().await;

    // tcp-https: TCP must upgrade, plain HTTP is still served.
    let server = tls_server(&pki, &["--tls-required=tcp-https"]).await;
    assert_eq!(server.http("GET", "/ping", b"").await.status, 200);
    let mut client = server.connect().await;
    client.command(Command::Nop).await;
    client.expect_fatal("E_INVALID cannot NOP in current state (TLS required)").await;
    let config = server.http("GET", "/config/tls_required", b"").await;
    assert_eq!(config.text(), "1");
    server.stop().await;
}

/// Connects, asks for TLS and runs the handshake with `connector`; true if the connection
/// then works (its `OK` arrives and a command is answered).
async fn tls_works(server: &TestServer, connector: &TlsConnector) -> bool {
    let mut client = server.connect().await;
    let answer = client.identify(r#"{"feature_negotiation":true,"tls_v1":true}"#).await;
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["tls_v1"], true);
    if client.start_tls(connector).await.is_err() {
        return false;
    }
    // With TLS 1.3 a refused client certificate shows only when the client next reads.
    match client.next_frame().await {
        Some(protocol::Frame::Response(ok)) if ok == "OK" => {}
        _ => return false,
    }
    client.sync().await;
    true
}

#[tokio::test]
async fn client_certificate_policies() {
    // Goal: require-verify takes only certificates from --tls-root-ca-file's CA; require
    // takes any certificate but needs one; no policy needs none. Each policy also makes TLS
    // required (nsqd raises --tls-required with a policy).
    let pki = Pki::new();
    let ca = format!("--tls-root-ca-file={}", pki.ca_file.display());

    let server = tls_server(&pki, &["--tls-client-auth-policy=require-verify", &ca]).await;
    assert!(tls_works(&server, &pki.connector(Some(pki.client("alice")))).await);
    assert!(!tls_works(&server, &pki.connector(Some(pki.stranger("mallory")))).await);
    assert!(!tls_works(&server, &pki.connector(None)).await);
    let mut plain = server.connect().await;
    plain.command(Command::Nop).await;
    plain.expect_fatal("E_INVALID cannot NOP in current state (TLS required)").await;
    server.stop().await;

    let server = tls_server(&pki, &["--tls-client-auth-policy=require"]).await;
    assert!(tls_works(&server, &pki.connector(Some(pki.stranger("mallory")))).await);
    assert!(!tls_works(&server, &pki.connector(None)).await);
    server.stop().await;

    let server = tls_server(&pki, &[]).await;
    assert!(tls_works(&server, &pki.connector(None)).await);
    assert!(tls_works(&server, &pki.connector(Some(pki.client("alice")))).await);
    server.stop().await;
}

#[tokio::test]
async fn tls_flags_are_checked_at_start() {
    // Goal: the start-up errors nsqd gives for TLS flags.
    let pki = Pki::new();
    let error = TestServer::try_start_with(&["--tls-required"]).await.err().unwrap();
    assert!(format!("{error:#}").contains("without TLS key and cert"), "{error:#}");
    let cert = format!("--tls-cert={}", pki.cert_file.display());
    let error = TestServer::try_start_with(&[&cert]).await.err().unwrap();
    assert!(format!("{error:#}").contains("--tls-cert and --tls-key"), "{error:#}");
    let key = format!("--tls-key={}", pki.ca_file.display());
    let error = TestServer::try_start_with(&[&cert, &key]).await.err().unwrap();
    assert!(format!("{error:#}").contains("failed to build TLS config"), "{error:#}");
}

#[tokio::test]
async fn https_serves_the_api_beside_plain_http() {
    // Goal: with a certificate, --https-address serves the same API; plain HTTP still works.
    let pki = Pki::new();
    let server = tls_server(&pki, &[]).await;
    server.publish("over-https", b"x").await;
    let https = server.https.unwrap();
    let stats =
        https_request(https, &pki.connector(None), "GET", "/stats?format=json&topic=over-https")
            .await
            .unwrap();
    assert_eq!(stats.status, 200);
    assert_eq!(stats.json()["topics"][0]["depth"], 1);
    assert_eq!(server.http("GET", "/ping", b"").await.status, 200);
    server.stop().await;
}
