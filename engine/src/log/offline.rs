//! Reading segment files outside a running log: for `nsq-fsck` (inspect, verify, repair, dump)
//! and for replaying archived segments. Nothing here writes.
//!
//! The same scan as the log's own readers applies (FORMAT.md §3 and §5), so a record this reads
//! is exactly a record the log would serve, and damage is found at the same positions.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Record;
use super::scan::{ScanItem, Scanner};
use super::segment::{FIRST_RECORD_POS, header_problem};
use crate::format::parse_segment_file_name;
use crate::storage::{Storage, StorageFile};

/// Position in a segment file of its first record (the header's length).
pub const SEGMENT_FIRST_RECORD_POS: u64 = FIRST_RECORD_POS;

/// What a scan of a segment found at one position.
#[derive(Debug)]
pub enum SegmentItem {
    /// A valid record starting at file position `position`, `len_bytes` long.
    Record { position: u64, len_bytes: u64, record: Record },
    /// Bytes `[position, position + len_bytes)` hold no valid record. `resumed`: a valid record
    /// follows them; otherwise they run to the end of the file.
    Damaged { position: u64, len_bytes: u64, resumed: bool },
}

/// A forward scan over every record of one segment file.
#[derive(Debug)]
pub struct SegmentReader {
    scanner: Scanner,
}

impl SegmentReader {
    /// A scan of `file` from its first record to `len`, for a segment named for `first_offset`
    /// whose successor starts at `offset_limit` (no record here may have that offset or above).
    pub fn new(
        file: Arc<dyn StorageFile>,
        first_offset: u64,
        len: u64,
        offset_limit: Option<u64>,
    ) -> Self {
        let mut scanner = Scanner::new(file, FIRST_RECORD_POS, len, first_offset);
        scanner.set_offset_limit(offset_limit);
        Self { scanner }
    }

    /// The next record or damaged range, `None` at the end.
    #[allow(clippy::should_implement_trait)] // fallible
    pub fn next(&mut self) -> io::Result<Option<SegmentItem>> {
        Ok(self.scanner.next()?.map(|item| match item {
            ScanItem::Record { pos, record } => {
                let len_bytes = crate::format::FRAME_HEADER_LEN as u64 + record.body.len() as u64;
                SegmentItem::Record { position: pos, len_bytes, record }
            }
            ScanItem::Damaged { pos, len_bytes, resumed } => {
                SegmentItem::Damaged { position: pos, len_bytes, resumed }
            }
        }))
    }

    /// Offset of the last valid record read so far.
    pub fn last_offset(&self) -> Option<u64> {
        self.scanner.last_offset()
    }
}

/// What is wrong with the header of a segment file named for `first_offset`, if anything
/// (FORMAT.md §2): bad magic, version, length, flags or checksum, or another first offset.
pub fn segment_header_problem(file: &dyn StorageFile, first_offset: u64) -> Option<String> {
    header_problem(file, first_offset)
}

/// The files of a topic directory: its segments sorted by first offset, and the names that are
/// not segments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentListing {
    pub segments: Vec<(u64, PathBuf)>,
    pub other_files: Vec<PathBuf>,
}

/// Lists the segment files of the topic directory `dir`.
pub fn list_segments(storage: &dyn Storage, dir: &Path) -> io::Result<SegmentListing> {
    let mut listing = SegmentListing::default();
    for name in storage.list_dir(dir)? {
        match name.to_str().and_then(parse_segment_file_name) {
            Some(first_offset) => listing.segments.push((first_offset, dir.join(&name))),
            None => listing.other_files.push(dir.join(&name)),
        }
    }
    listing.segments.sort_unstable();
    listing.other_files.sort();
    Ok(listing)
}
