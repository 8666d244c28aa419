//! `checkpoint_value`: the metadata store's value decoding (FORMAT.md §7), for every tree, over
//! arbitrary bytes: a version byte, a CRC-32C, then an rkyv archive validated with bytecheck.
//!
//! Input: a mode byte, then the bytes. Mode bits 0-1 pick the tree (topics, channels, deferred;
//! 3 tries all three). Bit 2 wraps the bytes in a correct version byte and checksum, so they
//! reach rkyv's validation; with bit 4 too, the version byte is 1, the older channel layout.
//! Bit 3 builds a real record of the tree from the bytes instead, encodes it, then changes one
//! byte of the archive and reseals the checksum: a damaged archive that passes every check
//! before validation. Checked:
//! - decoding returns a record or [`MetaError::Corrupt`] for any bytes, never panics, and the
//!   error renders;
//! - a value that decodes re-encodes to one that decodes to the same record;
//! - an undamaged encoding decodes to exactly the record encoded.

use arbitrary::{Arbitrary, Unstructured};
use engine::meta::codec::{MetaValue, decode_value, value_version};
use engine::meta::{ChannelRecord, DeferredRecord, MetaError, TopicRecord, Tree};

/// Longest input taken.
pub const MAX_LEN: usize = 4096;
/// Most entries of a built channel record's lists.
const MAX_LIST: usize = 64;

const TREES: [Tree; 3] = [Tree::Topics, Tree::Channels, Tree::Deferred];
const KEY: &[u8] = b"topic\0channel";

/// A version byte and checksum in front of `archive`, as the store writes them.
fn sealed(version: u8, archive: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(5 + archive.len());
    value.push(version);
    value.extend_from_slice(&crc32c::crc32c(archive).to_le_bytes());
    value.extend_from_slice(archive);
    value
}

fn check_decode(tree: Tree, value: &[u8]) -> Option<MetaValue> {
    match decode_value(tree, KEY, value) {
        Ok(decoded) => {
            assert_eq!(decoded.tree(), tree);
            let encoded = decoded.encode().expect("encoding a decoded record");
            let again = decode_value(tree, KEY, &encoded).expect("decoding a re-encoded record");
            assert_eq!(again, decoded, "a decoded record re-encodes to another");
            Some(decoded)
        }
        Err(error @ MetaError::Corrupt { .. }) => {
            assert!(!error.to_string().is_empty());
            None
        }
        Err(other) => panic!("decoding failed with a non-corruption error: {other}"),
    }
}

fn built(tree: Tree, u: &mut Unstructured<'_>) -> arbitrary::Result<MetaValue> {
    Ok(match tree {
        Tree::Topics => MetaValue::Topic(TopicRecord {
            paused_at: Option::<u64>::arbitrary(u)?,
            orphan_floor: u64::arbitrary(u)?,
        }),
        Tree::Channels => {
            let finished_len = u.int_in_range(0..=MAX_LIST)?;
            let attempts_len = u.int_in_range(0..=MAX_LIST)?;
            let once_len = u.int_in_range(0..=MAX_LIST)?;
            MetaValue::Channel(ChannelRecord {
                paused: bool::arbitrary(u)?,
                floor: u64::arbitrary(u)?,
                next_read: u64::arbitrary(u)?,
                finished: (0..finished_len)
                    .map(|_| Ok((u64::arbitrary(u)?, u64::arbitrary(u)?)))
                    .collect::<arbitrary::Result<_>>()?,
                attempts: (0..attempts_len)
                    .map(|_| Ok((u64::arbitrary(u)?, u16::arbitrary(u)?)))
                    .collect::<arbitrary::Result<_>>()?,
                once: (0..once_len)
                    .map(|_| Ok((u64::arbitrary(u)?, u64::arbitrary(u)?)))
                    .collect::<arbitrary::Result<_>>()?,
            })
        }
        Tree::Deferred => MetaValue::Deferred(DeferredRecord {
            due_ns: i64::arbitrary(u)?,
            attempts: u16::arbitrary(u)?,
        }),
    })
}

pub fn run(data: &[u8]) {
    if data.len() > MAX_LEN {
        return;
    }
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let trees: &[Tree] = match mode & 3 {
        3 => &TREES,
        pick => &TREES[usize::from(pick)..=usize::from(pick)],
    };
    for &tree in trees {
        let version = if mode & 16 != 0 { 1 } else { value_version(tree) };
        if mode & 8 != 0 {
            let mut u = Unstructured::new(bytes);
            let Ok(value) = built(tree, &mut u) else { continue };
            let encoded = value.encode().expect("encoding a record");
            assert_eq!(check_decode(tree, &encoded).as_ref(), Some(&value), "round trip");
            // Damage one byte of the archive (past the 5-byte header) and reseal it.
            let at = u.arbitrary::<u16>().unwrap_or(0);
            let xor = u.arbitrary::<u8>().unwrap_or(1).max(1);
            let mut archive = encoded[5..].to_vec();
            if !archive.is_empty() {
                let at = usize::from(at) % archive.len();
                archive[at] ^= xor;
                check_decode(tree, &sealed(value_version(tree), &archive));
            }
        } else if mode & 4 != 0 {
            check_decode(tree, &sealed(version, bytes));
        } else {
            check_decode(tree, bytes);
        }
    }
}
