//! The body of MPUB (after its size) and of nsqd's binary `/mpub`: `[i32 count]` then `count`
//! times `[i32 size][bytes]`, checked with NSQ's limits and error texts.
//!
//! NSQ reads the elements straight from the socket and never compares them with the body size
//! it was sent; here the body is read whole first (it is at most `--max-body-size`) and elements
//! that run past its end, or bytes left after the last one, are refused (`E_BAD_BODY`).

use std::ops::Range;

use crate::error::{ErrorCode, ProtocolError};

fn read_i32(body: &[u8], at: usize) -> Option<i32> {
    let bytes = body.get(at..at.checked_add(4)?)?;
    Some(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// Splits an MPUB body into its messages. `max_body_bytes` bounds the count as NSQ does:
/// `(max_body_bytes - 4) / 5`, each message taking at least five bytes.
pub fn decode_mpub(
    body: &[u8],
    max_message_bytes: u64,
    max_body_bytes: u64,
) -> Result<Vec<&[u8]>, ProtocolError> {
    let ranges = decode_mpub_ranges(body, max_message_bytes, max_body_bytes)?;
    Ok(ranges.into_iter().map(|range| &body[range]).collect())
}

/// [`decode_mpub`], giving where each message is in `body`.
pub fn decode_mpub_ranges(
    body: &[u8],
    max_message_bytes: u64,
    max_body_bytes: u64,
) -> Result<Vec<Range<usize>>, ProtocolError> {
    let bad_body = |text: String| ProtocolError::new(ErrorCode::BadBody, text);
    let bad_message = |text: String| ProtocolError::new(ErrorCode::BadMessage, text);
    let count = read_i32(body, 0)
        .ok_or_else(|| bad_body("MPUB failed to read message count".to_owned()))?;
    let max_count = max_body_bytes.saturating_sub(4) / 5;
    let count_ok = u64::try_from(count).is_ok_and(|n| n > 0 && n <= max_count);
    if !count_ok {
        return Err(bad_body(format!("MPUB invalid message count {count}")));
    }
    let count = usize::try_from(count).unwrap_or(0);
    let mut messages = Vec::with_capacity(count.min(body.len() / 5));
    let mut at = 4;
    for i in 0..count {
        let size = read_i32(body, at)
            .ok_or_else(|| bad_message(format!("MPUB failed to read message({i}) body size")))?;
        if size <= 0 {
            return Err(bad_message(format!("MPUB invalid message({i}) body size {size}")));
        }
        if u64::try_from(size).unwrap_or(0) > max_message_bytes {
            return Err(bad_message(format!("MPUB message too big {size} > {max_message_bytes}")));
        }
        let start = at + 4;
        let end = start + usize::try_from(size).unwrap_or(0);
        if end > body.len() {
            return Err(bad_message("MPUB failed to read message body".to_owned()));
        }
        messages.push(start..end);
        at = end;
    }
    if at != body.len() {
        return Err(bad_body(format!(
            "MPUB body has {} bytes after its last message",
            body.len() - at
        )));
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn body(count: i32, elements: &[&[u8]]) -> Vec<u8> {
        let mut out = count.to_be_bytes().to_vec();
        for e in elements {
            out.extend_from_slice(&i32::try_from(e.len()).unwrap().to_be_bytes());
            out.extend_from_slice(e);
        }
        out
    }

    fn error(body: &[u8]) -> String {
        decode_mpub(body, 10, 100).unwrap_err().to_string()
    }

    #[test]
    fn splits_well_formed_bodies() {
        let b = body(3, &[b"a", b"bc", b"0123456789"]);
        assert_eq!(decode_mpub(&b, 10, 100).unwrap(), [&b"a"[..], b"bc", b"0123456789"]);
    }

    #[test]
    fn refuses_what_nsq_refuses_with_its_texts() {
        assert_eq!(error(b"\x00\x00"), "E_BAD_BODY MPUB failed to read message count");
        assert_eq!(error(&body(0, &[])), "E_BAD_BODY MPUB invalid message count 0");
        assert_eq!(error(&body(-1, &[])), "E_BAD_BODY MPUB invalid message count -1");
        // (100 - 4) / 5 = 19 messages at most.
        assert_eq!(error(&body(20, &[])), "E_BAD_BODY MPUB invalid message count 20");
        assert_eq!(
            error(&body(2, &[b"a"])),
            "E_BAD_MESSAGE MPUB failed to read message(1) body size"
        );
        assert_eq!(error(&body(1, &[b""])), "E_BAD_MESSAGE MPUB invalid message(0) body size 0");
        assert_eq!(
            error(&body(1, &[b"01234567890"])),
            "E_BAD_MESSAGE MPUB message too big 11 > 10"
        );
        let mut short = body(1, &[b"abc"]);
        short.pop();
        assert_eq!(error(&short), "E_BAD_MESSAGE MPUB failed to read message body");
        let mut long = body(1, &[b"abc"]);
        long.push(b'!');
        assert_eq!(error(&long), "E_BAD_BODY MPUB body has 1 bytes after its last message");
    }
}
