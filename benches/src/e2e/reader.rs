//! The consuming side: N connections, each subscribed to one topic and channel with one RDY
//! count, finishing every message it receives, as NSQ's bench_reader does. FINs for everything
//! taken out of one read are sent in one write.

use std::net::SocketAddr;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::BytesMut;
use protocol::command::Command;

use super::conn::{Conn, FrameRef, is_timeout};
use super::{Latency, Stop, stamp};

/// How often a reader waiting for data looks at the clock and the shared count.
const POLL: Duration = Duration::from_millis(20);

/// What the subscribers do.
#[derive(Debug, Clone)]
pub struct ReaderPlan {
    pub addr: SocketAddr,
    pub topics: Vec<String>,
    pub channels: Vec<String>,
    /// At least one per topic and channel; connection `i` takes pair `i % pairs`.
    pub connections: usize,
    pub rdy: u64,
    pub stop: Stop,
}

/// What the readers share while running.
#[derive(Debug, Default)]
pub struct Shared {
    pub received: AtomicU64,
    pub done: AtomicBool,
}

/// One subscribed connection waiting for the start.
#[derive(Debug)]
pub struct Reader {
    conn: Conn,
}

/// What one reader saw.
#[derive(Debug)]
pub struct ReaderOutcome {
    pub received: u64,
    pub latency: Latency,
}

impl ReaderPlan {
    /// Every (topic, channel) pair.
    pub fn pairs(&self) -> Vec<(&str, &str)> {
        self.topics
            .iter()
            .flat_map(|topic| {
                self.channels.iter().map(move |channel| (topic.as_str(), channel.as_str()))
            })
            .collect()
    }

    /// The number of connections opened: at least one per pair.
    pub fn connection_count(&self) -> usize {
        self.connections.max(self.pairs().len())
    }

    /// Opens and subscribes every connection (before the clock starts, as bench_reader does).
    pub fn connect(&self) -> anyhow::Result<Vec<Reader>> {
        let pairs = self.pairs();
        if pairs.is_empty() || self.rdy == 0 {
            bail!("the topic and channel counts and --rdy must be at least 1");
        }
        (0..self.connection_count())
            .map(|i| {
                let (topic, channel) = pairs[i % pairs.len()];
                let mut conn = Conn::open(self.addr, "reader")?;
                conn.send(Command::Sub { topic, channel })?;
                conn.expect_ok("SUB")?;
                conn.set_read_timeout(POLL)?;
                Ok(Reader { conn })
            })
            .collect()
    }
}

impl Reader {
    /// Consumes until the plan's stop, after `start` is passed.
    pub fn run(
        mut self,
        plan: &ReaderPlan,
        start: &Barrier,
        shared: &Shared,
    ) -> anyhow::Result<ReaderOutcome> {
        let mut latency = Latency::new();
        let mut out = BytesMut::with_capacity(64 << 10);
        let mut received: u64 = 0;
        start.wait();
        let deadline = plan.stop.deadline(Instant::now());
        let target = plan.stop.count();
        self.conn.send(Command::Rdy(plan.rdy)).context("RDY")?;
        while !shared.done.load(Ordering::Relaxed) {
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                break;
            }
            match self.conn.read_more() {
                Ok(true) => {}
                Ok(false) => bail!("nsqd closed the connection"),
                Err(error) if is_timeout(&error) => continue,
                Err(error) => return Err(error).context("reading"),
            }
            let now = stamp::now_ns();
            let mut got: u64 = 0;
            while let Some(frame) = self.conn.next_frame()? {
                match frame {
                    FrameRef::Message { id, body } => {
                        Command::Fin(id).encode(&mut out);
                        got += 1;
                        if let Some(sent) = stamp::read(body) {
                            latency.record(now.saturating_sub(sent));
                        }
                    }
                    FrameRef::Response(data) if data == protocol::HEARTBEAT => {
                        Command::Nop.encode(&mut out);
                    }
                    FrameRef::Response(_) => {}
                    FrameRef::Error(data) => {
                        bail!("nsqd answered {}", String::from_utf8_lossy(data))
                    }
                }
            }
            if !out.is_empty() {
                self.conn.write(&out).context("finishing")?;
                out.clear();
            }
            received += got;
            if let Some(target) = target {
                let total = shared.received.fetch_add(got, Ordering::Relaxed) + got;
                if total >= target {
                    shared.done.store(true, Ordering::Relaxed);
                }
            }
        }
        Ok(ReaderOutcome { received, latency })
    }
}
