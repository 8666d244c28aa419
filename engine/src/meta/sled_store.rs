//! The sled backend. sled 0.34 is pinned; see the module documentation of `meta` for why it is
//! trusted only with progress, never with data.
//!
//! # After an I/O error
//! sled keeps the first I/O error it meets (ENOSPC, EIO) and fails every later write and flush
//! with it until the database is opened again. So an error from a write or a flush marks the
//! backend failed, and the next call reopens the database first (dropping every handle of the
//! old one). The reopened database holds what was flushed; what was applied since may be gone,
//! so the backend's [`KvBackend::generation`] moves on, and the engine rewrites its whole state
//! at the next checkpoint. A reopen that fails (the disk still full, or the old handles not yet
//! released) is tried again at the next call.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use super::{Change, EntryVisitor, KvBackend, MetaError, SLED_CACHE_BYTES, Tree};

#[derive(Debug)]
pub(super) struct SledBackend {
    path: PathBuf,
    /// `None` between dropping a failed database and opening it again.
    db: RwLock<Option<Open>>,
    /// A write or flush failed with an I/O error: sled refuses everything until reopened.
    failed: AtomicBool,
    /// Reopens so far.
    generation: AtomicU64,
}

#[derive(Debug)]
struct Open {
    db: sled::Db,
    trees: [sled::Tree; 3],
}

fn io_error(error: sled::Error) -> io::Error {
    match error {
        sled::Error::Io(error) => error,
        other => io::Error::other(other.to_string()),
    }
}

/// How long opening waits for sled's file lock: a database dropped a moment ago in this process
/// (an engine closed, the store reopened after an error) may hold it while sled's own threads
/// finish. Another process never holds it: the data directory's lock is taken first.
const LOCK_WAIT: Duration = Duration::from_secs(2);
const LOCK_RETRY: Duration = Duration::from_millis(10);

fn open_db(path: &Path) -> Result<Open, sled::Error> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match open_db_once(path) {
            Err(sled::Error::Io(error))
                if error.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(LOCK_RETRY);
            }
            result => return result,
        }
    }
}

fn open_db_once(path: &Path) -> Result<Open, sled::Error> {
    // No background flushing: durability points are the engine's explicit flushes, made after
    // the log records a checkpoint refers to are synced.
    let db = sled::Config::new()
        .path(path)
        .cache_capacity(SLED_CACHE_BYTES)
        .flush_every_ms(None)
        .open()?;
    let trees = [
        db.open_tree(Tree::ALL[0].name())?,
        db.open_tree(Tree::ALL[1].name())?,
        db.open_tree(Tree::ALL[2].name())?,
    ];
    Ok(Open { db, trees })
}

impl SledBackend {
    pub(super) fn open(path: &Path) -> Result<Self, MetaError> {
        let open = open_db(path).map_err(|error| MetaError::Open {
            path: path.to_path_buf(),
            source: io_error(error),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            db: RwLock::new(Some(open)),
            failed: AtomicBool::new(false),
            generation: AtomicU64::new(0),
        })
    }

    /// The open database, reopened first if a write failed.
    fn open_db(&self) -> io::Result<RwLockReadGuard<'_, Option<Open>>> {
        if self.failed.load(Ordering::Acquire) {
            self.reopen()?;
        }
        Ok(crate::sync::read(&self.db))
    }

    fn reopen(&self) -> io::Result<()> {
        let mut db = crate::sync::write(&self.db);
        if !self.failed.load(Ordering::Acquire) {
            return Ok(()); // another caller reopened it
        }
        // Every handle of the failed database goes before the new one is opened.
        *db = None;
        let open = open_db(&self.path).map_err(io_error)?;
        *db = Some(open);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.failed.store(false, Ordering::Release);
        tracing::warn!(path = %self.path.display(), "metadata store reopened after an I/O error");
        Ok(())
    }

    /// Marks the backend failed when `result` is an I/O error.
    fn watch<T>(&self, result: Result<T, sled::Error>) -> io::Result<T> {
        result.map_err(|error| {
            if matches!(error, sled::Error::Io(_)) {
                self.failed.store(true, Ordering::Release);
            }
            io_error(error)
        })
    }
}

fn closed() -> io::Error {
    io::Error::other("the metadata store is closed after an I/O error and could not be reopened")
}

impl KvBackend for SledBackend {
    fn for_each_prefix(
        &self,
        tree: Tree,
        prefix: &[u8],
        f: &mut EntryVisitor<'_>,
    ) -> Result<(), MetaError> {
        let db = self.open_db().map_err(|e| MetaError::io("scan", e))?;
        let open = db.as_ref().ok_or_else(|| MetaError::io("scan", closed()))?;
        for entry in open.trees[tree as usize].scan_prefix(prefix) {
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
        let db = self.open_db()?;
        let open = db.as_ref().ok_or_else(closed)?;
        self.watch(open.trees[tree as usize].apply_batch(batch))
    }

    fn flush(&self) -> io::Result<()> {
        let db = self.open_db()?;
        let open = db.as_ref().ok_or_else(closed)?;
        self.watch(open.db.flush()).map(|_| ())
    }

    fn recover(&self) -> io::Result<()> {
        if self.failed.load(Ordering::Acquire) { self.reopen() } else { Ok(()) }
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}
