//! The 64-byte archive header (FORMAT.md §8).

use super::ARCHIVE_MAX_SEGMENT_BYTES;
use crate::format::{SegmentHeader, checksum, read_u16, read_u32, read_u64};

/// The archive format version this code writes, and the newest it reads.
pub const ARCHIVE_FORMAT_VERSION: u16 = 1;

const MAGIC_AT: usize = 0;
const MAGIC_LEN: usize = 8;
const VERSION_AT: usize = MAGIC_AT + MAGIC_LEN;
const HEADER_LEN_AT: usize = VERSION_AT + 2;
const FLAGS_AT: usize = HEADER_LEN_AT + 2;
const FIRST_OFFSET_AT: usize = FLAGS_AT + 4;
const END_OFFSET_AT: usize = FIRST_OFFSET_AT + 8;
const SEGMENT_LEN_AT: usize = END_OFFSET_AT + 8;
const FRAME_LEN_AT: usize = SEGMENT_LEN_AT + 8;
const RECORD_COUNT_AT: usize = FRAME_LEN_AT + 8;
const SEGMENT_CRC_AT: usize = RECORD_COUNT_AT + 8;
const HEADER_CRC_AT: usize = SEGMENT_CRC_AT + 4;
const END: usize = HEADER_CRC_AT + 4;

/// The archive magic, ASCII `NSQRSARC`.
const MAGIC: [u8; MAGIC_LEN] = *b"NSQRSARC";

/// Slack above the decoded length that a frame may take (zstd's worst case is far below it).
const FRAME_SLACK_BYTES: u64 = 131_072;

const _: () = assert!(END == ArchiveHeader::LEN);

/// A decoded archive header: what the archive holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveHeader {
    /// The archived segment's first offset.
    pub first_offset: u64,
    /// The first offset of the segment that followed it: every record archived is below it.
    pub end_offset: u64,
    /// Length of the segment file, and of the frame's decoded content, in bytes.
    pub segment_len: u64,
    /// Length of the zstd frame after the header, in bytes.
    pub frame_len: u64,
    /// Valid records the writer found in the segment (informative).
    pub record_count: u64,
    /// CRC-32C of the segment's bytes.
    pub segment_crc: u32,
}

impl ArchiveHeader {
    /// Length of the encoded header in bytes.
    pub const LEN: usize = 64;

    /// The largest frame an archive of `segment_len` bytes may have.
    pub fn frame_len_max(segment_len: u64) -> u64 {
        segment_len.saturating_add(segment_len / 256).saturating_add(FRAME_SLACK_BYTES)
    }

    /// Length of the whole archive file.
    pub fn file_len(&self) -> u64 {
        Self::LEN as u64 + self.frame_len
    }

    /// Encodes the header of archive format version [`ARCHIVE_FORMAT_VERSION`].
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[MAGIC_AT..VERSION_AT].copy_from_slice(&MAGIC);
        out[VERSION_AT..HEADER_LEN_AT].copy_from_slice(&ARCHIVE_FORMAT_VERSION.to_le_bytes());
        #[allow(clippy::cast_possible_truncation)] // LEN is 64
        out[HEADER_LEN_AT..FLAGS_AT].copy_from_slice(&(Self::LEN as u16).to_le_bytes());
        out[FIRST_OFFSET_AT..END_OFFSET_AT].copy_from_slice(&self.first_offset.to_le_bytes());
        out[END_OFFSET_AT..SEGMENT_LEN_AT].copy_from_slice(&self.end_offset.to_le_bytes());
        out[SEGMENT_LEN_AT..FRAME_LEN_AT].copy_from_slice(&self.segment_len.to_le_bytes());
        out[FRAME_LEN_AT..RECORD_COUNT_AT].copy_from_slice(&self.frame_len.to_le_bytes());
        out[RECORD_COUNT_AT..SEGMENT_CRC_AT].copy_from_slice(&self.record_count.to_le_bytes());
        out[SEGMENT_CRC_AT..HEADER_CRC_AT].copy_from_slice(&self.segment_crc.to_le_bytes());
        let crc = checksum(&out[..HEADER_CRC_AT]);
        out[HEADER_CRC_AT..END].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes and checks a header: every rule of FORMAT.md §8 that the header alone can break.
    /// The error says what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let Some(bytes) = bytes.get(..Self::LEN) else {
            return Err(format!("shorter than the {}-byte archive header", Self::LEN));
        };
        if bytes[MAGIC_AT..VERSION_AT] != MAGIC {
            return Err("bad magic (not an archive file)".into());
        }
        if read_u32(bytes, HEADER_CRC_AT) != checksum(&bytes[..HEADER_CRC_AT]) {
            return Err("header checksum mismatch".into());
        }
        let version = read_u16(bytes, VERSION_AT);
        if version != ARCHIVE_FORMAT_VERSION {
            return Err(format!("unsupported archive version {version}"));
        }
        let header_len = read_u16(bytes, HEADER_LEN_AT);
        if usize::from(header_len) != Self::LEN {
            return Err(format!("header length {header_len}, expected {}", Self::LEN));
        }
        let flags = read_u32(bytes, FLAGS_AT);
        if flags != 0 {
            return Err(format!("unknown flags {flags:#x}"));
        }
        let header = Self {
            first_offset: read_u64(bytes, FIRST_OFFSET_AT),
            end_offset: read_u64(bytes, END_OFFSET_AT),
            segment_len: read_u64(bytes, SEGMENT_LEN_AT),
            frame_len: read_u64(bytes, FRAME_LEN_AT),
            record_count: read_u64(bytes, RECORD_COUNT_AT),
            segment_crc: read_u32(bytes, SEGMENT_CRC_AT),
        };
        header.check_limits()?;
        Ok(header)
    }

    fn check_limits(&self) -> Result<(), String> {
        if self.end_offset <= self.first_offset {
            return Err(format!(
                "end offset {} is not above first offset {}",
                self.end_offset, self.first_offset
            ));
        }
        let segment_min = SegmentHeader::LEN as u64;
        if !(segment_min..=ARCHIVE_MAX_SEGMENT_BYTES).contains(&self.segment_len) {
            return Err(format!(
                "segment length {} is outside {segment_min}..={ARCHIVE_MAX_SEGMENT_BYTES}",
                self.segment_len
            ));
        }
        let frame_max = Self::frame_len_max(self.segment_len);
        if self.frame_len > frame_max {
            return Err(format!(
                "frame length {} is above {frame_max}, the most a {}-byte segment takes",
                self.frame_len, self.segment_len
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ArchiveHeader {
        ArchiveHeader {
            first_offset: 1000,
            end_offset: 1010,
            segment_len: 4096,
            frame_len: 512,
            record_count: 10,
            segment_crc: 0xDEAD_BEEF,
        }
    }

    fn reseal(mut bytes: [u8; 64]) -> [u8; 64] {
        let crc = crc32c::crc32c(&bytes[..60]);
        bytes[60..].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    #[test]
    fn header_round_trips() {
        assert_eq!(ArchiveHeader::decode(&sample().encode()), Ok(sample()));
    }

    #[test]
    fn header_bytes_match_the_specification() {
        let bytes = sample().encode();
        assert_eq!(&bytes[0..8], b"NSQRSARC");
        assert_eq!(&bytes[8..10], &[1, 0], "version 1, little-endian");
        assert_eq!(&bytes[10..12], &[64, 0], "header length 64");
        assert_eq!(&bytes[12..16], &[0; 4], "flags");
        assert_eq!(&bytes[16..24], &1000u64.to_le_bytes());
        assert_eq!(&bytes[24..32], &1010u64.to_le_bytes());
        assert_eq!(&bytes[32..40], &4096u64.to_le_bytes());
        assert_eq!(&bytes[40..48], &512u64.to_le_bytes());
        assert_eq!(&bytes[48..56], &10u64.to_le_bytes());
        assert_eq!(&bytes[56..60], &0xDEAD_BEEFu32.to_le_bytes());
        assert_eq!(&bytes[60..64], &crc32c::crc32c(&bytes[..60]).to_le_bytes());
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let good = sample().encode();
        for byte in 0..ArchiveHeader::LEN {
            for bit in 0..8 {
                let mut bad = good;
                bad[byte] ^= 1 << bit;
                assert!(ArchiveHeader::decode(&bad).is_err(), "byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn limits_are_checked_even_with_a_good_checksum() {
        let cases = [
            ArchiveHeader { end_offset: 1000, ..sample() },
            ArchiveHeader { segment_len: 31, ..sample() },
            ArchiveHeader { segment_len: ARCHIVE_MAX_SEGMENT_BYTES + 1, ..sample() },
            ArchiveHeader { frame_len: ArchiveHeader::frame_len_max(4096) + 1, ..sample() },
        ];
        for header in cases {
            assert!(ArchiveHeader::decode(&header.encode()).is_err(), "{header:?}");
        }
        let mut flagged = sample().encode();
        flagged[12] = 1;
        assert!(ArchiveHeader::decode(&reseal(flagged)).unwrap_err().contains("flags"));
        let mut v2 = sample().encode();
        v2[8] = 2;
        assert!(ArchiveHeader::decode(&reseal(v2)).unwrap_err().contains("version 2"));
        assert!(ArchiveHeader::decode(&sample().encode()[..63]).is_err());
    }
}
