//! nsqlookupd's TCP protocol "V1" (NSQ.md §4.2), without I/O: what nsqd sends to register
//! itself and its topics, and what nsqlookupd answers.
//!
//! The client sends [`MAGIC_V1`], then text lines (`PING`, `IDENTIFY` with a `[i32 size][JSON]`
//! body, `REGISTER <topic> [channel]`, `UNREGISTER <topic> [channel]`). Each reply is
//! `[u32 size][data]`, with no frame type: `OK`, the IDENTIFY JSON, or an error text
//! `E_CODE description` (the fatal ones close the connection).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// The four bytes an nsqlookupd client sends first.
pub const MAGIC_V1: &[u8; 4] = b"  V1";

/// What nsqd says about itself in IDENTIFY. nsqlookupd needs `broadcast_address`, `tcp_port`,
/// `http_port` and `version`; the rest is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeerIdentity {
    pub broadcast_address: String,
    pub hostname: String,
    pub tcp_port: u16,
    pub http_port: u16,
    pub version: String,
    pub topology_zone: String,
    pub topology_region: String,
}

impl PeerIdentity {
    /// Whether the fields nsqlookupd requires are all there.
    pub fn is_complete(&self) -> bool {
        !self.broadcast_address.is_empty()
            && self.tcp_port != 0
            && self.http_port != 0
            && !self.version.is_empty()
    }
}

/// nsqlookupd's answer to IDENTIFY: where its own listeners are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LookupdInfo {
    pub tcp_port: u16,
    pub http_port: u16,
    pub version: String,
    pub broadcast_address: String,
    pub hostname: String,
}

/// A command to nsqlookupd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupCommand<'a> {
    Ping,
    /// With its JSON body ([`PeerIdentity`]).
    Identify(&'a [u8]),
    Register {
        topic: &'a str,
        channel: Option<&'a str>,
    },
    Unregister {
        topic: &'a str,
        channel: Option<&'a str>,
    },
}

impl LookupCommand<'_> {
    /// Appends the command's bytes.
    pub fn encode(&self, buf: &mut BytesMut) {
        let line = |buf: &mut BytesMut, verb: &str, topic: &str, channel: Option<&str>| {
            buf.put_slice(verb.as_bytes());
            buf.put_u8(b' ');
            buf.put_slice(topic.as_bytes());
            if let Some(channel) = channel {
                buf.put_u8(b' ');
                buf.put_slice(channel.as_bytes());
            }
            buf.put_u8(b'\n');
        };
        match *self {
            Self::Ping => buf.put_slice(b"PING\n"),
            Self::Identify(body) => {
                buf.put_slice(b"IDENTIFY\n");
                buf.put_u32(u32::try_from(body.len()).unwrap_or(u32::MAX));
                buf.put_slice(body);
            }
            Self::Register { topic, channel } => line(buf, "REGISTER", topic, channel),
            Self::Unregister { topic, channel } => line(buf, "UNREGISTER", topic, channel),
        }
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::new();
        self.encode(&mut buf);
        buf.freeze()
    }
}

/// Appends a reply: `[u32 size][data]`.
pub fn put_response(buf: &mut BytesMut, data: &[u8]) {
    buf.put_u32(u32::try_from(data.len()).unwrap_or(u32::MAX));
    buf.put_slice(data);
}

/// A reply longer than the reader allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("response body size ({size}) is greater than limit ({limit})")]
pub struct ResponseTooLong {
    pub size: u64,
    pub limit: usize,
}

/// Takes one reply from the front of `buf`, or `None` until it has all arrived. A declared
/// size over `max` is refused before anything is buffered for it.
pub fn decode_response(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, ResponseTooLong> {
    let Some(header) = buf.get(..4) else { return Ok(None) };
    let size = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let len = usize::try_from(size).unwrap_or(usize::MAX);
    if len > max {
        return Err(ResponseTooLong { size: u64::from(size), limit: max });
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(len).freeze()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn commands_encode_as_nsqd_sends_them() {
        assert_eq!(LookupCommand::Ping.to_bytes(), "PING\n");
        let register = LookupCommand::Register { topic: "t", channel: Some("c") };
        assert_eq!(register.to_bytes(), "REGISTER t c\n");
        let unregister = LookupCommand::Unregister { topic: "t", channel: None };
        assert_eq!(unregister.to_bytes(), "UNREGISTER t\n");
        assert_eq!(LookupCommand::Identify(b"{}").to_bytes(), &b"IDENTIFY\n\0\0\0\x02{}"[..]);
    }

    #[test]
    fn responses_round_trip_and_long_ones_are_refused_early() {
        let mut buf = BytesMut::new();
        put_response(&mut buf, b"OK");
        put_response(&mut buf, b"E_INVALID nope");
        let partial = buf.split_to(5);
        let mut partial = partial;
        assert_eq!(decode_response(&mut partial, 64).unwrap(), None);
        partial.unsplit(buf);
        let mut buf = partial;
        assert_eq!(decode_response(&mut buf, 64).unwrap().unwrap(), "OK");
        assert_eq!(decode_response(&mut buf, 64).unwrap().unwrap(), "E_INVALID nope");
        assert!(buf.is_empty());
        let mut huge = BytesMut::from(&b"\x7f\xff\xff\xff"[..]);
        assert_eq!(
            decode_response(&mut huge, 1024).unwrap_err().to_string(),
            "response body size (2147483647) is greater than limit (1024)"
        );
    }

    #[test]
    fn identity_needs_nsqlookupds_required_fields() {
        let full: PeerIdentity = serde_json::from_str(
            r#"{"broadcast_address":"h","tcp_port":4150,"http_port":4151,"version":"1.3.0"}"#,
        )
        .unwrap();
        assert!(full.is_complete());
        let missing: PeerIdentity =
            serde_json::from_str(r#"{"broadcast_address":"h","tcp_port":4150}"#).unwrap();
        assert!(!missing.is_complete());
    }
}
