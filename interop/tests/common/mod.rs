//! Shared scaffolding: our nsqd served in-process on loopback ports over a real engine in a
//! temporary data directory, as a third-party client would meet it.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::Engine;
use engine::stats::ChannelStats;
use server::logging::{LogControl, LogLevel};
use server::{Nsqd, Options, RunningNsqd};

/// How long any single wait in these tests may take before it counts as a failure.
pub const WAIT: Duration = Duration::from_secs(30);

/// An nsqd on `127.0.0.1:0` with its engine on a fresh temporary directory.
pub struct InteropServer {
    running: Option<RunningNsqd>,
    pub engine: Arc<Engine>,
    pub tcp: SocketAddr,
    pub http: SocketAddr,
    // Dropped last: the engine's files live here.
    _data: tempfile::TempDir,
}

impl InteropServer {
    pub async fn start() -> Self {
        let data = tempfile::tempdir().expect("tempdir");
        let data_path = format!("--data-path={}", data.path().display());
        let args = [
            "nsqd",
            "--tcp-address=127.0.0.1:0",
            "--http-address=127.0.0.1:0",
            "--mem-queue-size=0",
            &data_path,
        ];
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
        Self { running: Some(running), engine, tcp, http, _data: data }
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
