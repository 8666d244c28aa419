//! TCP protocol V2: the accept loop, and per connection a reader that runs commands
//! ([`connection`]) beside a message pump that delivers messages and heartbeats ([`pump`]),
//! both writing through one buffered [`writer::Writer`].

mod commands;
mod connection;
mod pump;
mod transport;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::nsqd::Nsqd;

/// Accepts connections until `shutdown`, then closes every connection (through `connections`)
/// and waits for them to end.
pub(crate) async fn accept_loop(
    nsqd: Arc<Nsqd>,
    listener: TcpListener,
    shutdown: CancellationToken,
    connections: CancellationToken,
) {
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    if let Err(error) = stream.set_nodelay(true) {
                        tracing::debug!(%remote, %error, "TCP_NODELAY failed");
                    }
                    tracing::info!("TCP: new client({remote})");
                    let exit = connections.child_token();
                    tasks.spawn(connection::serve(Arc::clone(&nsqd), stream, remote, exit));
                }
                Err(error) => {
                    // Out of descriptors and the like: wait rather than spin.
                    tracing::error!(%error, "TCP: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    tracing::info!("TCP: closing");
    connections.cancel();
    while tasks.join_next().await.is_some() {}
}
