//! nsqlookupd: the directory of an NSQ cluster (NSQ.md §4). nsqds connect over TCP (protocol
//! V1), say who they are and which topics and channels they have; consumers and tools ask over
//! HTTP where a topic is. All state is in memory and is rebuilt from the nsqds' connections.
//!
//! - [`options`]: the command line and config file, with NSQ's names and defaults.
//! - `registry`: the registrations, and the rules for inactive and tombstoned producers.
//! - `tcp`: protocol V1 (IDENTIFY, REGISTER, UNREGISTER, PING).
//! - `http`: the HTTP API, with nsqd's V1 envelope.
//! - [`clock`]: the time the registry judges by, which tests move themselves.
//!
//! It shares the server crate's plumbing with nsqd (options, logging, the binary's `daemon::main`,
//! the accept loop and drain of `serving`, the V1 envelope of `http_api`) and never touches
//! the engine.

pub mod clock;
mod http;
pub mod options;
mod registry;
mod tcp;

use std::net::SocketAddr;
use std::sync::Arc;

use protocol::lookup::LookupdInfo;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use clock::Clock;
pub use options::LookupdOptions;
use registry::Registry;
pub use tcp::{
    LookupRequest, MAX_IDENTIFY_BODY_BYTES, decode_identity, identify_body_len, parse_line,
    trim_space,
};

use crate::options::NSQ_VERSION;
use crate::serving::{SHUTDOWN_GRACE, bind, drain};

/// What every connection and request handler shares.
#[derive(Debug)]
pub struct Lookupd {
    registry: Registry,
    /// What IDENTIFY answers: this lookupd's ports, version and addresses.
    info: LookupdInfo,
}

impl Lookupd {
    /// Binds the listeners (port 0 picks a free port; the real one is logged and returned)
    /// and serves until [`RunningLookupd::shutdown`], on the system clock.
    pub async fn start(options: LookupdOptions) -> anyhow::Result<RunningLookupd> {
        Self::start_with_clock(options, Clock::system()).await
    }

    /// [`Lookupd::start`] judging activity and tombstones by `clock`.
    pub async fn start_with_clock(
        options: LookupdOptions,
        clock: Clock,
    ) -> anyhow::Result<RunningLookupd> {
        let tcp = bind(&options.tcp_address).await?;
        let http = bind(&options.http_address).await?;
        let (tcp_addr, http_addr) = (tcp.local_addr()?, http.local_addr()?);
        let hostname = crate::daemon::hostname();
        let lookupd = Arc::new(Lookupd {
            registry: Registry::new(
                clock,
                options.inactive_producer_timeout,
                options.tombstone_lifetime,
            ),
            info: LookupdInfo {
                tcp_port: tcp_addr.port(),
                http_port: http_addr.port(),
                version: NSQ_VERSION.to_owned(),
                broadcast_address: options.broadcast_address.unwrap_or_else(|| hostname.clone()),
                hostname,
            },
        });
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        tracing::info!("TCP: listening on {tcp_addr}");
        tasks.spawn(tcp::serve(Arc::clone(&lookupd), tcp, shutdown.clone()));
        tracing::info!("HTTP: listening on {http_addr}");
        tasks.spawn(http::serve(Arc::clone(&lookupd), http, shutdown.clone()));
        Ok(RunningLookupd { tcp_addr, http_addr, shutdown, tasks })
    }
}

/// A serving nsqlookupd.
#[derive(Debug)]
pub struct RunningLookupd {
    tcp_addr: SocketAddr,
    http_addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

impl RunningLookupd {
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Stops accepting, closes every connection (their peers leave the registry), and stops
    /// HTTP.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        drain(self.tasks, SHUTDOWN_GRACE, "requests still running").await;
    }
}
