//! Driving a torture run: N cycles of start nsqd, let clients work, SIGKILL at a random moment;
//! then a final drain, a clean shutdown and a clean restart, and the verdict.
//!
//! # A run
//!
//! 1. Cycle 1 creates the topic and every channel over HTTP before any client starts, so that
//!    each channel sees every message (a channel created later would start at the end of the log).
//! 2. Each cycle starts nsqd on the same data directory, starts the publishers and consumers of
//!    [`crate::workload`], waits a random delay drawn from the seeded RNG (usually within the
//!    cycle window, sometimes shorter than its minimum, to kill start-up and recovery too), checks
//!    that nsqd is still running (a process that died on its own is a finding), reads how many
//!    messages it holds in flight and deferred (the evidence that kills catch them), and SIGKILLs
//!    it.
//!    Clients end when their connections die; the cycle ends when all of them have.
//! 3. The drain starts nsqd once more with consumers that FIN everything, until every acknowledged
//!    message has had a FIN sent on every channel and nsqd's stats show every channel empty (depth,
//!    in flight and deferred all 0), or the drain timeout passes. Deferred messages need their
//!    time, so defers are kept short.
//! 4. nsqd is stopped with SIGTERM (it must exit 0), started again, and every channel must still be
//!    empty: a clean shutdown checkpoints every FIN. These two are reported as warnings.
//! 5. The ledger decides what was lost ([`crate::ledger`]) and the report is printed.
//!
//! The seed fixes the schedule (kill delays, every client's choices); what nsqd does in the
//! meantime depends on timing, so a seed reproduces a run only as far as timing allows.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use fastrand::Rng;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::http::{self, ChannelCounts};
use crate::ledger::{CycleStats, Ledger};
use crate::process::{Launcher, NsqdProcess};
use crate::report;
use crate::workload::{self, Clients, Mode, SharedLedger, TOPIC, Workload, lock};

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub cycles: u32,
    pub seed: u64,
    pub launcher: Launcher,
    /// The data directory; `None` for a fresh one under the system's temp dir, removed if the run
    /// passes. A given directory must be empty or absent, and is kept.
    pub data_path: Option<PathBuf>,
    pub publishers: u16,
    /// Consumers on each channel.
    pub consumers: usize,
    pub channels: usize,
    /// The window of the kill delay, ms after nsqd listens.
    pub cycle_ms: (u64, u64),
    /// nsqd's flags (besides addresses and data path).
    pub nsqd_flags: Vec<String>,
    pub drain_timeout: Duration,
    pub workload: Workload,
}

/// The outcome of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub seed: u64,
    pub run_id: String,
    pub nsqd_flags: Vec<String>,
    pub data_path: String,
    pub kills: u32,
    pub cycles: Vec<CycleStats>,
    pub drain: CycleStats,
    pub totals: CycleStats,
    /// The drain ended with every channel empty (else it timed out).
    pub drained: bool,
    /// Suspicious things that are not failures: a clean shutdown that did not exit 0, a clean
    /// restart with messages left, a drain that timed out, error frames, early deliveries.
    pub warnings: Vec<String>,
    /// The first problems seen, described.
    pub samples: Vec<String>,
    pub elapsed_ms: u64,
    /// lost + corrupt + unexpected == 0.
    pub passed: bool,
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Runs the torture program; `Err` when the harness itself could not go on (nsqd would not start,
/// or died on its own).
pub fn run(config: &Config) -> anyhow::Result<Report> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let (data, temporary) = data_dir(config)?;
    let mut rng = Rng::with_seed(config.seed);
    let started = std::time::Instant::now();
    let salt = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    let run_id = rng.u64(..) ^ salt;
    let ledger: SharedLedger = Arc::new(Mutex::new(Ledger::new(run_id, config.channels)));
    println!(
        "nsq-torture: seed {}, {} cycles, data {}, nsqd flags: {}",
        config.seed,
        config.cycles,
        data.display(),
        config.nsqd_flags.join(" ")
    );
    let outcome = runtime.block_on(async {
        for cycle in 1..=config.cycles {
            if cycle > 1 {
                lock(&ledger).begin_cycle();
            }
            torture_cycle(config, &ledger, &mut rng, &data).await.with_context(|| {
                format!("cycle {cycle} (seed {}, data kept in {})", config.seed, data.display())
            })?;
            let stats = lock(&ledger).current().clone();
            println!("{}", report::progress_line(&stats, config.cycles));
            let _ = std::io::stdout().flush();
        }
        lock(&ledger).begin_cycle();
        drain(config, &ledger, &mut rng, &data)
            .await
            .with_context(|| format!("final drain (data kept in {})", data.display()))
    })?;
    // Taken out rather than unwrapped: a client aborted after a cycle may not be dropped yet.
    let findings = std::mem::replace(&mut *lock(&ledger), Ledger::new(run_id, 1)).finish();
    let mut cycles = findings.cycles;
    let drain_stats = cycles.pop().unwrap_or_default();
    let mut totals = CycleStats::default();
    cycles.iter().chain([&drain_stats]).for_each(|c| totals.add(c));
    let kills = u32::try_from(cycles.iter().filter(|c| c.kill_after_ms.is_some()).count())
        .unwrap_or(u32::MAX);
    let passed = totals.failures() == 0;
    let mut warnings = outcome.warnings;
    for (count, what) in [
        (totals.pub_errors, "publishes refused with an error frame"),
        (
            totals.consumer_errors,
            "errors on consumer connections (error frames, or closed by nsqd)",
        ),
        (totals.early, "DPUB deliveries before their time"),
    ] {
        if count > 0 {
            warnings.push(format!("{count} {what}: see the problems listed"));
        }
    }
    if passed && temporary {
        let _ = std::fs::remove_dir_all(&data);
    }
    Ok(Report {
        seed: config.seed,
        run_id: format!("{run_id:016x}"),
        nsqd_flags: config.nsqd_flags.clone(),
        data_path: data.display().to_string(),
        kills,
        cycles,
        drain: drain_stats,
        totals,
        drained: outcome.drained,
        warnings,
        samples: findings.samples,
        elapsed_ms: millis(started.elapsed()),
        passed,
    })
}

/// The data directory, and whether it is a temporary one.
fn data_dir(config: &Config) -> anyhow::Result<(PathBuf, bool)> {
    let (path, temporary) = match &config.data_path {
        Some(path) => (path.clone(), false),
        None => {
            let name = format!("nsq-torture-{}-{}", std::process::id(), config.seed);
            (std::env::temp_dir().join(name), true)
        }
    };
    std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    if std::fs::read_dir(&path)?.next().is_some() {
        bail!("data directory {} is not empty: a run needs a fresh one", path.display());
    }
    Ok((path, temporary))
}

async fn start_nsqd(config: &Config, data: &Path) -> anyhow::Result<NsqdProcess> {
    let launcher = config.launcher.clone();
    let (data, flags) = (data.to_path_buf(), config.nsqd_flags.clone());
    tokio::task::spawn_blocking(move || launcher.start(&data, &flags)).await?
}

/// Spawns `config.consumers` consumers on every channel.
fn spawn_consumers(
    tasks: &mut JoinSet<()>,
    clients: &Clients,
    config: &Config,
    mode: Mode,
    rng: &mut Rng,
) {
    for channel in 0..config.channels {
        for _ in 0..config.consumers {
            let seed = rng.u64(..);
            tasks.spawn(workload::consume(clients.clone(), channel, mode, Rng::with_seed(seed)));
        }
    }
}

/// Waits for the clients to end after nsqd is gone; they must, since their connections died.
async fn reap(tasks: &mut JoinSet<()>, ledger: &SharedLedger) {
    let all = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), all).await.is_err() {
        tasks.abort_all();
        let mut ledger = lock(ledger);
        let cycle = ledger.current().cycle;
        ledger.note(format!("cycle {cycle}: clients still running 10 s after nsqd died; aborted"));
    }
}

async fn torture_cycle(
    config: &Config,
    ledger: &SharedLedger,
    rng: &mut Rng,
    data: &Path,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut nsqd = start_nsqd(config, data).await?;
    let listening = Instant::now();
    if lock(ledger).current().cycle == 1 {
        http::post(nsqd.http(), &format!("/topic/create?topic={TOPIC}")).await?;
        for channel in 0..config.channels {
            let name = workload::channel_name(channel);
            http::post(nsqd.http(), &format!("/channel/create?topic={TOPIC}&channel={name}"))
                .await?;
        }
    }
    let clients = Clients::new(nsqd.tcp(), ledger, &config.workload);
    let mut tasks = JoinSet::new();
    for producer in 0..config.publishers {
        let seed = rng.u64(..);
        tasks.spawn(workload::publish(clients.clone(), producer, Rng::with_seed(seed)));
    }
    spawn_consumers(&mut tasks, &clients, config, Mode::Chaos, rng);
    let (min, max) = config.cycle_ms;
    // One kill in ten comes early, into start-up and recovery.
    let delay = if rng.u32(0..10) == 0 { rng.u64(0..=min) } else { rng.u64(min..=max.max(min)) };
    tokio::time::sleep_until(listening + Duration::from_millis(delay)).await;
    if !nsqd.is_running() {
        bail!("nsqd exited on its own; its last lines:\n{}", nsqd.last_log_lines());
    }
    // What nsqd holds at the kill: evidence that kills catch messages in flight and deferred.
    let held =
        tokio::time::timeout(Duration::from_secs(1), http::channel_counts(nsqd.http(), TOPIC));
    let (in_flight, deferred) = match held.await {
        Ok(Ok(counts)) => counts.iter().fold((0, 0), |(i, d), c| (i + c.in_flight, d + c.deferred)),
        _ => (0, 0),
    };
    clients.stop.store(true, Ordering::SeqCst);
    let kill_after = listening.elapsed();
    tokio::task::spawn_blocking(move || nsqd.kill9()).await??;
    reap(&mut tasks, ledger).await;
    let mut ledger = lock(ledger);
    let stats = ledger.current();
    stats.kill_after_ms = Some(millis(kill_after));
    stats.duration_ms = millis(started.elapsed());
    stats.in_flight_at_kill = in_flight;
    stats.deferred_at_kill = deferred;
    Ok(())
}

/// What the drain found besides the ledger's counts.
struct DrainOutcome {
    drained: bool,
    warnings: Vec<String>,
}

fn all_empty(counts: &[ChannelCounts], channels: usize) -> bool {
    (0..channels).all(|c| {
        let name = workload::channel_name(c);
        counts.iter().any(|counts| counts.name == name && counts.is_empty())
    })
}

async fn drain(
    config: &Config,
    ledger: &SharedLedger,
    rng: &mut Rng,
    data: &Path,
) -> anyhow::Result<DrainOutcome> {
    let started = Instant::now();
    let mut warnings = Vec::new();
    let nsqd = start_nsqd(config, data).await?;
    let clients = Clients::new(nsqd.tcp(), ledger, &config.workload);
    let mut tasks = JoinSet::new();
    spawn_consumers(&mut tasks, &clients, config, Mode::Drain, rng);
    let deadline = started + config.drain_timeout;
    let drained = loop {
        if lock(ledger).outstanding() == 0
            && all_empty(&http::channel_counts(nsqd.http(), TOPIC).await?, config.channels)
        {
            break true;
        }
        if Instant::now() >= deadline {
            let outstanding = lock(ledger).outstanding();
            let counts = http::channel_counts(nsqd.http(), TOPIC).await.unwrap_or_default();
            warnings.push(format!(
                "drain timed out after {:?}: {outstanding} (acknowledged message, channel) pairs \
                 without a FIN; nsqd's channels: {counts:?}",
                config.drain_timeout
            ));
            break false;
        }
        // Polling for a condition, bounded by the deadline.
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    clients.stop.store(true, Ordering::SeqCst);
    let status = tokio::task::spawn_blocking(move || nsqd.terminate()).await??;
    if !status.success() {
        warnings.push(format!("nsqd exited with {status} on SIGTERM after the drain"));
    }
    reap(&mut tasks, ledger).await;
    lock(ledger).current().duration_ms = millis(started.elapsed());
    if drained {
        let nsqd = start_nsqd(config, data).await?;
        let counts = http::channel_counts(nsqd.http(), TOPIC).await?;
        if !all_empty(&counts, config.channels) {
            warnings.push(format!(
                "after a clean shutdown and restart, channels are not empty: {counts:?}"
            ));
        }
        let status = tokio::task::spawn_blocking(move || nsqd.terminate()).await??;
        if !status.success() {
            warnings.push(format!("nsqd exited with {status} on SIGTERM after the clean restart"));
        }
    }
    Ok(DrainOutcome { drained, warnings })
}
