//! Where replayed messages go: nowhere (`--dry-run`), a data directory (`--into`), or an nsqd
//! over TCP (`--nsqd-tcp-address`, in [`super::nsqd`]).
//!
//! Replayed messages are published as new messages: the destination gives them new offsets and
//! publish times, and a DPUB deliver-at time in the record is not carried over (an archived
//! message was consumed, so its deferral had passed).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use engine::format::FORMAT_MAX_BODY_BYTES;
use engine::{Engine, EngineConfig, EngineError, LogConfig, LogError, Topic};

/// The largest batch in memory, in bytes of the bodies plus 4 per body, whatever the
/// destination.
pub(crate) const BATCH_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// A destination of batches of message bodies.
pub(crate) trait Sink {
    /// Publishes `bodies` (at least one) as one batch; fails without retrying.
    fn publish(&mut self, bodies: &[Bytes]) -> anyhow::Result<()>;
    /// The largest batch, in bytes of the bodies plus 4 per body, that the destination takes.
    fn max_batch_bytes(&self) -> u64 {
        BATCH_BYTES_MAX
    }
    /// Called now and then while nothing is published (filtered stretches, pacing), so that a
    /// connection can show it is alive.
    fn idle(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
    /// Makes everything published durable (where the destination can) and lets go of it.
    fn finish(self: Box<Self>) -> anyhow::Result<()>;
    /// Says where the messages went, for the report.
    fn describe(&self) -> String;
}

/// `--dry-run`: counts only.
#[derive(Debug)]
pub(crate) struct DryRun;

impl Sink for DryRun {
    fn publish(&mut self, _bodies: &[Bytes]) -> anyhow::Result<()> {
        Ok(())
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        Ok(())
    }

    fn describe(&self) -> String {
        "nowhere (dry run)".into()
    }
}

/// `--into DATA_DIR`: the engine opened on a data directory no nsqd holds.
#[derive(Debug)]
pub(crate) struct IntoDataDir {
    dir: PathBuf,
    engine: Engine,
    topic: Arc<Topic>,
}

impl IntoDataDir {
    /// Opens (creating if needed) the data directory `dir` and the topic. Refuses a directory
    /// locked by a running nsqd.
    pub(crate) fn open(dir: &Path, topic: &str) -> anyhow::Result<Self> {
        let config = EngineConfig {
            // Every publish is written before it returns; close() fsyncs.
            mem_queue_size: 0,
            // Archived bodies were accepted once; take any the format allows.
            log: LogConfig { max_body_bytes: FORMAT_MAX_BODY_BYTES, ..LogConfig::default() },
            ..EngineConfig::default()
        };
        let engine = match Engine::open(dir, config) {
            Ok((engine, _)) => engine,
            Err(EngineError::Log(error @ LogError::Locked { .. })) => {
                bail!("{error}: stop that nsqd first, or replay into it with --nsqd-tcp-address")
            }
            Err(error) => {
                return Err(error).with_context(|| format!("cannot open {}", dir.display()));
            }
        };
        let topic = engine.topic(topic).with_context(|| format!("topic {topic:?}"))?;
        Ok(Self { dir: dir.to_path_buf(), engine, topic })
    }
}

impl Sink for IntoDataDir {
    fn publish(&mut self, bodies: &[Bytes]) -> anyhow::Result<()> {
        let bodies: Vec<&[u8]> = bodies.iter().map(|b| &b[..]).collect();
        self.topic
            .publish(&bodies, Duration::ZERO)
            .with_context(|| format!("publishing into {}", self.dir.display()))?;
        Ok(())
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        self.engine.close().with_context(|| format!("closing {}", self.dir.display()))
    }

    fn describe(&self) -> String {
        format!("topic {:?} of data directory {}", self.topic.name(), self.dir.display())
    }
}
