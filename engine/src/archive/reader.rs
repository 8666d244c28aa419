//! Reading archives (FORMAT.md §8, "Reading"): the header and the file's length are checked
//! before anything is decoded, decoding is bounded by the recorded length, and the decoded
//! segment is scanned by the log's own [`SegmentReader`].

use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::{
    ARCHIVE_IO_CHUNK_BYTES, ARCHIVE_WINDOW_LOG_MAX, ArchiveError, ArchiveHeader,
    parse_archive_file_name,
};
use crate::log::{SegmentItem, SegmentReader, segment_header_problem};
use crate::storage::{BytesFile, Storage, StorageFile, read_full_at};

/// Reads and checks the header of the archive at `path`: its rules, the first offset against
/// the file name (when the name is an archive's), and the file's length.
pub fn read_archive_header(
    storage: &dyn Storage,
    path: &Path,
) -> Result<ArchiveHeader, ArchiveError> {
    open_checked(storage, path).map(|(_, header)| header)
}

fn open_checked(
    storage: &dyn Storage,
    path: &Path,
) -> Result<(Arc<dyn StorageFile>, ArchiveHeader), ArchiveError> {
    let file = storage.open(path, false).map_err(ArchiveError::io("open", path))?;
    let mut bytes = [0u8; ArchiveHeader::LEN];
    let got = read_full_at(&*file, &mut bytes, 0).map_err(ArchiveError::io("read", path))?;
    let header = ArchiveHeader::decode(&bytes[..got])
        .map_err(|problem| ArchiveError::corrupt(path, 0, problem))?;
    let named = path.file_name().and_then(|name| name.to_str()).and_then(parse_archive_file_name);
    if let Some(named) = named
        && named != header.first_offset
    {
        let problem = format!("header says first offset {}, the name {named}", header.first_offset);
        return Err(ArchiveError::corrupt(path, 0, problem));
    }
    let len = file.len().map_err(ArchiveError::io("stat", path))?;
    if len != header.file_len() {
        let problem = format!("file is {len} bytes, its header says {}", header.file_len());
        return Err(ArchiveError::corrupt(path, len.min(header.file_len()), problem));
    }
    Ok((file, header))
}

/// Decodes the archive at `path`: its header and the segment file's bytes, checked against the
/// header's length and checksum. Memory is bounded by the header's `segment_len`.
pub(crate) fn decompress(
    storage: &dyn Storage,
    path: &Path,
) -> Result<(ArchiveHeader, Bytes), ArchiveError> {
    let (file, header) = open_checked(storage, path)?;
    let frame_at = ArchiveHeader::LEN as u64;
    let corrupt = |problem: String| ArchiveError::corrupt(path, frame_at, problem);
    let source = FrameReader { file, pos: frame_at, end: header.file_len(), failed: None };
    let mut decoder = zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(
        ARCHIVE_IO_CHUNK_BYTES,
        source,
    ))
    .map_err(ArchiveError::io("decompress", path))?
    .single_frame();
    decoder.window_log_max(ARCHIVE_WINDOW_LOG_MAX).map_err(ArchiveError::io("decompress", path))?;
    // Bounded by the header, whose length is bounded by ARCHIVE_MAX_SEGMENT_BYTES.
    let segment_len = usize::try_from(header.segment_len)
        .map_err(|_| corrupt(format!("{} bytes do not fit in memory", header.segment_len)))?;
    let mut out = Vec::with_capacity(segment_len);
    let mut decoded = (&mut decoder).take(header.segment_len + 1).read_to_end(&mut out);
    let too_long = out.len() > segment_len;
    if decoded.is_ok() && !too_long {
        // The last bytes can come out before the frame's checksum was read: read and check it.
        decoded = decoder.finish_frame().map(|()| out.len());
    }
    let source = decoder.into_inner();
    if let Some(kind) = source.get_ref().failed {
        let error = io::Error::new(kind, "reading the zstd frame failed");
        return Err(ArchiveError::io("read", path)(error));
    }
    if too_long {
        return Err(corrupt(format!(
            "the zstd frame decodes to more than the {segment_len} bytes its header records"
        )));
    }
    if let Err(error) = decoded {
        return Err(corrupt(format!("the zstd frame does not decode: {error}")));
    }
    if out.len() < segment_len {
        return Err(corrupt(format!(
            "the zstd frame decodes to {} bytes, its header records {segment_len}",
            out.len()
        )));
    }
    let trailing = source.buffer().len() as u64 + (source.get_ref().end - source.get_ref().pos);
    if trailing > 0 {
        return Err(corrupt(format!("{trailing} bytes follow the zstd frame")));
    }
    let segment_crc = crc32c::crc32c(&out);
    if segment_crc != header.segment_crc {
        return Err(corrupt(format!(
            "decoded segment checksum {segment_crc:#010x}, the header records {:#010x}",
            header.segment_crc
        )));
    }
    Ok((header, Bytes::from(out)))
}

/// The records of one archive, in order, with damage inside reported as the log reports it.
#[derive(Debug)]
pub struct ArchiveReader {
    path: PathBuf,
    header: ArchiveHeader,
    segment_header_problem: Option<String>,
    reader: SegmentReader,
}

impl ArchiveReader {
    /// Opens and decodes the archive at `path` (see [`ArchiveError::Corrupt`] for what is
    /// refused). The decoded segment is held in memory until the reader drops.
    pub fn open(storage: &dyn Storage, path: impl Into<PathBuf>) -> Result<Self, ArchiveError> {
        let path = path.into();
        let (header, bytes) = decompress(storage, &path)?;
        let segment = BytesFile(bytes);
        let segment_header_problem = segment_header_problem(&segment, header.first_offset);
        let reader = SegmentReader::new(
            Arc::new(segment),
            header.first_offset,
            header.segment_len,
            Some(header.end_offset),
        );
        Ok(Self { path, header, segment_header_problem, reader })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> &ArchiveHeader {
        &self.header
    }

    /// What is wrong with the archived segment's own header, if anything (FORMAT.md §5 rule 3:
    /// its records are read all the same).
    pub fn segment_header_problem(&self) -> Option<&str> {
        self.segment_header_problem.as_deref()
    }

    /// The next record or damaged range of the archived segment, `None` at its end. Positions
    /// are positions in the decoded segment.
    #[allow(clippy::should_implement_trait)] // fallible
    pub fn next(&mut self) -> Result<Option<SegmentItem>, ArchiveError> {
        self.reader.next().map_err(ArchiveError::io("scan", &self.path))
    }
}

/// Reads `[pos, end)` of the archive file: the zstd frame and nothing after it. Remembers an I/O
/// failure, so that it is not mistaken for damage.
struct FrameReader {
    file: Arc<dyn StorageFile>,
    pos: u64,
    end: u64,
    failed: Option<io::ErrorKind>,
}

impl Read for FrameReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = usize::try_from(self.end - self.pos).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        if want == 0 {
            return Ok(0);
        }
        match read_full_at(&*self.file, &mut buf[..want], self.pos) {
            Ok(got) => {
                self.pos += got as u64;
                Ok(got)
            }
            Err(error) => {
                self.failed = Some(error.kind());
                Err(error)
            }
        }
    }
}
