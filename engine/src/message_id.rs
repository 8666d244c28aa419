//! NSQ message IDs. On the wire an ID is 16 bytes; here it is the record's offset as 16
//! lower-case hexadecimal ASCII digits (FORMAT.md §1), so FIN, REQ and TOUCH find the record
//! without a lookup table. Go NSQ also sends 16 hex digits (of a time-based number), so clients
//! see the same shape.

/// Length of a message ID on the wire.
pub const MESSAGE_ID_LEN: usize = 16;

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// The message ID of the record at `offset`.
pub fn message_id(offset: u64) -> [u8; MESSAGE_ID_LEN] {
    let mut id = [0u8; MESSAGE_ID_LEN];
    for (i, digit) in id.iter_mut().enumerate() {
        let shift = 4 * (MESSAGE_ID_LEN - 1 - i);
        *digit = HEX_DIGITS[usize::from(u8::try_from((offset >> shift) & 0xF).unwrap_or(0))];
    }
    id
}

/// The offset a message ID names, or `None` if `id` is not 16 lower-case hex digits (no message
/// of ours has such an ID: the caller answers as for an unknown message).
pub fn parse_message_id(id: &[u8]) -> Option<u64> {
    if id.len() != MESSAGE_ID_LEN {
        return None;
    }
    id.iter().try_fold(0u64, |offset, &b| {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        Some(offset << 4 | u64::from(digit))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_16_lower_case_hex_digits_of_the_offset() {
        assert_eq!(&message_id(0), b"0000000000000000");
        assert_eq!(&message_id(0xabc), b"0000000000000abc");
        assert_eq!(&message_id(u64::MAX), b"ffffffffffffffff");
        assert_eq!(&message_id(0x0123_4567_89ab_cdef), b"0123456789abcdef");
    }

    #[test]
    fn ids_round_trip() {
        for offset in [0, 1, 15, 16, 255, 1 << 32, u64::MAX - 1, u64::MAX] {
            assert_eq!(parse_message_id(&message_id(offset)), Some(offset));
        }
    }

    #[test]
    fn malformed_ids_name_no_message() {
        for id in [
            &b""[..],
            b"000000000000000",   // 15 digits
            b"00000000000000000", // 17 digits
            b"000000000000000G",
            b"000000000000000A", // IDs are lower case
            b"00000000 0000000",
        ] {
            assert_eq!(parse_message_id(id), None, "{:?}", String::from_utf8_lossy(id));
        }
    }
}
