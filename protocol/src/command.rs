//! Client-to-server commands: a line of parameters split on single spaces and ended by `\n`
//! (a `\r` before it is dropped), then for IDENTIFY, AUTH, PUB, MPUB and DPUB a body framed as
//! `[i32 size][bytes]`.
//!
//! nsqd checks a command's state, parameters and body in an order clients can observe (which
//! error comes first), so the server checks them itself with the helpers here; [`Command`] is
//! the client's side, encoding whole commands.

use bytes::{BufMut, BytesMut};

use crate::MESSAGE_ID_LEN;
use crate::error::ProtocolError;

/// The line without its `\n` and an optional `\r` before it.
pub fn trim_line(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The line's parameters, split on every single space as NSQ does (two spaces make an empty
/// parameter). The first is the command name.
pub fn split_params(line: &[u8]) -> Vec<&[u8]> {
    line.split(|&b| b == b' ').collect()
}

/// NSQ's base-10 parser: ASCII digits only (no sign, no space; the empty string is 0). A value
/// above `u64::MAX` saturates, which every caller then refuses as out of range.
pub fn parse_base10(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            Some(n.saturating_mul(10).saturating_add(u64::from(b - b'0')))
        } else {
            None
        }
    })
}

/// A message ID parameter: exactly 16 bytes (their contents are not checked, as in NSQ).
pub fn message_id(param: &[u8]) -> Result<&[u8; MESSAGE_ID_LEN], ProtocolError> {
    param.try_into().map_err(|_| ProtocolError::invalid("invalid message ID"))
}

/// A body size as sent: a big-endian `i32`, so a size with the top bit set is negative.
pub fn body_size(bytes: [u8; 4]) -> i32 {
    i32::from_be_bytes(bytes)
}

/// A whole command, as a client sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// IDENTIFY with its JSON body.
    Identify(&'a [u8]),
    Auth(&'a [u8]),
    Sub {
        topic: &'a str,
        channel: &'a str,
    },
    Pub {
        topic: &'a str,
        body: &'a [u8],
    },
    Mpub {
        topic: &'a str,
        bodies: &'a [&'a [u8]],
    },
    Dpub {
        topic: &'a str,
        defer_ms: u64,
        body: &'a [u8],
    },
    Rdy(u64),
    Fin(&'a [u8; MESSAGE_ID_LEN]),
    Req {
        id: &'a [u8; MESSAGE_ID_LEN],
        timeout_ms: u64,
    },
    Touch(&'a [u8; MESSAGE_ID_LEN]),
    Cls,
    Nop,
}

fn put_body(dst: &mut BytesMut, body: &[u8]) {
    dst.put_u32(u32::try_from(body.len()).unwrap_or(u32::MAX));
    dst.put_slice(body);
}

impl Command<'_> {
    /// Appends the command's bytes.
    pub fn encode(&self, dst: &mut BytesMut) {
        match self {
            Command::Identify(body) => {
                dst.put_slice(b"IDENTIFY\n");
                put_body(dst, body);
            }
            Command::Auth(secret) => {
                dst.put_slice(b"AUTH\n");
                put_body(dst, secret);
            }
            Command::Sub { topic, channel } => {
                dst.put_slice(format!("SUB {topic} {channel}\n").as_bytes());
            }
            Command::Pub { topic, body } => {
                dst.put_slice(format!("PUB {topic}\n").as_bytes());
                put_body(dst, body);
            }
            Command::Mpub { topic, bodies } => {
                dst.put_slice(format!("MPUB {topic}\n").as_bytes());
                let size = 4 + bodies.iter().map(|b| 4 + b.len()).sum::<usize>();
                dst.put_u32(u32::try_from(size).unwrap_or(u32::MAX));
                dst.put_u32(u32::try_from(bodies.len()).unwrap_or(u32::MAX));
                for body in *bodies {
                    put_body(dst, body);
                }
            }
            Command::Dpub { topic, defer_ms, body } => {
                dst.put_slice(format!("DPUB {topic} {defer_ms}\n").as_bytes());
                put_body(dst, body);
            }
            Command::Rdy(count) => dst.put_slice(format!("RDY {count}\n").as_bytes()),
            Command::Fin(id) => {
                dst.put_slice(b"FIN ");
                dst.put_slice(&id[..]);
                dst.put_u8(b'\n');
            }
            Command::Req { id, timeout_ms } => {
                dst.put_slice(b"REQ ");
                dst.put_slice(&id[..]);
                dst.put_slice(format!(" {timeout_ms}\n").as_bytes());
            }
            Command::Touch(id) => {
                dst.put_slice(b"TOUCH ");
                dst.put_slice(&id[..]);
                dst.put_u8(b'\n');
            }
            Command::Cls => dst.put_slice(b"CLS\n"),
            Command::Nop => dst.put_slice(b"NOP\n"),
        }
    }

    pub fn to_bytes(&self) -> BytesMut {
        let mut buf = BytesMut::new();
        self.encode(&mut buf);
        buf
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn lines_split_on_every_single_space() {
        assert_eq!(trim_line(b"SUB a b\r\n"), b"SUB a b");
        assert_eq!(trim_line(b"NOP\n"), b"NOP");
        assert_eq!(split_params(b"SUB a b"), [&b"SUB"[..], b"a", b"b"]);
        assert_eq!(split_params(b"SUB  a"), [&b"SUB"[..], b"", b"a"]);
        assert_eq!(split_params(b""), [&b""[..]]);
    }

    #[test]
    fn base10_takes_digits_only() {
        assert_eq!(parse_base10(b"2500"), Some(2500));
        assert_eq!(parse_base10(b""), Some(0));
        assert_eq!(parse_base10(b"-1"), None);
        assert_eq!(parse_base10(b"+1"), None);
        assert_eq!(parse_base10(b" 1"), None);
        assert_eq!(parse_base10(b"1a"), None);
        assert_eq!(parse_base10(b"99999999999999999999999"), Some(u64::MAX));
    }

    #[test]
    fn ids_must_be_16_bytes() {
        assert!(message_id(b"0123456789abcdef").is_ok());
        assert_eq!(message_id(b"0123").unwrap_err().to_string(), "E_INVALID invalid message ID");
        assert!(message_id(b"0123456789abcdef0").is_err());
    }

    #[test]
    fn commands_encode_as_nsq_clients_send_them() {
        let id = b"000000000000000a";
        let cases: [(Command<'_>, &[u8]); 9] = [
            (Command::Sub { topic: "t", channel: "c" }, b"SUB t c\n"),
            (Command::Pub { topic: "t", body: b"hi" }, b"PUB t\n\x00\x00\x00\x02hi"),
            (Command::Dpub { topic: "t", defer_ms: 5, body: b"x" }, b"DPUB t 5\n\x00\x00\x00\x01x"),
            (Command::Rdy(10), b"RDY 10\n"),
            (Command::Fin(id), b"FIN 000000000000000a\n"),
            (Command::Req { id, timeout_ms: 0 }, b"REQ 000000000000000a 0\n"),
            (Command::Touch(id), b"TOUCH 000000000000000a\n"),
            (Command::Cls, b"CLS\n"),
            (Command::Identify(b"{}"), b"IDENTIFY\n\x00\x00\x00\x02{}"),
        ];
        for (command, bytes) in cases {
            assert_eq!(&command.to_bytes()[..], bytes, "{command:?}");
        }
        let bodies: [&[u8]; 2] = [b"a", b"bc"];
        let mpub = Command::Mpub { topic: "t", bodies: &bodies }.to_bytes();
        assert_eq!(
            &mpub[..],
            b"MPUB t\n\x00\x00\x00\x0f\x00\x00\x00\x02\x00\x00\x00\x01a\x00\x00\x00\x02bc"
        );
    }
}
