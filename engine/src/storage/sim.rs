//! A simulated [`Storage`] for tests: an in-memory file system that keeps written bytes and
//! durable bytes apart, so a test can crash it and choose what survives.
//!
//! What it models, following FORMAT.md §6:
//! - A file's writes since its last `sync_data` are pending. [`SimStorage::crash_with`] keeps any
//!   prefix of them, the last kept write cut at any byte, and drops the rest. Unsynced pages lost
//!   out of order (a hole before surviving data) are not modelled here; the corruption tests make
//!   such holes in real files.
//! - A directory entry created, renamed or removed is durable only after the directory is synced
//!   (which `create_new`, `rename` and `remove_file` do, as the trait requires). A crash restores
//!   the durable entries.
//! - Directories themselves are durable once created.
//! - [`SimStorage::halt_after`] makes every operation after a chosen one fail, as if the process
//!   died there; [`SimStorage::snapshot`] copies the state it left, to crash in several ways.
//! - [`SimStorage::fail_nth_op`] fails a chosen future operation with a chosen error,
//!   [`SimStorage::set_capacity`] makes writes past a total size fail with ENOSPC after writing
//!   what fits, and [`SimStorage::flip_bit`] damages durable data.
//!
//! Handles opened before a crash belong to the dead process: every call on them fails.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{LockGuard, Storage, StorageFile};

/// A write or truncation not yet made durable by `sync_data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnsyncedOp {
    Write { pos: u64, bytes: Vec<u8> },
    SetLen(u64),
}

/// What a crash keeps of one file's unsynced operations: the first `ops` whole, then the first
/// `torn_bytes` bytes of the next one if it is a write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CrashKeep {
    pub ops: usize,
    pub torn_bytes: usize,
}

/// The simulated file system. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct SimStorage {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default, Clone)]
struct Inner {
    files: HashMap<u64, FileData>,
    next_file_id: u64,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    locks: BTreeSet<PathBuf>,
    generation: u64,
    ops: u64,
    file_syncs: u64,
    faults: BTreeMap<u64, io::ErrorKind>,
    capacity_bytes: Option<u64>,
    /// Operations numbered above this fail: the process died after it.
    halt_after: Option<u64>,
    /// Open handles per file: an unlinked file's data goes when its last handle closes.
    handles: HashMap<u64, usize>,
}

#[derive(Debug, Default, Clone)]
struct FileData {
    current: Vec<u8>,
    durable: Vec<u8>,
    unsynced: Vec<UnsyncedOp>,
}

fn apply(data: &mut Vec<u8>, op: &UnsyncedOp) {
    match op {
        UnsyncedOp::Write { pos, bytes } => write_into(data, *pos, bytes),
        UnsyncedOp::SetLen(len) => data.resize(to_usize(*len), 0),
    }
}

fn write_into(data: &mut Vec<u8>, pos: u64, bytes: &[u8]) {
    let pos = to_usize(pos);
    if data.len() < pos + bytes.len() {
        data.resize(pos + bytes.len(), 0);
    }
    data[pos..pos + bytes.len()].copy_from_slice(bytes);
}

fn to_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

fn parent(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

fn disk_full() -> io::Error {
    io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error())
}

impl Inner {
    /// Counts one operation and fails it if a fault was planted for it.
    fn step(&mut self) -> io::Result<()> {
        self.ops += 1;
        if self.halt_after.is_some_and(|last| self.ops > last) {
            return Err(io::Error::other("simulated process death: no more operations"));
        }
        match self.faults.remove(&self.ops) {
            Some(io::ErrorKind::StorageFull) => Err(disk_full()),
            Some(kind) => Err(io::Error::new(kind, "injected fault")),
            None => Ok(()),
        }
    }

    fn used_bytes(&self) -> u64 {
        self.files.values().map(|f| f.current.len() as u64).sum()
    }

    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        self.step()?;
        self.durable_names.retain(|path, _| parent(path) != dir);
        for (path, id) in &self.names {
            if parent(path) == dir {
                self.durable_names.insert(path.clone(), *id);
            }
        }
        Ok(())
    }

    /// Moves a directory and everything below it; the move is durable at once, as a renamed
    /// file's entry is once its directories are synced.
    fn rename_dir(&mut self, from: &Path, to: &Path) {
        let moved = |path: &Path| match path.strip_prefix(from) {
            Ok(rest) if rest.as_os_str().is_empty() => to.to_path_buf(),
            Ok(rest) => to.join(rest),
            Err(_) => path.to_path_buf(),
        };
        self.dirs = self.dirs.iter().map(|d| moved(d)).collect();
        self.names = self.names.iter().map(|(p, id)| (moved(p), *id)).collect();
        self.durable_names = self.durable_names.iter().map(|(p, id)| (moved(p), *id)).collect();
    }

    fn lookup(&self, path: &Path) -> io::Result<u64> {
        self.names.get(path).copied().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display()))
        })
    }

    fn create_file(&mut self, path: &Path) -> io::Result<u64> {
        if !self.dirs.contains(&parent(path)) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such directory"));
        }
        if self.names.contains_key(path) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "file exists"));
        }
        let id = self.next_file_id;
        self.next_file_id += 1;
        self.files.insert(id, FileData::default());
        self.names.insert(path.to_path_buf(), id);
        Ok(id)
    }

    /// Files no name refers to, and no handle can reach after a crash, are forgotten.
    /// Drops the data of file `id` if nothing can reach it any more.
    fn collect_if_unreachable(&mut self, id: u64) {
        let open = self.handles.get(&id).copied().unwrap_or(0) > 0;
        let named = self.names.values().chain(self.durable_names.values()).any(|&n| n == id);
        if !open && !named {
            self.files.remove(&id);
        }
    }

    fn new_handle(&mut self, inner: &Arc<Mutex<Inner>>, id: u64, writable: bool) -> SimFile {
        *self.handles.entry(id).or_insert(0) += 1;
        SimFile { inner: Arc::clone(inner), id, generation: self.generation, writable }
    }

    fn collect_garbage(&mut self) {
        let named: BTreeSet<u64> = self.names.values().copied().collect();
        self.files.retain(|id, _| named.contains(id));
    }
}

impl SimStorage {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A test that panicked while holding the lock has failed already; its data is still the
        // best evidence there is.
        crate::sync::lock(&self.inner)
    }

    /// Simulates a crash: every file keeps its durable bytes plus what `choose` keeps of its
    /// unsynced operations; directory entries revert to their durable state; locks are released
    /// and handles opened before the crash stop working.
    pub fn crash_with(&self, mut choose: impl FnMut(&Path, &[UnsyncedOp]) -> CrashKeep) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner.names = inner.durable_names.clone();
        inner.collect_garbage();
        for (path, id) in &inner.names {
            let Some(file) = inner.files.get_mut(id) else {
                continue;
            };
            let keep = choose(path, &file.unsynced);
            let mut data = std::mem::take(&mut file.durable);
            for op in file.unsynced.iter().take(keep.ops) {
                apply(&mut data, op);
            }
            if let Some(UnsyncedOp::Write { pos, bytes }) = file.unsynced.get(keep.ops) {
                let torn = &bytes[..keep.torn_bytes.min(bytes.len())];
                write_into(&mut data, *pos, torn);
            }
            file.current = data.clone();
            file.durable = data;
            file.unsynced.clear();
        }
        inner.locks.clear();
        inner.generation += 1;
    }

    /// A crash that loses everything not synced.
    pub fn crash(&self) {
        self.crash_with(|_, _| CrashKeep::default());
    }

    /// Fails the `n`-th operation from now (1 = the next) with `kind`; `StorageFull` gives ENOSPC.
    /// Operations are writes, syncs, truncations and directory changes; reads are not counted.
    pub fn fail_nth_op(&self, n: u64, kind: io::ErrorKind) {
        let mut inner = self.lock();
        let at = inner.ops + n;
        inner.faults.insert(at, kind);
    }

    /// Makes every operation after the `n`-th (counted from the start, see [`SimStorage::ops`])
    /// fail: the process died right after operation `n`.
    pub fn halt_after(&self, n: u64) {
        self.lock().halt_after = Some(n);
    }

    /// Counts one operation done outside the file system (a meta store write), so that it has its
    /// place among the file operations; it fails as a file operation would at that point.
    pub fn external_op(&self) -> io::Result<()> {
        self.lock().step()
    }

    /// An independent copy of the file system as it is now, with no open handles, locks, faults
    /// or halt: the state a crash point leaves, to crash in several ways.
    pub fn snapshot(&self) -> SimStorage {
        let mut copy = self.lock().clone();
        copy.handles.clear();
        copy.locks.clear();
        copy.faults.clear();
        copy.halt_after = None;
        copy.generation += 1;
        SimStorage { inner: Arc::new(Mutex::new(copy)) }
    }

    /// The unsynced operations of every file that a crash would find (by its durable name), by
    /// path: what [`SimStorage::crash_with`] chooses from.
    pub fn unsynced_ops(&self) -> Vec<(PathBuf, Vec<UnsyncedOp>)> {
        let inner = self.lock();
        inner
            .durable_names
            .iter()
            .filter_map(|(path, id)| {
                let file = inner.files.get(id)?;
                (!file.unsynced.is_empty()).then(|| (path.clone(), file.unsynced.clone()))
            })
            .collect()
    }

    /// Removes all planted faults.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Operations counted so far.
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// `sync_data` calls that succeeded so far.
    pub fn file_syncs(&self) -> u64 {
        self.lock().file_syncs
    }

    /// Limits the total size of all files: a write past it writes what fits and fails with ENOSPC.
    pub fn set_capacity(&self, capacity_bytes: Option<u64>) {
        self.lock().capacity_bytes = capacity_bytes;
    }

    /// Flips one bit of a file, in its current and its durable bytes (a media error).
    pub fn flip_bit(&self, path: &Path, byte: u64, bit: u8) -> io::Result<()> {
        let mut inner = self.lock();
        let id = inner.lookup(path)?;
        let file = inner.files.get_mut(&id).ok_or_else(|| io::Error::other("lost file"))?;
        let at = to_usize(byte);
        for data in [&mut file.current, &mut file.durable] {
            if let Some(b) = data.get_mut(at) {
                *b ^= 1 << (bit % 8);
            }
        }
        Ok(())
    }

    /// The current bytes of a file, or `None` if there is no such file.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let inner = self.lock();
        let id = inner.names.get(path)?;
        inner.files.get(id).map(|f| f.current.clone())
    }

    /// Paths of all files, sorted.
    pub fn file_paths(&self) -> Vec<PathBuf> {
        self.lock().names.keys().cloned().collect()
    }
}

#[derive(Debug)]
struct SimFile {
    inner: Arc<Mutex<Inner>>,
    id: u64,
    generation: u64,
    writable: bool,
}

#[derive(Debug)]
struct SimLock {
    inner: Arc<Mutex<Inner>>,
    path: PathBuf,
    generation: u64,
}

impl LockGuard for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut inner = crate::sync::lock(&self.inner);
        if inner.generation == self.generation {
            inner.locks.remove(&self.path);
        }
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut inner = crate::sync::lock(&self.inner);
        if let Some(count) = inner.handles.get_mut(&self.id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                inner.handles.remove(&self.id);
                inner.collect_if_unreachable(self.id);
            }
        }
    }
}

impl SimFile {
    fn with<T>(&self, f: impl FnOnce(&mut Inner, u64) -> io::Result<T>) -> io::Result<T> {
        let mut inner = crate::sync::lock(&self.inner);
        if inner.generation != self.generation {
            return Err(io::Error::other("handle from before a simulated crash"));
        }
        f(&mut inner, self.id)
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(io::Error::new(io::ErrorKind::PermissionDenied, "file opened read-only"))
        }
    }
}

fn file_mut(inner: &mut Inner, id: u64) -> io::Result<&mut FileData> {
    inner.files.get_mut(&id).ok_or_else(|| io::Error::other("file vanished"))
}

impl StorageFile for SimFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.with(|inner, id| {
            let data = &file_mut(inner, id)?.current;
            let start = to_usize(pos).min(data.len());
            let n = buf.len().min(data.len() - start);
            buf[..n].copy_from_slice(&data[start..start + n]);
            Ok(n)
        })
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.check_writable()?;
        self.with(|inner, id| {
            inner.step()?;
            let mut bytes = buf;
            let mut full = false;
            if let Some(capacity) = inner.capacity_bytes {
                let len = file_mut(inner, id)?.current.len() as u64;
                let growth = (pos + buf.len() as u64).saturating_sub(len);
                let free = capacity.saturating_sub(inner.used_bytes());
                if growth > free {
                    full = true;
                    // What fits: up to the old end, plus the free bytes after it.
                    let fits = (len + free).saturating_sub(pos).min(buf.len() as u64);
                    bytes = &buf[..to_usize(fits)];
                }
            }
            let file = file_mut(inner, id)?;
            if !bytes.is_empty() {
                write_into(&mut file.current, pos, bytes);
                file.unsynced.push(UnsyncedOp::Write { pos, bytes: bytes.to_vec() });
            }
            if full { Err(disk_full()) } else { Ok(()) }
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with(|inner, id| {
            inner.step()?;
            inner.file_syncs += 1;
            let file = file_mut(inner, id)?;
            file.durable.clone_from(&file.current);
            file.unsynced.clear();
            Ok(())
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check_writable()?;
        self.with(|inner, id| {
            inner.step()?;
            let file = file_mut(inner, id)?;
            file.current.resize(to_usize(len), 0);
            file.unsynced.push(UnsyncedOp::SetLen(len));
            Ok(())
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.with(|inner, id| Ok(file_mut(inner, id)?.current.len() as u64))
    }
}

impl Storage for SimStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut inner = self.lock();
        inner.step()?;
        for ancestor in path.ancestors() {
            inner.dirs.insert(ancestor.to_path_buf());
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        let inner = self.lock();
        if !inner.dirs.contains(path) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such directory"));
        }
        let files = inner.names.keys().filter(|p| p.parent() == Some(path));
        let dirs = inner.dirs.iter().filter(|p| p.parent() == Some(path));
        Ok(files.chain(dirs).filter_map(|p| p.file_name().map(OsString::from)).collect())
    }

    fn open(&self, path: &Path, writable: bool) -> io::Result<Arc<dyn StorageFile>> {
        let mut inner = self.lock();
        let id = inner.lookup(path)?;
        Ok(Arc::new(inner.new_handle(&self.inner, id, writable)))
    }

    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let mut inner = self.lock();
        inner.step()?;
        let id = inner.create_file(path)?;
        inner.sync_dir(&parent(path))?;
        Ok(Arc::new(inner.new_handle(&self.inner, id, true)))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut inner = self.lock();
        inner.step()?;
        let id = inner.lookup(path)?;
        inner.names.remove(path);
        // Open handles keep the data, as on Unix, until the last one closes.
        inner.sync_dir(&parent(path))?;
        inner.collect_if_unreachable(id);
        Ok(())
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let mut inner = self.lock();
        inner.step()?;
        if !inner.dirs.contains(path) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such directory"));
        }
        let within = |p: &PathBuf| p.parent() == Some(path);
        if inner.names.keys().any(within) || inner.dirs.iter().any(within) {
            return Err(io::Error::new(io::ErrorKind::DirectoryNotEmpty, "directory not empty"));
        }
        inner.dirs.remove(path);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut inner = self.lock();
        inner.step()?;
        if inner.dirs.contains(from) && !inner.names.contains_key(from) {
            inner.rename_dir(from, to);
            return Ok(());
        }
        let id = inner.lookup(from)?;
        inner.names.remove(from);
        inner.names.insert(to.to_path_buf(), id);
        inner.sync_dir(&parent(to))?;
        if parent(from) != parent(to) {
            inner.sync_dir(&parent(from))?;
        }
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.lock().sync_dir(path)
    }

    fn lock_exclusive(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        let mut inner = self.lock();
        if inner.locks.contains(path) {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "held by another owner"));
        }
        if !inner.names.contains_key(path) {
            inner.create_file(path)?;
            inner.sync_dir(&parent(path))?;
        }
        inner.locks.insert(path.to_path_buf());
        Ok(Box::new(SimLock {
            inner: Arc::clone(&self.inner),
            path: path.to_path_buf(),
            generation: inner.generation,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage_with_dir() -> (SimStorage, PathBuf) {
        let storage = SimStorage::new();
        let dir = PathBuf::from("/d");
        storage.create_dir_all(&dir).unwrap();
        (storage, dir)
    }

    #[test]
    fn crash_drops_unsynced_writes_and_keeps_synced_ones() {
        let (storage, dir) = storage_with_dir();
        let path = dir.join("f");
        let file = storage.create_new(&path).unwrap();
        file.write_all_at(b"durable", 0).unwrap();
        file.sync_data().unwrap();
        file.write_all_at(b"-lost", 7).unwrap();
        assert_eq!(storage.contents(&path).unwrap(), b"durable-lost");
        storage.crash();
        assert_eq!(storage.contents(&path).unwrap(), b"durable");
        assert!(file.len().is_err(), "a handle from before the crash is dead");
    }

    #[test]
    fn crash_can_tear_the_last_kept_write() {
        let (storage, dir) = storage_with_dir();
        let path = dir.join("f");
        let file = storage.create_new(&path).unwrap();
        file.write_all_at(b"aaaa", 0).unwrap();
        file.write_all_at(b"bbbb", 4).unwrap();
        file.write_all_at(b"cccc", 8).unwrap();
        storage.crash_with(|_, ops| {
            assert_eq!(ops.len(), 3);
            CrashKeep { ops: 1, torn_bytes: 2 }
        });
        assert_eq!(storage.contents(&path).unwrap(), b"aaaabb");
    }

    #[test]
    fn unsynced_directory_entries_vanish_in_a_crash() {
        let (storage, dir) = storage_with_dir();
        let path = dir.join("f");
        storage.fail_nth_op(2, io::ErrorKind::Other); // the directory sync of create_new
        assert!(storage.create_new(&path).is_err());
        assert!(storage.contents(&path).is_some(), "the entry exists until the crash");
        storage.crash();
        assert!(storage.contents(&path).is_none());
    }

    #[test]
    fn removal_is_durable_once_returned() {
        let (storage, dir) = storage_with_dir();
        let path = dir.join("f");
        storage.create_new(&path).unwrap();
        storage.remove_file(&path).unwrap();
        storage.crash();
        assert!(storage.contents(&path).is_none());
    }

    #[test]
    fn writes_past_capacity_write_what_fits_and_fail_with_enospc() {
        let (storage, dir) = storage_with_dir();
        let file = storage.create_new(&dir.join("f")).unwrap();
        storage.set_capacity(Some(6));
        let error = file.write_all_at(b"12345678", 0).unwrap_err();
        assert!(super::super::is_disk_full(&error));
        assert_eq!(file.len().unwrap(), 6);
        file.set_len(0).unwrap();
        file.write_all_at(b"123", 0).unwrap();
    }

    #[test]
    fn planted_fault_fails_exactly_the_chosen_operation() {
        let (storage, dir) = storage_with_dir();
        let file = storage.create_new(&dir.join("f")).unwrap();
        storage.fail_nth_op(2, io::ErrorKind::Other);
        file.write_all_at(b"a", 0).unwrap();
        assert!(file.sync_data().is_err());
        file.sync_data().unwrap();
    }

    #[test]
    fn lock_is_exclusive_until_dropped() {
        let (storage, dir) = storage_with_dir();
        let guard = storage.lock_exclusive(&dir.join("LOCK")).unwrap();
        let error = storage.lock_exclusive(&dir.join("LOCK")).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
        drop(guard);
        storage.lock_exclusive(&dir.join("LOCK")).unwrap();
    }
}
