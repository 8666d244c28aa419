//! Every file operation of the engine goes through [`Storage`], so that tests can run the engine
//! on [`SimStorage`], which loses unsynced data, tears writes, flips bits and fails chosen
//! operations, and check the durability contract against it.
//!
//! The contract an implementation keeps:
//! - [`Storage::create_new`], [`Storage::rename`] and [`Storage::remove_file`] make the change to
//!   the directory durable (a directory fsync) before they return.
//! - [`StorageFile::sync_data`] returns only once every byte written to the file before it is
//!   durable.
//! - Nothing else is durable: written bytes may be lost, or torn at any byte, by a crash.

mod fs;
mod sim;

use std::ffi::OsString;
use std::fmt::Debug;
use std::io;
use std::path::Path;
use std::sync::Arc;

pub use fs::FsStorage;
pub use sim::{CrashKeep, SimStorage, UnsyncedOp};

/// A file system, as the engine uses it.
pub trait Storage: Send + Sync + Debug {
    /// Creates `path` and any missing parents, durably.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Names of the entries of directory `path`, in no particular order.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<OsString>>;
    /// Opens an existing file for reading and, with `writable`, for writing.
    fn open(&self, path: &Path, writable: bool) -> io::Result<Arc<dyn StorageFile>>;
    /// Creates a new, empty file for reading and writing; fails if it exists. Durable on return.
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>>;
    /// Removes a file, durably.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes an empty directory, durably.
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// Renames a file, replacing `to`, or a directory (to a name not in use), durably.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the entries of directory `path` durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Takes an exclusive advisory lock on the file `path` (created if missing), released when the
    /// returned guard drops or the process ends. Fails with [`io::ErrorKind::WouldBlock`] when
    /// another owner holds it.
    fn lock_exclusive(&self, path: &Path) -> io::Result<Box<dyn LockGuard>>;
}

/// An open file. Reads and writes are positional, so one handle serves many threads.
#[allow(clippy::len_without_is_empty)] // a file length is a number to use, not a test
pub trait StorageFile: Send + Sync + Debug {
    /// Reads up to `buf.len()` bytes at `pos`; returns 0 at the end of the file.
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `pos`. On error an unknown prefix of `buf` may have been written.
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()>;
    /// Makes every byte written so far durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// Truncates or extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The file's length in bytes.
    fn len(&self) -> io::Result<u64>;
}

/// A read-only file held in memory: a decompressed archive read with the log's own scans.
#[derive(Debug, Clone)]
pub struct BytesFile(pub bytes::Bytes);

impl StorageFile for BytesFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let start = usize::try_from(pos).unwrap_or(usize::MAX).min(self.0.len());
        let n = buf.len().min(self.0.len() - start);
        buf[..n].copy_from_slice(&self.0[start..start + n]);
        Ok(n)
    }

    fn write_all_at(&self, _buf: &[u8], _pos: u64) -> io::Result<()> {
        Err(read_only())
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }

    fn set_len(&self, _len: u64) -> io::Result<()> {
        Err(read_only())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.len() as u64)
    }
}

fn read_only() -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, "the file is read-only")
}

/// Holds an exclusive lock until dropped.
pub trait LockGuard: Send + Sync + Debug {}

/// Reads until `buf` is full or the file ends; returns the number of bytes read.
pub fn read_full_at(file: &dyn StorageFile, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], pos + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// The error an operation gets when the disk is full.
pub fn is_disk_full(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::StorageFull
        || error.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error())
}

/// Replaces the file `path` with `bytes` durably: written to `path` with `.tmp` appended,
/// fsynced, then renamed over `path` (which [`Storage::rename`] makes durable). A crash leaves the
/// old file or the new one, and at worst a stray `.tmp` that the next write replaces.
pub fn write_atomically(storage: &dyn Storage, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    match storage.remove_file(&tmp) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let file = storage.create_new(&tmp)?;
    file.write_all_at(bytes, 0)?;
    file.sync_data()?;
    storage.rename(&tmp, path)
}
