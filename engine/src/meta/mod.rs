//! Where channel progress is checkpointed: the only module that knows about sled.
//!
//! # What is kept, and where
//! Three trees, keys made of names joined by a NUL byte (which no NSQ name may contain):
//! - `topics`: `topic` → [`TopicRecord`] (pause state, where a first channel starts).
//! - `channels`: `topic NUL channel` → [`ChannelRecord`] (cursor, floor, finished ranges, attempts).
//! - `deferred`: `topic NUL channel NUL offset` → [`DeferredRecord`], one entry per deferred
//!   message, so that a channel with 10^6 deferred messages changes a few entries per checkpoint
//!   instead of rewriting one huge value.
//!
//! Values are encoded by [`codec`]: a version byte, a CRC-32C and an rkyv archive validated on read.
//!
//! # How much it is trusted
//! sled is a record of progress, never the only copy of what matters (DESIGN.md §3.3): message
//! bodies and deliver-at times live in the log; the topic and channel list is also in a catalog
//! file beside each topic's segments. Losing sled costs redeliveries, never messages. Writes
//! become durable at [`MetaStore::flush`], which the engine calls only after syncing the log
//! records a checkpoint refers to.
//!
//! [`MemoryMeta`] is the same store in memory, with a crash that forgets everything since the
//! last flush: the model tests crash it together with [`crate::storage::SimStorage`].

mod audit;
pub mod codec;
mod memory;
mod sled_store;

use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use audit::{BadKey, DeferredEntries, MetaAudit, MetaTree};
pub use codec::{ChannelRecord, DeferredRecord, TopicRecord};
pub use memory::{IoHook, MemoryMeta};

use crate::names::NAME_MAX_BYTES;

/// The trees of the store (FORMAT.md §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tree {
    /// Topic name to [`TopicRecord`].
    Topics,
    /// `topic NUL channel` to [`ChannelRecord`].
    Channels,
    /// `topic NUL channel NUL offset` to [`DeferredRecord`].
    Deferred,
}

impl Tree {
    const ALL: [Tree; 3] = [Tree::Topics, Tree::Channels, Tree::Deferred];

    fn name(self) -> &'static str {
        match self {
            Tree::Topics => "topics",
            Tree::Channels => "channels",
            Tree::Deferred => "deferred",
        }
    }
}

/// Called with each key and value of a scan.
pub(crate) type EntryVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), MetaError> + 'a;

/// One change in a batch: a key and its new value, or `None` to remove it.
pub(crate) type Change = (Vec<u8>, Option<Vec<u8>>);

/// A key-value store with named trees: what the meta store needs of sled.
pub(crate) trait KvBackend: Send + Sync + Debug {
    /// Calls `f` with every entry whose key starts with `prefix`, in key order.
    fn for_each_prefix(
        &self,
        tree: Tree,
        prefix: &[u8],
        f: &mut EntryVisitor<'_>,
    ) -> Result<(), MetaError>;
    /// Applies `changes` to `tree` atomically.
    fn apply(&self, tree: Tree, changes: Vec<Change>) -> io::Result<()>;
    /// Makes every change applied so far durable.
    fn flush(&self) -> io::Result<()>;
    /// Reopens the store if a write failed in a way that refuses every later one (sled after an
    /// I/O error); a no-op otherwise.
    fn recover(&self) -> io::Result<()> {
        Ok(())
    }
    /// How many times the store was reopened: when it moves, changes applied before and not
    /// flushed may be gone, and the owner writes its state again.
    fn generation(&self) -> u64 {
        0
    }
}

/// What went wrong with the metadata store.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("cannot open the metadata store {path}: {source}. {}", open_advice(.source))]
    Open { path: PathBuf, source: io::Error },
    #[error("metadata store: {op} failed: {source}")]
    Io { op: &'static str, source: io::Error },
    #[error("metadata store: damaged value for key {key:?} in tree {tree}: {reason}")]
    Corrupt { tree: &'static str, key: String, reason: String },
}

fn open_advice(source: &io::Error) -> &'static str {
    if crate::storage::is_disk_full(source) {
        "The disk is full: free space on it and start again"
    } else {
        "The messages are safe in the topic logs; `nsq-fsck rebuild-meta` recreates the store \
         from the catalogs beside them"
    }
}

impl MetaError {
    fn io(op: &'static str, source: io::Error) -> Self {
        Self::Io { op, source }
    }
}

/// A channel's name and its checkpoint, or why the checkpoint could not be read.
pub type ChannelEntry = (String, Result<ChannelRecord, MetaError>);

/// The metadata and checkpoint store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct MetaStore {
    backend: Arc<dyn KvBackend>,
}

/// Memory sled may use for its page cache.
pub const SLED_CACHE_BYTES: u64 = 8 * 1024 * 1024;

impl MetaStore {
    /// Opens (creating if needed) the sled store in directory `path`.
    pub fn open_sled(path: &Path) -> Result<Self, MetaError> {
        let backend = sled_store::SledBackend::open(path)?;
        Ok(Self { backend: Arc::new(backend) })
    }

    /// A store kept in `memory`, which outlives the engines that use it.
    pub fn in_memory(memory: Arc<MemoryMeta>) -> Self {
        Self { backend: memory }
    }

    pub fn topics(&self) -> Result<Vec<(String, TopicRecord)>, MetaError> {
        let mut topics = Vec::new();
        self.backend.for_each_prefix(Tree::Topics, b"", &mut |key, value| {
            let name = key_name(Tree::Topics, key)?;
            topics.push((name, codec::decode(Tree::Topics, key, value)?));
            Ok(())
        })?;
        Ok(topics)
    }

    /// The channels of `topic`, each with its checkpoint or the reason it could not be read.
    pub fn channels(&self, topic: &str) -> Result<Vec<ChannelEntry>, MetaError> {
        let prefix = child_prefix(&[topic]);
        let mut channels = Vec::new();
        self.backend.for_each_prefix(Tree::Channels, &prefix, &mut |key, value| {
            let name = key_name(Tree::Channels, &key[prefix.len()..])?;
            channels.push((name, codec::decode(Tree::Channels, key, value)));
            Ok(())
        })?;
        Ok(channels)
    }

    /// Calls `f` with each deferred entry of a channel.
    pub fn for_each_deferred(
        &self,
        topic: &str,
        channel: &str,
        f: &mut dyn FnMut(u64, DeferredRecord),
    ) -> Result<(), MetaError> {
        let prefix = child_prefix(&[topic, channel]);
        self.backend.for_each_prefix(Tree::Deferred, &prefix, &mut |key, value| {
            let offset = <[u8; 8]>::try_from(&key[prefix.len()..])
                .map(u64::from_le_bytes)
                .map_err(|_| corrupt(Tree::Deferred, key, "key does not end in an offset"))?;
            match codec::decode(Tree::Deferred, key, value) {
                Ok(entry) => f(offset, entry),
                // The record is in the log; without its due time it is simply due now.
                Err(error) => tracing::warn!(%error, "damaged deferred entry ignored"),
            }
            Ok(())
        })
    }

    pub fn put_topic(&self, topic: &str, record: &TopicRecord) -> Result<(), MetaError> {
        let value = codec::encode(record)?;
        let change = (topic.as_bytes().to_vec(), Some(value));
        self.backend.apply(Tree::Topics, vec![change]).map_err(|e| MetaError::io("put topic", e))
    }

    pub fn put_channel(
        &self,
        topic: &str,
        channel: &str,
        record: &ChannelRecord,
    ) -> Result<(), MetaError> {
        let value = codec::encode(record)?;
        let change = (key(&[topic, channel]), Some(value));
        self.backend
            .apply(Tree::Channels, vec![change])
            .map_err(|e| MetaError::io("put channel", e))
    }

    /// Writes deferred entries (`Some`) and removes them (`None`).
    pub fn update_deferred(
        &self,
        topic: &str,
        channel: &str,
        changes: impl IntoIterator<Item = (u64, Option<DeferredRecord>)>,
    ) -> Result<(), MetaError> {
        let prefix = child_prefix(&[topic, channel]);
        let mut batch = Vec::new();
        for (offset, record) in changes {
            let mut key = prefix.clone();
            key.extend_from_slice(&offset.to_le_bytes());
            let value = record.map(|r| codec::encode(&r)).transpose()?;
            batch.push((key, value));
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.backend.apply(Tree::Deferred, batch).map_err(|e| MetaError::io("put deferred", e))
    }

    /// Removes a channel and its deferred entries.
    pub fn remove_channel(&self, topic: &str, channel: &str) -> Result<(), MetaError> {
        self.remove_deferred(&child_prefix(&[topic, channel]))?;
        let change = (key(&[topic, channel]), None);
        self.backend
            .apply(Tree::Channels, vec![change])
            .map_err(|e| MetaError::io("remove channel", e))
    }

    /// Removes every deferred entry of a channel.
    pub fn clear_deferred(&self, topic: &str, channel: &str) -> Result<(), MetaError> {
        self.remove_deferred(&child_prefix(&[topic, channel]))
    }

    /// Removes a topic with its channels and their deferred entries.
    pub fn remove_topic(&self, topic: &str) -> Result<(), MetaError> {
        let prefix = child_prefix(&[topic]);
        self.remove_deferred(&prefix)?;
        let mut channels = Vec::new();
        self.backend.for_each_prefix(Tree::Channels, &prefix, &mut |key, _| {
            channels.push((key.to_vec(), None));
            Ok(())
        })?;
        self.backend.apply(Tree::Channels, channels).map_err(|e| MetaError::io("remove", e))?;
        let change = (topic.as_bytes().to_vec(), None);
        self.backend.apply(Tree::Topics, vec![change]).map_err(|e| MetaError::io("remove", e))
    }

    /// Makes every change so far durable.
    pub fn flush(&self) -> Result<(), MetaError> {
        self.backend.flush().map_err(|e| MetaError::io("flush", e))
    }

    /// Reopens the store if an I/O error left it refusing writes (sled keeps its first I/O error
    /// until reopened). Writes and flushes try this themselves; a checkpoint tries it first.
    pub fn recover(&self) -> Result<(), MetaError> {
        self.backend.recover().map_err(|e| MetaError::io("reopen", e))
    }

    /// Moves when the store was reopened after an error: changes applied but not flushed before
    /// it may be gone, so the engine writes its whole state again.
    pub fn generation(&self) -> u64 {
        self.backend.generation()
    }

    fn remove_deferred(&self, prefix: &[u8]) -> Result<(), MetaError> {
        let mut keys = Vec::new();
        self.backend.for_each_prefix(Tree::Deferred, prefix, &mut |key, _| {
            keys.push((key.to_vec(), None));
            Ok(())
        })?;
        self.backend.apply(Tree::Deferred, keys).map_err(|e| MetaError::io("remove deferred", e))
    }
}

/// `a NUL b NUL ...`: the key of a topic's channel.
fn key(names: &[&str]) -> Vec<u8> {
    let mut key = Vec::with_capacity(names.len() * (NAME_MAX_BYTES + 1));
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            key.push(0);
        }
        key.extend_from_slice(name.as_bytes());
    }
    key
}

/// The prefix of every key below `names`: `a NUL b NUL`.
fn child_prefix(names: &[&str]) -> Vec<u8> {
    let mut prefix = key(names);
    prefix.push(0);
    prefix
}

fn key_name(tree: Tree, bytes: &[u8]) -> Result<String, MetaError> {
    match std::str::from_utf8(bytes) {
        Ok(name) if crate::names::is_valid_name(name) => Ok(name.to_owned()),
        _ => Err(corrupt(tree, bytes, "key is not a valid topic or channel name")),
    }
}

fn corrupt(tree: Tree, key: &[u8], reason: impl Into<String>) -> MetaError {
    MetaError::Corrupt {
        tree: tree.name(),
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.into(),
    }
}
