//! The record frame (FORMAT.md §3).

use super::{FORMAT_MAX_BODY_BYTES, checksum, read_u32, read_u64};

const CRC_AT: usize = 0;
const BODY_LEN_AT: usize = CRC_AT + 4;
const OFFSET_AT: usize = BODY_LEN_AT + 4;
const TIMESTAMP_AT: usize = OFFSET_AT + 8;
const DELIVER_AT_AT: usize = TIMESTAMP_AT + 8;
const BODY_AT: usize = DELIVER_AT_AT + 8;

/// Length of the frame header that precedes every body.
pub const FRAME_HEADER_LEN: usize = 32;
const _: () = assert!(BODY_AT == FRAME_HEADER_LEN);

/// A record as it lies in a buffer, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub offset: u64,
    pub timestamp_ns: i64,
    /// `0` when the record is not deferred.
    pub deliver_at_ns: i64,
    pub body: &'a [u8],
}

impl RecordRef<'_> {
    /// Bytes the record takes on disk.
    pub fn encoded_len(&self) -> usize {
        FRAME_HEADER_LEN + self.body.len()
    }
}

/// Why the bytes at a position are not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("body length {0} exceeds the format limit")]
    BodyTooLong(u32),
    #[error("checksum mismatch")]
    Checksum,
}

/// The outcome of decoding the bytes at a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole record whose checksum matches.
    Record(RecordRef<'a>),
    /// The buffer ends before the record does; `needed` is the whole record's length.
    Incomplete {
        needed: usize,
    },
    Invalid(Invalid),
}

/// Appends the encoding of `record` to `out`.
///
/// The caller has checked `record.body.len()` against its configured limit, which is below
/// [`FORMAT_MAX_BODY_BYTES`].
pub fn encode_record(record: &RecordRef<'_>, out: &mut Vec<u8>) {
    let body_len = u32::try_from(record.body.len()).unwrap_or(u32::MAX);
    debug_assert!(body_len <= FORMAT_MAX_BODY_BYTES);
    let start = out.len();
    out.reserve(record.encoded_len());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&body_len.to_le_bytes());
    out.extend_from_slice(&record.offset.to_le_bytes());
    out.extend_from_slice(&record.timestamp_ns.to_le_bytes());
    out.extend_from_slice(&record.deliver_at_ns.to_le_bytes());
    out.extend_from_slice(record.body);
    let crc = checksum(&out[start + BODY_LEN_AT..]);
    out[start..start + BODY_LEN_AT].copy_from_slice(&crc.to_le_bytes());
}

/// Reads the body length and offset from a frame header without checking anything: the cheap
/// first test of a resynchronising scan, before the checksum is computed.
pub(crate) fn peek_len_and_offset(bytes: &[u8]) -> Option<(u32, u64)> {
    let header = bytes.get(..FRAME_HEADER_LEN)?;
    Some((read_u32(header, BODY_LEN_AT), read_u64(header, OFFSET_AT)))
}

/// Decodes the record at the start of `bytes`. Offsets are checked by the caller (FORMAT.md §3,
/// rule 4), which knows the segment.
pub fn decode_record(bytes: &[u8]) -> Decoded<'_> {
    let Some((body_len, offset)) = peek_len_and_offset(bytes) else {
        return Decoded::Incomplete { needed: FRAME_HEADER_LEN };
    };
    if body_len > FORMAT_MAX_BODY_BYTES {
        return Decoded::Invalid(Invalid::BodyTooLong(body_len));
    }
    let needed = FRAME_HEADER_LEN + body_len as usize;
    let Some(record) = bytes.get(..needed) else {
        return Decoded::Incomplete { needed };
    };
    if read_u32(record, CRC_AT) != checksum(&record[BODY_LEN_AT..]) {
        return Decoded::Invalid(Invalid::Checksum);
    }
    #[allow(clippy::cast_possible_wrap)] // the fields are signed by specification
    Decoded::Record(RecordRef {
        offset,
        timestamp_ns: read_u64(record, TIMESTAMP_AT) as i64,
        deliver_at_ns: read_u64(record, DELIVER_AT_AT) as i64,
        body: &record[BODY_AT..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RecordRef<'static> {
        RecordRef { offset: 5, timestamp_ns: -2, deliver_at_ns: 1_700_000_000, body: b"hello" }
    }

    fn encoded(record: &RecordRef<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        encode_record(record, &mut out);
        out
    }

    #[test]
    fn record_round_trips() {
        let bytes = encoded(&sample());
        assert_eq!(bytes.len(), sample().encoded_len());
        assert_eq!(decode_record(&bytes), Decoded::Record(sample()));
    }

    #[test]
    fn record_bytes_match_the_specification() {
        let bytes = encoded(&sample());
        assert_eq!(&bytes[0..4], &crc32c::crc32c(&bytes[4..]).to_le_bytes());
        assert_eq!(&bytes[4..8], &5u32.to_le_bytes(), "body_len");
        assert_eq!(&bytes[8..16], &5u64.to_le_bytes(), "offset");
        assert_eq!(&bytes[16..24], &(-2i64).to_le_bytes(), "timestamp_ns");
        assert_eq!(&bytes[24..32], &1_700_000_000i64.to_le_bytes(), "deliver_at_ns");
        assert_eq!(&bytes[32..], b"hello");
    }

    #[test]
    fn empty_body_is_a_valid_record() {
        let record = RecordRef { body: b"", ..sample() };
        assert_eq!(decode_record(&encoded(&record)), Decoded::Record(record));
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let good = encoded(&sample());
        for byte in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    !matches!(decode_record(&bad), Decoded::Record(_)),
                    "byte {byte} bit {bit} went undetected"
                );
            }
        }
    }

    #[test]
    fn every_truncation_is_incomplete() {
        let good = encoded(&sample());
        for len in 0..good.len() {
            assert!(
                matches!(decode_record(&good[..len]), Decoded::Incomplete { .. }),
                "cut at {len}"
            );
        }
    }

    #[test]
    fn oversized_length_is_invalid_before_any_body_is_needed() {
        let mut bytes = encoded(&sample());
        bytes[4..8].copy_from_slice(&(FORMAT_MAX_BODY_BYTES + 1).to_le_bytes());
        assert_eq!(
            decode_record(&bytes[..FRAME_HEADER_LEN]),
            Decoded::Invalid(Invalid::BodyTooLong(FORMAT_MAX_BODY_BYTES + 1))
        );
    }

    #[test]
    fn zeroed_bytes_are_not_a_record() {
        assert_eq!(decode_record(&[0; 64]), Decoded::Invalid(Invalid::Checksum));
    }
}
