//! The sled backend. sled 0.34 is pinned; see the module documentation of `meta` for why it is
//! trusted only with progress, never with data.

use std::io;
use std::path::Path;

use super::{Change, EntryVisitor, KvBackend, MetaError, SLED_CACHE_BYTES, Tree};

#[derive(Debug)]
pub(super) struct SledBackend {
    db: sled::Db,
    trees: [sled::Tree; 3],
}

fn io_error(error: sled::Error) -> io::Error {
    match error {
        sled::Error::Io(error) => error,
        other => io::Error::other(other.to_string()),
    }
}

impl SledBackend {
    pub(super) fn open(path: &Path) -> Result<Self, MetaError> {
        let open_error = |error: sled::Error| MetaError::Open {
            path: path.to_path_buf(),
            source: io_error(error),
        };
        // No background flushing: durability points are the engine's explicit flushes, made
        // after the log records a checkpoint refers to are synced.
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(SLED_CACHE_BYTES)
            .flush_every_ms(None)
            .open()
            .map_err(open_error)?;
        let open_tree = |tree: Tree| db.open_tree(tree.name()).map_err(open_error);
        let trees = [open_tree(Tree::ALL[0])?, open_tree(Tree::ALL[1])?, open_tree(Tree::ALL[2])?];
        Ok(Self { db, trees })
    }

    fn tree(&self, tree: Tree) -> &sled::Tree {
        &self.trees[tree as usize]
    }
}

impl KvBackend for SledBackend {
    fn for_each_prefix(
        &self,
        tree: Tree,
        prefix: &[u8],
        f: &mut EntryVisitor<'_>,
    ) -> Result<(), MetaError> {
        for entry in self.tree(tree).scan_prefix(prefix) {
            let (key, value) = entry.map_err(|e| MetaError::io("scan", io_error(e)))?;
            f(&key, &value)?;
        }
        Ok(())
    }

    fn apply(&self, tree: Tree, changes: Vec<Change>) -> io::Result<()> {
        let mut batch = sled::Batch::default();
        for (key, value) in changes {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        self.tree(tree).apply_batch(batch).map_err(io_error)
    }

    fn flush(&self) -> io::Result<()> {
        self.db.flush().map(|_| ()).map_err(io_error)
    }
}
