//! Archive files: consumed segments kept, zstd-compressed, outside the log (FORMAT.md §8).
//!
//! # Design
//! - **What is archived.** With [`crate::EngineConfig::archive_dir`] set, retention hands each
//!   segment it is about to delete (every channel's checkpointed floor is past it, DESIGN.md
//!   §3.3) to an [`Archiver`] first. Ephemeral topics are never archived. The archive holds the
//!   segment file's bytes verbatim, so nothing about the log format changes and a reader finds
//!   damage inside an archive exactly as in a live segment.
//! - **Layout.** `<archive-path>/<topic>/<20-digit first offset>.seg.zst`: a 64-byte header
//!   ([`ArchiveHeader`]) and one zstd frame.
//! - **Crash safety.** An archive is written to `<name>.tmp`, fsynced, renamed and the directory
//!   fsynced (all through [`Storage`]), and only then does the log delete the segment. A crash
//!   leaves no archive or a whole one. Archiving a segment again (a crash between the rename and
//!   the removal) is idempotent; an existing archive with other content is never overwritten:
//!   the archiver fails, and the log keeps the segment.
//! - **Bounded.** A segment above [`ARCHIVE_MAX_SEGMENT_BYTES`] is not archived (the archiver
//!   fails and the segment is kept). The writer streams the segment in
//!   [`ARCHIVE_IO_CHUNK_BYTES`] reads; the reader checks the header before decoding, decodes with
//!   a window of at most 2^[`ARCHIVE_WINDOW_LOG_MAX`] bytes and reads at most the recorded length
//!   plus one byte, so a hostile frame costs no more memory than the length its header declares.
//! - **Reading.** [`ArchiveReader`] decompresses one archive into a
//!   [`BytesFile`](crate::storage::BytesFile) and runs the log's own
//!   [`SegmentReader`](crate::log::SegmentReader) over it: a damaged range inside is a
//!   [`SegmentItem::Damaged`](crate::log::SegmentItem) at its position in the decoded segment.

mod header;
mod reader;
mod writer;

use std::io;
use std::path::{Path, PathBuf};

pub use header::{ARCHIVE_FORMAT_VERSION, ArchiveHeader};
pub use reader::{ArchiveReader, read_archive_header};
pub use writer::{ArchivedSegment, Archiver};

use crate::storage::Storage;

/// The largest segment that is archived, and the largest decoded size a reader accepts: 1 GiB.
/// A segment is at most `max(--max-bytes-per-file, 64 + the 64 MiB format body limit)` long, so
/// every segment is archivable when `--max-bytes-per-file` is at most this.
pub const ARCHIVE_MAX_SEGMENT_BYTES: u64 = 1024 * 1024 * 1024;
/// Largest zstd window (as a power of two) a writer uses and a reader accepts: 8 MiB.
pub const ARCHIVE_WINDOW_LOG_MAX: u32 = 23;
/// The zstd level archives are written with (zstd's default).
pub const ARCHIVE_ZSTD_LEVEL: i32 = 3;
/// Bytes read from a segment, or from an archive, per read call.
pub const ARCHIVE_IO_CHUNK_BYTES: usize = 1024 * 1024;
/// The suffix of an archive file's name.
pub const ARCHIVE_SUFFIX: &str = ".seg.zst";

/// Errors of writing and reading archives. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A file operation failed; a writer left no archive under the final name.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The archive's bytes are not what FORMAT.md §8 allows; nothing of it was used.
    #[error("archive {} is corrupt at position {position}: {problem}", path.display())]
    Corrupt { path: PathBuf, position: u64, problem: String },
    /// The segment is too large to archive; the log keeps it.
    #[error(
        "segment {} is {len_bytes} bytes, above the {limit_bytes}-byte archive limit: kept",
        path.display()
    )]
    SegmentTooLarge { path: PathBuf, len_bytes: u64, limit_bytes: u64 },
    /// An archive of another segment with the same first offset exists; it is left alone and the
    /// segment is kept until an operator moves the archive away.
    #[error(
        "archive {} exists with other content ({problem}); segment {} is kept until the archive is moved away",
        archive.display(),
        segment.display()
    )]
    Conflict { archive: PathBuf, segment: PathBuf, problem: String },
}

impl ArchiveError {
    pub(crate) fn io(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Self + use<> {
        let path = path.to_path_buf();
        move |source| Self::Io { op, path, source }
    }

    pub(crate) fn corrupt(path: &Path, position: u64, problem: impl Into<String>) -> Self {
        Self::Corrupt { path: path.to_path_buf(), position, problem: problem.into() }
    }
}

impl From<ArchiveError> for io::Error {
    fn from(error: ArchiveError) -> Self {
        let kind = match &error {
            ArchiveError::Io { source, .. } => source.kind(),
            ArchiveError::Corrupt { .. } => io::ErrorKind::InvalidData,
            ArchiveError::SegmentTooLarge { .. } => io::ErrorKind::InvalidInput,
            ArchiveError::Conflict { .. } => io::ErrorKind::AlreadyExists,
        };
        io::Error::new(kind, error)
    }
}

/// The archive directory of `topic` under an archive path.
pub fn topic_archive_dir(archive_path: &Path, topic: &str) -> PathBuf {
    archive_path.join(topic)
}

/// The file name of the archive of the segment whose first offset is `first_offset`.
pub fn archive_file_name(first_offset: u64) -> String {
    format!("{first_offset:020}{ARCHIVE_SUFFIX}")
}

/// The first offset named by an archive file name, or `None` when the name is not an archive's.
pub fn parse_archive_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(ARCHIVE_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The files of a topic's archive directory: its archives sorted by first offset, and the names
/// that are not archives (a stray `.tmp` among them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveListing {
    pub archives: Vec<(u64, PathBuf)>,
    pub other_files: Vec<PathBuf>,
}

/// Lists the archive files of the topic archive directory `dir`.
pub fn list_archives(storage: &dyn Storage, dir: &Path) -> io::Result<ArchiveListing> {
    let mut listing = ArchiveListing::default();
    for name in storage.list_dir(dir)? {
        match name.to_str().and_then(parse_archive_file_name) {
            Some(first_offset) => listing.archives.push((first_offset, dir.join(&name))),
            None => listing.other_files.push(dir.join(&name)),
        }
    }
    listing.archives.sort_unstable();
    listing.other_files.sort();
    Ok(listing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_names_round_trip_and_sort_by_offset() {
        assert_eq!(archive_file_name(1000), "00000000000000001000.seg.zst");
        for offset in [0, 1, 1000, u64::MAX] {
            assert_eq!(parse_archive_file_name(&archive_file_name(offset)), Some(offset));
        }
        assert!(archive_file_name(999) < archive_file_name(1000));
        for name in [
            "00000000000000001000.seg",
            "00000000000000001000.seg.zst.tmp",
            "1000.seg.zst",
            "99999999999999999999.seg.zst",
        ] {
            assert_eq!(parse_archive_file_name(name), None, "{name}");
        }
    }
}
