//! Opening a log, and recovering it after a crash (FORMAT.md §5).
//!
//! Rules, in the order they apply:
//! 0. The directory is fsynced first: an entry a failed directory fsync left undecided (a segment
//!    whose removal, undoing a failed write, was not made durable) is settled as the listing
//!    shows it before anything is written, so a later crash cannot bring it back in front of
//!    records written past its name.
//! 1. Files whose names are not segment names are ignored and reported.
//! 2. No segment: a new one is created at offset 0.
//! 3. Older segments are not read: they were fsynced whole before the next one was created.
//! 4. The last segment, shorter than a header: a crash while rolling; it gets a fresh header.
//! 5. A bad header in the last segment is reported; its name is trusted and records are read.
//! 6. The last segment is scanned. Damage followed by a valid record is quarantined (reported,
//!    skipped, left in place). Damage that runs to the end is a torn tail, truncated away, unless
//!    it starts with a whole frame whose header names the offset due next: that is a damaged
//!    record, perhaps fsynced and consumed, so it is quarantined and its offset not reused.
//! 7. Appends continue after the last valid record, with the offset after it. The last segment
//!    is fsynced first: what was read back may have been only in the page cache (a write whose
//!    fsync failed, then a reopen in the same process), and checkpoints may now refer to it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex, RwLock};

use super::segment::{Damage, FIRST_RECORD_POS, Quarantined, Segment, header_problem};
use super::writer::{WriterState, create_segment};
use super::{LogConfig, LogError, Shared};
use crate::format::{
    FORMAT_MAX_BODY_BYTES, FRAME_HEADER_LEN, SegmentHeader, parse_segment_file_name,
    peek_len_and_offset,
};
use crate::storage::{Storage, StorageFile, read_full_at};

/// What opening a log found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub dir: PathBuf,
    pub segments: usize,
    pub oldest_offset: u64,
    pub next_offset: u64,
    /// The log did not exist and was created.
    pub created: bool,
    /// A torn tail cut from the last segment.
    pub truncated: Option<Truncation>,
    /// Damaged ranges of the last segment, skipped and left in place.
    pub quarantined: Vec<Quarantined>,
    /// The last segment's header was damaged (the file name was trusted): path and reason.
    pub corrupt_header: Option<(PathBuf, String)>,
    /// The last segment was shorter than a header and got a fresh one.
    pub header_rewritten: Option<PathBuf>,
    /// Files in the log's directory that are not segments.
    pub ignored_files: Vec<PathBuf>,
}

/// Bytes cut from the end of the last segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    pub segment: PathBuf,
    /// The new length of the file: the end of its last valid record.
    pub position: u64,
    pub len_bytes: u64,
}

impl RecoveryReport {
    /// Nothing was damaged.
    pub fn is_clean(&self) -> bool {
        self.truncated.is_none()
            && self.quarantined.is_empty()
            && self.corrupt_header.is_none()
            && self.header_rewritten.is_none()
    }
}

fn validate(config: &LogConfig) -> Result<(), LogError> {
    if config.max_bytes_per_file <= FIRST_RECORD_POS {
        return Err(LogError::InvalidConfig(format!(
            "max_bytes_per_file must be over {FIRST_RECORD_POS}, not {}",
            config.max_bytes_per_file
        )));
    }
    if config.max_batch_records == 0 {
        return Err(LogError::InvalidConfig("max_batch_records must be at least 1".into()));
    }
    Ok(())
}

pub(super) fn open(
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    config: LogConfig,
) -> Result<(Shared, RecoveryReport), LogError> {
    validate(&config)?;
    storage.create_dir_all(&dir).map_err(|e| LogError::io("create directory", &dir, e))?;
    storage.sync_dir(&dir).map_err(|e| LogError::io("fsync directory", &dir, e))?;
    let mut report = RecoveryReport { dir: dir.clone(), ..Default::default() };
    let mut firsts = Vec::new();
    for name in storage.list_dir(&dir).map_err(|e| LogError::io("list", &dir, e))? {
        match name.to_str().and_then(parse_segment_file_name) {
            Some(first_offset) => firsts.push(first_offset),
            None => report.ignored_files.push(dir.join(name)),
        }
    }
    firsts.sort_unstable();
    report.ignored_files.sort();

    let mut segments = Vec::with_capacity(firsts.len().max(1));
    let Some((&last_first, older)) = firsts.split_last() else {
        report.created = true;
        let (segment, _) = create_segment(&*storage, &dir, 0)?;
        return Ok(finish(storage, dir, config, vec![segment], 0, report));
    };
    for &first_offset in older {
        let path = dir.join(crate::format::segment_file_name(first_offset));
        let len = storage
            .open(&path, false)
            .and_then(|file| file.len())
            .map_err(|e| LogError::io("open", &path, e))?;
        segments.push(Arc::new(Segment::new(first_offset, path, None, len)));
    }
    let (last, next_offset) = recover_last(&*storage, &dir, last_first, &mut report)?;
    segments.push(last);
    Ok(finish(storage, dir, config, segments, next_offset, report))
}

/// Rules 4 to 6 for the last segment.
fn recover_last(
    storage: &dyn Storage,
    dir: &std::path::Path,
    first_offset: u64,
    report: &mut RecoveryReport,
) -> Result<(Arc<Segment>, u64), LogError> {
    let path = dir.join(crate::format::segment_file_name(first_offset));
    let io = |op| {
        let path = path.clone();
        move |e| LogError::io(op, path, e)
    };
    let file = storage.open(&path, true).map_err(io("open"))?;
    let mut len = file.len().map_err(io("stat"))?;
    if len < FIRST_RECORD_POS {
        tracing::warn!(segment = %path.display(), len, "segment shorter than its header: rewritten");
        file.write_all_at(&SegmentHeader { first_offset }.encode(), 0).map_err(io("write"))?;
        file.sync_data().map_err(io("fsync"))?;
        report.header_rewritten = Some(path.clone());
        len = FIRST_RECORD_POS;
    } else {
        let problem = header_problem(&*file, first_offset);
        if let Some(reason) = problem {
            tracing::warn!(segment = %path.display(), %reason, "damaged segment header: name trusted");
            report.corrupt_header = Some((path.clone(), reason));
        }
    }
    let segment = Arc::new(Segment::new(first_offset, path.clone(), Some(Arc::clone(&file)), len));
    let (_, damage) = segment.seek(&file, u64::MAX, None)?;
    let mut next_offset =
        segment.last_indexed_offset().map_or(first_offset, |o| o.saturating_add(1));
    for d in &damage {
        let mut cut_at = d.pos;
        let whole_frame = if d.resumed {
            None
        } else {
            whole_frame_at(&*file, d.pos, d.pos + d.len_bytes, next_offset).map_err(io("read"))?
        };
        if let Some((frame_end, offset)) = whole_frame {
            // A whole frame with the offset due next, failing its checksum: a damaged record,
            // perhaps fsynced and consumed. Keep it quarantined and never reuse its offset.
            next_offset = offset.saturating_add(1);
            cut_at = frame_end;
            let whole = Damage { len_bytes: frame_end - d.pos, resumed: true, ..*d };
            report.quarantined.push(segment.quarantined(&whole));
            tracing::warn!(
                segment = %path.display(), position = d.pos, offset,
                "damaged last record quarantined; its offset is not reused"
            );
        }
        if d.resumed {
            tracing::warn!(
                segment = %path.display(), position = d.pos, len_bytes = d.len_bytes,
                "damaged bytes quarantined: skipped, records after them kept"
            );
            report.quarantined.push(segment.quarantined(d));
        } else if cut_at < d.pos + d.len_bytes {
            let len_bytes = d.pos + d.len_bytes - cut_at;
            tracing::warn!(
                segment = %path.display(), position = cut_at, len_bytes, "torn tail truncated"
            );
            file.set_len(cut_at).map_err(io("truncate"))?;
            file.sync_data().map_err(io("fsync"))?;
            segment.truncate_tail(cut_at);
            report.truncated =
                Some(Truncation { segment: path.clone(), position: cut_at, len_bytes });
        }
    }
    // What was read back becomes the log's synced offset, and checkpoints may refer to it: make
    // it durable. It may not be, after a write whose fsync failed and a reopen in the same
    // process; a power loss could then take those records, and their offsets would be assigned
    // again below a channel's checkpoint.
    file.sync_data().map_err(io("fsync"))?;
    Ok((segment, next_offset))
}

/// The end and offset of the frame at `pos` if its header is whole, names `expected_offset`, and
/// its length fits before `end`: a record whose body, not header, is damaged.
pub(crate) fn whole_frame_at(
    file: &dyn StorageFile,
    pos: u64,
    end: u64,
    expected_offset: u64,
) -> std::io::Result<Option<(u64, u64)>> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    if read_full_at(file, &mut header, pos)? < FRAME_HEADER_LEN {
        return Ok(None);
    }
    let Some((body_len, offset)) = peek_len_and_offset(&header) else { return Ok(None) };
    let frame_end = pos + FRAME_HEADER_LEN as u64 + u64::from(body_len);
    let whole = body_len <= FORMAT_MAX_BODY_BYTES && frame_end <= end && offset == expected_offset;
    Ok(whole.then_some((frame_end, offset)))
}

fn finish(
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    config: LogConfig,
    segments: Vec<Arc<Segment>>,
    next_offset: u64,
    mut report: RecoveryReport,
) -> (Shared, RecoveryReport) {
    report.segments = segments.len();
    report.oldest_offset = segments.first().map_or(next_offset, |s| s.first_offset);
    report.next_offset = next_offset;
    let last_len = segments.last().map_or(FIRST_RECORD_POS, |s| s.written_len());
    let quarantined_bytes = report.quarantined.iter().map(|q| q.len_bytes).sum();
    let seen: BTreeSet<_> =
        report.quarantined.iter().map(|q| (q.segment.clone(), q.position)).collect();
    tracing::info!(
        dir = %dir.display(), segments = segments.len(), next_offset,
        clean = report.is_clean(), "topic log opened"
    );
    let shared = Shared {
        storage,
        dir,
        config,
        state: Mutex::new(WriterState::new(next_offset, last_len)),
        wakeup: Condvar::new(),
        segments: RwLock::new(Arc::new(segments)),
        next_offset: AtomicU64::new(next_offset),
        // What recovery read back was fsynced (`recover_last`).
        synced_offset: AtomicU64::new(next_offset),
        removal: Mutex::new(()),
        quarantined_ranges: AtomicU64::new(seen.len() as u64),
        quarantine_seen: Mutex::new(seen),
        quarantined_bytes: AtomicU64::new(quarantined_bytes),
        lost_records: AtomicU64::new(0),
    };
    (shared, report)
}
