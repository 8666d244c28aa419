//! The meta store in memory, for tests: it keeps what was applied and what was flushed apart, and
//! a crash forgets everything applied since the last flush, or, as sled may, keeps a prefix of the
//! batches applied since ([`MemoryMeta::crash_keeping`]: each batch is atomic, later ones are lost
//! first).

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Change, EntryVisitor, KvBackend, MetaError, Tree};

type Trees = BTreeMap<Tree, BTreeMap<Vec<u8>, Vec<u8>>>;

/// Called before every apply and flush; an error fails that call. Crash-state enumeration counts
/// meta writes in the same sequence as file operations with it
/// ([`crate::storage::SimStorage::external_op`]).
pub type IoHook = Arc<dyn Fn() -> io::Result<()> + Send + Sync>;

/// An in-memory meta store whose flushed state survives [`MemoryMeta::crash`].
#[derive(Default)]
pub struct MemoryMeta {
    state: Mutex<State>,
    hook: Mutex<Option<IoHook>>,
}

impl std::fmt::Debug for MemoryMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryMeta").field("state", &self.state).finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Clone)]
struct State {
    live: Trees,
    flushed: Trees,
    /// Batches applied since the last flush, in order.
    pending: Vec<(Tree, Vec<Change>)>,
    /// A write failed: as sled does, refuse everything until reopened (which loses `pending`).
    failed: bool,
    generation: u64,
    flushes: u64,
    applies: u64,
}

fn apply_batch(trees: &mut Trees, tree: Tree, changes: &[Change]) {
    let entries = trees.entry(tree).or_default();
    for (key, value) in changes {
        match value {
            Some(value) => entries.insert(key.clone(), value.clone()),
            None => entries.remove(key),
        };
    }
}

impl MemoryMeta {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets every change since the last flush, as a crash would.
    pub fn crash(&self) {
        self.crash_keeping(0);
    }

    /// A crash that keeps the first `batches` batches applied since the last flush (sled
    /// recovers a prefix of its writes) and loses the rest.
    pub fn crash_keeping(&self, batches: usize) {
        let mut state = self.state();
        let state = &mut *state;
        let mut kept = state.flushed.clone();
        for (tree, changes) in state.pending.iter().take(batches) {
            apply_batch(&mut kept, *tree, changes);
        }
        state.live = kept.clone();
        state.flushed = kept;
        state.pending.clear();
        state.failed = false;
    }

    /// How many batches were applied since the last flush (what a crash may lose).
    pub fn pending_batches(&self) -> usize {
        self.state().pending.len()
    }

    /// An independent copy of the store's state (no hook): the state one crash point leaves, to
    /// crash in several ways.
    pub fn snapshot(&self) -> MemoryMeta {
        MemoryMeta { state: Mutex::new(self.state().clone()), hook: Mutex::new(None) }
    }

    /// Installs (or removes) the hook called before every apply and flush.
    pub fn set_io_hook(&self, hook: Option<IoHook>) {
        *crate::sync::lock(&self.hook) = hook;
    }

    /// Runs the hook before a write: its error fails the write and, as in sled, every later one
    /// until the store is reopened; a failed store is reopened first, losing what was applied
    /// and not flushed.
    fn before_write(&self) -> io::Result<()> {
        let hook = crate::sync::lock(&self.hook).clone();
        if let Err(error) = hook.map_or(Ok(()), |hook| hook()) {
            self.state().failed = true;
            return Err(error);
        }
        let mut state = self.state();
        if state.failed {
            state.live = state.flushed.clone();
            state.pending.clear();
            state.failed = false;
            state.generation += 1;
        }
        Ok(())
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
        self.before_write()?;
        let mut state = self.state();
        state.applies += 1;
        apply_batch(&mut state.live, tree, &changes);
        state.pending.push((tree, changes));
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        self.before_write()?;
        let mut state = self.state();
        state.flushed = state.live.clone();
        state.pending.clear();
        state.flushes += 1;
        Ok(())
    }

    fn recover(&self) -> io::Result<()> {
        if self.state().failed { self.before_write() } else { Ok(()) }
    }

    fn generation(&self) -> u64 {
        self.state().generation
    }
}
