//! The storage engine of nsq-rs.
//!
//! This first half of the engine is the **topic log** ([`log::TopicLog`]): a crash-safe,
//! segmented, append-only log whose bytes are specified in `engine/FORMAT.md`, written through a
//! [`storage::Storage`] trait so that tests can crash it, tear its writes and fill its disk.
//! [`names`] and [`message_id`] hold NSQ's name rules and the offset-derived message IDs that the
//! channel layer and the protocol share.
//!
//! The durability contract it keeps (DESIGN.md §3.4):
//! - An append returns once its records are written; under [`log::SyncPolicy::Always`] once they
//!   are fsynced, concurrent appends sharing one fsync.
//! - Opening never fails because of damaged data: a torn tail is truncated, damaged records are
//!   quarantined, and the [`log::RecoveryReport`] says exactly what was done.
//! - A full disk fails the append and harms nothing; a failed fsync poisons the log until reopen.

pub mod format;
pub mod lock;
pub mod log;
pub mod message_id;
pub mod names;
pub mod storage;

pub use lock::DataDirLock;
pub use log::{LogConfig, LogError, NewRecord, Record, RecoveryReport, SyncPolicy, TopicLog};
