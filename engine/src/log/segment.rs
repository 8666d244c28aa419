//! One segment file as the log tracks it in memory, and its sparse index.

use crate::sync::lock;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::LogError;
use super::scan::{ScanItem, Scanner};
use crate::format::SegmentHeader;
use crate::storage::{Storage, StorageFile, read_full_at};

/// Bytes of log between two entries of a segment's sparse index: a seek reads at most about this
/// much before it reaches the record it wants, and the index costs 16 bytes per this many.
pub(crate) const INDEX_INTERVAL_BYTES: u64 = 64 * 1024;

/// Header position of the first record.
pub(crate) const FIRST_RECORD_POS: u64 = SegmentHeader::LEN as u64;

#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) first_offset: u64,
    pub(crate) path: PathBuf,
    file: Mutex<Option<Arc<dyn StorageFile>>>,
    /// Bytes readers may read: the end of the last published record. Grows while the segment is
    /// the last one; fixed once a later segment exists.
    written_len: AtomicU64,
    index: Mutex<SparseIndex>,
}

/// A point a seek can start a scan from: the record at `pos` has `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub(crate) offset: u64,
    pub(crate) pos: u64,
}

#[derive(Debug, Default)]
struct SparseIndex {
    entries: Vec<IndexEntry>,
    /// The index covers the segment up to here.
    scanned_to: u64,
    /// Offset of the last record before `scanned_to`.
    last_offset: Option<u64>,
}

/// A damaged range found in a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    pub segment: PathBuf,
    /// File position of the first damaged byte.
    pub position: u64,
    pub len_bytes: u64,
    /// Offset of the last valid record before the damage, if any in the segment.
    pub after_offset: Option<u64>,
}

impl Segment {
    pub(crate) fn new(
        first_offset: u64,
        path: PathBuf,
        file: Option<Arc<dyn StorageFile>>,
        written_len: u64,
    ) -> Self {
        Self {
            first_offset,
            path,
            file: Mutex::new(file),
            written_len: AtomicU64::new(written_len),
            index: Mutex::new(SparseIndex { scanned_to: FIRST_RECORD_POS, ..Default::default() }),
        }
    }

    pub(crate) fn written_len(&self) -> u64 {
        self.written_len.load(Ordering::Acquire)
    }

    pub(crate) fn publish_len(&self, len: u64) {
        self.written_len.store(len, Ordering::Release);
    }

    /// The segment's file, opened read-only on first use.
    pub(crate) fn file(&self, storage: &dyn Storage) -> Result<Arc<dyn StorageFile>, LogError> {
        let mut slot = lock(&self.file);
        if let Some(file) = slot.as_ref() {
            return Ok(Arc::clone(file));
        }
        let file =
            storage.open(&self.path, false).map_err(|e| LogError::io("open", &self.path, e))?;
        self.check_header(&*file);
        *slot = Some(Arc::clone(&file));
        Ok(file)
    }

    /// Reports a damaged header of a segment opened for reading. Records are read regardless: the
    /// name is trusted (FORMAT.md §5, rule 3).
    fn check_header(&self, file: &dyn StorageFile) {
        if let Some(reason) = header_problem(file, self.first_offset) {
            tracing::warn!(segment = %self.path.display(), %reason, "damaged segment header: name trusted");
        }
    }

    /// Offset of the last valid record the index has seen.
    pub(crate) fn last_indexed_offset(&self) -> Option<u64> {
        lock(&self.index).last_offset
    }

    /// Cuts the segment back to `len` bytes after recovery truncated a torn tail at `len`.
    pub(crate) fn truncate_tail(&self, len: u64) {
        self.publish_len(len);
        let mut index = lock(&self.index);
        index.scanned_to = index.scanned_to.min(len);
        index.entries.retain(|entry| entry.pos < len);
    }

    /// Where a scan for `offset` should start: the last indexed record at or before it. Extends
    /// the index over what was written since the last seek first, and returns the damage found
    /// on the way (each range is found once).
    pub(crate) fn seek(
        &self,
        file: &Arc<dyn StorageFile>,
        offset: u64,
        offset_limit: Option<u64>,
    ) -> Result<(Option<IndexEntry>, Vec<Damage>), LogError> {
        let mut index = lock(&self.index);
        let end = self.written_len();
        let mut damage = Vec::new();
        if index.scanned_to < end {
            let mut scanner =
                Scanner::new(Arc::clone(file), index.scanned_to, end, self.first_offset);
            scanner.set_last_offset(index.last_offset);
            scanner.set_offset_limit(offset_limit);
            while let Some(item) =
                scanner.next().map_err(|e| LogError::io("read", &self.path, e))?
            {
                match item {
                    ScanItem::Record { pos, record } => {
                        index.add(IndexEntry { offset: record.offset, pos });
                        index.last_offset = Some(record.offset);
                    }
                    ScanItem::Damaged { pos, len_bytes, resumed } => damage.push(Damage {
                        pos,
                        len_bytes,
                        resumed,
                        after_offset: index.last_offset,
                    }),
                }
            }
            index.scanned_to = end;
        }
        let at = index.entries.partition_point(|entry| entry.offset <= offset);
        let start = at.checked_sub(1).map(|i| index.entries[i]);
        Ok((start, damage))
    }

    /// Describes a damaged range of this segment for a report.
    pub(crate) fn quarantined(&self, damage: &Damage) -> Quarantined {
        Quarantined {
            segment: self.path.clone(),
            position: damage.pos,
            len_bytes: damage.len_bytes,
            after_offset: damage.after_offset,
        }
    }
}

/// What is wrong with the header of the segment file `file`, named for `first_offset`, if
/// anything.
pub(crate) fn header_problem(file: &dyn StorageFile, first_offset: u64) -> Option<String> {
    let mut header = [0u8; SegmentHeader::LEN];
    match read_full_at(file, &mut header, 0) {
        Ok(read) if read < SegmentHeader::LEN => {
            // The zeros after a short file must not complete a header by chance (a fuzzer made
            // one whose checksum field, past the end, the zeros matched).
            return Some(format!("file of {read} bytes is shorter than a segment header"));
        }
        Ok(_) => {}
        Err(error) => return Some(error.to_string()),
    }
    match SegmentHeader::decode(&header) {
        Ok(h) if h.first_offset == first_offset => None,
        Ok(h) => Some(format!("header names first offset {}", h.first_offset)),
        Err(error) => Some(error.to_string()),
    }
}

/// A damaged range found by a scan of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Damage {
    pub(crate) pos: u64,
    pub(crate) len_bytes: u64,
    /// A valid record follows the damage (else it runs to the end of what was scanned).
    pub(crate) resumed: bool,
    pub(crate) after_offset: Option<u64>,
}

impl SparseIndex {
    fn add(&mut self, entry: IndexEntry) {
        let due = match self.entries.last() {
            None => true,
            Some(last) => entry.pos >= last.pos + INDEX_INTERVAL_BYTES,
        };
        if due && self.entries.last().is_none_or(|last| last.offset < entry.offset) {
            self.entries.push(entry);
        }
    }
}
