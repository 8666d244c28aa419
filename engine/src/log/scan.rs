//! A forward scan over the records of one segment file, reading in chunks, that steps over damage.
//!
//! Used by recovery, by readers and by index building, so that every path that reads records
//! applies the same validity rules (FORMAT.md §3) and the same resynchronisation (FORMAT.md §5).

use std::io;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::format::{self, Decoded, FORMAT_MAX_BODY_BYTES, FRAME_HEADER_LEN};
use crate::storage::{StorageFile, read_full_at};

/// Bytes read from the file at a time (more when one record is larger) by a whole-file scan.
const CHUNK_BYTES: usize = 256 * 1024;

/// Bytes read at a time by a channel's reader. Smaller than a scan's: a topic with 100
/// channels has 100 readers, each holding its chunk (and the one before, while deliveries
/// still share it), and 64 KiB still reads about 280 records of 200 bytes per system call.
pub(crate) const READER_CHUNK_BYTES: usize = 64 * 1024;

const FRAME_HEADER_BYTES: u64 = FRAME_HEADER_LEN as u64;

/// Bytes a resynchronising scan may checksum while it looks for the next record after one damaged
/// range (FORMAT.md §5). Noise almost never passes the cheap header checks, but crafted bytes can,
/// each claiming a body of up to 64 MiB; the budget bounds the work at about 0.1 s of CRC.
pub(crate) const RESYNC_VERIFY_BUDGET_BYTES: u64 = 1 << 30;

/// A record read from the log. The body shares the buffer it was read into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: u64,
    pub timestamp_ns: i64,
    /// `0` when the record is not deferred.
    pub deliver_at_ns: i64,
    pub body: Bytes,
}

#[derive(Debug)]
pub(crate) enum ScanItem {
    Record {
        pos: u64,
        record: Record,
    },
    /// Bytes `[pos, pos + len_bytes)` hold no valid record. `resumed` tells whether a valid record
    /// follows (quarantine) or the damage runs to the end of the scan (a torn tail).
    Damaged {
        pos: u64,
        len_bytes: u64,
        resumed: bool,
    },
}

#[derive(Debug)]
pub(crate) struct Scanner {
    file: Arc<dyn StorageFile>,
    end: u64,
    pos: u64,
    chunk: Bytes,
    chunk_pos: u64,
    chunk_bytes: usize,
    min_offset: u64,
    last_offset: Option<u64>,
    offset_limit: Option<u64>,
    /// Where the file turned out to end, when it is shorter than the scan expected.
    file_end: Option<u64>,
}

/// The extra limits on a candidate record while resynchronising after damage (FORMAT.md §5).
struct Resync<'a> {
    offset_max: u64,
    /// Bytes candidates may still checksum.
    budget_bytes: &'a mut u64,
}

/// What is at one position.
enum Probe {
    Valid(Record, u64),
    Invalid,
}

impl Scanner {
    /// A scan of `[pos, end)` of a segment whose first offset is `min_offset`; `pos` is the start
    /// of a record.
    pub(crate) fn new(file: Arc<dyn StorageFile>, pos: u64, end: u64, min_offset: u64) -> Self {
        Self {
            file,
            end,
            pos,
            chunk: Bytes::new(),
            chunk_pos: 0,
            chunk_bytes: CHUNK_BYTES,
            min_offset,
            last_offset: None,
            offset_limit: None,
            file_end: None,
        }
    }

    /// Reads `bytes` at a time instead of the default.
    pub(crate) fn set_chunk_bytes(&mut self, bytes: usize) {
        self.chunk_bytes = bytes;
    }

    /// The offset of the record before `pos`, when the scan starts after the first record.
    pub(crate) fn set_last_offset(&mut self, last_offset: Option<u64>) {
        self.last_offset = last_offset;
    }

    /// The first offset of the next segment: no record here may have it or a later one.
    pub(crate) fn set_offset_limit(&mut self, offset_limit: Option<u64>) {
        self.offset_limit = offset_limit;
    }

    /// Offset of the last valid record scanned.
    pub(crate) fn last_offset(&self) -> Option<u64> {
        self.last_offset
    }

    /// Extends the end of the scan (the segment grew), never past where the file was found to end.
    pub(crate) fn set_end(&mut self, end: u64) {
        self.end = self.end.max(end).min(self.file_end.unwrap_or(u64::MAX));
    }

    /// Where the file ended, if a read found it shorter than the scan expected.
    pub(crate) fn file_end(&self) -> Option<u64> {
        self.file_end
    }

    /// Whether a scan to `end` would read anything more.
    pub(crate) fn has_more_before(&self, end: u64) -> bool {
        end.min(self.file_end.unwrap_or(u64::MAX)) > self.pos
    }

    pub(crate) fn next(&mut self) -> io::Result<Option<ScanItem>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let pos = self.pos;
        if let Probe::Valid(record, len) = self.probe(pos, None)? {
            self.pos += len;
            self.last_offset = Some(record.offset);
            return Ok(Some(ScanItem::Record { pos, record }));
        }
        if self.pos >= self.end {
            // The file ended where the record should have been: nothing is there to judge.
            return Ok(None);
        }
        let expected = self.expected_offset();
        let mut candidate = pos + 1;
        let mut budget_bytes = RESYNC_VERIFY_BUDGET_BYTES;
        let found = loop {
            if candidate + FRAME_HEADER_BYTES > self.end {
                break None;
            }
            // A record found after `candidate - pos` damaged bytes can be at most one offset per
            // frame header those bytes could have held past the one expected: a cheap bound that
            // keeps a resynchronising scan from taking noise for a record.
            let offset_max = expected.saturating_add((candidate - pos) / FRAME_HEADER_BYTES);
            let resync = Resync { offset_max, budget_bytes: &mut budget_bytes };
            match self.probe(candidate, Some(resync))? {
                Probe::Valid(..) => break Some(candidate),
                Probe::Invalid => candidate += 1,
            }
        };
        let item = match found {
            Some(next) => ScanItem::Damaged { pos, len_bytes: next - pos, resumed: true },
            None => ScanItem::Damaged { pos, len_bytes: self.end - pos, resumed: false },
        };
        self.pos = found.unwrap_or(self.end);
        Ok(Some(item))
    }

    fn expected_offset(&self) -> u64 {
        self.last_offset.map_or(self.min_offset, |last| last.saturating_add(1))
    }

    /// Checks the record at `pos` against every rule of FORMAT.md §3.
    fn probe(&mut self, pos: u64, resync: Option<Resync<'_>>) -> io::Result<Probe> {
        let Some(head) = self.window(pos, FRAME_HEADER_BYTES)? else {
            return Ok(Probe::Invalid);
        };
        let Some((body_len, offset)) = format::peek_len_and_offset(head) else {
            return Ok(Probe::Invalid);
        };
        let offset_ok = offset >= self.min_offset
            && self.last_offset.is_none_or(|last| offset > last)
            && self.offset_limit.is_none_or(|limit| offset < limit)
            && resync.as_ref().is_none_or(|r| offset <= r.offset_max);
        if !offset_ok || body_len > FORMAT_MAX_BODY_BYTES {
            return Ok(Probe::Invalid);
        }
        let len = FRAME_HEADER_BYTES + u64::from(body_len);
        if let Some(resync) = resync {
            if len > *resync.budget_bytes {
                return Ok(Probe::Invalid);
            }
            *resync.budget_bytes -= len;
        }
        let Some(bytes) = self.window(pos, len)? else {
            return Ok(Probe::Invalid);
        };
        let Decoded::Record(record) = format::decode_record(bytes) else {
            return Ok(Probe::Invalid);
        };
        let (offset, timestamp_ns, deliver_at_ns, body_len) =
            (record.offset, record.timestamp_ns, record.deliver_at_ns, record.body.len());
        let body_at =
            usize::try_from(pos - self.chunk_pos).unwrap_or(usize::MAX) + FRAME_HEADER_LEN;
        let body_end = body_at + body_len;
        let record = Record {
            offset,
            timestamp_ns,
            deliver_at_ns,
            body: self.chunk.slice(body_at..body_end),
        };
        Ok(Probe::Valid(record, len))
    }

    /// The bytes `[pos, pos + len)`, or `None` when they pass the end of the scan or the file.
    fn window(&mut self, pos: u64, len: u64) -> io::Result<Option<&[u8]>> {
        if pos + len > self.end {
            return Ok(None);
        }
        let chunk_end = self.chunk_pos + self.chunk.len() as u64;
        if pos < self.chunk_pos || pos + len > chunk_end {
            let want = (self.end - pos).min(len.max(self.chunk_bytes as u64));
            let mut buf = BytesMut::zeroed(usize::try_from(want).unwrap_or(usize::MAX));
            let got = read_full_at(&*self.file, &mut buf, pos)?;
            buf.truncate(got);
            self.chunk = buf.freeze();
            self.chunk_pos = pos;
            if (got as u64) < len {
                // The file is shorter than the scan expected: it ends here.
                self.end = pos + got as u64;
                self.file_end = Some(self.end);
                return Ok(None);
            }
        }
        let start = usize::try_from(pos - self.chunk_pos).unwrap_or(usize::MAX);
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        Ok(self.chunk.get(start..start + len))
    }
}
