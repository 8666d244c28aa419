//! Server-to-client frames: `[u32 size][i32 frame type][data]`, where size counts the type and
//! the data. A message frame's data is a 26-byte header and the body:
//!
//! | bytes    | field                                                  |
//! |----------|--------------------------------------------------------|
//! | 0..8     | i64 publish timestamp, nanoseconds since the Unix epoch |
//! | 8..10    | u16 attempts, this delivery included                   |
//! | 10..26   | message ID, 16 ASCII bytes                             |
//! | 26..     | body                                                   |

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::MESSAGE_ID_LEN;

/// Bytes of the size and type fields in front of a frame's data.
pub const FRAME_HEADER_LEN: usize = 8;
/// Bytes of a message frame's data in front of the body.
pub const MESSAGE_HEADER_LEN: usize = 8 + 2 + MESSAGE_ID_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameType {
    Response,
    Error,
    Message,
}

impl FrameType {
    pub fn code(self) -> i32 {
        match self {
            Self::Response => 0,
            Self::Error => 1,
            Self::Message => 2,
        }
    }

    pub fn from_code(code: i32) -> Option<Self> {
        match code {
            0 => Some(Self::Response),
            1 => Some(Self::Error),
            2 => Some(Self::Message),
            _ => None,
        }
    }
}

/// A message as delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub timestamp_ns: i64,
    pub attempts: u16,
    pub id: [u8; MESSAGE_ID_LEN],
    pub body: Bytes,
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Response(Bytes),
    Error(Bytes),
    Message(Message),
}

/// Why bytes from a server are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame size {size} is below the minimum of 4")]
    TooSmall { size: u32 },
    #[error("frame size {size} is above the limit of {max}")]
    TooLarge { size: u32, max: u32 },
    #[error("unknown frame type {0}")]
    UnknownType(i32),
    #[error("message frame of {len} bytes is shorter than the 26-byte message header")]
    ShortMessage { len: usize },
}

fn frame_size(data_len: usize) -> u32 {
    u32::try_from(data_len + 4).unwrap_or(u32::MAX)
}

/// Appends a response or error frame.
pub fn put_frame(dst: &mut BytesMut, frame_type: FrameType, data: &[u8]) {
    dst.reserve(FRAME_HEADER_LEN + data.len());
    dst.put_u32(frame_size(data.len()));
    dst.put_i32(frame_type.code());
    dst.put_slice(data);
}

/// Appends a message frame.
pub fn put_message(
    dst: &mut BytesMut,
    timestamp_ns: i64,
    attempts: u16,
    id: &[u8; MESSAGE_ID_LEN],
    body: &[u8],
) {
    dst.reserve(FRAME_HEADER_LEN + MESSAGE_HEADER_LEN + body.len());
    dst.put_u32(frame_size(MESSAGE_HEADER_LEN + body.len()));
    dst.put_i32(FrameType::Message.code());
    dst.put_i64(timestamp_ns);
    dst.put_u16(attempts);
    dst.put_slice(id);
    dst.put_slice(body);
}

/// Takes one whole frame off the front of `src`, or returns `Ok(None)` when more bytes are
/// needed. A frame whose size is above `max_frame_bytes` is an error before any of it is
/// buffered, so a hostile peer cannot make the reader allocate without bound.
pub fn decode_frame(src: &mut BytesMut, max_frame_bytes: u32) -> Result<Option<Frame>, FrameError> {
    let Some(size_bytes) = src.get(..4) else { return Ok(None) };
    let size = u32::from_be_bytes([size_bytes[0], size_bytes[1], size_bytes[2], size_bytes[3]]);
    if size < 4 {
        return Err(FrameError::TooSmall { size });
    }
    if size > max_frame_bytes {
        return Err(FrameError::TooLarge { size, max: max_frame_bytes });
    }
    let total = 4 + size as usize;
    if src.len() < total {
        src.reserve(total - src.len());
        return Ok(None);
    }
    let mut frame = src.split_to(total).freeze();
    frame.advance(4);
    let code = frame.get_i32();
    match FrameType::from_code(code) {
        Some(FrameType::Response) => Ok(Some(Frame::Response(frame))),
        Some(FrameType::Error) => Ok(Some(Frame::Error(frame))),
        Some(FrameType::Message) => {
            if frame.len() < MESSAGE_HEADER_LEN {
                return Err(FrameError::ShortMessage { len: frame.len() });
            }
            let timestamp_ns = frame.get_i64();
            let attempts = frame.get_u16();
            let mut id = [0u8; MESSAGE_ID_LEN];
            frame.copy_to_slice(&mut id);
            Ok(Some(Frame::Message(Message { timestamp_ns, attempts, id, body: frame })))
        }
        None => Err(FrameError::UnknownType(code)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_response_frame_is_size_type_data_big_endian() {
        let mut buf = BytesMut::new();
        put_frame(&mut buf, FrameType::Response, b"OK");
        assert_eq!(&buf[..], b"\x00\x00\x00\x06\x00\x00\x00\x00OK");
        put_frame(&mut buf, FrameType::Error, b"E_INVALID x");
        assert_eq!(decode_frame(&mut buf, 1024).unwrap(), Some(Frame::Response("OK".into())));
        assert_eq!(decode_frame(&mut buf, 1024).unwrap(), Some(Frame::Error("E_INVALID x".into())));
        assert!(buf.is_empty());
    }

    #[test]
    fn a_message_frame_carries_the_26_byte_header() {
        let mut buf = BytesMut::new();
        put_message(&mut buf, 0x0102_0304_0506_0708, 3, b"000000000000002a", b"hello");
        assert_eq!(buf.len(), 8 + 26 + 5);
        assert_eq!(&buf[..8], b"\x00\x00\x00\x23\x00\x00\x00\x02");
        assert_eq!(&buf[8..16], b"\x01\x02\x03\x04\x05\x06\x07\x08");
        assert_eq!(&buf[16..18], b"\x00\x03");
        let frame = decode_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(
            frame,
            Frame::Message(Message {
                timestamp_ns: 0x0102_0304_0506_0708,
                attempts: 3,
                id: *b"000000000000002a",
                body: Bytes::from_static(b"hello"),
            })
        );
    }

    #[test]
    fn partial_frames_wait_and_hostile_sizes_fail_before_buffering() {
        let mut whole = BytesMut::new();
        put_frame(&mut whole, FrameType::Response, b"_heartbeat_");
        for cut in 0..whole.len() {
            let mut part = BytesMut::from(&whole[..cut]);
            assert_eq!(decode_frame(&mut part, 1024).unwrap(), None, "cut at {cut}");
        }
        let mut huge = BytesMut::from(&b"\xff\xff\xff\xff\x00\x00\x00\x00"[..]);
        assert_eq!(
            decode_frame(&mut huge, 1024),
            Err(FrameError::TooLarge { size: u32::MAX, max: 1024 })
        );
        let mut tiny = BytesMut::from(&b"\x00\x00\x00\x03abc"[..]);
        assert_eq!(decode_frame(&mut tiny, 1024), Err(FrameError::TooSmall { size: 3 }));
        let mut short = BytesMut::from(&b"\x00\x00\x00\x06\x00\x00\x00\x02ab"[..]);
        assert_eq!(decode_frame(&mut short, 1024), Err(FrameError::ShortMessage { len: 2 }));
        let mut unknown = BytesMut::from(&b"\x00\x00\x00\x04\x00\x00\x00\x07"[..]);
        assert_eq!(decode_frame(&mut unknown, 1024), Err(FrameError::UnknownType(7)));
    }
}
