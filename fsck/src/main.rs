//! `nsq-fsck`: the offline half of nsq-rs. Every subcommand is a thin layer over an engine API
//! (`engine::check` and friends); what it adds is argument parsing, rendering and exit codes.
//!
//! - `inspect` and `verify` never modify anything in the data directory.
//! - `repair` is explicit, refuses a directory a running nsqd holds, keeps every damaged byte in
//!   a quarantine file, and can be interrupted and run again.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod check;
mod diskqueue;
mod dump;
mod import_nsq;
mod progress;
mod replay;

#[derive(Debug, Parser)]
#[command(
    name = "nsq-fsck",
    version,
    about = "Inspect, verify, repair and dump nsq-rs data directories"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Topics, channels, segments and cursors of a data directory; changes nothing.
    Inspect(check::ReadArgs),
    /// Checks every record, header, cursor and checkpoint; changes nothing. Exit code 0: clean,
    /// 1: repairable, 2: not repairable.
    Verify(check::ReadArgs),
    /// Fixes what verify finds, keeping every damaged byte in `<data>/quarantine/`.
    Repair(check::RepairArgs),
    /// Prints a topic's records.
    Dump(dump::DumpArgs),
    /// Recreates the metadata store from the catalogs beside the topic logs.
    RebuildMeta(check::RebuildArgs),
    /// Imports Go nsqd's topics, channels and pending messages (nsqd.dat and diskqueues). Exit
    /// code 0: all imported, 1: imported with losses, 2: a topic not imported.
    ImportNsq(import_nsq::ImportArgs),
    /// Republishes a topic's archived (and live) messages, filtered by offset and time, to an
    /// nsqd or into a data directory. Exit code 0: clean, 1: damage met and skipped.
    Replay(replay::ReplayArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_target(false).init();
    // Exit codes 1 and 2 are verify's findings: usage errors get 16 (as e2fsck's), other
    // failures 8 (e2fsck's "operational error").
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() { ExitCode::from(16) } else { ExitCode::SUCCESS };
        }
    };
    let result: anyhow::Result<ExitCode> = match cli.command {
        Command::Inspect(args) => check::inspect(args),
        Command::Verify(args) => check::verify_command(args),
        Command::Repair(args) => check::repair(args),
        Command::Dump(args) => dump::run(args),
        Command::RebuildMeta(args) => check::rebuild(args),
        Command::ImportNsq(args) => import_nsq::run(args),
        Command::Replay(args) => replay::run(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("nsq-fsck: {error:#}");
            ExitCode::from(8)
        }
    }
}
