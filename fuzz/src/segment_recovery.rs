//! `segment_recovery`: arbitrary bytes as a segment file, opened by the topic log and read by
//! the offline reader (FORMAT.md §3 and §5), on the simulated file system.
//!
//! Input: a flags byte, a first-offset byte, a successor-gap byte, then the content. Flags:
//! - bit 0: the file starts with a valid header for its name (else, in raw mode, none; in built
//!   mode, a header naming another offset);
//! - bit 1: built mode: the content describes records (written with the real encoder, with
//!   sequential, skipping or repeated offsets), junk between them, bit flips and a cut; else the
//!   content is the file's bytes as they are;
//! - bit 2: a later segment exists, so this one is an older segment read with an offset limit;
//! - bit 3: offsets near `u64::MAX`.
//!
//! Checked:
//! - the offline [`SegmentReader`] tiles the file from position 32 with records and damaged
//!   ranges, in order; each record it returns is a valid frame at its position (CRC included),
//!   offsets strictly increase, at or above the name's and below the successor's; only the last
//!   damaged range may be unresumed;
//! - [`TopicLog::open`] never fails on these bytes; its report is consistent with the file (a
//!   torn tail cut exactly at the reported position, quarantined ranges inside the file, the
//!   next offset above every record);
//! - the log's readers return exactly the offline reader's records (the same scan rules),
//!   `read_at` finds each of them and nothing in between;
//! - appending after recovery gives the next offsets, and a clean reopen finds nothing more to
//!   truncate and every record, old and new, intact.
//!
//! Without damage (built mode, sequential offsets, no junk, flips or cut, valid header) the
//! records read are exactly the records written and the report is clean.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use engine::format::{
    Decoded, FRAME_HEADER_LEN, RecordRef, SegmentHeader, decode_record, encode_record,
    segment_file_name,
};
use engine::log::{
    LogConfig, SEGMENT_FIRST_RECORD_POS, SegmentItem, SegmentReader, SyncPolicy, TopicLog,
    segment_header_problem,
};
use engine::storage::{SimStorage, Storage};
use engine::{NewRecord, Record};

/// Longest input taken.
pub const MAX_LEN: usize = 16 * 1024;
/// Longest segment file built from an input.
const MAX_FILE_BYTES: usize = 96 * 1024;
/// Records whose `read_at` and reads from their offset are checked, at most.
const SAMPLED_READS: usize = 12;

const DIR: &str = "/data/topics/t";

/// A record as compared: offset, timestamps and body.
type Plain = (u64, i64, i64, Vec<u8>);

fn plain(record: &Record) -> Plain {
    (record.offset, record.timestamp_ns, record.deliver_at_ns, record.body.to_vec())
}

/// Reads bytes from the front of the input, zero when it runs out.
struct Cursor<'a> {
    data: &'a [u8],
}

impl Cursor<'_> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let (taken, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        taken
    }
}

/// The file described by a built-mode input, and whether it is free of damage.
fn build(first_offset: u64, valid_header: bool, content: &[u8]) -> (Vec<u8>, bool) {
    let named = if valid_header { first_offset } else { first_offset ^ 1 };
    let mut file = SegmentHeader { first_offset: named }.encode().to_vec();
    let mut clean = valid_header;
    let mut expected = first_offset;
    let mut flips = Vec::new();
    let mut cut = None;
    let mut input = Cursor { data: content };
    while !input.data.is_empty() && file.len() < MAX_FILE_BYTES {
        let op = input.byte();
        match op % 4 {
            0 | 1 if op % 8 != 1 => {
                let len = usize::from(input.byte());
                let step = input.byte();
                let offset = match step {
                    0..=239 => expected,
                    240..=247 => {
                        clean = false;
                        expected.saturating_add(u64::from(step - 239))
                    }
                    _ => {
                        clean = false;
                        expected.saturating_sub(u64::from(step - 247))
                    }
                };
                if offset == u64::MAX {
                    // The next record cannot have a greater offset.
                    clean = false;
                }
                let given = input.take(len).to_vec();
                let body: Vec<u8> = if given.len() == len {
                    given
                } else {
                    (0..len).map(|i| op.wrapping_add(i as u8)).collect()
                };
                let deliver_at_ns = if op & 0x10 != 0 { i64::from(step) * 1_000_000 } else { 0 };
                let record = RecordRef {
                    offset,
                    timestamp_ns: i64::from(op) - 100,
                    deliver_at_ns,
                    body: &body,
                };
                encode_record(&record, &mut file);
                expected = offset.saturating_add(1);
            }
            1 => {
                clean = false;
                let len = usize::from(input.byte());
                let junk = input.take(len).to_vec();
                file.extend_from_slice(&junk);
            }
            2 => {
                clean = false;
                flips.push((usize::from(input.u16()), op >> 5));
            }
            _ => {
                clean = false;
                cut = Some(usize::from(input.u16()));
            }
        }
    }
    for (at, bit) in flips {
        let at = at % file.len();
        file[at] ^= 1 << bit;
    }
    if let Some(at) = cut {
        file.truncate(at % (file.len() + 1));
    }
    (file, clean)
}

pub fn run(data: &[u8]) {
    if data.len() > MAX_LEN {
        return;
    }
    let mut input = Cursor { data };
    let flags = input.byte();
    let offset_byte = u64::from(input.byte());
    let gap = u64::from(input.byte());
    let content = input.data;
    let (valid_header, built, older, near_max) =
        (flags & 1 != 0, flags & 2 != 0, flags & 4 != 0, flags & 8 != 0);
    let first_offset = if near_max { u64::MAX - offset_byte } else { offset_byte };
    let (bytes, clean) = if built {
        build(first_offset, valid_header, content)
    } else {
        let mut bytes = Vec::with_capacity(SegmentHeader::LEN + content.len());
        if valid_header {
            bytes.extend_from_slice(&SegmentHeader { first_offset }.encode());
        }
        bytes.extend_from_slice(content);
        (bytes, false)
    };
    let successor = if older { first_offset.checked_add(1 + gap) } else { None };
    check(first_offset, &bytes, successor, clean);
}

fn write_file(storage: &SimStorage, path: &Path, bytes: &[u8]) {
    let file = storage.create_new(path).expect("create a segment on the simulated storage");
    file.write_all_at(bytes, 0).expect("write a segment");
    file.sync_data().expect("sync a segment");
}

/// What the offline reader finds in one segment file, checked as it goes.
fn read_offline(
    storage: &SimStorage,
    path: &Path,
    first_offset: u64,
    limit: Option<u64>,
) -> Vec<Plain> {
    let file = storage.open(path, false).expect("open a segment");
    let bytes = storage.contents(path).expect("segment contents");
    let len = bytes.len() as u64;
    let problem = segment_header_problem(&*file, first_offset);
    let header_ok =
        matches!(SegmentHeader::decode(&bytes), Ok(h) if h.first_offset == first_offset);
    assert_eq!(problem.is_none(), header_ok, "header problem {problem:?}");
    let mut reader = SegmentReader::new(file, first_offset, len, limit);
    let mut records = Vec::new();
    let mut at = SEGMENT_FIRST_RECORD_POS;
    let mut last: Option<u64> = None;
    let mut unresumed = false;
    let mut items = 0u64;
    while let Some(item) = reader.next().expect("offline read") {
        items += 1;
        assert!(items <= len, "more items than bytes");
        assert!(!unresumed, "an item after damage that ran to the end");
        match item {
            SegmentItem::Record { position, len_bytes, record } => {
                assert_eq!(position, at, "records and damage tile the file");
                assert!(record.offset >= first_offset, "offset below the segment's name");
                assert!(last.is_none_or(|l| record.offset > l), "offsets do not increase");
                assert!(limit.is_none_or(|l| record.offset < l), "offset at the next segment's");
                assert_eq!(len_bytes, (FRAME_HEADER_LEN + record.body.len()) as u64);
                let start = usize::try_from(position).expect("position");
                let end = start + usize::try_from(len_bytes).expect("length");
                let Decoded::Record(frame) = decode_record(&bytes[start..end]) else {
                    panic!("a record that is not a valid frame at {position}");
                };
                assert_eq!(frame.offset, record.offset);
                assert_eq!(frame.body, &record.body[..]);
                assert_eq!(
                    (frame.timestamp_ns, frame.deliver_at_ns),
                    (record.timestamp_ns, record.deliver_at_ns)
                );
                last = Some(record.offset);
                at = position + len_bytes;
                records.push(plain(&record));
            }
            SegmentItem::Damaged { position, len_bytes, resumed } => {
                assert_eq!(position, at, "records and damage tile the file");
                assert!(len_bytes > 0, "an empty damaged range");
                at = position + len_bytes;
                unresumed = !resumed;
            }
        }
        assert_eq!(reader.last_offset(), last);
    }
    if len > SEGMENT_FIRST_RECORD_POS {
        assert_eq!(at, len, "the scan stopped before the end of the file");
    }
    records
}

fn config() -> LogConfig {
    LogConfig { sync: SyncPolicy::Always, ..LogConfig::default() }
}

fn read_all(log: &TopicLog, from: u64) -> Vec<Plain> {
    let mut reader = log.reader(from);
    let mut records = Vec::new();
    while let Some(record) = reader.next().expect("log read") {
        records.push(plain(&record));
        assert!(records.len() <= MAX_FILE_BYTES * 2, "a reader that does not end");
    }
    records
}

fn check(first_offset: u64, bytes: &[u8], successor: Option<u64>, clean: bool) {
    let storage = SimStorage::new();
    let dir = PathBuf::from(DIR);
    storage.create_dir_all(&dir).expect("directory");
    let path = dir.join(segment_file_name(first_offset));
    write_file(&storage, &path, bytes);
    let mut expected = read_offline(&storage, &path, first_offset, successor);
    if let Some(next_first) = successor {
        // A later segment: a valid header and one record at its first offset.
        let mut next = SegmentHeader { first_offset: next_first }.encode().to_vec();
        let record =
            RecordRef { offset: next_first, timestamp_ns: 1, deliver_at_ns: 0, body: b"next" };
        encode_record(&record, &mut next);
        write_file(&storage, &dir.join(segment_file_name(next_first)), &next);
        expected.push((next_first, 1, 0, b"next".to_vec()));
    }
    if clean {
        let offsets: Vec<u64> = expected.iter().map(|r| r.0).collect();
        let dense: Vec<u64> =
            (0..offsets.len() as u64).map(|i| first_offset.saturating_add(i)).collect();
        if successor.is_none() {
            assert_eq!(offsets, dense, "undamaged records read back with dense offsets");
        }
    }

    let shared: Arc<dyn Storage> = Arc::new(storage.clone());
    let (log, report) = match TopicLog::open(Arc::clone(&shared), &dir, config()) {
        Ok(opened) => opened,
        Err(error) => panic!("opening failed on damaged data: {error}"),
    };
    let last_path = dir.join(segment_file_name(successor.unwrap_or(first_offset)));
    let last_len = storage.contents(&last_path).expect("last segment").len() as u64;
    let original_len = if successor.is_some() { last_len } else { bytes.len() as u64 };
    if clean && successor.is_none() {
        assert!(report.is_clean(), "an undamaged segment recovered with a report: {report:?}");
    }
    if let Some(truncation) = &report.truncated {
        assert_eq!(truncation.segment, last_path);
        assert_eq!(truncation.position, last_len, "the file is cut where the report says");
        assert!(truncation.position >= SEGMENT_FIRST_RECORD_POS);
        assert_eq!(truncation.position + truncation.len_bytes, original_len);
    }
    for range in &report.quarantined {
        assert!(range.position >= SEGMENT_FIRST_RECORD_POS);
        assert!(range.position + range.len_bytes <= original_len, "quarantine past the file");
    }
    if successor.is_none() && (bytes.len() as u64) < SEGMENT_FIRST_RECORD_POS {
        assert_eq!(report.header_rewritten.as_ref(), Some(&last_path));
    }
    let next_offset = report.next_offset;
    assert_eq!(log.next_offset(), next_offset);
    if let Some(last) = expected.last() {
        // A record at u64::MAX leaves no offset above it: the log then refuses appends.
        let above = next_offset > last.0 || (last.0 == u64::MAX && next_offset == u64::MAX);
        assert!(above, "next offset {next_offset} not above record {}", last.0);
    }

    let records = read_all(&log, 0);
    assert_eq!(records, expected, "the log reads other records than the offline reader");
    check_sampled_reads(&log, &records);

    // Appending continues the offsets; a clean reopen keeps everything and cuts nothing.
    let bodies: [&[u8]; 2] = [b"appended-1", b""];
    let new: Vec<NewRecord<'_>> =
        bodies.iter().map(|body| NewRecord { timestamp_ns: 7, deliver_at_ns: 0, body }).collect();
    let mut all = records;
    let mut appended_next = next_offset;
    match log.append(&new) {
        Ok(range) => {
            assert_eq!(range.start, next_offset, "an append after recovery skips offsets");
            assert_eq!(range.end - range.start, 2);
            for (offset, body) in range.clone().zip(bodies) {
                all.push((offset, 7, 0, body.to_vec()));
            }
            appended_next = range.end;
        }
        Err(error) => {
            // Only the end of the offset space may refuse an append.
            assert!(next_offset > u64::MAX - 2, "append failed: {error}");
        }
    }
    assert_eq!(read_all(&log, 0), all, "appended records read back");
    log.close().expect("close");
    drop(log);
    let (log, report) = TopicLog::open(shared, &dir, config()).expect("reopen");
    assert!(report.truncated.is_none(), "a second recovery cut more: {report:?}");
    assert!(report.header_rewritten.is_none());
    assert_eq!(report.next_offset, appended_next, "reopen changed the next offset");
    assert_eq!(read_all(&log, 0), all, "a clean reopen lost or changed records");
}

/// `read_at` and reads from a few offsets, against the records read in full.
fn check_sampled_reads(log: &TopicLog, records: &[Plain]) {
    let step = records.len() / SAMPLED_READS + 1;
    for (i, record) in records.iter().enumerate().step_by(step) {
        if record.0 == u64::MAX {
            // Only a crafted file holds a record there (the writer never uses the last offset):
            // sequential reads return it, `read_at` stops at the next offset, u64::MAX.
            continue;
        }
        let found = log.read_at(record.0).expect("read_at").map(|r| plain(&r));
        assert_eq!(found.as_ref(), Some(record), "read_at {}", record.0);
        let gap = record.0.wrapping_sub(1);
        let before = i.checked_sub(1).map(|j| records[j].0);
        if before != Some(gap) && gap < record.0 {
            // Nothing lies between the previous record and this one.
            let found = log.read_at(gap).expect("read_at").map(|r| r.offset);
            assert!(found.is_none() || before.is_none(), "read_at {gap} found {found:?}");
        }
        let suffix: Vec<Plain> = records[i..].to_vec();
        assert_eq!(read_all(log, record.0), suffix, "reading from {}", record.0);
    }
}
