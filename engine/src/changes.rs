//! Notice of topics and channels coming and going, for whoever mirrors the set elsewhere
//! (nsqd registers them with nsqlookupd). The observer is called on the thread that made the
//! change, possibly under the engine's locks: it must only hand the change on (send it down a
//! channel), never call back into the engine or wait.

use std::sync::{Arc, RwLock};

/// One change to the set of topics and channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    TopicCreated(String),
    /// Deleted, or an ephemeral topic gone with its last channel.
    TopicDeleted(String),
    ChannelCreated {
        topic: String,
        channel: String,
    },
    /// Deleted, or an ephemeral channel gone with its last consumer.
    ChannelDeleted {
        topic: String,
        channel: String,
    },
}

/// Receives each [`Change`].
pub type Observer = Arc<dyn Fn(&Change) + Send + Sync>;

/// The engine's observer, if one is set.
#[derive(Default)]
pub(crate) struct Observers {
    observer: RwLock<Option<Observer>>,
}

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = crate::sync::read(&self.observer).is_some();
        f.debug_struct("Observers").field("set", &set).finish()
    }
}

impl Observers {
    pub(crate) fn set(&self, observer: Observer) {
        *crate::sync::write(&self.observer) = Some(observer);
    }

    pub(crate) fn notify(&self, change: Change) {
        if let Some(observer) = crate::sync::read(&self.observer).as_ref() {
            observer(&change);
        }
    }
}
