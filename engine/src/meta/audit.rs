//! Reading every entry of the store, damaged ones included, for `nsq-fsck`.
//!
//! The engine's own reads stop at the first damaged topic value; an audit never stops: each entry
//! is decoded on its own and a failure is kept beside the key it belongs to.

use std::collections::BTreeMap;

use super::{MetaError, MetaStore, Tree, codec};
use crate::meta::{ChannelRecord, DeferredRecord, TopicRecord};

/// The trees of the store, named for reports and for removing an entry.
pub type MetaTree = Tree;

/// Everything in the store.
#[derive(Debug, Default)]
pub struct MetaAudit {
    /// Topic name to its record, or why the value could not be decoded.
    pub topics: BTreeMap<String, Result<TopicRecord, String>>,
    /// `(topic, channel)` to its checkpoint, or why the value could not be decoded.
    pub channels: BTreeMap<(String, String), Result<ChannelRecord, String>>,
    /// `(topic, channel)` to its deferred entries.
    pub deferred: BTreeMap<(String, String), DeferredEntries>,
    /// Entries whose key is not a valid name (or name and offset): never loaded by the engine.
    pub bad_keys: Vec<BadKey>,
}

/// The deferred entries of one channel.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeferredEntries {
    pub entries: BTreeMap<u64, DeferredRecord>,
    /// Offsets whose value could not be decoded, with the reason.
    pub damaged: BTreeMap<u64, String>,
}

/// An entry whose key the engine cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadKey {
    pub tree: MetaTree,
    pub key: Vec<u8>,
    pub reason: String,
}

impl Tree {
    /// The tree's name in the store and in reports.
    pub fn label(self) -> &'static str {
        self.name()
    }
}

impl MetaStore {
    /// Reads every entry of every tree, damaged ones included.
    pub fn audit(&self) -> Result<MetaAudit, MetaError> {
        let mut audit = MetaAudit::default();
        let mut bad = Vec::new();
        self.backend.for_each_prefix(Tree::Topics, b"", &mut |key, value| {
            match names(key, 1) {
                Some(names) => {
                    let record = codec::decode(Tree::Topics, key, value).map_err(reason);
                    audit.topics.insert(names[0].clone(), record);
                }
                None => bad.push(bad_key(Tree::Topics, key, "not a topic name")),
            }
            Ok(())
        })?;
        self.backend.for_each_prefix(Tree::Channels, b"", &mut |key, value| {
            match names(key, 2) {
                Some(mut names) => {
                    let record = codec::decode(Tree::Channels, key, value).map_err(reason);
                    let channel = names.pop().unwrap_or_default();
                    let topic = names.pop().unwrap_or_default();
                    audit.channels.insert((topic, channel), record);
                }
                None => bad.push(bad_key(Tree::Channels, key, "not a topic and channel name")),
            }
            Ok(())
        })?;
        self.backend.for_each_prefix(Tree::Deferred, b"", &mut |key, value| {
            let split = key.len().checked_sub(9).filter(|&at| key[at] == 0);
            let parsed = split.and_then(|at| {
                let offset = u64::from_le_bytes(key[at + 1..].try_into().ok()?);
                Some((names(&key[..at], 2)?, offset))
            });
            match parsed {
                Some((mut names, offset)) => {
                    let channel = names.pop().unwrap_or_default();
                    let topic = names.pop().unwrap_or_default();
                    let entries = audit.deferred.entry((topic, channel)).or_default();
                    match codec::decode::<DeferredRecord>(Tree::Deferred, key, value) {
                        Ok(record) => {
                            entries.entries.insert(offset, record);
                        }
                        Err(error) => {
                            entries.damaged.insert(offset, reason(error));
                        }
                    }
                }
                None => bad.push(bad_key(Tree::Deferred, key, "not a channel key and offset")),
            }
            Ok(())
        })?;
        audit.bad_keys = bad;
        Ok(audit)
    }

    /// Removes one entry, whatever its key (repairing a store).
    pub fn remove_entry(&self, tree: MetaTree, key: &[u8]) -> Result<(), MetaError> {
        let change = (key.to_vec(), None);
        self.backend.apply(tree, vec![change]).map_err(|e| MetaError::io("remove entry", e))
    }

    /// Writes one raw value under a key, bypassing the encoding (tests that damage a store).
    pub fn put_raw(&self, tree: MetaTree, key: &[u8], value: &[u8]) -> Result<(), MetaError> {
        let change = (key.to_vec(), Some(value.to_vec()));
        self.backend.apply(tree, vec![change]).map_err(|e| MetaError::io("put raw", e))
    }
}

/// `count` valid names joined by NUL bytes.
fn names(key: &[u8], count: usize) -> Option<Vec<String>> {
    let parts: Vec<&[u8]> = key.split(|&b| b == 0).collect();
    if parts.len() != count {
        return None;
    }
    parts
        .into_iter()
        .map(|part| {
            let name = std::str::from_utf8(part).ok()?;
            crate::names::is_valid_name(name).then(|| name.to_owned())
        })
        .collect()
}

fn reason(error: MetaError) -> String {
    match error {
        MetaError::Corrupt { reason, .. } => reason,
        other => other.to_string(),
    }
}

fn bad_key(tree: Tree, key: &[u8], reason: &str) -> BadKey {
    BadKey { tree, key: key.to_vec(), reason: reason.to_owned() }
}
