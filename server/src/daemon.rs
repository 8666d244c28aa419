//! What the nsqd and nsqlookupd binaries do alike around their own start and stop: the command
//! line's errors and `--version`, logging, the runtime, the wait for SIGINT or SIGTERM; and the
//! host name both daemons report.

use std::process::ExitCode;

use anyhow::Context as _;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::logging::{self, LogControl, LogLevel};
use crate::options::{DaemonFlags, version_line};

/// A daemon binary's `main`: reads what `parse` made of the command line (clap's own errors
/// and `--help` print themselves in their usual form and exit 2 or 0; any other error is
/// `[<binary>] FATAL: ...` and exit 1), answers `--version`, installs logging, catches
/// SIGINT and SIGTERM, then runs `serve` on a runtime whose threads are named after the
/// binary. An error from `serve` is logged and exits 1.
pub fn main<O, F>(
    binary: &'static str,
    parsed: anyhow::Result<O>,
    flags: impl FnOnce(&O) -> &DaemonFlags,
    serve: impl FnOnce(O, LogControl, Signals) -> F,
) -> ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    let options = match parsed {
        Ok(options) => options,
        Err(error) => {
            if let Some(clap_error) = error.downcast_ref::<clap::Error>() {
                let _ = clap_error.print();
                return ExitCode::from(if clap_error.use_stderr() { 2 } else { 0 });
            }
            eprintln!("[{binary}] FATAL: {error:#}");
            return ExitCode::from(1);
        }
    };
    let flags = flags(&options);
    if flags.version {
        println!("{}", version_line(binary));
        return ExitCode::SUCCESS;
    }
    let level = LogLevel::parse(&flags.log_level).unwrap_or(LogLevel::Info);
    let log = logging::init(level, &flags.log_prefix);
    let run = || -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name(binary)
            .build()
            .context("starting the runtime")?;
        runtime.block_on(async move {
            tracing::info!("{}", version_line(binary));
            let signals = Signals::catch().context("catching SIGINT and SIGTERM")?;
            serve(options, log, signals).await
        })
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::from(1)
        }
    }
}

/// SIGINT and SIGTERM, caught from before the daemon starts (as Go's daemons catch them), so
/// that one sent while it starts stops it cleanly once started rather than killing it.
#[derive(Debug)]
pub struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    fn catch() -> std::io::Result<Signals> {
        let interrupt = signal(SignalKind::interrupt())?;
        let terminate = signal(SignalKind::terminate())?;
        Ok(Signals { interrupt, terminate })
    }

    /// Waits for SIGINT or SIGTERM, then logs that shutdown begins.
    pub async fn wait(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        tracing::info!("signal received: shutting down");
    }
}

/// The machine's host name, as nsqd and nsqlookupd report it.
pub fn hostname() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}
