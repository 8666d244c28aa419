//! The nsqlookupd binary: options, logging, the listeners, and a clean stop on SIGINT or
//! SIGTERM (stop accepting, close the nsqds' connections, exit 0).

use std::process::ExitCode;

use anyhow::Context as _;
use server::logging::{self, LogLevel};
use server::lookupd::{Lookupd, LookupdOptions};
use server::options::version_line;
use tokio::signal::unix::{SignalKind, signal};

fn main() -> ExitCode {
    let options = match LookupdOptions::parse_args(std::env::args_os()) {
        Ok(options) => options,
        // clap's own errors (and --help) print themselves in their usual form.
        Err(error) => match error.downcast_ref::<clap::Error>() {
            Some(clap_error) => {
                let _ = clap_error.print();
                return ExitCode::from(if clap_error.use_stderr() { 2 } else { 0 });
            }
            None => {
                eprintln!("[nsqlookupd] FATAL: {error:#}");
                return ExitCode::from(1);
            }
        },
    };
    if options.daemon.version {
        println!("{}", version_line("nsqlookupd"));
        return ExitCode::SUCCESS;
    }
    let level = LogLevel::parse(&options.daemon.log_level).unwrap_or(LogLevel::Info);
    let _log = logging::init(level, &options.daemon.log_prefix);
    if let Err(error) = run(options) {
        tracing::error!("{error:#}");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

fn run(options: LookupdOptions) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("nsqlookupd")
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        tracing::info!("{}", version_line("nsqlookupd"));
        let running = Lookupd::start(options).await?;
        let (mut interrupt, mut terminate) =
            (signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?);
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("signal received: shutting down");
        running.shutdown().await;
        Ok(())
    })
}
