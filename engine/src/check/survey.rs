//! Reading a whole data directory into a [`Survey`], changing nothing.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::manifest::Manifest;
use super::meta_copy::audit_copy;
use crate::catalog::Catalog;
use crate::format::{FORMAT_MAX_BODY_BYTES, FRAME_HEADER_LEN, decode_record};
use crate::log::{
    SEGMENT_FIRST_RECORD_POS, SegmentItem, SegmentReader, list_segments, segment_header_problem,
    whole_frame_at,
};
use crate::meta::{ChannelRecord, MetaAudit, TopicRecord};
use crate::names::is_valid_name;
use crate::storage::{FsStorage, Storage, StorageFile, read_full_at};
use crate::{META_DIR_NAME, TOPICS_DIR_NAME};

/// Told how far a survey has got, for a progress bar.
pub trait ScanProgress {
    /// Bytes of segments the survey will read.
    fn total(&mut self, _bytes: u64) {}
    /// Bytes read since the last call.
    fn advance(&mut self, _bytes: u64) {}
}

/// No progress to show.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl ScanProgress for NoProgress {}

/// Everything found in a data directory.
#[derive(Debug)]
pub struct Survey {
    pub data_dir: PathBuf,
    /// `Some` when a running process holds the directory's lock: its pid, or empty if unknown.
    pub lock_holder: Option<String>,
    pub meta: MetaSurvey,
    /// The topics found in `topics/` or in the store, sorted by name.
    pub topics: Vec<TopicSurvey>,
    /// Entries of `topics/` that are not topic directories (bad names, plain files).
    pub unknown_entries: Vec<PathBuf>,
}

/// What became of reading the metadata store.
#[derive(Debug)]
pub enum MetaSurvey {
    /// There is no `meta/` directory.
    Missing,
    /// It could not be opened or read: why.
    Unreadable(String),
    Read(MetaAudit),
}

/// One topic.
#[derive(Debug)]
pub struct TopicSurvey {
    pub name: String,
    pub dir: PathBuf,
    pub dir_exists: bool,
    /// Why the directory could not be listed.
    pub list_error: Option<String>,
    /// The catalog, `None` when there is none, or why it could not be read.
    pub catalog: Result<Option<Catalog>, String>,
    /// Segments in offset order.
    pub segments: Vec<SegmentSurvey>,
    /// Files of the directory that are neither segments nor the catalog.
    pub other_files: Vec<PathBuf>,
    /// First offset of the oldest segment (what the engine calls the oldest retained offset).
    pub oldest_offset: u64,
    /// The offset the next message must get: one past every offset ever used, as far as the
    /// segments, a damaged last record (FORMAT.md §5) and the quarantine manifest tell.
    pub next_offset: u64,
    /// The offset the log would give the next message were its damage cut away: one past the
    /// last valid record of the last segment (or that segment's first offset).
    pub log_next_offset: u64,
    /// Offsets no segment holds, between the oldest and the next, not lost to damage found now.
    pub gaps: Vec<Gap>,
    pub manifest: Manifest,
    pub manifest_error: Option<String>,
    /// The store's record: `None` when the store does not list the topic (or was not read).
    pub record: Option<Result<TopicRecord, String>>,
    pub channels: Vec<ChannelSurvey>,
}

/// A run of offsets no segment holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub lost: Range<u64>,
    /// The segment where the run was noticed (the one after it).
    pub segment: PathBuf,
}

/// One segment file.
#[derive(Debug, Default)]
pub struct SegmentSurvey {
    pub path: PathBuf,
    pub first_offset: u64,
    pub len_bytes: u64,
    pub is_last: bool,
    pub records: u64,
    pub body_bytes: u64,
    /// Records with a deliver-at time (DPUB).
    pub deferred_records: u64,
    pub first_record: Option<u64>,
    pub last_record: Option<u64>,
    pub oldest_timestamp_ns: Option<i64>,
    pub newest_timestamp_ns: Option<i64>,
    /// Shorter than a header (a crash while rolling).
    pub short: bool,
    pub header_problem: Option<String>,
    pub damage: Vec<DamageSurvey>,
    /// Why the file could not be read (the scan stopped there).
    pub read_error: Option<String>,
}

/// A damaged range of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamageSurvey {
    pub position: u64,
    pub len_bytes: u64,
    pub kind: DamageKind,
    /// Offsets lost with it: the gap between the records around it.
    pub lost: Range<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamageKind {
    /// Bytes that hold no valid record, with a valid record after them.
    Corrupt,
    /// Valid records whose offsets belong to the next segment.
    Overlap,
    /// The end of the last segment, cut by a crash: what recovery truncates.
    TornTail,
    /// The end of the last segment is one whole record that fails its checksum: recovery keeps
    /// its offset from being reused.
    DamagedLastRecord,
    /// The end of an older segment holds no valid record.
    DamagedTail,
}

/// One durable channel, as its checkpoint says.
#[derive(Debug)]
pub struct ChannelSurvey {
    pub name: String,
    pub record: Result<ChannelRecord, String>,
    /// Deferred entries, and those whose value is damaged.
    pub deferred: u64,
    pub damaged_deferred: u64,
    /// Deferred entries outside the range the checkpoint has read and not finished: the engine
    /// ignores them.
    pub stray_deferred: u64,
    /// Messages not finished: from the floor to the end of the log, less the finished ones.
    pub depth: u64,
    /// Read but neither finished nor deferred at the checkpoint: in flight when the process
    /// stopped, due again on start.
    pub in_flight_at_crash: u64,
    /// Messages not read yet.
    pub backlog: u64,
    pub in_catalog: bool,
}

/// Reads `data_dir` without writing to it. Fails only when the directory cannot be listed.
pub fn survey(data_dir: &Path, progress: &mut dyn ScanProgress) -> std::io::Result<Survey> {
    let storage = FsStorage;
    std::fs::metadata(data_dir)?;
    let lock_holder = crate::lock::probe_holder(data_dir)?;
    let meta_dir = data_dir.join(META_DIR_NAME);
    let meta = if meta_dir.is_dir() {
        match audit_copy(&meta_dir) {
            Ok(audit) => MetaSurvey::Read(audit),
            Err(reason) => MetaSurvey::Unreadable(reason),
        }
    } else {
        MetaSurvey::Missing
    };
    let topics_dir = data_dir.join(TOPICS_DIR_NAME);
    let mut names = BTreeSet::new();
    let mut unknown_entries = Vec::new();
    if topics_dir.is_dir() {
        for entry in std::fs::read_dir(&topics_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_str().map(str::to_owned);
            match name {
                Some(name) if is_valid_name(&name) && entry.file_type()?.is_dir() => {
                    names.insert(name);
                }
                _ => unknown_entries.push(entry.path()),
            }
        }
    }
    unknown_entries.sort();
    if let MetaSurvey::Read(audit) = &meta {
        names.extend(audit.topics.keys().cloned());
    }
    let mut listings = Vec::new();
    let mut total = 0;
    for name in names {
        let dir = topics_dir.join(&name);
        let listing = if dir.is_dir() { Some(list_segments(&storage, &dir)) } else { None };
        if let Some(Ok(listing)) = &listing {
            for (_, path) in &listing.segments {
                total += std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            }
        }
        listings.push((name, dir, listing));
    }
    progress.total(total);
    let mut topics = Vec::new();
    for (name, dir, listing) in listings {
        let mut topic = survey_topic(&storage, data_dir, &name, dir, listing, progress);
        add_meta(&mut topic, &meta);
        topics.push(topic);
    }
    Ok(Survey { data_dir: data_dir.to_path_buf(), lock_holder, meta, topics, unknown_entries })
}

fn survey_topic(
    storage: &FsStorage,
    data_dir: &Path,
    name: &str,
    dir: PathBuf,
    listing: Option<std::io::Result<crate::log::SegmentListing>>,
    progress: &mut dyn ScanProgress,
) -> TopicSurvey {
    let quarantine = Manifest::dir(data_dir, name);
    let (manifest, manifest_error) = match Manifest::read(storage, &quarantine) {
        Ok(manifest) => (manifest, None),
        Err(error) => (Manifest::default(), Some(error.to_string())),
    };
    let mut topic = TopicSurvey {
        name: name.to_owned(),
        dir_exists: listing.is_some(),
        catalog: Ok(None),
        list_error: None,
        segments: Vec::new(),
        other_files: Vec::new(),
        oldest_offset: 0,
        next_offset: 0,
        log_next_offset: 0,
        gaps: Vec::new(),
        manifest,
        manifest_error,
        record: None,
        channels: Vec::new(),
        dir,
    };
    let listing = match listing {
        None => return topic,
        Some(Err(error)) => {
            topic.list_error = Some(error.to_string());
            return topic;
        }
        Some(Ok(listing)) => listing,
    };
    topic.catalog = Catalog::read(storage, &topic.dir).map_err(|error| error.to_string());
    topic.other_files = listing
        .other_files
        .into_iter()
        .filter(|path| path.file_name().is_none_or(|n| n != crate::catalog::CATALOG_FILE_NAME))
        .collect();
    let count = listing.segments.len();
    let mut expected = listing.segments.first().map_or(0, |(first, _)| *first);
    topic.oldest_offset = expected;
    // The damage after the last valid record, which a gap that follows is blamed on.
    let mut open_damage: Option<(usize, usize)> = None;
    for (index, (first_offset, path)) in listing.segments.iter().enumerate() {
        let limit = listing.segments.get(index + 1).map(|(next, _)| *next);
        let is_last = index + 1 == count;
        let mut segment = SegmentSurvey {
            path: path.clone(),
            first_offset: *first_offset,
            is_last,
            ..Default::default()
        };
        if *first_offset > expected {
            let lost = expected..*first_offset;
            blame(&mut topic, &mut segment, open_damage.take(), lost);
        }
        expected = expected.max(*first_offset);
        match scan_segment(storage, &mut segment, limit, progress) {
            Ok(items) => {
                for item in items {
                    match item {
                        Scanned::Record { offset } => {
                            if offset > expected {
                                let lost = expected..offset;
                                blame(&mut topic, &mut segment, open_damage.take(), lost);
                            }
                            open_damage = None;
                            expected = offset + 1;
                        }
                        Scanned::Damage(mut damage) => {
                            if let Some(offset) = damage.lost.end.checked_sub(1)
                                && damage.kind == DamageKind::DamagedLastRecord
                            {
                                damage.lost = expected..offset + 1;
                                expected = offset + 1;
                            }
                            segment.damage.push(damage);
                            open_damage = Some((topic.segments.len(), segment.damage.len() - 1));
                        }
                    }
                }
            }
            Err(error) => segment.read_error = Some(error.to_string()),
        }
        topic.segments.push(segment);
    }
    topic.log_next_offset = topic
        .segments
        .last()
        .map_or(0, |last| last.last_record.map_or(last.first_offset, |o| o + 1));
    // Offsets a repair took out at the end stay used (FORMAT.md §5: never reused).
    let acknowledged = topic.manifest.entries.iter().map(|e| e.lost().end).max().unwrap_or(0);
    topic.next_offset = expected.max(acknowledged);
    topic
}

/// Records `lost` against the damage before it, or as a gap noticed in `segment`.
fn blame(
    topic: &mut TopicSurvey,
    segment: &mut SegmentSurvey,
    damage: Option<(usize, usize)>,
    lost: Range<u64>,
) {
    let target = match damage {
        Some((s, d)) if s == topic.segments.len() => segment.damage.get_mut(d),
        Some((s, d)) => topic.segments.get_mut(s).and_then(|seg| seg.damage.get_mut(d)),
        None => None,
    };
    match target {
        Some(damage) if damage.lost.is_empty() => damage.lost = lost,
        Some(damage) => damage.lost = damage.lost.start.min(lost.start)..lost.end,
        None => topic.gaps.push(Gap { lost, segment: segment.path.clone() }),
    }
}

enum Scanned {
    Record { offset: u64 },
    Damage(DamageSurvey),
}

fn scan_segment(
    storage: &FsStorage,
    segment: &mut SegmentSurvey,
    limit: Option<u64>,
    progress: &mut dyn ScanProgress,
) -> std::io::Result<Vec<Scanned>> {
    let file = storage.open(&segment.path, false)?;
    segment.len_bytes = file.len()?;
    progress.advance(segment.len_bytes.min(SEGMENT_FIRST_RECORD_POS));
    if segment.len_bytes < SEGMENT_FIRST_RECORD_POS {
        segment.short = true;
        return Ok(Vec::new());
    }
    segment.header_problem = segment_header_problem(&*file, segment.first_offset);
    let mut reader =
        SegmentReader::new(Arc::clone(&file), segment.first_offset, segment.len_bytes, limit);
    let mut items = Vec::new();
    while let Some(item) = reader.next()? {
        match item {
            SegmentItem::Record { len_bytes, record, .. } => {
                progress.advance(len_bytes);
                segment.records += 1;
                segment.body_bytes += record.body.len() as u64;
                segment.deferred_records += u64::from(record.deliver_at_ns != 0);
                segment.first_record.get_or_insert(record.offset);
                segment.last_record = Some(record.offset);
                let ts = record.timestamp_ns;
                segment.oldest_timestamp_ns =
                    Some(segment.oldest_timestamp_ns.map_or(ts, |t| t.min(ts)));
                segment.newest_timestamp_ns =
                    Some(segment.newest_timestamp_ns.map_or(ts, |t| t.max(ts)));
                items.push(Scanned::Record { offset: record.offset });
            }
            SegmentItem::Damaged { position, len_bytes, resumed } => {
                progress.advance(len_bytes);
                let end = position + len_bytes;
                let expected = reader.last_offset().map_or(segment.first_offset, |o| o + 1);
                let mut kind = if resumed {
                    DamageKind::Corrupt
                } else if segment.is_last {
                    DamageKind::TornTail
                } else {
                    DamageKind::DamagedTail
                };
                let mut lost = 0..0;
                if limit.is_some_and(|limit| {
                    valid_frame_at(&*file, position, end).is_some_and(|o| o >= limit)
                }) {
                    kind = DamageKind::Overlap;
                } else if kind == DamageKind::TornTail
                    && let Some((_, offset)) = whole_frame_at(&*file, position, end, expected)?
                {
                    kind = DamageKind::DamagedLastRecord;
                    lost = offset..offset + 1;
                }
                items.push(Scanned::Damage(DamageSurvey { position, len_bytes, kind, lost }));
            }
        }
    }
    Ok(items)
}

/// The offset of a whole record with a valid checksum at `pos`, whatever its offset.
fn valid_frame_at(file: &dyn StorageFile, pos: u64, end: u64) -> Option<u64> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    if read_full_at(file, &mut header, pos).ok()? < FRAME_HEADER_LEN {
        return None;
    }
    let (body_len, _) = crate::format::peek_len_and_offset(&header)?;
    let len = FRAME_HEADER_LEN as u64 + u64::from(body_len);
    if body_len > FORMAT_MAX_BODY_BYTES || pos + len > end {
        return None;
    }
    let mut bytes = vec![0u8; usize::try_from(len).ok()?];
    if (read_full_at(file, &mut bytes, pos).ok()? as u64) < len {
        return None;
    }
    match decode_record(&bytes) {
        crate::format::Decoded::Record(record) => Some(record.offset),
        _ => None,
    }
}

/// Adds what the store says of the topic and its channels.
fn add_meta(topic: &mut TopicSurvey, meta: &MetaSurvey) {
    let MetaSurvey::Read(audit) = meta else { return };
    topic.record = audit.topics.get(&topic.name).cloned();
    let catalog_channels: BTreeSet<String> = match &topic.catalog {
        Ok(Some(catalog)) => catalog.channels.iter().map(|(name, _)| name.clone()).collect(),
        _ => BTreeSet::new(),
    };
    let range = audit.channels.range((topic.name.clone(), String::new())..);
    for ((topic_name, channel), record) in range {
        if *topic_name != topic.name {
            break;
        }
        let deferred = audit.deferred.get(&(topic_name.clone(), channel.clone()));
        let mut survey = ChannelSurvey {
            name: channel.clone(),
            record: record.clone(),
            deferred: deferred.map_or(0, |d| d.entries.len() as u64),
            damaged_deferred: deferred.map_or(0, |d| d.damaged.len() as u64),
            stray_deferred: 0,
            depth: 0,
            in_flight_at_crash: 0,
            backlog: 0,
            in_catalog: catalog_channels.contains(channel),
        };
        if let Ok(record) = record {
            let end = topic.next_offset;
            let (floor, next_read) = fit_cursor(record, topic.oldest_offset, end);
            let finished = |upto: u64| -> u64 {
                record.finished.iter().map(|&(s, e)| e.min(upto).saturating_sub(s.max(floor))).sum()
            };
            let deferred_read = deferred.map_or(0, |d| d.entries.range(floor..next_read).count());
            survey.depth = (end - floor).saturating_sub(finished(end));
            survey.in_flight_at_crash = (next_read - floor)
                .saturating_sub(finished(next_read))
                .saturating_sub(deferred_read as u64);
            survey.backlog = end - next_read;
            survey.stray_deferred = deferred.map_or(0, |d| {
                let outside = |o: &&u64| **o < floor || **o >= next_read;
                d.entries.keys().filter(outside).count() as u64
            });
        }
        topic.channels.push(survey);
    }
}

/// A channel's `(floor, next_read)` fitted to a log holding offsets `oldest..end`, as repair
/// writes them and the engine restores them: nothing read past the end, nothing finished below
/// the oldest record, the floor never above the cursor.
pub(crate) fn fit_cursor(record: &ChannelRecord, oldest: u64, end: u64) -> (u64, u64) {
    let next_read = record.next_read.clamp(oldest.min(end), end);
    (record.floor.max(oldest).min(next_read), next_read)
}
