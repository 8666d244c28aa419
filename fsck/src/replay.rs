//! `nsq-fsck replay SOURCE... --topic T`: republish archived (and live) messages of a topic.
//!
//! - **Sources** (read-only, never through an engine, never locked): an archive path (nsqd's
//!   `--archive-path`), a topic's archive directory, and/or a data directory's live segments
//!   (see [`source`]). Several sources are read together in offset order, and each offset is
//!   replayed at most once, so `replay ARCHIVE DATA_DIR` republishes a topic's whole history.
//! - **Filters**: `--from-offset` (inclusive) and `--to-offset` (exclusive) on the record's
//!   offset; `--since` (inclusive) and `--until` (exclusive) on its publish time, RFC 3339 in
//!   UTC. Files wholly outside the offset range are not read.
//! - **Destination**, exactly one: `--nsqd-tcp-address` (NSQ TCP protocol V2, MPUB batches cut
//!   at `--batch-size` messages and `--max-body-size` bytes), `--into DATA_DIR` (the engine
//!   opened on it; refused while an nsqd holds it), or `--dry-run` (count only). Messages are
//!   published as new ones: new offsets, new publish times, deliver-at times not carried over.
//! - `--rate N` paces to N messages per second ([`pace`]); 0 is unlimited.
//! - **Damage** is reported, not fatal: a damaged range inside a segment or archive is skipped
//!   (the records after it are replayed) and a corrupt archive is skipped whole; each is listed
//!   with its file and position. Exit status: 0 when nothing was damaged, 1 when damage was met
//!   (everything readable was replayed), 8 on an error (the replay stopped; batches acknowledged
//!   before it stay published, so replaying again may duplicate them).
//! - A progress bar (bytes of segments read) is drawn on standard error when it is a terminal.

mod nsqd;
mod pace;
mod replayer;
mod sink;
mod source;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::UNIX_EPOCH;

use anyhow::bail;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use pace::{Pacer, SystemPaceClock};
use replayer::{Filter, Replayer, render};
use sink::{DryRun, IntoDataDir, Sink};

/// Arguments of `replay`.
#[derive(Debug, clap::Args)]
#[command(group(
    clap::ArgGroup::new("destination")
        .required(true)
        .args(["nsqd_tcp_address", "into", "dry_run"])
))]
pub(crate) struct ReplayArgs {
    /// Where to read: an archive path (nsqd's --archive-path), a topic's archive directory,
    /// and/or a data directory (its live segments). Several are read in offset order, each
    /// message once.
    #[arg(required = true, value_name = "ARCHIVE_OR_DATA_DIR")]
    sources: Vec<PathBuf>,
    /// The topic to replay, and to publish to.
    #[arg(long)]
    topic: String,
    /// Replay records from this offset on (inclusive).
    #[arg(long)]
    from_offset: Option<u64>,
    /// Replay records below this offset (exclusive).
    #[arg(long)]
    to_offset: Option<u64>,
    /// Replay messages published at or after this time (RFC 3339, UTC: 2026-11-21T10:00:00Z).
    #[arg(long, value_parser = parse_time_ns)]
    since: Option<i64>,
    /// Replay messages published before this time (exclusive; RFC 3339, UTC).
    #[arg(long, value_parser = parse_time_ns)]
    until: Option<i64>,
    /// Messages per second at most; 0 is unlimited.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Messages per batch (MPUB) at most.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    batch_size: u64,
    /// The destination nsqd's --max-body-size: an MPUB is cut below it.
    #[arg(long, default_value_t = 5_242_880, value_parser = clap::value_parser!(u64).range(16..=i32::MAX as u64))]
    max_body_size: u64,
    /// Republish to the nsqd at HOST:PORT over TCP.
    #[arg(long, value_name = "HOST:PORT")]
    nsqd_tcp_address: Option<String>,
    /// Publish into the data directory DATA_DIR (created if needed; not while an nsqd runs on it).
    #[arg(long, value_name = "DATA_DIR")]
    into: Option<PathBuf>,
    /// Read and count only; publish nothing.
    #[arg(long)]
    dry_run: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

/// An RFC 3339 time (UTC) as nanoseconds since the Unix epoch.
fn parse_time_ns(text: &str) -> Result<i64, String> {
    let time = humantime::parse_rfc3339_weak(text)
        .map_err(|e| format!("{e}: use RFC 3339 in UTC, like 2026-11-21T10:00:00Z"))?;
    let since_epoch = time.duration_since(UNIX_EPOCH).map_err(|_| "before 1970".to_owned())?;
    i64::try_from(since_epoch.as_nanos()).map_err(|_| "after 2262".to_owned())
}

pub(crate) fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    if !engine::names::is_valid_name(&args.topic) {
        bail!("invalid topic name {:?}", args.topic);
    }
    let filter = Filter {
        from_offset: args.from_offset.unwrap_or(0),
        to_offset: args.to_offset.unwrap_or(u64::MAX),
        since_ns: args.since.unwrap_or(i64::MIN),
        until_ns: args.until.unwrap_or(i64::MAX),
    };
    if filter.from_offset >= filter.to_offset {
        bail!("--from-offset must be below --to-offset (which is exclusive)");
    }
    if filter.since_ns >= filter.until_ns {
        bail!("--since must be before --until (which is exclusive)");
    }
    let units = source::collect_units(&args.sources, &args.topic)?;
    if let Some(into) = &args.into
        && let Ok(into) = into.canonicalize()
        && source::data_dirs(&args.sources)
            .iter()
            .any(|d| d.canonicalize().ok() == Some(into.clone()))
    {
        bail!(
            "--into {} is also a source: a data directory cannot be replayed into itself",
            into.display()
        );
    }
    let (sink, rate): (Box<dyn Sink>, u64) = match (&args.nsqd_tcp_address, &args.into) {
        _ if args.dry_run => (Box::new(DryRun), 0),
        (Some(address), _) => (
            Box::new(nsqd::NsqdSink::connect(address, &args.topic, args.max_body_size)?),
            args.rate,
        ),
        (None, Some(dir)) => (Box::new(IntoDataDir::open(dir, &args.topic)?), args.rate),
        (None, None) => bail!("give one of --nsqd-tcp-address, --into or --dry-run"),
    };
    let total_bytes = units.iter().map(|unit| unit.len_bytes).sum();
    let batch_records = usize::try_from(args.batch_size).unwrap_or(usize::MAX);
    let pacer = Pacer::new(rate, SystemPaceClock::new());
    let mut replayer =
        Replayer::new(filter, sink, pacer, batch_records, progress_bar(total_bytes, args.quiet));
    for unit in &units {
        replayer.unit(unit)?;
    }
    let (report, destination) = replayer.finish()?;
    print!("{}", render(&report, &destination));
    Ok(if report.damage_count == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// A bar over the bytes of the segments to read, drawn only when standard error is a terminal.
fn progress_bar(total_bytes: u64, quiet: bool) -> ProgressBar {
    let target = if quiet || !std::io::stderr().is_terminal() {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    };
    let bar = ProgressBar::with_draw_target(Some(total_bytes), target);
    let style = ProgressStyle::with_template(
        "{spinner} {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, {eta}) {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}
