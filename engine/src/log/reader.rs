//! Reading the log: sequential readers and reads of one record by offset.

use std::sync::Arc;

use super::scan::{ScanItem, Scanner};
use super::segment::{Damage, FIRST_RECORD_POS, Segment};
use super::{LogError, Record, Shared};

/// Reads records in offset order, from a starting offset on, following the log as it grows.
///
/// [`LogReader::next`] returns `Ok(None)` when it has caught up with the writer; calling it again
/// later returns what was appended since. Damaged ranges are skipped (and logged once).
#[derive(Debug)]
pub struct LogReader {
    shared: Arc<Shared>,
    cursor: Option<Cursor>,
    next_offset: u64,
}

/// A scan positioned in one segment.
#[derive(Debug)]
pub(super) struct Cursor {
    segment: Arc<Segment>,
    scanner: Scanner,
}

impl Cursor {
    /// A scan of `segment` that starts at the last indexed record at or before `target`; `None`
    /// if the segment was removed meanwhile.
    pub(super) fn open(
        shared: &Shared,
        segment: Arc<Segment>,
        offset_limit: Option<u64>,
        target: u64,
    ) -> Result<Option<Self>, LogError> {
        let file = match segment.file(&*shared.storage) {
            Ok(file) => file,
            // Removed since it was found: its records are gone, which is not an error.
            Err(_) if !shared.is_listed(&segment) => return Ok(None),
            Err(error) => return Err(error),
        };
        let start = if target > segment.first_offset {
            let (entry, damage) = segment.seek(&file, target, offset_limit)?;
            shared.report_damage(&segment, &damage);
            entry
        } else {
            None
        };
        let pos = start.map_or(FIRST_RECORD_POS, |entry| entry.pos);
        let mut scanner = Scanner::new(file, pos, segment.written_len(), segment.first_offset);
        scanner.set_chunk_bytes(super::scan::READER_CHUNK_BYTES);
        scanner.set_last_offset(start.and_then(|entry| entry.offset.checked_sub(1)));
        scanner.set_offset_limit(offset_limit);
        Ok(Some(Self { segment, scanner }))
    }

    /// The next valid record written to the segment so far.
    pub(super) fn next(&mut self, shared: &Shared) -> Result<Option<Record>, LogError> {
        self.scanner.set_end(self.segment.written_len());
        loop {
            let after_offset = self.scanner.last_offset();
            let item =
                self.scanner.next().map_err(|e| LogError::io("read", &self.segment.path, e))?;
            match item {
                None => {
                    let written_len = self.segment.written_len();
                    if let Some(file_end) = self.scanner.file_end().filter(|&end| end < written_len)
                    {
                        // The file lost its end behind the log's back: report the missing bytes.
                        let missing = Damage {
                            pos: file_end,
                            len_bytes: written_len - file_end,
                            resumed: false,
                            after_offset,
                        };
                        shared.report_damage(&self.segment, &[missing]);
                    }
                    return Ok(None);
                }
                Some(ScanItem::Record { record, .. }) => return Ok(Some(record)),
                Some(ScanItem::Damaged { pos, len_bytes, resumed }) => {
                    let damage = Damage { pos, len_bytes, resumed, after_offset };
                    shared.report_damage(&self.segment, &[damage]);
                }
            }
        }
    }
}

impl LogReader {
    pub(super) fn new(shared: Arc<Shared>, from: u64) -> Self {
        Self { shared, cursor: None, next_offset: from }
    }

    /// The offset the reader looks for next: one past the last record it returned.
    pub fn position(&self) -> u64 {
        self.next_offset
    }

    /// The next record, or `None` when the reader has caught up with the writer.
    #[allow(clippy::should_implement_trait)] // fallible, and `None` is not the end
    pub fn next(&mut self) -> Result<Option<Record>, LogError> {
        loop {
            let cursor = match &mut self.cursor {
                Some(cursor) => cursor,
                None => {
                    let found = self.shared.segment_for(self.next_offset).or_else(|| {
                        let segments = self.shared.segments();
                        let first = segments.first()?;
                        Some((Arc::clone(first), segments.get(1).map(|s| s.first_offset)))
                    });
                    let Some((segment, limit)) = found else {
                        return Ok(None);
                    };
                    match Cursor::open(&self.shared, segment, limit, self.next_offset)? {
                        Some(cursor) => self.cursor.insert(cursor),
                        None => continue,
                    }
                }
            };
            if let Some(record) = cursor.next(&self.shared)? {
                if record.offset < self.next_offset {
                    continue;
                }
                self.next_offset = record.offset.saturating_add(1);
                return Ok(Some(record));
            }
            let Some((next, limit)) = self.shared.segment_after(&cursor.segment) else {
                return Ok(None);
            };
            // The writer publishes a segment's final length before the segment after it: look
            // again before leaving, or the records of that last round would be skipped.
            if cursor.scanner.has_more_before(cursor.segment.written_len()) {
                continue;
            }
            self.cursor = Cursor::open(&self.shared, next, limit, self.next_offset)?;
        }
    }
}
