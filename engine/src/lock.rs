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

fn holder_pid(storage: &dyn Storage, path: &Path) -> Option<u32> {
    let file = storage.open(path, false).ok()?;
    let mut buf = [0u8; 32];
    let len = read_full_at(&*file, &mut buf, 0).ok()?;
    std::str::from_utf8(&buf[..len]).ok()?.trim().parse().ok()
}
