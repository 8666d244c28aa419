//! Tests of nsqlookupd (NSQ.md §4) against one served on loopback: every TCP V1 command with
//! NSQ's exact replies and error texts, driven with raw bytes; every HTTP endpoint with NSQ's
//! JSON shapes, statuses and error texts; inactive producers and tombstones on a clock the test
//! moves; malformed input that closes only its own connection. The binary's tests are in binary.rs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::cast_possible_truncation)]

mod common;

use std::time::Duration;

use bytes::BufMut as _;
use common::lookupd::{CLOCK_START_NS, LookupClient, TestLookupd, identify_json};
use common::{NSQ_CONTENT_TYPE, assert_error, assert_ok};
use protocol::MAX_LINE_BYTES;
use protocol::lookup::LookupCommand;
use serde_json::{Value, json};
use server::lookupd::MAX_IDENTIFY_BODY_BYTES;

/// What NSQ's `/debug` shows as `tombstoned_at` for a producer never tombstoned.
const NEVER_TOMBSTONED: i64 = -6_795_364_578_871_345_152;

/// A producer as `/lookup` shows one identified by `TestLookupd::nsqd`.
fn peer_info(client: &LookupClient, address: &str, tcp_port: u16, http_port: u16) -> Value {
    json!({
        "remote_address": client.local_addr.to_string(),
        "hostname": format!("{address}.host"),
        "broadcast_address": address,
        "tcp_port": tcp_port,
        "http_port": http_port,
        "version": "1.3.0",
        "topology_zone": "",
        "topology_region": "",
    })
}

/// The broadcast addresses of `/lookup?topic=<topic>`'s producers.
async fn lookup_producers(lookupd: &TestLookupd, topic: &str) -> Vec<String> {
    let found = lookupd.get_json(&format!("/lookup?topic={topic}")).await;
    let producers = found["producers"].as_array().unwrap();
    producers.iter().map(|p| p["broadcast_address"].as_str().unwrap().to_owned()).collect()
}

/// `/nodes`' broadcast addresses.
async fn node_addresses(lookupd: &TestLookupd) -> Vec<String> {
    let nodes = lookupd.get_json("/nodes").await;
    let producers = nodes["producers"].as_array().unwrap();
    producers.iter().map(|p| p["broadcast_address"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn identify_answers_with_this_lookupds_ports_version_and_addresses() {
    // Goal: IDENTIFY's reply describes the lookupd, with the ports it really listens on (port
    // 0 was asked for). Method: identify and compare the JSON whole.
    let lookupd = TestLookupd::start_with(&["--broadcast-address=lookupd.test"]).await;
    let mut client = lookupd.connect().await;
    let answer = client.identify(&identify_json("n1", 4150, 4151)).await;
    assert_eq!(
        answer,
        json!({
            "tcp_port": lookupd.tcp.port(),
            "http_port": lookupd.http.port(),
            "version": "1.3.0",
            "broadcast_address": "lookupd.test",
            "hostname": server::daemon::hostname(),
        })
    );
    client.close().await;
    lookupd.stop().await;
}

#[tokio::test]
async fn register_lists_the_producer_under_its_topic_and_channel_everywhere() {
    // Goal: REGISTER's effect on every listing, in NSQ's shapes. Method: one nsqd registers a
    // topic with a channel and another topic alone; read /lookup, /topics, /channels, /nodes
    // and /debug whole.
    let lookupd = TestLookupd::start().await;
    let mut nsqd = lookupd.nsqd("n1", 4150, 4151).await;
    nsqd.register("t", Some("c")).await;
    nsqd.register("u", None).await;
    let info = peer_info(&nsqd, "n1", 4150, 4151);

    let found = lookupd.get_json("/lookup?topic=t").await;
    assert_eq!(found, json!({ "channels": ["c"], "producers": [info] }));
    let alone = lookupd.get_json("/lookup?topic=u").await;
    assert_eq!(alone, json!({ "channels": [], "producers": [info] }));
    assert_eq!(lookupd.get_json("/topics").await, json!({ "topics": ["t", "u"] }));
    assert_eq!(lookupd.get_json("/channels?topic=t").await, json!({ "channels": ["c"] }));
    assert_eq!(lookupd.get_json("/channels?topic=u").await, json!({ "channels": [] }));
    assert_eq!(lookupd.get_json("/channels?topic=none").await, json!({ "channels": [] }));

    let mut node = info.clone();
    node["tombstones"] = json!([false, false]);
    node["topics"] = json!(["t", "u"]);
    assert_eq!(lookupd.get_json("/nodes").await, json!({ "producers": [node] }));

    let record = json!([{
        "id": nsqd.local_addr.to_string(),
        "hostname": "n1.host",
        "broadcast_address": "n1",
        "tcp_port": 4150,
        "http_port": 4151,
        "version": "1.3.0",
        "topology_zone": "",
        "topology_region": "",
        "last_update": CLOCK_START_NS,
        "tombstoned": false,
        "tombstoned_at": NEVER_TOMBSTONED,
    }]);
    assert_eq!(
        lookupd.get_json("/debug").await,
        json!({
            "client::": record,
            "topic:t:": record,
            "topic:u:": record,
            "channel:t:c": record,
        })
    );
    nsqd.close().await;
    lookupd.stop().await;
}

#[tokio::test]
async fn unregister_keeps_keys_but_drops_empty_ephemeral_ones() {
    // Goal: UNREGISTER removes the producer, not the key, except for an `#ephemeral` topic or
    // channel left empty; a topic UNREGISTER also takes the producer off its channels.
    // Method: register, unregister piece by piece, and read the listings after each step.
    let lookupd = TestLookupd::start().await;
    let mut nsqd = lookupd.nsqd("n1", 4150, 4151).await;
    nsqd.register("t", Some("c")).await;
    nsqd.register("t", Some("e#ephemeral")).await;
    nsqd.unregister("t", Some("c")).await;
    let channels = lookupd.get_json("/channels?topic=t").await;
    assert_eq!(channels, json!({ "channels": ["c", "e#ephemeral"] }));
    assert_eq!(lookup_producers(&lookupd, "t").await, ["n1"], "still a producer of the topic");

    nsqd.unregister("t", Some("e#ephemeral")).await;
    assert_eq!(lookupd.get_json("/channels?topic=t").await, json!({ "channels": ["c"] }));

    nsqd.register("t", Some("c")).await;
    nsqd.unregister("t", None).await;
    let found = lookupd.get_json("/lookup?topic=t").await;
    assert_eq!(found, json!({ "channels": ["c"], "producers": [] }));
    let debug = lookupd.get_json("/debug").await;
    assert_eq!(debug.as_object().unwrap().keys().collect::<Vec<_>>(), ["client::"]);

    nsqd.register("x#ephemeral", None).await;
    nsqd.unregister("x#ephemeral", None).await;
    let gone = lookupd.http("GET", "/lookup?topic=x%23ephemeral").await;
    assert_error(&gone, 404, "TOPIC_NOT_FOUND");
    assert_eq!(lookupd.get_json("/topics").await, json!({ "topics": ["t"] }));

    // Unregistering what was never registered is no error.
    nsqd.unregister("never", Some("c")).await;
    nsqd.unregister("never", None).await;
    nsqd.close().await;
    lookupd.stop().await;
}

#[tokio::test]
async fn a_closed_connection_leaves_every_registration_and_the_keys_stay() {
    // Goal: when an nsqd's connection ends, for whatever reason, it is no producer of anything,
    // while its topics and channels stay listed. Method: two nsqds on one topic; one closes
    // cleanly, the other is closed by a fatal error; read the listings after each.
    let lookupd = TestLookupd::start().await;
    let mut first = lookupd.nsqd("n1", 4150, 4151).await;
    let mut second = lookupd.nsqd("n2", 4250, 4251).await;
    for nsqd in [&mut first, &mut second] {
        nsqd.register("t", Some("c")).await;
    }
    assert_eq!(lookup_producers(&lookupd, "t").await, ["n1", "n2"]);

    first.close().await;
    assert_eq!(lookup_producers(&lookupd, "t").await, ["n2"]);
    assert_eq!(node_addresses(&lookupd).await, ["n2"]);

    second.send(b"NOPE\n").await;
    second.expect_fatal("E_INVALID invalid command NOPE").await;
    let found = lookupd.get_json("/lookup?topic=t").await;
    assert_eq!(found, json!({ "channels": ["c"], "producers": [] }));
    assert_eq!(lookupd.get_json("/topics").await, json!({ "topics": ["t"] }));
    assert_eq!(lookupd.get_json("/nodes").await, json!({ "producers": [] }));
    assert_eq!(lookupd.get_json("/debug").await, json!({}));
    lookupd.stop().await;
}

#[tokio::test]
async fn producers_go_inactive_without_a_ping_and_a_ping_brings_them_back() {
    // Goal: a producer whose last IDENTIFY or PING is more than --inactive-producer-timeout
    // (300 s) old is hidden from /lookup and /nodes, not removed; PING refreshes it. Method:
    // two nsqds, one pinging; move the clock to the exact bound and one nanosecond past it.
    let lookupd = TestLookupd::start().await;
    let mut quiet = lookupd.nsqd("quiet", 4150, 4151).await;
    let mut pinging = lookupd.nsqd("pinging", 4250, 4251).await;
    quiet.register("t", Some("c")).await;
    pinging.register("t", Some("c")).await;

    lookupd.advance(Duration::from_secs(200));
    pinging.ping().await;
    lookupd.advance(Duration::from_secs(100));
    assert_eq!(lookup_producers(&lookupd, "t").await, ["quiet", "pinging"], "at the bound");
    lookupd.advance(Duration::from_nanos(1));
    assert_eq!(lookup_producers(&lookupd, "t").await, ["pinging"]);
    assert_eq!(node_addresses(&lookupd).await, ["pinging"]);
    let debug = lookupd.get_json("/debug").await;
    assert_eq!(debug["topic:t:"].as_array().unwrap().len(), 2, "/debug shows every producer");
    assert_eq!(debug["topic:t:"][0]["last_update"], CLOCK_START_NS);

    quiet.ping().await;
    assert_eq!(lookup_producers(&lookupd, "t").await, ["quiet", "pinging"]);
    assert_eq!(node_addresses(&lookupd).await, ["quiet", "pinging"]);
    // A PING before IDENTIFY is answered and changes nothing.
    let mut anonymous = lookupd.connect().await;
    anonymous.ping().await;
    assert_eq!(node_addresses(&lookupd).await, ["quiet", "pinging"]);
    for client in [quiet, pinging, anonymous] {
        client.close().await;
    }
    lookupd.stop().await;
}

#[tokio::test]
async fn a_tombstone_hides_the_producer_from_lookup_for_its_lifetime() {
    // Goal: /topic/tombstone hides that node's producer of that topic from /lookup for
    // --tombstone-lifetime, flags it in /nodes and /debug, and leaves its other topics and
    // other nodes alone; afterwards the producer shows again. Method: two nsqds on two topics,
    // a 10 s lifetime, the clock moved to the bound.
    let lookupd = TestLookupd::start_with(&["-tombstone-lifetime", "10s"]).await;
    let mut n1 = lookupd.nsqd("n1", 4150, 4151).await;
    let mut n2 = lookupd.nsqd("n2", 4250, 4251).await;
    for nsqd in [&mut n1, &mut n2] {
        nsqd.register("t", None).await;
        nsqd.register("t2", None).await;
    }
    lookupd.advance(Duration::from_secs(1));
    assert_ok(&lookupd.http("POST", "/topic/tombstone?topic=t&node=n1:4151").await, "");
    // A node named by its TCP port, or an unknown topic, tombstones nothing.
    assert_ok(&lookupd.http("POST", "/topic/tombstone?topic=t&node=n2:4250").await, "");
    assert_ok(&lookupd.http("POST", "/topic/tombstone?topic=none&node=n2:4251").await, "");

    assert_eq!(lookup_producers(&lookupd, "t").await, ["n2"]);
    assert_eq!(lookup_producers(&lookupd, "t2").await, ["n1", "n2"]);
    let nodes = lookupd.get_json("/nodes").await;
    assert_eq!(nodes["producers"][0]["topics"], json!(["t", "t2"]));
    assert_eq!(nodes["producers"][0]["tombstones"], json!([true, false]));
    assert_eq!(nodes["producers"][1]["tombstones"], json!([false, false]));
    let debug = lookupd.get_json("/debug").await;
    let tombstoned_at = CLOCK_START_NS + 1_000_000_000;
    assert_eq!(debug["topic:t:"][0]["tombstoned"], true);
    assert_eq!(debug["topic:t:"][0]["tombstoned_at"], tombstoned_at);
    assert_eq!(debug["topic:t2:"][0]["tombstoned"], false);

    lookupd.advance(Duration::from_secs(10) - Duration::from_nanos(1));
    assert_eq!(lookup_producers(&lookupd, "t").await, ["n2"], "just inside the lifetime");
    lookupd.advance(Duration::from_nanos(1));
    assert_eq!(lookup_producers(&lookupd, "t").await, ["n1", "n2"]);
    let nodes = lookupd.get_json("/nodes").await;
    assert_eq!(nodes["producers"][0]["tombstones"], json!([false, false]));
    let debug = lookupd.get_json("/debug").await;
    assert_eq!(debug["topic:t:"][0]["tombstoned"], false);
    assert_eq!(debug["topic:t:"][0]["tombstoned_at"], tombstoned_at, "the time is kept");
    n1.close().await;
    n2.close().await;
    lookupd.stop().await;
}

#[tokio::test]
async fn a_tombstoned_producer_that_unregisters_stays_gone_until_it_registers_again() {
    // Goal: NSQ's topic deletion sequence: tombstone, then the node's UNREGISTER removes it
    // for good; a later REGISTER is a new producer, not tombstoned. Method: follow it through
    // /lookup with the clock moved past the lifetime.
    let lookupd = TestLookupd::start().await;
    let mut nsqd = lookupd.nsqd("n1", 4150, 4151).await;
    nsqd.register("t", Some("c")).await;
    assert_ok(&lookupd.http("POST", "/topic/tombstone?topic=t&node=n1:4151").await, "");
    assert!(lookup_producers(&lookupd, "t").await.is_empty());
    nsqd.unregister("t", None).await;
    lookupd.advance(Duration::from_secs(46));
    assert!(lookup_producers(&lookupd, "t").await.is_empty());
    nsqd.register("t", None).await;
    assert_eq!(lookup_producers(&lookupd, "t").await, ["n1"]);
    nsqd.close().await;
    lookupd.stop().await;
}

#[tokio::test]
async fn http_creates_and_deletes_topic_and_channel_keys() {
    // Goal: the HTTP actions on keys: /topic/create and /channel/create make keys with no
    // producers (a channel's topic too), /channel/delete and /topic/delete remove keys and
    // the producers under them, and the nsqds' connections are not affected. Method: each
    // action, then the listings.
    let lookupd = TestLookupd::start().await;
    assert_ok(&lookupd.http("POST", "/topic/create?topic=a").await, "");
    let found = lookupd.get_json("/lookup?topic=a").await;
    assert_eq!(found, json!({ "channels": [], "producers": [] }));
    assert_ok(&lookupd.http("POST", "/channel/create?topic=b&channel=c").await, "");
    assert_ok(&lookupd.http("POST", "/channel/create?topic=b&channel=c").await, "");
    assert_eq!(lookupd.get_json("/topics").await, json!({ "topics": ["a", "b"] }));
    assert_eq!(lookupd.get_json("/channels?topic=b").await, json!({ "channels": ["c"] }));

    assert_ok(&lookupd.http("POST", "/channel/delete?topic=b&channel=c").await, "");
    assert_eq!(lookupd.get_json("/channels?topic=b").await, json!({ "channels": [] }));
    let again = lookupd.http("POST", "/channel/delete?topic=b&channel=c").await;
    assert_error(&again, 404, "CHANNEL_NOT_FOUND");
    assert_ok(&lookupd.http("POST", "/topic/delete?topic=b").await, "");
    assert_ok(&lookupd.http("POST", "/topic/delete?topic=never").await, "");
    assert_eq!(lookupd.get_json("/topics").await, json!({ "topics": ["a"] }));

    let mut nsqd = lookupd.nsqd("n1", 4150, 4151).await;
    nsqd.register("z", Some("c")).await;
    assert_ok(&lookupd.http("POST", "/topic/delete?topic=z").await, "");
    assert_error(&lookupd.http("GET", "/lookup?topic=z").await, 404, "TOPIC_NOT_FOUND");
    let debug = lookupd.get_json("/debug").await;
    assert_eq!(debug.as_object().unwrap().keys().collect::<Vec<_>>(), ["client::"]);
    nsqd.ping().await;
    nsqd.close().await;
    lookupd.stop().await;
}

#[tokio::test]
async fn ping_info_and_empty_listings_have_nsqlookupds_shapes() {
    // Goal: the fixed answers: /ping is plain `OK` without the V1 header, /info the version,
    // and an empty registry gives empty lists, not nulls. Method: read each on a new lookupd.
    let lookupd = TestLookupd::start().await;
    let ping = lookupd.http("GET", "/ping").await;
    assert_eq!((ping.status, ping.text().as_str()), (200, "OK"));
    assert_eq!(ping.header("X-NSQ-Content-Type"), None);
    assert_eq!(ping.header("Content-Type"), Some("text/plain; charset=utf-8"));
    let info = lookupd.http("GET", "/info").await;
    assert_eq!(info.text(), r#"{"version":"1.3.0"}"#);
    assert_eq!(info.header("X-NSQ-Content-Type"), Some(NSQ_CONTENT_TYPE));
    assert_eq!(lookupd.get_json("/topics").await, json!({ "topics": [] }));
    assert_eq!(lookupd.get_json("/nodes").await, json!({ "producers": [] }));
    assert_eq!(lookupd.get_json("/debug").await, json!({}));
    lookupd.stop().await;
}

#[tokio::test]
async fn http_errors_have_nsqlookupds_statuses_and_texts() {
    // Goal: every endpoint's error paths, in NSQ's order of checks. Method: a table of
    // requests and their exact replies.
    let lookupd = TestLookupd::start().await;
    let cases: &[(&str, &str, u16, &str)] = &[
        ("GET", "/lookup", 400, "MISSING_ARG_TOPIC"),
        ("GET", "/lookup?topic=nope", 404, "TOPIC_NOT_FOUND"),
        ("GET", "/lookup?topic=%zz", 400, "INVALID_REQUEST"),
        ("GET", "/lookup?topic=a;b", 400, "INVALID_REQUEST"),
        ("GET", "/channels", 400, "MISSING_ARG_TOPIC"),
        ("GET", "/channels?topic=%4", 400, "INVALID_REQUEST"),
        ("POST", "/topic/create", 400, "MISSING_ARG_TOPIC"),
        ("POST", "/topic/create?topic=bad!", 400, "INVALID_ARG_TOPIC"),
        ("POST", "/topic/delete", 400, "MISSING_ARG_TOPIC"),
        ("POST", "/channel/create", 400, "MISSING_ARG_TOPIC"),
        ("POST", "/channel/create?topic=bad!", 400, "INVALID_ARG_TOPIC"),
        ("POST", "/channel/create?topic=t", 400, "MISSING_ARG_CHANNEL"),
        ("POST", "/channel/create?topic=t&channel=bad!", 400, "INVALID_ARG_CHANNEL"),
        ("POST", "/channel/delete", 400, "MISSING_ARG_TOPIC"),
        ("POST", "/channel/delete?topic=bad!", 400, "INVALID_ARG_TOPIC"),
        ("POST", "/channel/delete?topic=t", 400, "MISSING_ARG_CHANNEL"),
        ("POST", "/channel/delete?topic=t&channel=bad!", 400, "INVALID_ARG_CHANNEL"),
        ("POST", "/channel/delete?topic=t&channel=c", 404, "CHANNEL_NOT_FOUND"),
        ("POST", "/topic/tombstone", 400, "MISSING_ARG_TOPIC"),
        ("POST", "/topic/tombstone?topic=t", 400, "MISSING_ARG_NODE"),
        ("GET", "/nope", 404, "NOT_FOUND"),
        ("GET", "/debug/pprof", 404, "NOT_FOUND"),
        ("GET", "/topic/create?topic=t", 405, "METHOD_NOT_ALLOWED"),
        ("POST", "/lookup?topic=t", 405, "METHOD_NOT_ALLOWED"),
    ];
    for &(method, target, status, message) in cases {
        let reply = lookupd.http(method, target).await;
        assert_error(&reply, status, message);
    }
    assert_eq!(lookupd.get_json("/topics").await, json!({ "topics": [] }), "nothing was made");
    lookupd.stop().await;
}

#[tokio::test]
async fn command_lines_are_trimmed_and_split_as_nsq_does() {
    // Goal: white space around a line (CRLF included) is ignored, parameters are split on
    // single spaces, an empty channel parameter means none, and a line of exactly
    // MAX_LINE_BYTES is read. Method: odd but valid lines, then the listings.
    let lookupd = TestLookupd::start().await;
    let mut nsqd = lookupd.nsqd("n1", 4150, 4151).await;
    nsqd.send(b"PING\r\n").await;
    nsqd.expect_ok().await;
    nsqd.send(b" \tREGISTER t c \r\n").await;
    nsqd.expect_ok().await;
    nsqd.send(b"REGISTER u  c\n").await;
    nsqd.expect_ok().await;
    // PING takes no parameters and ignores any.
    let mut longest = b"PING ".to_vec();
    longest.resize(MAX_LINE_BYTES - 1, b'x');
    longest.push(b'\n');
    nsqd.send(&longest).await;
    nsqd.expect_ok().await;
    assert_eq!(lookupd.get_json("/channels?topic=t").await, json!({ "channels": ["c"] }));
    assert_eq!(lookupd.get_json("/channels?topic=u").await, json!({ "channels": [] }));
    assert_eq!(lookupd.get_json("/topics").await, json!({ "topics": ["t", "u"] }));
    nsqd.close().await;
    lookupd.stop().await;
}

/// A connection in the state a malformed-input case starts from.
#[derive(Clone, Copy, Debug)]
enum Start {
    /// Nothing sent, not even the magic.
    Raw,
    Magic,
    Identified,
}

/// `IDENTIFY` with a declared size and the bytes that follow it.
fn identify_with_size(size: u32, body: &[u8]) -> Vec<u8> {
    let mut bytes = b"IDENTIFY\n".to_vec();
    bytes.put_u32(size);
    bytes.extend_from_slice(body);
    bytes
}

#[tokio::test]
async fn malformed_input_gets_nsqs_error_and_closes_only_its_connection() {
    // Goal: every V1 error is fatal, with NSQ's exact text; sizes NSQ would panic on or
    // allocate (a negative or huge IDENTIFY length) and overlong lines are refused the same
    // way; and through all of it a registered nsqd keeps its connection and its listing.
    // Method: one case per connection, each read to its close, then the witness PINGs.
    let lookupd = TestLookupd::start().await;
    let mut witness = lookupd.nsqd("witness", 4150, 4151).await;
    witness.register("t", Some("c")).await;

    let identify = |json: &str| identify_with_size(json.len() as u32, json.as_bytes());
    let max = MAX_IDENTIFY_BODY_BYTES as u32;
    let mut overlong = b"PING ".to_vec();
    overlong.resize(MAX_LINE_BYTES, b'x');
    let too_long = format!("E_INVALID command line longer than {MAX_LINE_BYTES} bytes");
    let cases: Vec<(Start, Vec<u8>, bool, String)> = vec![
        (Start::Raw, b"  V2".to_vec(), false, "E_BAD_PROTOCOL".into()),
        (Start::Magic, b"FOO bar\n".to_vec(), false, "E_INVALID invalid command FOO".into()),
        (Start::Magic, b"\n".to_vec(), false, "E_INVALID invalid command ".into()),
        (Start::Magic, b"ping\n".to_vec(), false, "E_INVALID invalid command ping".into()),
        (Start::Magic, b"REGISTER t\n".to_vec(), false, "E_INVALID client must IDENTIFY".into()),
        (Start::Magic, b"UNREGISTER t\n".to_vec(), false, "E_INVALID client must IDENTIFY".into()),
        (Start::Magic, overlong, false, too_long),
        (
            Start::Magic,
            identify_with_size(u32::MAX, b""),
            false,
            "E_BAD_BODY IDENTIFY invalid body size -1".into(),
        ),
        (
            Start::Magic,
            identify_with_size(0x8000_0000, b""),
            false,
            "E_BAD_BODY IDENTIFY invalid body size -2147483648".into(),
        ),
        (
            Start::Magic,
            identify_with_size(0x7fff_ffff, b""),
            false,
            "E_BAD_BODY IDENTIFY invalid body size 2147483647".into(),
        ),
        (
            Start::Magic,
            identify_with_size(max + 1, b""),
            false,
            format!("E_BAD_BODY IDENTIFY invalid body size {}", max + 1),
        ),
        (
            Start::Magic,
            identify("not json"),
            false,
            "E_BAD_BODY IDENTIFY failed to decode JSON body".into(),
        ),
        (
            Start::Magic,
            identify(""),
            false,
            "E_BAD_BODY IDENTIFY failed to decode JSON body".into(),
        ),
        (
            Start::Magic,
            identify(r#"{"tcp_port":"4150"}"#),
            false,
            "E_BAD_BODY IDENTIFY failed to decode JSON body".into(),
        ),
        (Start::Magic, identify("{}"), false, "E_BAD_BODY IDENTIFY missing fields".into()),
        (
            Start::Magic,
            identify(r#"{"broadcast_address":"h","tcp_port":1,"http_port":2}"#),
            false,
            "E_BAD_BODY IDENTIFY missing fields".into(),
        ),
        (
            Start::Magic,
            identify(r#"{"broadcast_address":"h","tcp_port":0,"http_port":2,"version":"1"}"#),
            false,
            "E_BAD_BODY IDENTIFY missing fields".into(),
        ),
        (
            Start::Magic,
            b"IDENTIFY\n\0\0".to_vec(),
            true,
            "E_BAD_BODY IDENTIFY failed to read body size".into(),
        ),
        (
            Start::Magic,
            identify_with_size(16, b"{"),
            true,
            "E_BAD_BODY IDENTIFY failed to read body".into(),
        ),
        (
            Start::Identified,
            b"IDENTIFY\n".to_vec(),
            false,
            "E_INVALID cannot IDENTIFY again".into(),
        ),
        (
            Start::Identified,
            b"REGISTER\n".to_vec(),
            false,
            "E_INVALID REGISTER insufficient number of params".into(),
        ),
        (
            Start::Identified,
            b"UNREGISTER\n".to_vec(),
            false,
            "E_INVALID UNREGISTER insufficient number of params".into(),
        ),
        (
            Start::Identified,
            b"REGISTER bad!topic c\n".to_vec(),
            false,
            "E_BAD_TOPIC REGISTER topic name 'bad!topic' is not valid".into(),
        ),
        (
            Start::Identified,
            b"REGISTER t bad!chan\n".to_vec(),
            false,
            "E_BAD_CHANNEL REGISTER channel name 'bad!chan' is not valid".into(),
        ),
        (
            Start::Identified,
            b"UNREGISTER t bad!chan\n".to_vec(),
            false,
            "E_BAD_CHANNEL UNREGISTER channel name 'bad!chan' is not valid".into(),
        ),
    ];
    for (start, bytes, half_close, expected) in cases {
        let mut client = match start {
            Start::Raw => lookupd.connect_raw().await,
            Start::Magic => lookupd.connect().await,
            Start::Identified => lookupd.nsqd("victim", 4350, 4351).await,
        };
        client.send(&bytes).await;
        if half_close {
            client.shutdown_write().await;
        }
        client.expect_fatal(&expected).await;
        witness.ping().await;
    }
    assert_eq!(lookup_producers(&lookupd, "t").await, ["witness"]);
    assert_eq!(node_addresses(&lookupd).await, ["witness"], "no failed client stays");
    assert_eq!(lookupd.get_json("/topics").await, json!({ "topics": ["t"] }));
    assert_eq!(lookupd.http("GET", "/ping").await.text(), "OK");
    witness.close().await;
    lookupd.stop().await;
}

#[tokio::test]
async fn a_connection_that_ends_mid_line_or_before_the_magic_is_just_closed() {
    // Goal: a client that goes away before a whole line (or the magic) costs nothing and gets
    // no reply. Method: half-close after partial input and expect a bare close.
    let lookupd = TestLookupd::start().await;
    for (magic, bytes) in [(false, &b"  V"[..]), (true, b"REGISTER t"), (true, b"")] {
        let mut client = if magic { lookupd.connect().await } else { lookupd.connect_raw().await };
        client.send(bytes).await;
        client.shutdown_write().await;
        client.expect_closed().await;
    }
    let mut nsqd = lookupd.nsqd("n1", 4150, 4151).await;
    nsqd.command(LookupCommand::Register { topic: "t", channel: None }).await;
    nsqd.expect_ok().await;
    nsqd.close().await;
    lookupd.stop().await;
}
