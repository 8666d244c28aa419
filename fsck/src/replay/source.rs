//! Where replayed records come from: archive files and live segment files, read-only.
//!
//! A source directory is resolved for the topic as follows (first match wins):
//! 1. it holds `topics/`: a data directory, whose live segments `topics/<topic>/*.seg` are read;
//! 2. it holds `<topic>/`: an archive path (nsqd's `--archive-path`), read from `<topic>/`;
//! 3. otherwise it is itself a topic's directory of archives (`*.seg.zst`) and/or segments.
//!
//! The files of every source become [`Unit`]s sorted by first offset; the caller skips records
//! at or below the last offset it has seen, so a segment found both archived and live (a crash
//! between the archive and the removal) is replayed once. Nothing here opens an engine, takes a
//! lock or writes: a live data directory may be read while its nsqd runs (a record being written
//! at the very end of the last segment may then read as a damaged tail).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use engine::archive::{ArchiveError, ArchiveReader, list_archives, read_archive_header};
use engine::log::{Record, SegmentItem, SegmentReader, list_segments, segment_header_problem};
use engine::storage::{FsStorage, Storage};

/// One file to read: an archive or a live segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unit {
    pub(crate) path: PathBuf,
    pub(crate) first_offset: u64,
    /// Every record of the unit is below this, when known (an archive's header, or the next
    /// segment of the same directory).
    pub(crate) end_offset: Option<u64>,
    /// Bytes the unit's segment holds (decoded, for an archive): the progress bar's measure.
    pub(crate) len_bytes: u64,
    pub(crate) archived: bool,
}

/// A damaged range or an unreadable archive met while reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damage {
    pub(crate) file: PathBuf,
    /// Position of the first damaged byte: in the segment (decoded, for an archive) for damaged
    /// records; in the archive file for a corrupt archive.
    pub(crate) position: u64,
    pub(crate) problem: String,
}

/// What reading a unit yields.
#[derive(Debug)]
pub(crate) enum Item {
    Record { record: Record, len_bytes: u64 },
    Damaged(Damage),
}

/// The data directories among `sources` (to refuse replaying one into itself).
pub(crate) fn data_dirs(sources: &[PathBuf]) -> Vec<PathBuf> {
    sources.iter().filter(|s| s.join(engine::TOPICS_DIR_NAME).is_dir()).cloned().collect()
}

/// Every unit of `topic` in `sources`, sorted by first offset (archives first on a tie).
pub(crate) fn collect_units(sources: &[PathBuf], topic: &str) -> anyhow::Result<Vec<Unit>> {
    let storage = FsStorage;
    let mut units = Vec::new();
    for source in sources {
        let dir = topic_dir(source, topic)?;
        let found = units.len();
        let archives = list_archives(&storage, &dir)
            .with_context(|| format!("cannot list {}", dir.display()))?;
        for (first_offset, path) in archives.archives {
            // A header that cannot be read is reported when the unit is read.
            let header = read_archive_header(&storage, &path).ok();
            units.push(Unit {
                first_offset,
                end_offset: header.map(|h| h.end_offset),
                len_bytes: header.map_or(0, |h| h.segment_len),
                archived: true,
                path,
            });
        }
        let segments = list_segments(&storage, &dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .segments;
        for (index, (first_offset, path)) in segments.iter().enumerate() {
            let len_bytes = std::fs::metadata(path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .len();
            units.push(Unit {
                path: path.clone(),
                first_offset: *first_offset,
                end_offset: segments.get(index + 1).map(|(next, _)| *next),
                len_bytes,
                archived: false,
            });
        }
        if units.len() == found {
            bail!("{} holds no archives or segments of topic {topic:?}", dir.display());
        }
    }
    units.sort_by_key(|unit| (unit.first_offset, !unit.archived));
    Ok(units)
}

/// The directory of `topic`'s files in `source` (see the module documentation).
fn topic_dir(source: &Path, topic: &str) -> anyhow::Result<PathBuf> {
    if !source.is_dir() {
        bail!("{} is not a directory", source.display());
    }
    let data_topics = source.join(engine::TOPICS_DIR_NAME);
    if data_topics.is_dir() {
        let dir = data_topics.join(topic);
        if !dir.is_dir() {
            bail!("data directory {} has no topic {topic:?}", source.display());
        }
        return Ok(dir);
    }
    let archived = source.join(topic);
    if archived.is_dir() {
        return Ok(archived);
    }
    Ok(source.to_path_buf())
}

/// Reads every record and damaged range of `unit`, in order, handing each to `each`. A corrupt
/// archive is one [`Item::Damaged`]; I/O errors stop the read.
pub(crate) fn read_unit(
    unit: &Unit,
    mut each: impl FnMut(Item) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let storage = FsStorage;
    if unit.archived {
        let mut reader = match ArchiveReader::open(&storage, &unit.path) {
            Ok(reader) => reader,
            Err(ArchiveError::Corrupt { path, position, problem }) => {
                return each(Item::Damaged(Damage { file: path, position, problem }));
            }
            Err(error) => return Err(error.into()),
        };
        if let Some(problem) = reader.segment_header_problem() {
            each(Item::Damaged(header_damage(&unit.path, problem)))?;
        }
        while let Some(item) = reader.next()? {
            each(item_of(&unit.path, item))?;
        }
        return Ok(());
    }
    let file = storage
        .open(&unit.path, false)
        .with_context(|| format!("cannot open {}", unit.path.display()))?;
    let len = file.len().with_context(|| format!("cannot read {}", unit.path.display()))?;
    if let Some(problem) = segment_header_problem(&*file, unit.first_offset) {
        each(Item::Damaged(header_damage(&unit.path, &problem)))?;
    }
    let mut reader = SegmentReader::new(Arc::clone(&file), unit.first_offset, len, unit.end_offset);
    while let Some(item) =
        reader.next().with_context(|| format!("cannot read {}", unit.path.display()))?
    {
        each(item_of(&unit.path, item))?;
    }
    Ok(())
}

fn header_damage(path: &Path, problem: &str) -> Damage {
    Damage {
        file: path.to_path_buf(),
        position: 0,
        problem: format!("segment header: {problem} (records read all the same)"),
    }
}

fn item_of(path: &Path, item: SegmentItem) -> Item {
    match item {
        SegmentItem::Record { record, len_bytes, .. } => Item::Record { record, len_bytes },
        SegmentItem::Damaged { position, len_bytes, resumed } => Item::Damaged(Damage {
            file: path.to_path_buf(),
            position,
            problem: if resumed {
                format!("{len_bytes} damaged bytes skipped, records after them kept")
            } else {
                format!("{len_bytes} damaged bytes to the end of the file")
            },
        }),
    }
}
