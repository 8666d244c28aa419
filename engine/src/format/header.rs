//! The 32-byte segment header (FORMAT.md §2).

use super::{FORMAT_VERSION, checksum, read_u16, read_u32, read_u64};

const MAGIC_AT: usize = 0;
const MAGIC_LEN: usize = 8;
const VERSION_AT: usize = MAGIC_AT + MAGIC_LEN;
const HEADER_LEN_AT: usize = VERSION_AT + 2;
const FLAGS_AT: usize = HEADER_LEN_AT + 2;
const FIRST_OFFSET_AT: usize = FLAGS_AT + 4;
const RESERVED_AT: usize = FIRST_OFFSET_AT + 8;
const HEADER_CRC_AT: usize = RESERVED_AT + 4;
const END: usize = HEADER_CRC_AT + 4;

/// The segment magic, ASCII `NSQRSSEG`.
pub(crate) const MAGIC: [u8; MAGIC_LEN] = *b"NSQRSSEG";

const _: () = assert!(END == SegmentHeader::LEN);

/// Why a segment header was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("file is shorter than the {} byte segment header", SegmentHeader::LEN)]
    Short,
    #[error("bad magic")]
    Magic,
    #[error("header checksum mismatch")]
    Checksum,
    #[error("unsupported format version {0}")]
    Version(u16),
    #[error("header length {0}, expected {expected}", expected = SegmentHeader::LEN)]
    Length(u16),
    #[error("unknown flags {0:#x}")]
    Flags(u32),
}

/// A decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Offset of the first record of the segment.
    pub first_offset: u64,
}

impl SegmentHeader {
    /// Length of the encoded header in bytes.
    pub const LEN: usize = 32;

    /// Encodes the header of format version [`FORMAT_VERSION`].
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[MAGIC_AT..VERSION_AT].copy_from_slice(&MAGIC);
        out[VERSION_AT..HEADER_LEN_AT].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        #[allow(clippy::cast_possible_truncation)] // LEN is 32
        out[HEADER_LEN_AT..FLAGS_AT].copy_from_slice(&(Self::LEN as u16).to_le_bytes());
        out[FIRST_OFFSET_AT..RESERVED_AT].copy_from_slice(&self.first_offset.to_le_bytes());
        let crc = checksum(&out[..HEADER_CRC_AT]);
        out[HEADER_CRC_AT..END].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes and validates a header from the first bytes of a segment file.
    pub fn decode(bytes: &[u8]) -> Result<Self, HeaderError> {
        let bytes = bytes.get(..Self::LEN).ok_or(HeaderError::Short)?;
        if bytes[MAGIC_AT..VERSION_AT] != MAGIC {
            return Err(HeaderError::Magic);
        }
        if read_u32(bytes, HEADER_CRC_AT) != checksum(&bytes[..HEADER_CRC_AT]) {
            return Err(HeaderError::Checksum);
        }
        let version = read_u16(bytes, VERSION_AT);
        if version != FORMAT_VERSION {
            return Err(HeaderError::Version(version));
        }
        let header_len = read_u16(bytes, HEADER_LEN_AT);
        if usize::from(header_len) != Self::LEN {
            return Err(HeaderError::Length(header_len));
        }
        let flags = read_u32(bytes, FLAGS_AT);
        if flags != 0 {
            return Err(HeaderError::Flags(flags));
        }
        Ok(Self { first_offset: read_u64(bytes, FIRST_OFFSET_AT) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let header = SegmentHeader { first_offset: 0x0102_0304_0506_0708 };
        assert_eq!(SegmentHeader::decode(&header.encode()), Ok(header));
    }

    #[test]
    fn header_bytes_match_the_specification() {
        let bytes = SegmentHeader { first_offset: 1000 }.encode();
        assert_eq!(&bytes[0..8], b"NSQRSSEG");
        assert_eq!(&bytes[8..10], &[1, 0], "version 1, little-endian");
        assert_eq!(&bytes[10..12], &[32, 0], "header length 32");
        assert_eq!(&bytes[12..16], &[0; 4], "flags");
        assert_eq!(&bytes[16..24], &1000u64.to_le_bytes());
        assert_eq!(&bytes[24..28], &[0; 4], "reserved");
        assert_eq!(&bytes[28..32], &crc32c::crc32c(&bytes[..28]).to_le_bytes());
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let good = SegmentHeader { first_offset: 42 }.encode();
        for byte in 0..SegmentHeader::LEN {
            for bit in 0..8 {
                let mut bad = good;
                bad[byte] ^= 1 << bit;
                assert!(SegmentHeader::decode(&bad).is_err(), "byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn short_header_is_rejected() {
        let good = SegmentHeader { first_offset: 42 }.encode();
        assert_eq!(SegmentHeader::decode(&good[..31]), Err(HeaderError::Short));
    }

    #[test]
    fn unknown_version_and_flags_are_rejected_even_with_a_good_checksum() {
        let reseal = |mut bytes: [u8; 32]| {
            let crc = crc32c::crc32c(&bytes[..28]);
            bytes[28..].copy_from_slice(&crc.to_le_bytes());
            bytes
        };
        let mut v2 = SegmentHeader { first_offset: 7 }.encode();
        v2[8] = 2;
        assert_eq!(SegmentHeader::decode(&reseal(v2)), Err(HeaderError::Version(2)));
        let mut flagged = SegmentHeader { first_offset: 7 }.encode();
        flagged[12] = 1;
        assert_eq!(SegmentHeader::decode(&reseal(flagged)), Err(HeaderError::Flags(1)));
    }
}
