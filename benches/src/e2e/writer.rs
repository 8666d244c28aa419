//! The publishing side: N connections, each sending MPUB batches (or pipelined PUBs) and waiting
//! for the answer before the next, as NSQ's bench_writer does.

use std::net::SocketAddr;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::BufMut as _;

use super::conn::Conn;
use super::{Stop, stamp};

/// How messages are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PubCommand {
    /// One MPUB of `--batch-size` messages per round trip (NSQ's bench_writer).
    Mpub,
    /// `--batch-size` PUB commands written at once, their answers read after.
    Pub,
}

/// What the publishers do.
#[derive(Debug, Clone)]
pub struct WriterPlan {
    pub addr: SocketAddr,
    /// Connection `i` publishes to `topics[i % topics.len()]`.
    pub topics: Vec<String>,
    pub connections: usize,
    pub size: usize,
    pub batch_size: usize,
    pub command: PubCommand,
    /// Messages per second over all connections; `None` publishes as fast as nsqd answers.
    pub rate: Option<u64>,
    pub stop: Stop,
}

/// One publishing connection, connected and identified, waiting for the start.
#[derive(Debug)]
pub struct Writer {
    conn: Conn,
    topic: String,
    /// This connection's share of a fixed message count.
    quota: Option<u64>,
    /// Seconds between batches at this connection's share of the rate.
    interval: Option<f64>,
}

impl WriterPlan {
    /// Opens every connection (before the clock starts, as bench_writer does).
    pub fn connect(&self) -> anyhow::Result<Vec<Writer>> {
        if self.batch_size == 0 || self.connections == 0 || self.topics.is_empty() {
            bail!("--batch-size, --connections and the topic count must be at least 1");
        }
        let quotas = self.stop.split(self.connections);
        (0..self.connections)
            .map(|i| {
                let conn = Conn::open(self.addr, "writer")?;
                let interval = self.rate.map(|rate| {
                    let per_connection = rate as f64 / self.connections as f64;
                    self.batch_size as f64 / per_connection.max(f64::MIN_POSITIVE)
                });
                Ok(Writer {
                    conn,
                    topic: self.topics[i % self.topics.len()].clone(),
                    quota: quotas[i],
                    interval,
                })
            })
            .collect()
    }
}

/// The bytes of one batch, with where each body starts so it can be stamped before sending.
struct Batch {
    bytes: Vec<u8>,
    bodies: Vec<usize>,
    /// Answers to read after sending.
    answers: usize,
    messages: u64,
}

impl Batch {
    fn new(command: PubCommand, topic: &str, size: usize, count: usize) -> Batch {
        let mut bytes = Vec::new();
        let mut bodies = Vec::with_capacity(count);
        let size32 = u32::try_from(size).unwrap_or(u32::MAX);
        match command {
            PubCommand::Mpub => {
                bytes.extend_from_slice(format!("MPUB {topic}\n").as_bytes());
                let total = 4 + count * (4 + size);
                bytes.put_u32(u32::try_from(total).unwrap_or(u32::MAX));
                bytes.put_u32(u32::try_from(count).unwrap_or(u32::MAX));
                for _ in 0..count {
                    bytes.put_u32(size32);
                    bodies.push(bytes.len());
                    bytes.resize(bytes.len() + size, 0);
                }
            }
            PubCommand::Pub => {
                for _ in 0..count {
                    bytes.extend_from_slice(format!("PUB {topic}\n").as_bytes());
                    bytes.put_u32(size32);
                    bodies.push(bytes.len());
                    bytes.resize(bytes.len() + size, 0);
                }
            }
        }
        let answers = if command == PubCommand::Mpub { 1 } else { count };
        Batch { bytes, bodies, answers, messages: count as u64 }
    }

    /// Writes the send time into every body (bodies shorter than a stamp stay zero).
    fn stamp(&mut self, size: usize) {
        if size < stamp::LEN {
            return;
        }
        let now = stamp::now();
        for &at in &self.bodies {
            self.bytes[at..at + stamp::LEN].copy_from_slice(&now);
        }
    }
}

impl Writer {
    /// Publishes until the plan's stop, after `start` is passed. Returns the messages published
    /// and acknowledged.
    pub fn run(mut self, plan: &WriterPlan, start: &Barrier) -> anyhow::Result<u64> {
        let mut batch = Batch::new(plan.command, &self.topic, plan.size, plan.batch_size);
        start.wait();
        let began = Instant::now();
        let deadline = plan.stop.deadline(began);
        let mut sent: u64 = 0;
        let mut batches: u64 = 0;
        loop {
            if let Some(quota) = self.quota {
                let left = quota - sent;
                if left == 0 {
                    break;
                }
                if left < batch.messages {
                    let left = usize::try_from(left).unwrap_or(plan.batch_size);
                    batch = Batch::new(plan.command, &self.topic, plan.size, left);
                }
            }
            if let Some(interval) = self.interval {
                let due = began + Duration::from_secs_f64(interval * batches as f64);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
            batch.stamp(plan.size);
            self.conn.write(&batch.bytes).context("publishing")?;
            for _ in 0..batch.answers {
                self.conn.expect_ok("publishing")?;
            }
            sent += batch.messages;
            batches += 1;
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                break;
            }
        }
        Ok(sent)
    }
}
