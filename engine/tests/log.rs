//! Behaviour of the topic log on the simulated storage: each test names the property it proves.

// A failed unwrap in a test is a failed assertion; the lint guards library code against input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::cast_possible_truncation)]

mod common;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{append_range, assert_records, body, new_record, open, read_all, topic_dir};
use engine::log::{LogConfig, LogError, SegmentArchiver, SegmentInfo, SyncPolicy};
use engine::storage::{SimStorage, Storage, StorageFile};
use engine::{DataDirLock, NewRecord};

fn sim() -> (SimStorage, Arc<dyn Storage>) {
    let sim = SimStorage::new();
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    (sim, storage)
}

fn with_sync(sync: SyncPolicy) -> LogConfig {
    LogConfig { sync, ..LogConfig::default() }
}

fn small_segments(sync: SyncPolicy) -> LogConfig {
    LogConfig { max_bytes_per_file: 512, sync, ..LogConfig::default() }
}

const LAZY: SyncPolicy = SyncPolicy::Every { records: u64::MAX, interval: Duration::MAX };

#[test]
fn appended_records_read_back_in_order_with_dense_offsets() {
    let (_, storage) = sim();
    let (log, report) = open(&storage, &topic_dir(), LogConfig::default());
    assert!(report.created && report.is_clean());
    append_range(&log, 0, 10);
    append_range(&log, 10, 1);
    assert_records(&read_all(&log, 0), 0..11);
    assert_records(&read_all(&log, 4), 4..11);
    assert_eq!(log.read_at(7).unwrap().unwrap().body, body(7));
    assert_eq!(log.read_at(11).unwrap(), None, "not yet written");
}

#[test]
fn records_keep_timestamps_and_deliver_at() {
    let (_, storage) = sim();
    let (log, _) = open(&storage, &topic_dir(), LogConfig::default());
    let record = NewRecord { timestamp_ns: -5, deliver_at_ns: 123_456, body: b"deferred" };
    log.append(&[record]).unwrap();
    let read = log.read_at(0).unwrap().unwrap();
    assert_eq!((read.timestamp_ns, read.deliver_at_ns), (-5, 123_456));
    assert_eq!(&read.body[..], b"deferred");
}

#[test]
fn offsets_continue_after_reopen_and_a_crash() {
    let (sim, storage) = sim();
    let (log, _) = open(&storage, &topic_dir(), small_segments(SyncPolicy::Always));
    append_range(&log, 0, 30);
    log.close().unwrap();
    let (log, report) = open(&storage, &topic_dir(), small_segments(SyncPolicy::Always));
    assert!(report.is_clean());
    assert_eq!(report.next_offset, 30);
    append_range(&log, 30, 5);
    sim.crash();
    let (log, report) = open(&storage, &topic_dir(), small_segments(SyncPolicy::Always));
    assert!(report.is_clean(), "{report:?}");
    append_range(&log, 35, 5);
    assert_records(&read_all(&log, 0), 0..40);
}

#[test]
fn segments_roll_at_max_bytes_and_a_large_record_stands_alone() {
    let (sim, storage) = sim();
    let (log, _) = open(&storage, &topic_dir(), small_segments(LAZY));
    append_range(&log, 0, 40);
    let paths = sim.file_paths();
    assert!(paths.len() > 3, "40 records of 32..110 bytes roll 512-byte segments: {paths:?}");
    for path in &paths {
        let len = sim.contents(path).unwrap().len();
        assert!(len <= 512, "{} is {len} bytes", path.display());
    }
    let big = vec![7u8; 2000];
    let range = log.append(&[new_record(&big)]).unwrap();
    assert_eq!(range, 40..41);
    let last = sim.file_paths().pop().unwrap();
    assert_eq!(last, topic_dir().join("00000000000000000040.seg"));
    assert_eq!(sim.contents(&last).unwrap().len(), 32 + 32 + 2000, "header + one record");
    assert_eq!(log.read_at(40).unwrap().unwrap().body, big);
    assert_records(&read_all(&log, 0)[..40], 0..40);
}

#[test]
fn a_reader_follows_the_log_as_it_grows_across_segments() {
    let (_, storage) = sim();
    let (log, _) = open(&storage, &topic_dir(), small_segments(LAZY));
    let mut reader = log.reader(0);
    assert!(reader.next().unwrap().is_none());
    let mut seen = Vec::new();
    for round in 0..10 {
        append_range(&log, round * 7, 7);
        while let Some(record) = reader.next().unwrap() {
            seen.push(record);
        }
        assert_eq!(reader.position(), (round + 1) * 7);
    }
    assert_records(&seen, 0..70);
}

#[test]
fn read_at_finds_every_record_in_every_segment() {
    let (_, storage) = sim();
    let config = LogConfig { max_bytes_per_file: 256 * 1024, ..LogConfig::default() };
    let (log, _) = open(&storage, &topic_dir(), config);
    for batch in 0..40 {
        append_range(&log, batch * 500, 500);
    }
    assert!(log.stats().segments > 5);
    for offset in (0..20_000).step_by(97).chain([19_999]) {
        assert_eq!(log.read_at(offset).unwrap().unwrap().body, body(offset), "offset {offset}");
    }
}

#[derive(Default)]
struct Recorder {
    archived: std::sync::Mutex<Vec<(SegmentInfo, usize)>>,
    fail: bool,
}

impl SegmentArchiver for Recorder {
    fn archive(&self, segment: &SegmentInfo, file: &dyn StorageFile) -> io::Result<()> {
        if self.fail {
            return Err(io::Error::other("archive unavailable"));
        }
        let len = file.len()? as usize;
        self.archived.lock().unwrap().push((segment.clone(), len));
        Ok(())
    }
}

#[test]
fn remove_below_deletes_only_whole_segments_below_the_offset_and_never_the_last() {
    let (sim, storage) = sim();
    let (log, _) = open(&storage, &topic_dir(), small_segments(LAZY));
    append_range(&log, 0, 60);
    let before = log.stats().segments;
    let failing = Recorder { fail: true, ..Recorder::default() };
    assert!(log.remove_below(30, Some(&failing)).is_err());
    assert_eq!(log.stats().segments, before, "a failed archive keeps the segment");

    let recorder = Recorder::default();
    let removed = log.remove_below(30, Some(&recorder)).unwrap();
    assert!(!removed.is_empty());
    assert!(removed.iter().all(|s| s.end_offset <= 30));
    let archived = recorder.archived.lock().unwrap();
    assert_eq!(archived.len(), removed.len());
    for ((info, len), removed) in archived.iter().zip(&removed) {
        assert_eq!(info, removed);
        assert_eq!(*len as u64, info.len_bytes);
        assert!(sim.contents(&info.path).is_none(), "deleted after archiving");
    }
    let oldest = log.stats().oldest_offset;
    assert!(oldest <= 30 && oldest > 0);
    assert_records(&read_all(&log, 0), oldest..60);
    assert_eq!(log.read_at(0).unwrap(), None, "removed");

    log.remove_below(u64::MAX, None).unwrap();
    assert_eq!(log.stats().segments, 1, "the last segment stays");
    append_range(&log, 60, 3);
    let (log, report) = open(&storage, &topic_dir(), small_segments(LAZY));
    assert_eq!(report.next_offset, 63);
    assert!(read_all(&log, 0).iter().all(|r| r.offset >= report.oldest_offset));
}

#[test]
fn always_policy_makes_every_acknowledged_append_survive_a_crash() {
    let (sim, storage) = sim();
    let (log, _) = open(&storage, &topic_dir(), small_segments(SyncPolicy::Always));
    for i in 0..25 {
        append_range(&log, i, 1);
    }
    assert_eq!(log.stats().synced_offset, 25);
    sim.crash();
    let (log, _) = open(&storage, &topic_dir(), small_segments(SyncPolicy::Always));
    assert_records(&read_all(&log, 0), 0..25);
}

#[test]
fn lazy_policy_syncs_every_n_records_and_a_crash_loses_only_the_unsynced() {
    let (sim, storage) = sim();
    let policy = SyncPolicy::Every { records: 10, interval: Duration::MAX };
    let (log, _) = open(&storage, &topic_dir(), with_sync(policy));
    for i in 0..25 {
        append_range(&log, i, 1);
    }
    assert_eq!(log.stats().synced_offset, 20, "fsync at the 10th and 20th record");
    sim.crash();
    let (log, report) = open(&storage, &topic_dir(), with_sync(policy));
    assert_eq!(report.next_offset, 20);
    assert_records(&read_all(&log, 0), 0..20);
}

#[test]
fn sync_if_due_syncs_only_once_the_interval_has_passed() {
    let (sim, storage) = sim();
    let (log, _) = open(&storage, &topic_dir(), with_sync(LAZY));
    append_range(&log, 0, 3);
    let syncs = sim.file_syncs();
    assert!(!log.sync_if_due().unwrap(), "the interval has not passed");
    assert_eq!((log.stats().synced_offset, sim.file_syncs()), (0, syncs));
    log.sync().unwrap();
    assert_eq!((log.stats().synced_offset, sim.file_syncs()), (3, syncs + 1));

    let due = SyncPolicy::Every { records: u64::MAX, interval: Duration::ZERO };
    let dir = std::path::PathBuf::from("/data/topics/u");
    let (log, _) = open(&storage, &dir, with_sync(due));
    assert!(!log.sync_if_due().unwrap(), "nothing unsynced: no fsync");
    append_range(&log, 0, 2);
    assert_eq!(log.stats().synced_offset, 2, "an append past the interval syncs");
}

#[test]
fn disk_full_fails_the_append_harms_nothing_and_appends_resume_when_space_returns() {
    let (sim, storage) = sim();
    let (log, _) = open(&storage, &topic_dir(), small_segments(SyncPolicy::Always));
    append_range(&log, 0, 20);
    let used: u64 = sim.file_paths().iter().map(|p| sim.contents(p).unwrap().len() as u64).sum();
    sim.set_capacity(Some(used + 100));
    let bodies: Vec<Vec<u8>> = (20..40).map(body).collect();
    let records: Vec<NewRecord<'_>> = bodies.iter().map(|b| new_record(b)).collect();
    let error = log.append(&records).unwrap_err();
    assert!(matches!(error, LogError::DiskFull { .. }), "{error}");
    assert_eq!(log.next_offset(), 20, "nothing of the failed batch was appended");
    assert_records(&read_all(&log, 0), 0..20);
    sim.set_capacity(None);
    append_range(&log, 20, 20);
    assert_records(&read_all(&log, 0), 0..40);
    sim.crash();
    let (log, report) = open(&storage, &topic_dir(), small_segments(SyncPolicy::Always));
    assert!(report.is_clean(), "the failed write left no bytes behind: {report:?}");
    assert_records(&read_all(&log, 0), 0..40);
}

#[test]
fn disk_full_while_rolling_fails_the_append_and_appends_resume() {
    let (sim, storage) = sim();
    let (log, _) = open(&storage, &topic_dir(), small_segments(LAZY));
    append_range(&log, 0, 5);
    let files = sim.file_paths().len();
    // The next batch must roll; fail the creation of the new segment's header write.
    let big = vec![1u8; 600];
    sim.set_capacity(Some(
        sim.file_paths().iter().map(|p| sim.contents(p).unwrap().len() as u64).sum::<u64>() + 10,
    ));
    assert!(matches!(log.append(&[new_record(&big)]), Err(LogError::DiskFull { .. })));
    assert_eq!(sim.file_paths().len(), files, "the half-made segment was removed");
    sim.set_capacity(None);
    assert_eq!(log.append(&[new_record(&big)]).unwrap(), 5..6);
}

#[test]
fn a_failed_round_that_rolled_is_undone_durably() {
    // The batch fills the segment, so the round writes part of it, fsyncs that segment to roll,
    // and then fails to create the next one. The part already fsynced must not come back after a
    // crash: its append failed.
    let (sim, storage) = sim();
    let (log, _) = open(&storage, &topic_dir(), small_segments(LAZY));
    append_range(&log, 0, 3);
    let bodies: Vec<Vec<u8>> = (3..20).map(body).collect();
    // Operations of the round: write the first chunk (1), fsync it for the roll (2), create the
    // next segment (3): fail that.
    sim.fail_nth_op(3, io::ErrorKind::StorageFull);
    let error = log.append(&common::new_records(&bodies)).unwrap_err();
    assert!(matches!(error, LogError::DiskFull { .. }), "{error}");
    sim.crash();
    let (log, report) = open(&storage, &topic_dir(), small_segments(LAZY));
    assert_eq!(report.next_offset, 3, "{report:?}");
    assert_records(&read_all(&log, 0), 0..3);
}

#[test]
fn close_waits_for_appends_queued_before_it_and_makes_them_durable() {
    let sim = SimStorage::new();
    let gate = Arc::new(Gate::default());
    let storage: Arc<dyn Storage> =
        Arc::new(GatedStorage { inner: sim.clone(), gate: Arc::clone(&gate) });
    let (log, _) = open(&storage, &topic_dir(), with_sync(SyncPolicy::Always));
    let log = Arc::new(log);
    gate.set_armed(true);
    let append = |body: &'static [u8]| {
        let log = Arc::clone(&log);
        std::thread::spawn(move || log.append(&[new_record(body)]))
    };
    let first = append(b"first");
    gate.wait_until_a_sync_waits();
    let queued = append(b"queued");
    while log.stats().queued_records < 1 {
        std::thread::yield_now();
    }
    let closer = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || log.close())
    };
    gate.set_armed(false);
    closer.join().unwrap().unwrap();
    assert_eq!(log.stats().synced_offset, 2, "close returned with everything durable");
    assert_eq!(first.join().unwrap().unwrap(), 0..1);
    assert_eq!(queued.join().unwrap().unwrap(), 1..2, "an append queued before close completes");
    assert!(matches!(log.append(&[new_record(b"late")]), Err(LogError::Closed { .. })));
}

#[test]
fn a_write_error_fails_only_that_append() {
    let (sim, storage) = sim();
    let (log, _) = open(&storage, &topic_dir(), with_sync(LAZY));
    append_range(&log, 0, 3);
    sim.fail_nth_op(1, io::ErrorKind::Other);
    let error = log.append(&[new_record(b"x")]).unwrap_err();
    assert!(matches!(error, LogError::Io { op: "write", .. }), "{error}");
    append_range(&log, 3, 3);
    assert_records(&read_all(&log, 0), 0..6);
}

#[test]
fn a_failed_fsync_poisons_the_log_until_reopen() {
    let (sim, storage) = sim();
    let (log, _) = open(&storage, &topic_dir(), LogConfig::default());
    append_range(&log, 0, 3);
    log.sync().unwrap();
    append_range(&log, 3, 1);
    sim.fail_nth_op(1, io::ErrorKind::Other);
    assert!(matches!(log.sync(), Err(LogError::Poisoned { .. })));
    let syncs = sim.file_syncs();
    assert!(matches!(log.append(&[new_record(b"x")]), Err(LogError::Poisoned { .. })));
    assert!(matches!(log.sync(), Err(LogError::Poisoned { .. })));
    assert_eq!(sim.file_syncs(), syncs, "the fsync is never retried");
    assert_records(&read_all(&log, 0), 0..4);
    drop(log);
    let (log, _) = open(&storage, &topic_dir(), LogConfig::default());
    append_range(&log, 4, 2);
}

/// Storage whose next file fsync, once armed, waits until the test opens the gate: a disk that
/// is slow exactly when the test wants it to be.
#[derive(Debug)]
struct GatedStorage {
    inner: SimStorage,
    gate: Arc<Gate>,
}

#[derive(Debug, Default)]
struct Gate {
    state: std::sync::Mutex<(bool, bool)>, // (armed, a sync is waiting)
    changed: std::sync::Condvar,
}

impl Gate {
    fn pass(&self) {
        let mut state = self.state.lock().unwrap();
        if state.0 {
            state.1 = true;
            self.changed.notify_all();
            while state.0 {
                state = self.changed.wait(state).unwrap();
            }
        }
    }
    fn set_armed(&self, armed: bool) {
        self.state.lock().unwrap().0 = armed;
        self.changed.notify_all();
    }
    fn wait_until_a_sync_waits(&self) {
        let mut state = self.state.lock().unwrap();
        while !state.1 {
            state = self.changed.wait(state).unwrap();
        }
    }
}

#[derive(Debug)]
struct GatedFile {
    inner: Arc<dyn StorageFile>,
    gate: Arc<Gate>,
}

impl StorageFile for GatedFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.inner.read_at(buf, pos)
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.inner.write_all_at(buf, pos)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.gate.pass();
        self.inner.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
}

impl Storage for GatedStorage {
    fn create_dir_all(&self, path: &std::path::Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn list_dir(&self, path: &std::path::Path) -> io::Result<Vec<std::ffi::OsString>> {
        self.inner.list_dir(path)
    }
    fn open(&self, path: &std::path::Path, writable: bool) -> io::Result<Arc<dyn StorageFile>> {
        let inner = self.inner.open(path, writable)?;
        Ok(Arc::new(GatedFile { inner, gate: Arc::clone(&self.gate) }))
    }
    fn create_new(&self, path: &std::path::Path) -> io::Result<Arc<dyn StorageFile>> {
        let inner = self.inner.create_new(path)?;
        Ok(Arc::new(GatedFile { inner, gate: Arc::clone(&self.gate) }))
    }
    fn remove_file(&self, path: &std::path::Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }
    fn remove_dir(&self, path: &std::path::Path) -> io::Result<()> {
        self.inner.remove_dir(path)
    }
    fn rename(&self, from: &std::path::Path, to: &std::path::Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn sync_dir(&self, path: &std::path::Path) -> io::Result<()> {
        self.inner.sync_dir(path)
    }
    fn lock_exclusive(
        &self,
        path: &std::path::Path,
    ) -> io::Result<Box<dyn engine::storage::LockGuard>> {
        self.inner.lock_exclusive(path)
    }
}

#[test]
fn appends_that_queue_during_an_fsync_share_the_next_fsync() {
    let sim = SimStorage::new();
    let gate = Arc::new(Gate::default());
    let storage: Arc<dyn Storage> =
        Arc::new(GatedStorage { inner: sim.clone(), gate: Arc::clone(&gate) });
    let config = with_sync(SyncPolicy::Always);
    let (log, _) = open(&storage, &topic_dir(), config);
    let log = Arc::new(log);
    let syncs_before = sim.file_syncs();
    gate.set_armed(true);
    let append = |body: String| {
        let log = Arc::clone(&log);
        std::thread::spawn(move || log.append(&[new_record(body.as_bytes())]).unwrap())
    };
    // The first appender leads a round and blocks in its fsync...
    let first = append("first".into());
    gate.wait_until_a_sync_waits();
    // ...while seven more queue behind it.
    let rest: Vec<_> = (0..7).map(|i| append(format!("queued-{i}"))).collect();
    while log.stats().queued_records < 7 {
        std::thread::yield_now();
    }
    gate.set_armed(false);
    assert_eq!(first.join().unwrap(), 0..1);
    let mut offsets: Vec<u64> = rest.into_iter().map(|t| t.join().unwrap().start).collect();
    offsets.sort_unstable();
    assert_eq!(offsets, (1..8).collect::<Vec<_>>());
    assert_eq!(sim.file_syncs() - syncs_before, 2, "eight appends, two fsyncs");
    assert_eq!(log.stats().synced_offset, 8);
}

#[test]
fn concurrent_always_appends_all_land_once_and_durably() {
    let (sim, storage) = sim();
    let config = with_sync(SyncPolicy::Always);
    let (log, _) = open(&storage, &topic_dir(), config.clone());
    let log = Arc::new(log);
    let appends = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = Arc::clone(&log);
            let appends = Arc::clone(&appends);
            std::thread::spawn(move || {
                for i in 0..200 {
                    let body = format!("{t}-{i}");
                    log.append(&[new_record(body.as_bytes())]).unwrap();
                    appends.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(appends.load(Ordering::Relaxed), 1600);
    sim.crash();
    let (log, _) = open(&storage, &topic_dir(), config);
    let records = read_all(&log, 0);
    assert_eq!(records.len(), 1600);
    let mut bodies: Vec<_> = records.iter().map(|r| r.body.clone()).collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), 1600, "every append landed once");
}

#[test]
fn limits_are_checked_before_anything_is_written() {
    let (_, storage) = sim();
    let config = LogConfig { max_body_bytes: 10, max_batch_records: 2, ..LogConfig::default() };
    let (log, _) = open(&storage, &topic_dir(), config);
    let error = log.append(&[new_record(&[0; 11])]).unwrap_err();
    assert!(matches!(error, LogError::BodyTooLarge { len: 11, limit_bytes: 10 }));
    let three = [new_record(b"a"), new_record(b"b"), new_record(b"c")];
    assert!(matches!(
        log.append(&three),
        Err(LogError::BatchTooLarge { len: 3, limit_records: 2 })
    ));
    assert_eq!(log.append(&[]).unwrap(), 0..0);
    assert_eq!(log.next_offset(), 0);
    let bad = LogConfig { max_bytes_per_file: 32, ..LogConfig::default() };
    assert!(matches!(
        engine::TopicLog::open(Arc::clone(&storage), "/data/topics/x", bad),
        Err(LogError::InvalidConfig(_))
    ));
}

#[test]
fn a_closed_log_refuses_appends_and_still_reads() {
    let (_, storage) = sim();
    let (log, _) = open(&storage, &topic_dir(), LogConfig::default());
    append_range(&log, 0, 2);
    log.close().unwrap();
    assert!(matches!(log.append(&[new_record(b"x")]), Err(LogError::Closed { .. })));
    assert_records(&read_all(&log, 0), 0..2);
}

#[test]
fn a_crash_while_rolling_leaves_a_headerless_segment_that_gets_a_header() {
    let (sim, storage) = sim();
    let (log, _) = open(&storage, &topic_dir(), small_segments(SyncPolicy::Always));
    append_range(&log, 0, 5);
    drop(log);
    let path = topic_dir().join("00000000000000000005.seg");
    storage.create_new(&path).unwrap().write_all_at(b"NSQ", 0).unwrap();
    sim.crash_with(|_, _| engine::storage::CrashKeep { ops: 1, torn_bytes: 0 });
    let (log, report) = open(&storage, &topic_dir(), small_segments(SyncPolicy::Always));
    assert_eq!(report.header_rewritten, Some(path));
    assert_eq!(report.next_offset, 5);
    append_range(&log, 5, 2);
    assert_records(&read_all(&log, 0), 0..7);
}

#[test]
fn files_that_are_not_segments_are_reported_and_left_alone() {
    let (sim, storage) = sim();
    storage.create_dir_all(&topic_dir()).unwrap();
    storage.create_new(&topic_dir().join("notes.txt")).unwrap();
    let (_, report) = open(&storage, &topic_dir(), LogConfig::default());
    assert_eq!(report.ignored_files, vec![topic_dir().join("notes.txt")]);
    assert!(sim.contents(&topic_dir().join("notes.txt")).is_some());
}

#[test]
fn a_data_directory_has_one_owner() {
    let dir = tempfile::tempdir().unwrap();
    let storage = engine::storage::FsStorage;
    let first = DataDirLock::acquire(&storage, dir.path()).unwrap();
    let error = DataDirLock::acquire(&storage, dir.path()).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, LogError::Locked { .. }));
    assert!(message.contains(&format!("pid {}", std::process::id())), "{message}");
    drop(first);
    DataDirLock::acquire(&storage, dir.path()).unwrap();
}
