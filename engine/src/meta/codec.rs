//! The encoding of metadata values.
//!
//! ```text
//! [0]     u8      version, 1
//! [1..5)  u32 LE  CRC-32C (Castagnoli) of the bytes from 5 on
//! [5..)           rkyv 0.8 archive of the record: little-endian, 32-bit relative pointers,
//!                 aligned; validated with bytecheck before it is read
//! ```
//! A value that fails any check is reported as [`MetaError::Corrupt`] with its tree and key; the
//! engine then starts that channel over from its oldest retained message rather than trust it.

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

use super::{MetaError, Tree, corrupt};

/// The version byte of every value written now.
pub const META_VALUE_VERSION: u8 = 1;
const HEADER_LEN: usize = 5;

/// A topic's persistent state.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicRecord {
    /// Where a paused topic stopped handing messages to its channels; `None` when not paused.
    pub paused_at: Option<u64>,
    /// Where the topic's next first channel starts: messages below it were handed to channels
    /// that are gone (NSQ semantics: a topic without channels keeps what arrives meanwhile).
    pub orphan_floor: u64,
}

/// A channel's checkpoint. Every offset in it is below the log's synced offset at the time it
/// was written, so a crash never makes it refer to a record that is gone.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ChannelRecord {
    pub paused: bool,
    /// Every offset below this is finished.
    pub floor: u64,
    /// Offsets below this were read from the log: each is finished, deferred, or due again.
    pub next_read: u64,
    /// Finished ranges `[start, end)` above the floor; past `next_read` too, for messages
    /// dropped unread (`/topic/empty` on a paused topic).
    pub finished: Vec<(u64, u64)>,
    /// Delivery attempts of unfinished messages (deferred ones keep theirs in the deferred tree).
    pub attempts: Vec<(u64, u16)>,
}

/// A deferred message of a channel: due again at `due_ns`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeferredRecord {
    pub due_ns: i64,
    pub attempts: u16,
}

/// A decoded value of any of the store's trees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaValue {
    Topic(TopicRecord),
    Channel(ChannelRecord),
    Deferred(DeferredRecord),
}

impl MetaValue {
    /// The tree a value of this kind is kept in.
    pub fn tree(&self) -> Tree {
        match self {
            Self::Topic(_) => Tree::Topics,
            Self::Channel(_) => Tree::Channels,
            Self::Deferred(_) => Tree::Deferred,
        }
    }

    /// The bytes the store writes for this value.
    pub fn encode(&self) -> Result<Vec<u8>, MetaError> {
        match self {
            Self::Topic(record) => encode(record),
            Self::Channel(record) => encode(record),
            Self::Deferred(record) => encode(record),
        }
    }
}

/// Decodes a value of `tree` exactly as the store reads it: version byte, checksum, then the
/// rkyv archive, validated before use. `key` only names the value in the error. Any bytes give
/// either a record or [`MetaError::Corrupt`] (the fuzz target `checkpoint_value` holds it to
/// that).
pub fn decode_value(tree: Tree, key: &[u8], value: &[u8]) -> Result<MetaValue, MetaError> {
    Ok(match tree {
        Tree::Topics => MetaValue::Topic(decode(tree, key, value)?),
        Tree::Channels => MetaValue::Channel(decode(tree, key, value)?),
        Tree::Deferred => MetaValue::Deferred(decode(tree, key, value)?),
    })
}

pub(crate) fn encode<T>(value: &T) -> Result<Vec<u8>, MetaError>
where
    T: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
{
    let archive = rkyv::to_bytes::<rancor::Error>(value).map_err(|e| MetaError::Io {
        op: "encode",
        source: std::io::Error::other(e.to_string()),
    })?;
    let mut out = Vec::with_capacity(HEADER_LEN + archive.len());
    out.push(META_VALUE_VERSION);
    out.extend_from_slice(&crc32c::crc32c(&archive).to_le_bytes());
    out.extend_from_slice(&archive);
    Ok(out)
}

pub(crate) fn decode<T>(tree: Tree, key: &[u8], value: &[u8]) -> Result<T, MetaError>
where
    T: Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + Deserialize<T, HighDeserializer<rancor::Error>>,
{
    let Some((header, archive)) = value.split_at_checked(HEADER_LEN) else {
        return Err(corrupt(tree, key, format!("{} bytes is too short", value.len())));
    };
    if header[0] != META_VALUE_VERSION {
        return Err(corrupt(tree, key, format!("unknown version {}", header[0])));
    }
    let stored = u32::from_le_bytes([header[1], header[2], header[3], header[4]]);
    if crc32c::crc32c(archive) != stored {
        return Err(corrupt(tree, key, "checksum mismatch"));
    }
    let mut aligned = AlignedVec::<16>::with_capacity(archive.len());
    aligned.extend_from_slice(archive);
    rkyv::from_bytes::<T, rancor::Error>(&aligned)
        .map_err(|e| corrupt(tree, key, format!("invalid archive: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ChannelRecord {
        ChannelRecord {
            paused: true,
            floor: 7,
            next_read: 100,
            finished: vec![(9, 20), (30, 31)],
            attempts: vec![(8, 3), (25, 1)],
        }
    }

    #[test]
    fn records_round_trip() {
        // Goal: what is written is what is read back. Method: encode and decode each record type.
        let channel = sample();
        let bytes = encode(&channel).unwrap();
        assert_eq!(decode::<ChannelRecord>(Tree::Channels, b"k", &bytes).unwrap(), channel);
        let topic = TopicRecord { paused_at: Some(5), orphan_floor: 3 };
        let bytes = encode(&topic).unwrap();
        assert_eq!(decode::<TopicRecord>(Tree::Topics, b"k", &bytes).unwrap(), topic);
        let deferred = DeferredRecord { due_ns: -4, attempts: 9 };
        let bytes = encode(&deferred).unwrap();
        assert_eq!(decode::<DeferredRecord>(Tree::Deferred, b"k", &bytes).unwrap(), deferred);
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        // Goal: a damaged value is never taken for a checkpoint. Method: flip each bit of an
        // encoded record in turn and decode it.
        let bytes = encode(&sample()).unwrap();
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            let result = decode::<ChannelRecord>(Tree::Channels, b"t\0c", &damaged);
            assert!(matches!(result, Err(MetaError::Corrupt { .. })), "bit {bit}: {result:?}");
        }
    }

    #[test]
    fn decode_value_reads_every_tree_and_round_trips() {
        // Goal: the public decoder reads what the store writes, per tree. Method: encode one value
        // of each kind and decode it under its tree.
        let values = [
            MetaValue::Topic(TopicRecord { paused_at: Some(5), orphan_floor: 3 }),
            MetaValue::Channel(sample()),
            MetaValue::Deferred(DeferredRecord { due_ns: -4, attempts: 9 }),
        ];
        for value in &values {
            let bytes = value.encode().unwrap();
            assert_eq!(&decode_value(value.tree(), b"k", &bytes).unwrap(), value);
        }
    }

    #[test]
    fn truncated_and_foreign_values_are_rejected() {
        // Goal: short or hostile values give a clear error, never a panic. Method: decode every
        // prefix of a valid value, and garbage with a valid header.
        let bytes = encode(&sample()).unwrap();
        for len in 0..bytes.len() {
            assert!(decode::<ChannelRecord>(Tree::Channels, b"k", &bytes[..len]).is_err());
        }
        let garbage = vec![0xA5; 64];
        let mut value = vec![META_VALUE_VERSION];
        value.extend_from_slice(&crc32c::crc32c(&garbage).to_le_bytes());
        value.extend_from_slice(&garbage);
        let error = decode::<ChannelRecord>(Tree::Channels, b"k", &value).unwrap_err();
        assert!(error.to_string().contains("invalid archive"), "{error}");
    }
}
