//! The meta store in memory, for tests: it keeps what was applied and what was flushed apart, and
//! a crash forgets everything applied since the last flush.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Mutex, MutexGuard};

use super::{Change, EntryVisitor, KvBackend, MetaError, Tree};

type Trees = BTreeMap<Tree, BTreeMap<Vec<u8>, Vec<u8>>>;

/// An in-memory meta store whose flushed state survives [`MemoryMeta::crash`].
#[derive(Debug, Default)]
pub struct MemoryMeta {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    live: Trees,
    flushed: Trees,
    flushes: u64,
    applies: u64,
}

impl MemoryMeta {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets every change since the last flush, as a crash would.
    pub fn crash(&self) {
        let mut state = self.state();
        state.live = state.flushed.clone();
    }

    /// Flips a bit in the last byte of every value of a tree (`topics`, `channels` or
    /// `deferred`), live and flushed: media damage, for tests of what the engine does with it.
    pub fn damage_values(&self, tree: &str) {
        let Some(tree) = Tree::ALL.into_iter().find(|t| t.name() == tree) else {
            return;
        };
        let mut state = self.state();
        let state = &mut *state;
        for trees in [&mut state.live, &mut state.flushed] {
            for value in trees.entry(tree).or_default().values_mut() {
                if let Some(last) = value.last_mut() {
                    *last ^= 1;
                }
            }
        }
    }

    /// How many batches of changes were applied.
    pub fn applies(&self) -> u64 {
        self.state().applies
    }

    /// How many times the store was flushed.
    pub fn flushes(&self) -> u64 {
        self.state().flushes
    }

    /// Number of entries in a tree (live), by tree name: `topics`, `channels` or `deferred`.
    pub fn len(&self, tree: &str) -> usize {
        let state = self.state();
        Tree::ALL
            .iter()
            .find(|t| t.name() == tree)
            .and_then(|t| state.live.get(t))
            .map_or(0, BTreeMap::len)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }
}

impl KvBackend for MemoryMeta {
    fn for_each_prefix(
        &self,
        tree: Tree,
        prefix: &[u8],
        f: &mut EntryVisitor<'_>,
    ) -> Result<(), MetaError> {
        let entries: Vec<(Vec<u8>, Vec<u8>)> = self
            .state()
            .live
            .get(&tree)
            .map(|t| {
                t.range(prefix.to_vec()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for (key, value) in entries {
            f(&key, &value)?;
        }
        Ok(())
    }

    fn apply(&self, tree: Tree, changes: Vec<Change>) -> io::Result<()> {
        let mut state = self.state();
        state.applies += 1;
        let entries = state.live.entry(tree).or_default();
        for (key, value) in changes {
            match value {
                Some(value) => entries.insert(key, value),
                None => entries.remove(&key),
            };
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        let mut state = self.state();
        state.flushed = state.live.clone();
        state.flushes += 1;
        Ok(())
    }
}
