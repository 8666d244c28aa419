//! The engine: a data directory's topics, their checkpoints, and the background work.
//!
//! # Data directory (DESIGN.md §3.1)
//! ```text
//! <data-path>/LOCK                      one process owns the directory
//! <data-path>/meta/                     sled: topics, channel checkpoints, deferred entries
//! <data-path>/topics/<topic>/*.seg      the topic's log
//! <data-path>/topics/<topic>/CATALOG    its channels, for rebuilding the store
//! ```
//!
//! # Checkpoints
//! [`Engine::checkpoint`] (on an interval, and at close) syncs each topic's log, writes every
//! durable channel's state limited to synced offsets, flushes the store, and only then deletes
//! segments that no checkpointed channel needs. So the order on disk is always: log records,
//! then the checkpoint that refers to them, then the removal of what it no longer needs. With
//! [`EngineConfig::archive_dir`] set, a durable topic's segment is archived
//! ([`crate::archive`]) before its removal, and a failure to archive keeps it for the next
//! checkpoint.
//!
//! # Background work
//! [`Engine::start_background`] runs one thread that fires timeouts and deferred deliveries when
//! they are due (sleeping until the earliest, woken when an earlier one appears), writes
//! memory-queued records, fsyncs logs whose interval has passed, and checkpoints. Tests leave it
//! off and call the same steps themselves, with a clock they move.

use crate::archive::{Archiver, topic_archive_dir};
use crate::changes::{Change, Observer, Observers};
use crate::sync::lock;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::clock::{Clock, SystemClock};
use crate::config::{EPHEMERAL_BYTES_PER_FILE, EngineConfig};
use crate::error::EngineError;
use crate::health::Health;
use crate::lock::DataDirLock;
use crate::log::{LogConfig, RecoveryReport, SegmentArchiver, SyncPolicy, TopicLog};
use crate::meta::{MetaStore, TopicRecord};
use crate::names::{is_ephemeral, is_valid_name};
use crate::queue::timers::Timers;
use crate::storage::{FsStorage, SimStorage, Storage};
use crate::topic::{Topic, TopicParts};

/// The directory of topic logs inside a data directory.
pub const TOPICS_DIR_NAME: &str = "topics";
/// The metadata store inside a data directory.
pub const META_DIR_NAME: &str = "meta";
/// The longest the background thread sleeps without looking at its work.
const BACKGROUND_IDLE_MAX: Duration = Duration::from_millis(500);

/// What every topic and channel shares.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) config: EngineConfig,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) timers: Timers,
    pub(crate) next_uid: AtomicU64,
    pub(crate) observers: Observers,
    pub(crate) health: Health,
}

/// What opening found.
#[derive(Debug, Default)]
pub struct OpenReport {
    /// Each topic's log recovery, by topic name.
    pub topics: Vec<(String, RecoveryReport)>,
    /// Directories under `topics/` that the store does not list: left alone, not loaded.
    pub unknown_dirs: Vec<PathBuf>,
}

#[derive(Debug)]
pub(crate) struct EngineInner {
    ctx: Arc<Context>,
    storage: Arc<dyn Storage>,
    meta: MetaStore,
    topics_dir: PathBuf,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serializes topic creation and deletion.
    topic_changes: Mutex<()>,
    closing: AtomicBool,
    closed: AtomicBool,
    /// The store's generation the store's contents were last written for in full (see
    /// [`EngineInner::rewrite_meta`]).
    meta_generation: AtomicU64,
    _lock: DataDirLock,
}

/// The storage engine of one data directory. Dropping it closes it.
#[derive(Debug)]
pub struct Engine {
    inner: Arc<EngineInner>,
    background: Mutex<Option<JoinHandle<()>>>,
}

impl Engine {
    /// Opens the data directory `data_path` on the real file system with the system clock,
    /// creating it if needed.
    pub fn open(
        data_path: impl Into<PathBuf>,
        config: EngineConfig,
    ) -> Result<(Self, OpenReport), EngineError> {
        let data_path = data_path.into();
        let storage: Arc<dyn Storage> = Arc::new(FsStorage);
        storage.create_dir_all(&data_path).map_err(|source| EngineError::Io {
            op: "create directory",
            path: data_path.clone(),
            source,
        })?;
        // The lock comes first: sled must not be opened by a second process.
        let lock = DataDirLock::acquire(&*storage, &data_path)?;
        let meta = MetaStore::open_sled(&data_path.join(META_DIR_NAME))?;
        Self::open_locked(data_path, config, storage, meta, Arc::new(SystemClock), lock)
    }

    /// Opens a data directory on any storage, metadata store and clock (tests use
    /// [`SimStorage`], [`crate::meta::MemoryMeta`] and [`crate::clock::ManualClock`]).
    pub fn open_with(
        data_path: impl Into<PathBuf>,
        config: EngineConfig,
        storage: Arc<dyn Storage>,
        meta: MetaStore,
        clock: Arc<dyn Clock>,
    ) -> Result<(Self, OpenReport), EngineError> {
        let data_path = data_path.into();
        let lock = DataDirLock::acquire(&*storage, &data_path)?;
        Self::open_locked(data_path, config, storage, meta, clock, lock)
    }

    fn open_locked(
        data_path: PathBuf,
        config: EngineConfig,
        storage: Arc<dyn Storage>,
        meta: MetaStore,
        clock: Arc<dyn Clock>,
        lock: DataDirLock,
    ) -> Result<(Self, OpenReport), EngineError> {
        let topics_dir = data_path.join(TOPICS_DIR_NAME);
        storage.create_dir_all(&topics_dir).map_err(|source| EngineError::Io {
            op: "create directory",
            path: topics_dir.clone(),
            source,
        })?;
        let ctx = Arc::new(Context {
            config,
            clock,
            timers: Timers::default(),
            next_uid: AtomicU64::new(1),
            observers: Observers::default(),
            health: Health::default(),
        });
        let meta_generation = AtomicU64::new(meta.generation());
        let inner = Arc::new(EngineInner {
            ctx,
            storage,
            meta,
            topics_dir,
            topics: RwLock::new(BTreeMap::new()),
            topic_changes: Mutex::new(()),
            closing: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            meta_generation,
            _lock: lock,
        });
        let mut report = OpenReport::default();
        let stored = inner.meta.topics()?;
        for (name, record) in stored {
            let (topic, recovery) = inner.load_topic(&name, record)?;
            inner.write_topics().insert(name.clone(), topic);
            report.topics.push((name, recovery));
        }
        let listed = inner.storage.list_dir(&inner.topics_dir).map_err(|source| {
            EngineError::Io { op: "list", path: inner.topics_dir.clone(), source }
        })?;
        for entry in listed {
            let known = entry.to_str().is_some_and(|name| inner.read_topics().contains_key(name));
            if !known {
                let path = inner.topics_dir.join(&entry);
                tracing::warn!(dir = %path.display(), "topic directory not in the metadata store: not loaded");
                report.unknown_dirs.push(path);
            }
        }
        Ok((Self { inner, background: Mutex::new(None) }, report))
    }

    /// The topic `name`, created if it does not exist (PUB, SUB, `/topic/create`).
    pub fn topic(&self, name: &str) -> Result<Arc<Topic>, EngineError> {
        self.inner.topic(name)
    }

    pub fn get_topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.inner.read_topics().get(name).cloned()
    }

    /// The topics, sorted by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.inner.read_topics().values().cloned().collect()
    }

    /// Deletes a topic: its channels, its progress and its log files.
    pub fn delete_topic(&self, name: &str) -> Result<(), EngineError> {
        self.inner.delete_topic(name)
    }

    /// Sets the one observer told of every topic and channel created or deleted from now on
    /// (see [`crate::changes`]).
    pub fn observe(&self, observer: Observer) {
        self.inner.ctx.observers.set(observer);
    }

    /// Checkpoints every channel, flushes the store, then applies retention. See the module
    /// documentation.
    pub fn checkpoint(&self) -> Result<(), EngineError> {
        self.inner.checkpoint()
    }

    /// Fires the timeouts and deferred deliveries due by now. Returns [`Engine::next_timer_ns`].
    pub fn fire_timers(&self) -> Option<i64> {
        self.inner.fire_timers()
    }

    /// No later than the earliest time a timeout or a deferred delivery is due (it may be
    /// earlier when a deadline moved: firing then does nothing and finds the next one).
    pub fn next_timer_ns(&self) -> Option<i64> {
        self.inner.ctx.timers.next_ns()
    }

    /// Writes every memory-queued record and fsyncs the logs whose interval has passed.
    pub fn flush(&self) -> Result<(), EngineError> {
        self.inner.flush()
    }

    /// `None` when healthy; otherwise the last background write error (NSQ's `/ping` reports it).
    pub fn health(&self) -> Option<String> {
        self.inner.ctx.health.get()
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.ctx.config
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.ctx.clock
    }

    /// Starts the background thread (see the module documentation). Idempotent.
    pub fn start_background(&self) -> Result<(), EngineError> {
        let mut background = lock(&self.background);
        if background.is_some() {
            return Ok(());
        }
        let inner = Arc::clone(&self.inner);
        let handle = std::thread::Builder::new()
            .name("nsq-engine".into())
            .spawn(move || inner.run_background())
            .map_err(|source| EngineError::Io {
                op: "spawn background thread",
                path: PathBuf::new(),
                source,
            })?;
        *background = Some(handle);
        Ok(())
    }

    /// Stops as if the process died here: no checkpoint, no write, no flush. For tests that
    /// crash the storage and the store under it, and for a process that must not write more.
    pub fn halt(self) {
        self.inner.closed.store(true, Ordering::Release);
    }

    /// Stops the background thread, writes what is queued, checkpoints everything and closes
    /// the logs. Reopening continues where this left off: in-flight messages are due again,
    /// nothing finished is redelivered.
    pub fn close(&self) -> Result<(), EngineError> {
        self.inner.closing.store(true, Ordering::Release);
        self.inner.ctx.timers.wakeup.wake();
        if let Some(handle) = lock(&self.background).take()
            && handle.join().is_err()
        {
            tracing::error!("the engine's background thread panicked");
        }
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        for topic in self.topics() {
            topic.mark_exiting();
        }
        let result = self.inner.checkpoint();
        for topic in self.topics() {
            if let Err(error) = topic.log().close() {
                tracing::error!(topic = %topic.name(), %error, "closing the log failed");
            }
        }
        result
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Err(error) = self.close() {
            tracing::error!(%error, "closing the engine failed");
        }
    }
}

impl EngineInner {
    fn read_topics(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Topic>>> {
        crate::sync::read(&self.topics)
    }

    fn write_topics(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Topic>>> {
        crate::sync::write(&self.topics)
    }

    fn topics(&self) -> Vec<Arc<Topic>> {
        self.read_topics().values().cloned().collect()
    }

    fn topic_dir(&self, name: &str) -> PathBuf {
        self.topics_dir.join(name)
    }

    /// Opens a topic's log (or, for an ephemeral topic, makes one in memory) and its channels.
    fn load_topic(
        self: &Arc<Self>,
        name: &str,
        record: TopicRecord,
    ) -> Result<(Arc<Topic>, RecoveryReport), EngineError> {
        let config = &self.ctx.config;
        let (storage, dir, log_config, meta) = if is_ephemeral(name) {
            let log_config = LogConfig {
                max_bytes_per_file: EPHEMERAL_BYTES_PER_FILE,
                // Memory needs no fsync.
                sync: SyncPolicy::Every { records: u64::MAX, interval: Duration::MAX },
                ..config.log.clone()
            };
            let storage: Arc<dyn Storage> = Arc::new(SimStorage::new());
            (storage, PathBuf::from("/ephemeral").join(name), log_config, None)
        } else {
            (
                Arc::clone(&self.storage),
                self.topic_dir(name),
                config.log.clone(),
                Some(self.meta.clone()),
            )
        };
        let (log, recovery) = TopicLog::open(Arc::clone(&storage), dir, log_config)?;
        let topic = Topic::open(TopicParts {
            name: name.to_owned(),
            log,
            ctx: Arc::clone(&self.ctx),
            meta,
            storage,
            engine: Arc::downgrade(self),
            record,
        })?;
        Ok((topic, recovery))
    }

    fn topic(self: &Arc<Self>, name: &str) -> Result<Arc<Topic>, EngineError> {
        if let Some(topic) = self.read_topics().get(name) {
            return Ok(Arc::clone(topic));
        }
        if !is_valid_name(name) {
            return Err(EngineError::InvalidTopicName(name.to_owned()));
        }
        if self.closing.load(Ordering::Acquire) {
            return Err(EngineError::Exiting("nsqd".into()));
        }
        let _changes = lock(&self.topic_changes);
        if let Some(topic) = self.read_topics().get(name) {
            return Ok(Arc::clone(topic));
        }
        let (topic, _) = self.load_topic(name, TopicRecord::default())?;
        if !topic.is_ephemeral() {
            self.meta.put_topic(name, &TopicRecord::default())?;
            self.meta.flush()?;
        }
        self.write_topics().insert(name.to_owned(), Arc::clone(&topic));
        self.ctx.observers.notify(Change::TopicCreated(name.to_owned()));
        Ok(topic)
    }

    fn delete_topic(&self, name: &str) -> Result<(), EngineError> {
        let _changes = lock(&self.topic_changes);
        let Some(topic) = self.write_topics().remove(name) else {
            return Err(EngineError::TopicNotFound(name.to_owned()));
        };
        topic.mark_deleted();
        self.ctx.observers.notify(Change::TopicDeleted(name.to_owned()));
        if topic.is_ephemeral() {
            return Ok(());
        }
        // The store first: once the topic is out of it, a crash leaves only files to ignore.
        self.meta.remove_topic(name)?;
        self.meta.flush()?;
        if let Err(error) = topic.log().close() {
            tracing::warn!(topic = name, %error, "closing a deleted topic's log failed");
        }
        self.remove_topic_files(topic.dir())?;
        self.retire_archive(name);
        Ok(())
    }

    /// Moves a deleted topic's archive aside (`<topic>@deleted-<unix seconds>`, a name no topic
    /// can have): a topic created again under the name starts at offset 0, and its archives
    /// must not meet the old ones.
    fn retire_archive(&self, name: &str) {
        let Some(archive_dir) = &self.ctx.config.archive_dir else { return };
        let dir = topic_archive_dir(archive_dir, name);
        if self.storage.list_dir(&dir).is_err() {
            return; // nothing was archived
        }
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let retired = archive_dir.join(format!("{name}@deleted-{secs}"));
        if let Err(error) = self.storage.rename(&dir, &retired) {
            tracing::error!(
                archive = %dir.display(), %error,
                "moving a deleted topic's archive aside failed: a topic of the same name will not archive until it is moved"
            );
        }
    }

    fn remove_topic_files(&self, dir: &Path) -> Result<(), EngineError> {
        let io = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| EngineError::Io { op, path, source }
        };
        for entry in self.storage.list_dir(dir).map_err(io("list", dir))? {
            let path = dir.join(entry);
            self.storage.remove_file(&path).map_err(io("remove", &path))?;
        }
        self.storage.remove_dir(dir).map_err(io("remove", dir))
    }

    /// An ephemeral topic whose last channel went away.
    pub(crate) fn remove_ephemeral_topic(&self, topic: &Topic) {
        let _changes = lock(&self.topic_changes);
        let mut topics = self.write_topics();
        if topics.get(topic.name()).is_some_and(|t| std::ptr::eq(Arc::as_ptr(t), topic)) {
            topics.remove(topic.name());
            drop(topics);
            topic.mark_deleted();
            self.ctx.observers.notify(Change::TopicDeleted(topic.name().to_owned()));
        }
    }

    fn checkpoint(&self) -> Result<(), EngineError> {
        // A store that refused writes after an I/O error is reopened here, and whatever it may
        // have lost is written again before this checkpoint's changes.
        if let Err(error) = self.meta.recover() {
            tracing::warn!(%error, "the metadata store is still failing");
        }
        let generation = self.meta.generation();
        if self.meta_generation.load(Ordering::Acquire) != generation {
            self.rewrite_meta()?;
            self.meta_generation.store(generation, Ordering::Release);
        }
        let mut floors = Vec::new();
        let mut first_error = None;
        for topic in self.topics() {
            // An ephemeral topic has nothing to checkpoint; its retention follows live floors.
            match topic.checkpoint() {
                Ok(Some(floor)) => floors.push((topic, floor)),
                Ok(None) => {
                    if let Err(error) = topic.trim_ephemeral() {
                        first_error.get_or_insert(error);
                    }
                }
                Err(error) => {
                    tracing::error!(topic = %topic.name(), %error, "checkpoint failed");
                    first_error.get_or_insert(error);
                }
            }
        }
        let flushed = self.meta.flush().map_err(EngineError::from);
        self.ctx.health.record(&flushed);
        flushed?;
        // The floors are durable now: what lies below them is no channel's any more. Ephemeral
        // topics have no floor here, so they are never archived.
        for (topic, floor) in floors {
            let archiver = self.ctx.config.archive_dir.as_deref().map(|dir| {
                Archiver::new(Arc::clone(&self.storage), topic_archive_dir(dir, topic.name()))
            });
            let archiver = archiver.as_ref().map(|a| a as &dyn SegmentArchiver);
            if let Err(error) = topic.apply_retention(floor, archiver) {
                tracing::error!(topic = %topic.name(), %error, "retention failed");
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Writes the engine's whole state to a store reopened after an error (changes applied but
    /// not flushed before the error may be gone): every topic record, every channel's next
    /// checkpoint in full, and no topic or channel that was deleted. The checkpoint that calls
    /// this writes the channels and flushes.
    fn rewrite_meta(&self) -> Result<(), EngineError> {
        tracing::warn!("metadata store reopened: writing every topic and channel again");
        let topics = self.topics();
        for (name, _) in self.meta.topics()? {
            if !topics.iter().any(|t| t.name() == name) {
                self.meta.remove_topic(&name)?;
            }
        }
        for topic in &topics {
            topic.rewrite_meta()?;
        }
        Ok(())
    }

    fn fire_timers(&self) -> Option<i64> {
        let now_ns = self.ctx.clock.now_ns();
        for channel in self.ctx.timers.pop_due(now_ns) {
            channel.fire_timers();
        }
        self.ctx.timers.next_ns()
    }

    fn flush(&self) -> Result<(), EngineError> {
        let mut result = Ok(());
        for topic in self.topics() {
            let outcome =
                topic.write_queued().and_then(|written| Ok(topic.log().sync_if_due()? || written));
            match outcome {
                // A write, or an fsync, succeeded.
                Ok(true) => self.ctx.health.record(&Ok::<(), EngineError>(())),
                Ok(false) => {}
                Err(error) => {
                    tracing::error!(topic = %topic.name(), %error, "background write failed");
                    self.ctx.health.failed(&error);
                    result = Err(error);
                }
            }
        }
        result
    }

    fn run_background(&self) {
        let interval = self.ctx.config.checkpoint_interval;
        let sync_interval = match self.ctx.config.log.sync {
            SyncPolicy::Always => BACKGROUND_IDLE_MAX,
            SyncPolicy::Every { interval, .. } => interval,
        };
        let mut last_checkpoint = Instant::now();
        while !self.closing.load(Ordering::Acquire) {
            let next_timer = self.fire_timers();
            // Errors are logged and kept as the health state by `flush`.
            let _ = self.flush();
            if last_checkpoint.elapsed() >= interval {
                if let Err(error) = self.checkpoint() {
                    tracing::error!(%error, "checkpoint failed");
                }
                last_checkpoint = Instant::now();
            }
            let mut wait = interval.saturating_sub(last_checkpoint.elapsed());
            wait = wait.min(sync_interval).min(BACKGROUND_IDLE_MAX);
            if let Some(at_ns) = next_timer {
                let until = at_ns.saturating_sub(self.ctx.clock.now_ns()).max(0);
                wait = wait.min(Duration::from_nanos(until.unsigned_abs()));
            }
            self.ctx.timers.wakeup.wait(wait);
        }
    }
}
