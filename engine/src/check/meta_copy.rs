//! Reading the metadata store without writing to it.
//!
//! Opening a sled database writes to it (recovery, new segments, flushes at drop), so a check
//! that must not change a byte copies `meta/` into a temporary directory and opens the copy.

use std::path::{Path, PathBuf};

use crate::meta::{MetaAudit, MetaStore};

/// A copy of a store's directory, removed when dropped.
#[derive(Debug)]
struct TempCopy {
    dir: PathBuf,
}

impl Drop for TempCopy {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), %error, "removing a temporary copy failed");
        }
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Opens the store at `meta_dir` (a sled directory) and reads every entry, without writing to
/// `meta_dir`. An error says why it could not be opened or read.
pub fn audit_copy(meta_dir: &Path) -> Result<MetaAudit, String> {
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!("nsq-fsck-meta-{}-{unique}", std::process::id()));
    let copy = TempCopy { dir };
    copy_dir(meta_dir, &copy.dir)
        .map_err(|error| format!("copying {} failed: {error}", meta_dir.display()))?;
    audit_in_place(&copy.dir)
}

/// Opens the store at `meta_dir` and reads every entry. sled reports most damage as an error,
/// but some as a panic: that is caught and reported too.
pub(crate) fn audit_in_place(meta_dir: &Path) -> Result<MetaAudit, String> {
    let opened = std::panic::catch_unwind(|| {
        let store = MetaStore::open_sled(meta_dir).map_err(|error| error.to_string())?;
        store.audit().map_err(|error| error.to_string())
    });
    opened.unwrap_or_else(|_| {
        Err("the store's files are damaged (sled panicked reading them)".into())
    })
}
