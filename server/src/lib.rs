//! nsqd on the nsq-rs engine: NSQ's TCP protocol V2 and HTTP API over [`engine`], wire
//! compatible with NSQ so that its clients and tools work unchanged.
//!
//! The server is an adapter (DESIGN.md §4): it parses frames and requests, makes one engine
//! call, and writes the reply. Queueing, persistence and timers are the engine's.
//!
//! - [`options`]: the command line and config file, with NSQ's names and defaults.
//! - [`nsqd`]: the daemon: listeners, shared state, shutdown.
//! - `serving`: the TCP accept loop and the drain at shutdown, both daemons'.
//! - `tcp`: protocol V2 (reader, message pump, commands); its pure checks are [`v2`].
//! - `http`: the HTTP API; `stats`: `/stats`; `http_api`: the V1 envelope nsqlookupd shares.
//! - `tls`: TLS configuration and the HTTPS listener; `auth`: AUTH against auth servers.
//! - `lookup`: registering with nsqlookupd (`--lookupd-tcp-address`).
//! - [`logging`]: nsqd-shaped log lines on stderr.
//! - [`daemon`]: what both binaries do alike (command-line errors, `--version`, signals).
//! - [`lookupd`]: nsqlookupd, the cluster's directory (its own binary; no engine).

mod auth;
mod clients;
pub mod daemon;
mod http;
mod http_api;
pub mod logging;
mod lookup;
pub mod lookupd;
pub mod nsqd;
pub mod options;
mod serving;
pub mod stats;
mod tcp;
mod tls;

pub use nsqd::{Nsqd, RunningNsqd};
pub use options::Options;
/// The checks of protocol V2's commands, without I/O (what the fuzz target `v2_command` drives).
pub use tcp::parse as v2;
