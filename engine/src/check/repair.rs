//! Repairing what [`super::verify`] finds. See the module documentation of [`super`] for the
//! rules; each action below is one atomic change on disk.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::findings::{Finding, Severity, verify};
use super::manifest::{Manifest, ManifestEntry};
use super::rebuild::rebuild_in_place;
use super::survey::{
    DamageKind, MetaSurvey, ScanProgress, Survey, TopicSurvey, fit_cursor, survey,
};
use crate::META_DIR_NAME;
use crate::catalog::Catalog;
use crate::error::EngineError;
use crate::format::{RecordRef, SegmentHeader, encode_record, segment_file_name};
use crate::lock::DataDirLock;
use crate::log::{SegmentItem, SegmentReader};
use crate::meta::{ChannelRecord, MetaStore, TopicRecord};
use crate::storage::{FsStorage, Storage, read_full_at, write_atomically};

/// How to repair.
#[derive(Default)]
pub struct RepairOptions<'a> {
    /// Plan only: change no byte.
    pub dry_run: bool,
    /// Called before each action is carried out (a test kills the process here).
    pub before_action: Option<&'a mut dyn FnMut(&RepairAction)>,
}

impl std::fmt::Debug for RepairOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepairOptions").field("dry_run", &self.dry_run).finish_non_exhaustive()
    }
}

/// One change repair makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepairAction {
    /// The store is set aside (when there is one) and rebuilt from the catalogs.
    RebuildMeta,
    /// Damaged bytes of a segment copied into the quarantine.
    Quarantine {
        segment: PathBuf,
        position: u64,
        len_bytes: u64,
        to: PathBuf,
        /// Offsets lost with the bytes, and what was wrong, for the manifest.
        lost: Range<u64>,
        reason: String,
    },
    /// A segment replaced by a fresh header and its valid records.
    RewriteSegment {
        segment: PathBuf,
        records: u64,
    },
    /// An empty segment starting at `next_offset`, so that no offset is used twice.
    ExtendLog {
        segment: PathBuf,
        next_offset: u64,
    },
    /// Offsets no segment holds, recorded in the manifest.
    AcknowledgeMissing {
        topic: String,
        lost: Range<u64>,
    },
    /// A topic's record replaced.
    FixTopic {
        topic: String,
        record: TopicRecord,
    },
    /// A channel's checkpoint replaced (and, with `clear_deferred`, its deferred entries dropped).
    FixChannel {
        topic: String,
        channel: String,
        record: ChannelRecord,
        clear_deferred: bool,
    },
    /// Deferred entries outside the channel's unfinished range, or damaged, removed.
    RemoveDeferred {
        topic: String,
        channel: String,
        offsets: Vec<u64>,
    },
    /// An entry the engine cannot use removed (`tree`, key).
    RemoveEntry {
        tree: crate::meta::MetaTree,
        key: Vec<u8>,
    },
    /// A channel checkpoint of a topic the store does not list removed.
    RemoveOrphanChannel {
        topic: String,
        channel: String,
    },
    WriteCatalog {
        topic: String,
        catalog: Catalog,
    },
}

impl std::fmt::Display for RepairAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::RebuildMeta => {
                write!(f, "set the metadata store aside and rebuild it from the catalogs")
            }
            Self::Quarantine { segment, position, len_bytes, to, .. } => write!(
                f,
                "quarantine {len_bytes} bytes at position {position} of {} into {}",
                segment.display(),
                to.display()
            ),
            Self::RewriteSegment { segment, records } => {
                write!(f, "rewrite {} with its {records} valid records", segment.display())
            }
            Self::ExtendLog { segment, next_offset } => write!(
                f,
                "start the empty segment {} so that offset {next_offset} comes next",
                segment.display()
            ),
            Self::AcknowledgeMissing { topic, lost } => write!(
                f,
                "record offsets {}..{} of topic {topic:?} as lost in its quarantine manifest",
                lost.start, lost.end
            ),
            Self::FixTopic { topic, record } => write!(f, "set topic {topic:?} to {record:?}"),
            Self::FixChannel { topic, channel, record, clear_deferred } => write!(
                f,
                "set channel {channel:?} of topic {topic:?} to floor {}, next read {}{}",
                record.floor,
                record.next_read,
                if *clear_deferred { ", dropping its deferred entries" } else { "" }
            ),
            Self::RemoveDeferred { topic, channel, offsets } => write!(
                f,
                "remove {} deferred entries of channel {channel:?} of topic {topic:?}",
                offsets.len()
            ),
            Self::RemoveEntry { tree, key } => write!(
                f,
                "remove entry {:?} from tree {}",
                String::from_utf8_lossy(key),
                tree.label()
            ),
            Self::RemoveOrphanChannel { topic, channel } => {
                write!(f, "remove the checkpoint of channel {channel:?} of unknown topic {topic:?}")
            }
            Self::WriteCatalog { topic, .. } => write!(f, "rewrite the catalog of topic {topic:?}"),
        }
    }
}

/// What a repair did (or, dry, would do).
#[derive(Debug, Default)]
pub struct RepairReport {
    pub actions: Vec<RepairAction>,
    /// Findings repair does not act on: notes and what it cannot repair.
    pub left_alone: Vec<Finding>,
}

/// Repairs `data_dir`: see the module documentation of [`super`]. Refuses a directory that a
/// running process holds.
pub fn repair(
    data_dir: &Path,
    mut options: RepairOptions<'_>,
    progress: &mut dyn ScanProgress,
) -> Result<RepairReport, EngineError> {
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| EngineError::Io { op, path, source }
    };
    let storage = FsStorage;
    let _lock =
        if options.dry_run { None } else { Some(DataDirLock::acquire(&storage, data_dir)?) };
    let mut report = RepairReport::default();
    let mut found = survey(data_dir, progress).map_err(io("survey", data_dir))?;
    if matches!(found.meta, MetaSurvey::Missing | MetaSurvey::Unreadable(_))
        && !found.topics.is_empty()
    {
        let action = RepairAction::RebuildMeta;
        if !options.dry_run {
            before(&mut options, &action);
            rebuild_in_place(&found)?;
        }
        report.actions.push(action);
        if options.dry_run {
            return Ok(report);
        }
        found = survey(data_dir, &mut super::NoProgress).map_err(io("survey", data_dir))?;
    }
    let mut actions = Vec::new();
    for topic in &found.topics {
        plan_topic(&found, topic, &mut actions);
    }
    report.left_alone =
        verify(&found).into_iter().filter(|f| f.severity != Severity::Repairable).collect();
    if options.dry_run {
        report.actions.extend(actions);
        return Ok(report);
    }
    let meta = match &found.meta {
        MetaSurvey::Read(_) => Some(MetaStore::open_sled(&data_dir.join(META_DIR_NAME))?),
        _ => None,
    };
    for action in actions {
        before(&mut options, &action);
        apply(&storage, data_dir, meta.as_ref(), &action)?;
        report.actions.push(action);
    }
    if let Some(meta) = meta {
        meta.flush()?;
    }
    Ok(report)
}

fn before(options: &mut RepairOptions<'_>, action: &RepairAction) {
    if let Some(hook) = options.before_action.as_mut() {
        hook(action);
    }
}

/// The actions that repair one topic, in the order they must happen.
fn plan_topic(survey: &Survey, topic: &TopicSurvey, actions: &mut Vec<RepairAction>) {
    let meta_read = matches!(survey.meta, MetaSurvey::Read(_));
    if topic.list_error.is_some() || (topic.dir_exists && meta_read && topic.record.is_none()) {
        return; // not repairable, or an orphan left alone
    }
    let quarantine = Manifest::dir(&survey.data_dir, &topic.name);
    for segment in &topic.segments {
        if segment.read_error.is_some() {
            continue;
        }
        let name = file_name(&segment.path);
        let rewrite =
            segment.short || segment.header_problem.is_some() || !segment.damage.is_empty();
        if rewrite {
            let mut ranges: Vec<(u64, u64, Range<u64>, String)> = segment
                .damage
                .iter()
                .map(|d| {
                    (d.position, d.len_bytes, d.lost.clone(), damage_reason(d.kind).to_owned())
                })
                .collect();
            if let Some(problem) = &segment.header_problem {
                ranges.insert(
                    0,
                    (0, SegmentHeader::LEN as u64, 0..0, format!("segment header: {problem}")),
                );
            } else if segment.short && segment.len_bytes > 0 {
                let reason = "shorter than a segment header".to_owned();
                ranges.insert(0, (0, segment.len_bytes, 0..0, reason));
            }
            for (position, len_bytes, lost, reason) in ranges {
                let to = quarantine.join(ManifestEntry::bin_name(&name, position));
                actions.push(RepairAction::Quarantine {
                    segment: segment.path.clone(),
                    position,
                    len_bytes,
                    to,
                    lost,
                    reason,
                });
            }
            actions.push(RepairAction::RewriteSegment {
                segment: segment.path.clone(),
                records: segment.records,
            });
        }
    }
    if topic.dir_exists && topic.next_offset > topic.log_next_offset {
        let segment = topic.dir.join(segment_file_name(topic.next_offset));
        actions.push(RepairAction::ExtendLog { segment, next_offset: topic.next_offset });
    }
    for gap in &topic.gaps {
        if !topic.manifest.covers(&gap.lost) {
            actions.push(RepairAction::AcknowledgeMissing {
                topic: topic.name.clone(),
                lost: gap.lost.clone(),
            });
        }
    }
    if meta_read {
        plan_checkpoints(survey, topic, actions);
        if let Some(catalog) = expected_catalog(topic)
            && topic.dir_exists
            && !matches!(&topic.catalog, Ok(Some(found)) if *found == catalog)
        {
            actions.push(RepairAction::WriteCatalog { topic: topic.name.clone(), catalog });
        }
    }
}

fn plan_checkpoints(survey: &Survey, topic: &TopicSurvey, actions: &mut Vec<RepairAction>) {
    let MetaSurvey::Read(audit) = &survey.meta else { return };
    let (oldest, end) = (topic.oldest_offset, topic.next_offset);
    let catalog = topic.catalog.as_ref().ok().and_then(Option::as_ref);
    let name = topic.name.clone();
    match &topic.record {
        Some(Err(_)) => {
            let paused = catalog.is_some_and(|c| c.paused);
            let record = TopicRecord { paused_at: paused.then_some(end), orphan_floor: oldest };
            actions.push(RepairAction::FixTopic { topic: name.clone(), record });
        }
        Some(Ok(record)) => {
            let mut fixed = record.clone();
            fixed.paused_at = record.paused_at.map(|at| at.min(end));
            fixed.orphan_floor = record.orphan_floor.min(end);
            if topic.channels.is_empty() && topic.dir_exists {
                fixed.orphan_floor = fixed.orphan_floor.max(oldest);
            }
            if fixed != *record {
                actions.push(RepairAction::FixTopic { topic: name.clone(), record: fixed });
            }
        }
        None => {}
    }
    let (oldest, end) = if topic.dir_exists { (oldest, end) } else { (0, u64::MAX) };
    for channel in &topic.channels {
        let key = (name.clone(), channel.name.clone());
        let deferred = audit.deferred.get(&key);
        let record = match &channel.record {
            Err(_) => {
                let paused = catalog
                    .and_then(|c| c.channels.iter().find(|(n, _)| *n == channel.name))
                    .is_some_and(|(_, paused)| *paused);
                let record = ChannelRecord {
                    paused,
                    floor: oldest,
                    next_read: oldest,
                    ..Default::default()
                };
                actions.push(RepairAction::FixChannel {
                    topic: name.clone(),
                    channel: channel.name.clone(),
                    record,
                    clear_deferred: deferred.is_some(),
                });
                continue;
            }
            Ok(record) => record,
        };
        let (floor, next_read) = fit_cursor(record, oldest, end);
        if next_read != record.next_read || floor != record.floor {
            let mut fixed = record.clone();
            fixed.floor = floor;
            fixed.next_read = next_read;
            fixed.finished = clip_ranges(&record.finished, floor, end);
            fixed.attempts.retain(|&(o, _)| o >= floor && o < next_read);
            fixed.once = clip_ranges(&record.once, floor, next_read);
            actions.push(RepairAction::FixChannel {
                topic: name.clone(),
                channel: channel.name.clone(),
                record: fixed,
                clear_deferred: false,
            });
        }
        if let Some(deferred) = deferred {
            let mut offsets: Vec<u64> = deferred
                .entries
                .keys()
                .copied()
                .filter(|&o| o < floor || o >= next_read)
                .chain(deferred.damaged.keys().copied())
                .collect();
            offsets.sort_unstable();
            if !offsets.is_empty() {
                actions.push(RepairAction::RemoveDeferred {
                    topic: name.clone(),
                    channel: channel.name.clone(),
                    offsets,
                });
            }
        }
    }
    // Entries of the whole store are planned once, with the first topic.
    if survey.topics.first().is_some_and(|first| first.name == topic.name) {
        for bad in &audit.bad_keys {
            actions.push(RepairAction::RemoveEntry { tree: bad.tree, key: bad.key.clone() });
        }
        for (topic, channel) in audit.channels.keys() {
            if !audit.topics.contains_key(topic) {
                actions.push(RepairAction::RemoveOrphanChannel {
                    topic: topic.clone(),
                    channel: channel.clone(),
                });
            }
        }
    }
}

/// The catalog the store implies for a topic (pause states the store lost taken from the
/// catalog there is); `None` when the topic's own record is damaged or missing.
pub(crate) fn expected_catalog(topic: &TopicSurvey) -> Option<Catalog> {
    let record = topic.record.as_ref()?.as_ref().ok()?;
    let old = topic.catalog.as_ref().ok().and_then(Option::as_ref);
    let channels = topic
        .channels
        .iter()
        .map(|channel| {
            let paused = match &channel.record {
                Ok(record) => record.paused,
                Err(_) => old
                    .and_then(|c| c.channels.iter().find(|(n, _)| *n == channel.name))
                    .is_some_and(|(_, paused)| *paused),
            };
            (channel.name.clone(), paused)
        })
        .collect();
    Some(Catalog { topic: topic.name.clone(), paused: record.paused_at.is_some(), channels })
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn apply(
    storage: &FsStorage,
    data_dir: &Path,
    meta: Option<&MetaStore>,
    action: &RepairAction,
) -> Result<(), EngineError> {
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| EngineError::Io { op, path, source }
    };
    let meta_only = || {
        meta.ok_or_else(|| EngineError::Io {
            op: "open",
            path: data_dir.join(META_DIR_NAME),
            source: std::io::Error::other("the metadata store is not open"),
        })
    };
    match action {
        RepairAction::RebuildMeta => {}
        RepairAction::Quarantine { segment, position, len_bytes, to, lost, reason } => {
            let file = storage.open(segment, false).map_err(io("open", segment))?;
            let mut bytes = vec![0u8; usize::try_from(*len_bytes).unwrap_or(0)];
            let got = read_full_at(&*file, &mut bytes, *position).map_err(io("read", segment))?;
            bytes.truncate(got);
            let dir = to.parent().unwrap_or(Path::new("."));
            storage.create_dir_all(dir).map_err(io("create directory", dir))?;
            write_atomically(storage, to, &bytes).map_err(io("write", to))?;
            let entry = ManifestEntry::Damaged {
                segment: file_name(segment),
                position: *position,
                len_bytes: *len_bytes,
                lost: lost.clone(),
                reason: reason.clone(),
            };
            Manifest::add(storage, dir, [entry]).map_err(io("write manifest", dir))?;
        }
        RepairAction::RewriteSegment { segment, .. } => rewrite_segment(storage, segment)?,
        RepairAction::ExtendLog { segment, next_offset } => {
            let header = SegmentHeader { first_offset: *next_offset }.encode();
            write_atomically(storage, segment, &header).map_err(io("write", segment))?;
        }
        RepairAction::AcknowledgeMissing { topic, lost } => {
            let dir = Manifest::dir(data_dir, topic);
            let entry = ManifestEntry::Missing { lost: lost.clone() };
            Manifest::add(storage, &dir, [entry]).map_err(io("write manifest", &dir))?;
        }
        RepairAction::WriteCatalog { topic, catalog } => {
            let dir = data_dir.join(crate::TOPICS_DIR_NAME).join(topic);
            catalog.write(storage, &dir).map_err(io("write catalog", &dir))?;
        }
        RepairAction::FixTopic { topic, record } => meta_only()?.put_topic(topic, record)?,
        RepairAction::FixChannel { topic, channel, record, clear_deferred } => {
            let meta = meta_only()?;
            if *clear_deferred {
                meta.clear_deferred(topic, channel)?;
            }
            meta.put_channel(topic, channel, record)?;
        }
        RepairAction::RemoveDeferred { topic, channel, offsets } => {
            let changes = offsets.iter().map(|&offset| (offset, None));
            meta_only()?.update_deferred(topic, channel, changes)?;
        }
        RepairAction::RemoveEntry { tree, key } => meta_only()?.remove_entry(*tree, key)?,
        RepairAction::RemoveOrphanChannel { topic, channel } => {
            meta_only()?.remove_channel(topic, channel)?;
        }
    }
    if let Some(meta) = meta {
        meta.flush()?;
    }
    Ok(())
}

/// Replaces a segment with a fresh header and its valid records, byte for byte.
fn rewrite_segment(storage: &FsStorage, path: &Path) -> Result<(), EngineError> {
    let io = |op: &'static str| {
        let path = path.to_path_buf();
        move |source| EngineError::Io { op, path, source }
    };
    let first_offset = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(crate::format::parse_segment_file_name)
        .unwrap_or(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let limit = crate::log::list_segments(storage, dir)
        .map_err(io("list"))?
        .segments
        .iter()
        .map(|(first, _)| *first)
        .find(|&first| first > first_offset);
    let file = storage.open(path, false).map_err(io("open"))?;
    let len = file.len().map_err(io("stat"))?;
    let mut out = SegmentHeader { first_offset }.encode().to_vec();
    if len >= SegmentHeader::LEN as u64 {
        let mut reader = SegmentReader::new(Arc::clone(&file), first_offset, len, limit);
        while let Some(item) = reader.next().map_err(io("read"))? {
            if let SegmentItem::Record { record, .. } = item {
                let record = RecordRef {
                    offset: record.offset,
                    timestamp_ns: record.timestamp_ns,
                    deliver_at_ns: record.deliver_at_ns,
                    body: &record.body,
                };
                encode_record(&record, &mut out);
            }
        }
    }
    write_atomically(storage, path, &out).map_err(io("write"))
}

fn damage_reason(kind: DamageKind) -> &'static str {
    match kind {
        DamageKind::Corrupt => "no valid record",
        DamageKind::Overlap => "offsets of the next segment",
        DamageKind::TornTail => "torn tail",
        DamageKind::DamagedLastRecord => "last record fails its checksum",
        DamageKind::DamagedTail => "no valid record to the end of the segment",
    }
}

/// Ranges `[start, end)` cut to `[low, high)`, the empty ones dropped.
fn clip_ranges(ranges: &[(u64, u64)], low: u64, high: u64) -> Vec<(u64, u64)> {
    ranges.iter().map(|&(s, e)| (s.max(low), e.min(high))).filter(|(s, e)| s < e).collect()
}
