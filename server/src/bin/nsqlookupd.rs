//! The nsqlookupd binary: options, logging, the listeners, and a clean stop on SIGINT or
//! SIGTERM (stop accepting, close the nsqds' connections, exit 0).

use std::process::ExitCode;

use server::daemon::{self, Signals};
use server::logging::LogControl;
use server::lookupd::{Lookupd, LookupdOptions};

fn main() -> ExitCode {
    let parsed = LookupdOptions::parse_args(std::env::args_os());
    daemon::main("nsqlookupd", parsed, |options| &options.daemon, run)
}

async fn run(options: LookupdOptions, _log: LogControl, signals: Signals) -> anyhow::Result<()> {
    let running = Lookupd::start(options).await?;
    signals.wait().await;
    running.shutdown().await;
    Ok(())
}
