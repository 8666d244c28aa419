//! Errors of the engine's topic and channel operations.

use std::path::PathBuf;
use std::time::Duration;

use crate::log::LogError;
use crate::meta::MetaError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid topic name {0:?}")]
    InvalidTopicName(String),
    #[error("invalid channel name {0:?}")]
    InvalidChannelName(String),
    #[error("topic {0:?} not found")]
    TopicNotFound(String),
    #[error("channel {channel:?} of topic {topic:?} not found")]
    ChannelNotFound { topic: String, channel: String },
    /// The topic or channel is being deleted, or the engine is closing.
    #[error("{0} is exiting")]
    Exiting(String),
    #[error("defer of {requested:?} is above the maximum {max:?}")]
    InvalidDefer { requested: Duration, max: Duration },
    #[error("msg_timeout of {requested:?} is outside 1s..={max:?}")]
    InvalidMsgTimeout { requested: Duration, max: Duration },
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
}
