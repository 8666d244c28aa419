//! Shared scaffolding: our nsqd served in-process on loopback ports over a real engine in a
//! temporary data directory, as a third-party client would meet it; with TLS on, over
//! certificates made for the run ([`pki`]); and what `/stats` says of the upgrades its clients
//! negotiated ([`upgrades`]).
#![allow(dead_code, unreachable_pub)]

pub mod pki;
pub mod python;
pub mod upgrades;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::Engine;
use engine::stats::ChannelStats;
use server::logging::{LogControl, LogLevel};
use server::{Nsqd, Options, RunningNsqd};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use pki::Pki;
use upgrades::{Clients, Features};

/// How long any single wait in these tests may take before it counts as a failure.
pub const WAIT: Duration = Duration::from_secs(30);

/// An nsqd on `127.0.0.1:0` with its engine on a fresh temporary directory.
pub struct InteropServer {
    running: Option<RunningNsqd>,
    pub engine: Arc<Engine>,
    pub tcp: SocketAddr,
    pub http: SocketAddr,
    /// The certificates the server presents, when it was started with TLS.
    pub pki: Option<Pki>,
    // Dropped last: the engine's files live here.
    _data: tempfile::TempDir,
}

impl InteropServer {
    pub async fn start() -> Self {
        Self::start_with(&[] as &[&str]).await
    }

    /// A server that can grant what `features` asks for: with TLS, over a fresh [`Pki`].
    /// Snappy and DEFLATE are on by default, as in nsqd.
    pub async fn start_with_features(features: Features) -> Self {
        if !features.tls {
            return Self::start().await;
        }
        let pki = Pki::new();
        let mut server = Self::start_with(&pki.server_flags()).await;
        server.pki = Some(pki);
        server
    }

    /// A server with these flags added to the loopback-only defaults. A flag that binds a
    /// listener must give a loopback address (`--https-address=127.0.0.1:0` with TLS).
    pub async fn start_with(extra: &[impl AsRef<str>]) -> Self {
        let data = tempfile::tempdir().expect("tempdir");
        let data_path = format!("--data-path={}", data.path().display());
        let mut args = vec![
            "nsqd",
            "--tcp-address=127.0.0.1:0",
            "--http-address=127.0.0.1:0",
            "--mem-queue-size=0",
            &data_path,
        ];
        args.extend(extra.iter().map(AsRef::as_ref));
        let options = Options::parse_args(args).expect("options");
        let (engine, _report) =
            Engine::open(data.path(), options.engine_config()).expect("open engine");
        engine.start_background().expect("engine background");
        let engine = Arc::new(engine);
        let running = Nsqd::start(options, Arc::clone(&engine), LogControl::fixed(LogLevel::Info))
            .await
            .expect("start nsqd");
        let tcp = running.tcp_addr();
        let http = running.http_addr().expect("http address");
        if let Some(https) = running.https_addr() {
            assert!(https.ip().is_loopback(), "HTTPS listens on {https}: pass --https-address");
        }
        Self { running: Some(running), engine, tcp, http, pki: None, _data: data }
    }

    /// `GET /stats?format=json`.
    pub async fn stats(&self) -> serde_json::Value {
        let (status, body) = http(self.http, "GET", "/stats?format=json", b"").await;
        assert_eq!(status, 200, "/stats answered {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).expect("/stats is JSON")
    }

    /// `POST /pub`: one message, published over HTTP.
    pub async fn http_publish(&self, topic: &str, body: &[u8]) {
        let (status, reply) = http(self.http, "POST", &format!("/pub?topic={topic}"), body).await;
        assert_eq!((status, reply.as_slice()), (200, &b"OK"[..]), "/pub of {} bytes", body.len());
    }

    /// The upgrades `/stats` shows for the channel's consumers and for the publishers.
    pub async fn clients(&self, topic: &str, channel: &str) -> Clients {
        Clients::from_stats(&self.stats().await, topic, channel)
    }

    /// The channel's counters, or `None` while the topic or channel does not exist.
    pub fn channel_stats(&self, topic: &str, channel: &str) -> Option<ChannelStats> {
        Some(self.engine.get_topic(topic)?.get_channel(channel)?.stats())
    }

    /// Waits (up to [`WAIT`]) until the channel's counters satisfy `done`, and returns them.
    /// For what a client cannot acknowledge: FIN has no reply, so only the server's counters
    /// show that it arrived. Panics with the last counters seen on timeout.
    pub async fn wait_for_channel(
        &self,
        topic: &str,
        channel: &str,
        done: impl Fn(&ChannelStats) -> bool,
    ) -> ChannelStats {
        let deadline = Instant::now() + WAIT;
        loop {
            let stats = self.channel_stats(topic, channel);
            if let Some(stats) = stats.as_ref().filter(|s| done(s)) {
                return stats.clone();
            }
            assert!(
                Instant::now() < deadline,
                "channel {topic}/{channel} never got there: {stats:?}"
            );
            // Paces the polling of a condition checked above; not a synchronization by itself.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await.expect("shutdown");
        }
    }
}

/// A plain HTTP/1.0 request to a loopback address, within [`WAIT`]: the status and the body.
pub async fn http(addr: SocketAddr, method: &str, target: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let head = format!(
            "{method} {target} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        std::io::Result::Ok(response)
    };
    let response = tokio::time::timeout(WAIT, exchange)
        .await
        .expect("no HTTP response in time")
        .expect("HTTP exchange");
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("HTTP header end");
    let head = String::from_utf8_lossy(&response[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {head:?}"));
    (status, response[split + 4..].to_vec())
}
