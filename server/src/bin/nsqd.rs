//! The nsqd binary: options, logging, the engine on the data directory, the listeners, and a
//! clean shutdown on SIGINT or SIGTERM (stop accepting, close connections, write what is
//! queued, checkpoint, exit 0).

use std::sync::Arc;

use anyhow::Context as _;
use server::logging::{self, LogLevel};
use server::{Nsqd, Options};

fn main() -> std::process::ExitCode {
    let options = match Options::parse_args(std::env::args_os()) {
        Ok(options) => options,
        Err(error) => {
            // clap's own errors (and --help) print themselves in their usual form.
            if let Some(clap_error) = error.downcast_ref::<clap::Error>() {
                let _ = clap_error.print();
                return if clap_error.use_stderr() {
                    std::process::ExitCode::from(2)
                } else {
                    std::process::ExitCode::SUCCESS
                };
            }
            eprintln!("[nsqd] FATAL: {error:#}");
            return std::process::ExitCode::from(1);
        }
    };
    if options.daemon.version {
        println!("{}", server::options::version_line("nsqd"));
        return std::process::ExitCode::SUCCESS;
    }
    let level = LogLevel::parse(&options.daemon.log_level).unwrap_or(LogLevel::Info);
    let log = logging::init(level, &options.daemon.log_prefix);
    match run(options, log) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            std::process::ExitCode::from(1)
        }
    }
}

fn run(options: Options, log: logging::LogControl) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("nsqd")
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        tracing::info!("{}", server::options::version_line("nsqd"));
        Nsqd::check(&options)?;
        let data_path = options.data_path.clone();
        let config = options.engine_config();
        let (engine, report) =
            tokio::task::spawn_blocking(move || engine::Engine::open(&data_path, config))
                .await?
                .with_context(|| {
                    format!("failed to open data directory {}", options.data_path.display())
                })?;
        for (topic, recovery) in &report.topics {
            tracing::info!(topic = %topic, "recovered: {recovery:?}");
        }
        engine.start_background().context("starting the engine")?;
        let engine = Arc::new(engine);
        let running = Nsqd::start(options, engine, log).await?;
        wait_for_signal().await?;
        tracing::info!("signal received: shutting down");
        running.shutdown().await
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    Ok(())
}
