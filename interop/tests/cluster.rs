//! NSQ's cluster mode on loopback: nsqds registering with two nsqlookupds, and consumers
//! finding every nsqd of a topic through them (NSQ.md §4). Everything runs in this process:
//! the lookupds on `server::lookupd`, the nsqds on real engines in temporary directories.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::cast_possible_truncation)]

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{InteropServer, WAIT, http, python};
use serde_json::Value;
use server::lookupd::{Clock, Lookupd, LookupdOptions, RunningLookupd};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// An nsqlookupd on loopback; `tcp` may name the port of one that was stopped.
async fn lookupd(tcp: &str, extra: &[&str], clock: Clock) -> RunningLookupd {
    let tcp = format!("--tcp-address={tcp}");
    let mut args = vec![
        "nsqlookupd",
        tcp.as_str(),
        "--http-address=127.0.0.1:0",
        "--broadcast-address=127.0.0.1",
    ];
    args.extend_from_slice(extra);
    let options = LookupdOptions::parse_args(args).expect("lookupd options");
    Lookupd::start_with_clock(options, clock).await.expect("start lookupd")
}

/// An nsqd registering with `lookupds` (TCP addresses), as 127.0.0.1.
async fn nsqd(lookupds: &[SocketAddr], extra: &[&str]) -> InteropServer {
    let mut flags = vec!["--broadcast-address=127.0.0.1".to_owned()];
    flags.extend(lookupds.iter().map(|addr| format!("--lookupd-tcp-address={addr}")));
    flags.extend(extra.iter().map(|flag| (*flag).to_owned()));
    InteropServer::start_with(&flags).await
}

/// Two lookupds and three nsqds registering with both.
struct Cluster {
    lookupds: Vec<RunningLookupd>,
    nsqds: Vec<InteropServer>,
}

impl Cluster {
    async fn start() -> Self {
        let mut lookupds = Vec::new();
        for _ in 0..2 {
            lookupds.push(lookupd("127.0.0.1:0", &[], Clock::system()).await);
        }
        let tcp: Vec<SocketAddr> = lookupds.iter().map(RunningLookupd::tcp_addr).collect();
        let mut nsqds = Vec::new();
        for _ in 0..3 {
            nsqds.push(nsqd(&tcp, &[]).await);
        }
        Self { lookupds, nsqds }
    }

    /// The lookupds' HTTP addresses.
    fn lookupd_http(&self) -> Vec<SocketAddr> {
        self.lookupds.iter().map(RunningLookupd::http_addr).collect()
    }

    fn nsqd_ports(&self) -> Vec<u16> {
        self.nsqds.iter().map(|n| n.tcp.port()).collect()
    }

    async fn stop(self) {
        for node in self.nsqds {
            node.stop().await;
        }
        for lookupd in self.lookupds {
            lookupd.shutdown().await;
        }
    }
}

async fn get_json(addr: SocketAddr, target: &str) -> (u16, Value) {
    let (status, body) = http(addr, "GET", target, b"").await;
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, json)
}

/// The TCP ports of the producers `/lookup` gives for `topic` (none while it is unknown).
async fn producers(lookupd: SocketAddr, topic: &str) -> BTreeSet<u16> {
    let (status, json) = get_json(lookupd, &format!("/lookup?topic={topic}")).await;
    if status == 404 {
        return BTreeSet::new();
    }
    assert_eq!(status, 200, "{json}");
    json["producers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["broadcast_address"], "127.0.0.1");
            p["tcp_port"].as_u64().unwrap() as u16
        })
        .collect()
}

/// Polls `probe` until it returns `Some`, for up to [`WAIT`].
async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "never happened: {what}");
        // Paces the polling of a condition checked above; not a synchronization by itself.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `lookupd` gives exactly `expected` (TCP ports) as `topic`'s producers.
async fn wait_for_producers(lookupd: SocketAddr, topic: &str, expected: &[u16]) {
    let expected: BTreeSet<u16> = expected.iter().copied().collect();
    let what = format!("{lookupd} lists {expected:?} for {topic}");
    eventually(&what, async || (producers(lookupd, topic).await == expected).then_some(())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pynsq_reader_given_only_the_lookupds_gets_every_message_of_every_nsqd() {
    // Goal: the headline: a consumer that knows only the lookupds' HTTP addresses
    // discovers all three nsqds of a topic and receives what was published to each. Method:
    // publish to each nsqd, wait until both lookupds list all three, then run pynsq's Reader
    // with lookupd_http_addresses and check the bodies and the connections it made.
    python::require_pynsq().await;
    let cluster = Cluster::start().await;
    let mut published = BTreeSet::new();
    for (n, node) in cluster.nsqds.iter().enumerate() {
        for i in 0..5 {
            let body = format!("node{n}-{i}");
            node.http_publish("spread", body.as_bytes()).await;
            published.insert(body);
        }
    }
    for lookupd in cluster.lookupd_http() {
        wait_for_producers(lookupd, "spread", &cluster.nsqd_ports()).await;
    }

    let timeout = Duration::from_secs(30);
    let mut script = Command::new(python::python());
    script
        .arg(python::script("pynsq_lookupd_reader.py"))
        .args(cluster.lookupd_http().iter().map(|a| format!("--lookupd-http={a}")))
        .args(["--topic=spread", "--channel=everything"])
        .arg(format!("--expect={}", published.len()))
        .arg(format!("--timeout={}", timeout.as_secs()));
    let (lines, context) = python::run(&mut script, timeout).await;
    assert_eq!(lines.last().map(String::as_str), Some("DONE"), "{context}");
    let received: BTreeSet<String> =
        lines.iter().filter_map(|line| line.strip_prefix("RECEIVED ")).map(str::to_owned).collect();
    assert_eq!(received, published, "{context}");
    let connections = lines.iter().find_map(|l| l.strip_prefix("CONNECTIONS ")).unwrap();
    let connections: Vec<String> = serde_json::from_str(connections).unwrap();
    let mut expected: Vec<String> = cluster.nsqds.iter().map(|n| n.tcp.to_string()).collect();
    expected.sort_unstable();
    assert_eq!(connections, expected, "one connection per nsqd: {context}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookupds_follow_deletions_and_a_restarted_one_learns_everything_again() {
    // Goal: a topic deleted on one nsqd leaves /lookup (its UNREGISTER reaches both
    // lookupds); a lookupd restarted on its port is given the whole topology again by the
    // nsqds reconnecting. Method: three nsqds with the topic and a channel each.
    let mut cluster = Cluster::start().await;
    for node in &cluster.nsqds {
        for target in ["/topic/create?topic=t", "/channel/create?topic=t&channel=c"] {
            assert_eq!(http(node.http, "POST", target, b"").await.0, 200, "{target}");
        }
    }
    let ports = cluster.nsqd_ports();
    for lookupd in cluster.lookupd_http() {
        wait_for_producers(lookupd, "t", &ports).await;
    }

    let (status, _) = http(cluster.nsqds[0].http, "POST", "/topic/delete?topic=t", b"").await;
    assert_eq!(status, 200);
    for lookupd in cluster.lookupd_http() {
        wait_for_producers(lookupd, "t", &ports[1..]).await;
    }

    let stopped = cluster.lookupds.remove(0);
    let port = stopped.tcp_addr();
    stopped.shutdown().await;
    let restarted = lookupd(&port.to_string(), &[], Clock::system()).await;
    let http_addr = restarted.http_addr();
    cluster.lookupds.push(restarted);
    wait_for_producers(http_addr, "t", &ports[1..]).await;
    let (_, channels) = get_json(http_addr, "/channels?topic=t").await;
    assert_eq!(channels, serde_json::json!({"channels": ["c"]}));
    let (_, nodes) = get_json(http_addr, "/nodes").await;
    assert_eq!(nodes["producers"].as_array().unwrap().len(), 3, "{nodes}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstoned_producer_is_hidden_for_the_tombstone_lifetime() {
    // Goal: POST /topic/tombstone hides one nsqd of a topic from /lookup for
    // --tombstone-lifetime, then it is listed again (it still has the topic). Method: the
    // lookupd's clock is the test's.
    let clock = Clock::manual(1_000_000_000);
    let lookupd = lookupd("127.0.0.1:0", &[], clock.clone()).await;
    let (one, two) =
        (nsqd(&[lookupd.tcp_addr()], &[]).await, nsqd(&[lookupd.tcp_addr()], &[]).await);
    for node in [&one, &two] {
        node.http_publish("t", b"x").await;
    }
    let both = [one.tcp.port(), two.tcp.port()];
    wait_for_producers(lookupd.http_addr(), "t", &both).await;

    let node = format!("127.0.0.1:{}", one.http.port());
    let target = format!("/topic/tombstone?topic=t&node={node}");
    let (status, _) = http(lookupd.http_addr(), "POST", &target, b"").await;
    assert_eq!(status, 200);
    assert_eq!(producers(lookupd.http_addr(), "t").await, BTreeSet::from([two.tcp.port()]));
    let (_, nodes) = get_json(lookupd.http_addr(), "/nodes").await;
    let tombstoned = nodes["producers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["tcp_port"] == one.tcp.port())
        .unwrap()
        .clone();
    assert_eq!(tombstoned["tombstones"], serde_json::json!([true]), "{nodes}");

    clock.advance(Duration::from_secs(44));
    assert_eq!(producers(lookupd.http_addr(), "t").await.len(), 1);
    clock.advance(Duration::from_secs(1));
    assert_eq!(producers(lookupd.http_addr(), "t").await, BTreeSet::from(both));

    one.stop().await;
    two.stop().await;
    lookupd.shutdown().await;
}

/// A TCP relay that can stop relaying while keeping both connections open: a host that hung
/// or a network that dropped everything, as opposed to a process whose sockets closed.
struct Link {
    addr: SocketAddr,
    freeze: CancellationToken,
    stop: CancellationToken,
}

impl Link {
    async fn to(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (freeze, stop) = (CancellationToken::new(), CancellationToken::new());
        let (frozen, stopped) = (freeze.clone(), stop.clone());
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let accepted = tokio::select! {
                    () = stopped.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut down, _)) = accepted else { continue };
                let Ok(mut up) = TcpStream::connect(upstream).await else { continue };
                let frozen = frozen.clone();
                let stopped = stopped.clone();
                held.push(tokio::spawn(async move {
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                        () = frozen.cancelled() => {
                            // Keep both sockets open, relaying nothing, until the test ends.
                            stopped.cancelled().await;
                        }
                    }
                }));
            }
        });
        Self { addr, freeze, stop }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nsqd_that_stops_answering_expires_and_one_that_exits_is_dropped_at_once() {
    // Goal: a producer whose PINGs stop (hung host: its connection stays open) is hidden from
    // /lookup and /nodes after --inactive-producer-timeout, while a live one stays; an nsqd
    // that exits (its connection closes) is dropped at once. Method: one nsqd reaches the
    // lookupd through a relay the test freezes; PINGs every 100 ms, timeout 1 s.
    let lookupd =
        lookupd("127.0.0.1:0", &["--inactive-producer-timeout=1s"], Clock::system()).await;
    let link = Link::to(lookupd.tcp_addr()).await;
    let fast = ["--lookupd-ping-interval=100ms"];
    let hung = nsqd(&[link.addr], &fast).await;
    let live = nsqd(&[lookupd.tcp_addr()], &fast).await;
    let exiting = nsqd(&[lookupd.tcp_addr()], &fast).await;
    for node in [&hung, &live, &exiting] {
        node.http_publish("t", b"x").await;
    }
    let all = [hung.tcp.port(), live.tcp.port(), exiting.tcp.port()];
    wait_for_producers(lookupd.http_addr(), "t", &all).await;

    let started = Instant::now();
    link.freeze.cancel();
    // Its lookupd gone silent, the hung node still takes publishes, new topics included
    // (their REGISTER waits in the peer's queue, then times out).
    hung.http_publish("t", b"y").await;
    hung.http_publish("fresh", b"z").await;
    wait_for_producers(lookupd.http_addr(), "t", &all[1..]).await;
    assert!(started.elapsed() >= Duration::from_millis(900), "hidden before the timeout");
    let (_, nodes) = get_json(lookupd.http_addr(), "/nodes").await;
    let listed: BTreeSet<u64> = nodes["producers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["tcp_port"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, all[1..].iter().map(|&p| u64::from(p)).collect(), "{nodes}");

    exiting.stop().await;
    wait_for_producers(lookupd.http_addr(), "t", &[live.tcp.port()]).await;

    drop(link);
    hung.stop().await;
    live.stop().await;
    lookupd.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nsqd_precreates_the_channels_other_nodes_have() {
    // Goal: a topic new to an nsqd gets the channels the lookupds know of, ephemeral ones
    // excepted, and those channels keep the messages published before any consumer came
    // (NSQ.md §4.3); PUT /config/nsqlookupd_tcp_addresses changes the peers at run time.
    let lookupd = lookupd("127.0.0.1:0", &[], Clock::system()).await;
    let first = nsqd(&[lookupd.tcp_addr()], &[]).await;
    assert_eq!(http(first.http, "POST", "/topic/create?topic=orders", b"").await.0, 200);
    for channel in ["archive", "audit", "tail%23ephemeral"] {
        let target = format!("/channel/create?topic=orders&channel={channel}");
        assert_eq!(http(first.http, "POST", &target, b"").await.0, 200);
    }
    let second = nsqd(&[], &[]).await;
    let (status, body) = http(second.http, "GET", "/config/nsqlookupd_tcp_addresses", b"").await;
    assert_eq!((status, body.as_slice()), (200, &b"[]"[..]));
    let addresses = serde_json::json!([lookupd.tcp_addr().to_string()]).to_string();
    let target = "/config/nsqlookupd_tcp_addresses";
    let (status, body) = http(second.http, "PUT", target, addresses.as_bytes()).await;
    assert_eq!((status, String::from_utf8_lossy(&body)), (200, addresses.clone().into()));
    // Its peer has connected and identified once a topic of its own is listed.
    second.http_publish("probe", b"x").await;
    wait_for_producers(lookupd.http_addr(), "probe", &[second.tcp.port()]).await;

    second.http_publish("orders", b"early").await;
    let channels = eventually("the channels are pre-created", async || {
        let topic = second.engine.get_topic("orders")?;
        let names: Vec<String> = topic.channels().iter().map(|c| c.name().to_owned()).collect();
        (names.len() >= 2).then_some(names)
    })
    .await;
    assert_eq!(channels, ["archive", "audit"]);
    for channel in ["archive", "audit"] {
        let stats = second.channel_stats("orders", channel).unwrap();
        assert_eq!(stats.depth, 1, "{channel} keeps the message published before it");
    }

    first.stop().await;
    second.stop().await;
    lookupd.shutdown().await;
}
