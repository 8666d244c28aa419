//! The quarantine of a topic: the damaged bytes repair took out of its segments, and the list
//! of what was lost.
//!
//! ```text
//! <data>/quarantine/<topic>/MANIFEST
//! <data>/quarantine/<topic>/<segment file name>@<position>.bin    the damaged bytes
//! ```
//! `MANIFEST` is UTF-8 text, one entry per line, sorted, rewritten atomically (FORMAT.md §9):
//! ```text
//! # nsq-rs quarantine manifest v1
//! damaged <segment file name> <position> <len_bytes> <lost start> <lost end> <reason>
//! missing <lost start> <lost end>
//! ```
//! `lost start..lost end` is the half-open range of offsets no segment holds any more because of
//! the entry (empty when the damage held no record, as a damaged header).

use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::storage::{Storage, read_full_at, write_atomically};

/// The directory of quarantined bytes inside a data directory.
pub const QUARANTINE_DIR_NAME: &str = "quarantine";
/// The list of a topic's quarantine.
pub const MANIFEST_FILE_NAME: &str = "MANIFEST";
const MANIFEST_HEADER: &str = "# nsq-rs quarantine manifest v1";
/// A manifest larger than this is not read.
const MANIFEST_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// One line of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestEntry {
    /// Bytes taken out of a segment, kept in [`ManifestEntry::bin_name`].
    Damaged { segment: String, position: u64, len_bytes: u64, lost: Range<u64>, reason: String },
    /// Offsets that no segment held when repair found them missing.
    Missing { lost: Range<u64> },
}

impl ManifestEntry {
    /// The file holding a damaged range's bytes.
    pub fn bin_name(segment: &str, position: u64) -> String {
        format!("{segment}@{position:020}.bin")
    }

    pub fn lost(&self) -> &Range<u64> {
        match self {
            Self::Damaged { lost, .. } | Self::Missing { lost } => lost,
        }
    }

    fn render(&self) -> String {
        match self {
            Self::Damaged { segment, position, len_bytes, lost, reason } => format!(
                "damaged {segment} {position} {len_bytes} {} {} {}",
                lost.start,
                lost.end,
                reason.replace('\n', " ")
            ),
            Self::Missing { lost } => format!("missing {} {}", lost.start, lost.end),
        }
    }

    fn parse(line: &str) -> Option<Self> {
        let (kind, rest) = line.split_once(' ')?;
        match kind {
            "missing" => {
                let (start, end) = rest.split_once(' ')?;
                Some(Self::Missing { lost: start.parse().ok()?..end.parse().ok()? })
            }
            "damaged" => {
                let mut fields = rest.splitn(6, ' ');
                let segment = fields.next()?.to_owned();
                let mut number = || fields.next()?.parse::<u64>().ok();
                let (position, len_bytes, start, end) =
                    (number()?, number()?, number()?, number()?);
                let reason = fields.next().unwrap_or_default().to_owned();
                Some(Self::Damaged { segment, position, len_bytes, lost: start..end, reason })
            }
            _ => None,
        }
    }
}

/// The entries of one topic's manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Sorted by the first lost offset, then by their text; each once.
    pub entries: Vec<ManifestEntry>,
    /// Lines that could not be parsed, with their numbers.
    pub unreadable_lines: Vec<usize>,
}

impl Manifest {
    /// The quarantine directory of `topic` in `data_dir`.
    pub fn dir(data_dir: &Path, topic: &str) -> PathBuf {
        data_dir.join(QUARANTINE_DIR_NAME).join(topic)
    }

    /// Reads a topic's manifest; empty when there is none.
    pub fn read(storage: &dyn Storage, dir: &Path) -> std::io::Result<Self> {
        let path = dir.join(MANIFEST_FILE_NAME);
        let file = match storage.open(&path, false) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::default());
            }
            Err(error) => return Err(error),
        };
        let len = file.len()?.min(MANIFEST_MAX_BYTES);
        let mut bytes = vec![0; usize::try_from(len).unwrap_or(0)];
        let got = read_full_at(&*file, &mut bytes, 0)?;
        bytes.truncate(got);
        let mut manifest = Self::default();
        for (index, line) in String::from_utf8_lossy(&bytes).lines().enumerate() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            match ManifestEntry::parse(line) {
                Some(entry) => manifest.insert(entry),
                None => manifest.unreadable_lines.push(index + 1),
            }
        }
        Ok(manifest)
    }

    fn insert(&mut self, entry: ManifestEntry) {
        if !self.entries.contains(&entry) {
            self.entries.push(entry);
            self.entries.sort_by_cached_key(|e| (e.lost().start, e.render()));
        }
    }

    /// Whether every offset of `range` is acknowledged as lost by some entry.
    pub fn covers(&self, range: &Range<u64>) -> bool {
        let mut lost: Vec<&Range<u64>> = self.entries.iter().map(|e| e.lost()).collect();
        lost.sort_by_key(|r| r.start);
        let mut next = range.start;
        for r in lost {
            if r.start > next {
                break;
            }
            next = next.max(r.end);
            if next >= range.end {
                return true;
            }
        }
        next >= range.end
    }

    /// Adds `entries` (those already present are kept once) and writes the manifest atomically.
    pub fn add(
        storage: &dyn Storage,
        dir: &Path,
        entries: impl IntoIterator<Item = ManifestEntry>,
    ) -> std::io::Result<()> {
        let mut manifest = Self::read(storage, dir)?;
        let before = manifest.entries.len();
        for entry in entries {
            manifest.insert(entry);
        }
        if manifest.entries.len() == before {
            return Ok(());
        }
        let mut text = format!("{MANIFEST_HEADER}\n");
        for entry in &manifest.entries {
            text.push_str(&entry.render());
            text.push('\n');
        }
        storage.create_dir_all(dir)?;
        write_atomically(storage, &dir.join(MANIFEST_FILE_NAME), text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_entries_render_and_parse_back() {
        let entries = [
            ManifestEntry::Damaged {
                segment: "00000000000000000100.seg".into(),
                position: 4096,
                len_bytes: 77,
                lost: 130..132,
                reason: "checksum mismatch: bytes kept".into(),
            },
            ManifestEntry::Missing { lost: 200..300 },
        ];
        for entry in entries {
            assert_eq!(ManifestEntry::parse(&entry.render()), Some(entry));
        }
    }

    #[test]
    fn covers_joins_adjacent_lost_ranges() {
        let mut manifest = Manifest::default();
        manifest.insert(ManifestEntry::Missing { lost: 10..20 });
        manifest.insert(ManifestEntry::Missing { lost: 20..25 });
        assert!(manifest.covers(&(12..25)));
        assert!(!manifest.covers(&(12..26)));
        assert!(!manifest.covers(&(5..12)));
    }
}
