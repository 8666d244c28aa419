//! The message pump of one connection (nsqd's `messagePump`): it sends heartbeats on a fixed
//! ticker, and once the client has subscribed, hands it messages while its in-flight count is
//! below its RDY, buffering them and flushing when the client stops being ready, when the
//! output buffer timer fires, or when the buffer fills.

use std::sync::Arc;
use std::time::Duration;

use engine::{ChangeListener, Consumer, EngineError};
use protocol::frame::FrameType;
use tokio::sync::{Mutex, Notify, mpsc};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::parse::Settings;
use super::writer::Writer;

/// The most messages taken from the channel under one lock: enough to make the lock cheap per
/// message, few enough that FINs from the reader side do not wait long for it.
const BATCH: usize = 64;

/// What the reader tells the pump.
#[derive(Debug)]
pub(crate) enum PumpEvent {
    /// The first IDENTIFY's settings.
    Identify(Settings),
    /// SUB succeeded.
    Subscribe(Arc<Consumer>),
}

fn ticker(period: Option<Duration>) -> Option<Interval> {
    period.filter(|p| !p.is_zero()).map(|period| {
        let mut interval = tokio::time::interval_at(Instant::now() + period, period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        interval
    })
}

async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn listen(listener: &mut Option<ChangeListener>) {
    match listener {
        Some(listener) => listener.changed().await,
        None => std::future::pending().await,
    }
}

/// Runs until `exit` is cancelled or a write fails; cancels `exit` when it ends, so the
/// reader stops too. A cancellation also ends a write in progress: a client that does not read
/// must not hold the connection (or nsqd's shutdown) until the write times out.
pub(crate) async fn run(
    writer: Arc<Mutex<Writer>>,
    mut events: mpsc::UnboundedReceiver<PumpEvent>,
    wake: Arc<Notify>,
    settings: Settings,
    exit: CancellationToken,
) {
    let result = tokio::select! {
        result = pump(&writer, &mut events, &wake, settings, &exit) => result,
        () = exit.cancelled() => Ok(()),
    };
    if let Err(error) = result {
        tracing::debug!(%error, "message pump stopped");
    }
    exit.cancel();
}

async fn pump(
    writer: &Mutex<Writer>,
    events: &mut mpsc::UnboundedReceiver<PumpEvent>,
    wake: &Notify,
    mut settings: Settings,
    exit: &CancellationToken,
) -> Result<(), PumpError> {
    let mut heartbeat = ticker(settings.heartbeat_interval);
    let mut flusher = ticker(settings.output_buffer_timeout);
    let mut consumer: Option<Arc<Consumer>> = None;
    let mut listener: Option<ChangeListener> = None;
    let mut flushed = true;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        if let Some(consumer) = &consumer {
            batch.clear();
            match consumer.next_messages(BATCH, &mut batch) {
                Ok(0) => {}
                Ok(_) => {
                    let mut writer = writer.lock().await;
                    for delivery in &batch {
                        let sampled_out = settings.sample_rate > 0
                            && fastrand::i32(0..100) > settings.sample_rate;
                        if sampled_out {
                            // NSQ drops a message sampled out for this connection's channel.
                            let _ = consumer.finish(&delivery.id);
                        } else {
                            writer.send_message(delivery).await?;
                            flushed = false;
                        }
                    }
                    continue;
                }
                Err(EngineError::Exiting(_)) => return Err(PumpError::ChannelGone),
                Err(error) => return Err(PumpError::Engine(error)),
            }
            if !flushed && !consumer.is_ready() {
                writer.lock().await.flush().await?;
                flushed = true;
            }
        }
        let buffered = !flushed;
        tokio::select! {
            () = exit.cancelled() => return Ok(()),
            event = events.recv() => match event {
                Some(PumpEvent::Identify(new)) => {
                    settings = new;
                    heartbeat = ticker(settings.heartbeat_interval);
                    flusher = ticker(settings.output_buffer_timeout);
                }
                Some(PumpEvent::Subscribe(subscribed)) => {
                    listener = Some(subscribed.listener());
                    consumer = Some(subscribed);
                }
                None => return Ok(()),
            },
            () = listen(&mut listener) => {}
            () = wake.notified() => {}
            () = tick(&mut heartbeat) => {
                writer.lock().await.send(FrameType::Response, protocol::HEARTBEAT).await?;
                flushed = true;
            }
            () = tick(&mut flusher), if buffered => {
                let mut writer = writer.lock().await;
                writer.flush().await?;
                flushed = writer.is_empty();
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum PumpError {
    #[error("write failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the channel was deleted")]
    ChannelGone,
    #[error("reading the channel failed: {0}")]
    Engine(EngineError),
}
