//! TCP protocol V2: the accept loop, and per connection a reader that runs commands
//! ([`connection`]) beside a message pump that delivers messages and heartbeats ([`pump`]),
//! both writing through one buffered [`writer::Writer`]. The checks of a command's line and
//! body are the pure functions of [`parse`].

mod commands;
mod connection;
pub mod parse;
mod pump;
mod transport;
mod writer;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::nsqd::Nsqd;

/// Serves protocol V2 on `listener` until `shutdown` (see [`crate::serving::accept_loop`]).
pub(crate) async fn accept_loop(
    nsqd: Arc<Nsqd>,
    listener: TcpListener,
    shutdown: CancellationToken,
    connections: CancellationToken,
) {
    crate::serving::accept_loop(listener, shutdown, connections, |stream, remote, exit| {
        connection::serve(Arc::clone(&nsqd), stream, remote, exit)
    })
    .await;
}
