//! Format fixtures: segment files written from FORMAT.md by an independent encoder
//! (`fixtures/v1/make_fixture.py`). Every reader of a later format version must still read them.

// A failed unwrap in a test is a failed assertion; the lint guards library code against input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;

use engine::format::{RecordRef, SegmentHeader, encode_record};
use engine::log::{LogConfig, TopicLog};
use engine::storage::{FsStorage, Storage};

const TS: i64 = 1_700_000_000_000_000_000;

fn expected() -> Vec<(u64, i64, i64, Vec<u8>)> {
    vec![
        (1000, TS, 0, b"hello".to_vec()),
        (1001, TS + 1, TS + 60_000_000_000, Vec::new()),
        (1002, TS + 2, 0, (0..=255).collect()),
    ]
}

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1/topic/00000000000000001000.seg")
}

#[test]
fn version_1_fixture_opens_clean_and_reads_every_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("topic");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(fixture(), dir.join("00000000000000001000.seg")).unwrap();
    let storage: Arc<dyn Storage> = Arc::new(FsStorage);
    let (log, report) = TopicLog::open(storage, &dir, LogConfig::default()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!((report.oldest_offset, report.next_offset), (1000, 1003));
    let mut reader = log.reader(0);
    let mut got = Vec::new();
    while let Some(r) = reader.next().unwrap() {
        got.push((r.offset, r.timestamp_ns, r.deliver_at_ns, r.body.to_vec()));
    }
    assert_eq!(got, expected());
}

#[test]
fn version_1_encoding_is_byte_identical_to_the_fixture() {
    let mut bytes = SegmentHeader { first_offset: 1000 }.encode().to_vec();
    for (offset, timestamp_ns, deliver_at_ns, body) in &expected() {
        let record = RecordRef {
            offset: *offset,
            timestamp_ns: *timestamp_ns,
            deliver_at_ns: *deliver_at_ns,
            body,
        };
        encode_record(&record, &mut bytes);
    }
    assert_eq!(bytes, std::fs::read(fixture()).unwrap());
}
