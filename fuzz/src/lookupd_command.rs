//! `lookupd_command`: nsqlookupd's TCP protocol V1 as it reads it, over arbitrary bytes; and,
//! in reply mode, nsqlookupd's replies as nsqd decodes them.
//!
//! Input: a mode byte, then the stream. Mode bit 0 picks reply mode. Otherwise the connection
//! is simulated as `server/src/lookupd/tcp.rs` runs it: lines of at most [`MAX_LINE_BYTES`]
//! trimmed with [`trim_space`], checked by [`parse_line`] (the server's own code) against
//! whether the peer has identified; IDENTIFY's size with [`identify_body_len`] and its JSON with
//! [`decode_identity`]. Every error ends the connection, as in nsqlookupd. Checked:
//! - nothing panics, and no body is allocated from its size field alone;
//! - every error carries one of NSQ's codes;
//! - REGISTER and UNREGISTER re-encoded by nsqd's encoder ([`LookupCommand`]) parse back to the
//!   same request; an identity survives a JSON round trip;
//! - in reply mode, [`decode_response`] takes whole replies only, refuses a size over its limit
//!   before buffering it, and what it returns re-encodes to the same bytes; IDENTIFY's JSON
//!   answer decodes or fails cleanly.

use bytes::BytesMut;
use protocol::lookup::{LookupCommand, LookupdInfo, decode_response, put_response};
use protocol::{ErrorCode, MAX_LINE_BYTES, ProtocolError};
use server::lookupd::{
    LookupRequest, MAX_IDENTIFY_BODY_BYTES, decode_identity, identify_body_len, parse_line,
    trim_space,
};

/// Longest input taken: a little over a maximal line.
pub const MAX_LEN: usize = MAX_LINE_BYTES + 4096;
/// The largest reply nsqd's registration reads.
const MAX_REPLY: usize = 64 * 1024;

fn check_error(error: &ProtocolError) {
    let bytes = error.to_bytes();
    assert_eq!(ErrorCode::parse(&bytes), Some(error.code), "error text {error}");
}

/// The stream as nsqlookupd's buffered reader gives it.
struct Reader<'a> {
    data: &'a [u8],
}

impl Reader<'_> {
    /// `read_until(b'\n')` on a reader limited to [`MAX_LINE_BYTES`].
    fn line(&mut self) -> Line<'_> {
        let limit = self.data.len().min(MAX_LINE_BYTES);
        let len = self.data[..limit].iter().position(|&b| b == b'\n').map_or(limit, |end| end + 1);
        let (line, rest) = self.data.split_at(len);
        self.data = rest;
        if line.ends_with(b"\n") {
            Line::Command(line)
        } else if line.len() == MAX_LINE_BYTES {
            Line::TooLong
        } else {
            Line::End
        }
    }

    fn exact(&mut self, n: usize) -> Option<&[u8]> {
        let taken = self.data.get(..n)?;
        self.data = &self.data[n..];
        Some(taken)
    }
}

enum Line<'a> {
    Command(&'a [u8]),
    TooLong,
    End,
}

pub fn run(data: &[u8]) {
    if data.len() > MAX_LEN {
        return;
    }
    let Some((&mode, stream)) = data.split_first() else {
        return;
    };
    if mode & 1 != 0 {
        replies(stream);
        return;
    }
    let mut reader = Reader { data: stream };
    let mut identified = false;
    loop {
        let line = match reader.line() {
            Line::Command(line) => line,
            Line::TooLong | Line::End => return,
        };
        let request = match parse_line(trim_space(line), identified) {
            Ok(request) => request,
            Err(error) => return check_error(&error),
        };
        match request {
            LookupRequest::Ping => {}
            LookupRequest::Identify => {
                let Some(size) = reader.exact(4) else { return };
                let size = [size[0], size[1], size[2], size[3]];
                let len = match identify_body_len(size) {
                    Ok(len) => len,
                    Err(error) => return check_error(&error),
                };
                assert!(len <= MAX_IDENTIFY_BODY_BYTES);
                let Some(body) = reader.exact(len) else { return };
                let identity = match decode_identity(body) {
                    Ok(identity) => identity,
                    Err(error) => return check_error(&error),
                };
                let json = serde_json::to_vec(&identity).expect("an identity encodes");
                assert_eq!(decode_identity(&json).as_ref(), Ok(&identity), "JSON round trip");
                identified = true;
            }
            LookupRequest::Register { topic, channel } => {
                let encoded = LookupCommand::Register { topic, channel }.to_bytes();
                let again = parse_line(trim_space(&encoded), true).expect("REGISTER re-encoded");
                assert_eq!(again, request, "REGISTER round trip");
            }
            LookupRequest::Unregister { topic, channel } => {
                let encoded = LookupCommand::Unregister { topic, channel }.to_bytes();
                let again = parse_line(trim_space(&encoded), true).expect("UNREGISTER re-encoded");
                assert_eq!(again, request, "UNREGISTER round trip");
            }
        }
    }
}

/// nsqlookupd's replies as nsqd's registration reads them.
fn replies(stream: &[u8]) {
    let mut buf = BytesMut::from(stream);
    loop {
        let before = buf.len();
        match decode_response(&mut buf, MAX_REPLY) {
            Ok(Some(reply)) => {
                assert!(reply.len() <= MAX_REPLY);
                let start = stream.len() - before;
                let mut encoded = BytesMut::new();
                put_response(&mut encoded, &reply);
                assert_eq!(&encoded[..], &stream[start..start + encoded.len()], "reply re-encodes");
                assert_eq!(buf.len(), before - encoded.len());
                if reply.first() == Some(&b'{') {
                    let _ = serde_json::from_slice::<LookupdInfo>(&reply);
                }
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "a partial reply was consumed");
                return;
            }
            Err(error) => {
                assert!(error.size > MAX_REPLY as u64, "{error}");
                return;
            }
        }
    }
}
