//! What nsqd and nsqlookupd do alike to serve TCP and to stop: bind a listener, accept
//! connections until shutdown and then close them all, and at the end wait a bounded time for
//! what is still running.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long shutdown waits for connections and HTTP requests to finish.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How long accepting pauses after a failed accept (out of descriptors and the like) rather
/// than spin.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Binds `address` (port 0 picks a free port); a failure names the address.
pub(crate) async fn bind(address: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address).await.with_context(|| format!("listen ({address}) failed"))
}

/// Accepts connections until `shutdown`, each served by `serve(stream, remote, exit)` on its
/// own task, `exit` being a child of `connections`. Then stops listening, closes every
/// connection (through `connections`) and waits for them to end.
pub(crate) async fn accept_loop<S, F>(
    listener: TcpListener,
    shutdown: CancellationToken,
    connections: CancellationToken,
    serve: S,
) where
    S: Fn(TcpStream, SocketAddr, CancellationToken) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            (stream, remote) = accept(&listener, "TCP") => {
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%remote, %error, "TCP_NODELAY failed");
                }
                tracing::info!("TCP: new client({remote})");
                tasks.spawn(serve(stream, remote, connections.child_token()));
            }
        }
    }
    drop(listener);
    tracing::info!("TCP: closing");
    connections.cancel();
    while tasks.join_next().await.is_some() {}
}

/// The next connection; a failed accept (out of descriptors and the like) is logged as
/// `<what>: accept failed` and retried after a pause rather than in a spin.
pub(crate) async fn accept(listener: &TcpListener, what: &str) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(error) => {
                tracing::error!(%error, "{what}: accept failed");
                tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
            }
        }
    }
}

/// Waits up to `grace` for `tasks` to end; those left are aborted, with the warning
/// `<still_running> after <grace>; closing anyway`.
pub(crate) async fn drain(mut tasks: JoinSet<()>, grace: Duration, still_running: &str) {
    let drained =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!("{still_running} after {grace:?}; closing anyway");
        tasks.abort_all();
    }
}
