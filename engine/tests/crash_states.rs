//! Crash-state enumeration: small workloads on the simulated storage, crashed in every state
//! their storage operations allow, each reopened and checked against the durability contract
//! (DESIGN.md §3.4; the figures are in docs/RELIABILITY.md).
//!
//! Method. A workload is a seeded list of engine calls: topics and channels created, messages
//! published (some deferred), taken, FINed, REQed (some with a delay), TOUCHed, timers fired,
//! checkpoints. Every file operation and every meta-store write counts as one operation in a
//! single sequence (a meta write asks the simulator for its place, `SimStorage::external_op`).
//! For each crash point `k` (after 0, 1, …, all operations) the workload runs afresh with every
//! operation after the `k`-th failing, as if the process died there; the calls that returned
//! `Ok` before are what was acknowledged. Then every crash state of that point is built from a
//! copy of it:
//! - each file keeps any prefix of its unsynced writes, the first one dropped torn at 1 byte,
//!   half, or all but one byte (a power loss); a process crash keeps them all;
//! - a directory entry created, renamed or removed is kept only if its directory was synced
//!   (the simulator splits each such call into the change and the directory sync);
//! - the meta store keeps any prefix of the batches applied since its last flush (sled recovers
//!   a prefix of its writes).
//!
//! Checked in every state: the engine opens; on every channel whose creation was acknowledged,
//! every acknowledged message not FINed there is delivered again, deferred ones included; no
//! body is corrupt, none was never published, none comes twice in one drain. Under the lazy
//! fsync policy a power loss may lose the unsynced window, so there the check is: everything
//! acknowledged before the last acknowledged checkpoint survives, and what is lost is the newest
//! part of the topic (a suffix of the publish order), never a hole.
//!
//! `NSQ_CRASH_WORKLOADS` sets the workloads per configuration (CI runs a few; the figure in
//! docs/RELIABILITY.md came from a long run, with the command there) and `NSQ_CRASH_SEED` the
//! first seed.

// A failed unwrap in a test is a failed assertion; the lint guards library code against input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::cast_possible_truncation)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use engine::clock::{Clock, ManualClock};
use engine::meta::{MemoryMeta, MetaStore};
use engine::storage::{CrashKeep, SimStorage, UnsyncedOp};
use engine::{Consumer, Delivery, Engine, EngineConfig, LogConfig, SyncPolicy};

const DATA: &str = "/data";
const TOPICS: [&str; 2] = ["t0", "t1"];
const CHANNELS: [&str; 2] = ["a", "b"];
/// Crash states tried per crash point at most; past it a seeded sample (all-kept and
/// nothing-kept always among them).
const STATES_PER_POINT_MAX: usize = 64;

#[derive(Debug, Clone, Copy)]
enum Call {
    /// Creates topic `.0` and its channels (the first publish to a topic also creates it).
    Setup(usize),
    Publish {
        topic: usize,
        count: usize,
        defer_ms: u64,
    },
    Take {
        topic: usize,
        channel: usize,
    },
    Finish {
        topic: usize,
        channel: usize,
        pick: usize,
    },
    Requeue {
        topic: usize,
        channel: usize,
        pick: usize,
        delay_ms: u64,
    },
    Touch {
        topic: usize,
        channel: usize,
        pick: usize,
    },
    Advance {
        ms: u64,
    },
    Checkpoint,
}

fn workload(seed: u64) -> Vec<Call> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut calls = vec![Call::Setup(0)];
    if rng.bool() {
        calls.push(Call::Setup(1));
    }
    let length = rng.usize(12..28);
    for _ in 0..length {
        let topic = rng.usize(0..TOPICS.len());
        let channel = rng.usize(0..CHANNELS.len());
        let pick = rng.usize(0..8);
        calls.push(match rng.u8(0..20) {
            0..=5 => Call::Publish {
                topic,
                count: rng.usize(1..4),
                defer_ms: if rng.u8(0..5) == 0 { rng.u64(1..5_000) } else { 0 },
            },
            6..=9 => Call::Take { topic, channel },
            10..=12 => Call::Finish { topic, channel, pick },
            13 => Call::Requeue { topic, channel, pick, delay_ms: rng.u64(0..3) * 2_000 },
            14 => Call::Touch { topic, channel, pick },
            15..=16 => Call::Advance { ms: rng.u64(1..90_000) },
            _ => Call::Checkpoint,
        });
    }
    calls
}

/// Body of the `n`-th message of a workload, with a checksum of its own.
fn body(seed: u64, n: usize) -> Vec<u8> {
    let text = format!("w{seed}-m{n}");
    format!("{text}:{:08x}", crc32c::crc32c(text.as_bytes())).into_bytes()
}

fn body_is_intact(body: &[u8]) -> bool {
    let Some((text, crc)) = std::str::from_utf8(body).ok().and_then(|b| b.rsplit_once(':')) else {
        return false;
    };
    u32::from_str_radix(crc, 16).is_ok_and(|c| c == crc32c::crc32c(text.as_bytes()))
}

/// What the workload was told: the contract is checked against this.
#[derive(Debug, Default)]
struct Ledger {
    /// Every body whose publish was attempted, by topic.
    attempted: BTreeMap<usize, BTreeSet<Vec<u8>>>,
    /// Bodies acknowledged, by topic, in publish order.
    acked: BTreeMap<usize, Vec<Vec<u8>>>,
    /// Channels whose creation was acknowledged.
    channels: BTreeSet<(usize, usize)>,
    /// FINs that returned Ok, by (topic, channel).
    finished: BTreeMap<(usize, usize), BTreeSet<Vec<u8>>>,
    /// How many of each topic's acknowledged messages preceded the last acknowledged checkpoint.
    checkpointed: BTreeMap<usize, usize>,
}

struct Run {
    storage: SimStorage,
    meta: Arc<MemoryMeta>,
    clock: Arc<ManualClock>,
    ledger: Ledger,
}

fn open(
    config: &EngineConfig,
    storage: &SimStorage,
    meta: &Arc<MemoryMeta>,
    clock: &Arc<ManualClock>,
) -> Result<Engine, engine::EngineError> {
    let clock: Arc<dyn Clock> = clock.clone();
    Engine::open_with(
        DATA,
        config.clone(),
        Arc::new(storage.clone()),
        MetaStore::in_memory(Arc::clone(meta)),
        clock,
    )
    .map(|(engine, _report)| engine)
}

/// Runs `calls` with every operation after the `halt_after`-th failing (`None`: no halt).
fn run(seed: u64, calls: &[Call], config: &EngineConfig, halt_after: Option<u64>) -> Run {
    let storage = SimStorage::new();
    let meta = Arc::new(MemoryMeta::new());
    let hooked = storage.clone();
    meta.set_io_hook(Some(Arc::new(move || hooked.external_op())));
    if let Some(n) = halt_after {
        storage.halt_after(n);
    }
    let clock = Arc::new(ManualClock::new(1_700_000_000_000_000_000));
    let mut ledger = Ledger::default();
    if let Ok(engine) = open(config, &storage, &meta, &clock) {
        drive(seed, calls, &engine, &clock, &mut ledger);
        engine.halt();
    }
    meta.set_io_hook(None);
    Run { storage, meta, clock, ledger }
}

fn drive(seed: u64, calls: &[Call], engine: &Engine, clock: &ManualClock, ledger: &mut Ledger) {
    let mut consumers: HashMap<(usize, usize), (Consumer, Vec<Delivery>)> = HashMap::new();
    let mut published = 0;
    for call in calls {
        match *call {
            Call::Setup(t) => {
                let Ok(topic) = engine.topic(TOPICS[t]) else { continue };
                for (c, name) in CHANNELS.iter().enumerate() {
                    let Ok(channel) = topic.channel(name) else { continue };
                    ledger.channels.insert((t, c));
                    if let Ok(consumer) = channel.subscribe(None) {
                        consumer.set_ready(3);
                        consumers.insert((t, c), (consumer, Vec::new()));
                    }
                }
            }
            Call::Publish { topic: t, count, defer_ms } => {
                let bodies: Vec<Vec<u8>> =
                    (published..published + count).map(|n| body(seed, n)).collect();
                published += count;
                ledger.attempted.entry(t).or_default().extend(bodies.iter().cloned());
                let Ok(topic) = engine.topic(TOPICS[t]) else { continue };
                let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
                if topic.publish(&refs, Duration::from_millis(defer_ms)).is_ok() {
                    ledger.acked.entry(t).or_default().extend(bodies);
                }
            }
            Call::Take { topic, channel } => {
                if let Some((consumer, in_flight)) = consumers.get_mut(&(topic, channel))
                    && let Ok(Some(delivery)) = consumer.next_message()
                {
                    in_flight.push(delivery);
                }
            }
            Call::Finish { topic, channel, pick } => {
                if let Some((consumer, in_flight)) = consumers.get_mut(&(topic, channel))
                    && !in_flight.is_empty()
                {
                    let delivery = in_flight.remove(pick % in_flight.len());
                    if consumer.finish(&delivery.id).is_ok() {
                        ledger
                            .finished
                            .entry((topic, channel))
                            .or_default()
                            .insert(delivery.body.to_vec());
                    }
                }
            }
            Call::Requeue { topic, channel, pick, delay_ms } => {
                if let Some((consumer, in_flight)) = consumers.get_mut(&(topic, channel))
                    && !in_flight.is_empty()
                {
                    let delivery = in_flight.remove(pick % in_flight.len());
                    let _ = consumer.requeue(&delivery.id, Duration::from_millis(delay_ms));
                }
            }
            Call::Touch { topic, channel, pick } => {
                if let Some((consumer, in_flight)) = consumers.get(&(topic, channel))
                    && !in_flight.is_empty()
                {
                    let _ = consumer.touch(&in_flight[pick % in_flight.len()].id);
                }
            }
            Call::Advance { ms } => {
                clock.advance(Duration::from_millis(ms));
                // Timed-out messages go back to their channels (the consumer's copy is stale).
                engine.fire_timers();
                for (_, in_flight) in consumers.values_mut() {
                    in_flight.retain(|_| false);
                }
            }
            Call::Checkpoint => {
                if engine.checkpoint().is_ok() {
                    for (t, acked) in &ledger.acked {
                        ledger.checkpointed.insert(*t, acked.len());
                    }
                }
            }
        }
    }
}

/// The ways one file's unsynced operations may survive: every prefix, the next write torn.
fn file_choices(ops: &[UnsyncedOp], power_loss: bool) -> Vec<CrashKeep> {
    if !power_loss {
        return vec![CrashKeep { ops: ops.len(), torn_bytes: 0 }];
    }
    let mut choices = Vec::new();
    for (kept, op) in ops.iter().enumerate() {
        choices.push(CrashKeep { ops: kept, torn_bytes: 0 });
        if let UnsyncedOp::Write { bytes, .. } = op {
            let len = bytes.len();
            let torn: BTreeSet<usize> = [1, len / 2, len.saturating_sub(1)]
                .into_iter()
                .filter(|&t| t > 0 && t < len)
                .collect();
            choices.extend(torn.into_iter().map(|torn_bytes| CrashKeep { ops: kept, torn_bytes }));
        }
    }
    choices.push(CrashKeep { ops: ops.len(), torn_bytes: 0 });
    choices
}

/// One crash state: what each file keeps, and how many meta batches.
#[derive(Debug, Clone)]
struct CrashState {
    files: BTreeMap<PathBuf, CrashKeep>,
    meta_batches: usize,
}

fn crash_states(run: &Run, power_loss: bool, rng: &mut fastrand::Rng) -> Vec<CrashState> {
    let files: Vec<(PathBuf, Vec<CrashKeep>)> = run
        .storage
        .unsynced_ops()
        .into_iter()
        .map(|(path, ops)| {
            let choices = file_choices(&ops, power_loss);
            (path, choices)
        })
        .collect();
    let meta_choices = run.meta.pending_batches() + 1;
    let total = files.iter().map(|(_, c)| c.len()).product::<usize>() * meta_choices;
    let state_at = |mut index: usize| {
        let meta_batches = index % meta_choices;
        index /= meta_choices;
        let mut chosen = BTreeMap::new();
        for (path, choices) in &files {
            chosen.insert(path.clone(), choices[index % choices.len()]);
            index /= choices.len();
        }
        CrashState { files: chosen, meta_batches }
    };
    if total <= STATES_PER_POINT_MAX {
        return (0..total).map(state_at).collect();
    }
    let mut picks: BTreeSet<usize> = [0, total - 1].into();
    while picks.len() < STATES_PER_POINT_MAX {
        picks.insert(rng.usize(0..total));
    }
    picks.into_iter().map(state_at).collect()
}

#[derive(Debug, Default)]
struct Tally {
    workloads: u64,
    crash_points: u64,
    states: u64,
    /// Acknowledged, unfinished messages found delivered again, summed over the states.
    redelivered_checked: u64,
    violations: Vec<String>,
}

/// Builds `state` from a copy of the run, reopens, drains every channel and checks the contract.
fn check_state(
    run: &Run,
    config: &EngineConfig,
    lazy: bool,
    state: &CrashState,
    redelivered_checked: &mut u64,
) -> Vec<String> {
    let storage = run.storage.snapshot();
    let meta = Arc::new(run.meta.snapshot());
    storage.crash_with(|path, _| state.files.get(path).copied().unwrap_or_default());
    meta.crash_keeping(state.meta_batches);
    let clock = Arc::new(ManualClock::new(run.clock.now_ns()));
    let engine = match open(config, &storage, &meta, &clock) {
        Ok(engine) => engine,
        Err(error) => return vec![format!("the engine did not open: {error}")],
    };
    let mut problems = Vec::new();
    for (t, c) in &run.ledger.channels {
        let Some(channel) =
            engine.get_topic(TOPICS[*t]).and_then(|topic| topic.get_channel(CHANNELS[*c]))
        else {
            problems
                .push(format!("channel {}/{} was created and is gone", TOPICS[*t], CHANNELS[*c]));
            continue;
        };
        let delivered = drain(&engine, &clock, &channel, &mut problems);
        let attempted = run.ledger.attempted.get(t).cloned().unwrap_or_default();
        for body in &delivered {
            if !body_is_intact(body) {
                problems.push(format!("{}/{}: corrupt body {body:?}", TOPICS[*t], CHANNELS[*c]));
            } else if !attempted.contains(body) {
                problems.push(format!("{}/{}: unexpected body {body:?}", TOPICS[*t], CHANNELS[*c]));
            }
        }
        let acked = run.ledger.acked.get(t).map_or(&[][..], Vec::as_slice);
        let finished = run.ledger.finished.get(&(*t, *c)).cloned().unwrap_or_default();
        let missing: Vec<usize> = acked
            .iter()
            .enumerate()
            .filter(|(_, b)| !finished.contains(*b) && !delivered.contains(*b))
            .map(|(i, _)| i)
            .collect();
        *redelivered_checked +=
            acked.iter().filter(|b| !finished.contains(*b) && delivered.contains(*b)).count()
                as u64;
        if missing.is_empty() {
            continue;
        }
        if !lazy {
            problems.push(format!(
                "{}/{}: lost acknowledged messages {missing:?}",
                TOPICS[*t], CHANNELS[*c]
            ));
            continue;
        }
        // A power loss under the lazy policy may lose the unsynced tail, nothing else.
        let checkpointed = run.ledger.checkpointed.get(t).copied().unwrap_or(0);
        let first_lost = missing[0];
        let tail_gone = acked[first_lost..].iter().all(|b| !delivered.contains(b));
        if first_lost < checkpointed || !tail_gone {
            problems.push(format!(
                "{}/{}: lost {missing:?}, not only the unsynced tail (checkpointed {checkpointed})",
                TOPICS[*t], CHANNELS[*c]
            ));
        }
    }
    engine.halt();
    problems
}

/// Every message the channel will deliver, FINed as it comes; deferred ones by moving time.
fn drain(
    engine: &Engine,
    clock: &ManualClock,
    channel: &Arc<engine::Channel>,
    problems: &mut Vec<String>,
) -> BTreeSet<Vec<u8>> {
    let consumer = channel.subscribe(None).unwrap();
    consumer.set_ready(1_000);
    let mut delivered = BTreeSet::new();
    let mut idle_rounds = 0;
    for _round in 0..100 {
        let mut got = false;
        loop {
            match consumer.next_message() {
                Ok(Some(delivery)) => {
                    got = true;
                    if !delivered.insert(delivery.body.to_vec()) {
                        problems.push(format!("delivered twice in one drain: {:?}", delivery.body));
                    }
                    consumer.finish(&delivery.id).unwrap();
                }
                Ok(None) => break,
                Err(error) => {
                    problems.push(format!("delivery failed: {error}"));
                    return delivered;
                }
            }
        }
        if got {
            idle_rounds = 0;
            continue;
        }
        idle_rounds += 1;
        if idle_rounds == 2 {
            return delivered;
        }
        // Past every defer, REQ delay and message timeout the workload can have set.
        clock.advance(Duration::from_secs(3_600));
        engine.fire_timers();
    }
    problems.push("the drain did not end".into());
    delivered
}

fn enumerate(name: &str, config: &EngineConfig, power_loss: bool, lazy: bool) -> Tally {
    let workloads: u64 =
        std::env::var("NSQ_CRASH_WORKLOADS").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
    let first_seed: u64 =
        std::env::var("NSQ_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let mut tally = Tally::default();
    for seed in first_seed..first_seed + workloads {
        let calls = workload(seed);
        let total_ops = run(seed, &calls, config, None).storage.ops();
        let mut rng = fastrand::Rng::with_seed(seed);
        tally.workloads += 1;
        for k in 0..=total_ops {
            let halted = run(seed, &calls, config, Some(k));
            tally.crash_points += 1;
            for state in crash_states(&halted, power_loss, &mut rng) {
                tally.states += 1;
                for problem in
                    check_state(&halted, config, lazy, &state, &mut tally.redelivered_checked)
                {
                    if tally.violations.len() < 20 {
                        tally.violations.push(format!(
                            "{name}: seed {seed}, crash after op {k}, state {state:?}: {problem}"
                        ));
                    }
                }
            }
        }
    }
    println!(
        "crash states [{name}]: {} workloads, {} crash points, {} states, {} acknowledged \
         messages found again, {} violations",
        tally.workloads,
        tally.crash_points,
        tally.states,
        tally.redelivered_checked,
        tally.violations.len()
    );
    tally
}

fn config(sync: SyncPolicy) -> EngineConfig {
    EngineConfig {
        mem_queue_size: 0,
        // Small segments, so that workloads roll and retire them.
        log: LogConfig { max_bytes_per_file: 512, sync, ..LogConfig::default() },
        ..EngineConfig::default()
    }
}

#[test]
fn the_enumeration_finds_the_losses_a_weaker_policy_allows() {
    // Goal: show the checker has teeth. Method: hold the lazy policy to the fsync-before-OK
    // contract under power loss; acknowledged messages in the unsynced window must be reported.
    let lazy = SyncPolicy::Every { records: 3, interval: Duration::from_secs(3_600) };
    let tally = enumerate("sync-every=3 held to sync-every=1", &config(lazy), true, false);
    assert!(
        tally.violations.iter().any(|v| v.contains("lost acknowledged messages")),
        "no loss reported: {:?}",
        tally.violations
    );
}

fn assert_clean(tally: &Tally) {
    assert!(tally.states > 0, "no crash state was checked");
    assert!(tally.violations.is_empty(), "violations:\n{}", tally.violations.join("\n"));
}

#[test]
fn fsync_before_ok_loses_nothing_acknowledged_in_any_power_loss_state() {
    let tally = enumerate("sync-every=1, power loss", &config(SyncPolicy::Always), true, false);
    assert_clean(&tally);
}

#[test]
fn lazy_fsync_loses_nothing_acknowledged_when_only_the_process_dies() {
    let lazy = SyncPolicy::Every { records: 3, interval: Duration::from_secs(3_600) };
    let tally = enumerate("sync-every=3, kill -9", &config(lazy), false, false);
    assert_clean(&tally);
}

#[test]
fn lazy_fsync_loses_at_most_the_unsynced_tail_in_a_power_loss() {
    let lazy = SyncPolicy::Every { records: 3, interval: Duration::from_secs(3_600) };
    let tally = enumerate("sync-every=3, power loss", &config(lazy), true, true);
    assert_clean(&tally);
}
