//! Reliability harnesses for nsqd (docs/RELIABILITY.md): the kill -9 torture program, and the
//! disk-full and hostile-client tests. They need a real nsqd process to kill and to measure, so
//! the `nsq-torture` binary carries one: `nsq-torture nsqd [FLAGS]` is nsqd itself
//! ([`server::nsqd::main`]), and [`NsqdProcess`] starts it, or any other nsqd binary, as a child.

pub mod client;
pub mod diskfull;
pub mod hostile;
pub mod http;
pub mod ledger;
pub mod payload;
pub mod process;
pub mod report;
pub mod run;
pub mod workload;

pub use client::Conn;
pub use process::{Launcher, NsqdProcess};
