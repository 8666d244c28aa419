//! Kill -9 test of the log on the real file system.
//!
//! Goal: prove that under `SyncPolicy::Always` no acknowledged record is lost, corrupted or
//! invented when the process dies at an arbitrary moment. Method: this program runs itself as a
//! child that appends from four threads (so group commit is in play, and segments roll) and prints
//! one line per acknowledged batch. The parent SIGKILLs it once it has seen a random number of
//! acknowledgements, reopens the data directory (taking its lock, which the dead child held), and
//! checks every acknowledged record and every record in the log. It repeats for `CYCLES` cycles.
//! While the child runs, the parent's attempt to lock the data directory must fail with an error
//! naming the child's pid.
//! The seed is printed; `KILL9_SEED=n` reproduces a run.

// A failed unwrap in a test is a failed assertion; the lint guards library code against input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::cast_possible_truncation)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use engine::DataDirLock;
use engine::log::{LogConfig, SyncPolicy, TopicLog};
use engine::storage::{FsStorage, Storage};

const CYCLES: u64 = 25;
const CHILD_THREADS: u64 = 4;
const CHILD_ENV: &str = "KILL9_CHILD_DATA_DIR";

fn config() -> LogConfig {
    LogConfig { max_bytes_per_file: 256 * 1024, sync: SyncPolicy::Always, ..LogConfig::default() }
}

fn topic_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("topics").join("t")
}

/// The body of record `seq` of thread `thread` in cycle `cycle`: its identity, then filler whose
/// length and bytes derive from it, so any record can be checked on its own.
fn body(cycle: u64, thread: u64, seq: u64) -> Vec<u8> {
    let id = format!("{cycle}:{thread}:{seq}:");
    let hash = (cycle * 1_000_003 + thread * 10_007 + seq).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut body = id.into_bytes();
    body.extend((0..(hash % 300)).map(|i| b'a' + ((hash >> (i % 48)) % 26) as u8));
    body
}

fn parse_identity(body: &[u8]) -> Option<(u64, u64, u64)> {
    let text = std::str::from_utf8(body).ok()?;
    let mut parts = text.splitn(4, ':');
    let cycle = parts.next()?.parse().ok()?;
    let thread = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    Some((cycle, thread, seq))
}

fn child(data_dir: &Path, cycle: u64) {
    let storage: Arc<dyn Storage> = Arc::new(FsStorage);
    let _lock = DataDirLock::acquire(&*storage, data_dir).unwrap();
    let (log, _) = TopicLog::open(Arc::clone(&storage), topic_dir(data_dir), config()).unwrap();
    let log = Arc::new(log);
    let threads: Vec<_> = (0..CHILD_THREADS)
        .map(|thread| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut seq = 0;
                loop {
                    let count = 1 + (seq * 7 + thread) % 20;
                    let bodies: Vec<Vec<u8>> =
                        (seq..seq + count).map(|s| body(cycle, thread, s)).collect();
                    let range = log.append(&common::new_records(&bodies)).unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{thread} {seq} {count} {}", range.start).unwrap();
                    out.flush().unwrap();
                    seq += count;
                }
            })
        })
        .collect();
    // The appenders run until the parent kills this process.
    drop(threads);
    loop {
        std::thread::park();
    }
}

struct Ack {
    thread: u64,
    seq: u64,
    count: u64,
    offset: u64,
}

fn run_cycle(exe: &Path, data_dir: &Path, cycle: u64, acks_before_kill: u64) -> (u64, u64) {
    let mut child = Command::new(exe)
        .env(CHILD_ENV, data_dir)
        .env("KILL9_CYCLE", cycle.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut acks = Vec::new();
    while (acks.len() as u64) < acks_before_kill {
        let line = lines.next().expect("the child died before it was killed").unwrap();
        acks.push(line);
        if acks.len() == 1 {
            // The child holds the data directory: a second process is refused, by name.
            let error = DataDirLock::acquire(&FsStorage, data_dir).unwrap_err();
            let message = error.to_string();
            assert!(message.contains(&format!("(pid {})", child.id())), "{message}");
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Lines the child printed between the count and the kill are acknowledgements too.
    acks.extend(lines.map_while(Result::ok));
    let acks: Vec<Ack> = acks
        .iter()
        .filter_map(|line| {
            let mut fields = line.split(' ').map(str::parse::<u64>);
            let mut next = || fields.next()?.ok();
            Some(Ack { thread: next()?, seq: next()?, count: next()?, offset: next()? })
        })
        .collect();

    let storage: Arc<dyn Storage> = Arc::new(FsStorage);
    let _lock = DataDirLock::acquire(&*storage, data_dir).expect("a dead owner's lock is free");
    let (log, _report) = TopicLog::open(storage, topic_dir(data_dir), config()).unwrap();
    let mut acknowledged = 0;
    for ack in &acks {
        for i in 0..ack.count {
            let offset = ack.offset + i;
            let record = log
                .read_at(offset)
                .unwrap()
                .unwrap_or_else(|| panic!("cycle {cycle}: acknowledged offset {offset} lost"));
            assert_eq!(
                record.body,
                body(cycle, ack.thread, ack.seq + i),
                "cycle {cycle} offset {offset}"
            );
            acknowledged += 1;
        }
    }
    let mut reader = log.reader(0);
    let mut previous = None;
    let mut records = 0;
    while let Some(record) = reader.next().unwrap() {
        if let Some(previous) = previous {
            assert_eq!(record.offset, previous + 1, "offsets are dense");
        }
        previous = Some(record.offset);
        let (c, t, s) = parse_identity(&record.body)
            .unwrap_or_else(|| panic!("offset {} holds a record nobody wrote", record.offset));
        assert_eq!(record.body, body(c, t, s), "offset {} is corrupt", record.offset);
        records += 1;
    }
    assert_eq!(log.stats().quarantined_ranges, 0);
    (acknowledged, records)
}

fn main() {
    if let Ok(data_dir) = std::env::var(CHILD_ENV) {
        let cycle = std::env::var("KILL9_CYCLE").unwrap().parse().unwrap();
        child(Path::new(&data_dir), cycle);
        return;
    }
    let Some(seed) = common::self_test_seed("kill9", "KILL9_SEED") else {
        return;
    };
    let exe = std::env::current_exe().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = seed | 1;
    let (mut acknowledged, mut records) = (0, 0);
    for cycle in 0..CYCLES {
        let acks_before_kill = 1 + common::xorshift(&mut rng) % 400;
        let (a, r) = run_cycle(&exe, tmp.path(), cycle, acks_before_kill);
        acknowledged += a;
        records = r;
    }
    assert!(records >= acknowledged, "the log holds every acknowledged record");
    println!(
        "kill9: {CYCLES} kill -9 cycles, {acknowledged} acknowledged records checked, \
         {records} records in the log, 0 lost, 0 corrupt, 0 invented"
    );
    println!("1 passed, 0 failed");
}
