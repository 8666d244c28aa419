//! One owner per data directory: an advisory lock on `<data-path>/LOCK`.

use std::io;
use std::path::{Path, PathBuf};

use crate::log::LogError;
use crate::storage::{LockGuard, Storage, read_full_at};

/// Name of the lock file in a data directory.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// Holds a data directory for this process until dropped (or the process ends).
#[derive(Debug)]
pub struct DataDirLock {
    path: PathBuf,
    _guard: Box<dyn LockGuard>,
}

impl DataDirLock {
    /// Locks `data_dir` (creating it if needed). Another owner gets [`LogError::Locked`], naming
    /// the pid written in the lock file when there is one.
    pub fn acquire(storage: &dyn Storage, data_dir: &Path) -> Result<Self, LogError> {
        storage
            .create_dir_all(data_dir)
            .map_err(|e| LogError::io("create directory", data_dir, e))?;
        let path = data_dir.join(LOCK_FILE_NAME);
        match storage.lock_exclusive(&path) {
            Ok(guard) => Ok(Self { path, _guard: guard }),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                let holder = holder_pid(storage, &path).map(|pid| format!(" (pid {pid})"));
                Err(LogError::Locked {
                    path: data_dir.to_path_buf(),
                    holder: holder.unwrap_or_default(),
                })
            }
            Err(error) => Err(LogError::io("lock", &path, error)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Whether another process holds the lock of `data_dir`, found without taking it and without
/// writing anything (for tools that only read): `Some` with the holder's pid as text (empty when
/// unknown) when held, `None` when free or when there is no lock file.
pub fn probe_holder(data_dir: &Path) -> io::Result<Option<String>> {
    let path = data_dir.join(LOCK_FILE_NAME);
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockShared) {
        Ok(()) => {
            rustix::fs::flock(&file, rustix::fs::FlockOperation::Unlock)?;
            Ok(None)
        }
        Err(errno) if errno == rustix::io::Errno::WOULDBLOCK => {
            let storage = crate::storage::FsStorage;
            Ok(Some(holder_pid(&storage, &path).map(|pid| pid.to_string()).unwrap_or_default()))
        }
        Err(errno) => Err(io::Error::from(errno)),
    }
}

fn holder_pid(storage: &dyn Storage, path: &Path) -> Option<u32> {
    let file = storage.open(path, false).ok()?;
    let mut buf = [0u8; 32];
    let len = read_full_at(&*file, &mut buf, 0).ok()?;
    std::str::from_utf8(&buf[..len]).ok()?.trim().parse().ok()
}
