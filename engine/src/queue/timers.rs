//! The engine's timer: one min-heap of channel wake-up times, so that in-flight timeouts and
//! deferred deliveries happen on time without scanning channels (NSQ samples 20 random channels
//! every 100 ms instead).
//!
//! A channel registers the earliest of its deadlines whenever that moves earlier than what it
//! registered before; [`Timers::pop_due`] hands back the channels whose time has come, and each
//! re-registers its next deadline after firing. Stale entries only cost a spurious, harmless
//! visit. Whoever sleeps until [`Timers::next_ns`] is woken through [`Wakeup`] when an earlier
//! time is registered.

use crate::sync::lock;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Condvar, Mutex, Weak};
use std::time::Duration;

use crate::channel::Channel;

/// Wakes the engine's background thread: a timer moved earlier, or queued records wait.
#[derive(Debug, Default)]
pub(crate) struct Wakeup {
    pending: Mutex<bool>,
    condvar: Condvar,
}

impl Wakeup {
    pub(crate) fn wake(&self) {
        *lock(&self.pending) = true;
        self.condvar.notify_all();
    }

    /// Waits until woken or `timeout` passed; clears the wake-up.
    pub(crate) fn wait(&self, timeout: Duration) {
        let mut pending = lock(&self.pending);
        if !*pending {
            pending = self
                .condvar
                .wait_timeout(pending, timeout)
                .map_or_else(|e| e.into_inner().0, |(guard, _)| guard);
        }
        *pending = false;
    }
}

#[derive(Debug, Default)]
pub(crate) struct Timers {
    state: Mutex<TimerState>,
    pub(crate) wakeup: Wakeup,
}

#[derive(Debug, Default)]
struct TimerState {
    heap: BinaryHeap<Reverse<(i64, u64)>>,
    channels: HashMap<u64, Weak<Channel>>,
}

impl Timers {
    pub(crate) fn add_channel(&self, uid: u64, channel: Weak<Channel>) {
        lock(&self.state).channels.insert(uid, channel);
    }

    pub(crate) fn remove_channel(&self, uid: u64) {
        lock(&self.state).channels.remove(&uid);
    }

    /// Asks for channel `uid` to be fired at `at_ns`.
    pub(crate) fn register(&self, uid: u64, at_ns: i64) {
        let mut state = lock(&self.state);
        let earliest = state.heap.peek().is_none_or(|Reverse((t, _))| at_ns < *t);
        state.heap.push(Reverse((at_ns, uid)));
        drop(state);
        if earliest {
            self.wakeup.wake();
        }
    }

    /// The channels registered for a time at or before `now_ns`, removed from the heap.
    pub(crate) fn pop_due(&self, now_ns: i64) -> Vec<std::sync::Arc<Channel>> {
        let mut state = lock(&self.state);
        let mut due = Vec::new();
        while let Some(&Reverse((at_ns, uid))) = state.heap.peek() {
            if at_ns > now_ns {
                break;
            }
            state.heap.pop();
            if let Some(channel) = state.channels.get(&uid).and_then(Weak::upgrade)
                && !due.iter().any(|c: &std::sync::Arc<Channel>| c.uid() == uid)
            {
                due.push(channel);
            }
        }
        due
    }

    /// The earliest registered time.
    pub(crate) fn next_ns(&self) -> Option<i64> {
        lock(&self.state).heap.peek().map(|Reverse((t, _))| *t)
    }
}
