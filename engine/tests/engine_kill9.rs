//! Kill -9 test of the engine (log, channel cursors and the sled store) on the real file system.
//!
//! Goal: prove the crash invariant with a real process death: after a kill -9, every published
//! message that was not finished on the channel is delivered again, and a message finished
//! before a completed checkpoint is not. Method: this program runs itself as a child that opens
//! the engine with its background thread (timers, checkpoints every 10 ms), publishes batches,
//! consumes, FINs, defers (REQ for an hour) and leaves some in flight, and checkpoints now and then itself. It prints `P <seq> <count>` after each
//! acknowledged publish, `F <seq>` after each FIN and `C` after each completed checkpoint. The
//! parent SIGKILLs it after a random number of lines, reopens the data directory with a clock two
//! hours ahead (so deferred messages are due), drains the
//! channel and checks the invariant against what the child printed. `ENGINE_KILL9_SEED=n`
//! reproduces a run.

// A failed unwrap in a test is a failed assertion; the lint guards library code against input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::cast_possible_truncation)]

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use std::sync::Arc;

use engine::clock::{Clock, ManualClock, SystemClock};
use engine::meta::MetaStore;
use engine::storage::{FsStorage, Storage};
use engine::{DataDirLock, Engine, EngineConfig};

const CYCLES: u64 = 12;
const CHILD_ENV: &str = "ENGINE_KILL9_CHILD_DATA_DIR";

fn config() -> EngineConfig {
    EngineConfig {
        mem_queue_size: 0,
        checkpoint_interval: Duration::from_millis(10),
        ..EngineConfig::default()
    }
}

fn body(cycle: u64, seq: u64) -> String {
    format!("{cycle}:{seq}")
}

fn parse(body: &[u8]) -> (u64, u64) {
    let text = std::str::from_utf8(body).unwrap();
    let (cycle, seq) = text.split_once(':').unwrap();
    (cycle.parse().unwrap(), seq.parse().unwrap())
}

fn child(data_dir: &Path, cycle: u64) {
    let (engine, _) = Engine::open(data_dir, config()).unwrap();
    engine.start_background().unwrap();
    let topic = engine.topic("t").unwrap();
    let channel = topic.channel("c").unwrap();
    let consumer = channel.subscribe(None).unwrap();
    consumer.set_ready(50);
    let mut out = std::io::stdout().lock();
    let mut seq = 0;
    for round in 0u64.. {
        let count = 1 + (round * 7) % 13;
        let bodies: Vec<String> = (seq..seq + count).map(|s| body(cycle, s)).collect();
        let slices: Vec<&[u8]> = bodies.iter().map(String::as_bytes).collect();
        topic.publish(&slices, Duration::ZERO).unwrap();
        writeln!(out, "P {seq} {count}").unwrap();
        seq += count;
        // Finish most of what arrives; defer some for an hour, leave a few in flight.
        for _ in 0..count {
            let Some(message) = consumer.next_message().unwrap() else { break };
            let (_, s) = parse(&message.body);
            if s % 7 == 0 {
                consumer.requeue(&message.id, Duration::from_secs(3600)).unwrap();
            } else if s % 11 == 0 && consumer.in_flight() <= 20 {
                // Stays in flight.
            } else {
                consumer.finish(&message.id).unwrap();
                writeln!(out, "F {s}").unwrap();
            }
        }
        if round % 10 == 9 {
            engine.checkpoint().unwrap();
            writeln!(out, "C").unwrap();
        }
        out.flush().unwrap();
    }
}

fn run_cycle(exe: &Path, data_dir: &Path, cycle: u64, lines_before_kill: u64) -> (u64, u64) {
    let mut child = Command::new(exe)
        .env(CHILD_ENV, data_dir)
        .env("ENGINE_KILL9_CYCLE", cycle.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    while (seen.len() as u64) < lines_before_kill {
        seen.push(lines.next().expect("the child died before it was killed").unwrap());
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    seen.extend(lines.map_while(Result::ok));

    let mut acknowledged = BTreeSet::new();
    let mut finished = BTreeSet::new();
    let mut finished_before_checkpoint = BTreeSet::new();
    for line in &seen {
        let fields: Vec<&str> = line.split(' ').collect();
        match fields.as_slice() {
            ["P", seq, count] => {
                let (seq, count): (u64, u64) = (seq.parse().unwrap(), count.parse().unwrap());
                acknowledged.extend(seq..seq + count);
            }
            ["F", seq] => {
                finished.insert(seq.parse::<u64>().unwrap());
            }
            ["C"] => finished_before_checkpoint.clone_from(&finished),
            _ => {} // a line cut by the kill
        }
    }

    // Reopen two hours later, so that deferred messages are due and in-flight ones timed out.
    let now = SystemClock.now_ns();
    let clock = Arc::new(ManualClock::new(now + 2 * 3_600_000_000_000));
    let storage: Arc<dyn Storage> = Arc::new(FsStorage);
    let lock = DataDirLock::acquire(&*storage, data_dir).unwrap();
    let meta = MetaStore::open_sled(&data_dir.join(engine::META_DIR_NAME)).unwrap();
    drop(lock);
    let (engine, _) = Engine::open_with(data_dir, config(), storage, meta, clock).unwrap();
    engine.fire_timers();
    let channel = engine.get_topic("t").unwrap().get_channel("c").unwrap();
    let consumer = channel.subscribe(None).unwrap();
    consumer.set_ready(2500);
    let mut delivered = BTreeSet::new();
    while let Some(message) = consumer.next_message().unwrap() {
        let (c, seq) = parse(&message.body);
        assert_eq!(c, cycle, "a message of an earlier cycle, finished then, came back");
        assert!(
            !finished_before_checkpoint.contains(&seq),
            "cycle {cycle}: {seq} was finished before a completed checkpoint, yet redelivered"
        );
        delivered.insert(seq);
        consumer.finish(&message.id).unwrap();
    }
    let unfinished: BTreeSet<u64> = acknowledged.difference(&finished).copied().collect();
    let lost: Vec<_> = unfinished.difference(&delivered).collect();
    assert!(lost.is_empty(), "cycle {cycle}: acknowledged, unfinished, not redelivered: {lost:?}");
    drop(consumer);
    engine.close().unwrap();
    (acknowledged.len() as u64, unfinished.len() as u64)
}

fn main() {
    if let Ok(data_dir) = std::env::var(CHILD_ENV) {
        let cycle = std::env::var("ENGINE_KILL9_CYCLE").unwrap().parse().unwrap();
        child(Path::new(&data_dir), cycle);
        return;
    }
    let Some(seed) = common::self_test_seed("engine_kill9", "ENGINE_KILL9_SEED") else {
        return;
    };
    let exe = std::env::current_exe().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = seed | 1;
    let (mut acknowledged, mut unfinished) = (0, 0);
    for cycle in 0..CYCLES {
        let lines_before_kill = 20 + common::xorshift(&mut rng) % 3000;
        let (a, u) = run_cycle(&exe, tmp.path(), cycle, lines_before_kill);
        acknowledged += a;
        unfinished += u;
    }
    println!(
        "engine_kill9: {CYCLES} kill -9 cycles, {acknowledged} acknowledged messages, \
         {unfinished} unfinished at the kill, all delivered again"
    );
    println!("1 passed, 0 failed");
}
