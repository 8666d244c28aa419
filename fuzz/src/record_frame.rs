//! `record_frame`: the record frame decoder (FORMAT.md §3) and its friends, the segment header
//! (§2), the archive header (§8), segment and archive file names (§1) and message IDs, over
//! arbitrary bytes.
//!
//! Input: one mode byte, then the bytes. Mode bit 0 reseals the frame's checksum over what its
//! length field covers, bit 1 the segment header's, bit 2 the archive header's, so the fuzzer
//! reaches the checks behind each checksum. Checked:
//! - every decoder returns for any bytes, and its verdict is the specification's: a record only
//!   when the checksum matches and the length is within the format's limit, `Incomplete` with the
//!   exact length needed, `BodyTooLong` with the field's value;
//! - whatever decodes re-encodes to the same bytes (records, both headers, names, IDs; the
//!   segment header's reserved field, which a reader ignores, is written as zero);
//! - records decoded back to back never read past the buffer.

use engine::archive::{ArchiveHeader, archive_file_name, parse_archive_file_name};
use engine::format::{
    Decoded, FORMAT_MAX_BODY_BYTES, FRAME_HEADER_LEN, Invalid, SegmentHeader, decode_record,
    encode_record, parse_segment_file_name, segment_file_name,
};
use engine::message_id::{MESSAGE_ID_LEN, message_id, parse_message_id};

/// Longest input taken.
pub const MAX_LEN: usize = 4096;

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(raw)
}

/// Writes the checksum of a frame at the start of `bytes` over what its length field covers,
/// when that fits.
fn reseal_frame(bytes: &mut [u8]) {
    if bytes.len() < FRAME_HEADER_LEN {
        return;
    }
    let body_len = le_u32(bytes, 4) as usize;
    if let Some(end) = FRAME_HEADER_LEN.checked_add(body_len).filter(|&end| end <= bytes.len()) {
        let crc = crc32c::crc32c(&bytes[4..end]);
        bytes[..4].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Writes a header checksum of `len` bytes at `len - 4`, over the bytes before it.
fn reseal_header(bytes: &mut [u8], len: usize) {
    if bytes.len() >= len {
        let crc = crc32c::crc32c(&bytes[..len - 4]);
        bytes[len - 4..len].copy_from_slice(&crc.to_le_bytes());
    }
}

pub fn run(data: &[u8]) {
    if data.len() > MAX_LEN {
        return;
    }
    let Some((&mode, rest)) = data.split_first() else {
        check_frames(data);
        return;
    };
    let mut bytes = rest.to_vec();
    if mode & 1 != 0 {
        reseal_frame(&mut bytes);
    }
    if mode & 2 != 0 {
        reseal_header(&mut bytes, SegmentHeader::LEN);
    }
    if mode & 4 != 0 {
        reseal_header(&mut bytes, ArchiveHeader::LEN);
    }
    check_frames(&bytes);
    check_segment_header(&bytes);
    check_archive_header(&bytes);
    check_names_and_ids(&bytes);
}

/// One frame decode, checked against the specification.
fn check_frame(bytes: &[u8]) -> Option<usize> {
    match decode_record(bytes) {
        Decoded::Record(record) => {
            let len = record.encoded_len();
            assert!(len <= bytes.len(), "a record longer than its buffer");
            assert!(record.body.len() <= FORMAT_MAX_BODY_BYTES as usize);
            assert_eq!(le_u32(bytes, 4) as usize, record.body.len(), "body length field");
            assert_eq!(le_u32(bytes, 0), crc32c::crc32c(&bytes[4..len]), "record with a bad CRC");
            let mut encoded = Vec::new();
            encode_record(&record, &mut encoded);
            assert_eq!(encoded, &bytes[..len], "a decoded record re-encodes differently");
            Some(len)
        }
        Decoded::Incomplete { needed } => {
            assert!(needed > bytes.len(), "incomplete, yet {needed} bytes are there");
            if bytes.len() < FRAME_HEADER_LEN {
                assert_eq!(needed, FRAME_HEADER_LEN);
            } else {
                let body_len = le_u32(bytes, 4);
                assert!(body_len <= FORMAT_MAX_BODY_BYTES, "an oversized length is not incomplete");
                assert_eq!(needed, FRAME_HEADER_LEN + body_len as usize);
            }
            None
        }
        Decoded::Invalid(Invalid::BodyTooLong(len)) => {
            assert!(bytes.len() >= FRAME_HEADER_LEN);
            assert_eq!(len, le_u32(bytes, 4));
            assert!(len > FORMAT_MAX_BODY_BYTES);
            None
        }
        Decoded::Invalid(Invalid::Checksum) => {
            let len = FRAME_HEADER_LEN + le_u32(bytes, 4) as usize;
            assert!(len <= bytes.len(), "a checksum failure judged without the whole frame");
            assert_ne!(le_u32(bytes, 0), crc32c::crc32c(&bytes[4..len]), "a good CRC refused");
            None
        }
    }
}

/// Decodes frames back to back from the start, as a scan of a clean segment does.
fn check_frames(bytes: &[u8]) {
    let mut at = 0;
    while at < bytes.len() {
        match check_frame(&bytes[at..]) {
            Some(len) => at += len,
            None => break,
        }
    }
}

fn check_segment_header(bytes: &[u8]) {
    match SegmentHeader::decode(bytes) {
        Ok(header) => {
            // The reserved field (bytes 24..28) is written as zero and not read: the rest must
            // re-encode exactly.
            let encoded = header.encode();
            assert_eq!(&encoded[..24], &bytes[..24], "header re-encodes");
            let mut zeroed = [0u8; SegmentHeader::LEN];
            zeroed.copy_from_slice(&bytes[..SegmentHeader::LEN]);
            zeroed[24..28].fill(0);
            let crc = crc32c::crc32c(&zeroed[..28]);
            zeroed[28..].copy_from_slice(&crc.to_le_bytes());
            assert_eq!(encoded, zeroed, "header re-encodes");
        }
        Err(error) => assert!(!error.to_string().is_empty()),
    }
}

fn check_archive_header(bytes: &[u8]) {
    match ArchiveHeader::decode(bytes) {
        Ok(header) => {
            assert_eq!(&header.encode()[..], &bytes[..ArchiveHeader::LEN], "header re-encodes");
            assert!(header.end_offset > header.first_offset);
            assert!(header.frame_len <= ArchiveHeader::frame_len_max(header.segment_len));
            let _ = header.file_len();
        }
        Err(error) => assert!(!error.is_empty()),
    }
}

fn check_names_and_ids(bytes: &[u8]) {
    if let Ok(name) = std::str::from_utf8(bytes) {
        if let Some(offset) = parse_segment_file_name(name) {
            assert_eq!(segment_file_name(offset), name, "segment name re-encodes");
        }
        if let Some(offset) = parse_archive_file_name(name) {
            assert_eq!(archive_file_name(offset), name, "archive name re-encodes");
        }
    }
    let id = &bytes[..bytes.len().min(MESSAGE_ID_LEN)];
    if let Some(offset) = parse_message_id(id) {
        assert_eq!(&message_id(offset)[..], id, "message ID re-encodes");
    }
}
