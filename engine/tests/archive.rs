//! Archiving consumed segments (FORMAT.md §8): what retention archives, that an archive reads
//! back as exactly what was published, and that a damaged or lying archive is refused with its
//! name and never decoded without bound.

// A failed unwrap in a test is a failed assertion; the lint guards library code against input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::cast_possible_truncation)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{Harness, consumer, finish_all};
use engine::archive::{
    ARCHIVE_MAX_SEGMENT_BYTES, ArchiveError, ArchiveHeader, ArchiveReader, Archiver,
    archive_file_name, list_archives, read_archive_header,
};
use engine::log::{LogConfig, SegmentInfo, SegmentItem, list_segments};
use engine::storage::{SimStorage, Storage};
use engine::{EngineConfig, SyncPolicy};

const ARCHIVE: &str = "/archive";

/// About four 20-byte messages per segment.
fn harness() -> Harness {
    Harness::with_config(EngineConfig {
        mem_queue_size: 0,
        log: LogConfig {
            sync: SyncPolicy::Always,
            max_bytes_per_file: 32 + 4 * (32 + 20),
            ..LogConfig::default()
        },
        archive_dir: Some(PathBuf::from(ARCHIVE)),
        ..EngineConfig::default()
    })
}

fn message(i: u64) -> Vec<u8> {
    format!("message-{i:012}").into_bytes()
}

/// Publishes `count` messages on `topic`, one per publish, and FINs them all on channel `c`.
fn publish_and_consume(engine: &engine::Engine, topic: &str, count: u64) {
    let topic = engine.topic(topic).unwrap();
    let channel = topic.channel("c").unwrap();
    for i in 0..count {
        topic.publish(&[&message(i)], std::time::Duration::ZERO).unwrap();
    }
    assert_eq!(finish_all(&consumer(&channel, count)), count as usize);
}

/// Every record of every archive of `topic`, in order, with the archives' paths; panics on
/// damage.
fn archived_records(storage: &SimStorage, topic: &str) -> (Vec<(u64, Vec<u8>)>, Vec<PathBuf>) {
    let dir = Path::new(ARCHIVE).join(topic);
    let listing = list_archives(storage, &dir).unwrap();
    assert!(listing.other_files.is_empty(), "no stray files: {:?}", listing.other_files);
    let mut records = Vec::new();
    let mut paths = Vec::new();
    for (_, path) in listing.archives {
        let mut reader = ArchiveReader::open(storage, &path).unwrap();
        assert_eq!(reader.segment_header_problem(), None);
        let mut count = 0;
        while let Some(item) = reader.next().unwrap() {
            match item {
                SegmentItem::Record { record, .. } => {
                    records.push((record.offset, record.body.to_vec()));
                    count += 1;
                }
                SegmentItem::Damaged { position, .. } => {
                    panic!("{}: damage at {position}", path.display())
                }
            }
        }
        assert_eq!(reader.header().record_count, count, "{}", path.display());
        paths.push(path);
    }
    (records, paths)
}

fn segments(storage: &SimStorage, topic: &str) -> Vec<(u64, PathBuf)> {
    list_segments(storage, &Path::new(common::DATA).join("topics").join(topic)).unwrap().segments
}

#[test]
fn segments_that_retention_removes_are_archived_with_exactly_the_records_published() {
    // Goal: every segment retention deletes is first archived, and the archives hold every
    // record below the last retained segment, bodies equal to what was published, in order.
    // Method: publish 40 messages over about ten segments, FIN all, checkpoint; read the archives.
    let h = harness();
    let engine = h.open();
    publish_and_consume(&engine, "t", 40);
    assert!(segments(&h.storage, "t").len() >= 10);
    engine.checkpoint().unwrap();

    let kept = segments(&h.storage, "t");
    assert_eq!(kept.len(), 1, "only the last segment stays: {kept:?}");
    let (records, paths) = archived_records(&h.storage, "t");
    let first_kept = kept[0].0;
    assert!(paths.len() >= 9);
    let expected: Vec<(u64, Vec<u8>)> = (0..first_kept).map(|i| (i, message(i))).collect();
    assert_eq!(records, expected, "every removed record archived once, in order");
    for path in &paths {
        let header = read_archive_header(&h.storage, path).unwrap();
        assert_eq!(
            path.file_name().unwrap().to_str().unwrap(),
            archive_file_name(header.first_offset)
        );
    }
}

#[test]
fn a_segment_is_archived_only_once_every_channel_is_past_it_and_ephemeral_topics_never() {
    // Goal: archiving follows the retention rule (a lagging channel keeps every segment it
    // still needs, archived or not), and ephemeral topics are never archived.
    // Method: a second channel that reads nothing holds the log; then it catches up. An
    // ephemeral topic consumed to the end leaves no archive directory.
    let h = harness();
    let engine = h.open();
    let topic = engine.topic("t").unwrap();
    let lagging = topic.channel("lagging").unwrap();
    publish_and_consume(&engine, "t", 20);
    engine.checkpoint().unwrap();
    assert!(list_archives(&h.storage, &Path::new(ARCHIVE).join("t")).is_err(), "nothing archived");

    assert_eq!(finish_all(&consumer(&lagging, 20)), 20);
    engine.checkpoint().unwrap();
    let (records, _) = archived_records(&h.storage, "t");
    assert_eq!(records.len() as u64, segments(&h.storage, "t")[0].0);

    // An ephemeral topic holds at most one message here (the memory queue is off): consume each.
    // Its in-memory segments are 1 MiB: 40 bodies of 64 KiB fill three.
    let ephemeral = engine.topic("e#ephemeral").unwrap();
    let reader = consumer(&ephemeral.channel("c").unwrap(), 1);
    let body = vec![b'x'; 64 << 10];
    for _ in 0..40 {
        ephemeral.publish(&[&body], std::time::Duration::ZERO).unwrap();
        assert_eq!(finish_all(&reader), 1);
    }
    engine.checkpoint().unwrap();
    assert!(ephemeral.log().stats().oldest_offset > 0, "retention removed ephemeral segments");
    let ephemeral_archive = Path::new(ARCHIVE).join("e#ephemeral");
    assert!(h.storage.file_paths().iter().all(|p| !p.starts_with(&ephemeral_archive)));
}

#[test]
fn an_archiver_error_keeps_the_segment_and_a_later_checkpoint_archives_it() {
    // Goal: a failed archive (here the disk fills while the archive is written) deletes no
    // segment and leaves no archive or temporary file; retention retries at the next checkpoint.
    // Method: cap the simulated disk at its current size before the checkpoint, then lift it.
    let h = harness();
    let engine = h.open();
    publish_and_consume(&engine, "t", 20);
    let before = segments(&h.storage, "t");
    let used: u64 =
        h.storage.file_paths().iter().map(|p| h.storage.contents(p).unwrap().len() as u64).sum();
    h.storage.set_capacity(Some(used));
    engine.checkpoint().unwrap();
    assert_eq!(segments(&h.storage, "t"), before, "every segment kept");
    assert!(
        h.storage.file_paths().iter().all(|p| !p.starts_with(ARCHIVE)),
        "no archive, no .tmp: {:?}",
        h.storage.file_paths()
    );

    h.storage.set_capacity(None);
    engine.checkpoint().unwrap();
    let (records, _) = archived_records(&h.storage, "t");
    assert_eq!(records, (0..records.len() as u64).map(|i| (i, message(i))).collect::<Vec<_>>());
    assert_eq!(segments(&h.storage, "t").len(), 1);
}

#[test]
fn an_archive_with_other_content_is_never_overwritten_and_its_segment_is_kept() {
    // Goal: when an archive of the same first offset exists with other bytes, the archiver
    // fails, the old archive is untouched and the segment (with all after it) stays.
    // Method: plant a foreign file under the first archive's name, checkpoint, compare; then
    // move it away and checkpoint again.
    let h = harness();
    let engine = h.open();
    publish_and_consume(&engine, "t", 20);
    let before = segments(&h.storage, "t");
    let planted = Path::new(ARCHIVE).join("t").join(archive_file_name(0));
    h.storage.create_dir_all(planted.parent().unwrap()).unwrap();
    engine::storage::write_atomically(&h.storage, &planted, b"an older archive").unwrap();
    engine.checkpoint().unwrap();
    assert_eq!(segments(&h.storage, "t"), before);
    assert_eq!(h.storage.contents(&planted).unwrap(), b"an older archive");

    h.storage.remove_file(&planted).unwrap();
    engine.checkpoint().unwrap();
    assert_eq!(segments(&h.storage, "t").len(), 1);
    assert!(!archived_records(&h.storage, "t").0.is_empty());
}

/// A log with a few segments on its own storage, and an archiver for it.
fn log_with_segments() -> (SimStorage, Vec<SegmentInfo>, Archiver) {
    let storage = SimStorage::new();
    let shared: Arc<dyn Storage> = Arc::new(storage.clone());
    let config = LogConfig { max_bytes_per_file: 32 + 4 * (32 + 20), ..LogConfig::default() };
    let (log, _) = engine::TopicLog::open(Arc::clone(&shared), "/data/topics/t", config).unwrap();
    for i in 0..12 {
        let body = message(i);
        log.append(&[common::new_record(&body)]).unwrap();
    }
    log.sync().unwrap();
    let listed = list_segments(&storage, Path::new("/data/topics/t")).unwrap().segments;
    let infos = listed
        .windows(2)
        .map(|pair| SegmentInfo {
            path: pair[0].1.clone(),
            first_offset: pair[0].0,
            end_offset: pair[1].0,
            len_bytes: storage.contents(&pair[0].1).unwrap().len() as u64,
        })
        .collect();
    (storage, infos, Archiver::new(shared, Path::new(ARCHIVE).join("t")))
}

fn archive(storage: &SimStorage, archiver: &Archiver, info: &SegmentInfo) -> PathBuf {
    let file = storage.open(&info.path, false).unwrap();
    archiver.archive_segment(info, &*file).unwrap().path
}

#[test]
fn archiving_the_same_segment_again_is_idempotent() {
    // Goal: a crash between an archive's rename and the segment's removal makes retention
    // archive the segment again: that succeeds and changes nothing.
    // Method: archive one segment twice and compare the bytes.
    let (storage, infos, archiver) = log_with_segments();
    let path = archive(&storage, &archiver, &infos[0]);
    let first = storage.contents(&path).unwrap();
    let file = storage.open(&infos[0].path, false).unwrap();
    let again = archiver.archive_segment(&infos[0], &*file).unwrap();
    assert!(again.already_archived);
    assert_eq!(storage.contents(&path).unwrap(), first);
}

/// Rewrites the archive at `path` as `good` with the header `header` (sealed with a valid
/// checksum).
fn rewrite_header(storage: &SimStorage, path: &Path, good: &[u8], header: ArchiveHeader) {
    let mut bytes = good.to_vec();
    bytes[..ArchiveHeader::LEN].copy_from_slice(&header.encode());
    engine::storage::write_atomically(storage, path, &bytes).unwrap();
}

/// Asserts that opening the archive fails as corrupt, naming the file and saying `what`.
fn assert_corrupt(storage: &SimStorage, path: &Path, what: &str) {
    match ArchiveReader::open(storage, path) {
        Err(error @ ArchiveError::Corrupt { .. }) => {
            let text = error.to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains(what), "{text:?} should say {what:?}");
        }
        other => panic!("{}: expected corruption, got {other:?}", path.display()),
    }
}

#[test]
fn a_flipped_bit_in_the_zstd_frame_is_reported_with_the_file_name() {
    // Goal: damage to the compressed bytes is never served: the frame fails to decode or its
    // checksums fail. Method: flip one bit at each of many positions of the frame, one at a time.
    let (storage, infos, archiver) = log_with_segments();
    let path = archive(&storage, &archiver, &infos[0]);
    let good = storage.contents(&path).unwrap();
    for at in (ArchiveHeader::LEN..good.len()).step_by(3) {
        storage.flip_bit(&path, at as u64, (at % 8) as u8).unwrap();
        assert!(
            matches!(ArchiveReader::open(&storage, &path), Err(ArchiveError::Corrupt { .. })),
            "bit flip at {at} not detected"
        );
        storage.flip_bit(&path, at as u64, (at % 8) as u8).unwrap();
    }
    assert!(ArchiveReader::open(&storage, &path).is_ok(), "restored");
}

#[test]
fn a_header_lying_about_the_length_is_corruption_never_an_unbounded_decode() {
    // Goal: the recorded length bounds decoding: a frame that decodes to more or less is
    // refused, and a length above the archive limit is refused before anything is decoded.
    // Method: rewrite a good archive's header (with a valid checksum) with other lengths, and
    // build an archive whose header says 1000 bytes over a frame that would decode to 4 GB.
    let (storage, infos, archiver) = log_with_segments();
    let path = archive(&storage, &archiver, &infos[0]);
    let good = storage.contents(&path).unwrap();
    let len = infos[0].len_bytes;

    let header = ArchiveHeader::decode(&good).unwrap();
    rewrite_header(&storage, &path, &good, ArchiveHeader { segment_len: len - 1, ..header });
    assert_corrupt(&storage, &path, "decodes to more than");
    rewrite_header(&storage, &path, &good, ArchiveHeader { segment_len: len + 1, ..header });
    assert_corrupt(&storage, &path, &format!("decodes to {len} bytes"));
    let huge = ArchiveHeader { segment_len: ARCHIVE_MAX_SEGMENT_BYTES + 1, ..header };
    rewrite_header(&storage, &path, &good, huge);
    assert_corrupt(&storage, &path, "outside");
    rewrite_header(&storage, &path, &good, header);
    assert!(ArchiveReader::open(&storage, &path).is_ok());
    engine::storage::write_atomically(&storage, &path, &good[..good.len() - 1]).unwrap();
    assert_corrupt(&storage, &path, "header says");

    // The largest frame a 1000-byte archive may have, filled with RLE blocks of 128 KiB each:
    // 4 bytes that decode to 131_072. Decoded whole it would be over 4 GB.
    let blocks = ArchiveHeader::frame_len_max(1000) as usize / 4 - 2;
    let bomb = rle_bomb(blocks);
    assert!(blocks as u64 * 131_072 > 4_000_000_000);
    let header = ArchiveHeader {
        first_offset: 0,
        end_offset: 10,
        segment_len: 1000,
        frame_len: bomb.len() as u64,
        record_count: 0,
        segment_crc: 0,
    };
    let mut bytes = header.encode().to_vec();
    bytes.extend_from_slice(&bomb);
    engine::storage::write_atomically(&storage, &path, &bytes).unwrap();
    assert_corrupt(&storage, &path, "more than the 1000 bytes");
}

/// A zstd frame (RFC 8878) of `blocks` RLE blocks of 128 KiB of zeros each, with no content
/// size and no checksum: a decompression bomb of 32768 to 1.
fn rle_bomb(blocks: usize) -> Vec<u8> {
    let mut frame = vec![0x28, 0xB5, 0x2F, 0xFD]; // magic
    frame.push(0x00); // descriptor: no content size, not single-segment, no checksum
    frame.push(7 << 3); // window descriptor: 2^(10 + 7) = 128 KiB
    for index in 0..blocks {
        let last = u32::from(index + 1 == blocks);
        let block_header = last | (1 << 1) | (131_072 << 3); // RLE, 131072 repeats
        frame.extend_from_slice(&block_header.to_le_bytes()[..3]);
        frame.push(0); // the byte repeated
    }
    frame
}

#[test]
fn damage_inside_an_archived_segment_is_found_at_the_same_position_as_in_the_live_segment() {
    // Goal: an archive holds the segment verbatim, so a record damaged before archiving is
    // reported by the archive reader at the position the log's scan reports, and the records
    // after it are kept. Method: flip a bit in the second record of a segment, archive it,
    // read the archive.
    let (storage, infos, archiver) = log_with_segments();
    let record_len = 32 + message(0).len() as u64;
    let second = 32 + record_len;
    storage.flip_bit(&infos[0].path, second + 40, 1).unwrap();
    let path = archive(&storage, &archiver, &infos[0]);
    let mut reader = ArchiveReader::open(&storage, &path).unwrap();
    let mut items = Vec::new();
    while let Some(item) = reader.next().unwrap() {
        items.push(match item {
            SegmentItem::Record { record, position, .. } => {
                format!("record {} at {position}", record.offset)
            }
            SegmentItem::Damaged { position, len_bytes, .. } => {
                format!("damaged {len_bytes} at {position}")
            }
        });
    }
    let end = infos[0].end_offset;
    let mut expected =
        vec!["record 0 at 32".to_owned(), format!("damaged {record_len} at {second}")];
    for offset in 2..end {
        expected.push(format!("record {offset} at {}", 32 + offset * record_len));
    }
    assert_eq!(items, expected);
    assert_eq!(reader.header().record_count, end - 1, "the writer counted valid records only");
}

#[test]
fn the_version_1_archive_fixture_reads_as_its_segment() {
    // Goal: archives written from FORMAT.md §8 by an independent encoder (the zstd tool and a
    // Python CRC-32C, `fixtures/v1/make_archive_fixture.py`) stay readable by every later
    // version. Method: read the fixture archive and the segment it was made from; compare.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
    let archive = fixtures.join("archive/t").join(archive_file_name(1000));
    let storage = engine::storage::FsStorage;
    let mut reader = ArchiveReader::open(&storage, &archive).unwrap();
    let header = *reader.header();
    assert_eq!((header.first_offset, header.end_offset, header.record_count), (1000, 1003, 3));
    let segment = std::fs::read(fixtures.join("topic/00000000000000001000.seg")).unwrap();
    assert_eq!(header.segment_len, segment.len() as u64);
    assert_eq!(header.segment_crc, engine::format::checksum(&segment));
    let file: Arc<dyn engine::storage::StorageFile> =
        Arc::new(engine::storage::BytesFile(segment.into()));
    let mut live = engine::log::SegmentReader::new(file, 1000, header.segment_len, Some(1003));
    let mut records = 0;
    while let Some(item) = reader.next().unwrap() {
        let (
            SegmentItem::Record { record: archived, .. },
            Some(SegmentItem::Record { record, .. }),
        ) = (item, live.next().unwrap())
        else {
            panic!("damage in the fixture");
        };
        assert_eq!(archived, record);
        records += 1;
    }
    assert!(live.next().unwrap().is_none());
    assert_eq!(records, 3);
}

#[test]
fn a_deleted_topics_archive_is_moved_aside_so_the_topic_can_archive_again() {
    // Goal: a topic deleted and created again starts its offsets at 0, and its new archives do
    // not collide with the old ones. Method: archive, delete the topic, publish and consume
    // again under the same name; both generations' archives exist, each whole.
    let h = harness();
    let engine = h.open();
    publish_and_consume(&engine, "t", 20);
    engine.checkpoint().unwrap();
    let (first, _) = archived_records(&h.storage, "t");
    assert!(!first.is_empty());
    engine.delete_topic("t").unwrap();
    let retired: Vec<String> = h
        .storage
        .list_dir(Path::new(ARCHIVE))
        .unwrap()
        .into_iter()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| n.starts_with("t@deleted-"))
        .collect();
    assert_eq!(retired.len(), 1, "the old archive is kept aside");
    publish_and_consume(&engine, "t", 20);
    engine.checkpoint().unwrap();
    let (second, _) = archived_records(&h.storage, "t");
    assert_eq!(second, first, "the new generation archived from offset 0 again");
}
