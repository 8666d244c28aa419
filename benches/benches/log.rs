//! Criterion benchmarks of the topic log on the real file system.
//!
//! - `append/<policy>/batch_<n>`: one appender, batches of `n` records of 200 bytes, under NSQ's
//!   default sync policy (`lazy`: fsync every 2500 records or 2 s) and `always`.
//! - `append/always/8_appenders_batch_200`: eight threads appending 200-record batches under
//!   `always`, where group commit shares each fsync among the waiting appenders.
//! - `read/sequential`: a reader scanning a backlog of 200-byte records from the page cache.
//! - `open/backlog_1M_records`: opening (recovering) a log of a million 200-byte records.
//!
//! Throughput is in records. Segments are removed between samples, outside the timed part, so
//! the disk does not fill during a long run.

// A benchmark that meets an error has nothing to measure: it stops with the error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::cast_precision_loss)]

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use engine::NewRecord;
use engine::log::{LogConfig, SyncPolicy, TopicLog};
use engine::storage::{FsStorage, Storage};

const BODY_BYTES: usize = 200;

fn open_log(dir: &std::path::Path, sync: SyncPolicy) -> TopicLog {
    let storage: Arc<dyn Storage> = Arc::new(FsStorage);
    let config = LogConfig { sync, ..LogConfig::default() };
    TopicLog::open(storage, dir, config).expect("open").0
}

fn records(body: &[u8], count: usize) -> Vec<NewRecord<'_>> {
    vec![NewRecord { timestamp_ns: 1, deliver_at_ns: 0, body }; count]
}

fn bench_dir() -> tempfile::TempDir {
    // Beside the build output, on the same disk as a data directory would be.
    let root = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
        std::path::PathBuf::from,
    );
    std::fs::create_dir_all(&root).expect("create the target directory");
    tempfile::tempdir_in(root).expect("tempdir")
}

fn trim(log: &TopicLog) {
    log.remove_below(log.next_offset(), None).expect("remove");
}

fn append_single(c: &mut Criterion) {
    let body = vec![b'x'; BODY_BYTES];
    let lazy = SyncPolicy::default();
    for (name, policy) in [("lazy", lazy), ("always", SyncPolicy::Always)] {
        let mut group = c.benchmark_group(format!("append/{name}"));
        if policy == SyncPolicy::Always {
            group.sample_size(10).measurement_time(Duration::from_secs(5));
        }
        for batch in [1usize, 200] {
            let tmp = bench_dir();
            let log = open_log(tmp.path(), policy);
            let batch_records = records(&body, batch);
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_function(format!("batch_{batch}"), |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        log.append(&batch_records).expect("append");
                    }
                    let elapsed = start.elapsed();
                    trim(&log);
                    elapsed
                });
            });
        }
        group.finish();
    }
}

fn append_concurrent(c: &mut Criterion) {
    const APPENDERS: usize = 8;
    const BATCH: usize = 200;
    let mut group = c.benchmark_group("append/always");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(BATCH as u64));
    let tmp = bench_dir();
    let log = Arc::new(open_log(tmp.path(), SyncPolicy::Always));
    group.bench_function(format!("{APPENDERS}_appenders_batch_{BATCH}"), |b| {
        // One iteration is one batch appended by one of the appenders.
        b.iter_custom(|iters| {
            let per_thread = iters.div_ceil(APPENDERS as u64);
            let barrier = Arc::new(Barrier::new(APPENDERS + 1));
            let threads: Vec<_> = (0..APPENDERS)
                .map(|_| {
                    let log = Arc::clone(&log);
                    let barrier = Arc::clone(&barrier);
                    std::thread::spawn(move || {
                        let body = vec![b'x'; BODY_BYTES];
                        let batch = records(&body, BATCH);
                        barrier.wait();
                        for _ in 0..per_thread {
                            log.append(&batch).expect("append");
                        }
                    })
                })
                .collect();
            barrier.wait();
            let start = Instant::now();
            for thread in threads {
                thread.join().expect("appender");
            }
            let elapsed = start.elapsed();
            trim(&log);
            // Report the time for the `iters` batches asked for, not the rounded-up total.
            elapsed.mul_f64(iters as f64 / (per_thread * APPENDERS as u64) as f64)
        });
    });
    group.finish();
}

fn read_sequential(c: &mut Criterion) {
    const BACKLOG: u64 = 1_000_000;
    let tmp = bench_dir();
    let log = open_log(tmp.path(), SyncPolicy::default());
    let body = vec![b'x'; BODY_BYTES];
    let batch = records(&body, 1000);
    for _ in 0..BACKLOG / 1000 {
        log.append(&batch).expect("append");
    }
    log.sync().expect("sync");
    let mut group = c.benchmark_group("read");
    group.throughput(Throughput::Elements(1));
    let mut reader = log.reader(0);
    group.bench_function("sequential", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let mut bytes = 0usize;
            for _ in 0..iters {
                let record = match reader.next().expect("read") {
                    Some(record) => record,
                    None => {
                        reader = log.reader(0);
                        reader.next().expect("read").expect("a backlog")
                    }
                };
                bytes += record.body.len();
            }
            std::hint::black_box(bytes);
            start.elapsed()
        });
    });
    group.finish();

    // Recovery scans only the last segment, so open time is bounded by one segment however
    // long the backlog. The backlog here spans three 100 MiB segments.
    let mut group = c.benchmark_group("open");
    group.sample_size(20);
    group.bench_function("backlog_1M_records", |b| {
        b.iter(|| open_log(tmp.path(), SyncPolicy::default()));
    });
    group.finish();
}

criterion_group!(benches, append_single, append_concurrent, read_sequential);
criterion_main!(benches);
