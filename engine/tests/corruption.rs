//! Known corruptions of real segment files on disk, each with the recovery FORMAT.md §5
//! documents: the damaged records are quarantined or the torn tail truncated, and every intact
//! record is kept.

// A failed unwrap in a test is a failed assertion; the lint guards library code against input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::cast_possible_truncation)]

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{append_range, assert_records, body, read_all, segment_paths};
use engine::log::{LogConfig, RecoveryReport, SyncPolicy, TopicLog};
use engine::storage::{FsStorage, Storage};

const RECORDS: u64 = 2000;

fn config() -> LogConfig {
    LogConfig { max_bytes_per_file: 64 * 1024, sync: SyncPolicy::Always, ..LogConfig::default() }
}

fn open(dir: &Path) -> (TopicLog, RecoveryReport) {
    let storage: Arc<dyn Storage> = Arc::new(FsStorage);
    TopicLog::open(storage, dir, config()).expect("open never fails on damaged data")
}

/// A closed log of `RECORDS` test records in several 64 KiB segments.
fn written_log() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("topic");
    let (log, _) = open(&dir);
    for first in (0..RECORDS).step_by(100) {
        append_range(&log, first, 100);
    }
    log.close().unwrap();
    assert!(segment_paths(&dir).len() >= 3);
    (tmp, dir)
}

fn first_offset(segment: &Path) -> u64 {
    segment.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

/// File position and length of every record of the segment, from the known bodies.
fn layout(segment: &Path, end_offset: u64) -> Vec<(u64, u64, u64)> {
    let mut pos = 32;
    (first_offset(segment)..end_offset)
        .map(|offset| {
            let len = 32 + body(offset).len() as u64;
            let record = (offset, pos, len);
            pos += len;
            record
        })
        .collect()
}

fn end_offset_of(dir: &Path, segment: &Path) -> u64 {
    let paths = segment_paths(dir);
    let at = paths.iter().position(|p| p == segment).unwrap();
    paths.get(at + 1).map_or(RECORDS, |next| first_offset(next))
}

fn damage(path: &Path, pos: u64, bytes: &[u8]) {
    let file = OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, pos).unwrap();
}

fn flip(path: &Path, pos: u64) {
    let file = OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, pos).unwrap();
    file.write_all_at(&[byte[0] ^ 0x10], pos).unwrap();
}

fn all_but(lost: &[u64]) -> Vec<u64> {
    (0..RECORDS).filter(|o| !lost.contains(o)).collect()
}

/// The middle record of a segment, as (offset, position, length).
fn middle_record(dir: &Path, segment: &Path) -> (u64, u64, u64) {
    let records = layout(segment, end_offset_of(dir, segment));
    records[records.len() / 2]
}

#[test]
fn flipped_byte_in_a_body_of_the_last_segment_is_quarantined_at_open() {
    let (_tmp, dir) = written_log();
    let last = segment_paths(&dir).pop().unwrap();
    let (offset, pos, len) = middle_record(&dir, &last);
    flip(&last, pos + 40);
    let (log, report) = open(&dir);
    assert_eq!(report.quarantined.len(), 1, "{report:?}");
    let q = &report.quarantined[0];
    assert_eq!((q.segment.as_path(), q.position, q.len_bytes), (last.as_path(), pos, len));
    assert_eq!(q.after_offset, Some(offset - 1));
    assert!(report.truncated.is_none());
    assert_records(&read_all(&log, 0), all_but(&[offset]));
    assert_eq!(log.read_at(offset).unwrap(), None);
    append_range(&log, RECORDS, 3);
}

#[test]
fn flipped_byte_in_a_body_of_an_older_segment_is_quarantined_when_read() {
    let (_tmp, dir) = written_log();
    let first = segment_paths(&dir).remove(0);
    let (offset, pos, _) = middle_record(&dir, &first);
    flip(&first, pos + 33);
    let (log, report) = open(&dir);
    assert!(report.is_clean(), "open reads only the last segment");
    assert_records(&read_all(&log, 0), all_but(&[offset]));
    assert_eq!(log.stats().quarantined_ranges, 1);
    assert_eq!(log.read_at(offset).unwrap(), None);
    assert_eq!(log.read_at(offset + 1).unwrap().unwrap().body, body(offset + 1));
    assert_eq!(log.stats().quarantined_ranges, 1, "each damaged range is counted once");
}

#[test]
fn flipped_byte_in_a_length_is_quarantined_and_the_records_after_it_kept() {
    let (_tmp, dir) = written_log();
    for segment in [segment_paths(&dir).remove(0), segment_paths(&dir).pop().unwrap()] {
        let (offset, pos, _) = middle_record(&dir, &segment);
        flip(&segment, pos + 5); // body_len, bytes 4..8 of the frame
        let (log, _) = open(&dir);
        let records = read_all(&log, 0);
        assert!(records.iter().all(|r| r.offset != offset));
        assert!(records.iter().any(|r| r.offset == offset + 1), "resynchronised after the damage");
        flip(&segment, pos + 5);
    }
}

#[test]
fn flipped_byte_in_the_last_segments_header_is_reported_and_every_record_kept() {
    let (_tmp, dir) = written_log();
    let last = segment_paths(&dir).pop().unwrap();
    flip(&last, 20); // inside first_offset
    let (log, report) = open(&dir);
    let (path, reason) = report.corrupt_header.clone().expect("reported");
    assert_eq!(path, last);
    assert!(reason.contains("checksum"), "{reason}");
    assert_records(&read_all(&log, 0), 0..RECORDS);
    append_range(&log, RECORDS, 1);
}

#[test]
fn flipped_byte_in_an_older_segments_header_loses_nothing() {
    let (_tmp, dir) = written_log();
    let first = segment_paths(&dir).remove(0);
    flip(&first, 3);
    let (log, _) = open(&dir);
    assert_records(&read_all(&log, 0), 0..RECORDS);
}

#[test]
fn a_last_record_cut_at_any_byte_is_truncated_and_every_earlier_record_kept() {
    let (_tmp, dir) = written_log();
    let last = segment_paths(&dir).pop().unwrap();
    let full = std::fs::read(&last).unwrap();
    let (last_offset, last_pos, last_len) = *layout(&last, RECORDS).last().unwrap();
    assert_eq!(last_pos + last_len, full.len() as u64);
    for cut in last_pos..last_pos + last_len {
        std::fs::write(&last, &full[..cut as usize]).unwrap();
        let (log, report) = open(&dir);
        if cut == last_pos {
            assert!(report.is_clean(), "cut at a record boundary: nothing torn");
        } else {
            let truncated = report.truncated.clone().expect("torn tail reported");
            assert_eq!((truncated.position, truncated.len_bytes), (last_pos, cut - last_pos));
        }
        assert_eq!(report.next_offset, last_offset, "cut at {cut}");
        assert_eq!(std::fs::metadata(&last).unwrap().len(), last_pos, "truncated on disk");
        assert_eq!(log.read_at(last_offset - 1).unwrap().unwrap().body, body(last_offset - 1));
        drop(log);
    }
    let (log, _) = open(&dir);
    assert_records(&read_all(&log, 0), 0..last_offset);
    append_range(&log, last_offset, 1);
}

/// Records that survive zeroing `[zero_at, zero_at + 4096)`: those that do not overlap it.
fn survivors_of_zeroing(dir: &Path, segment: &Path, zero_at: u64) -> (Vec<u64>, Vec<u64>) {
    let records = layout(segment, end_offset_of(dir, segment));
    let lost: Vec<u64> = records
        .iter()
        .filter(|(_, pos, len)| *pos < zero_at + 4096 && pos + len > zero_at)
        .map(|(offset, ..)| *offset)
        .collect();
    (all_but(&lost), lost)
}

#[test]
fn a_zeroed_4k_block_mid_segment_loses_only_the_records_it_overlaps() {
    for which in ["older", "last"] {
        let (_tmp, dir) = written_log();
        let paths = segment_paths(&dir);
        let segment =
            if which == "older" { paths[0].clone() } else { paths[paths.len() - 1].clone() };
        let len = std::fs::metadata(&segment).unwrap().len();
        let zero_at = (len / 2 / 4096) * 4096;
        assert!(zero_at + 4096 < len, "{which}: the block is mid-segment");
        damage(&segment, zero_at, &[0; 4096]);
        let (kept, lost) = survivors_of_zeroing(&dir, &segment, zero_at);
        assert!(lost.len() > 10, "{which}: {lost:?}");
        let (log, report) = open(&dir);
        if which == "last" {
            assert_eq!(report.quarantined.len(), 1, "{report:?}");
            assert!(report.truncated.is_none());
        }
        assert_records(&read_all(&log, 0), kept);
        assert_eq!(log.stats().quarantined_ranges, 1, "{which}");
    }
}

#[test]
fn a_damaged_last_record_is_quarantined_and_its_offset_never_reused() {
    // The last record was whole and fsynced; a media error flips a bit of its body. A consumer
    // may have read it already, so its offset must not name a new message after the restart.
    let (_tmp, dir) = written_log();
    let last = segment_paths(&dir).pop().unwrap();
    let (last_offset, last_pos, last_len) = *layout(&last, RECORDS).last().unwrap();
    flip(&last, last_pos + 40);
    let (log, report) = open(&dir);
    assert!(report.truncated.is_none(), "{report:?}");
    assert_eq!(report.quarantined.len(), 1);
    assert_eq!(
        (report.quarantined[0].position, report.quarantined[0].len_bytes),
        (last_pos, last_len)
    );
    assert_eq!(report.next_offset, RECORDS, "the damaged record's offset is skipped");
    assert_eq!(log.read_at(last_offset).unwrap(), None);
    append_range(&log, RECORDS, 2);
    drop(log);
    let (log, report) = open(&dir);
    assert_eq!(report.quarantined.len(), 1, "still quarantined, now before valid records");
    assert_records(
        &read_all(&log, 0),
        all_but(&[last_offset]).into_iter().chain(RECORDS..RECORDS + 2),
    );
}

#[test]
fn a_segment_cut_short_behind_the_logs_back_is_reported_and_reading_moves_on() {
    let (_tmp, dir) = written_log();
    let (log, _) = open(&dir);
    let first = segment_paths(&dir).remove(0);
    let records = layout(&first, end_offset_of(&dir, &first));
    let full_len = std::fs::metadata(&first).unwrap().len();
    let (cut_offset, cut_pos, _) = records[records.len() / 2];
    OpenOptions::new().write(true).open(&first).unwrap().set_len(cut_pos).unwrap();
    let kept: Vec<u64> =
        (0..RECORDS).filter(|o| *o < cut_offset || *o >= records.len() as u64).collect();
    assert_records(&read_all(&log, 0), kept);
    let stats = log.stats();
    assert_eq!((stats.quarantined_ranges, stats.quarantined_bytes), (1, full_len - cut_pos));
}
