//! Message bodies that say who sent them and prove they are intact.
//!
//! Every body the torture harness publishes is self-describing, so that the checker can judge a
//! delivery from its bytes alone, without trusting anything nsqd says about it:
//!
//! ```text
//! offset  size  field
//!      0     4  magic "NTv1"
//!      4     8  run id (u64 LE): random per run, so bodies of another run are not taken as ours
//!     12     2  producer id (u16 LE)
//!     14     4  sequence (u32 LE): dense per producer, from 0, across all cycles of a run
//!     18     8  deliver-after (u64 LE): unix milliseconds before which a DPUB must not arrive,
//!               0 for PUB and MPUB
//!     26     2  filler length n (u16 LE)
//!     28     n  filler: bytes derived from (run, producer, sequence), so bodies vary in size and
//!               segments roll
//!   28+n     4  CRC-32C (LE) of every byte before it
//! ```
//!
//! A body whose length, magic or CRC does not check out is *corrupt*. A body that checks out is
//! exactly what some producer built; whether it was ever sent is the ledger's question.

use std::fmt;

/// The first bytes of every torture body.
pub const MAGIC: &[u8; 4] = b"NTv1";
/// Bytes before the filler.
pub const HEADER_LEN: usize = 28;
/// Bytes after the filler (the CRC).
pub const TRAILER_LEN: usize = 4;

/// A message's identity: its producer and that producer's sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub producer: u16,
    pub seq: u32,
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}#{}", self.producer, self.seq)
    }
}

/// What a valid body says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payload {
    pub run: u64,
    pub key: Key,
    /// Unix milliseconds; 0 when the message was not deferred.
    pub deliver_after_ms: u64,
    /// The body's CRC-32C (its last four bytes).
    pub crc: u32,
}

/// Why a body is corrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// Shorter than header and trailer.
    TooShort(usize),
    BadMagic,
    /// The filler length field does not match the body's length.
    BadLength {
        declared: usize,
        actual: usize,
    },
    /// The CRC does not match the bytes.
    BadCrc {
        stored: u32,
        computed: u32,
    },
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort(len) => write!(f, "{len} bytes, shorter than any torture body"),
            Self::BadMagic => write!(f, "bad magic"),
            Self::BadLength { declared, actual } => {
                write!(f, "filler length says {declared} bytes, body has {actual}")
            }
            Self::BadCrc { stored, computed } => {
                write!(f, "CRC {stored:08x} stored, {computed:08x} computed")
            }
        }
    }
}

/// Builds the body of `key` in run `run`, with `filler_len` bytes of filler (at most
/// `u16::MAX`). Returns the body and its CRC.
pub fn encode(run: u64, key: Key, deliver_after_ms: u64, filler_len: u16) -> (Vec<u8>, u32) {
    let mut body = Vec::with_capacity(HEADER_LEN + usize::from(filler_len) + TRAILER_LEN);
    body.extend_from_slice(MAGIC);
    body.extend_from_slice(&run.to_le_bytes());
    body.extend_from_slice(&key.producer.to_le_bytes());
    body.extend_from_slice(&key.seq.to_le_bytes());
    body.extend_from_slice(&deliver_after_ms.to_le_bytes());
    body.extend_from_slice(&filler_len.to_le_bytes());
    let mut filler = fastrand::Rng::with_seed(
        run ^ (u64::from(key.producer) << 48) ^ u64::from(key.seq).wrapping_mul(0x9E37_79B9),
    );
    body.extend((0..filler_len).map(|_| filler.u8(..)));
    let crc = crc32c::crc32c(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    (body, crc)
}

fn le_u64(bytes: &[u8]) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(raw)
}

fn le_u32(bytes: &[u8]) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[..4]);
    u32::from_le_bytes(raw)
}

fn le_u16(bytes: &[u8]) -> u16 {
    u16::from_le_bytes([bytes[0], bytes[1]])
}

/// Reads a body, checking its length, magic and CRC.
pub fn decode(body: &[u8]) -> Result<Payload, Corruption> {
    if body.len() < HEADER_LEN + TRAILER_LEN {
        return Err(Corruption::TooShort(body.len()));
    }
    if &body[..4] != MAGIC {
        return Err(Corruption::BadMagic);
    }
    let declared = HEADER_LEN + usize::from(le_u16(&body[26..28])) + TRAILER_LEN;
    if declared != body.len() {
        return Err(Corruption::BadLength { declared, actual: body.len() });
    }
    let (covered, trailer) = body.split_at(body.len() - TRAILER_LEN);
    let stored = le_u32(trailer);
    let computed = crc32c::crc32c(covered);
    if stored != computed {
        return Err(Corruption::BadCrc { stored, computed });
    }
    Ok(Payload {
        run: le_u64(&body[4..12]),
        key: Key { producer: le_u16(&body[12..14]), seq: le_u32(&body[14..18]) },
        deliver_after_ms: le_u64(&body[18..26]),
        crc: stored,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn a_body_reads_back_as_written() {
        let key = Key { producer: 3, seq: 77_000 };
        for filler in [0, 1, 200, u16::MAX] {
            let (body, crc) = encode(42, key, 1234, filler);
            let payload = decode(&body).unwrap();
            assert_eq!(payload, Payload { run: 42, key, deliver_after_ms: 1234, crc });
        }
    }

    #[test]
    fn any_flipped_bit_or_cut_is_corrupt() {
        let (body, _) = encode(7, Key { producer: 1, seq: 2 }, 0, 40);
        for at in 0..body.len() {
            for bit in 0..8 {
                let mut bad = body.clone();
                bad[at] ^= 1 << bit;
                assert!(decode(&bad).is_err(), "flip of bit {bit} at {at} went unseen");
            }
        }
        for len in 0..body.len() {
            assert!(decode(&body[..len]).is_err(), "cut at {len} went unseen");
        }
        let mut longer = body.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
    }
}
