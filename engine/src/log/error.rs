//! Errors of the log. Each variant says what happened and what the log already did about it.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// An error of a topic log.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    /// An operation on a file failed; for an append, nothing of the batch was kept.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },
    /// The disk is full. Nothing of the batch was kept; appends succeed again once space returns.
    #[error("disk full writing {}; the batch was not appended", path.display())]
    DiskFull { path: PathBuf },
    /// An fsync (or the undoing of a failed write) failed, so what is durable is unknown. The log
    /// refuses writes until it is reopened; it never retries the fsync.
    #[error("log {} refuses writes until reopened: {cause}", dir.display())]
    Poisoned { dir: PathBuf, cause: Arc<str> },
    #[error("record body of {len} bytes is over the limit of {limit_bytes} bytes")]
    BodyTooLarge { len: usize, limit_bytes: u32 },
    #[error("batch of {len} records is over the limit of {limit_records}")]
    BatchTooLarge { len: usize, limit_records: usize },
    #[error("log {} is closed", dir.display())]
    Closed { dir: PathBuf },
    /// The batch would take offsets past `u64::MAX` (a log whose segment names reach the end of
    /// the offset space). Nothing of the batch was kept.
    #[error("log {} has no offsets left for {len} more records", dir.display())]
    OffsetsExhausted { dir: PathBuf, len: usize },
    #[error("invalid log configuration: {0}")]
    InvalidConfig(String),
    /// Another process owns the data directory.
    #[error("data directory {} is locked by another process{holder}", path.display())]
    Locked { path: PathBuf, holder: String },
}

impl LogError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io { op, path: path.into(), source: Arc::new(source) }
    }
}
