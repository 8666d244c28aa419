//! The nsqd binary: options, logging, the engine on the data directory, the listeners, and a
//! clean shutdown on SIGINT or SIGTERM (stop accepting, close connections, write what is
//! queued, checkpoint, exit 0).

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use server::daemon::{self, Signals};
use server::logging::LogControl;
use server::{Nsqd, Options};

fn main() -> ExitCode {
    let parsed = Options::parse_args(std::env::args_os());
    daemon::main("nsqd", parsed, |options| &options.daemon, run)
}

async fn run(options: Options, log: LogControl, signals: Signals) -> anyhow::Result<()> {
    let data_path = options.data_path.clone();
    let config = options.engine_config();
    let prepared = Nsqd::prepare(options)?;
    let (engine, report) = tokio::task::spawn_blocking({
        let data_path = data_path.clone();
        move || engine::Engine::open(&data_path, config)
    })
    .await?
    .with_context(|| format!("failed to open data directory {}", data_path.display()))?;
    for (topic, recovery) in &report.topics {
        tracing::info!(topic = %topic, "recovered: {recovery:?}");
    }
    engine.start_background().context("starting the engine")?;
    let engine = Arc::new(engine);
    let running = prepared.start(engine, log).await?;
    signals.wait().await;
    running.shutdown().await
}
