//! `nsq-torture`: reliability harnesses for nsqd (docs/RELIABILITY.md).
//!
//! - `nsq-torture nsqd [FLAGS]` runs nsqd itself, so that the harnesses have a real process to
//!   kill without depending on where another package's binary was built.
//! - `nsq-torture run --cycles N --seed S [...] [-- NSQD FLAGS]` is the kill -9 torture program
//!   ([`torture::run`]): exit 0 when nothing acknowledged was lost and nothing corrupt or
//!   unexpected was delivered, 1 when something was, 2 when the harness could not go on.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use torture::run::{Config, run};
use torture::workload::Workload;
use torture::{Launcher, report};

#[derive(Debug, Parser)]
#[command(name = "nsq-torture", about = "Reliability harnesses for nsqd")]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Kill -9 torture: cycles of nsqd under publishers and consumers, SIGKILLed at random
    /// moments, then a drain and a check against the durability contract.
    Run(Box<RunArgs>),
    /// Run nsqd itself (`nsq-torture nsqd --help` for its flags).
    Nsqd,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Cycles, each ended by a SIGKILL.
    #[arg(long, default_value_t = 20)]
    cycles: u32,
    /// Seed of the schedule (kill moments, every client's choices); random when absent.
    #[arg(long)]
    seed: Option<u64>,
    /// An nsqd binary to torture instead of the one this program carries.
    #[arg(long)]
    nsqd: Option<PathBuf>,
    /// Data directory (empty or absent; kept). Default: a temporary one, removed on success.
    #[arg(long)]
    data_path: Option<PathBuf>,
    /// Publisher connections.
    #[arg(long, default_value_t = 3)]
    publishers: u16,
    /// Consumer connections on each channel.
    #[arg(long, default_value_t = 2)]
    consumers: usize,
    /// Channels of the topic; every message must be delivered on each.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=8))]
    channels: u8,
    /// When the kill comes, ms after nsqd listens: MIN..MAX (one kill in ten comes before MIN).
    #[arg(long, default_value = "300..2000", value_parser = parse_window)]
    cycle_ms: (u64, u64),
    /// Messages per second, all publishers together; 0 for no limit.
    #[arg(long, default_value_t = 5000)]
    rate: u64,
    /// Largest MPUB batch.
    #[arg(long, default_value_t = 20)]
    max_batch: usize,
    /// Longest DPUB defer, ms (the drain waits for it).
    #[arg(long, default_value_t = 1500)]
    max_defer_ms: u64,
    /// Longest REQ delay, ms.
    #[arg(long, default_value_t = 1000)]
    max_req_ms: u64,
    /// Longest a consumer holds a message before FIN, TOUCH or REQ, ms.
    #[arg(long, default_value_t = 25)]
    max_hold_ms: u64,
    /// Largest filler in a body, bytes.
    #[arg(long, default_value_t = 300)]
    max_filler: u16,
    /// Largest RDY of a consumer.
    #[arg(long, default_value_t = 64)]
    max_rdy: u64,
    /// Publishers slow to a trickle while this many (message, channel) pairs await a FIN.
    #[arg(long, default_value_t = 20_000)]
    backlog: u64,
    /// Longest the final drain may take, s.
    #[arg(long, default_value_t = 60)]
    drain_timeout_s: u64,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// More nsqd flags; they replace the defaults of the same name
    /// (--mem-queue-size=0 --max-bytes-per-file=262144).
    #[arg(last = true)]
    nsqd_flags: Vec<String>,
}

fn parse_window(text: &str) -> Result<(u64, u64), String> {
    let parse = |s: &str| s.trim().parse::<u64>().map_err(|e| format!("{s:?}: {e}"));
    let (min, max) = match text.split_once("..") {
        Some((min, max)) => (parse(min)?, parse(max)?),
        None => (parse(text)?, parse(text)?),
    };
    if min > max {
        return Err(format!("{min} > {max}"));
    }
    Ok((min, max))
}

/// The contract's full persistence mode, and segments small enough to roll often.
const DEFAULT_NSQD_FLAGS: [(&str, &str); 2] =
    [("mem-queue-size", "0"), ("max-bytes-per-file", "262144")];

fn nsqd_flags(extra: &[String]) -> Vec<String> {
    let given = |name: &str| {
        extra.iter().any(|flag| {
            let flag = flag.trim_start_matches('-');
            flag == name || flag.starts_with(&format!("{name}="))
        })
    };
    let mut flags: Vec<String> = DEFAULT_NSQD_FLAGS
        .iter()
        .filter(|(name, _)| !given(name))
        .map(|(name, value)| format!("--{name}={value}"))
        .collect();
    flags.extend(extra.iter().cloned());
    flags
}

fn torture(args: &RunArgs) -> anyhow::Result<bool> {
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    let launcher = match &args.nsqd {
        Some(path) => Launcher::binary(path),
        None => Launcher::this_binary()?,
    };
    let publishers = args.publishers.max(1);
    #[allow(clippy::cast_precision_loss)]
    let rate_per_publisher = args.rate as f64 / f64::from(publishers);
    let config = Config {
        cycles: args.cycles,
        seed,
        launcher,
        data_path: args.data_path.clone(),
        publishers,
        consumers: args.consumers.max(1),
        channels: usize::from(args.channels),
        cycle_ms: args.cycle_ms,
        nsqd_flags: nsqd_flags(&args.nsqd_flags),
        drain_timeout: Duration::from_secs(args.drain_timeout_s),
        workload: Workload {
            rate_per_publisher,
            max_batch: args.max_batch.max(1),
            max_defer_ms: args.max_defer_ms,
            max_req_ms: args.max_req_ms,
            max_hold_ms: args.max_hold_ms,
            max_filler: args.max_filler,
            max_rdy: args.max_rdy.max(1),
            backlog: args.backlog,
        },
    };
    let report = run(&config)?;
    print!("{}", report::render(&report));
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(&report)?;
        std::fs::write(path, json)?;
    }
    Ok(report.passed)
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "nsqd") {
        return server::nsqd::main(args.into_iter().skip(1));
    }
    let cli = Cli::parse_from(args);
    match cli.command {
        Commands::Run(args) => match torture(&args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(error) => {
                eprintln!("nsq-torture: {error:#}");
                ExitCode::from(2)
            }
        },
        Commands::Nsqd => ExitCode::from(16),
    }
}
