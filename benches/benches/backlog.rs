//! Memory and reopen time of the engine with a large backlog: 10 million 100-byte messages on a
//! topic with two channels (issue 3's bar: under 64 MiB of memory, reopen under 1 s).
//!
//! Memory is measured two ways: the bytes the engine holds on the heap (a counting allocator),
//! and the process's resident set (VmRSS / VmHWM from /proc). File data is read with pread, not
//! mmap, so the page cache is not in either figure.
//!
//! ```sh
//! cargo bench -p nsq-benches --bench backlog             # 10 M messages
//! cargo bench -p nsq-benches --bench backlog -- 1000000  # another count
//! ```
//! It exits with status 1 if a bar is missed.

// The counting allocator needs `unsafe impl GlobalAlloc`; it only forwards to the system
// allocator and counts. Panics are the failure reports of this program.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use engine::log::LogConfig;
use engine::{Engine, EngineConfig, SyncPolicy};

struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static PEAK_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the counters are atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on unchanged.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let live = LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK_BYTES.fetch_max(live, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MIB: f64 = 1024.0 * 1024.0;
const BODY_BYTES: usize = 100;
const BATCH: usize = 1000;
const MEMORY_BAR_BYTES: usize = 64 * 1024 * 1024;
const REOPEN_BAR: Duration = Duration::from_secs(1);

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|line| line.starts_with(field))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

fn report(stage: &str, baseline: usize) -> usize {
    let live = LIVE_BYTES.load(Ordering::Relaxed).saturating_sub(baseline);
    println!(
        "{stage:<40} heap held by the engine {:>8.2} MiB   VmRSS {:>8.2} MiB   VmHWM {:>8.2} MiB",
        live as f64 / MIB,
        status_kib("VmRSS:") as f64 / 1024.0,
        status_kib("VmHWM:") as f64 / 1024.0,
    );
    live
}

/// Takes `count` messages from each channel and FINs them.
fn consume(engine: &Engine, count: usize) {
    let topic = engine.get_topic("backlog").unwrap();
    for channel in topic.channels() {
        let consumer = channel.subscribe(None).unwrap();
        consumer.set_ready(2500);
        let mut taken = 0;
        while taken < count {
            let Some(message) = consumer.next_message().unwrap() else { break };
            consumer.finish(&message.id).unwrap();
            taken += 1;
        }
    }
}

fn main() {
    let messages: usize = std::env::args()
        .skip(1)
        .find(|arg| !arg.starts_with('-'))
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(10_000_000);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let config = EngineConfig {
        mem_queue_size: 0,
        log: LogConfig { sync: SyncPolicy::default(), ..LogConfig::default() },
        ..EngineConfig::default()
    };
    println!("{messages} messages of {BODY_BYTES} bytes, 2 channels, in {}", dir.path().display());
    let baseline = LIVE_BYTES.load(Ordering::Relaxed);
    let mut worst = 0;

    let (engine, _) = Engine::open(dir.path(), config.clone()).unwrap();
    let topic = engine.topic("backlog").unwrap();
    topic.channel("first").unwrap();
    topic.channel("second").unwrap();
    let body = [b'm'; BODY_BYTES];
    let bodies: Vec<&[u8]> = vec![&body; BATCH];
    let started = Instant::now();
    for _ in 0..messages / BATCH {
        topic.publish(&bodies, Duration::ZERO).unwrap();
    }
    let publish_time = started.elapsed();
    drop(topic);
    println!(
        "published in {:.1} s ({:.2} M msg/s)",
        publish_time.as_secs_f64(),
        messages as f64 / publish_time.as_secs_f64() / 1e6
    );
    worst = worst.max(report("after publishing", baseline));
    consume(&engine, 100_000);
    worst = worst.max(report("after consuming 100k on each channel", baseline));
    engine.close().unwrap();
    drop(engine);
    report("closed", baseline);

    let started = Instant::now();
    let (engine, _) = Engine::open(dir.path(), config).unwrap();
    let reopen = started.elapsed();
    println!("reopen took {:.1} ms", reopen.as_secs_f64() * 1000.0);
    worst = worst.max(report("after reopen", baseline));
    let stats = engine.get_topic("backlog").unwrap().stats();
    for channel in &stats.channels {
        println!("  channel {}: depth {}", channel.name, channel.depth);
    }
    consume(&engine, 100_000);
    worst = worst.max(report("after consuming 100k more on each", baseline));
    engine.close().unwrap();
    drop(engine);
    println!(
        "peak heap of the whole program {:.2} MiB",
        PEAK_BYTES.load(Ordering::Relaxed) as f64 / MIB
    );

    let memory_ok = worst < MEMORY_BAR_BYTES;
    let reopen_ok = reopen < REOPEN_BAR;
    println!(
        "engine heap at most {:.2} MiB (bar 64 MiB): {}; reopen {:.1} ms (bar 1 s): {}",
        worst as f64 / MIB,
        if memory_ok { "met" } else { "MISSED" },
        reopen.as_secs_f64() * 1000.0,
        if reopen_ok { "met" } else { "MISSED" },
    );
    if !(memory_ok && reopen_ok) {
        std::process::exit(1);
    }
}
