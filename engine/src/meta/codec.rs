//! The encoding of metadata values.
//!
//! ```text
//! [0]     u8      version: 1 for topic and deferred values, 2 for channel values (1 is read)
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

/// The version byte of topic and deferred values.
pub const META_VALUE_VERSION: u8 = 1;
/// The version byte of channel values written now: version 2 added [`ChannelRecord::once`].
/// Version 1 values are still read.
pub const CHANNEL_VALUE_VERSION: u8 = 2;
const HEADER_LEN: usize = 5;

/// The version byte of the values of `tree` written now.
pub fn value_version(tree: Tree) -> u8 {
    match tree {
        Tree::Channels => CHANNEL_VALUE_VERSION,
        Tree::Topics | Tree::Deferred => META_VALUE_VERSION,
    }
}

/// A record of the store, with its version and how to read its older versions.
pub trait MetaRecord: Archive + Sized {
    const VERSION: u8;
    /// The older versions [`MetaRecord::decode_older`] reads.
    const OLDER_VERSIONS: &'static [u8] = &[];

    /// Reads the archive of an older `version`; `None` when the type never had it.
    fn decode_older(_version: u8, _archive: &[u8]) -> Option<Result<Self, rancor::Error>> {
        None
    }
}

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
    /// Delivery attempts of unfinished messages delivered more than once, by offset (deferred
    /// ones keep theirs in the deferred tree). Version 1 listed counts of 1 here too.
    pub attempts: Vec<(u64, u16)>,
    /// Ranges `[start, end)` of unfinished messages delivered exactly once, in flight or due
    /// again: nearly all in flight, and consecutive, so the record stays small however many
    /// there are. An unfinished message in neither list was never delivered. (Version 2.)
    pub once: Vec<(u64, u64)>,
}

impl ChannelRecord {
    /// The delivery attempts the record gives a message that is not deferred.
    pub fn attempts_of(&self, offset: u64) -> u16 {
        // Both lists are sorted; a damaged record only gets a wrong answer here.
        if let Ok(i) = self.attempts.binary_search_by_key(&offset, |&(o, _)| o) {
            return self.attempts.get(i).map_or(0, |&(_, a)| a);
        }
        let after = self.once.partition_point(|&(start, _)| start <= offset);
        let once = after > 0 && self.once.get(after - 1).is_some_and(|&(_, end)| offset < end);
        u16::from(once)
    }
}

impl MetaRecord for ChannelRecord {
    const VERSION: u8 = CHANNEL_VALUE_VERSION;
    const OLDER_VERSIONS: &'static [u8] = &[1];

    fn decode_older(version: u8, archive: &[u8]) -> Option<Result<Self, rancor::Error>> {
        (version == 1).then(|| {
            let v1 = from_aligned::<ChannelRecordV1>(archive)?;
            let ChannelRecordV1 { paused, floor, next_read, finished, attempts } = v1;
            Ok(Self { paused, floor, next_read, finished, attempts, once: Vec::new() })
        })
    }
}

/// A channel's checkpoint as version 1 wrote it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelRecordV1 {
    pub paused: bool,
    pub floor: u64,
    pub next_read: u64,
    pub finished: Vec<(u64, u64)>,
    pub attempts: Vec<(u64, u16)>,
}

impl MetaRecord for ChannelRecordV1 {
    const VERSION: u8 = 1;
}

impl MetaRecord for TopicRecord {
    const VERSION: u8 = META_VALUE_VERSION;
}

impl MetaRecord for DeferredRecord {
    const VERSION: u8 = META_VALUE_VERSION;
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

pub fn encode<T>(value: &T) -> Result<Vec<u8>, MetaError>
where
    T: MetaRecord + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
{
    let archive = rkyv::to_bytes::<rancor::Error>(value).map_err(|e| MetaError::Io {
        op: "encode",
        source: std::io::Error::other(e.to_string()),
    })?;
    let mut out = Vec::with_capacity(HEADER_LEN + archive.len());
    out.push(T::VERSION);
    out.extend_from_slice(&crc32c::crc32c(&archive).to_le_bytes());
    out.extend_from_slice(&archive);
    Ok(out)
}

pub(crate) fn decode<T>(tree: Tree, key: &[u8], value: &[u8]) -> Result<T, MetaError>
where
    T: MetaRecord,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + Deserialize<T, HighDeserializer<rancor::Error>>,
{
    let Some((header, archive)) = value.split_at_checked(HEADER_LEN) else {
        return Err(corrupt(tree, key, format!("{} bytes is too short", value.len())));
    };
    let version = header[0];
    if version != T::VERSION && !T::OLDER_VERSIONS.contains(&version) {
        return Err(corrupt(tree, key, format!("unknown version {version}")));
    }
    let stored = u32::from_le_bytes([header[1], header[2], header[3], header[4]]);
    if crc32c::crc32c(archive) != stored {
        return Err(corrupt(tree, key, "checksum mismatch"));
    }
    let result = if version == T::VERSION {
        from_aligned::<T>(archive)
    } else {
        // A version in `OLDER_VERSIONS` that `decode_older` does not read is a bug of the type.
        T::decode_older(version, archive).unwrap_or_else(|| from_aligned::<T>(archive))
    };
    result.map_err(|e| corrupt(tree, key, format!("invalid archive: {e}")))
}

/// Validates and reads an archive, copied first to the alignment rkyv needs.
fn from_aligned<T>(archive: &[u8]) -> Result<T, rancor::Error>
where
    T: Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + Deserialize<T, HighDeserializer<rancor::Error>>,
{
    let mut aligned = AlignedVec::<16>::with_capacity(archive.len());
    aligned.extend_from_slice(archive);
    rkyv::from_bytes::<T, rancor::Error>(&aligned)
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
            attempts: vec![(8, 3), (25, 2)],
            once: vec![(21, 25), (40, 99)],
        }
    }

    #[test]
    fn attempts_of_reads_both_lists() {
        let record = sample();
        let got: Vec<u16> =
            [7, 8, 20, 21, 24, 25, 39, 40, 98, 99].map(|o| record.attempts_of(o)).into();
        assert_eq!(got, [0, 3, 0, 1, 1, 2, 0, 1, 1, 0]);
    }

    #[test]
    fn a_version_1_channel_value_is_read_with_its_counts() {
        // Goal: checkpoints written before `once` existed still load, counts of 1 included.
        // Method: encode the old layout under version 1, decode it as today's record.
        let v1 = ChannelRecordV1 {
            paused: true,
            floor: 7,
            next_read: 100,
            finished: vec![(9, 20)],
            attempts: vec![(8, 3), (25, 1)],
        };
        let bytes = encode(&v1).unwrap();
        assert_eq!(bytes[0], 1);
        let record = decode::<ChannelRecord>(Tree::Channels, b"k", &bytes).unwrap();
        let expected = ChannelRecord {
            paused: true,
            floor: 7,
            next_read: 100,
            finished: vec![(9, 20)],
            attempts: vec![(8, 3), (25, 1)],
            once: Vec::new(),
        };
        assert_eq!(record, expected);
        assert_eq!(record.attempts_of(25), 1);
        // Today's values carry version 2; a version no one wrote is refused by name.
        assert_eq!(encode(&expected).unwrap()[0], CHANNEL_VALUE_VERSION);
        let mut unknown = bytes.clone();
        unknown[0] = 3;
        let error = decode::<ChannelRecord>(Tree::Channels, b"k", &unknown).unwrap_err();
        assert!(error.to_string().contains("unknown version 3"), "{error}");
        // A topic value has no older version: a 2 is unknown there.
        let mut topic = encode(&TopicRecord::default()).unwrap();
        topic[0] = 2;
        assert!(decode::<TopicRecord>(Tree::Topics, b"k", &topic).is_err());
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
