//! The topic log beside a model, under random operations and simulated crashes.
//!
//! Method: proptest generates a sequence of appends, reads, syncs, removals, clean reopens and
//! crashes. The simulator's crash keeps a random prefix of each file's unsynced writes, the last
//! one torn at a random byte. The model tracks where every record lies, so it predicts exactly
//! which records survive a crash and how many torn bytes recovery must truncate. Checked:
//! - every record acknowledged under `Always` (or covered by a sync) survives every crash intact;
//! - reads return exactly the model's records, never a corrupt one;
//! - offsets are dense and increasing, and never go below a surviving or synced record;
//! - the recovery report states exactly the truncation the simulator caused.

// A failed unwrap in a test is a failed assertion; the lint guards library code against input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::cast_possible_truncation)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use engine::format::segment_file_name;
use engine::log::{LogConfig, SyncPolicy, TopicLog};
use engine::storage::{CrashKeep, SimStorage, Storage, UnsyncedOp};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<Vec<u8>>),
    Read(u16),
    ReadAt(u16),
    Sync,
    Remove(u16),
    Reopen,
    Crash(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec(prop::collection::vec(any::<u8>(), 0..120), 1..6).prop_map(Op::Append),
        1 => any::<u16>().prop_map(Op::Read),
        2 => any::<u16>().prop_map(Op::ReadAt),
        1 => Just(Op::Sync),
        1 => any::<u16>().prop_map(Op::Remove),
        1 => Just(Op::Reopen),
        2 => any::<u64>().prop_map(Op::Crash),
    ]
}

#[derive(Debug, Clone)]
struct ModelRecord {
    offset: u64,
    pos: u64,
    len: u64,
    body: Vec<u8>,
}

#[derive(Debug)]
struct Model {
    max_bytes_per_file: u64,
    policy: SyncPolicy,
    /// Segments by first offset, each with its records in file order.
    segments: BTreeMap<u64, Vec<ModelRecord>>,
    next_offset: u64,
    segment_len: u64,
    /// Every record below this offset is durable: it must survive any crash.
    durable_below: u64,
    unsynced: u64,
}

impl Model {
    fn records(&self) -> impl Iterator<Item = &ModelRecord> {
        self.segments.values().flatten()
    }

    fn append(&mut self, bodies: &[Vec<u8>]) {
        for body in bodies {
            let len = 32 + body.len() as u64;
            if self.segment_len > 32 && self.segment_len + len > self.max_bytes_per_file {
                self.segments.insert(self.next_offset, Vec::new());
                self.segment_len = 32;
                // A roll fsyncs the segment before it.
                self.durable_below = self.durable_below.max(self.last_first());
            }
            let record = ModelRecord {
                offset: self.next_offset,
                pos: self.segment_len,
                len,
                body: body.clone(),
            };
            self.segments.values_mut().next_back().unwrap().push(record);
            self.segment_len += len;
            self.next_offset += 1;
        }
        self.unsynced += bodies.len() as u64;
        let sync = match self.policy {
            SyncPolicy::Always => true,
            SyncPolicy::Every { records, .. } => self.unsynced >= records,
        };
        if sync {
            self.synced();
        }
    }

    fn synced(&mut self) {
        self.durable_below = self.next_offset;
        self.unsynced = 0;
    }

    fn last_first(&self) -> u64 {
        *self.segments.keys().next_back().unwrap()
    }

    fn remove_below(&mut self, offset: u64) {
        let firsts: Vec<u64> = self.segments.keys().copied().collect();
        for pair in firsts.windows(2) {
            if pair[1] > offset {
                break;
            }
            self.segments.remove(&pair[0]);
        }
    }

    /// Applies a crash that left the last segment `len` bytes long; returns the torn bytes
    /// recovery must truncate, and where.
    fn crash(&mut self, len: u64) -> Option<(u64, u64)> {
        let last_first = self.last_first();
        let records = self.segments.values_mut().next_back().unwrap();
        records.retain(|r| r.pos + r.len <= len);
        let end = records.last().map_or(32, |r| r.pos + r.len);
        self.segment_len = end;
        self.next_offset = records.last().map_or(last_first, |r| r.offset + 1);
        self.unsynced = 0;
        self.durable_below = self.durable_below.min(self.next_offset);
        (len > end).then_some((end, len - end))
    }
}

struct Harness {
    sim: SimStorage,
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    config: LogConfig,
    log: Option<TopicLog>,
    model: Model,
}

impl Harness {
    fn open(&mut self) -> engine::RecoveryReport {
        let (log, report) =
            TopicLog::open(Arc::clone(&self.storage), &self.dir, self.config.clone()).unwrap();
        self.log = Some(log);
        report
    }

    fn log(&self) -> &TopicLog {
        self.log.as_ref().unwrap()
    }

    fn check_reads(&self, from: u64) {
        let mut reader = self.log().reader(from);
        let mut got = Vec::new();
        while let Some(record) = reader.next().unwrap() {
            got.push((record.offset, record.body.to_vec()));
        }
        let want: Vec<_> = self
            .model
            .records()
            .filter(|r| r.offset >= from)
            .map(|r| (r.offset, r.body.clone()))
            .collect();
        assert_eq!(got, want, "read from {from}");
    }

    fn pick_offset(&self, pick: u16) -> u64 {
        u64::from(pick) % (self.model.next_offset + 2)
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Append(bodies) => {
                let range = self.log().append(&common::new_records(bodies)).unwrap();
                let first = self.model.next_offset;
                assert_eq!(range, first..first + bodies.len() as u64, "dense offsets");
                self.model.append(bodies);
                assert!(self.log().stats().synced_offset >= self.model.durable_below);
            }
            Op::Read(pick) => self.check_reads(self.pick_offset(*pick)),
            Op::ReadAt(pick) => {
                let offset = self.pick_offset(*pick);
                let want =
                    self.model.records().find(|r| r.offset == offset).map(|r| r.body.clone());
                let got = self.log().read_at(offset).unwrap().map(|r| r.body.to_vec());
                assert_eq!(got, want, "read_at {offset}");
            }
            Op::Sync => {
                self.log().sync().unwrap();
                self.model.synced();
            }
            Op::Remove(pick) => {
                let offset = self.pick_offset(*pick);
                self.log().remove_below(offset, None).unwrap();
                self.model.remove_below(offset);
                self.check_reads(0);
            }
            Op::Reopen => {
                self.log().close().unwrap();
                self.log = None;
                let report = self.open();
                assert!(report.is_clean(), "{report:?}");
                assert_eq!(report.next_offset, self.model.next_offset);
                self.model.synced();
                self.check_reads(0);
            }
            Op::Crash(seed) => self.crash(*seed),
        }
    }

    fn crash(&mut self, seed: u64) {
        self.log = None;
        let durable: Vec<(u64, Vec<u8>)> = self
            .model
            .records()
            .filter(|r| r.offset < self.model.durable_below)
            .map(|r| (r.offset, r.body.clone()))
            .collect();
        let mut rng = seed;
        self.sim.crash_with(|_, ops: &[UnsyncedOp]| {
            let mut next = || {
                rng = rng
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                rng >> 33
            };
            let keep_ops = (next() % (ops.len() as u64 + 1)) as usize;
            let torn_bytes = match ops.get(keep_ops) {
                Some(UnsyncedOp::Write { bytes, .. }) => {
                    (next() % (bytes.len() as u64 + 1)) as usize
                }
                _ => 0,
            };
            CrashKeep { ops: keep_ops, torn_bytes }
        });
        let last = self.dir.join(segment_file_name(self.model.last_first()));
        let len = self.sim.contents(&last).expect("the last segment is durable").len() as u64;
        let torn = self.model.crash(len);
        let report = self.open();
        assert_eq!(
            report.truncated.as_ref().map(|t| (t.position, t.len_bytes)),
            torn,
            "{report:?}"
        );
        assert!(report.quarantined.is_empty() && report.corrupt_header.is_none(), "{report:?}");
        assert_eq!(report.next_offset, self.model.next_offset);
        self.check_reads(0);
        for (offset, body) in durable {
            let record = self.log().read_at(offset).unwrap();
            assert_eq!(record.map(|r| r.body.to_vec()), Some(body), "durable offset {offset} lost");
        }
    }
}

fn policy() -> impl Strategy<Value = SyncPolicy> {
    prop_oneof![
        Just(SyncPolicy::Always),
        (2u64..8).prop_map(|records| SyncPolicy::Every { records, interval: Duration::MAX }),
    ]
}

fn run(policy: SyncPolicy, max_bytes_per_file: u64, ops: &[Op]) {
    let sim = SimStorage::new();
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    let config = LogConfig { max_bytes_per_file, sync: policy, ..LogConfig::default() };
    let model = Model {
        max_bytes_per_file,
        policy,
        segments: BTreeMap::from([(0, Vec::new())]),
        next_offset: 0,
        segment_len: 32,
        durable_below: 0,
        unsynced: 0,
    };
    let dir = Path::new("/data/topics/model").to_path_buf();
    let mut harness = Harness { sim, storage, dir, config, log: None, model };
    harness.open();
    for op in ops {
        harness.apply(op);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1024,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn log_matches_the_model_through_crashes(
        policy in policy(),
        max_bytes_per_file in 100u64..800,
        ops in prop::collection::vec(op(), 1..60),
    ) {
        run(policy, max_bytes_per_file, &ops);
    }
}
