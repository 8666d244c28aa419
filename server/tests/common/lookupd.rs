//! Test scaffolding for nsqlookupd: one served in-process on loopback ports with a clock the
//! test moves, and a raw-bytes client for its TCP protocol V1.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use protocol::lookup::{LookupCommand, decode_response};
use server::lookupd::{Clock, Lookupd, LookupdOptions, RunningLookupd};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{HttpReply, http_request, ok_json};

/// Where the test clock starts: 2026-01-01T00:00:00Z, in Unix nanoseconds.
pub const CLOCK_START_NS: i64 = 1_767_225_600_000_000_000;

/// An nsqlookupd on `127.0.0.1:0`.
pub struct TestLookupd {
    running: Option<RunningLookupd>,
    pub clock: Clock,
    pub tcp: SocketAddr,
    pub http: SocketAddr,
}

impl TestLookupd {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts with extra nsqlookupd flags, in NSQ's syntax.
    pub async fn start_with(flags: &[&str]) -> Self {
        let mut args =
            vec!["nsqlookupd", "--tcp-address=127.0.0.1:0", "--http-address=127.0.0.1:0"];
        args.extend_from_slice(flags);
        let options = LookupdOptions::parse_args(args).expect("options");
        let clock = Clock::manual(CLOCK_START_NS);
        let running = Lookupd::start_with_clock(options, clock.clone()).await.expect("start");
        let (tcp, http) = (running.tcp_addr(), running.http_addr());
        Self { running: Some(running), clock, tcp, http }
    }

    /// Moves the registry's clock.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// A connection that has sent the magic.
    pub async fn connect(&self) -> LookupClient {
        let mut client = self.connect_raw().await;
        client.send(protocol::lookup::MAGIC_V1).await;
        client
    }

    /// A connection that has sent nothing yet.
    pub async fn connect_raw(&self) -> LookupClient {
        let stream = TcpStream::connect(self.tcp).await.expect("connect");
        let local_addr = stream.local_addr().expect("local address");
        LookupClient { stream, local_addr, buf: BytesMut::new() }
    }

    /// A connection that has identified as the nsqd at `broadcast_address` with these ports.
    pub async fn nsqd(
        &self,
        broadcast_address: &str,
        tcp_port: u16,
        http_port: u16,
    ) -> LookupClient {
        let mut client = self.connect().await;
        client.identify(&identify_json(broadcast_address, tcp_port, http_port)).await;
        client
    }

    pub async fn http(&self, method: &str, target: &str) -> HttpReply {
        http_request(self.http, method, target, &[], b"").await
    }

    /// A GET answered 200 with a JSON document in the V1 envelope; returns the document.
    pub async fn get_json(&self, target: &str) -> serde_json::Value {
        ok_json(&self.http("GET", target).await)
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }
}

/// nsqd's IDENTIFY body, as it sends it.
pub fn identify_json(broadcast_address: &str, tcp_port: u16, http_port: u16) -> String {
    serde_json::json!({
        "version": "1.3.0",
        "tcp_port": tcp_port,
        "http_port": http_port,
        "hostname": format!("{broadcast_address}.host"),
        "broadcast_address": broadcast_address,
        "topology_zone": "",
        "topology_region": "",
    })
    .to_string()
}

/// A raw V1 connection.
pub struct LookupClient {
    stream: TcpStream,
    /// The client's side of the connection: nsqlookupd's `remote_address` for it.
    pub local_addr: SocketAddr,
    buf: BytesMut,
}

impl LookupClient {
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    pub async fn command(&mut self, command: LookupCommand<'_>) {
        self.send(&command.to_bytes()).await;
    }

    /// Closes the sending side; nsqlookupd then ends the connection.
    pub async fn shutdown_write(&mut self) {
        self.stream.shutdown().await.expect("shutdown");
    }

    /// The next reply, or `None` once nsqlookupd has closed the connection.
    pub async fn next_reply(&mut self) -> Option<Bytes> {
        loop {
            if let Some(reply) = decode_response(&mut self.buf, 1 << 20).expect("reply") {
                return Some(reply);
            }
            if !matches!(self.stream.read_buf(&mut self.buf).await, Ok(n) if n > 0) {
                assert!(self.buf.is_empty(), "closed inside a reply: {:?}", self.buf);
                return None;
            }
        }
    }

    pub async fn reply(&mut self) -> Bytes {
        self.next_reply().await.expect("a reply, not the close")
    }

    pub async fn expect_ok(&mut self) {
        assert_eq!(self.reply().await, "OK");
    }

    /// The connection closes with nothing more said. Once this returns, nsqlookupd has
    /// removed the connection's peer from its registry.
    pub async fn expect_closed(&mut self) {
        assert_eq!(self.next_reply().await, None);
    }

    /// An error reply with exactly `text`, then the close.
    pub async fn expect_fatal(&mut self, text: &str) {
        assert_eq!(String::from_utf8_lossy(&self.reply().await), text);
        self.expect_closed().await;
    }

    /// IDENTIFY; returns nsqlookupd's answer.
    pub async fn identify(&mut self, json: &str) -> serde_json::Value {
        self.command(LookupCommand::Identify(json.as_bytes())).await;
        let reply = self.reply().await;
        serde_json::from_slice(&reply).unwrap_or_else(|e| panic!("{e}: {reply:?}"))
    }

    pub async fn register(&mut self, topic: &str, channel: Option<&str>) {
        self.command(LookupCommand::Register { topic, channel }).await;
        self.expect_ok().await;
    }

    pub async fn unregister(&mut self, topic: &str, channel: Option<&str>) {
        self.command(LookupCommand::Unregister { topic, channel }).await;
        self.expect_ok().await;
    }

    pub async fn ping(&mut self) {
        self.command(LookupCommand::Ping).await;
        self.expect_ok().await;
    }

    /// Closes the connection and waits until nsqlookupd has let the peer go.
    pub async fn close(mut self) {
        self.shutdown_write().await;
        self.expect_closed().await;
    }
}
