//! The bytes of format version 1, as specified in `engine/FORMAT.md`.
//!
//! Every offset of a field is a named constant chained from the one before it, and the totals are
//! checked at compile time against the sizes the specification gives. Nothing here does I/O.

mod header;
mod record;

pub use header::{HeaderError, SegmentHeader};
pub(crate) use record::peek_len_and_offset;
pub use record::{Decoded, FRAME_HEADER_LEN, Invalid, RecordRef, decode_record, encode_record};

/// The format version this code writes, and the newest it reads.
pub const FORMAT_VERSION: u16 = 1;

/// Largest record body the format allows (64 MiB). A writer's configured limit is lower; a reader
/// treats a larger length as corruption.
pub const FORMAT_MAX_BODY_BYTES: u32 = 64 * 1024 * 1024;

/// CRC-32C (Castagnoli) of `bytes`, the only checksum of the format.
#[inline]
pub fn checksum(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// The file name of the segment whose first record has `first_offset`: 20 decimal digits, so that
/// names sort in offset order.
pub fn segment_file_name(first_offset: u64) -> String {
    format!("{first_offset:020}.seg")
}

/// The first offset named by a segment file name, or `None` when the name is not a segment's.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Reads a little-endian `u16` at `at`; the caller has checked the length.
#[inline]
pub(crate) fn read_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

/// Reads a little-endian `u32` at `at`; the caller has checked the length.
#[inline]
pub(crate) fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(raw)
}

/// Reads a little-endian `u64` at `at`; the caller has checked the length.
#[inline]
pub(crate) fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_is_crc32c_castagnoli_known_answer() {
        // The check value of CRC-32C; CRC-32/IEEE would give 0xCBF43926.
        assert_eq!(checksum(b"123456789"), 0xE306_9283);
        assert_eq!(checksum(b""), 0);
    }

    #[test]
    fn segment_names_round_trip_and_sort_by_offset() {
        assert_eq!(segment_file_name(1000), "00000000000000001000.seg");
        assert_eq!(segment_file_name(u64::MAX), "18446744073709551615.seg");
        for offset in [0, 1, 999, 1000, u64::MAX] {
            assert_eq!(parse_segment_file_name(&segment_file_name(offset)), Some(offset));
        }
        assert!(segment_file_name(999) < segment_file_name(1000));
    }

    #[test]
    fn foreign_names_are_not_segments() {
        for name in [
            "1000.seg",
            "00000000000000001000.seg.bad",
            "0000000000000000100a.seg",
            "00000000000000001000.dat",
            "99999999999999999999.seg", // does not fit in a u64
            "LOCK",
        ] {
            assert_eq!(parse_segment_file_name(name), None, "{name}");
        }
    }
}
