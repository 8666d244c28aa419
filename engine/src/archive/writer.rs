//! Writing archives (FORMAT.md §8, "Writing"): the [`SegmentArchiver`] retention calls.
//!
//! One segment costs three bounded passes over its file: a scan that counts its valid records
//! (the log's own [`SegmentReader`]), then a read in [`ARCHIVE_IO_CHUNK_BYTES`] chunks that
//! checksums it and streams it through a zstd encoder into the `.tmp` file, and the header
//! written last. Memory stays at one chunk plus zstd's window, whatever the segment's size.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{
    ARCHIVE_IO_CHUNK_BYTES, ARCHIVE_MAX_SEGMENT_BYTES, ARCHIVE_WINDOW_LOG_MAX, ARCHIVE_ZSTD_LEVEL,
    ArchiveError, ArchiveHeader, archive_file_name, read_archive_header,
};
use crate::format::SegmentHeader;
use crate::log::{SegmentArchiver, SegmentInfo, SegmentItem, SegmentReader};
use crate::storage::{Storage, StorageFile, read_full_at};

/// Archives the segments of one topic into its archive directory. See the module documentation.
#[derive(Debug, Clone)]
pub struct Archiver {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
}

/// What [`Archiver::archive_segment`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedSegment {
    pub path: PathBuf,
    pub header: ArchiveHeader,
    /// An archive of the same bytes was there already (nothing was written).
    pub already_archived: bool,
}

impl Archiver {
    /// An archiver writing into `dir` (`<archive-path>/<topic>`, created when first needed).
    pub fn new(storage: Arc<dyn Storage>, dir: impl Into<PathBuf>) -> Self {
        Self { storage, dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Archives the segment `segment`, whose open file is `file`. On error no archive is left
    /// under the final name (and none was replaced).
    pub fn archive_segment(
        &self,
        segment: &SegmentInfo,
        file: &dyn StorageFile,
    ) -> Result<ArchivedSegment, ArchiveError> {
        let len = segment.len_bytes;
        if len > ARCHIVE_MAX_SEGMENT_BYTES {
            return Err(ArchiveError::SegmentTooLarge {
                path: segment.path.clone(),
                len_bytes: len,
                limit_bytes: ARCHIVE_MAX_SEGMENT_BYTES,
            });
        }
        if len < SegmentHeader::LEN as u64 || segment.end_offset <= segment.first_offset {
            let problem = format!("not a whole segment ({len} bytes, offsets {segment:?})");
            return Err(ArchiveError::io("archive", &segment.path)(io::Error::new(
                io::ErrorKind::InvalidInput,
                problem,
            )));
        }
        let path = self.dir.join(archive_file_name(segment.first_offset));
        if let Some(existing) = self.existing(&path, segment)? {
            // Same offsets and length: compare the bytes by their checksum.
            let same_shape =
                existing.end_offset == segment.end_offset && existing.segment_len == len;
            let segment_crc =
                if same_shape { Some(checksum_segment(segment, file)?) } else { None };
            if segment_crc == Some(existing.segment_crc) {
                return Ok(ArchivedSegment { path, header: existing, already_archived: true });
            }
            let problem = format!(
                "archived: offsets {}..{}, {} bytes, CRC-32C {:#010x}; segment: offsets {}..{}, \
                 {len} bytes{}",
                existing.first_offset,
                existing.end_offset,
                existing.segment_len,
                existing.segment_crc,
                segment.first_offset,
                segment.end_offset,
                segment_crc.map(|crc| format!(", CRC-32C {crc:#010x}")).unwrap_or_default(),
            );
            return Err(ArchiveError::Conflict {
                archive: path,
                segment: segment.path.clone(),
                problem,
            });
        }
        let record_count = self.count_records(segment)?;
        self.storage.create_dir_all(&self.dir).map_err(ArchiveError::io("create", &self.dir))?;
        let tmp = tmp_path(&path);
        remove_if_present(&*self.storage, &tmp)?;
        let tmp_file = self.storage.create_new(&tmp).map_err(ArchiveError::io("create", &tmp))?;
        let written = write_archive(segment, file, &*tmp_file, &tmp, record_count).and_then(|h| {
            tmp_file.sync_data().map_err(ArchiveError::io("fsync", &tmp))?;
            Ok(h)
        });
        drop(tmp_file);
        let header = match written {
            Ok(header) => header,
            Err(error) => {
                // Best effort: a stray .tmp is harmless and replaced by the next attempt.
                let _ = self.storage.remove_file(&tmp);
                return Err(error);
            }
        };
        self.storage.rename(&tmp, &path).map_err(ArchiveError::io("rename", &tmp))?;
        Ok(ArchivedSegment { path, header, already_archived: false })
    }

    /// The header of an archive already at `path`, or `None` when there is none. An archive that
    /// cannot be read is a conflict: it is never overwritten.
    fn existing(
        &self,
        path: &Path,
        segment: &SegmentInfo,
    ) -> Result<Option<ArchiveHeader>, ArchiveError> {
        match read_archive_header(&*self.storage, path) {
            Ok(header) => Ok(Some(header)),
            Err(ArchiveError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Ok(None)
            }
            Err(error) => Err(ArchiveError::Conflict {
                archive: path.to_path_buf(),
                segment: segment.path.clone(),
                problem: error.to_string(),
            }),
        }
    }

    /// Valid records of the segment, counted by the log's own scan; damage is logged.
    fn count_records(&self, segment: &SegmentInfo) -> Result<u64, ArchiveError> {
        let read_error = ArchiveError::io;
        let file =
            self.storage.open(&segment.path, false).map_err(read_error("open", &segment.path))?;
        let mut reader = SegmentReader::new(
            file,
            segment.first_offset,
            segment.len_bytes,
            Some(segment.end_offset),
        );
        let mut records = 0;
        while let Some(item) = reader.next().map_err(read_error("read", &segment.path))? {
            match item {
                SegmentItem::Record { .. } => records += 1,
                SegmentItem::Damaged { position, len_bytes, .. } => tracing::warn!(
                    segment = %segment.path.display(),
                    position,
                    len_bytes,
                    "damaged bytes in a segment being archived: archived as they are"
                ),
            }
        }
        Ok(records)
    }
}

impl SegmentArchiver for Archiver {
    fn archive(&self, segment: &SegmentInfo, file: &dyn StorageFile) -> io::Result<()> {
        let archived = self.archive_segment(segment, file)?;
        tracing::info!(
            segment = %segment.path.display(),
            archive = %archived.path.display(),
            records = archived.header.record_count,
            segment_len = archived.header.segment_len,
            frame_len = archived.header.frame_len,
            already_archived = archived.already_archived,
            "segment archived"
        );
        Ok(())
    }
}

/// Streams the segment through zstd into `out` after the header's room, then writes the header.
fn write_archive(
    segment: &SegmentInfo,
    file: &dyn StorageFile,
    out: &dyn StorageFile,
    out_path: &Path,
    record_count: u64,
) -> Result<ArchiveHeader, ArchiveError> {
    let write_error = ArchiveError::io;
    let sink = FileWriter { file: out, pos: ArchiveHeader::LEN as u64 };
    let mut encoder = zstd::stream::write::Encoder::new(sink, ARCHIVE_ZSTD_LEVEL)
        .and_then(|mut encoder| {
            encoder.include_checksum(true)?;
            encoder.include_contentsize(true)?;
            encoder.window_log(ARCHIVE_WINDOW_LOG_MAX)?;
            encoder.set_pledged_src_size(Some(segment.len_bytes))?;
            Ok(encoder)
        })
        .map_err(write_error("compress", out_path))?;
    let segment_crc = for_each_chunk(segment, file, |chunk| {
        encoder.write_all(chunk).map_err(write_error("compress into", out_path))
    })?;
    let sink = encoder.finish().map_err(write_error("compress into", out_path))?;
    let header = ArchiveHeader {
        first_offset: segment.first_offset,
        end_offset: segment.end_offset,
        segment_len: segment.len_bytes,
        frame_len: sink.pos - ArchiveHeader::LEN as u64,
        record_count,
        segment_crc,
    };
    out.write_all_at(&header.encode(), 0).map_err(write_error("write", out_path))?;
    Ok(header)
}

/// The CRC-32C of the segment's bytes.
fn checksum_segment(segment: &SegmentInfo, file: &dyn StorageFile) -> Result<u32, ArchiveError> {
    for_each_chunk(segment, file, |_| Ok(()))
}

/// Reads the segment's `len_bytes` in bounded chunks, hands each to `each`, and returns the
/// CRC-32C of them all. A file shorter than its recorded length is an error.
fn for_each_chunk(
    segment: &SegmentInfo,
    file: &dyn StorageFile,
    mut each: impl FnMut(&[u8]) -> Result<(), ArchiveError>,
) -> Result<u32, ArchiveError> {
    let mut buf = vec![0u8; ARCHIVE_IO_CHUNK_BYTES];
    let mut crc = 0u32;
    let mut pos = 0u64;
    while pos < segment.len_bytes {
        let want = usize::try_from(segment.len_bytes - pos)
            .unwrap_or(usize::MAX)
            .min(ARCHIVE_IO_CHUNK_BYTES);
        let got = read_full_at(file, &mut buf[..want], pos)
            .map_err(ArchiveError::io("read", &segment.path))?;
        if got < want {
            return Err(ArchiveError::io("read", &segment.path)(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "segment ends at {}, before its length {}",
                    pos + got as u64,
                    segment.len_bytes
                ),
            )));
        }
        crc = crc32c::crc32c_append(crc, &buf[..want]);
        each(&buf[..want])?;
        pos += want as u64;
    }
    Ok(crc)
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

fn remove_if_present(storage: &dyn Storage, path: &Path) -> Result<(), ArchiveError> {
    match storage.remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(ArchiveError::io("remove", path)(error)),
    }
}

/// Appends what zstd writes to a storage file, from `pos` on.
struct FileWriter<'a> {
    file: &'a dyn StorageFile,
    pos: u64,
}

impl Write for FileWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write_all_at(buf, self.pos)?;
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
