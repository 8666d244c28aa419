//! Rebuilding the metadata store from the catalogs (`nsq-fsck rebuild-meta`, and repair of a
//! store that cannot be opened).
//!
//! The new store is built beside the old one (`meta.rebuild`), flushed, and only then swapped
//! in: the old store is renamed `meta.broken-<unix seconds>` and kept, the new one renamed
//! `meta`. A crash before the swap leaves the old store in place and a `meta.rebuild` that the
//! next rebuild starts over; a crash between the two renames leaves no `meta`, which verify
//! reports and repair rebuilds again. Every channel restarts at its topic's oldest retained
//! message (duplicates, never loss); a paused topic stays paused at the end of its log.

use std::path::{Path, PathBuf};

use super::survey::{NoProgress, Survey, survey};
use crate::META_DIR_NAME;
use crate::error::EngineError;
use crate::lock::DataDirLock;
use crate::meta::{ChannelRecord, MetaStore, TopicRecord};
use crate::storage::{FsStorage, Storage};

/// What a rebuild did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RebuildReport {
    /// Where the old store was kept, if there was one.
    pub backup: Option<PathBuf>,
    /// Topics and their channels written.
    pub topics: Vec<(String, Vec<String>)>,
    /// Topic directories without a readable catalog: written with no channel (their messages
    /// wait for the first one).
    pub without_catalog: Vec<String>,
    /// Topic directories of an unfinished `import-nsq`: left out (run the import again).
    pub importing: Vec<String>,
}

/// Rebuilds the store of `data_dir` from its catalogs. Refuses a directory a running process
/// holds, and (unless `force`) a store that can still be read: rebuilding it would send every
/// channel back to its oldest message.
pub fn rebuild_meta(data_dir: &Path, force: bool) -> Result<RebuildReport, EngineError> {
    let _lock = DataDirLock::acquire(&FsStorage, data_dir)?;
    let found = survey(data_dir, &mut NoProgress).map_err(|source| EngineError::Io {
        op: "survey",
        path: data_dir.to_path_buf(),
        source,
    })?;
    if matches!(found.meta, super::MetaSurvey::Read(_)) && !force {
        return Err(EngineError::Io {
            op: "rebuild",
            path: data_dir.join(META_DIR_NAME),
            source: std::io::Error::other(
                "the metadata store can be read; rebuilding it restarts every channel at its \
                 oldest message (use --force to do it anyway)",
            ),
        });
    }
    rebuild_in_place(&found)
}

/// The rebuild itself; the caller holds the lock.
pub(crate) fn rebuild_in_place(found: &Survey) -> Result<RebuildReport, EngineError> {
    let storage = FsStorage;
    let data_dir = &found.data_dir;
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| EngineError::Io { op, path, source }
    };
    let meta_dir = data_dir.join(META_DIR_NAME);
    let building = data_dir.join(format!("{META_DIR_NAME}.rebuild"));
    if building.exists() {
        std::fs::remove_dir_all(&building).map_err(io("remove", &building))?;
    }
    let mut report = RebuildReport::default();
    {
        let store = MetaStore::open_sled(&building)?;
        for topic in &found.topics {
            let importing = topic.other_files.iter().any(|path| {
                path.file_name().is_some_and(|n| n == crate::import::IMPORT_MARKER_FILE_NAME)
            });
            if importing {
                // An import that stopped midway: running it again finishes or removes it.
                report.importing.push(topic.name.clone());
                continue;
            }
            if !topic.dir_exists {
                continue;
            }
            let (oldest, end) = (topic.oldest_offset, topic.next_offset);
            let catalog = match &topic.catalog {
                Ok(Some(catalog)) => Some(catalog),
                _ => {
                    report.without_catalog.push(topic.name.clone());
                    None
                }
            };
            let paused = catalog.is_some_and(|c| c.paused);
            let record = TopicRecord { paused_at: paused.then_some(end), orphan_floor: oldest };
            store.put_topic(&topic.name, &record)?;
            let mut channels = Vec::new();
            for (channel, paused) in catalog.map(|c| c.channels.as_slice()).unwrap_or_default() {
                let record = ChannelRecord {
                    paused: *paused,
                    floor: oldest,
                    next_read: oldest,
                    ..Default::default()
                };
                store.put_channel(&topic.name, channel, &record)?;
                channels.push(channel.clone());
            }
            report.topics.push((topic.name.clone(), channels));
        }
        store.flush()?;
    }
    if meta_dir.exists() {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let mut backup = data_dir.join(format!("{META_DIR_NAME}.broken-{secs}"));
        let mut n = 1;
        while backup.exists() {
            backup = data_dir.join(format!("{META_DIR_NAME}.broken-{secs}-{n}"));
            n += 1;
        }
        std::fs::rename(&meta_dir, &backup).map_err(io("rename", &meta_dir))?;
        report.backup = Some(backup);
    }
    std::fs::rename(&building, &meta_dir).map_err(io("rename", &building))?;
    storage.sync_dir(data_dir).map_err(io("fsync", data_dir))?;
    Ok(report)
}
