//! The append path: batches queue under one mutex; a leader writes and fsyncs them for everyone
//! (group commit). See the module documentation of `log` for the rules.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard, OnceLock};
use std::time::Instant;

use super::segment::{FIRST_RECORD_POS, Segment};
use super::{LogError, NewRecord, Shared, SyncPolicy, check_limits, record_len};
use crate::format::{RecordRef, SegmentHeader, encode_record, segment_file_name};
use crate::storage::{Storage, StorageFile, is_disk_full};
use crate::sync::lock;

/// Write buffers kept for reuse between rounds.
const SPARE_BUFFERS_MAX: usize = 4;
/// A buffer larger than this is not kept for reuse.
const SPARE_BUFFER_BYTES_MAX: usize = 8 * 1024 * 1024;

type Completion = Arc<OnceLock<Result<(), LogError>>>;

#[derive(Debug)]
pub(crate) struct WriterState {
    /// The offset the next queued record gets.
    assigned_next: u64,
    /// Length the last segment will have once everything queued is written.
    queued_segment_len: u64,
    queued: Vec<Chunk>,
    waiting: Vec<Completion>,
    /// Records queued by [`Shared::append_queued`], whose appenders do not wait for the round.
    detached_records: u64,
    leader: bool,
    poisoned: Option<LogError>,
    closed: bool,
    unsynced_records: u64,
    last_sync: Instant,
    spare_buffers: Vec<Vec<u8>>,
}

/// Encoded records bound for one segment.
#[derive(Debug)]
struct Chunk {
    /// Create a segment starting at this offset before writing the bytes.
    roll_to: Option<u64>,
    bytes: Vec<u8>,
    records: u64,
    end_offset: u64,
}

impl WriterState {
    pub(crate) fn new(next_offset: u64, segment_len: u64) -> Self {
        Self {
            assigned_next: next_offset,
            queued_segment_len: segment_len,
            queued: Vec::new(),
            waiting: Vec::new(),
            detached_records: 0,
            leader: false,
            poisoned: None,
            closed: false,
            unsynced_records: 0,
            last_sync: Instant::now(),
            spare_buffers: Vec::new(),
        }
    }

    fn check_open(&self, dir: &Path) -> Result<(), LogError> {
        if let Some(poisoned) = &self.poisoned {
            return Err(poisoned.clone());
        }
        if self.closed {
            return Err(LogError::Closed { dir: dir.to_path_buf() });
        }
        Ok(())
    }

    /// Refuses a batch whose offsets would pass `u64::MAX`: offsets are never reused, so the
    /// log has no room for it.
    fn check_offsets(&self, dir: &Path, records: usize) -> Result<(), LogError> {
        match self.assigned_next.checked_add(records as u64) {
            Some(_) => Ok(()),
            None => Err(LogError::OffsetsExhausted { dir: dir.to_path_buf(), len: records }),
        }
    }

    fn enqueue(&mut self, records: &[NewRecord<'_>], max_bytes_per_file: u64) -> Range<u64> {
        let first = self.assigned_next;
        for record in records {
            let len = record_len(record);
            let has_records = self.queued_segment_len > FIRST_RECORD_POS;
            let roll = has_records && self.queued_segment_len + len > max_bytes_per_file;
            if roll || self.queued.is_empty() {
                let bytes = self.spare_buffers.pop().unwrap_or_default();
                let roll_to = roll.then_some(self.assigned_next);
                self.queued.push(Chunk { roll_to, bytes, records: 0, end_offset: 0 });
                if roll {
                    self.queued_segment_len = FIRST_RECORD_POS;
                }
            }
            let Some(chunk) = self.queued.last_mut() else {
                continue;
            };
            let encoded = RecordRef {
                offset: self.assigned_next,
                timestamp_ns: record.timestamp_ns,
                deliver_at_ns: record.deliver_at_ns,
                body: record.body,
            };
            encode_record(&encoded, &mut chunk.bytes);
            self.assigned_next += 1;
            chunk.records += 1;
            chunk.end_offset = self.assigned_next;
            self.queued_segment_len += len;
        }
        first..self.assigned_next
    }

    fn recycle(&mut self, chunks: Vec<Chunk>) {
        for mut chunk in chunks {
            if self.spare_buffers.len() < SPARE_BUFFERS_MAX
                && chunk.bytes.capacity() <= SPARE_BUFFER_BYTES_MAX
            {
                chunk.bytes.clear();
                self.spare_buffers.push(chunk.bytes);
            }
        }
    }
}

/// How a segment was changed by a successful round, to publish.
struct Written {
    /// Every segment written to, with its new length; the first is the one that was last.
    touched: Vec<(Arc<Segment>, u64)>,
    end_offset: u64,
    /// Every record below this is durable now: a roll fsyncs the segment it leaves.
    synced_below: Option<u64>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, WriterState> {
        lock(&self.state)
    }

    pub(super) fn queued_records(&self) -> u64 {
        self.state().queued.iter().map(|chunk| chunk.records).sum()
    }

    pub(super) fn append(&self, records: &[NewRecord<'_>]) -> Result<Range<u64>, LogError> {
        check_limits(&self.config, records)?;
        let mut state = self.state();
        state.check_open(&self.dir)?;
        if records.is_empty() {
            let next = state.assigned_next;
            return Ok(next..next);
        }
        state.check_offsets(&self.dir, records.len())?;
        let range = state.enqueue(records, self.config.max_bytes_per_file);
        let completion: Completion = Arc::default();
        state.waiting.push(Arc::clone(&completion));
        loop {
            if let Some(result) = completion.get() {
                return result.clone().map(|()| range);
            }
            if let Some(poisoned) = &state.poisoned {
                // Only a round that panicked leaves a batch without an outcome.
                return Err(poisoned.clone());
            }
            state = if state.leader {
                crate::sync::wait(&self.wakeup, state)
            } else {
                self.lead(state, false).0
            };
        }
    }

    /// Queues `records` without waiting for them to be written, unless that would leave more
    /// than `max_queued_records` queued: then returns `Ok(None)` and queues nothing.
    pub(super) fn append_queued(
        &self,
        records: &[NewRecord<'_>],
        max_queued_records: u64,
    ) -> Result<Option<Range<u64>>, LogError> {
        check_limits(&self.config, records)?;
        let mut state = self.state();
        state.check_open(&self.dir)?;
        let queued: u64 = state.queued.iter().map(|chunk| chunk.records).sum();
        if queued + records.len() as u64 > max_queued_records {
            return Ok(None);
        }
        state.check_offsets(&self.dir, records.len())?;
        let range = state.enqueue(records, self.config.max_bytes_per_file);
        state.detached_records += records.len() as u64;
        Ok(Some(range))
    }

    /// The writer state once no round is running, or why the log takes no writes.
    fn state_between_rounds(&self) -> Result<MutexGuard<'_, WriterState>, LogError> {
        let mut state = self.state();
        loop {
            state.check_open(&self.dir)?;
            if !state.leader {
                return Ok(state);
            }
            state = crate::sync::wait(&self.wakeup, state);
        }
    }

    /// Writes everything queued (by a round of its own once any running round is done).
    pub(super) fn write_queued(&self) -> Result<bool, LogError> {
        let state = self.state_between_rounds()?;
        if state.queued.is_empty() {
            return Ok(false);
        }
        self.lead(state, false).1.map(|()| true)
    }

    /// Writes everything queued and fsyncs. With `only_if_due`, does nothing unless the policy's
    /// interval has passed with records unsynced. Returns whether it synced.
    pub(super) fn sync(&self, only_if_due: bool) -> Result<bool, LogError> {
        let state = self.state_between_rounds()?;
        let idle = state.queued.is_empty() && state.unsynced_records == 0;
        let due = match self.config.sync {
            SyncPolicy::Always => false,
            SyncPolicy::Every { interval, .. } => state.last_sync.elapsed() >= interval,
        };
        if idle || (only_if_due && !due) {
            return Ok(false);
        }
        self.lead(state, true).1.map(|()| true)
    }

    /// Refuses new appends, then writes and fsyncs everything queued or unsynced. Appends queued
    /// before the close complete normally.
    pub(super) fn close(&self) -> Result<(), LogError> {
        let mut state = self.state();
        if let Some(poisoned) = &state.poisoned {
            return Err(poisoned.clone());
        }
        state.closed = true;
        loop {
            while state.leader {
                state = crate::sync::wait(&self.wakeup, state);
            }
            if state.queued.is_empty() && state.unsynced_records == 0 {
                return Ok(());
            }
            let (next, result) = self.lead(state, true);
            result?;
            state = next;
        }
    }

    /// One round of group commit, run by the thread that found no leader.
    fn lead<'a>(
        &'a self,
        mut state: MutexGuard<'a, WriterState>,
        force_sync: bool,
    ) -> (MutexGuard<'a, WriterState>, Result<(), LogError>) {
        state.leader = true;
        let chunks = std::mem::take(&mut state.queued);
        let waiting = std::mem::take(&mut state.waiting);
        let detached = std::mem::take(&mut state.detached_records);
        let records: u64 = chunks.iter().map(|c| c.records).sum();
        let sync = force_sync
            || match self.config.sync {
                SyncPolicy::Always => true,
                SyncPolicy::Every { records: every, interval } => {
                    state.unsynced_records + records >= every
                        || state.last_sync.elapsed() >= interval
                }
            };
        drop(state);

        let mut guard = RoundGuard { shared: self, finished: false };
        let result = self.write_round(&chunks, sync);

        let mut state = self.state();
        guard.finished = true;
        let outcome = result.as_ref().map(|_| ()).map_err(LogError::clone);
        match result {
            Ok(written) => {
                self.publish(&written);
                if let Some(synced_below) = written.synced_below {
                    self.synced_offset.fetch_max(synced_below, Ordering::AcqRel);
                }
                if sync {
                    state.unsynced_records = 0;
                    state.last_sync = Instant::now();
                } else {
                    state.unsynced_records += records;
                }
                for completion in waiting {
                    let _ = completion.set(Ok(()));
                }
            }
            Err(error) => {
                tracing::error!(dir = %self.dir.display(), %error, "append failed");
                if matches!(error, LogError::Poisoned { .. }) {
                    state.poisoned = Some(error.clone());
                }
                // Batches queued during the round were encoded after the failed ones, with the
                // offsets that follow theirs: they fail too, and the offsets are handed out again.
                let later = std::mem::take(&mut state.queued);
                state.recycle(later);
                let later_waiting = std::mem::take(&mut state.waiting);
                let lost = detached + std::mem::take(&mut state.detached_records);
                if lost > 0 {
                    self.lost_records.fetch_add(lost, Ordering::Relaxed);
                    tracing::error!(
                        dir = %self.dir.display(),
                        records = lost,
                        "records acknowledged from memory were lost: their write failed"
                    );
                }
                for completion in waiting.into_iter().chain(later_waiting) {
                    let _ = completion.set(Err(error.clone()));
                }
                state.assigned_next = self.next_offset.load(Ordering::Acquire);
                state.queued_segment_len = self.segments().last().map_or(0, |s| s.written_len());
            }
        }
        state.recycle(chunks);
        state.leader = false;
        self.wakeup.notify_all();
        (state, outcome)
    }

    /// Writes the chunks of a round; on failure undoes what it wrote.
    fn write_round(&self, chunks: &[Chunk], sync: bool) -> Result<Written, LogError> {
        let first = self.segments().last().cloned().ok_or_else(|| LogError::Poisoned {
            dir: self.dir.clone(),
            cause: "the log has no segment".into(),
        })?;
        let start_len = first.written_len();
        let mut touched = vec![(Arc::clone(&first), start_len)];
        let mut end_offset = self.next_offset.load(Ordering::Acquire);
        let mut synced_below = None;
        let outcome = (|| {
            let mut file = first.file(&*self.storage)?;
            for chunk in chunks {
                if let Some(base) = chunk.roll_to {
                    let (old, _) = &touched[touched.len() - 1];
                    sync_or_poison(&*file, &old.path, &self.dir)?;
                    synced_below = Some(base);
                    let (segment, new_file) = create_segment(&*self.storage, &self.dir, base)?;
                    touched.push((segment, FIRST_RECORD_POS));
                    file = new_file;
                }
                let last = touched.len() - 1;
                let (segment, len) = &mut touched[last];
                file.write_all_at(&chunk.bytes, *len).map_err(|e| write_error(&segment.path, e))?;
                *len += chunk.bytes.len() as u64;
                end_offset = chunk.end_offset;
            }
            if sync {
                let (segment, _) = &touched[touched.len() - 1];
                sync_or_poison(&*file, &segment.path, &self.dir)?;
                synced_below = Some(end_offset);
            }
            Ok(())
        })();
        match outcome {
            Ok(()) => Ok(Written { touched, end_offset, synced_below }),
            Err(error) => Err(self.undo_round(&first, start_len, &touched[1..], error)),
        }
    }

    /// Truncates the last segment back to `start_len` and removes segments the round created.
    /// Returns the error to report: the original, or poison if the undo failed.
    fn undo_round(
        &self,
        first: &Segment,
        start_len: u64,
        created: &[(Arc<Segment>, u64)],
        error: LogError,
    ) -> LogError {
        if matches!(error, LogError::Poisoned { .. }) {
            return error;
        }
        let undo = || -> std::io::Result<()> {
            for (segment, _) in created.iter().rev() {
                self.storage.remove_file(&segment.path)?;
            }
            let file = first.file(&*self.storage).map_err(std::io::Error::other)?;
            file.set_len(start_len)?;
            // A roll in the failed round fsynced part of what is cut here: the cut must be
            // durable too, or a power loss would bring back records whose append failed.
            file.sync_data()
        };
        match undo() {
            Ok(()) => error,
            Err(undo_error) => LogError::Poisoned {
                dir: self.dir.clone(),
                cause: format!("could not undo a failed write ({error}): {undo_error}").into(),
            },
        }
    }

    /// Makes a successful round visible to readers: lengths, then segments, then the offset.
    fn publish(&self, written: &Written) {
        for (segment, len) in &written.touched {
            segment.publish_len(*len);
        }
        if written.touched.len() > 1 {
            let mut list = crate::sync::write(&self.segments);
            let mut segments = Vec::clone(&list);
            segments.extend(written.touched[1..].iter().map(|(s, _)| Arc::clone(s)));
            *list = Arc::new(segments);
        }
        self.next_offset.store(written.end_offset, Ordering::Release);
    }
}

/// Poisons the log if a round unwinds out of its I/O, so that no appender waits forever for a
/// leader that is gone.
struct RoundGuard<'a> {
    shared: &'a Shared,
    finished: bool,
}

impl Drop for RoundGuard<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut state = self.shared.state();
        let poisoned = LogError::Poisoned {
            dir: self.shared.dir.clone(),
            cause: "a write round panicked".into(),
        };
        for completion in std::mem::take(&mut state.waiting) {
            let _ = completion.set(Err(poisoned.clone()));
        }
        state.poisoned.get_or_insert(poisoned);
        state.leader = false;
        self.shared.wakeup.notify_all();
    }
}

fn sync_or_poison(file: &dyn StorageFile, path: &Path, dir: &Path) -> Result<(), LogError> {
    file.sync_data().map_err(|error| LogError::Poisoned {
        dir: dir.to_path_buf(),
        cause: format!("fsync of {} failed: {error}", path.display()).into(),
    })
}

fn write_error(path: &Path, error: std::io::Error) -> LogError {
    if is_disk_full(&error) {
        LogError::DiskFull { path: path.to_path_buf() }
    } else {
        LogError::io("write", path, error)
    }
}

/// Creates the segment starting at `first_offset`: file (durable entry), header, fsync.
pub(super) fn create_segment(
    storage: &dyn Storage,
    dir: &Path,
    first_offset: u64,
) -> Result<(Arc<Segment>, Arc<dyn StorageFile>), LogError> {
    let path: PathBuf = dir.join(segment_file_name(first_offset));
    let file = match storage.create_new(&path) {
        Ok(file) => file,
        Err(error) => {
            // The entry may exist although creating failed (its directory fsync failed). Left
            // there, the next directory fsync would make it durable: an empty segment in the
            // middle of the log, whose name would hide the records written past it into the
            // segment before (FORMAT.md §3, rule 4; found by the fuzz target engine_ops).
            let error = write_error(&path, error);
            return Err(match storage.remove_file(&path) {
                Ok(()) => error,
                Err(remove_error) if remove_error.kind() == std::io::ErrorKind::NotFound => error,
                Err(remove_error) => LogError::Poisoned {
                    dir: dir.to_path_buf(),
                    cause: format!(
                        "could not remove {} after {error}: {remove_error}",
                        path.display()
                    )
                    .into(),
                },
            });
        }
    };
    let header = SegmentHeader { first_offset }.encode();
    let written = file.write_all_at(&header, 0).map_err(|e| write_error(&path, e));
    if let Err(error) = written {
        return Err(match storage.remove_file(&path) {
            Ok(()) => error,
            Err(remove_error) => LogError::Poisoned {
                dir: dir.to_path_buf(),
                cause: format!("could not remove {} after {error}: {remove_error}", path.display())
                    .into(),
            },
        });
    }
    sync_or_poison(&*file, &path, dir)?;
    let segment = Segment::new(first_offset, path, Some(Arc::clone(&file)), FIRST_RECORD_POS);
    Ok((Arc::new(segment), file))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::log::{LogConfig, TopicLog};
    use crate::storage::SimStorage;

    #[test]
    fn the_end_of_the_offset_space_refuses_appends_and_keeps_nothing() {
        // Goal: a log whose segment is named near u64::MAX refuses what its offsets cannot hold
        // instead of overflowing (found by the fuzz target segment_recovery). Method: open a log
        // whose only segment starts at u64::MAX - 1, append until the offsets run out.
        let storage = SimStorage::new();
        let dir = PathBuf::from("/t");
        storage.create_dir_all(&dir).unwrap();
        create_segment(&storage, &dir, u64::MAX - 1).unwrap();
        let (log, report) = TopicLog::open(Arc::new(storage), &dir, LogConfig::default()).unwrap();
        assert_eq!(report.next_offset, u64::MAX - 1);
        let record = NewRecord { timestamp_ns: 1, deliver_at_ns: 0, body: b"last" };
        let error = log.append(&[record, record]).unwrap_err();
        assert!(matches!(error, LogError::OffsetsExhausted { len: 2, .. }), "{error}");
        assert_eq!(log.append(&[record]).unwrap(), u64::MAX - 1..u64::MAX);
        assert!(matches!(log.append(&[record]), Err(LogError::OffsetsExhausted { .. })));
        assert!(matches!(log.append_queued(&[record], 10), Err(LogError::OffsetsExhausted { .. })));
        assert_eq!(log.next_offset(), u64::MAX);
        assert_eq!(log.read_at(u64::MAX - 1).unwrap().unwrap().body, &b"last"[..]);
    }

    /// A log of 100-byte segments (a 40-byte body rolls), fsync before return, on a simulator.
    fn small_segment_log() -> (SimStorage, Arc<dyn Storage>, PathBuf, LogConfig, TopicLog) {
        let storage = SimStorage::new();
        let dir = PathBuf::from("/t");
        let config = LogConfig {
            max_bytes_per_file: 100,
            sync: crate::log::SyncPolicy::Always,
            ..LogConfig::default()
        };
        let shared: Arc<dyn Storage> = Arc::new(storage.clone());
        let (log, _) = TopicLog::open(Arc::clone(&shared), &dir, config.clone()).unwrap();
        (storage, shared, dir, config, log)
    }

    #[test]
    fn records_read_back_after_a_failed_fsync_are_made_durable_at_open() {
        // Goal: a reopen in the same process after a failed fsync reads records that may be only
        // in the page cache, and reports them as synced, so checkpoints may refer to them; open
        // must make them durable, or a power loss would take them and their offsets would be
        // handed out again below a checkpoint (found by the fuzz target engine_ops). Method: fail
        // the fsync of an append, reopen without a crash, lose power, reopen and read.
        let (storage, shared, dir, config, log) = small_segment_log();
        let record = NewRecord { timestamp_ns: 1, deliver_at_ns: 0, body: b"r" };
        assert_eq!(log.append(&[record]).unwrap(), 0..1);
        // The append writes (1) and fsyncs (2), which fails.
        storage.fail_nth_op(2, std::io::ErrorKind::Other);
        assert!(matches!(log.append(&[record]), Err(LogError::Poisoned { .. })));
        drop(log);
        let (log, _) = TopicLog::open(Arc::clone(&shared), &dir, config.clone()).unwrap();
        assert_eq!(log.stats().synced_offset, 2, "the record read back counts as synced");
        drop(log);
        storage.crash();
        let (log, _) = TopicLog::open(shared, &dir, config).unwrap();
        assert_eq!(log.next_offset(), 2, "the record read back and counted as synced survives");
    }

    #[test]
    fn a_segment_whose_creation_failed_leaves_no_file_behind() {
        // Goal: a roll whose directory fsync fails leaves no empty segment that a later
        // directory fsync makes durable, hiding acknowledged records after a restart (found by
        // the fuzz target engine_ops). Method: fail the directory fsync of a roll, append into
        // the old segment and roll past it, lose power, reopen and read everything.
        let (storage, shared, dir, config, log) = small_segment_log();
        let small = NewRecord { timestamp_ns: 1, deliver_at_ns: 0, body: b"s" };
        let large = NewRecord { timestamp_ns: 1, deliver_at_ns: 0, body: &[b'x'; 40] };
        assert_eq!(log.append(&[small]).unwrap(), 0..1);
        // The large record rolls: fsync the old segment (1), create the file (2), fsync the
        // directory (3), which fails.
        storage.fail_nth_op(3, std::io::ErrorKind::Other);
        assert!(log.append(&[large]).is_err());
        assert!(storage.contents(&dir.join(segment_file_name(1))).is_none(), "left behind");
        // Fits the first segment; the next one rolls and fsyncs the directory.
        assert_eq!(log.append(&[small]).unwrap(), 1..2);
        assert_eq!(log.append(&[large]).unwrap(), 2..3);
        drop(log);
        storage.crash();
        let (log, _) = TopicLog::open(shared, &dir, config).unwrap();
        let offsets: Vec<u64> =
            (0..3).filter_map(|o| log.read_at(o).unwrap()).map(|r| r.offset).collect();
        assert_eq!(offsets, [0, 1, 2]);
    }

    #[test]
    fn a_segment_whose_removal_was_not_durable_does_not_come_back() {
        // Goal: when undoing a failed write cannot durably remove the segment it created (the
        // directory fsync fails), a reopen settles the directory before writing, so a later
        // power loss cannot bring the segment back in front of records written past its name
        // (found by the fuzz target engine_ops). Method: fail the roll's write, then the
        // directory fsync of the undo's removal; reopen, append, lose power, read.
        let (storage, shared, dir, config, log) = small_segment_log();
        let small = NewRecord { timestamp_ns: 1, deliver_at_ns: 0, body: b"s" };
        let large = NewRecord { timestamp_ns: 1, deliver_at_ns: 0, body: &[b'x'; 40] };
        assert_eq!(log.append(&[small]).unwrap(), 0..1);
        // The roll: fsync the old segment (1), create (2, 3), write the header (4), fsync it
        // (5), write the record (6: ENOSPC); the undo removes the segment (7) and fsyncs the
        // directory (8: EIO).
        storage.fail_nth_op(6, std::io::ErrorKind::StorageFull);
        storage.fail_nth_op(8, std::io::ErrorKind::Other);
        let error = log.append(&[large]).unwrap_err();
        assert!(matches!(error, LogError::Poisoned { .. }), "{error}");
        drop(log);
        let (log, _) = TopicLog::open(Arc::clone(&shared), &dir, config.clone()).unwrap();
        assert_eq!(log.append(&[small]).unwrap(), 1..2);
        drop(log);
        storage.crash();
        let (log, report) = TopicLog::open(shared, &dir, config).unwrap();
        assert_eq!(report.next_offset, 2, "{report:?}");
        assert_eq!(log.read_at(1).unwrap().map(|r| r.offset), Some(1));
    }
}
