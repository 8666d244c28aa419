//! The storage engine of nsq-rs: NSQ's topics and channels on a crash-safe log.
//!
//! - The **topic log** ([`log::TopicLog`]) is a crash-safe, segmented, append-only log whose
//!   bytes are specified in `engine/FORMAT.md`, written through a [`storage::Storage`] trait so
//!   that tests can crash it, tear its writes and fill its disk.
//! - A **channel** ([`Channel`]) is a durable cursor into its topic's log, with the messages it
//!   has handed out: in flight (with deadlines), deferred, requeued. Its progress is
//!   checkpointed in the [`meta::MetaStore`] (sled).
//! - The **engine** ([`Engine`]) holds a data directory's topics, checkpoints them, deletes the
//!   segments no channel needs, and runs the timers of timeouts and deferred deliveries.
//!
//! The durability contract it keeps (DESIGN.md §3.4):
//! - With `mem_queue_size` 0 a publish returns once its records are written; under
//!   [`log::SyncPolicy::Always`] once they are fsynced, concurrent publishes sharing one fsync.
//! - After any crash, every acknowledged message not finished on a channel is delivered again
//!   on that channel, in-flight and deferred ones included; a finished message comes back only
//!   if it was finished after the last checkpoint.
//! - Opening never fails because of damaged data: a torn tail is truncated, damaged records are
//!   quarantined, and the [`log::RecoveryReport`] says exactly what was done.
//! - A full disk fails the publish and harms nothing; a failed fsync poisons the log until reopen.

pub mod archive;
pub mod catalog;
pub mod changes;
pub mod channel;
pub mod check;
pub mod clock;
pub mod config;
mod engine;
pub mod error;
pub mod format;
mod health;
pub mod import;
mod latency;
pub mod lock;
pub mod log;
pub mod message_id;
pub mod meta;
pub mod names;
mod queue;
pub mod stats;
pub mod storage;
pub mod sync;
pub mod topic;

pub use channel::{ChangeListener, Channel, Consumer};
pub use config::EngineConfig;
pub(crate) use engine::{Context, EngineInner};
pub use engine::{Engine, META_DIR_NAME, OpenReport, TOPICS_DIR_NAME};
pub use error::EngineError;
pub use lock::DataDirLock;
pub use log::{LogConfig, LogError, NewRecord, Record, RecoveryReport, SyncPolicy, TopicLog};
pub use queue::state::{Delivery, MessageError};
pub use topic::Topic;
