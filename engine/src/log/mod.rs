//! The topic log: a crash-safe, segmented, append-only log of records, one per topic.
//!
//! # Design
//! - **Offsets.** Every record gets a 64-bit offset, dense and increasing (FORMAT.md §1). The
//!   writer assigns offsets when a batch is queued, and undoes the assignment if the batch fails,
//!   so a failed append leaves no gap.
//! - **Group commit.** Appenders queue encoded records under one mutex. Whoever finds no write in
//!   progress becomes the leader: it takes everything queued, writes it with one positional write
//!   (per segment touched), fsyncs once if the policy asks for it, then completes every batch it
//!   carried and hands over. While it does I/O, later appenders queue up for the next round, so
//!   under load one fsync covers many batches.
//! - **Visibility.** Readers see a round only when it succeeded: the leader publishes the new
//!   segment lengths, then new segments, then the next offset. A failed round is undone by
//!   truncation before anyone could read it, so an offset never names two different records in
//!   one process.
//! - **Failure.** ENOSPC or an I/O error while writing fails the round: the bytes are truncated
//!   away and every batch queued gets the error; later appends are accepted again. A failed fsync,
//!   or a failed undo, **poisons** the log: it refuses writes until reopened and never retries the
//!   fsync (what the kernel dropped after a failed fsync cannot be recovered by retrying).
//! - **Recovery** reads only the last segment (FORMAT.md §5). Older segments are checked by the
//!   scans that read them; damage found there is logged, counted and skipped.
//! - **Memory.** A segment costs a few words plus a sparse index of one entry per
//!   [`INDEX_INTERVAL_BYTES`](segment::INDEX_INTERVAL_BYTES) of log, built when a seek first needs
//!   it. File handles of older segments are opened on first read.

mod error;
mod offline;
mod reader;
mod recovery;
mod scan;
mod segment;
mod writer;

use crate::sync::lock;
use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

pub use error::LogError;
pub use offline::{
    SEGMENT_FIRST_RECORD_POS, SegmentItem, SegmentListing, SegmentReader, list_segments,
    segment_header_problem,
};
pub use reader::LogReader;
pub(crate) use recovery::whole_frame_at;
pub use recovery::{RecoveryReport, Truncation};
pub use scan::Record;
pub use segment::Quarantined;

use crate::format::{FORMAT_MAX_BODY_BYTES, FRAME_HEADER_LEN};
use crate::storage::{Storage, StorageFile};
use segment::{Damage, Segment};
use writer::WriterState;

/// NSQ's `--max-bytes-per-file` default: 100 MiB.
pub const DEFAULT_MAX_BYTES_PER_FILE: u64 = 100 * 1024 * 1024;
/// NSQ's `--max-msg-size` default: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u32 = 1024 * 1024;
/// Records one append may carry.
pub const DEFAULT_MAX_BATCH_RECORDS: usize = 65_536;
/// NSQ's `--sync-every` default.
pub const DEFAULT_SYNC_EVERY_RECORDS: u64 = 2500;
/// NSQ's `--sync-timeout` default.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(2);

/// When appended records are fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// fsync before an append returns (`--sync-every=1`). Concurrent appends share one fsync.
    Always,
    /// NSQ's policy: an append returns once written; fsync after `records` records or when
    /// `interval` has passed since the last fsync, whichever comes first. The interval is checked
    /// on append and by [`TopicLog::sync_if_due`], which the owner calls on a timer.
    Every { records: u64, interval: Duration },
}

impl SyncPolicy {
    /// NSQ's `--sync-every` / `--sync-timeout`: `--sync-every=1` means [`SyncPolicy::Always`].
    pub fn from_nsq_flags(sync_every: u64, sync_timeout: Duration) -> Self {
        if sync_every <= 1 {
            Self::Always
        } else {
            Self::Every { records: sync_every, interval: sync_timeout }
        }
    }
}

impl Default for SyncPolicy {
    fn default() -> Self {
        Self::Every { records: DEFAULT_SYNC_EVERY_RECORDS, interval: DEFAULT_SYNC_INTERVAL }
    }
}

/// Limits and policies of a topic log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A segment rolls before it would grow past this (unless it holds no record yet).
    pub max_bytes_per_file: u64,
    /// Largest body accepted by [`TopicLog::append`].
    pub max_body_bytes: u32,
    /// Most records one append may carry.
    pub max_batch_records: usize,
    pub sync: SyncPolicy,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            max_bytes_per_file: DEFAULT_MAX_BYTES_PER_FILE,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_batch_records: DEFAULT_MAX_BATCH_RECORDS,
            sync: SyncPolicy::default(),
        }
    }
}

/// A record to append. The log assigns its offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewRecord<'a> {
    /// Publish time, nanoseconds since the Unix epoch.
    pub timestamp_ns: i64,
    /// Deliver no earlier than this (Unix ns); `0` when not deferred.
    pub deliver_at_ns: i64,
    pub body: &'a [u8],
}

/// Describes a segment handed to an archiver or removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub path: PathBuf,
    pub first_offset: u64,
    /// The first offset of the next segment: every record here is below it.
    pub end_offset: u64,
    pub len_bytes: u64,
}

/// Keeps a segment somewhere before the log deletes it (for `--archive`).
pub trait SegmentArchiver {
    /// Called with the segment's file before it is deleted; an error keeps the segment.
    fn archive(&self, segment: &SegmentInfo, file: &dyn StorageFile) -> std::io::Result<()>;
}

/// Cheap counters of a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStats {
    /// Offset of the oldest retained record (or of the next one, when none is retained).
    pub oldest_offset: u64,
    /// One past the offset of the last appended record.
    pub next_offset: u64,
    /// Every record below this offset is durable.
    pub synced_offset: u64,
    pub segments: usize,
    /// Records queued for the next group-commit round, not yet written.
    pub queued_records: u64,
    /// Damaged ranges found and skipped since open (recovery's included).
    pub quarantined_ranges: u64,
    pub quarantined_bytes: u64,
    /// Records queued by [`TopicLog::append_queued`] whose write failed.
    pub lost_records: u64,
}

/// The log of one topic. See the module documentation.
#[derive(Debug)]
pub struct TopicLog {
    shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    config: LogConfig,
    state: Mutex<WriterState>,
    wakeup: Condvar,
    segments: RwLock<Arc<Vec<Arc<Segment>>>>,
    next_offset: AtomicU64,
    synced_offset: AtomicU64,
    removal: Mutex<()>,
    quarantine_seen: Mutex<BTreeSet<(PathBuf, u64)>>,
    quarantined_ranges: AtomicU64,
    quarantined_bytes: AtomicU64,
    lost_records: AtomicU64,
}

impl TopicLog {
    /// Opens (creating if needed) the log in `dir`, recovering from a crash as FORMAT.md §5 says.
    /// Fails only on I/O errors, never because of damaged data.
    pub fn open(
        storage: Arc<dyn Storage>,
        dir: impl Into<PathBuf>,
        config: LogConfig,
    ) -> Result<(Self, RecoveryReport), LogError> {
        let (shared, report) = recovery::open(storage, dir.into(), config)?;
        Ok((Self { shared: Arc::new(shared) }, report))
    }

    /// Appends `records` and returns their offsets. Returns once the records are written (and,
    /// under [`SyncPolicy::Always`], fsynced). On error nothing of the batch is in the log.
    pub fn append(&self, records: &[NewRecord<'_>]) -> Result<Range<u64>, LogError> {
        self.shared.append(records)
    }

    /// Queues `records` to be written by the next round and returns their offsets at once,
    /// without waiting for the write (NSQ's memory queue, `--mem-queue-size`). Readers see them
    /// once written. Queues nothing and returns `Ok(None)` if more than `max_queued_records`
    /// would then wait. If their write fails they are lost, counted in
    /// [`LogStats::lost_records`], and their offsets are handed out again.
    pub fn append_queued(
        &self,
        records: &[NewRecord<'_>],
        max_queued_records: u64,
    ) -> Result<Option<Range<u64>>, LogError> {
        self.shared.append_queued(records, max_queued_records)
    }

    /// Writes every queued record (without an fsync unless the policy asks for one). Returns
    /// whether there was anything to write.
    pub fn write_queued(&self) -> Result<bool, LogError> {
        self.shared.write_queued()
    }

    /// Makes every appended record durable.
    pub fn sync(&self) -> Result<(), LogError> {
        self.shared.sync(false).map(|_| ())
    }

    /// Under [`SyncPolicy::Every`], fsyncs if records are waiting and the interval has passed.
    /// Returns whether it synced.
    pub fn sync_if_due(&self) -> Result<bool, LogError> {
        self.shared.sync(true)
    }

    /// A reader of the records from `from` on (from the oldest retained, if `from` was removed).
    pub fn reader(&self, from: u64) -> LogReader {
        LogReader::new(Arc::clone(&self.shared), from)
    }

    /// The record at `offset`, or `None` when there is none: removed, not yet written, or lost to
    /// damage.
    pub fn read_at(&self, offset: u64) -> Result<Option<Record>, LogError> {
        self.shared.read_at(offset)
    }

    /// Deletes, or archives and then deletes, every segment all of whose records are below
    /// `offset`. The last segment is never removed. Returns the segments removed.
    pub fn remove_below(
        &self,
        offset: u64,
        archiver: Option<&dyn SegmentArchiver>,
    ) -> Result<Vec<SegmentInfo>, LogError> {
        self.shared.remove_below(offset, archiver)
    }

    /// fsyncs and refuses further appends. Readers keep working.
    pub fn close(&self) -> Result<(), LogError> {
        self.shared.close()
    }

    pub fn stats(&self) -> LogStats {
        self.shared.stats()
    }

    /// One past the offset of the last appended record.
    pub fn next_offset(&self) -> u64 {
        self.shared.next_offset.load(Ordering::Acquire)
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }
}

impl Shared {
    fn segments(&self) -> Arc<Vec<Arc<Segment>>> {
        Arc::clone(&crate::sync::read(&self.segments))
    }

    /// The segment holding `offset` (the last whose first offset is at or below it) and the first
    /// offset of the one after it.
    fn segment_for(&self, offset: u64) -> Option<(Arc<Segment>, Option<u64>)> {
        let segments = self.segments();
        let at = segments.partition_point(|s| s.first_offset <= offset).checked_sub(1)?;
        Some((Arc::clone(&segments[at]), segments.get(at + 1).map(|s| s.first_offset)))
    }

    fn is_listed(&self, segment: &Arc<Segment>) -> bool {
        self.segments().iter().any(|listed| Arc::ptr_eq(listed, segment))
    }

    /// The segment after `segment`, if there is one now.
    fn segment_after(&self, segment: &Segment) -> Option<(Arc<Segment>, Option<u64>)> {
        let segments = self.segments();
        let at = segments.partition_point(|s| s.first_offset <= segment.first_offset);
        let next = segments.get(at)?;
        Some((Arc::clone(next), segments.get(at + 1).map(|s| s.first_offset)))
    }

    /// Logs and counts damage a scan found, once per range.
    fn report_damage(&self, segment: &Segment, damage: &[Damage]) {
        for d in damage {
            let fresh = lock(&self.quarantine_seen).insert((segment.path.clone(), d.pos));
            if fresh {
                self.quarantined_ranges.fetch_add(1, Ordering::Relaxed);
                self.quarantined_bytes.fetch_add(d.len_bytes, Ordering::Relaxed);
                tracing::warn!(
                    segment = %segment.path.display(),
                    position = d.pos,
                    len_bytes = d.len_bytes,
                    after_offset = ?d.after_offset,
                    "damaged bytes in segment quarantined: skipped, records after them kept"
                );
            }
        }
    }

    fn read_at(&self, offset: u64) -> Result<Option<Record>, LogError> {
        if offset >= self.next_offset.load(Ordering::Acquire) {
            return Ok(None);
        }
        let Some((segment, limit)) = self.segment_for(offset) else {
            return Ok(None);
        };
        let Some(mut cursor) = reader::Cursor::open(self, segment, limit, offset)? else {
            return Ok(None);
        };
        while let Some(record) = cursor.next(self)? {
            if record.offset >= offset {
                return Ok((record.offset == offset).then_some(record));
            }
        }
        Ok(None)
    }

    fn remove_below(
        &self,
        offset: u64,
        archiver: Option<&dyn SegmentArchiver>,
    ) -> Result<Vec<SegmentInfo>, LogError> {
        let _one_removal_at_a_time = lock(&self.removal);
        let segments = self.segments();
        let mut removed = Vec::new();
        for pair in segments.windows(2) {
            let (segment, next) = (&pair[0], &pair[1]);
            if next.first_offset > offset {
                break;
            }
            let info = SegmentInfo {
                path: segment.path.clone(),
                first_offset: segment.first_offset,
                end_offset: next.first_offset,
                len_bytes: segment.written_len(),
            };
            if let Some(archiver) = archiver {
                let file = segment.file(&*self.storage)?;
                archiver
                    .archive(&info, &*file)
                    .map_err(|e| LogError::io("archive", &info.path, e))?;
            }
            // Unlist first: a reader that finds the segment listed must be able to open it.
            // Readers that opened it already keep reading their handle.
            {
                let mut list = crate::sync::write(&self.segments);
                let kept: Vec<_> = list
                    .iter()
                    .filter(|s| s.first_offset != segment.first_offset)
                    .cloned()
                    .collect();
                *list = Arc::new(kept);
            }
            self.storage
                .remove_file(&segment.path)
                .map_err(|e| LogError::io("remove", &segment.path, e))?;
            removed.push(info);
        }
        Ok(removed)
    }

    fn stats(&self) -> LogStats {
        let segments = self.segments();
        let next_offset = self.next_offset.load(Ordering::Acquire);
        LogStats {
            oldest_offset: segments
                .first()
                .map_or(next_offset, |s| s.first_offset.min(next_offset)),
            next_offset,
            synced_offset: self.synced_offset.load(Ordering::Acquire),
            segments: segments.len(),
            queued_records: self.queued_records(),
            quarantined_ranges: self.quarantined_ranges.load(Ordering::Relaxed),
            quarantined_bytes: self.quarantined_bytes.load(Ordering::Relaxed),
            lost_records: self.lost_records.load(Ordering::Relaxed),
        }
    }
}

/// Checks an append against the configured limits before anything is queued.
fn check_limits(config: &LogConfig, records: &[NewRecord<'_>]) -> Result<(), LogError> {
    if records.len() > config.max_batch_records {
        return Err(LogError::BatchTooLarge {
            len: records.len(),
            limit_records: config.max_batch_records,
        });
    }
    let limit_bytes = config.max_body_bytes.min(FORMAT_MAX_BODY_BYTES);
    match records.iter().find(|r| r.body.len() > limit_bytes as usize) {
        Some(record) => Err(LogError::BodyTooLarge { len: record.body.len(), limit_bytes }),
        None => Ok(()),
    }
}

/// Bytes a record takes in a segment.
fn record_len(record: &NewRecord<'_>) -> u64 {
    (FRAME_HEADER_LEN + record.body.len()) as u64
}
